"""``hts report``, the QC flags and ``hts.open_results`` on real runs of synthetic plates and a slide.

The NGFF 0.4 plate has three fields damaged before the run so that QC must
flag exactly them: an empty field (constant background), an overexposed one
(gain x100, clipped at 65535) and a blurred one (Gaussian sigma 4). The
report's HTML is opened in a real headless browser (Debian's chromium).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage

import hts
from hts.analysis.count import plate_matrix
from hts.analysis.figures import heatmap
from hts.analysis.report import write_report
from hts.io.ngff_image import image_info
from hts.io.ngff_pyramid import downsample_to
from hts.io.results import results_dir
from hts.synthetic.plate import PlateSpec, write_plate, write_slide

EMPTY, SATURATED, BLURRED = "A/2/0", "B/1/1", "B/2/0"


def hts_cli(*args, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hts", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"hts {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def edit_nuclei(root: zarr.Group, path: str, fn) -> None:
    """Replace the DAPI plane (channel 0) of every pyramid level of an image by ``fn(level 0)``, resampled."""
    group = root[path]
    info = image_info(group, path)
    plane = fn(np.asarray(group[info.levels[0]][0]))
    for level in info.levels:
        arr = group[level]
        data = np.asarray(arr[...])
        data[0] = downsample_to(plane, data.shape[1:])
        arr[...] = data


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    """A 3x3-well plate (2 fields of 256 px) with one empty, one saturated and one blurred field, run once."""
    path = tmp_path_factory.mktemp("qcplate") / "plate.zarr"
    write_plate(path, PlateSpec(rows=3, columns=3, fields=2, size=256, version="0.4"))
    root = zarr.open_group(str(path), mode="r+")
    edit_nuclei(root, EMPTY, lambda d: np.full_like(d, 100))
    edit_nuclei(root, SATURATED, lambda d: np.minimum(d.astype(np.float64) * 100, 65535).astype(d.dtype))
    edit_nuclei(root, BLURRED, lambda d: ndimage.gaussian_filter(d.astype(np.float32), 4).round().astype(d.dtype))
    hts_cli("run", path, "--channel", "DAPI", "--workers", "2", "--diameter", "20")
    return path


@pytest.fixture(scope="module")
def report(plate) -> Path:
    return write_report(plate)


def image_sources(index: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', index.read_text())


@pytest.mark.slow
def test_report_heatmaps_equal_the_counts_table(plate, report):
    assert report == results_dir(plate) / "report" / "index.html" and report.is_file()
    data = json.loads((report.parent / "report.json").read_text())
    wells = pd.read_csv(results_dir(plate) / "wells.csv", dtype={"row": str, "column": str})
    assert data["rows"] == ["A", "B", "C"] and data["columns"] == ["1", "2", "3"]
    for name in ("n_nuclei", "mean_area", "mean_intensity"):
        m = data["heatmaps"][name]
        assert len(m) == 3 and all(len(r) == 3 for r in m)
        for _, w in wells.iterrows():
            cell = m[data["rows"].index(w.row)][data["columns"].index(w.column)]
            if name == "n_nuclei":
                assert cell == w.n_nuclei, (w.well, cell, w.n_nuclei)
            else:
                assert cell == pytest.approx(w[name], rel=1e-9), (name, w.well)
    assert sum(map(sum, data["heatmaps"]["n_nuclei"])) == wells["n_nuclei"].sum()
    fields = pd.read_csv(results_dir(plate) / "fields.csv")
    assert sum(data["histogram"]["counts"]) == len(fields) == 18
    # every image the page shows exists; the gallery shows the three flagged fields
    srcs = image_sources(report)
    assert len(srcs) >= 5 and all((report.parent / s).is_file() for s in srcs)
    assert {g["path"] for g in data["gallery"]} >= {EMPTY, SATURATED, BLURRED}
    assert not any("error" in g for g in data["gallery"])
    text = report.read_text()
    for needle in ("sha256", "wall time", "ratio outer/inner", "out_of_focus", "DAPI"):
        assert needle in text


@pytest.mark.slow
def test_qc_flags_fire_on_the_damaged_fields_only(plate, report):
    qc = pd.read_csv(report.parent / "qc_fields.csv", dtype={"path": str}, keep_default_na=False)
    flags = dict(zip(qc["path"], qc["flags"]))
    assert flags.pop(EMPTY) == "empty"
    assert flags.pop(SATURATED) == "saturated"
    assert flags.pop(BLURRED) == "out_of_focus"
    assert set(flags.values()) == {""}, flags
    assert np.isfinite(qc["z"]).all()
    wells = pd.read_csv(report.parent / "qc_wells.csv", keep_default_na=False)
    assert {"z", "flags", "flagged_fields"} <= set(wells.columns)
    assert dict(zip(wells["well"], wells["flagged_fields"])) == {"A/1": 0, "A/2": 1, "A/3": 0, "B/1": 1, "B/2": 1,
                                                                  "B/3": 0, "C/1": 0, "C/2": 0, "C/3": 0}
    edge = json.loads((report.parent / "report.json").read_text())["qc"]["edge_effect"]
    assert edge["outer_wells"] == 8 and edge["inner_wells"] == 1 and edge["ratio"] > 0
    assert edge["ratio"] == pytest.approx(edge["outer_mean"] / edge["inner_mean"])


@pytest.mark.slow
def test_open_results_tables_and_lazy_arrays(plate):
    res = hts.open_results(plate)
    assert res.kind == "plate" and (res.rows, res.columns) == (["A", "B", "C"], ["1", "2", "3"])
    wells = pd.read_csv(results_dir(plate) / "wells.csv")
    assert list(res.wells["n_nuclei"]) == list(wells["n_nuclei"]) and "flags" in res.fields
    assert len(res.nuclei) == wells["n_nuclei"].sum() and res.record["model"]["sha256"]
    root = zarr.open_group(str(plate), mode="r")
    for well, field in (("B/3", 1), ("A/2", "0")):
        labels = res.labels(well, field)
        assert labels.dims == ("y", "x") and isinstance(labels.data, da.Array)
        np.testing.assert_array_equal(labels.values, np.asarray(root[f"{well}/{field}/labels/nuclei/0"]))
        image = res.image(well, field)
        assert image.dims == ("y", "x") and isinstance(image.data, da.Array)
        np.testing.assert_array_equal(image.values, np.asarray(root[f"{well}/{field}/s0"][0]))
    same = hts.open_results(results_dir(plate))  # the .hts folder works too
    assert same.zarr.resolve() == plate.resolve() and len(same.fields) == 18
    with pytest.raises(hts.HtsError, match="no field 7"):
        res.labels("A/1", 7)


@pytest.mark.slow
def test_cli_report_and_errors(plate, tmp_path):
    out = tmp_path / "rep"
    proc = hts_cli("report", plate, "--out", out)
    assert proc.stdout.strip() == str(out / "index.html") and (out / "report.json").is_file()
    bad = hts_cli("report", tmp_path, check=False)
    assert bad.returncode == 2 and str(tmp_path) in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_opens_in_headless_chromium_with_all_images(report, chromium, tmp_path):
    n = len(image_sources(report))
    assert n >= 5
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           report.resolve().as_uri()], capture_output=True, text=True, timeout=180,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', proc.stdout)
    assert loaded, f"the page's load script did not run:\n{proc.stdout[:500]}\n{proc.stderr[-1000:]}"
    assert loaded.group(1) == loaded.group(2) == str(n)


@pytest.mark.slow
def test_ngff05_plate_written_with_out(tmp_path):
    src, out = tmp_path / "plate.zarr", tmp_path / "out.zarr"
    write_plate(src, PlateSpec(rows=2, columns=2, fields=1, size=256, version="0.5"))
    hts_cli("run", src, "--channel", "DAPI", "--workers", "2", "--diameter", "20", "--out", out)
    index = write_report(out)
    data = json.loads((index.parent / "report.json").read_text())
    wells = pd.read_csv(results_dir(out) / "wells.csv")
    assert data["heatmaps"]["n_nuclei"] == [wells["n_nuclei"].tolist()[:2], wells["n_nuclei"].tolist()[2:]]
    assert len(data["gallery"]) == 4 and not any("error" in g for g in data["gallery"])
    res = hts.open_results(out)
    plane = res.image("B/2", 0)
    copied = zarr.open_group(str(out), mode="r")["B/2/0/0"]  # the field copied in its axes, one channel: (c, y, x)
    assert copied.shape == (1, 256, 256)
    np.testing.assert_array_equal(plane.values, np.asarray(copied)[0])
    assert plane.shape == res.labels("B/2", 0).shape == (256, 256)


@pytest.mark.slow
def test_whole_slide_gets_a_density_map(tmp_path):
    path = tmp_path / "slide.zarr"
    write_slide(path, size=768)
    hts_cli("run", path, "--workers", "1", "--diameter", "20")
    index = write_report(path)
    data = json.loads((index.parent / "report.json").read_text())
    n = json.loads((results_dir(path) / "run.json").read_text())["summary"]["n_nuclei"]
    assert data["kind"] == "image" and data["heatmaps"] == {} and n > 0
    assert data["density"]["shape"] == [768, 768] and np.sum(data["density"]["values"]) == n
    assert (index.parent / "density.png").is_file() and len(data["gallery"]) == 1
    assert all((index.parent / s).is_file() for s in image_sources(index))
    res = hts.open_results(path)
    assert res.labels().shape == res.image().shape == (768, 768) and int(res.labels().max()) == n
    assert res.fields["flags"].tolist() == [""] and res.wells.empty


# Report functions on hand-made tables (fast)

def test_plate_matrix_layouts(wells_table):
    rows = [chr(ord("A") + i) for i in range(26)] + ["AA", "AB", "AC", "AD", "AE", "AF"]  # 1536: A..Z, AA..AF
    cols = [str(i) for i in range(1, 49)]
    wells = wells_table({("B", "3"): 7.0, ("AF", "48"): 9.0})
    m = plate_matrix(wells, rows[:16], cols[:24], "n_nuclei")  # 384 wells, two present
    assert m.shape == (16, 24) and m[1, 2] == 7 and np.isnan(m).sum() == 16 * 24 - 1
    m = plate_matrix(wells, rows, cols, "n_nuclei")  # 1536 wells
    assert m.shape == (32, 48) and m[31, 47] == 9


def test_heatmap_draws_a_1536_well_plate(tmp_path):
    rows = [f"R{i}" for i in range(32)]
    cols = [str(i) for i in range(1, 49)]
    m = np.random.default_rng(0).random((32, 48)) * 100
    m[3, 4] = np.nan
    assert (tmp_path / heatmap(m, rows, cols, "nuclei", "viridis", tmp_path / "h.png")).stat().st_size > 1000
