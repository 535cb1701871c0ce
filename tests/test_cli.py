"""The command line as a user runs it: a real process, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from hts.model import InstanceUNet, ModelConfig
from hts.model.checkpoint import save_checkpoint
from hts.synthetic.nuclei import SyntheticConfig, generate_dataset
from hts.training.data import load_npz, save_labels_npz

EVAL_KEYS = {"pixel_error", "mean_iu", "instance_error", "ap_50", "ap_75", "dsb_score", "f1_50", "aji", "pq", "count_rel_error"}


def hts(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hts", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"hts {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def data_npz(tmp_path_factory):
    """A small annotated file in the shared layout."""
    path = tmp_path_factory.mktemp("data") / "synthetic.npz"
    images, labels = generate_dataset(3, SyntheticConfig(shape=(96, 112), dtype="uint8"), seed=5)
    arrays = {"n": np.asarray(3)}
    for i, (im, lb) in enumerate(zip(images, labels)):
        arrays[f"images_{i:04d}"], arrays[f"labels_{i:04d}"] = im, lb.astype(np.uint16)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, InstanceUNet(ModelConfig(width=4)))
    return path


def test_eval_pred_perfect_and_json_keys(data_npz, tmp_path):
    data = load_npz(data_npz)
    save_labels_npz(tmp_path / "pred.npz", data.labels)
    result = json.loads(hts("eval", "--data", data_npz, "--pred", tmp_path / "pred.npz", "--json").stdout)
    assert EVAL_KEYS <= set(result) and "rmse" not in result
    assert result["ap_50"] == 1.0 and result["aji"] == 1.0 and result["pixel_error"] == 0.0
    assert result["n_images"] == 3


def test_eval_real_validation_ground_truth_against_itself(val_npz, tmp_path):
    data = load_npz(val_npz)
    assert len(data) == 54 and sum(int(lb.max()) for lb in data.labels) == 1952
    save_labels_npz(tmp_path / "pred.npz", data.labels)
    result = json.loads(hts("eval", "--data", val_npz, "--pred", tmp_path / "pred.npz", "--json").stdout)
    assert result["dsb_score"] == 1.0 and result["instance_error"] == 0.0 and result["n_gt"] == 1952


def test_eval_without_model_or_pred_evaluates_the_shipped_model(data_npz):
    result = json.loads(hts("eval", "--data", data_npz, "--json").stdout)
    assert "rmse" in result and result["ap_50"] >= 0.5, result  # synthetic nuclei: the default finds them


def test_eval_model_reports_rmse_and_saves_predictions(data_npz, tiny_ckpt, tmp_path):
    out = hts("eval", "--data", data_npz, "--model", tiny_ckpt, "--json", "--save-pred", tmp_path / "p.npz")
    result = json.loads(out.stdout)
    assert EVAL_KEYS | {"rmse"} <= set(result)
    assert 0.0 <= result["rmse"] <= 1.0
    assert (tmp_path / "p.npz").exists()


def test_segment_tiff_and_npy(tiny_ckpt, tmp_path):
    images, _ = generate_dataset(1, SyntheticConfig(shape=(80, 72)), seed=0)
    tifffile.imwrite(tmp_path / "in.tif", images[0])
    np.save(tmp_path / "in.npy", images[0])
    hts("segment", tmp_path / "in.tif", tmp_path / "out.tif", "--model", tiny_ckpt)
    hts("segment", tmp_path / "in.npy", tmp_path / "out.npy", "--model", tiny_ckpt)
    a, b = tifffile.imread(tmp_path / "out.tif"), np.load(tmp_path / "out.npy")
    assert a.dtype == np.uint32 and a.shape == (80, 72)
    np.testing.assert_array_equal(a, b)


def bad_cases(tmp_path, data_npz, tiny_ckpt):
    np.save(tmp_path / "nan.npy", np.full((32, 32), np.nan))
    np.save(tmp_path / "rgb.npy", np.zeros((32, 32, 3)))
    np.save(tmp_path / "ok.npy", np.zeros((32, 32), np.uint16))
    (tmp_path / "corrupt.pt").write_bytes(b"garbage")
    np.savez(tmp_path / "short.npz", n=np.asarray(2), labels_0000=np.zeros((4, 4), np.uint16))
    return [
        (["segment", tmp_path / "nan.npy", tmp_path / "o.tif", "--model", tiny_ckpt], "NaN"),
        (["segment", tmp_path / "rgb.npy", tmp_path / "o.tif", "--model", tiny_ckpt], "2D"),
        (["segment", tmp_path / "missing.tif", tmp_path / "o.tif", "--model", tiny_ckpt], "no such file"),
        (["segment", tmp_path / "ok.npy", tmp_path / "o.tif", "--model", tmp_path / "corrupt.pt"], "corrupt"),
        (["segment", tmp_path / "ok.npy", tmp_path / "o.png", "--model", tiny_ckpt], "unsupported label format"),
        (["segment", tmp_path / "ok.npy", tmp_path / "o.tif", "--min-size", "-1"], "--min-size"),
        (["eval", "--data", tmp_path / "nope.npz", "--model", tiny_ckpt], "does not exist"),
        (["eval", "--data", data_npz, "--pred", tmp_path / "short.npz"], "labels_0001"),
        (["train", "--data", data_npz, "--out", tmp_path / "m.pt", "--crop", "100"], "multiple of 16"),
    ]


def test_bad_input_is_one_line_and_nonzero(tmp_path, data_npz, tiny_ckpt):
    for args, match in bad_cases(tmp_path, data_npz, tiny_ckpt):
        proc = hts(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hts: error: ") and match in lines[0], (args, proc.stderr)


def test_segment_without_default_model_says_so(tmp_path):
    np.save(tmp_path / "img.npy", np.zeros((32, 32), np.uint8))
    proc = hts("segment", tmp_path / "img.npy", tmp_path / "o.tif", check=False)
    from hts.model.pretrained import default_model_path

    if default_model_path().exists():
        assert proc.returncode == 0
    else:
        assert proc.returncode == 2 and "no default model is installed" in proc.stderr


@pytest.mark.slow
def test_train_cli_then_eval(data_npz, tmp_path):
    out = tmp_path / "m.pt"
    hts("train", "--data", data_npz, "--val", data_npz, "--out", out, "--width", "4", "--steps", "4",
        "--batch-size", "2", "--crop", "64", "--val-every", "2")
    assert out.exists() and out.with_suffix(".best.pt").exists()
    again = hts("train", "--data", data_npz, "--val", data_npz, "--out", out, "--width", "4", "--steps", "4",
                "--batch-size", "2", "--crop", "64", "--val-every", "2")
    assert "already trained" in again.stdout
    json.loads(hts("eval", "--data", data_npz, "--model", out.with_suffix(".best.pt"), "--json").stdout)


@pytest.mark.slow
def test_demo_runs_the_plate_pipeline_end_to_end(tmp_path):
    proc = hts("demo", "--out", tmp_path / "demo")
    assert "12/12 fields" in proc.stdout and "true" in proc.stdout
    wells = proc.stdout.split("error_%")[1].strip().splitlines()[:6]
    errors = [float(line.split()[-1]) for line in wells]
    assert len(errors) == 6 and all(abs(e) < 25 for e in errors), proc.stdout  # per-well count error, %
    assert (tmp_path / "demo" / "plate.zarr" / "A" / "1" / "0" / "labels" / "nuclei").is_dir()


def test_segment_zarr_in_zarr_out(tiny_ckpt, tmp_path):
    import zarr

    images, _ = generate_dataset(1, SyntheticConfig(shape=(96, 80)), seed=3)
    zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=(96, 80), chunks=(48, 48), dtype="uint16")[...] = images[0]
    proc = hts("segment", tmp_path / "in.zarr", tmp_path / "out.zarr", "--model", tiny_ckpt, "--diameter", "20")
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert out.shape == (96, 80) and out.dtype == np.uint32
    assert f"{out.attrs['n_nuclei']} nuclei" in proc.stdout
