"""Annotated data sets: the shared DSB2018 ``.npz`` layout, loaders and writers.

Layout (``../shared/data/README.md``): ``n`` (int scalar), ``images_0000`` ...
(uint8 ``(H, W)``), ``labels_0000`` ... (uint16 ``(H, W)``, 0 = background),
optional ``ids``. Prediction files (``hts eval --pred``) use the same layout
with labels only.
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hts.errors import HtsError


@dataclass
class Dataset:
    """Images and instance labels of equal shapes (lists, one entry per sample).

    Attributes
    ----------
    images : list of (H, W) ndarray
        Intensity images (uint8 in the shared files).
    labels : list of (H, W) int ndarray
        Instance labels, 0 = background, same shape as the image.
    ids : list of str
        Sample names.
    source : str
        Where the data came from (a path or ``synthetic(seed=...)``).
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    ids: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)


_ENTRY = re.compile(r"(images|labels)_(\d+)")
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, struct.error)


def _open_npz(path: Path, what: str) -> np.lib.npyio.NpzFile:
    """The archive at ``path`` opened with ``allow_pickle=False``, or a one-line HtsError."""
    if not path.is_file():
        raise HtsError(f"{what} {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise HtsError(f"{what} {path} is not a .npz archive (truncated, or another format)")
    try:
        return np.load(path, allow_pickle=False)
    except _UNREADABLE as exc:
        raise HtsError(f"{what} {path} is not a readable .npz archive ({str(exc)[:120]})") from None


def _get(z: np.lib.npyio.NpzFile, key: str, path: Path, what: str) -> np.ndarray:
    """Entry ``key`` as an array; pickled (object) arrays are refused without being unpickled."""
    if key not in z.files:
        raise HtsError(f"{what} {path} lacks entry {key!r}")
    try:
        arr = z[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise HtsError(f"{what} {path}: entry {key!r} is an object array (pickled data is never loaded)") from None
        raise HtsError(f"{what} {path}: entry {key!r} is unreadable ({str(exc)[:120]})") from None
    except _UNREADABLE as exc:
        raise HtsError(f"{what} {path}: entry {key!r} is unreadable ({str(exc)[:120] or type(exc).__name__})") from None
    if not isinstance(arr, np.ndarray):
        raise HtsError(f"{what} {path}: entry {key!r} is not a numpy array")
    return arr


def _count(z: np.lib.npyio.NpzFile, path: Path, what: str, kinds: tuple[str, ...]) -> int:
    """The sample count ``n``: a positive integer scalar that agrees with the ``kinds`` entries present."""
    if "n" not in z.files:
        raise HtsError(f"{what} {path} has no 'n' entry (number of samples)")
    arr = _get(z, "n", path, what)
    if arr.ndim != 0 or arr.dtype.kind not in "iu":
        raise HtsError(f"{what} {path}: entry 'n' must be an integer scalar (number of samples), "
                       f"got {arr.dtype} of shape {arr.shape}")
    n = int(arr)
    if n < 1:
        raise HtsError(f"{what} {path}: entry 'n' must be >= 1 (number of samples), got {n}")
    beyond = sorted(k for k in z.files if (m := _ENTRY.fullmatch(k)) and int(m.group(2)) >= n)
    if beyond:
        raise HtsError(f"{what} {path}: entry 'n' is {n} but the file also holds {beyond[0]!r} (counts disagree)")
    files = set(z.files)
    lacking = next((f"{kind}_{i:04d}" for i in range(n) for kind in kinds if f"{kind}_{i:04d}" not in files), None)
    if lacking is not None:
        raise HtsError(f"{what} {path}: entry 'n' is {n} but the file lacks entry {lacking!r} (counts disagree)")
    return n


def _ids(z: np.lib.npyio.NpzFile, n: int, path: Path) -> list[str] | None:
    """Entry ``ids`` as ``n`` strings, None when absent."""
    if "ids" not in z.files:
        return None
    arr = _get(z, "ids", path, "data file")
    if arr.ndim != 1 or arr.dtype.kind not in "US" or len(arr) != n:
        raise HtsError(f"data file {path}: entry 'ids' must be {n} strings (one per sample), "
                       f"got {arr.dtype} of shape {arr.shape}")
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in arr.tolist()]


def _image(z: np.lib.npyio.NpzFile, i: int, path: Path) -> np.ndarray:
    """Entry ``images_<i>``: a non-empty 2D real image without NaN or inf."""
    from hts.engine.preprocess import check_image

    key = f"images_{i:04d}"
    return check_image(_get(z, key, path, "data file"), f"data file {path}: entry {key!r}")


def _labels(z: np.lib.npyio.NpzFile, i: int, path: Path, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Entry ``labels_<i>``: 2D non-negative integers (of ``shape`` when given; ids up to the pixel count for data)."""
    key = f"labels_{i:04d}"
    lb = _get(z, key, path, what)
    where = f"{what} {path}: entry {key!r}"
    if lb.ndim != 2 or lb.dtype.kind not in "iu" or lb.size == 0:
        raise HtsError(f"{where} must be a non-empty 2D integer label image, got {lb.dtype} of shape {lb.shape}")
    if shape is not None and lb.shape != shape:
        raise HtsError(f"{where} has shape {lb.shape} but its image has {shape}")
    if lb.dtype.kind == "i" and lb.min() < 0:
        raise HtsError(f"{where} has negative labels (minimum {lb.min()}); 0 is background, nuclei 1..N")
    if shape is not None and lb.max() > lb.size:
        raise HtsError(f"{where} has label {lb.max()}, more than its {lb.size} pixels (nuclei are numbered 1..N)")
    return lb


def load_npz(path: str | os.PathLike, limit: int | None = None) -> Dataset:
    """Images and labels from a data file in the shared layout, every entry checked.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` file in the layout of the module docstring.
    limit : int, optional
        Read only the first ``limit`` samples.

    Returns
    -------
    Dataset
        ``source`` is ``path``; ids default to ``"0000"``, ``"0001"``, ...

    Raises
    ------
    HtsError
        One line naming the file, the entry and the reason: a missing, truncated
        or non-npz file; ``n`` not a positive integer scalar or disagreeing with
        the entries; ``ids`` not ``n`` strings; an object (pickled) array, never
        unpickled; an image not 2D real without NaN/inf; labels not 2D
        non-negative integers of the image's shape.
    """
    path = Path(path)
    with _open_npz(path, "data file") as z:
        n = _count(z, path, "data file", ("images", "labels"))
        ids = _ids(z, n, path)
        n = n if limit is None else min(n, limit)
        images = [_image(z, i, path) for i in range(n)]
        labels = [_labels(z, i, path, "data file", images[i].shape) for i in range(n)]
    return Dataset(images, labels, ids[:n] if ids is not None else [f"{i:04d}" for i in range(n)], str(path))


def load_labels_npz(path: str | os.PathLike) -> list[np.ndarray]:
    """Predicted label images (``n``, ``labels_0000`` ...) from a prediction file, every entry checked.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_labels_npz` (``hts eval --pred``).

    Returns
    -------
    list of (H, W) int ndarray

    Raises
    ------
    HtsError
        One line naming the file, the entry and the reason (as in
        :func:`load_npz`); a label image that is not 2D non-negative integers.
    """
    path = Path(path)
    with _open_npz(path, "prediction file") as z:
        n = _count(z, path, "prediction file", ("labels",))
        return [_labels(z, i, path, "prediction file") for i in range(n)]


def save_labels_npz(path: str | os.PathLike, labels: list[np.ndarray], ids: list[str] | None = None) -> None:
    """Write predicted labels in the shared layout (readable by ``hts eval --pred``).

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.npz`` file (compressed).
    labels : list of (H, W) int ndarray
        One label image per sample, in the order of the data set.
    ids : list of str, optional
        Sample names, stored as ``ids``.
    """
    arrays: dict[str, np.ndarray] = {"n": np.asarray(len(labels), np.int64)}
    arrays.update({f"labels_{i:04d}": np.asarray(lb) for i, lb in enumerate(labels)})
    if ids is not None:
        arrays["ids"] = np.asarray(ids)
    np.savez_compressed(path, **arrays)


def synthetic_dataset(n: int, seed: int, shape: tuple[int, int] = (256, 256)) -> Dataset:
    """``n`` generated images with exact labels (see :mod:`hts.synthetic.nuclei`).

    Parameters
    ----------
    n : int
        Number of samples.
    seed : int
        Sample ``i`` is seeded from ``(seed, i)``.
    shape : tuple of int, optional
        ``(H, W)`` of every image, px.

    Returns
    -------
    Dataset
        uint16 images and uint32 labels.
    """
    from hts.synthetic.nuclei import SyntheticConfig, generate_dataset

    images, labels = generate_dataset(n, SyntheticConfig(shape=shape), seed=seed)
    return Dataset(images, labels, [f"synthetic-{seed}-{i}" for i in range(n)], f"synthetic(seed={seed})")


def open_dataset(spec: str, n_synthetic: int = 64, seed: int = 0) -> Dataset:
    """A data set from ``spec``: a ``.npz`` path, or ``synthetic`` for generated images.

    Parameters
    ----------
    spec : str
        A path (:func:`load_npz`) or ``"synthetic"``.
    n_synthetic : int, optional
        Samples of a synthetic set (256 x 256 px).
    seed : int, optional
        Seed of a synthetic set.

    Returns
    -------
    Dataset
    """
    if spec == "synthetic":
        return synthetic_dataset(n_synthetic, seed)
    return load_npz(spec)
