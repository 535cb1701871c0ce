"""Label volumes end to end: time-lapse plates (every time point) and z-stacks (--z all, linked in 3D).

Synthetic plates with known truth (hts.synthetic.volumes): counts per well
and time point, doubling times, 3D nuclei; a run killed mid-series and rerun
equals a clean run; third-party readers open the label volumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import zarr

from cli_run import hts, hts_in_process, one_line_error
from hts.engine.zlink import match_3d
from hts.io.results import results_dir
from hts.synthetic.volumes import TimelapseSpec, ZStackSpec, read_truth_volume, write_timelapse, write_zstack

RUN = ("--channel", "DAPI", "--diameter", "20", "--workers", "2")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["0.4", "0.5"])
def timelapse(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"tl{request.param}") / "tl.zarr"
    # the 0.5 plate has every growth rate (and the kill test); the 0.4 one, two wells, checks the other writer
    layout = {"rows": 1, "columns": 2} if request.param == "0.4" else {}
    truth = write_timelapse(path, TimelapseSpec(version=request.param, **layout))
    proc = hts("run", path, *RUN, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return path, truth


def test_counts_per_well_and_time_point_within_5_percent(timelapse):
    path, truth = timelapse
    proc = hts("counts", path, "--by-time")
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(__import__("io").StringIO(proc.stdout)).set_index(["well", "t"])["n_nuclei"]
    want = truth.counts.groupby(["well", "t"])["n_nuclei"].sum()
    assert list(got.index) == list(want.index)
    error = (got - want).abs() / want
    assert error.max() <= 0.05, error.sort_values().tail(3)
    fields = pd.read_csv(results_dir(path) / "fields.csv")
    assert "t" in fields and len(fields) == len(truth.counts)
    nuclei = pd.read_parquet(results_dir(path) / "nuclei.parquet",
                             columns=["well", "t", "Nuclei_Intensity_MeanIntensity_GFP"])
    assert nuclei.groupby(["well", "t"]).size().sum() == got.sum()
    # the other channels are read at the nucleus's own time point: GFP follows every nucleus of the last one
    last = nuclei[nuclei["t"] == nuclei["t"].max()]["Nuclei_Intensity_MeanIntensity_GFP"]
    assert last.quantile(0.1) > 200  # GFP ~600 ADU over the nuclei, 50 beside them (read at t = 0: 10th percentile 53)


def test_label_volume_axes_and_every_time_point(timelapse):
    path, truth = timelapse
    group = zarr.open_group(str(path / "A/1/0/labels/nuclei"), mode="r")
    attrs = group.attrs.get("ome", group.attrs)
    axes = [a["name"].lower() for a in attrs["multiscales"][0]["axes"]]
    assert axes == ["t", "z", "y", "x"]
    volume = np.asarray(group["0"])
    spec = truth.spec
    assert volume.shape == (spec.timepoints, 1, spec.size, spec.size)
    per_t = [len(np.unique(v)) - 1 for v in volume]
    want = truth.counts[truth.counts["well"] == "A/1"].sort_values("t")["n_nuclei"].tolist()
    assert np.all(np.abs(np.array(per_t) - want) <= np.ceil(0.05 * np.array(want)))
    assert group["1"].shape[:2] == volume.shape[:2]  # the pyramid keeps t and z


def test_doubling_time_per_well_within_10_percent(timelapse, tmp_path):
    from hts.analysis.report import write_report

    path, truth = timelapse
    index = write_report(path, tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["growth"]["unit"] == "hour" and "growth.png" in index.read_text()
    got = {r["well"]: r for r in data["growth"]["doubling"]}
    for well, td in truth.doubling_time_h.items():
        if np.isfinite(td):
            assert got[well]["ok"] and abs(got[well]["doubling_time"] - td) / td <= 0.10, (well, got[well], td)
        else:
            assert not got[well]["ok"]


def _kill_when(args, ready, timeout=300) -> None:
    """Start ``hts ARGS`` in its own process group; SIGKILL the group (driver and workers) once ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-m", "hts", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_mid_series_then_rerun_gives_identical_label_volumes(timelapse, tmp_path):
    clean, truth = timelapse
    if truth.spec.version != "0.5":
        pytest.skip("one NGFF version is enough for the kill point")
    path = tmp_path / "tl.zarr"
    write_timelapse(path, truth.spec)
    markers = results_dir(path) / "fields"
    _kill_when(["run", path, *RUN], lambda: markers.is_dir() and len(list(markers.glob("*.json"))) >= 5)
    done = len(list(markers.glob("*.json")))
    assert 5 <= done < len(truth.counts), done  # killed mid-series
    proc = hts("run", path, *RUN, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"({done} from earlier runs)" in proc.stdout
    for well in ("A/1", "A/2", "B/1", "B/2"):
        a = np.asarray(zarr.open_group(str(clean / well / "0/labels/nuclei"), mode="r")["0"])
        b = np.asarray(zarr.open_group(str(path / well / "0/labels/nuclei"), mode="r")["0"])
        assert np.array_equal(a, b), well
    pd.testing.assert_frame_equal(pd.read_csv(results_dir(clean) / "fields.csv").drop(columns=["path"]),
                                  pd.read_csv(results_dir(path) / "fields.csv").drop(columns=["path"]))


@pytest.fixture(scope="module")
def zstack(tmp_path_factory):
    path = tmp_path_factory.mktemp("zs") / "zs.zarr"
    truth = write_zstack(path, ZStackSpec())
    proc = hts("run", path, "--diameter", "20", "--z", "all", "--workers", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr
    return path, truth


def test_z_all_matches_95_percent_of_3d_nuclei(zstack):
    path, truth = zstack
    matched = true = 0
    for f in ("A/1/0", "A/1/1"):
        want = read_truth_volume(path, f)
        got = np.asarray(zarr.open_group(str(path / f / "labels/nuclei"), mode="r")["0"])
        assert got.shape == want.shape
        m = match_3d(want, got, 0.5)
        matched, true = matched + m["matched"], true + m["true"]
    assert matched / true >= 0.95, (matched, true)
    nuclei = pd.read_parquet(results_dir(path) / "nuclei.parquet")
    assert {"centroid_z", "planes"} <= set(nuclei.columns) and (nuclei["planes"] >= 1).all()


def test_label_volumes_open_in_ome_zarr_py_and_napari_with_their_axes(zstack):
    from napari_ome_zarr import napari_get_reader
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    path, _ = zstack
    image = path / "A/1/0"
    labels = [n for n in Reader(parse_url(str(image)))() if n.load(Label)]
    assert labels, "ome-zarr-py finds no labels"
    axes = [a["name"] for a in labels[0].metadata["axes"]]
    assert axes == ["z", "y", "x"] and labels[0].data[0].shape == (16, 192, 192)
    layers = napari_get_reader(str(image))(str(image))
    kinds = {layer_type for _, _, layer_type in layers}
    assert kinds == {"image", "labels"}
    data = next(d for d, _, kind in layers if kind == "labels")
    assert data[0].shape == (16, 192, 192)


def test_time_and_z_options_are_checked(tmp_path, capsys):
    path = tmp_path / "tl.zarr"
    write_timelapse(path, TimelapseSpec(rows=1, columns=1, size=192, timepoints=6))
    one_line_error(hts_in_process(capsys, "run", path, "--channel", "DAPI", "--t", "9"), "--t 9", "6 time point")
    one_line_error(hts_in_process(capsys, "run", path, "--channel", "DAPI", "--t", "x:y"), "--t")
    one_line_error(hts_in_process(capsys, "run", path, "--channel", "DAPI", "--z", "top"), "--z")
    one_line_error(hts_in_process(capsys, "counts", path.parent / "nothing.zarr", "--by-time"), "no counts")
