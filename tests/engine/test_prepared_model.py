"""The inference copy of a model is prepared once per model and weights, and prepared again after training."""

import numpy as np
import torch

from hts.engine.infer import inference_model, predict, prepared_model
from hts.model import InstanceUNet, ModelConfig


def test_prepared_once_and_again_after_the_weights_change():
    model = InstanceUNet(ModelConfig(width=4))
    dev = torch.device("cpu")
    first = prepared_model(model, dev)
    assert prepared_model(model, dev) is first  # reused: no copy, no folding per field
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # an optimiser step changes weights in place
    second = prepared_model(model, dev)
    assert second is not first
    x = torch.randn(1, 1, 64, 64)
    fresh = inference_model(model, dev)
    with torch.inference_mode():
        a = second(x.contiguous(memory_format=torch.channels_last))["logits"]
        b = fresh(x.contiguous(memory_format=torch.channels_last))["logits"]
    assert torch.allclose(a, b, atol=1e-5)
    other = InstanceUNet(ModelConfig(width=4))
    assert prepared_model(other, dev) is not second


def test_predict_gives_the_same_with_the_cached_copy():
    model = InstanceUNet(ModelConfig(width=4)).eval()
    image = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    a = predict(model, image, tile=64, overlap=16)
    b = predict(model, image, tile=64, overlap=16)
    assert np.array_equal(a.prob, b.prob)
