"""Synthetic OME-Zarr plates and slides with known nuclei, for the demo, tests and benchmarks.

A plate has two channels, ``DAPI`` (nuclei, from :mod:`hts.synthetic.nuclei`) and
``GFP`` (a smooth cytoplasm-like signal around them), axes ``c, y, x`` and two
pyramid levels. Nucleus density differs from well to well so counts differ.
The ground-truth labels are written beside each image as
``labels/truth`` so tests and the demo can compare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.writer import (
    write_image,
    write_labels,
    write_plate_metadata,
    write_well_metadata,
)
from scipy import ndimage

from hts.errors import HtsError
from hts.io.ngff_meta import FORMATS
from hts.io.ngff_write import stamp_version
from hts.synthetic.nuclei import SyntheticConfig, generate

TRUTH = "truth"
WINDOW = {"start": 0, "end": 4000, "min": 0, "max": 65535}


@dataclass(frozen=True)
class PlateSpec:
    """Layout of a synthetic plate: ``rows x columns`` wells of ``fields`` square fields of ``size`` px.

    Parameters
    ----------
    rows, columns : int
        Plate layout, at most 32 x 48 (1536 wells).
    fields : int
        Fields per well.
    size : int
        Field side, px (>= 64).
    version : str
        NGFF version, ``"0.4"`` or ``"0.5"``.
    seed : int
        Field ``f`` of well ``w`` is seeded from ``seed * 100000 + w * 100 + f``.
    nuclei : SyntheticConfig
        Nucleus appearance; its density is scaled 0.4x-1.6x across the wells.
    """

    rows: int = 2
    columns: int = 3
    fields: int = 2
    size: int = 512
    version: str = "0.4"
    seed: int = 0
    nuclei: SyntheticConfig = SyntheticConfig(diameter=20.0)

    def __post_init__(self) -> None:
        if self.version not in FORMATS:
            raise HtsError(f"version must be one of {', '.join(FORMATS)}, got {self.version!r}")
        if not (1 <= self.rows <= 32 and 1 <= self.columns <= 48 and self.fields >= 1 and self.size >= 64):
            raise HtsError(f"invalid plate layout {self}")


def _two_channels(nuclei: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cyto = ndimage.gaussian_filter(ndimage.grey_dilation(labels > 0, size=7).astype(np.float32), 4) * 600
    gfp = rng.poisson(cyto + 50).astype(np.uint16)
    return np.stack([nuclei, gfp])


def _write_field(group: zarr.Group, image: np.ndarray, labels: np.ndarray, fmt) -> None:
    chunks = (1, min(image.shape[1], 256), min(image.shape[2], 256))
    write_image(image, group, axes="cyx", fmt=fmt, scale_factors=(2,), storage_options={"chunks": chunks},
                omero={"channels": [{"label": "DAPI", "color": "0000FF", "active": True, "window": WINDOW},
                                     {"label": "GFP", "color": "00FF00", "active": True, "window": WINDOW}]})
    write_labels(labels, group, name=TRUTH, axes="yx", fmt=fmt, scaler=None, scale_factors=(2,),
                 storage_options={"chunks": chunks[1:]})
    stamp_version(group["labels"], fmt)


def well_name(row: int, column: int) -> tuple[str, str]:
    """Row letter and column number of a well from 0-based indices: ``(1, 2)`` -> ``("B", "3")``.

    Parameters
    ----------
    row, column : int
        0-based; rows up to 25 (``"Z"``).

    Returns
    -------
    row_name, column_name : str
        As in the plate metadata and the well path ``"B/3"``.
    """
    return chr(ord("A") + row), str(column + 1)


def _plate_root(path: str | os.PathLike, rows: int, columns: int, fields: int, fmt,
                name: str) -> tuple[zarr.Group, list[str]]:
    """Create the plate Zarr at ``path`` (overwritten) with its plate and well metadata, no images yet.

    Returns the root group and the well paths (``"B/3"``), row by row.
    """
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    row_names = [well_name(r, 0)[0] for r in range(rows)]
    col_names = [well_name(0, c)[1] for c in range(columns)]
    wells = [f"{r}/{c}" for r in row_names for c in col_names]
    write_plate_metadata(root, row_names, col_names, wells, fmt=fmt, field_count=fields, name=name)
    for well in wells:
        write_well_metadata(root.require_group(well), [str(f) for f in range(fields)], fmt=fmt)
    return root, wells


def write_plate(path: str | os.PathLike, spec: PlateSpec = PlateSpec()) -> dict[str, list[int]]:
    """Write a synthetic OME-Zarr plate with ground-truth labels beside every field.

    Parameters
    ----------
    path : str or os.PathLike
        The plate's Zarr folder (overwritten).
    spec : PlateSpec, optional
        Layout, field size, NGFF version, seed and nucleus appearance.

    Returns
    -------
    dict of str to list of int
        True nucleus count of every field, by well path (``"B/3"``).
    """
    fmt = FORMATS[spec.version]()
    root, wells = _plate_root(path, spec.rows, spec.columns, spec.fields, fmt, "hts synthetic plate")
    truth: dict[str, list[int]] = {}
    for w, well in enumerate(wells):
        wg = root[well]
        density = spec.nuclei.density * (0.4 + 1.2 * w / max(len(wells) - 1, 1))  # 0.4x .. 1.6x across the plate
        cfg = replace(spec.nuclei, shape=(spec.size, spec.size), density=density)
        truth[well] = []
        for f in range(spec.fields):
            seed = spec.seed * 100_000 + w * 100 + f
            nuclei, labels = generate(cfg, seed=seed)
            image = _two_channels(nuclei, labels, np.random.default_rng(seed))
            _write_field(wg.require_group(str(f)), image, labels, fmt)
            truth[well].append(int(labels.max()))
    return truth


def write_slide(path: str | os.PathLike, size: int = 3072, version: str = "0.5", seed: int = 0,
                nuclei: SyntheticConfig = SyntheticConfig(diameter=20.0)) -> int:
    """Write a single-channel whole-slide-like OME-Zarr image (``y, x``) with its truth labels.

    Parameters
    ----------
    path : str or os.PathLike
        The image's Zarr folder (overwritten).
    size : int, optional
        Side, px.
    version : str, optional
        NGFF version.
    seed : int, optional
        Seed of :func:`hts.synthetic.nuclei.generate`.
    nuclei : SyntheticConfig, optional
        Nucleus appearance (its shape is replaced by ``(size, size)``).

    Returns
    -------
    int
        The true nucleus count.
    """
    fmt = FORMATS[version]()
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    image, labels = generate(replace(nuclei, shape=(size, size)), seed=seed)
    chunks = (min(size, 512), min(size, 512))
    write_image(image, root, axes="yx", fmt=fmt, scale_factors=(2,), storage_options={"chunks": chunks})
    write_labels(labels, root, name=TRUTH, axes="yx", fmt=fmt, scaler=None, scale_factors=(2,),
                 storage_options={"chunks": chunks})
    stamp_version(root["labels"], fmt)
    return int(labels.max())


def read_truth(path: str | os.PathLike, image_path: str) -> np.ndarray:
    """The ground-truth labels (level 0) of one image written by this module.

    Parameters
    ----------
    path : str or os.PathLike
        The plate or slide Zarr.
    image_path : str
        The image inside it: ``"B/3/0"`` for a field, ``""`` for a slide.

    Returns
    -------
    (H, W) uint32 ndarray
    """
    group = zarr.open_group(str(Path(path) / image_path / "labels" / TRUTH), mode="r")
    attrs = group.attrs.get("ome", group.attrs)
    return np.asarray(group[attrs["multiscales"][0]["datasets"][0]["path"]])
