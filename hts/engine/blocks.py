"""Segmenting images too large for memory: blocks with a halo, stitched labels, Zarr output.

Two passes over the block grid of :mod:`hts.engine.stitch`, memory bounded by a
few blocks whatever the image size:

1. each block plus its halo is read, segmented (tiled inference + watershed
   layer) and reduced to the nuclei it owns; those labels go to a temporary
   Zarr store and only the block's count stays in memory;
2. global ids follow from the counts (block order), and each output block is
   assembled from its own and its neighbours' owned nuclei and written.

Input: anything sliceable as a 2D array (numpy, zarr, dask). Output: the
given Zarr array (or path, created uint32 with chunks of the block size), or
a numpy array when ``out`` is None. A Zarr output gets the attribute
``n_nuclei`` only once every block is written, so an interrupted run never
looks complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from hts.engine.preprocess import as_numpy
from hts.engine.stitch import assemble, block_grid, keep_owned, neighbours
from hts.errors import HtsError

BLOCK = 2048  # px per block side (input frame)


def open_output(out: zarr.Array | str | os.PathLike, shape: tuple[int, int], chunk: int) -> zarr.Array:
    """The output label array: an existing Zarr array of ``shape``, or a new one at a path."""
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
) -> np.ndarray | zarr.Array:
    """Labels (uint32, 1..N over the whole image) of a 2D array segmented block by block.

    ``segment_region(region) -> labels`` segments one halo-padded region;
    ``halo`` (px) must exceed the largest nucleus plus the network's context.
    Temporary per-block labels live under ``workdir`` (default: the system
    temporary folder) and are removed at the end.
    """
    shape = tuple(int(s) for s in image.shape)
    if len(shape) != 2:
        raise HtsError(f"image: expected a 2D array, got shape {shape}")
    blocks = block_grid(shape, block, halo)
    with tempfile.TemporaryDirectory(prefix="hts-blocks-", dir=workdir) as tmp:
        store = zarr.open_group(str(Path(tmp) / "owned.zarr"), mode="w")
        counts = {}
        for key, b in tqdm(blocks.items(), desc="segment", unit="block", disable=not progress, leave=False):
            owned = keep_owned(segment_region(as_numpy(image[b.region_slices])), b)
            store.create_array(f"{key[0]}_{key[1]}", data=owned, chunks=owned.shape)
            counts[key] = int(owned.max(initial=0))
        offsets, total = {}, 0
        for key in blocks:  # dict order is grid order
            offsets[key] = total
            total += counts[key]
        if total >= 2**32:
            raise HtsError(f"{total} nuclei do not fit uint32 labels")
        target = np.zeros(shape, np.uint32) if out is None else open_output(out, shape, block)
        for key, b in tqdm(blocks.items(), desc="stitch", unit="block", disable=not progress, leave=False):
            cands = [(blocks[k], store[f"{k[0]}_{k[1]}"][...], offsets[k]) for k in neighbours(key, blocks)]
            target[b.core_slices] = assemble(b, cands)
        if isinstance(target, zarr.Array):  # written last: an interrupted run leaves no count behind
            target.attrs["n_nuclei"] = total
    return target
