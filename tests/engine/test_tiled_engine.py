"""The tiled engine with the shipped model: results do not depend on where tile borders fall."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import clear_border

from hts.engine.infer import CPU_TILE, predict
from hts.engine.preprocess import normalize
from hts.engine.scale import scale_factor
from hts.engine.tile import TILE, tile_grid
from hts.engine.watershed import instance_labels
from hts.model.pretrained import default_model
from hts.synthetic.nuclei import SyntheticConfig, generate
from hts.training.metrics import reproduced as matched  # at IoU >= 0.9

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def single_pass():
    model = default_model()
    image, _ = generate(SyntheticConfig(shape=(2048, 2048)), seed=21)
    scale = scale_factor(model.config.diameter, 20.0)
    norm = normalize(image)
    single = predict(model, norm, scale=scale, tile=10**6)  # one pass over the whole image
    return model, norm, scale, instance_labels(single.prob, single.boxes)


@pytest.fixture(scope="module", params=[TILE, CPU_TILE], ids=["gpu-tiles", "cpu-tiles"])
def tiled_and_single(request, single_pass):
    """The single pass and the tiled one, with the GPU's 448-px tiles and the CPU's larger ones."""
    model, norm, scale, single = single_pass
    tiled = predict(model, norm, scale=scale, tile=request.param)
    seams = tile_grid((round(2048 * scale),) * 2, request.param)[0]
    assert len(seams) >= 9  # both layouts have seams in both axes
    return single, instance_labels(tiled.prob, tiled.boxes), seams, scale


def test_tiled_agrees_with_single_pass(tiled_and_single):
    single, tiled, _, _ = tiled_and_single
    inner = clear_border(single)
    ids = np.unique(inner)[1:]
    assert len(ids) > 2000
    assert matched(inner, tiled, ids).mean() >= 0.99


def test_no_nucleus_cut_or_duplicated_on_seams(tiled_and_single):
    single, tiled, tiles, scale = tiled_and_single
    lines = sorted({t.core[0] for t in tiles if np.isfinite(t.core[0])})
    rows = [int(v / scale) for v in lines]  # seam rows (= columns: square image) in the input frame
    on_seam = np.unique(np.concatenate([single[r, :] for r in rows] + [single[:, r] for r in rows]))[1:]
    assert len(on_seam) > 100
    ok = matched(single, tiled, on_seam)
    # a nucleus cut or duplicated on a seam has no IoU >= 0.9 partner in the tiled result
    assert ok.mean() >= 0.99, f"{(~ok).sum()} of {len(on_seam)} seam nuclei differ"
    # and no tiled label is a sliver along a seam: every tiled nucleus on a seam has a partner too
    tiled_on_seam = np.unique(np.concatenate([tiled[r, :] for r in rows] + [tiled[:, r] for r in rows]))[1:]
    assert matched(tiled, single, tiled_on_seam).mean() >= 0.99
