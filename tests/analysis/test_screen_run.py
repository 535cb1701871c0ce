"""A synthetic screen end to end: hts run --platemap, then every statistic against the truth it was written with.

The plate (hts.synthetic.screen) has negative and positive control columns, a
dose-response of a marker (GFP) with a known EC50 and a G2/M arrest of known
phase fractions. The tables are also run through pycytominer, whose per-well
values must equal a direct pandas computation from nuclei.parquet.
"""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from cli_run import hts, hts_in_process, one_line_error
from hts.analysis.report import write_report
from hts.analysis.screen_stats import z_prime
from hts.io.results import results_dir
from hts.synthetic.screen import ScreenSpec
from hts.synthetic.screen import write_screen as write_synthetic_screen

READOUT = "Nuclei_Intensity_MeanIntensity_GFP"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """The default 4x6 synthetic screen, run once with its platemap and the GFP readout."""
    path = tmp_path_factory.mktemp("screen") / "screen.zarr"
    truth = write_synthetic_screen(path, ScreenSpec())
    proc = hts("run", path, "--channel", "DAPI", "--diameter", "20", "--workers", "2",
               "--platemap", truth.platemap_path, "--readout", READOUT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return path, truth, results_dir(path), proc


def _screen_wells(results) -> pd.DataFrame:
    return pd.read_csv(results / "screen.csv", dtype={"column": str})


def test_counts_and_z_prime_against_the_truth(screen):
    _, truth, results, _ = screen
    wells = _screen_wells(results).set_index("well")
    t = truth.wells.set_index("well")
    error = (wells.loc[t.index, "n_nuclei"] - t["n_nuclei"]) / t["n_nuclei"]
    assert error.abs().max() < 0.05, error.describe()
    record = json.loads((results / "screen.json").read_text())
    zp = record["readouts"]["n_nuclei"]["z_prime"]
    assert truth.z_prime_counts > 0.3  # a usable assay, else the comparison says little
    assert abs(zp - truth.z_prime_counts) <= 0.05, (zp, truth.z_prime_counts)
    neg = wells[wells["Metadata_role"] == "negative"]["n_nuclei"]
    pos = wells[wells["Metadata_role"] == "positive"]["n_nuclei"]
    assert zp == pytest.approx(z_prime(pos, neg))
    poc = wells["n_nuclei_percent_of_control"]
    assert np.allclose(poc, 100 * wells["n_nuclei"] / neg.mean())


def test_ec50_of_the_marker_dose_response(screen):
    _, truth, results, _ = screen
    record = json.loads((results / "screen.json").read_text())
    fit = next(f for f in record["dose_response"] if f["treatment"] == "CPD1" and f["readout"] == READOUT)
    assert fit["converged"], fit["message"]
    true = truth.ec50["CPD1"]
    assert abs(fit["ec50"] - true) / true < 0.20, (fit["ec50"], true)
    lo, hi = fit["ec50_ci"]
    assert lo < fit["ec50"] < hi


def test_dna_content_fractions_within_5_points(screen):
    _, truth, results, _ = screen
    record = json.loads((results / "screen.json").read_text())
    assert record["dna_content"]["feature"] == "Nuclei_Intensity_IntegratedIntensityAboveBackground_DAPI"
    got = pd.DataFrame(record["dna_content"]["wells"]).set_index("well")
    t = truth.wells.set_index("well")
    for phase in ("g1_fraction", "g2m_fraction"):
        diff = (got.loc[t.index, phase] - t[phase]).abs()
        assert diff.max() <= 0.05, (phase, diff.sort_values().tail(3))
    arrest = t[(t["treatment"] == "CPD2")]["g2m_fraction"].idxmax()
    assert got.loc[arrest, "g2m_fraction"] > got.loc[t[t["role"] == "negative"].index, "g2m_fraction"].max() + 0.2


def test_cellprofiler_named_tables_with_the_platemap(screen):
    path, truth, results, proc = screen
    nuclei = pd.read_parquet(results / "nuclei.parquet")
    image = pd.read_parquet(results / "image.parquet")
    fields = pd.read_csv(results / "fields.csv", dtype={"column": str, "field": str})
    for col in ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber", "Nuclei_AreaShape_Area",
                "Nuclei_AreaShape_Solidity", "Nuclei_AreaShape_FormFactor", "Nuclei_Location_Center_X",
                "Nuclei_Intensity_IntegratedIntensity_DAPI", "Nuclei_Intensity_StdIntensity_GFP",
                "Cytoplasm_Intensity_MeanIntensity_GFP", "Metadata_treatment", "Metadata_dose", "Metadata_role",
                "label", "area", "well"):  # the earlier columns are kept
        assert col in nuclei, col
    assert nuclei["Metadata_Well"].str.fullmatch(r"[A-D]0[1-6]").all()
    assert (nuclei["label"].astype(np.int64) == nuclei["Metadata_ObjectNumber"]).all()
    assert (nuclei["area"] == nuclei["Nuclei_AreaShape_Area"]).all()
    assert len(image) == len(fields) == len(truth.wells)
    assert list(image["Image_Count_Nuclei"]) == list(fields["n_nuclei"])
    assert {"Metadata_QC_Empty", "Metadata_QC_Saturated", "Metadata_QC_OutOfFocus"} <= set(image.columns)
    per_well = nuclei.groupby("Metadata_Well").size()
    assert per_well.to_dict() == dict(zip(image["Metadata_Well"], image["Image_Count_Nuclei"]))
    roles = dict(zip(truth.wells["well_id"], truth.wells["role"]))
    assert (image["Metadata_role"] == image["Metadata_Well"].map(roles)).all()
    assert (image["Metadata_Plate"] == nuclei["Metadata_Plate"].iloc[0]).all()


