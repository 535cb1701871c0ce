"""Per-nucleus measurements and per-well tables (hts.analysis.count)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops_table

from hts.analysis.count import NUCLEUS_COLUMNS, measure_nuclei, well_table
from hts.synthetic.nuclei import SyntheticConfig, generate


@pytest.fixture(scope="module")
def field():
    image, labels = generate(SyntheticConfig(shape=(384, 512)), seed=3)
    return image, labels.astype(np.uint32)


def test_measure_nuclei_equals_regionprops(field):
    image, labels = field
    ours = measure_nuclei(labels, image)
    ref = pd.DataFrame(regionprops_table(labels, intensity_image=np.asarray(image, np.float32), properties=(
        "label", "centroid", "area", "intensity_mean", "intensity_max", "eccentricity")))
    assert list(ours.columns) == NUCLEUS_COLUMNS and len(ours) == len(ref) > 50
    np.testing.assert_array_equal(ours["label"], ref["label"])
    np.testing.assert_array_equal(ours["area"], ref["area"])
    np.testing.assert_allclose(ours["centroid_y"], ref["centroid-0"], rtol=1e-12)
    np.testing.assert_allclose(ours["centroid_x"], ref["centroid-1"], rtol=1e-12)
    np.testing.assert_allclose(ours["max_intensity"], ref["intensity_max"], rtol=0)
    np.testing.assert_allclose(ours["mean_intensity"], ref["intensity_mean"], rtol=1e-5)  # regionprops sums in float32
    np.testing.assert_allclose(ours["eccentricity"], ref["eccentricity"], atol=1e-9)


def test_measure_nuclei_sparse_ids_and_empty(field):
    image, labels = field
    dense = measure_nuclei(labels, image)
    # a slide block's global ids: far apart and near the top of uint32
    sparse = np.where(labels > 0, labels.astype(np.uint64) * 3_000_017 % (2**32 - 5), 0).astype(np.uint32)
    ours = measure_nuclei(sparse, image)
    mapping = dict(zip(dense["label"], (dense["label"].astype(np.uint64) * 3_000_017 % (2**32 - 5)).astype(np.uint32)))
    ours = ours.set_index("label").loc[[mapping[v] for v in dense["label"]]]
    for c in NUCLEUS_COLUMNS[1:]:
        np.testing.assert_allclose(ours[c].to_numpy(), dense[c].to_numpy(), rtol=1e-12)
    empty = measure_nuclei(np.zeros((8, 8), np.uint32), np.ones((8, 8)))
    assert empty.empty and list(empty.columns) == NUCLEUS_COLUMNS and empty["label"].dtype == np.uint32
    with pytest.raises(ValueError, match="differ in shape"):
        measure_nuclei(labels, image[:-1])


def test_well_table_weights_by_nuclei():
    fields = pd.DataFrame({"well": ["A/1", "A/1", "B/2"], "row": ["A", "A", "B"], "column": ["1", "1", "2"],
                           "n_nuclei": [10, 30, 0], "mean_area": [100.0, 200.0, np.nan],
                           "mean_intensity": [1.0, 2.0, np.nan]})
    wells = well_table(fields).set_index("well")
    assert wells.loc["A/1", "fields"] == 2 and wells.loc["A/1", "n_nuclei"] == 40
    assert wells.loc["A/1", "mean_area"] == pytest.approx(175.0)
    assert wells.loc["A/1", "mean_intensity"] == pytest.approx(1.75)
    assert wells.loc["B/2", "n_nuclei"] == 0 and np.isnan(wells.loc["B/2", "mean_area"])


def test_nuclei_table_streams_every_done_field_in_plate_order(tmp_path):
    """``nuclei.parquet`` holds each done field's rows once, in the order asked, empty fields included."""
    from hts.io.ngff import FieldRef
    from hts.io.results import Results

    rng = np.random.default_rng(0)
    refs = [FieldRef(f"B/{c}/0", "B/" + str(c), "B", str(c), "0") for c in (3, 1, 2)]
    res = Results(tmp_path / "p.hts")
    tables = {}
    for ref, n in zip(refs, (0, 5, 7)):  # an empty field first: its schema must not decide the types
        labels = np.zeros((64, 64), np.uint32)
        for i in range(n):
            y, x = rng.integers(4, 60, 2)
            labels[y - 2 : y + 2, x - 2 : x + 2] = i + 1
        tables[ref.key] = measure_nuclei(labels, rng.random((64, 64)))
        res.commit(ref, tables[ref.key], labels.size)
    res.commit(FieldRef("C/1/0", "C/1", "C", "1", "0"), tables[refs[0].key], 4096)  # done, but not asked for
    res.write_tables(refs)
    got = pd.read_parquet(res.path / "nuclei.parquet")
    want = pd.concat([tables[r.key].assign(well=r.well, field=r.field) for r in refs], ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
    assert list(got["well"].unique()) == ["B/1", "B/2"]  # the empty field B/3 adds no rows
