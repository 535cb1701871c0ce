"""Block-wise segmentation: every nucleus exactly one label across block borders, bounded memory."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from hts.engine.blocks import (
    MAX_LABELS,
    block_name,
    label_offsets,
    read_owned,
    segment_blocks,
    stitch_core,
    store_owned,
)
from hts.engine.stitch import assemble, block_grid, keep_owned, neighbours
from hts.engine.watershed import relabel
from hts.errors import HtsError
from hts.synthetic.nuclei import SyntheticConfig, generate


@pytest.fixture(scope="module")
def truth():
    _, labels = generate(SyntheticConfig(shape=(600, 700), diameter=24), seed=11)
    return labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b label the same pixel sets (ids may differ)."""
    pairs = np.unique(np.stack((a.ravel(), b.ravel())), axis=1)
    return (
        ((pairs[0] == 0) == (pairs[1] == 0)).all()
        and len(np.unique(pairs[0])) == pairs.shape[1]
        and len(np.unique(pairs[1])) == pairs.shape[1]
    )


def local_segmenter(region: np.ndarray) -> np.ndarray:
    """A stand-in segmenter that sees only its region: ids renumbered, nuclei at the edge cut."""
    return relabel(region)


@pytest.mark.parametrize("block", [128, 200, 512])
def test_blocks_reproduce_every_nucleus_once(truth, block):
    labels = segment_blocks(truth, local_segmenter, halo=48, block=block, progress=False)
    assert labels.dtype == np.uint32
    assert same_partition(labels, truth)
    assert labels.max() == len(np.unique(truth)) - 1  # sequential 1..N over the whole image


def test_dask_input_and_zarr_output(truth, tmp_path):
    image = da.from_array(truth, chunks=100)
    out = segment_blocks(image, local_segmenter, halo=48, block=160, out=tmp_path / "labels.zarr", progress=False)
    stored = zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")
    assert stored.chunks == (160, 160) and stored.dtype == np.uint32
    assert same_partition(stored[...], truth)
    assert stored.attrs["n_nuclei"] == len(np.unique(truth)) - 1
    assert out.shape == truth.shape


def test_too_small_halo_is_detected_by_the_partition_check(truth):
    """The check above can fail: without halo, nuclei on borders are cut."""
    labels = segment_blocks(truth, local_segmenter, halo=0, block=128, progress=False)
    assert not same_partition(labels, truth)


def test_keep_owned_by_centroid():
    lab = np.zeros((10, 20), np.int32)
    lab[2:5, 2:5] = 1  # centroid (3, 3): inside the core
    lab[2:5, 12:15] = 2  # centroid (3, 13): outside
    block = block_grid((10, 20), 10, 5)[(0, 0)]
    owned = keep_owned(lab, block)
    assert owned.max() == 1 and (owned[2:5, 2:5] == 1).all() and (owned[:, 10:] == 0).all()


def test_label_offsets_in_grid_order_and_the_uint32_limit():
    offsets, total = label_offsets({(0, 0): 3, (0, 1): 0, (1, 0): 5})
    assert offsets == {(0, 0): 0, (0, 1): 3, (1, 0): 3} and total == 8
    assert label_offsets({}) == ({}, 0)
    _, total = label_offsets({(0, 0): MAX_LABELS - 1, (0, 1): 1})  # labels 1..2**32 - 1 fit uint32
    assert total == 2**32 - 1
    with pytest.raises(HtsError, match=r"slide\.zarr: 4294967296 nuclei do not fit uint32"):
        label_offsets({(0, 0): MAX_LABELS, (0, 1): 1}, "slide.zarr")


def test_per_block_functions_store_read_and_stitch(truth, tmp_path):
    """The per-block functions alone, as a distributed driver calls them, give what segment_blocks gives."""
    blocks = block_grid(truth.shape, 256, 48)
    store = zarr.open_group(str(tmp_path / "owned.zarr"), mode="w")
    counts = {k: store_owned(local_segmenter(truth[b.region_slices]), b, store) for k, b in blocks.items()}
    assert set(store.array_keys()) == {block_name(k) for k in blocks} and block_name((1, 12)) == "b001_012"
    for k, b in blocks.items():
        owned = read_owned(store, k)
        assert owned.dtype == np.uint32 and owned.shape == truth[b.region_slices].shape and owned.max() == counts[k]
    offsets, total = label_offsets(counts)
    stitched = np.zeros(truth.shape, np.uint32)
    for k, b in blocks.items():
        core = stitch_core(k, blocks, offsets, lambda i: read_owned(store, i))
        expected = assemble(b, [(blocks[i], read_owned(store, i), offsets[i]) for i in neighbours(k, blocks)])
        assert core.shape == truth[b.core_slices].shape and (core == expected).all()
        stitched[b.core_slices] = core
    assert total == len(np.unique(truth)) - 1 and same_partition(stitched, truth)
    assert (stitched == segment_blocks(truth, local_segmenter, halo=48, block=256, progress=False)).all()
    store_owned(np.zeros_like(truth[blocks[(0, 0)].region_slices]), blocks[(0, 0)], store)  # a rerun replaces
    assert read_owned(store, (0, 0)).max() == 0
