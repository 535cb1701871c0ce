"""NGFF metadata, one place for every reader: OME attributes, validation, error reasons.

Attributes are read with ``ome-zarr-py`` (``get_metadata``: under ``ome`` in
NGFF 0.5, top level in 0.4) and validated with ``ome-zarr-models``; the
errors they raise are turned into one line naming the field (:func:`reason`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import get_metadata

LABEL_NAME = "nuclei"
FORMATS = {"0.4": FormatV04, "0.5": FormatV05}

METADATA_FILES = (".zattrs", ".zgroup", ".zarray", "zarr.json")  # a node's JSON files, NGFF 0.4 (Zarr v2) and 0.5 (v3)


def ome_attrs(group: zarr.Group) -> dict:
    """The OME attributes of a group (under ``ome`` in NGFF 0.5, top level in 0.4)."""
    return get_metadata(group)



def reason(exc: Exception) -> str:
    """The first real reason of a validation or read error, in one line.

    A pydantic error gives its first failing field (``loc: message``), a
    JSON error its position; others their first line.
    """
    import pydantic

    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        text = f"{where}: {first['msg']}" if where else first["msg"]
    elif isinstance(exc, json.JSONDecodeError):
        text = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    else:
        text = f"{type(exc).__name__}: {str(exc).strip()}" if str(exc).strip() else type(exc).__name__
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())  # one line
    return text if len(text) <= 300 else text[:297] + "..."


def broken_node(directory: Path, exc: Exception | None = None) -> str | None:
    """``"<file>: <reason>"`` for the first unreadable metadata file of a Zarr node, else None.

    Parameters
    ----------
    directory : pathlib.Path
        A group's or array's directory.
    exc : Exception, optional
        The error met when opening it: its reason is used when no file is
        unreadable JSON but ``exc`` is itself a JSON error.
    """
    for name in METADATA_FILES:
        f = directory / name
        if f.is_file():
            try:
                json.loads(f.read_bytes() or b"")
            except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, EIO
                return f"{f}: {reason(e) if isinstance(e, json.JSONDecodeError) else type(e).__name__}"
    if isinstance(exc, json.JSONDecodeError):
        return f"{directory}: {reason(exc)}"
    return None


def ngff_version(group: zarr.Group) -> str:
    """``"0.5"`` for a Zarr v3 group with ``ome`` attributes, else ``"0.4"`` (the versions hts reads)."""
    return "0.5" if group.metadata.zarr_format == 3 and "ome" in group.attrs else "0.4"


def _tolerant(attrs: dict) -> dict:
    """A copy of image attributes with what real writers produce but strict validation refuses made standard.

    Older iohub releases write ``{"type": "identity"}`` coordinate
    transformations (NGFF 0.3); they are the scale 1 of every axis.
    """
    try:
        ms = attrs["multiscales"]
        ndim = len(ms[0]["axes"])
    except (KeyError, IndexError, TypeError):
        return attrs
    if not any(t.get("type") == "identity" for m in ms if isinstance(m, dict) for d in m.get("datasets", [])
               for t in d.get("coordinateTransformations", []) if isinstance(t, dict)):
        return attrs
    fixed = json.loads(json.dumps(attrs))
    for m in fixed["multiscales"]:
        for d in m.get("datasets", []):
            d["coordinateTransformations"] = [{"type": "scale", "scale": [1.0] * ndim} if t.get("type") == "identity"
                                              else t for t in d.get("coordinateTransformations", [])]
    return fixed


@cache
def _models() -> dict:
    """The ome-zarr-models attribute models by ``(kind, version)``, imported once."""
    from ome_zarr_models.v04.hcs import HCSAttrs as Plate04
    from ome_zarr_models.v04.image import ImageAttrs as Image04
    from ome_zarr_models.v04.well import WellAttrs as Well04
    from ome_zarr_models.v05.hcs import HCSAttrs as Plate05
    from ome_zarr_models.v05.image import ImageAttrs as Image05
    from ome_zarr_models.v05.well import WellAttrs as Well05

    return {("plate", "0.4"): Plate04, ("well", "0.4"): Well04, ("image", "0.4"): Image04,
            ("plate", "0.5"): Plate05, ("well", "0.5"): Well05, ("image", "0.5"): Image05}


def validate(kind: str, version: str, attrs: dict) -> None:
    """Validate a node's OME attributes with ome-zarr-models.

    Parameters
    ----------
    kind : str
        ``plate``, ``well`` or ``image``.
    version : str
        ``"0.4"`` or ``"0.5"``.
    attrs : dict
        The node's OME attributes (:func:`ome_attrs`); images are read
        through :func:`_tolerant` first.

    Raises
    ------
    pydantic.ValidationError
        What the model refuses (:func:`reason` makes it one line).
    """
    _models()[kind, version].model_validate(_tolerant(attrs) if kind == "image" else attrs)
