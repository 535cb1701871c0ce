"""A whole-slide-like single image through ``hts run`` block by block: one label per nucleus across block seams."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zarr
from skimage.segmentation import clear_border

from hts.api import segment
from hts.io.results import results_dir
from hts.synthetic.plate import read_truth, write_slide
from hts.training.metrics import reproduced as matched

pytestmark = pytest.mark.slow
SIZE, BLOCK = 1536, 512
SIDE = 520  # the block side: 512 rounded up to whole stride steps (10 px at diameter 20)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "slide.zarr"
    write_slide(path, size=SIZE, version="0.5", seed=3)
    proc = subprocess.run([sys.executable, "-m", "hts", "run", path, "--diameter", "20", "--block", str(BLOCK),
                           "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    image = np.asarray(zarr.open_group(str(path), mode="r")["s0"])
    return path, proc, np.asarray(zarr.open_group(str(path), mode="r")["labels/nuclei/0"]), segment(image, diameter=20)


def pieces(truth: np.ndarray, labels: np.ndarray, ids: np.ndarray, min_fraction: float = 0.2) -> np.ndarray:
    """For each truth nucleus in ``ids``: how many labels cover at least ``min_fraction`` of it."""
    out = []
    for i in ids:
        under = labels[truth == i]
        counts = np.bincount(under[under > 0])
        out.append(int((counts >= min_fraction * under.size).sum()))
    return np.array(out)


def test_no_nucleus_is_cut_or_duplicated_at_block_seams(slide):
    path, proc, blocked, single = slide
    assert f"in 9 blocks of {SIDE} px" in proc.stdout
    truth = read_truth(path, "")
    seams = [SIDE, 2 * SIDE]
    straddling = np.unique(np.concatenate([truth[r - 1 : r + 1, :].ravel() for r in seams]
                                          + [truth[:, r - 1 : r + 1].ravel() for r in seams]))[1:]
    straddling = [i for i in straddling if any(  # really on both sides of a seam line
        (truth[r - 1, :] == i).any() and (truth[r, :] == i).any() or (truth[:, r - 1] == i).any() and (truth[:, r] == i).any()
        for r in seams)]
    assert len(straddling) > 50
    in_blocks, in_single = pieces(truth, blocked, straddling), pieces(truth, single, straddling)
    # a cut or duplicated nucleus shows as two labels covering it; the blocked run has no more than the single pass
    assert (in_blocks >= 2).sum() <= (in_single >= 2).sum() + 1, (in_blocks >= 2).sum()
    assert (in_blocks == 1).mean() >= 0.9


def test_blocks_agree_with_a_single_pass(slide):
    """Block regions start on the network's stride grid, so blocks see what a single pass sees; what is left
    is the model's sensitivity to tile layout (proposals near the score threshold), a few percent."""
    _, _, blocked, single = slide
    inner = clear_border(single)
    ids = np.unique(inner)[1:]
    assert len(ids) > 1500
    assert matched(inner, blocked, ids, 0.5).mean() >= 0.95
    on_seam = np.unique(np.concatenate([single[r, :] for r in (SIDE, 2 * SIDE)] + [single[:, r] for r in (SIDE, 2 * SIDE)]))[1:]
    assert matched(single, blocked, on_seam, 0.5).mean() >= matched(inner, blocked, ids, 0.5).mean() - 0.03


def test_pyramid_regions_tile_the_downsampled_level(tmp_path):
    from hts.io.ngff_pyramid import downsample_to
    from hts.screen.slide import pyramid_region

    rng = np.random.default_rng(0)
    base = rng.integers(0, 1000, (301, 457), dtype=np.uint32)
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="w")
    root.create_array("labels/nuclei/0", data=base, chunks=(64, 64))
    root.create_array("labels/nuclei/1", shape=(150, 228), dtype=np.uint32, chunks=(64, 64), fill_value=0)
    for rows, cols in [((0, 64), (0, 100)), ((0, 64), (100, 228)), ((64, 150), (0, 228))]:
        pyramid_region(str(tmp_path / "out.zarr"), "", 1, rows, cols, ("labels/nuclei",))
    assert (np.asarray(root["labels/nuclei/1"]) == downsample_to(base, (150, 228))).all()


def test_slide_labels_are_unique_counted_and_valid_ngff(slide):
    from ome_zarr_models import open_ome_zarr

    path, _, blocked, _ = slide
    ids = np.unique(blocked)[1:]
    assert ids[0] == 1 and ids[-1] == len(ids)  # 1..N, each nucleus one id in the whole image
    nuclei = pd.read_parquet(results_dir(path) / "nuclei.parquet")
    assert len(nuclei) == len(ids) and sorted(nuclei["label"]) == list(ids)
    counts = pd.read_csv(results_dir(path) / "fields.csv")
    assert counts["n_nuclei"].tolist() == [len(ids)]
    truth = read_truth(path, "")
    assert abs(len(ids) - int(truth.max())) < 0.15 * int(truth.max())
    root = zarr.open_group(str(path), mode="r")
    assert type(open_ome_zarr(root)).__name__ == "Image"
    assert np.asarray(root["labels/nuclei/1"]).shape == (SIZE // 2, SIZE // 2)
    assert not (results_dir(path) / "slide").exists()  # the scratch blocks are gone
