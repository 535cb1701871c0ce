"""Fixtures shared by the analysis tests (QC and report functions on hand-made tables)."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def wells_table():
    """Build a wells table (one field a well) from ``{(row, column): n_nuclei}``."""

    def make(values: dict[tuple[str, str], float]) -> pd.DataFrame:
        return pd.DataFrame([{"well": f"{r}/{c}", "row": r, "column": c, "fields": 1, "n_nuclei": v,
                              "mean_per_field": v} for (r, c), v in values.items()])

    return make
