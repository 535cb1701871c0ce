"""Segmenting images too large for memory: the two-pass block algorithm, written once.

Two passes over the block grid of :mod:`hts.engine.stitch` (:func:`block_grid`),
memory bounded by a few blocks whatever the image size:

1. each block plus its halo is read, segmented (tiled inference + watershed
   layer) and reduced to the nuclei it owns (:func:`store_owned`); those
   labels go to a Zarr group and only the block's count stays in memory;
2. global ids follow from the counts in grid order (:func:`label_offsets`),
   and each block core is assembled from its own and its neighbours' owned
   nuclei (:func:`stitch_core`) and written.

These per-block functions know neither Dask nor a results folder:
:func:`segment_blocks` loops over them in-process, and
:mod:`hts.screen.slide` submits the same functions as Dask tasks.

The default block side, :data:`BLOCK` = 4096 px (input frame), is set by two
things:

- *Memory.* A block is segmented with its halo as one image: read, resampled
  to the model's canonical diameter, run through the network tile by tile
  (full-size float32 probability and blend-weight sums in the network frame)
  and through the watershed (full-size distance, marker and label arrays).
  Peak memory grows with the block's area, so the side is chosen such that one
  block costs about what the largest image segmented in one piece already
  costs: :data:`hts.api.IN_MEMORY_MAX_PIXELS` is 4096 x 4096 px, so an image
  too large for one piece is cut into pieces of that size, and ``hts run``
  sends a single image through the block path exactly when it is larger
  than one block (``RunOptions.block``). A worker running several blocks at
  once needs that memory per concurrent block; pass a smaller ``block``
  where memory is short. Larger blocks waste less on the halo, which is
  segmented twice: the recomputed area is ``(1 + 2 halo / side)^2``.
- *Chunk alignment.* Output label arrays get one chunk per block core
  (:func:`open_label_array`; ``hts run`` writes its slide levels the same
  way), so every block writes whole chunks and no two writers share one. 4096
  is a multiple of the power-of-two chunk sides OME-Zarr writers use (256 to
  4096 px), so unrounded blocks also read whole input chunks.
  :func:`hts.engine.stitch.aligned_blocks` then rounds the side up to whole
  network strides (e.g. 4100 px at a 20 px diameter), which the output
  chunks follow.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from hts.engine.preprocess import as_numpy
from hts.engine.stitch import Block, assemble, block_grid, keep_owned, neighbours
from hts.errors import HtsError

BLOCK = 4096  # px per block side (input frame); see the module docstring
MAX_LABELS = 2**32 - 1  # labels 1..N fit uint32 while N <= 2**32 - 1


def block_name(index: tuple[int, int]) -> str:
    """The name of a block in stores and task keys.

    Parameters
    ----------
    index : tuple of int
        ``(i, j)``: the block's row and column in the grid.

    Returns
    -------
    str
        ``"bIII_JJJ"``, e.g. ``"b000_012"``.
    """
    return "b{:03d}_{:03d}".format(*index)


def store_owned(labels: np.ndarray, block: Block, store: zarr.Group) -> int:
    """Pass 1 for one block: keep the nuclei ``block`` owns and store them.

    Parameters
    ----------
    labels : numpy.ndarray, shape (h, w), integer
        Labels of ``block.region`` (the block plus its halo) from any
        segmenter, 0 = background, ids unique within the region.
    block : Block
        The block, from :func:`hts.engine.stitch.block_grid`.
    store : zarr.Group
        Where the owned labels go, as array :func:`block_name` (replaced if
        present).

    Returns
    -------
    int
        The block's nucleus count ``n``: the stored array is uint32, shape
        (h, w), labels 1..n (:func:`hts.engine.stitch.keep_owned`).
    """
    owned = keep_owned(labels, block)
    store.create_array(block_name(block.index), data=owned, chunks=owned.shape, overwrite=True)
    return int(owned.max(initial=0))


def read_owned(store: zarr.Group, index: tuple[int, int]) -> np.ndarray:
    """The owned labels of block ``index`` written by :func:`store_owned`.

    Parameters
    ----------
    store : zarr.Group
        The group :func:`store_owned` wrote to.
    index : tuple of int
        ``(i, j)``: the block's grid index.

    Returns
    -------
    numpy.ndarray, shape (h, w), uint32
        Labels 1..n of the block's region.
    """
    return np.asarray(store[block_name(index)][...])


def label_offsets(counts: Mapping[Hashable, int], name: str = "image") -> tuple[dict, int]:
    """Between the passes: the global id offset of each block from the per-block counts.

    Parameters
    ----------
    counts : mapping
        Nucleus count of each block, keyed by block (any key, usually the
        grid index), in grid order: block ``k``'s nuclei get the global ids
        ``offsets[k] + 1 .. offsets[k] + counts[k]``.
    name : str
        The image, named in the error.

    Returns
    -------
    offsets : dict
        Same keys as ``counts``: the number of nuclei in the blocks before.
    total : int
        Number of nuclei in the image.

    Raises
    ------
    HtsError
        When ``total`` labels do not fit uint32 (``total > 2**32 - 1``).
    """
    offsets, total = {}, 0
    for key, n in counts.items():
        offsets[key] = total
        total += int(n)
    if total > MAX_LABELS:
        raise HtsError(f"{name}: {total} nuclei do not fit uint32 labels (at most {MAX_LABELS})")
    return offsets, total


def stitch_core(
    index: tuple[int, int],
    blocks: Mapping[tuple[int, int], Block],
    offsets: Mapping[tuple[int, int], int],
    owned: Callable[[tuple[int, int]], np.ndarray],
) -> np.ndarray:
    """Pass 2 for one block: the global labels of its core.

    Parameters
    ----------
    index : tuple of int
        ``(i, j)``: the block to assemble.
    blocks : mapping
        The whole grid, from :func:`hts.engine.stitch.block_grid`.
    offsets : mapping
        Global id offset of each block, by grid index (:func:`label_offsets`).
    owned : callable
        ``owned(index) -> labels``: the owned labels (uint32, shape of that
        block's region) of a block, e.g. :func:`read_owned`; called for the
        block itself and each of its neighbours.

    Returns
    -------
    numpy.ndarray, shape of ``blocks[index].core``, uint32
        Global labels, 0 = background; the block's own nuclei win contested
        pixels, then its neighbours in grid order
        (:func:`hts.engine.stitch.assemble`).
    """
    cands = [(blocks[k], owned(k), offsets[k]) for k in neighbours(index, blocks)]
    return assemble(blocks[index], cands)


def open_label_array(out: zarr.Array | str | os.PathLike, shape: tuple[int, int], chunk: int) -> zarr.Array:
    """The output label array of :func:`segment_blocks`.

    Parameters
    ----------
    out : zarr.Array or path
        An existing Zarr array of ``shape``, used as it is, or a path where a
        new one is created (replacing what is there).
    shape : tuple of int
        ``(H, W)`` px.
    chunk : int
        Chunk side (px) of a new array: the block side, one chunk per core.

    Returns
    -------
    zarr.Array, shape (H, W), uint32 for a new array, fill value 0

    Raises
    ------
    HtsError
        When an existing array has another shape.
    """
    if isinstance(out, zarr.Array):
        if tuple(out.shape) != tuple(shape):
            raise HtsError(f"output zarr array has shape {tuple(out.shape)}, expected {tuple(shape)}")
        return out
    return zarr.open_array(str(out), mode="w", shape=shape, chunks=(chunk, chunk), dtype="uint32", fill_value=0)


def segment_blocks(
    image,
    segment_region: Callable[[np.ndarray], np.ndarray],
    halo: int,
    out: zarr.Array | str | os.PathLike | None = None,
    block: int = BLOCK,
    progress: bool = True,
    workdir: str | os.PathLike | None = None,
    name: str = "image",
) -> np.ndarray | zarr.Array:
    """Segment a 2D array block by block, in-process; one label per nucleus over the whole image.

    Parameters
    ----------
    image : array-like, shape (H, W)
        Anything sliceable as a 2D array (numpy, zarr, dask); read one
        halo-padded block at a time.
    segment_region : callable
        ``segment_region(region) -> labels``: segments one halo-padded region
        (numpy, shape (h, w)) into integer labels of the same shape.
    halo : int
        Context around each block, px; must exceed the largest nucleus plus
        the network's context.
    out : zarr.Array or path, optional
        Where the labels go (:func:`open_label_array`); None: a numpy array.
        A Zarr output gets the attribute ``n_nuclei`` only once every block
        is written, so an interrupted run never looks complete.
    block : int
        Block side, px (the last blocks of a row or column are smaller).
    progress : bool
        Show progress bars.
    workdir : path, optional
        Folder of the temporary per-block labels (default: the system
        temporary folder); they are removed at the end.
    name : str
        The image, named in errors.

    Returns
    -------
    numpy.ndarray or zarr.Array, shape (H, W), uint32
        0 = background, 1..N = nuclei, numbered in block order.

    Raises
    ------
    HtsError
        When ``image`` is not 2D or N does not fit uint32.
    """
    shape = tuple(int(s) for s in image.shape)
    if len(shape) != 2:
        raise HtsError(f"{name}: expected a 2D array, got shape {shape}")
    blocks = block_grid(shape, block, halo)
    with tempfile.TemporaryDirectory(prefix="hts-blocks-", dir=workdir) as tmp:
        store = zarr.open_group(str(Path(tmp) / "owned.zarr"), mode="w")
        counts = {
            key: store_owned(segment_region(as_numpy(image[b.region_slices])), b, store)
            for key, b in tqdm(blocks.items(), desc="segment", unit="block", disable=not progress, leave=False)
        }
        offsets, total = label_offsets(counts, name)  # dict order is grid order
        target = np.zeros(shape, np.uint32) if out is None else open_label_array(out, shape, block)
        for key, b in tqdm(blocks.items(), desc="stitch", unit="block", disable=not progress, leave=False):
            target[b.core_slices] = stitch_core(key, blocks, offsets, lambda k: read_owned(store, k))
        if isinstance(target, zarr.Array):  # written last: an interrupted run leaves no count behind
            target.attrs["n_nuclei"] = total
    return target
