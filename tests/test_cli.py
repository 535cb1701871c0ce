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


def test_bad_input_is_one_line_and_nonzero(tmp_path, data_npz, tiny_ckpt, capsys):
    from cli_run import hts_in_process

    cases = bad_cases(tmp_path, data_npz, tiny_ckpt)
    proc = hts(*cases[0][0], check=False)  # one as a real process: the exit status and stderr of the command
    assert proc.returncode == 2 and proc.stderr.strip().startswith("hts: error: ") and cases[0][1] in proc.stderr
    for args, match in cases:  # the rest in-process: the same code path, without an interpreter start each
        proc = hts_in_process(capsys, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hts: error: ") and match in lines[0], (args, proc.stderr)


def test_segment_without_default_model_says_so(tmp_path, monkeypatch, capsys):
    """With the shipped weights absent (WEIGHTS_DIR pointed at an empty folder), one line names the missing file."""
    from hts.cli import main
    from hts.model import pretrained

    np.save(tmp_path / "img.npy", np.zeros((32, 32), np.uint8))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "no-weights")
    pretrained.default_model.cache_clear()  # a model loaded earlier in this process would hide the missing file
    missing = pretrained.default_model_path()
    assert missing == tmp_path / "no-weights" / "default.pt" and not missing.exists()
    assert main(["segment", str(tmp_path / "img.npy"), str(tmp_path / "o.tif")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hts: error: no default model is installed"), lines
    assert f"{missing} not found" in lines[0], lines
    assert not (tmp_path / "o.tif").exists()


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


# The options and their dataclasses: one default, in the dataclass; every field reachable from the command line.

FULL_RUN = ["run", "p.zarr", "--channel", "1", "--z", "2", "--out", "o.zarr/", "--cluster", "slurm", "--workers", "3",
            "--threads-per-worker", "2", "--batch-size", "8", "--diameter", "20", "--min-size", "5", "--model", "m.pt",
            "--device", "cuda", "--block", "2048", "--dashboard", ":0", "--jobqueue", "j.yaml", "--partition", "gpu",
            "--account", "acc", "--walltime", "01:00:00", "--memory", "32GB", "--cores", "8", "--gpus", "2",
            "--min-jobs", "1", "--max-jobs", "6", "--interface", "ib0", "--lifetime", "55m", "--lifetime-stagger", "2m",
            "--tls", "--job-prologue", "source a", "--job-prologue", "b", "--overwrite"]


def parse(*argv: str):
    from hts.cli import build_parser

    return build_parser().parse_args(list(argv))


def subparser(name: str):
    from hts.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


def test_run_defaults_are_the_dataclasses():
    from hts.cli_args import run_options
    from hts.screen.cluster import ClusterOptions
    from hts.screen.run import RunOptions
    from hts.screen.slurm import SlurmOptions

    assert run_options(parse("run", "p.zarr")) == RunOptions(cluster=ClusterOptions(slurm=SlurmOptions()))
    assert run_options(parse("run", "p.zarr", "--diameter", "auto", "--resume")).diameter is None


def test_every_run_option_reaches_its_field():
    from hts.cli_args import run_options
    from hts.screen.cluster import ClusterOptions
    from hts.screen.run import RunOptions
    from hts.screen.slurm import SlurmOptions

    slurm = SlurmOptions(jobqueue="j.yaml", partition="gpu", account="acc", walltime="01:00:00", memory="32GB",
                         cores=8, gpus=2, min_jobs=1, max_jobs=6, interface="ib0", lifetime="55m",
                         lifetime_stagger="2m", tls=True, prologue=["source a", "b"])
    cluster = ClusterOptions(cluster="slurm", workers=3, threads_per_worker=2, dashboard=":0", slurm=slurm)
    assert run_options(parse(*FULL_RUN)) == RunOptions(
        out="o.zarr", channel=1, z=2, diameter=20.0, model="m.pt", device="cuda", batch_size=8, overwrite=True,
        block=2048, min_size=5, cluster=cluster)
    assert run_options(parse("run", "p.zarr", "--channel", "DAPI")).channel == "DAPI"


def test_run_help_shows_the_dataclass_defaults():
    from hts.cli_args import Default
    from hts.screen.cluster import ClusterOptions
    from hts.screen.run import RunOptions
    from hts.screen.slurm import SlurmOptions

    owners = {"RunOptions": RunOptions, "ClusterOptions": ClusterOptions, "SlurmOptions": SlurmOptions}
    run = subparser("run")
    shown = [a for a in run._actions if isinstance(a.default, Default)]
    assert {a.dest for a in shown} >= {"batch_size", "block", "cluster", "dashboard", "gpus", "min_jobs", "max_jobs"}
    help_text = " ".join(run.format_help().split())
    for action in shown:
        value = getattr(owners[action.default.owner.rpartition(":")[2]], action.dest)
        assert action.default.value() == value
        assert f"{action.option_strings[0]} {action.metavar or action.dest.upper()} " in help_text
        assert f"(default {value})" in help_text, action.dest
    assert f"(default {RunOptions.block})" in help_text and f"(default {RunOptions.batch_size})" in help_text


def test_train_defaults_and_the_old_diameter_name():
    from hts.cli_args import train_config
    from hts.training.train import TrainConfig

    base = ("train", "--data", "d.npz", "--out", "m.pt")
    assert train_config(parse(*base)) == TrainConfig()
    assert train_config(parse(*base, "--canonical-diameter", "24")).diameter == 24.0
    assert train_config(parse(*base, "--canonical-diameter", "0")).diameter is None
    assert train_config(parse(*base, "--diameter", "20")).diameter == 20.0  # the former name still works
    assert train_config(parse(*base, "--diameter", "0")).diameter is None
    full = parse(*base, "--variant", "U-BCE", "--width", "4", "--anchor-base", "24", "--steps", "10", "--batch-size",
                 "2", "--crop", "64", "--lr", "0.001", "--seed", "3", "--decay-from", "5", "--val-every", "2",
                 "--no-augment")
    assert train_config(full) == TrainConfig(variant="U-BCE", width=4, anchor_base=24.0, steps=10, batch_size=2,
                                             crop=64, lr=0.001, seed=3, val_every=2, augment=False, decay_from=5)
    help_text = " ".join(subparser("train").format_help().split())
    assert "--canonical-diameter" in help_text and "--diameter" not in help_text.replace("--canonical-diameter", "")
    assert f"default {TrainConfig.width} for CPU" in help_text and f"(default {TrainConfig.diameter})" in help_text


def test_train_with_the_old_diameter_name_prints_nothing_extra(data_npz, tmp_path):
    out = tmp_path / "m.pt"
    args = ["train", "--data", data_npz, "--width", "4", "--steps", "1", "--batch-size", "1", "--crop", "32",
            "--val-every", "1"]
    old = hts(*args, "--out", out, "--diameter", "20")
    new = hts(*args, "--out", tmp_path / "n.pt", "--canonical-diameter", "20")
    assert old.stdout.replace(str(out), "OUT") == new.stdout.replace(str(tmp_path / "n.pt"), "OUT")
    assert "deprecat" not in old.stderr.lower() and "warn" not in old.stderr.lower()
    from hts.model.checkpoint import read_checkpoint

    assert read_checkpoint(out)["config"]["diameter"] == 20.0


@pytest.mark.parametrize("text, run, evaluated", [("auto", None, None), ("18.5", 18.5, 18.5), ("gt", "error", "gt"),
                                                  ("0", "error", "error"), ("-3", "error", "error"),
                                                  ("nan", "error", "error"), ("inf", "error", "error"),
                                                  ("big", "error", "error")])
def test_diameter_is_the_images_nucleus_diameter(text, run, evaluated, capsys):
    for argv, want in ((["run", "p.zarr"], run), (["segment", "a.tif", "b.tif"], run),
                       (["eval", "--data", "d.npz"], evaluated)):
        if want == "error":
            with pytest.raises(SystemExit) as exc:
                parse(*argv, "--diameter", text)
            assert exc.value.code == 2 and "argument --diameter" in capsys.readouterr().err
        else:
            assert parse(*argv, "--diameter", text).diameter == want
    assert parse("eval", "--data", "d.npz").diameter == "gt" and parse("segment", "a", "b").diameter is None


def test_commands_do_not_import_the_run_machinery():
    code = ("import sys; from hts.cli import build_parser; build_parser().parse_args(['run', 'p.zarr']); "
            "print(sorted(m for m in ('hts.screen.run', 'hts.screen.cluster', 'hts.training.train') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
