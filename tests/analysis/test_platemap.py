"""Platemaps (hts.analysis.platemap): reading and checking a scientist's CSV, and joining it onto hts's tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hts.analysis.platemap import (
    ROLES, controls, coverage_warnings, join_platemap, metadata_columns, parse_well, read_platemap, well_id,
)
from hts.errors import HtsError


def write(tmp_path, text: str, name: str = "plate1.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path) -> str:
    """The message of the HtsError that reading ``path`` raises; always one line naming the file."""
    with pytest.raises(HtsError) as info:
        read_platemap(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("text", ["A01", "A1", "a1", "A/1", "A-01", "A_1", " A01 ", "a/01"])
def test_parse_well_spellings(text):
    assert parse_well(text) == ("A", 1)


def test_parse_well_two_letter_rows_and_errors():
    assert parse_well(" af48 ") == ("AF", 48) and parse_well("B/3") == ("B", 3)
    for bad in ["", "A", "1A", "A0", "A00", "ABC1", "A 1", "A1x", "A/-1", "A//1", "A\u0663"]:
        with pytest.raises(ValueError, match=repr(bad).replace("\\", "\\\\") if bad else "''"):
            parse_well(bad)


def test_well_id_pads_and_validates():
    assert well_id("B", "3") == "B03" and well_id("b", 3) == "B03" and well_id("AF", 48) == "AF48"
    assert well_id("H", "12") == "H12" and well_id("A", "01") == "A01"
    for row, column in [("", 1), ("ABC", 1), ("1", 1), ("A", 0), ("A", "x"), ("A", -2), ("A", "\u0663")]:
        with pytest.raises(ValueError):
            well_id(row, column)


def test_read_platemap_normalises_wells_and_roles(tmp_path):
    path = write(tmp_path, " Well ,treatment,role,dose\n"
                           "A1,DMSO, Negative ,0\n"
                           "a/2,staurosporine,POSITIVE,1e-6\n"
                           "A-03,cmpd1,,10\n"
                           "\n"  # a blank line: skipped
                           "B_4,cmpd2,sample,\n"
                           " B05 ,cmpd3, sample , 2.5 \n")
    pm = read_platemap(path)
    assert list(pm.columns) == ["well", "treatment", "role", "dose"]
    assert pm["well"].tolist() == ["A01", "A02", "A03", "B04", "B05"]
    assert pm["role"].tolist() == ["negative", "positive", "sample", "sample", "sample"]
    assert pm["dose"].dtype == np.float64
    np.testing.assert_array_equal(pm["dose"].to_numpy(), [0, 1e-6, 10, np.nan, 2.5])
    assert pm["treatment"].tolist() == ["DMSO", "staurosporine", "cmpd1", "cmpd2", "cmpd3"]
    assert pm.attrs["path"] == str(path)


def test_read_platemap_well_column_not_first_and_other_columns_in_order(tmp_path):
    pm = read_platemap(write(tmp_path, "compound,WELL,conc_uM\nx,P24,\ny,AF48,3\n"))
    assert list(pm.columns) == ["well", "compound", "conc_uM"]
    assert pm["well"].tolist() == ["P24", "AF48"] and pm["conc_uM"].tolist() == ["", "3"]
    assert "role" not in pm and controls(pm) == {role: [] for role in ROLES}


@pytest.mark.parametrize("name", ["plate.tsv", "plate.txt", "plate.csv"])
def test_read_platemap_tab_separated(tmp_path, name):
    pm = read_platemap(write(tmp_path, "well\ttreatment, with comma\tdose\nA1\tDMSO, 0.1%\t0\nB2\tx\t5\n", name))
    assert list(pm.columns) == ["well", "treatment, with comma", "dose"]
    assert pm["well"].tolist() == ["A01", "B02"] and pm["treatment, with comma"].tolist() == ["DMSO, 0.1%", "x"]


def test_read_platemap_excel_quirks(tmp_path):
    # byte-order mark, CRLF, semicolons, trailing empty unnamed columns
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffwell;treatment;;\r\nA1;DMSO;;\r\nA2;\"a;b\";;\r\n".encode())
    pm = read_platemap(path)
    assert list(pm.columns) == ["well", "treatment"] and pm["treatment"].tolist() == ["DMSO", "a;b"]


def test_read_platemap_file_errors(tmp_path):
    assert "no such file" in error_of(tmp_path / "missing.csv")
    assert "cannot read" in error_of(tmp_path)  # a folder
    (tmp_path / "latin1.csv").write_bytes("well,treatment\nA1,caf\xe9\n".encode("latin-1"))
    assert "cannot read" in error_of(tmp_path / "latin1.csv")
    assert "is empty" in error_of(write(tmp_path, ""))
    assert "is empty" in error_of(write(tmp_path, "\n , ,\n\n"))
    assert "no wells" in error_of(write(tmp_path, "well,treatment\n"))


def test_read_platemap_header_errors(tmp_path):
    message = error_of(write(tmp_path, "position,treatment\nA1,DMSO\n"))
    assert "no 'well' column" in message and "'position', 'treatment'" in message
    message = error_of(write(tmp_path, "well,treatment,Well\nA1,x,A1\n"))
    assert "line 1" in message and "'Well'" in message and "Metadata_Well" in message and "hts's own" in message
    for column, becomes in [("Plate", "Metadata_Plate"), ("Metadata_Site", "Metadata_Site"),
                            ("ObjectNumber", "Metadata_ObjectNumber"), ("Metadata_well", "Metadata_well"),
                            ("plate", "Metadata_plate")]:
        message = error_of(write(tmp_path, f"well,{column}\nA1,1\n"))
        assert f"'{column}'" in message and becomes in message and "clashes with hts's own metadata" in message
    message = error_of(write(tmp_path, "well,dose,Dose\nA1,1,1\n"))
    assert "'dose'" in message and "'Dose'" in message and "Metadata_dose" in message
    message = error_of(write(tmp_path, "well,treatment,Metadata_treatment\nA1,1,1\n"))
    assert "Metadata_treatment" in message and "both become" in message
    message = error_of(write(tmp_path, "well,,dose\nA1,x,1\n"))
    assert "line 1" in message and "column 2" in message and "no name" in message


def test_read_platemap_row_errors(tmp_path):
    message = error_of(write(tmp_path, "well,treatment\nA1,x\n\nA13x,y\n"))
    assert "line 4" in message and "column well" in message and "'A13x'" in message
    message = error_of(write(tmp_path, "well,treatment\nA1,x\n,y\n"))
    assert "line 3" in message and "''" in message
    message = error_of(write(tmp_path, "well,treatment\nA1,x\nB2,y\n\"multi\nline\",z\nA01,w\n"))
    assert "line 4" in message and "'multi\\nline'" in message  # the quoted value spans lines 4-5
    message = error_of(write(tmp_path, "well,treatment\nA1,x\nB2,y\n\"B3\",\"multi\nline\"\na/1,w\n"))
    assert "A01" in message and "line 2" in message and "line 6" in message
    message = error_of(write(tmp_path, "well,role\nA1,negative\nA2,control\n"))
    assert "line 3" in message and "column role" in message and "'control'" in message
    assert all(role in message for role in ROLES)
    message = error_of(write(tmp_path, "well,dose\nA1,1\nA2,\nA3,10 uM\n"))
    assert "line 4" in message and "column dose" in message and "'10 uM'" in message
    for bad in ["-1", "inf", "nan"]:
        assert f"'{bad}'" in error_of(write(tmp_path, f"well,dose\nA1,{bad}\n"))
    message = error_of(write(tmp_path, "well,treatment\nA1,x\nA2,y,extra\n"))
    assert "line 3" in message and "3 values" in message and "2 columns" in message


@pytest.fixture
def platemap(tmp_path):
    return read_platemap(write(tmp_path, "well,treatment,role,dose\n"
                                         "B3,DMSO,negative,0\nB4,stauro,positive,1\nC3,,sample,\nD10,cmpd,,5\n"))


def test_metadata_columns(platemap):
    meta = metadata_columns(platemap)
    assert list(meta.columns) == ["Metadata_treatment", "Metadata_role", "Metadata_dose"]
    assert meta.index.tolist() == ["B03", "B04", "C03", "D10"] and meta.index.name == "Metadata_Well"
    assert meta.attrs["path"] == platemap.attrs["path"]
    with pytest.raises(ValueError, match="B03"):
        metadata_columns(pd.DataFrame({"well": ["B3", "B/3"], "x": [1, 2]}))


def test_join_hts_and_cellprofiler_tables_alike(platemap, wells_table):
    wells = wells_table({("D", "10"): 3, ("B", "3"): 10, ("E", "1"): 7, ("B", "4"): 1, ("C", "3"): 4})
    wells.index = [10, 20, 30, 40, 50]
    joined = join_platemap(wells, platemap)
    assert list(joined.columns) == [*wells.columns, "Metadata_treatment", "Metadata_role", "Metadata_dose"]
    pd.testing.assert_frame_equal(joined[wells.columns], wells)  # rows, order, index and columns kept
    assert joined["Metadata_treatment"].tolist()[:2] == ["cmpd", "DMSO"]
    assert joined["Metadata_role"].tolist()[:2] == ["sample", "negative"]
    assert np.isnan(joined.loc[30, "Metadata_dose"]) and pd.isna(joined.loc[30, "Metadata_treatment"])
    assert joined.loc[50, "Metadata_treatment"] == ""  # in the map, left empty: "" (not NaN)
    assert np.isnan(joined.loc[50, "Metadata_dose"])
    assert joined["Metadata_dose"].dtype == np.float64

    cp = pd.DataFrame({"ImageNumber": [1, 2, 3, 4, 5], "Metadata_Plate": "P1",
                       "Metadata_Well": ["D10", "B03", "E01", "B04", "C03"], "Count_Nuclei": [3, 10, 7, 1, 4]},
                      index=wells.index)
    cp_joined = join_platemap(cp, platemap, well_column="Metadata_Well")
    assert cp_joined["Metadata_Well"].tolist() == cp["Metadata_Well"].tolist()
    meta = [c for c in joined.columns if c.startswith("Metadata_")]
    pd.testing.assert_frame_equal(cp_joined[meta], joined[meta])


def test_join_nuclei_table_repeats_and_empty_wells(platemap):
    nuclei = pd.DataFrame({"label": [1, 2, 3, 4], "well": ["B/4", "", "B/4", "b/3"]}, index=[7, 7, 5, 5])
    joined = join_platemap(nuclei, platemap)
    assert joined["Metadata_role"].tolist()[::2] == ["positive", "positive"]
    assert pd.isna(joined["Metadata_role"].iloc[1]) and joined["Metadata_role"].iloc[3] == "negative"
    pd.testing.assert_frame_equal(joined[nuclei.columns], nuclei)  # a repeated index is kept as it is
    assert join_platemap(nuclei.iloc[:0], platemap).columns.tolist()[-1] == "Metadata_dose"


def test_join_none_and_errors(platemap, wells_table):
    wells = wells_table({("B", "3"): 10})
    assert join_platemap(wells, None) is wells
    with pytest.raises(HtsError, match="no well column 'Metadata_Well'"):
        join_platemap(wells, platemap, well_column="Metadata_Well")
    with pytest.raises(HtsError, match="'not a well'"):
        join_platemap(wells.assign(well="not a well"), platemap)
    with pytest.raises(HtsError, match="joined twice"):
        join_platemap(join_platemap(wells, platemap), platemap)


def test_coverage_warnings(platemap):
    assert coverage_warnings(platemap, ["B/3", "B/4", "C/3", "D/10", "B/3", ""]) == []
    warnings = coverage_warnings(platemap, ["B/3", "B03", "C/3", "E/5"])
    assert len(warnings) == 2 and all(platemap.attrs["path"] in w for w in warnings)
    assert "2 of its 4 wells are not on the plate: B04, D10" in warnings[0]
    assert "1 of the plate's 3 wells are not in it" in warnings[1] and warnings[1].endswith(": E05")
    no_path = platemap.copy()
    no_path.attrs = {}
    assert coverage_warnings(no_path, ["B/3", "B/4", "C/3"])[0].startswith("platemap: 1 of its 4")


def test_coverage_warnings_truncates(tmp_path):
    pm = read_platemap(write(tmp_path, "well\n" + "".join(f"A{c}\n" for c in range(1, 25))))
    plate = [f"{r}/{c}" for r in "AB" for c in range(1, 25)]  # a 24-column plate with rows A, B
    assert coverage_warnings(pm, plate[:24]) == []
    (missing,) = coverage_warnings(pm, plate[9::-1])  # reversed: still listed in plate order
    assert missing.endswith("14 of its 24 wells are not on the plate: "
                            "A11, A12, A13, A14, A15, A16, A17, A18, A19, A20 and 4 more")
    (unmapped,) = coverage_warnings(pm, plate)
    assert unmapped.endswith(": B01, B02, B03, B04, B05, B06, B07, B08, B09, B10 and 14 more")  # plate order
    assert "\n" not in unmapped
    big = read_platemap(write(tmp_path, "well\nAA1\nB2\nZ3\nB1\n"))  # 1536-well rows: B < Z < AA
    assert coverage_warnings(big, [])[0].endswith(": B01, B02, Z03, AA01")


def test_controls(platemap):
    assert controls(platemap) == {"negative": ["B03"], "positive": ["B04"], "sample": ["C03", "D10"]}
    hand_made = pd.DataFrame({"well": ["a1", "A/2", "A3", "A4"], "role": [" Negative", None, "", "blank"]})
    assert controls(hand_made) == {"negative": ["A01"], "positive": [], "sample": ["A02", "A03"], "blank": ["A04"]}
