"""Fixtures shared by the analysis tests: hand-made well tables, Debian's chromium for the report pages."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

import pandas as pd
import pytest


@pytest.fixture
def wells_table():
    """Build a wells table (one field a well) from ``{(row, column): n_nuclei}``."""

    def make(values: dict[tuple[str, str], float]) -> pd.DataFrame:
        return pd.DataFrame([{"well": f"{r}/{c}", "row": r, "column": c, "fields": 1, "n_nuclei": v,
                              "mean_per_field": v} for (r, c), v in values.items()])

    return make


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (as root); else the test is skipped."""
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if exe:
        return exe
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Debian's chromium is not installed and cannot be (needs root and apt-get): "
                    "apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # the machine-wide lock of every apt-get of the tests (cluster/dev/slurm-up.sh takes it too): two test
    # processes (pytest -n) must not run apt-get at once, dpkg refuses the second
    os.makedirs("/run/lock", exist_ok=True)
    with open(os.environ.get("HTS_APT_LOCK", "/run/lock/hts-apt.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shutil.which("chromium"):
            return shutil.which("chromium")
        wait = ["-o", "DPkg::Lock::Timeout=600"]  # and any other apt user is waited for
        for cmd in (["apt-get", *wait, "update"],
                    ["apt-get", *wait, "install", "-y", "--no-install-recommends", "chromium"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
            if proc.returncode != 0:
                pytest.skip(f"cannot install chromium: {' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}")
    return shutil.which("chromium") or "/usr/bin/chromium"
