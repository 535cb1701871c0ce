"""``hts run`` without ``--diameter``: the plate's diameter measured on several fields, outliers named."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr
from skimage.transform import resize

from hts.io.results import results_dir
from hts.screen.size import spread_over
from hts.synthetic.nuclei import SyntheticConfig
from hts.synthetic.plate import PlateSpec, write_plate

pytestmark = pytest.mark.slow


def test_spread_over_takes_fields_across_the_plate():
    jobs = list(range(96))
    assert spread_over(jobs, 6) == [0, 19, 38, 57, 76, 95]
    assert spread_over(jobs[:4], 6) == [0, 1, 2, 3]


def test_run_measures_the_plate_diameter_and_names_the_outlier_field(tmp_path):
    path = tmp_path / "plate.zarr"
    nuclei = SyntheticConfig(diameter=40.0, density=0.25 / 40**2)
    write_plate(path, PlateSpec(rows=2, columns=3, fields=1, size=384, nuclei=nuclei))
    # one well imaged at twice the magnification: its field's nuclei are twice as large
    arr = zarr.open_array(str(path / "B" / "3" / "0" / "s0"), mode="r+")  # every channel, the last two axes y, x
    data = np.asarray(arr[...])
    h, w = data.shape[-2:]
    planes = data.reshape(-1, h, w)
    for i, plane in enumerate(planes):
        planes[i] = resize(plane[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4], (h, w), order=1, preserve_range=True)
    arr[...] = planes.reshape(data.shape)
    proc = subprocess.run([sys.executable, "-m", "hts", "run", str(path), "--channel", "DAPI", "--workers", "1"],
                          check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((results_dir(path) / "run.json").read_text())
    est = record["diameter_estimate"]
    assert len(est["per_field"]) == 6
    assert est["diameter"] == pytest.approx(40.0, rel=0.25)
    assert record["options"]["diameter"] == est["diameter"]
    assert est["outliers"] == ["B03-f0"]
    assert est["per_field"]["B03-f0"] == pytest.approx(80.0, rel=0.3)
    out = proc.stdout + proc.stderr
    assert "nucleus diameter:" in out and "median of 6 fields" in out
    assert "warning: nucleus diameter: B03-f0" in out
