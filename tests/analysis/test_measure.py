"""Per-nucleus measurements of every channel (hts.analysis.measure) against skimage's regionprops."""

import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops_table
from skimage.segmentation import expand_labels

from hts.analysis.measure import channel_names, cytoplasm_ring, measure_objects, with_metadata
from hts.synthetic.nuclei import SyntheticConfig, generate


@pytest.fixture(scope="module")
def field():
    image, labels = generate(SyntheticConfig(shape=(192, 192), diameter=16.0), seed=3)
    rng = np.random.default_rng(0)
    second = rng.poisson(200, image.shape).astype(np.uint16)
    return labels.astype(np.uint32), {"DAPI": image, "GFP": second}


def test_features_equal_regionprops(field):
    labels, planes = field
    table = measure_objects(labels, planes, ring=4)
    props = regionprops_table(labels, np.stack([planes["DAPI"], planes["GFP"]], axis=-1).astype(float), properties=(
        "label", "area", "perimeter", "eccentricity", "solidity", "axis_major_length", "axis_minor_length",
        "centroid", "intensity_mean", "intensity_max", "intensity_std"))
    assert table["ObjectNumber"].tolist() == props["label"].tolist()
    pairs = {"Nuclei_AreaShape_Area": "area", "Nuclei_AreaShape_Perimeter": "perimeter",
             "Nuclei_AreaShape_Eccentricity": "eccentricity", "Nuclei_AreaShape_Solidity": "solidity",
             "Nuclei_AreaShape_MajorAxisLength": "axis_major_length",
             "Nuclei_AreaShape_MinorAxisLength": "axis_minor_length",
             "Nuclei_Location_Center_X": "centroid-1", "Nuclei_Location_Center_Y": "centroid-0"}
    for ch, i in (("DAPI", 0), ("GFP", 1)):
        pairs |= {f"Nuclei_Intensity_MeanIntensity_{ch}": f"intensity_mean-{i}",
                  f"Nuclei_Intensity_MaxIntensity_{ch}": f"intensity_max-{i}",
                  f"Nuclei_Intensity_StdIntensity_{ch}": f"intensity_std-{i}"}
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(table[ours], props[theirs], rtol=1e-9, atol=1e-9, err_msg=ours)
    np.testing.assert_allclose(table["Nuclei_Intensity_IntegratedIntensity_GFP"],
                               props["intensity_mean-1"] * props["area"], rtol=1e-9)
    np.testing.assert_allclose(table["Nuclei_AreaShape_FormFactor"],
                               4 * np.pi * props["area"] / props["perimeter"] ** 2, rtol=1e-9)


def test_cytoplasm_is_a_ring_that_does_not_touch_the_nuclei(field):
    labels, planes = field
    ring = cytoplasm_ring(labels, 4)
    assert not (ring[labels > 0]).any()
    grown = expand_labels(labels, 4)
    assert np.array_equal(ring, np.where(labels > 0, 0, grown))
    table = measure_objects(labels, planes, ring=4)
    gfp = planes["GFP"].astype(float)
    for i in table["ObjectNumber"].to_numpy()[:10]:
        inside = ring == i
        row = table[table["ObjectNumber"] == i].iloc[0]
        if inside.any():
            assert row["Cytoplasm_Intensity_MeanIntensity_GFP"] == pytest.approx(gfp[inside].mean())
            assert row["Cytoplasm_Intensity_IntegratedIntensity_GFP"] == pytest.approx(gfp[inside].sum())
    assert not any(c.startswith("Cytoplasm_") for c in measure_objects(labels, planes, ring=0).columns)


def test_enclosed_nucleus_has_nan_cytoplasm():
    labels = np.zeros((40, 40), np.uint32)
    labels[5:35, 5:35] = 1
    labels[15:25, 15:25] = 2  # nucleus 2 inside nucleus 1: no pixel of its own to grow into
    table = measure_objects(labels, {"A": np.ones((40, 40))}, ring=3)
    two = table[table["ObjectNumber"] == 2].iloc[0]
    assert np.isnan(two["Cytoplasm_Intensity_MeanIntensity_A"])
    assert two["Cytoplasm_Intensity_IntegratedIntensity_A"] == 0
    assert table[table["ObjectNumber"] == 1].iloc[0]["Cytoplasm_Intensity_MeanIntensity_A"] == 1


def test_sparse_ids_and_empty_field():
    labels = np.zeros((30, 30), np.uint32)
    labels[2:8, 2:8] = 7
    labels[20:28, 10:20] = 4_000_000_000
    table = measure_objects(labels, {"A": labels.astype(float)}, ring=2)
    assert table["ObjectNumber"].tolist() == [7, 4_000_000_000]
    assert table["Nuclei_AreaShape_Area"].tolist() == [36, 80]
    empty = with_metadata(measure_objects(np.zeros((30, 30), np.uint32), {"A": np.zeros((30, 30))}), "P", "A01", 0)
    assert len(empty) == 0 and list(empty.columns) == list(with_metadata(table, "P", "A01", 0).columns)


def test_metadata_columns_first(field):
    labels, planes = field
    table = with_metadata(measure_objects(labels, planes), "plate 1", "B03", 2)
    assert list(table.columns[:4]) == ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]
    assert set(table["Metadata_Well"]) == {"B03"} and set(table["Metadata_Site"]) == {2}
    assert table["Metadata_ObjectNumber"].is_unique
    assert isinstance(table, pd.DataFrame) and not table.columns.duplicated().any()


def test_channel_names_are_column_safe_and_unique():
    assert channel_names(["DAPI", "Alexa 488", "", "DAPI", "Cy5/647"]) == ["DAPI", "Alexa_488", "Ch2", "DAPI_3",
                                                                        "Cy5_647"]
