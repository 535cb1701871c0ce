"""hts.analysis.qc on hand-made tables: the robust z-score, outlier wells, the edge effect and the field flags.

The QC flags on a real run of a damaged plate are checked with the report
(``test_qc_flags_fire_on_the_damaged_fields_only`` in test_report.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hts.analysis.qc import edge_effect, flag_fields, flag_wells, robust_z


def test_robust_z_is_nan_safe():
    assert robust_z(pd.Series([5.0, 5, 5, 5])).tolist() == [0, 0, 0, 0]
    z = robust_z(pd.Series([10.0, 10, 10, 10, 50]))  # MAD 0: mean absolute deviation instead
    assert np.isfinite(z).all() and z.iloc[4] > 3 and (z.iloc[:4] == 0).all()
    z = robust_z(pd.Series([1.0, np.nan, 3, 2]))
    assert np.isnan(z.iloc[1]) and z.iloc[3] == 0 and z.iloc[2] == pytest.approx(1 / 1.4826)
    assert robust_z(pd.Series([], dtype=float)).empty


def test_outlier_well_and_edge_effect(wells_table):
    rows, cols = list("ABCD"), [str(i) for i in range(1, 7)]
    inner = {(r, c) for r in "BC" for c in cols[1:-1]}
    wells = wells_table({(r, c): (100.0 + i % 3 if (r, c) in inner else 60.0 + i % 3)
                          for i, (r, c) in enumerate((r, c) for r in rows for c in cols)})
    eff = edge_effect(wells, rows, cols)
    assert (eff.outer_wells, eff.inner_wells) == (16, 8) and eff.flagged and eff.ratio == pytest.approx(0.6, abs=0.02)
    assert not edge_effect(wells_table({k: 50.0 for k in inner | {("A", "1")}}), rows, cols).flagged
    assert edge_effect(wells_table({("A", "1"): 5.0, ("B", "2"): 5.0}), ["A", "B"], ["1", "2"]).ratio is None
    flat = wells_table({(r, c): 100.0 + (i % 5) for i, (r, c) in enumerate((r, c) for r in rows for c in cols)})
    flat.loc[5, ["n_nuclei", "mean_per_field"]] = 400.0
    flagged = flag_wells(flat)
    assert flagged["flags"].tolist() == ["outlier" if i == 5 else "" for i in range(24)]


def test_field_flags_thresholds():
    fields = pd.DataFrame({"well": ["A/1"] * 6, "n_nuclei": [100, 90, 110, 9, 2, 95],
                           "saturated_fraction": [0, 0.02, 0, 0, 0, 0.01], "focus": [1.0, 1.1, 0.4, 1.0, 0.0, np.nan]})
    assert flag_fields(fields)["flags"].tolist() == ["", "saturated", "out_of_focus", "empty", "empty", ""]
