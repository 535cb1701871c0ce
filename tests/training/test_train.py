"""Seeded short training on synthetic data: the loss falls, validation mean IU rises, resume is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hts.errors import HtsError
from hts.model.checkpoint import read_checkpoint
from hts.synthetic.nuclei import SyntheticConfig, generate_dataset
from hts.training.data import Dataset
from hts.training.train import TrainConfig, make_batch, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synthetic():
    train_set = Dataset(*generate_dataset(12, SyntheticConfig(shape=(128, 128)), seed=1), source="synthetic")
    val_set = Dataset(*generate_dataset(3, SyntheticConfig(shape=(128, 128)), seed=2), source="synthetic")
    return train_set, val_set


SMALL = dict(width=8, batch_size=4, crop=96, seed=3)


def test_short_training_lowers_loss_and_raises_val_mean_iu(synthetic, tmp_path):
    data, val = synthetic
    cfg = TrainConfig(steps=60, val_every=60, **SMALL)
    meta = train(cfg, data, val, tmp_path / "m.pt", progress=False, log=lambda s: None)
    trace = meta["loss_trace"]
    assert len(trace) == 60
    assert np.mean(trace[-10:]) < 0.8 * np.mean(trace[:10])
    first, last = meta["history"][0], meta["history"][-1]
    assert first["step"] == 0 and last["step"] == 60
    assert last["val"]["mean_iu"] > first["val"]["mean_iu"] + 0.1
    ckpt = read_checkpoint(tmp_path / "m.pt")
    assert ckpt["step"] == 60 and ckpt["config"]["width"] == 8 and ckpt["meta"]["data"] == "synthetic"
    assert (tmp_path / "m.best.pt").exists()


def test_training_is_deterministic_and_resume_is_exact(synthetic, tmp_path):
    data, _ = synthetic
    quiet = dict(progress=False, log=lambda s: None)
    train(TrainConfig(steps=6, val_every=3, **SMALL), data, None, tmp_path / "a.pt", **quiet)
    train(TrainConfig(steps=6, val_every=3, **SMALL), data, None, tmp_path / "b.pt", **quiet)
    train(TrainConfig(steps=3, val_every=3, **SMALL), data, None, tmp_path / "c.pt", **quiet)  # "interrupted"
    train(TrainConfig(steps=6, val_every=3, **SMALL), data, None, tmp_path / "c.pt", resume=True, **quiet)
    a, b, c = (read_checkpoint(tmp_path / f"{n}.pt")["state_dict"] for n in "abc")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        torch.testing.assert_close(a[key], c[key], rtol=0, atol=0)


def test_loader_workers_draw_the_same_batches(synthetic, tmp_path):
    """Batches drawn ahead by loader processes (the GPU setting) train the same weights, resumed or not."""
    data, _ = synthetic
    quiet = dict(progress=False, log=lambda s: None)
    train(TrainConfig(steps=6, val_every=3, **SMALL), data, None, tmp_path / "a.pt", **quiet)
    train(TrainConfig(steps=3, val_every=3, **SMALL), data, None, tmp_path / "b.pt", workers=2, **quiet)
    train(TrainConfig(steps=6, val_every=3, **SMALL), data, None, tmp_path / "b.pt", resume=True, workers=2, **quiet)
    a, b = (read_checkpoint(tmp_path / f"{n}.pt")["state_dict"] for n in "ab")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    with pytest.raises(HtsError, match="workers"):
        train(TrainConfig(steps=1, **SMALL), data, None, tmp_path / "c.pt", workers=-1, **quiet)
    with pytest.raises(HtsError, match="device"):
        train(TrainConfig(steps=1, **SMALL), data, None, tmp_path / "c.pt", device="gpu", **quiet)


def test_lr_decay_schedule_and_resume_into_a_decay(synthetic, tmp_path):
    cfg = TrainConfig(steps=6, decay_from=2, **SMALL)
    assert [cfg.lr_at(s) / cfg.lr for s in range(6)] == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25])
    with pytest.raises(HtsError, match="decay_from"):
        TrainConfig(steps=6, decay_from=6, **SMALL)
    data, _ = synthetic
    quiet = dict(progress=False, log=lambda s: None)
    train(TrainConfig(steps=6, val_every=3, decay_from=3, **SMALL), data, None, tmp_path / "a.pt", **quiet)
    train(TrainConfig(steps=3, val_every=3, **SMALL), data, None, tmp_path / "b.pt", **quiet)  # constant lr so far
    train(TrainConfig(steps=6, val_every=3, decay_from=3, **SMALL), data, None, tmp_path / "b.pt", resume=True, **quiet)
    a, b = (read_checkpoint(tmp_path / f"{n}.pt")["state_dict"] for n in "ab")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    with pytest.raises(HtsError, match="another configuration"):  # a decay that should have started earlier
        train(TrainConfig(steps=9, val_every=3, decay_from=1, **SMALL), data, None, tmp_path / "b.pt", resume=True, **quiet)


def test_resume_refuses_another_configuration(synthetic, tmp_path):
    data, _ = synthetic
    quiet = dict(progress=False, log=lambda s: None)
    train(TrainConfig(steps=1, val_every=1, **SMALL), data, None, tmp_path / "a.pt", **quiet)
    with pytest.raises(HtsError, match="another configuration"):
        train(TrainConfig(steps=2, val_every=1, variant="U-BCE", **SMALL), data, None, tmp_path / "a.pt", resume=True, **quiet)


def test_make_batch_boxes_match_labels(synthetic):
    data, _ = synthetic
    cfg = TrainConfig(**SMALL)
    batch = make_batch([im.astype(np.float32) for im in data.images], data.labels, np.random.default_rng(0), cfg)
    assert batch.images.shape == (4, 1, 96, 96)
    assert batch.target.shape == batch.weight.shape == (4, 96, 96)
    assert all(b.shape[1] == 4 for b in batch.boxes) and sum(len(b) for b in batch.boxes) > 0