def test_pycytominer_on_hts_output_equals_pandas(screen):
    pycytominer = pytest.importorskip("pycytominer")
    _, truth, results, _ = screen
    nuclei = pd.read_parquet(results / "nuclei.parquet")
    hts_cols = ["label", "centroid_y", "centroid_x", "area", "mean_intensity", "max_intensity", "eccentricity",
                "well", "field"]
    cp = nuclei.drop(columns=hts_cols + [c for c in nuclei if c.startswith("Metadata_") and
                                         c not in ("Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                                   "Metadata_ObjectNumber")])
    features = [c for c in cp if c.startswith(("Nuclei_", "Cytoplasm_"))]
    profiles = pycytominer.aggregate(cp, strata=["Metadata_Plate", "Metadata_Well"], features="infer",
                                     operation="median")
    direct = cp.groupby(["Metadata_Plate", "Metadata_Well"])[features].median().reset_index()
    merged = profiles.merge(direct, on=["Metadata_Plate", "Metadata_Well"], suffixes=("", "_pandas"))
    assert len(merged) == len(truth.wells)
    for f in features:
        np.testing.assert_allclose(merged[f], merged[f"{f}_pandas"], rtol=1e-9, err_msg=f)

    platemap = pd.read_csv(truth.platemap_path)
    annotated = pycytominer.annotate(profiles, platemap, join_on=["Metadata_well", "Metadata_Well"])
    assert (annotated["Metadata_role"] == annotated["Metadata_Well"].map(
        dict(zip(truth.wells["well_id"], truth.wells["role"])))).all()

    normalized = pycytominer.normalize(annotated, features="infer", samples="Metadata_role == 'negative'",
                                       method="standardize")
    neg = direct[direct["Metadata_Well"].isin(truth.wells.loc[truth.wells["role"] == "negative", "well_id"])]
    by_well = normalized.set_index("Metadata_Well")
    d = direct.set_index("Metadata_Well").loc[by_well.index]
    for f in (READOUT, "Nuclei_AreaShape_Area", "Nuclei_Intensity_IntegratedIntensity_DAPI"):
        expected = (d[f] - neg[f].mean()) / neg[f].std(ddof=0)  # sklearn's StandardScaler
        np.testing.assert_allclose(by_well[f], expected, rtol=1e-6, atol=1e-9, err_msg=f)

    selected = pycytominer.feature_select(normalized, features="infer",
                                          operation=["variance_threshold", "correlation_threshold", "drop_na_columns"])
    kept = [c for c in selected if c.startswith(("Nuclei_", "Cytoplasm_"))]
    assert 0 < len(kept) < len(features) and set(kept) <= set(features)
    np.testing.assert_allclose(selected[kept].to_numpy(float), normalized[kept].to_numpy(float))


def test_report_shows_the_screen(screen, chromium, tmp_path):
    path, truth, results, _ = screen
    index = write_report(path, tmp_path / "report")
    page = index.read_text()
    assert "<h2>Screen</h2>" in page and "Dose-response" in page and "DNA content" in page
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    wells = _screen_wells(results)
    drawn = np.array(data["screen"]["heatmaps"]["n_nuclei"]["b_score"], dtype=float)
    rows, cols = sorted(set(wells["row"])), sorted(set(wells["column"]), key=int)
    for r, c, b in zip(wells["row"], wells["column"], wells["n_nuclei_b_score"]):
        assert drawn[rows.index(r), cols.index(c)] == pytest.approx(b)
    n = len(re.findall(r'<img src="([^"]+)"', page))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           index.resolve().as_uri()], capture_output=True, text=True, timeout=180, check=False)
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', proc.stdout)
    assert loaded and loaded.group(1) == loaded.group(2) == str(n), proc.stderr[-1000:]


def test_report_platemap_recomputes_and_bad_maps_are_one_line(screen, tmp_path, capsys):
    path, truth, results, _ = screen
    flipped = pd.read_csv(truth.platemap_path)
    flipped["role"] = flipped["role"].replace({"negative": "positive", "positive": "negative"})
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    before = json.loads((results / "screen.json").read_text())["readouts"]["n_nuclei"]["ssmd"]
    proc = hts_in_process(capsys, "report", path, "--out", tmp_path / "r", "--platemap", tmp_path / "flipped.csv")
    assert proc.returncode == 0, proc.stderr
    after = json.loads((results / "screen.json").read_text())["readouts"]["n_nuclei"]["ssmd"]
    assert after == pytest.approx(-before)
    (tmp_path / "bad.csv").write_text("well,role\nA01,negative\nA1,positive\n")
    one_line_error(hts_in_process(capsys, "report", path, "--platemap", tmp_path / "bad.csv"), "bad.csv", "A01")
    (tmp_path / "nowell.csv").write_text("position,role\nA01,negative\n")
    one_line_error(hts_in_process(capsys, "run", path, "--channel", "DAPI", "--platemap", tmp_path / "nowell.csv"),
                   "nowell.csv", "well")
    one_line_error(hts_in_process(capsys, "report", path, "--readout", "Nuclei_Intensity_MeanIntensity_GPF"),
                   "Nuclei_Intensity_MeanIntensity_GFP")
    # restore the run's own statistics for the other tests of the module
    assert hts_in_process(capsys, "report", path, "--out", tmp_path / "r2",
                          "--platemap", truth.platemap_path).returncode == 0
