"""Checkpoints load with weights_only, refuse corrupt files and other architectures, verify checksums."""

from __future__ import annotations

import pytest
import torch

from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.model.checkpoint import load_model, read_checkpoint, save_checkpoint, sha256sum


def test_round_trip(tmp_path):
    model = InstanceUNet(ModelConfig(width=4, anchor_base=24.0))
    save_checkpoint(tmp_path / "m.pt", model, step=7, meta={"note": "x"})
    loaded, ckpt = load_model(tmp_path / "m.pt", expected_sha256=sha256sum(tmp_path / "m.pt"))
    assert loaded.config == model.config and ckpt["step"] == 7 and ckpt["meta"] == {"note": "x"}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert not loaded.training


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(HtsError, match="corrupt"):
        load_model(path)


def test_truncated_file(tmp_path):
    save_checkpoint(tmp_path / "m.pt", InstanceUNet(ModelConfig(width=4)))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(HtsError, match="corrupt"):
        load_model(tmp_path / "t.pt")


def test_pickled_object_is_refused(tmp_path):
    import argparse

    torch.save({"format": "hts-checkpoint", "obj": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(HtsError, match="corrupt"):
        read_checkpoint(tmp_path / "evil.pt")


def test_other_architecture(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, InstanceUNet(ModelConfig(width=4)))
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["width"] = 8  # weights of width 4 under a width-8 configuration
    torch.save(ckpt, path)
    with pytest.raises(HtsError, match="does not match its architecture"):
        load_model(path)


def test_not_an_hts_checkpoint_and_missing(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(HtsError, match="not an hts checkpoint"):
        load_model(tmp_path / "plain.pt")
    with pytest.raises(HtsError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_checksum_mismatch(tmp_path):
    save_checkpoint(tmp_path / "m.pt", InstanceUNet(ModelConfig(width=4)))
    with pytest.raises(HtsError, match="checksum"):
        load_model(tmp_path / "m.pt", expected_sha256="0" * 64)


def test_inference_settings_travel_with_the_checkpoint(tmp_path):
    from hts.engine.infer import fg_threshold, proposal_params

    model = InstanceUNet(ModelConfig(width=4))
    assert fg_threshold(model) == 0.5 and proposal_params(model).score_threshold == 0.5
    save_checkpoint(tmp_path / "m.pt", model, meta={"inference": {"fg_threshold": 0.8, "score_threshold": 0.4}})
    loaded, _ = load_model(tmp_path / "m.pt")
    assert fg_threshold(loaded) == 0.8 and proposal_params(loaded).score_threshold == 0.4
