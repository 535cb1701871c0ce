"""Bad plates and images: one clear line and exit 2, or the field skipped with its reason and exit 1 -
never a corrupted output, never a field that looks done when it is not."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zarr

from cli_run import hts_in_process
from hts.io.results import results_dir
from hts.synthetic.plate import PlateSpec, write_plate

pytestmark = pytest.mark.slow


def hts(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hts", *map(str, args)], capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hts: error:"), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "plate.zarr"
    write_plate(path, PlateSpec(rows=1, columns=5, fields=1, size=128))
    return path


def _replace_level0(plate, field: str, data: np.ndarray) -> None:
    group = zarr.open_group(str(plate / field), mode="r+")
    attrs = dict(group.attrs)
    level0 = attrs.get("ome", attrs)["multiscales"][0]["datasets"][0]["path"]
    group.create_array(level0, shape=data.shape, dtype=data.dtype, overwrite=True,
                       **({"dimension_names": ["c", "y", "x"]} if group.metadata.zarr_format == 3 else {}))[...] = data


def test_bad_fields_are_skipped_with_reasons_and_good_ones_written(plate, tmp_path):
    bad = tmp_path / "bad.zarr"
    shutil.copytree(plate, bad)
    nan = np.full((2, 128, 128), 100.0, np.float32)
    nan[0, 10, 10] = np.nan
    _replace_level0(bad, "A/2/0", nan)
    _replace_level0(bad, "A/3/0", np.zeros((2, 128, 128), bool))
    shutil.rmtree(bad / "A" / "4")
    _replace_level0(bad, "A/5/0", np.zeros((2, 0, 0), np.uint16))
    proc = hts("run", bad, "--channel", "DAPI", "--workers", "1", "--diameter", "20")
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "A02-f0" in err and "NaN" in err
    assert "A03-f0" in err and "bool" in err
    assert "A/4" in err and "absent on disk" in err
    assert "A05-f0" in err and "empty" in err
    assert "4 field(s) failed" in err
    wells = pd.read_csv(results_dir(bad) / "wells.csv", dtype={"column": str})
    assert list(wells["well"]) == ["A/1"] and wells["n_nuclei"][0] > 0
    attrs = dict(zarr.open_group(str(bad), mode="r").attrs)["hts"]
    assert attrs["complete"] is False
    for failed in ("A/2/0", "A/3/0", "A/5/0"):  # no labels that look complete
        assert not (bad / failed / "labels" / "nuclei").exists()


@pytest.mark.parametrize("case", ["missing", "file", "plain-dir", "no-ngff", "bad-plate-metadata"])
def test_inputs_that_are_not_plates_or_images(case, plate, tmp_path):
    path = tmp_path / "x.zarr"
    if case == "file":
        path.write_text("not a zarr")
    elif case == "plain-dir":
        path.mkdir()
    elif case == "no-ngff":
        zarr.open_group(str(path), mode="w").create_group("A")
    elif case == "bad-plate-metadata":
        shutil.copytree(plate, path)
        group = zarr.open_group(str(path), mode="r+")
        attrs = dict(group.attrs)
        del attrs["plate"]["rows"]
        group.attrs.put(attrs)
    fragment = {"missing": "no such file", "file": "not a Zarr group", "plain-dir": "not a Zarr group",
                "no-ngff": "neither an OME-Zarr plate nor an image", "bad-plate-metadata": "invalid NGFF 0.4 plate metadata: plate.rows: Field required"}
    one_line_error(hts("run", path, "--channel", "DAPI"), str(path), fragment[case])


def test_channel_errors_name_the_channels(plate, capsys):  # in-process: the refusals come before any worker
    one_line_error(hts_in_process(capsys, "run", plate, "--channel", "Hoechst"), "'Hoechst' does not exist", "0=DAPI",
                   "1=GFP")
    one_line_error(hts_in_process(capsys, "run", plate), "2 channels", "--channel")
    one_line_error(hts_in_process(capsys, "run", plate, "--channel", "7"), "channel index 7 out of range")


def test_bad_options_name_the_option(plate, capsys):
    one_line_error(hts_in_process(capsys, "run", plate, "--channel", "DAPI", "--batch-size", "0"), "--batch-size")
    one_line_error(hts_in_process(capsys, "run", plate, "--channel", "DAPI", "--min-size", "-5"), "--min-size")
    one_line_error(hts_in_process(capsys, "run", plate, "--channel", "DAPI", "--cluster", "ftp://x"), "--cluster")
    one_line_error(hts_in_process(capsys, "counts", plate.parent / "never-run.zarr"), "no counts found")
    proc = hts("run", plate, "--channel", "DAPI", "--batch-size", "0")  # and once as a real process
    one_line_error(proc, "--batch-size")
