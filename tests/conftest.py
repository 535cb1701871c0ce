"""Shared fixtures: the real annotated data (skipped when ../shared is absent) and small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest_plugins = ["slurm"]  # tests/slurm.py: the session's real single-node SLURM (fixture ``slurm``)

# ../shared/data beside the checkout (see ../shared/data/README.md); not part of the project.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TRAIN_NPZ = SHARED_DATA / "dsb2018_fluo_train.npz"
VAL_NPZ = SHARED_DATA / "dsb2018_fluo_val.npz"


@pytest.fixture
def val_npz():
    if not VAL_NPZ.is_file():
        pytest.skip(f"real data absent: {VAL_NPZ} not found (../shared/data is not part of the project)")
    return VAL_NPZ


@pytest.fixture
def train_npz():
    if not TRAIN_NPZ.is_file():
        pytest.skip(f"real data absent: {TRAIN_NPZ} not found (../shared/data is not part of the project)")
    return TRAIN_NPZ


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

