"""Writing label images to files (TIFF, NPY), atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from hts.errors import HtsError

LABEL_SUFFIXES = (".tif", ".tiff", ".npy")


def check_label_path(path: str | os.PathLike) -> Path:
    """Refuse an output path we cannot write, before any work is done."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise HtsError(f"{path}: unsupported label format {suffix or '(none)'}; use one of {', '.join(LABEL_SUFFIXES)}")
    if not path.parent.is_dir():
        raise HtsError(f"{path}: folder {path.parent} does not exist")
    return path


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write uint32 ``labels`` to ``.tif/.tiff`` (zlib-compressed) or ``.npy``.

    Written to a temporary file in the same folder, then renamed: an
    interrupted write never leaves a partial file under ``path``.
    """
    path = check_label_path(path)
    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".npy":
            np.save(tmp, np.asarray(labels, np.uint32))
        else:
            import tifffile

            tifffile.imwrite(tmp, np.asarray(labels, np.uint32), compression="zlib")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
