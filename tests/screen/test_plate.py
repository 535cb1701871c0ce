"""``hts run`` on real OME-Zarr plates (NGFF 0.4 and 0.5) with a real Dask LocalCluster of worker processes.

Plates come from the project's synthetic generator with known nuclei. The
runs are real processes; kills are real signals.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from hts.io.results import results_dir
from hts.synthetic.plate import PlateSpec, read_truth, write_plate
from hts.training.metrics import average_precision

pytestmark = pytest.mark.slow
SPEC = dict(rows=2, columns=2, fields=2, size=256)


def hts(*args, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hts", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"hts {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def run_args(path, *extra):
    return ("run", path, "--channel", "DAPI", "--workers", "2", "--diameter", "20", *extra)


def field_paths(plate) -> list[str]:
    return [f"{r}/{c}/{f}" for r in "AB" for c in "12" for f in "01"]


def read_labels(root, path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(root), mode="r")[f"{path}/labels/nuclei/0"])


def one_version(done_plate) -> None:
    """Run a test on the NGFF 0.5 plate only: what differs between versions is the writing, which
    test_run_writes_labels_counts_and_valid_ngff and tests/screen/test_kill_points.py check in both."""
    if zarr.open_group(str(done_plate[0]), mode="r").metadata.zarr_format != 3:
        pytest.skip("kills and reruns are checked on the NGFF 0.5 plate (the version-specific writing is tested in both)")


@pytest.fixture(scope="module", params=["0.4", "0.5"])
def done_plate(request, tmp_path_factory):
    """A plate run once, uninterrupted: the reference for the other tests."""
    path = tmp_path_factory.mktemp(f"plate{request.param}") / "plate.zarr"
    truth = write_plate(path, PlateSpec(version=request.param, **SPEC))
    proc = hts(*run_args(path))
    return path, truth, proc


def test_run_writes_labels_counts_and_valid_ngff(done_plate):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader
    from ome_zarr_models import open_ome_zarr

    path, truth, proc = done_plate
    assert "8/8 fields done" in proc.stdout and "dashboard: http://" in proc.stdout
    from hts.engine.infer import precision

    for marker in (results_dir(path) / "fields").glob("*.json"):  # each field says how it was computed
        m = json.loads(marker.read_text())
        assert m["device"] == "cpu" and m["precision"] == precision(torch.device("cpu")), m
    # labels against the ground truth
    aps = [average_precision(read_truth(path, p), read_labels(path, p), [0.5])[0] for p in field_paths(path)]
    assert min(aps) >= 0.6 and np.mean(aps) >= 0.75, aps
    # counts: CLI CSV == tables == attributes == labels, and close to the truth
    wells = pd.read_csv(io.StringIO(hts("counts", path).stdout), dtype={"column": str})
    assert list(wells.columns[:5]) == ["well", "row", "column", "fields", "n_nuclei"]
    assert list(wells["well"]) == ["A/1", "A/2", "B/1", "B/2"] and (wells["fields"] == 2).all()
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)["hts"]
    for _, w in wells.iterrows():
        from_labels = sum(int(read_labels(path, f"{w.well}/{f}").max()) for f in "01")
        assert w.n_nuclei == from_labels == attrs["wells"][w.well] == dict(root[w.well].attrs)["hts"]["n_nuclei"]
        assert abs(w.n_nuclei - sum(truth[w.well])) <= 0.25 * sum(truth[w.well])
    nuclei = pd.read_parquet(results_dir(path) / "nuclei.parquet")
    assert len(nuclei) == wells["n_nuclei"].sum() and {"well", "field", "label", "centroid_y", "area",
                                                         "mean_intensity"} <= set(nuclei.columns)
    # NGFF: the plate still validates, and the labels open as labels with the image's pyramid
    assert type(open_ome_zarr(root)).__name__ == "HCS"
    nodes = list(Reader(parse_url(str(path / "A" / "1" / "0" / "labels" / "nuclei")))())
    label = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert label and [tuple(d.shape) for d in label[0].data] == [(256, 256), (128, 128)]


def test_rerun_skips_done_fields_and_overwrite_recomputes(done_plate):
    path, _, _ = done_plate
    before = read_labels(path, "B/2/1")
    again = hts(*run_args(path))
    assert "8 from earlier runs" in again.stdout and "LocalCluster" not in again.stdout
    np.testing.assert_array_equal(read_labels(path, "B/2/1"), before)


def test_rerun_with_other_segmentation_settings_is_refused(done_plate, capsys):
    """In-process (:func:`cli_run.hts_in_process`): the refusal comes before any worker starts."""
    from cli_run import hts_in_process

    path, _, _ = done_plate
    for extra, option in ((("--min-size", "0"), "--min-size"), (("--channel", "GFP"), "--channel")):
        proc = hts_in_process(capsys, *run_args(path, *extra))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert option in lines[0] and "--overwrite" in lines[0] and "8 fields" in lines[0], lines[0]
    proc = hts_in_process(capsys, "run", path, "--channel", "DAPI", "--workers", "2", "--diameter", "25")
    assert proc.returncode == 2 and "--diameter 20.0 px" in proc.stderr and "asks 25.0 px" in proc.stderr, proc.stderr


def test_resumed_run_keeps_the_plates_diameter(done_plate, tmp_path):
    """Without --diameter, the fields left to do get the done fields' diameter, not a new estimate."""
    one_version(done_plate)
    src, _, _ = done_plate
    plate = tmp_path / "plate.zarr"
    shutil.copytree(src, plate)
    shutil.copytree(results_dir(src), results_dir(plate))
    for key in ("B02-f0", "B02-f1"):
        (results_dir(plate) / "fields" / f"{key}.json").unlink()  # as if the run had stopped before them
    proc = hts("run", plate, "--channel", "DAPI", "--workers", "2")
    assert "nucleus diameter: 20.0 px (from the 6 fields done earlier)" in proc.stdout, proc.stdout
    assert "estimated" not in proc.stdout and "8/8 fields done" in proc.stdout
    for p in ("B/2/0", "B/2/1"):
        np.testing.assert_array_equal(read_labels(plate, p), read_labels(src, p), err_msg=p)


