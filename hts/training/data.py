"""Annotated data sets: the shared DSB2018 ``.npz`` layout, loaders and writers.

Layout (``../shared/data/README.md``): ``n`` (int scalar), ``images_0000`` ...
(uint8 ``(H, W)``), ``labels_0000`` ... (uint16 ``(H, W)``, 0 = background),
optional ``ids``. Prediction files (``hts eval --pred``) use the same layout
with labels only.
"""

from __future__ import annotations

import os
import zipfile
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


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise HtsError(f"data file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise HtsError(f"data file {path} is not a readable .npz archive ({exc})") from None


def _count(z: np.lib.npyio.NpzFile, path: Path) -> int:
    if "n" not in z.files:
        raise HtsError(f"data file {path} has no 'n' entry (number of samples)")
    n = int(z["n"])
    if n < 0:
        raise HtsError(f"data file {path}: 'n' is negative ({n})")
    return n


def _get(z: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in z.files:
        raise HtsError(f"data file {path} lacks entry {key!r}")
    return z[key]


def load_npz(path: str | os.PathLike, limit: int | None = None) -> Dataset:
    """Images and labels from a data file in the shared layout.

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
        For a missing or unreadable file, missing entries, or an image and
        labels of different shapes or non-integer labels.
    """
    path = Path(path)
    with _open_npz(path) as z:
        n = _count(z, path)
        n = n if limit is None else min(n, limit)
        images = [_get(z, f"images_{i:04d}", path) for i in range(n)]
        labels = [_get(z, f"labels_{i:04d}", path) for i in range(n)]
        ids = [str(s) for s in z["ids"][:n]] if "ids" in z.files else [f"{i:04d}" for i in range(n)]
    for i, (im, lb) in enumerate(zip(images, labels)):
        if im.ndim != 2 or im.shape != lb.shape:
            raise HtsError(f"data file {path}: sample {i} image {im.shape} and labels {lb.shape} must be equal 2D shapes")
        if not np.issubdtype(lb.dtype, np.integer):
            raise HtsError(f"data file {path}: labels_{i:04d} has non-integer dtype {lb.dtype}")
    return Dataset(images, labels, ids, str(path))


def load_labels_npz(path: str | os.PathLike) -> list[np.ndarray]:
    """Predicted label images (``n``, ``labels_0000`` ...) from a prediction file.

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
        For a missing or unreadable file or a label image that is not 2D integer.
    """
    path = Path(path)
    with _open_npz(path) as z:
        n = _count(z, path)
        labels = [_get(z, f"labels_{i:04d}", path) for i in range(n)]
    for i, lb in enumerate(labels):
        if lb.ndim != 2 or not np.issubdtype(lb.dtype, np.integer):
            raise HtsError(f"prediction file {path}: labels_{i:04d} must be a 2D integer array, got {lb.dtype} {lb.shape}")
    return labels


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
