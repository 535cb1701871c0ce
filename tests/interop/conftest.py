"""Plates written by third-party tools from real images, and hts runs on them (module-scoped: run once)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
import cli_run
from realplate import VAL_NPZ, plate_layout, real_fields

REPO = Path(__file__).resolve().parents[2]
IOHUB_PYTHON = REPO / ".venv-iohub" / "bin" / "python"  # built by `make test` (Makefile: iohub needs Python >= 3.12)
IOHUB_TOOL = Path(__file__).with_name("iohub_tool.py")
WELLS, FIELDS = 4, 4  # 16 real fields, 4 per well


def iohub(*args: str, stderr: bool = False) -> str | tuple[str, str]:
    """Run ``iohub_tool.py`` in iohub's own Python; its stdout (and stderr)."""
    if not (IOHUB_PYTHON.parent / "iohub-ready").is_file():
        pytest.skip(f"iohub's venv is absent ({IOHUB_PYTHON}; `make test` builds it where Python >= 3.12 exists)")
    proc = subprocess.run([str(IOHUB_PYTHON), str(IOHUB_TOOL), *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"iohub_tool {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return (proc.stdout, proc.stderr) if stderr else proc.stdout


def hts(*args) -> subprocess.CompletedProcess:
    """``hts ARGS`` as a user runs it (:func:`cli_run.hts`), which must succeed."""
    proc = cli_run.hts(*args, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"hts {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


class RealPlate:
    """Real fields laid out as wells: images, per-well truth and the well of each field."""

    def __init__(self, npz: Path, wells: int = WELLS, fields: int = FIELDS) -> None:
        pairs = real_fields(npz, wells * fields)
        self.layout = plate_layout(wells, fields)
        self.images = [image for image, _ in pairs]
        self.truth = {f"{r}/{c}": sum(int(pairs[i][1].max()) for i in idx) for r, c, idx in self.layout}
        self.wells = [f"{r}/{c}" for r, c, idx in self.layout for _ in idx]

    def write_ome_zarr_py(self, path: Path, version: str, axes: str) -> None:
        """The plate as ome-zarr-py writes it: ``write_plate_metadata``, ``write_well_metadata``, ``write_image``."""
        from ome_zarr.format import FormatV04, FormatV05
        from ome_zarr.writer import (
            write_image,
            write_plate_metadata,
            write_well_metadata,
        )

        fmt = {"0.4": FormatV04, "0.5": FormatV05}[version]()
        root = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
        rows = sorted({r for r, _, _ in self.layout})
        cols = sorted({str(c) for _, c, _ in self.layout})
        write_plate_metadata(root, rows, cols, [f"{r}/{c}" for r, c, _ in self.layout], fmt=fmt,
                             field_count=len(self.layout[0][2]), name="ome-zarr-py plate")
        for r, c, idx in self.layout:
            well = root.require_group(f"{r}/{c}")
            write_well_metadata(well, [str(i) for i in range(len(idx))], fmt=fmt)
            for f, i in enumerate(idx):
                image = self.images[i].reshape((1,) * (len(axes) - 2) + self.images[i].shape)
                write_image(image, well.require_group(str(f)), axes=axes, fmt=fmt, scale_factors=(2,),
                            omero={"channels": [{"label": "DAPI", "color": "0000FF", "active": True,
                                                 "window": {"min": 0, "max": 255, "start": 0, "end": 255}}]})

    def write_iohub(self, path: Path, version: str) -> None:
        """The plate as iohub writes it (``T, C, Z, Y, X`` positions), in iohub's own Python."""
        fields = path.with_suffix(".fields.npz")
        np.savez(fields, images=np.stack(self.images), wells=np.array(self.wells))
        iohub("write", str(path), str(fields), version)


def per_well_counts(plate: Path) -> dict[str, int]:
    import pandas as pd

    from hts.io.results import results_dir

    wells = pd.read_csv(results_dir(plate) / "wells.csv")
    return dict(zip(wells["well"], wells["n_nuclei"].astype(int)))


@pytest.fixture(scope="module")
def real_plate():

    if not VAL_NPZ.is_file():
        pytest.skip(f"real data absent: {VAL_NPZ} not found (../shared/data is not part of the project)")
    return RealPlate(VAL_NPZ)
