"""Tests for hts.synthetic.screen: the truth of the synthetic screen matches what its plate holds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage

from hts.errors import HtsError
from hts.io.ngff import open_source
from hts.io.ngff_image import image_info
from hts.io.ngff_meta import ome_attrs
from hts.synthetic.plate import read_truth
from hts.synthetic.screen import ScreenSpec, ScreenTruth, design, platemap_path, write_screen

SCALE = 60_000.0  # ADU per unit of DNA content (ScreenSpec.dna_scale)


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScreenTruth]:
    """The default screen (4 x 6 wells, one 320 px field each), written once."""
    path = tmp_path_factory.mktemp("screen") / "screen.zarr"
    return path, write_screen(path)


def field_image(path: Path, image_path: str) -> np.ndarray:
    """Level 0 of a field, ``(c, y, x)``."""
    group = zarr.open_group(str(path / image_path), mode="r")
    return np.asarray(group[image_info(group).levels[0]])


def fields(path: Path, truth: ScreenTruth):
    """``(well, field, image, labels)`` of every field."""
    for well in truth.wells["well"]:
        for f in range(truth.spec.fields):
            yield well, f, field_image(path, f"{well}/{f}"), read_truth(path, f"{well}/{f}")


def test_counts_platemap_and_z_prime(screen: tuple[Path, ScreenTruth]) -> None:
    path, truth = screen
    wells = truth.wells.set_index("well")
    per_field = truth.nuclei.groupby(["well", "field"]).size()
    for well, f, image, labels in fields(path, truth):
        assert image.shape == (2, 320, 320) and image.dtype == np.uint16
        assert per_field[(well, f)] == labels.max() == np.unique(labels[labels > 0]).size, well
        assert wells.loc[well, "n_nuclei"] == labels.max()
        ids = truth.nuclei.loc[truth.nuclei["well"] == well, "label"].to_numpy()
        assert np.array_equal(ids, np.arange(1, labels.max() + 1))

    assert truth.platemap_path == path.with_name("screen.platemap.csv") == platemap_path(path)
    pmap = pd.read_csv(truth.platemap_path, dtype={"well": str})
    assert list(pmap.columns) == ["well", "treatment", "dose", "role"] and len(pmap) == 24
    assert pmap["well"].is_unique and {"A01", "B03", "D06"} <= set(pmap["well"])
    column = pmap["well"].str[1:].astype(int)
    assert (pmap.loc[column == 1, ["treatment", "role"]] == ["DMSO", "negative"]).all().all()
    assert (pmap.loc[column == 6, ["treatment", "role"]] == ["STS", "positive"]).all().all()
    middle = pmap[(column > 1) & (column < 6)]
    assert (middle["role"] == "sample").all() and pmap.loc[column.isin([1, 6]), "dose"].isna().all()
    assert set(middle.loc[middle["well"].str[0].isin(["A", "B"]), "treatment"]) == {"CPD1"}
    assert set(middle.loc[middle["well"].str[0].isin(["C", "D"]), "treatment"]) == {"CPD2"}
    for compound in ("CPD1", "CPD2"):
        doses = np.sort(middle.loc[middle["treatment"] == compound, "dose"].to_numpy())
        assert np.allclose(doses, 0.01 * 3.0 ** np.arange(8), rtol=1e-4)

    neg = wells.loc[wells["role"] == "negative", "n_nuclei"]
    pos = wells.loc[wells["role"] == "positive", "n_nuclei"]
    assert 0.4 < truth.z_prime_counts < 0.9
    assert truth.z_prime_counts == pytest.approx(1 - 3 * (pos.std() + neg.std()) / abs(pos.mean() - neg.mean()))
    assert 100 < neg.mean() < 120 and pos.mean() / neg.mean() == pytest.approx(0.4, abs=0.04)
    top = wells[(wells["treatment"] == "CPD2") & (wells["dose"] > 20)]["n_nuclei"]
    assert top.mean() / neg.mean() == pytest.approx(0.8, abs=0.08)


def test_dna_content_and_phase_fractions(screen: tuple[Path, ScreenTruth]) -> None:
    path, truth = screen
    background = truth.wells["dna_background"].iloc[0]
    assert background == 50.0
    measured = []
    for well, f, image, labels in fields(path, truth):
        dapi = image[0].astype(np.float64)
        far = ndimage.distance_transform_edt(labels == 0) > 4
        assert dapi[far].mean() == pytest.approx(background, abs=0.5)  # the recorded background is the real one
        ids = np.arange(1, labels.max() + 1)
        area = np.bincount(labels.ravel())[1:]
        integrated = ndimage.sum_labels(dapi, labels, ids) - background * area
        measured.append(integrated / SCALE)
    nuclei = truth.nuclei.assign(measured=np.concatenate(measured))
    assert np.allclose(nuclei["measured"], nuclei["dna_content"], rtol=0.05)
    means = nuclei.groupby("phase")["dna_content"].mean()
    assert means["G1"] == pytest.approx(1.0, abs=0.02) and means["G2M"] == pytest.approx(2.0, abs=0.04)

    gates = {"g1": nuclei["measured"] < 1.35, "g2m": nuclei["measured"] >= 1.75}
    gated = nuclei.assign(**gates).groupby("well")[["g1", "g2m"]].mean()
    wells = truth.wells.set_index("well")
    assert np.abs(gated["g1"] - wells["g1_fraction"]).max() < 0.03
    assert np.abs(gated["g2m"] - wells["g2m_fraction"]).max() < 0.03
    assert np.allclose(wells[["g1_fraction", "s_fraction", "g2m_fraction"]].sum(axis=1), 1.0)
    negative = wells[wells["role"] == "negative"]
    assert np.allclose(negative["g2m_fraction"], 0.2, atol=0.02)
    assert np.allclose(negative["s_fraction"], 0.15, atol=0.02)
    cpd2 = wells[wells["treatment"] == "CPD2"].sort_values("dose")
    assert cpd2["g2m_fraction"].iloc[-1] == pytest.approx(0.7, abs=0.02)
    assert (np.diff(cpd2["g2m_fraction"]) > 0).all()


def test_marker_follows_the_4pl(screen: tuple[Path, ScreenTruth]) -> None:
    path, truth = screen
    background = truth.spec.marker_background
    medians = {}
    for well, _, image, labels in fields(path, truth):
        ids = np.arange(1, labels.max() + 1)
        medians[well] = np.median(ndimage.mean(image[1].astype(np.float64), labels, ids)) - background
    wells = truth.wells.set_index("well").assign(median=pd.Series(medians))
    relative = wells["median"] / wells.loc[wells["role"] == "negative", "median"].mean()
    assert np.allclose(relative, wells["marker"], rtol=0.05)

    assert truth.ec50 == {"CPD1": 0.5} and truth.hill == 1.0
    cpd1 = wells[wells["treatment"] == "CPD1"]
    expected = 1.0 + (3.0 - 1.0) / (1.0 + (0.5 / cpd1["dose"]) ** 1.0)  # rising 4PL: 1 -> 3, half-way at 0.5 uM
    assert np.allclose(cpd1["marker"], expected) and np.allclose(relative[cpd1.index], expected, rtol=0.05)
    assert np.allclose(wells.loc[wells["role"] == "positive", "marker"], 3.0)
    assert np.allclose(wells.loc[wells["treatment"].isin(["DMSO", "CPD2"]), "marker"], 1.0)


def test_plate_opens_as_ngff(screen: tuple[Path, ScreenTruth]) -> None:
    path, truth = screen
    root = zarr.open_group(str(path), mode="r")
    plate = ome_attrs(root)["plate"]
    assert [r["name"] for r in plate["rows"]] == list("ABCD")
    assert [c["name"] for c in plate["columns"]] == [str(c) for c in range(1, 7)]
    assert [w["path"] for w in plate["wells"]] == list(truth.wells["well"])
    source = open_source(path)
    assert source.kind == "plate" and source.version == "0.5" and len(source.fields) == 24 and not source.skipped
    for ref in source.fields[::5]:
        info = image_info(zarr.open_group(str(path / ref.path), mode="r"))
        assert info.channels == ("DAPI", "GFP") and info.axes == ("c", "y", "x") and len(info.levels) == 2


def test_deterministic(tmp_path: Path) -> None:
    spec = ScreenSpec(rows=2, columns=4, doses=2, fields=2, size=96, version="0.4")
    a, b = write_screen(tmp_path / "a.zarr", spec), write_screen(tmp_path / "b.zarr", spec)
    c = write_screen(tmp_path / "c.zarr", ScreenSpec(rows=2, columns=4, doses=2, fields=2, size=96, seed=1))
    pd.testing.assert_frame_equal(a.nuclei, b.nuclei)
    pd.testing.assert_frame_equal(a.wells, b.wells)
    assert a.platemap_path.read_text() == b.platemap_path.read_text() == c.platemap_path.read_text()
    assert a.platemap_path.read_text().splitlines()[1:3] == ["A01,DMSO,,negative", "A02,CPD1,0.01,sample"]
    for well in a.wells["well"]:
        for f in ("0", "1"):
            image_path = f"{well}/{f}"
            img_a, img_b = (field_image(tmp_path / name, image_path) for name in ("a.zarr", "b.zarr"))
            assert np.array_equal(img_a, img_b) and img_a.shape == (2, 96, 96)
            lab_a, lab_b = (read_truth(tmp_path / name, image_path) for name in ("a.zarr", "b.zarr"))
            assert np.array_equal(lab_a, lab_b)
            assert not np.array_equal(img_a, field_image(tmp_path / "c.zarr", image_path))
    assert not np.array_equal(field_image(tmp_path / "a.zarr", "A/1/0"), field_image(tmp_path / "a.zarr", "A/1/1"))


def test_layout_scales_to_96_wells() -> None:
    layout = design(ScreenSpec(rows=8, columns=12))
    assert len(layout) == 96 and layout["well_id"].iloc[13] == "B02" and layout["well"].iloc[13] == "B/2"
    assert (layout.loc[layout["well_id"].str.endswith("01"), "role"] == "negative").sum() == 8
    assert (layout.loc[layout["well_id"].str.endswith("12"), "role"] == "positive").sum() == 8
    for compound, rows in (("CPD1", "ABCD"), ("CPD2", "EFGH")):
        wells = layout[layout["treatment"] == compound]
        assert set(wells["well_id"].str[0]) == set(rows)
        assert (wells.groupby("dose").size() == 5).all() and wells["dose"].nunique() == 8
    assert math.isnan(layout["dose"].iloc[0])


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"rows": 1}, "rows"), ({"columns": 2.5}, "columns"), ({"version": "0.3"}, "version"), ({"size": 32}, "size"),
    ({"count_cv": -0.1}, "count_cv"), ({"ec50": 0}, "ec50"), ({"s_fraction": 0.5}, "s_fraction"),
    ({"s_range": (1.8, 1.2)}, "s_range"), ({"rows": 2, "columns": 5}, "doses"),
])
def test_spec_validation(kwargs: dict, name: str) -> None:
    with pytest.raises(HtsError, match=name):
        ScreenSpec(**kwargs)