def _copy_plate(done_plate, tmp_path) -> Path:
    src, _, _ = done_plate
    dst = tmp_path / "plate.zarr"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("nuclei"))  # the input only: no labels/nuclei
    for p in field_paths(dst):  # drop our labels from the labels list again
        group = zarr.open_group(str(dst / p / "labels"), mode="r+")
        attrs = dict(group.attrs)
        ome = attrs.get("ome", attrs)
        ome["labels"] = [n for n in ome["labels"] if n != "nuclei"]
        group.attrs.put(attrs)
    return dst


def _assert_same_output(a: Path, b: Path) -> None:
    for p in field_paths(a):
        np.testing.assert_array_equal(read_labels(a, p), read_labels(b, p), err_msg=p)
    for table in ("wells.csv", "fields.csv"):
        assert (results_dir(a) / table).read_text() == (results_dir(b) / table).read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(results_dir(a) / "nuclei.parquet"),
                                  pd.read_parquet(results_dir(b) / "nuclei.parquet"))


def wait_for_markers(folder: Path, n: int, timeout: float = 240) -> None:
    """Wait until ``n`` fields of a running ``hts run`` are done (their markers exist)."""
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(folder.glob("*.json"))) < n:
        time.sleep(0.05)


def test_driver_killed_then_rerun_gives_identical_output(done_plate, tmp_path):
    one_version(done_plate)
    plate = _copy_plate(done_plate, tmp_path)
    markers = results_dir(plate) / "fields"
    proc = subprocess.Popen([sys.executable, "-m", "hts", *map(str, run_args(plate))], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_markers(markers, 2)
    os.kill(proc.pid, signal.SIGKILL)  # the driver, mid-run
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # then its orphaned workers
    n_done = len(list(markers.glob("*.json")))
    assert 2 <= n_done < 8, "the kill should land mid-run"
    assert not (results_dir(plate) / "run.json").exists()  # an interrupted run does not look complete
    again = hts(*run_args(plate))
    assert f"({n_done} from earlier runs)" in again.stdout
    _assert_same_output(done_plate[0], plate)


def test_run_killed_with_its_workers_at_a_write_step_then_rerun_gives_identical_output(done_plate, tmp_path):
    """As ``scancel`` or the OOM killer would: the driver and every worker get SIGKILL mid-write.

    ``HTS_KILL_AFTER_WRITES=12:group`` (hts.io.killpoint): the first process
    of the run to finish its 12th write step kills the run's process group,
    inside a field's label write. Every field write is swept step by step in
    tests/screen/test_kill_points.py; this is the same through ``hts run``.
    """
    one_version(done_plate)
    from hts.io.ngff import open_source

    plate = _copy_plate(done_plate, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "hts", *map(str, run_args(plate))], capture_output=True, text=True,
                          timeout=300, start_new_session=True, env={**os.environ, "HTS_KILL_AFTER_WRITES": "12:group"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (results_dir(plate) / "run.json").exists()  # an interrupted run does not look complete
    assert len(open_source(plate).fields) == 8  # and the plate is not bricked: every field still reads
    again = hts(*run_args(plate))
    assert "8/8 fields done" in again.stdout
    _assert_same_output(done_plate[0], plate)


def test_worker_killed_mid_run_does_not_change_the_output(done_plate, tmp_path):
    one_version(done_plate)
    import psutil

    plate = _copy_plate(done_plate, tmp_path)
    markers = results_dir(plate) / "fields"
    proc = subprocess.Popen([sys.executable, "-m", "hts", *map(str, run_args(plate))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_markers(markers, 1)
    # the LocalCluster's nannies live in the driver; the worker processes are forked from its fork server
    servers = [p for p in psutil.Process(proc.pid).children() if "forkserver" in " ".join(p.cmdline())]
    assert len(servers) == 1, "no worker fork server found"
    workers = servers[0].children()
    assert workers, "no worker process found"
    workers[0].kill()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "8/8 fields done" in out
    _assert_same_output(done_plate[0], plate)


def test_two_runs_on_one_output_are_refused(done_plate, tmp_path):
    one_version(done_plate)
    from hts.io.results import Results

    plate = _copy_plate(done_plate, tmp_path)
    holder = Results(results_dir(plate))
    holder.lock()
    try:
        proc = hts(*run_args(plate), check=False)
    finally:
        holder.unlock()
    assert proc.returncode == 2 and "another hts run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_out_leaves_a_read_only_plate_untouched(done_plate, tmp_path):
    from ome_zarr_models import open_ome_zarr

    plate = _copy_plate(done_plate, tmp_path)
    subprocess.run(["chmod", "-R", "a-w", str(plate)], check=True)
    try:
        if os.geteuid() != 0:  # root writes anyway; the error path is only observable as a normal user
            in_place = hts(*run_args(plate), check=False)
            assert in_place.returncode == 2 and "--out" in in_place.stderr
        out = tmp_path / "results.zarr"
        hts(*run_args(plate, "--out", out))
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(plate)], check=True)
    assert not list(plate.glob("*/*/*/labels/nuclei"))
    assert type(open_ome_zarr(zarr.open_group(str(out), mode="r"))).__name__ == "HCS"
    for p in field_paths(out):
        np.testing.assert_array_equal(read_labels(out, p), read_labels(done_plate[0], p))
        image = zarr.open_group(str(out / p), mode="r")
        assert np.asarray(image["0"]).shape == (1, 256, 256)  # the segmented nucleus plane, in the image's (c, y, x)
        ome = dict(image.attrs).get("ome", dict(image.attrs))
        (channel,) = ome["omero"]["channels"]  # its channel keeps the input's name and display settings
        assert channel["label"] == "DAPI" and channel["color"] == "0000FF"
    assert (results_dir(out) / "wells.csv").read_text() == (results_dir(done_plate[0]) / "wells.csv").read_text()
