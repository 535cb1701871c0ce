"""A real single-node SLURM for tests: start it, hand out its environment, stop it.

The cluster is the one of ``cluster/dev/slurm-up.sh`` (8 advertised CPUs, 2 fake GPUs,
partitions ``debug`` (default) and ``gpu``; no slurmdbd, so no ``sacct``: use
:func:`wait_job`). It needs root and, when Slurm is not installed yet, ``apt-get``;
otherwise the tests that use the :func:`slurm` fixture are skipped with the reason.
``HTS_SLURM_TESTS=0`` skips them on purpose (e.g. a root laptop without network);
``HTS_SLURM_DIR`` moves the state directory (default ``/var/tmp/hts-slurm``).

Register the fixture in ``tests/conftest.py`` with ``pytest_plugins = ["slurm"]``
(``tests/`` is on ``sys.path`` under pytest's default ``prepend`` import mode); a test module
can also pull it in by importing it: ``from slurm import slurm_session  # noqa: F401``.
The session fixture starts the cluster once and stops it at the end of the session, but
only if it started it: a cluster that was already up is left running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "cluster" / "dev" / "slurm-up.sh"
DOWN = REPO / "cluster" / "dev" / "slurm-down.sh"
MARKER = ".hts-slurm"  # slurm-up.sh's mark on its state directory

# Job states after which a job never runs again (scontrol's JobState=...).
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE",
})


class SlurmUnavailable(Exception):
    """SLURM cannot be started here; the message says why (used as the skip reason)."""


def state_dir() -> Path:
    return Path(os.environ.get("HTS_SLURM_DIR", "/var/tmp/hts-slurm"))


def slurm_env(directory: Path | None = None) -> dict[str, str]:
    """The environment variables that point Slurm commands at the test cluster."""
    return {"SLURM_CONF": str((directory or state_dir()) / "slurm.conf")}


def unavailable_reason() -> str | None:
    """Why SLURM cannot be started on this machine, or None when it can."""
    if os.environ.get("HTS_SLURM_TESTS", "1") == "0":
        return "SLURM tests disabled by HTS_SLURM_TESTS=0"
    if not sys.platform.startswith("linux"):
        return f"SLURM tests need Linux, root and apt-get: platform is {sys.platform}"
    if os.geteuid() != 0:
        return "SLURM tests need root and apt-get: not root"
    installed = all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        return "SLURM tests need root and apt-get: Slurm is not installed and apt-get is absent"
    if not UP.is_file():
        return f"SLURM tests need {UP.relative_to(REPO)}, which is missing"
    return None


def _run(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, env={**os.environ, **env}, capture_output=True, text=True, **kw)


def is_up(directory: Path | None = None) -> bool:
    """Is the test cluster in ``directory`` up and answering?"""
    directory = directory or state_dir()
    if not (directory / MARKER).exists() or not shutil.which("scontrol"):
        return False
    try:
        return _run(["scontrol", "ping"], slurm_env(directory), timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_slurm(directory: Path | None = None) -> dict[str, str]:
    """Start the test cluster unless it is up already; return its environment variables.

    Raises :class:`SlurmUnavailable` (reason in the message) when SLURM cannot be started
    on this machine, and RuntimeError when it could be but ``slurm-up.sh`` failed.
    """
    directory = directory or state_dir()
    reason = unavailable_reason()
    if reason:
        raise SlurmUnavailable(reason)
    # Installing the packages can take a while on a slow mirror.
    proc = subprocess.run(
        ["bash", str(UP), str(directory)], check=False, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        # Keep the daemons' last words, then stop whatever did start.
        logs = "".join(
            f"\n--- {log.name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            for log in sorted((directory / "log").glob("*.log"))
        )
        if (directory / MARKER).exists():
            subprocess.run(["bash", str(DOWN), str(directory)], check=False, capture_output=True, timeout=300)
        raise RuntimeError(f"{UP.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}{logs}")
    return slurm_env(directory)


def stop_slurm(directory: Path | None = None) -> None:
    """Cancel all jobs and stop the test cluster (only the daemons slurm-up.sh started)."""
    directory = directory or state_dir()
    proc = subprocess.run(
        ["bash", str(DOWN), str(directory)], check=False, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{DOWN.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def queued_jobs(env: dict[str, str], name: str | None = None) -> list[str]:
    """Ids of the jobs in the queue (any state before leaving it), optionally with job name ``name``."""
    cmd = ["squeue", "-h", "-o", "%A"] + (["--name", name] if name else [])
    proc = _run(cmd, env, timeout=30)
    return proc.stdout.split() if proc.returncode == 0 else []


def scancel_leftovers(env: dict[str, str], name: str | None = None, timeout: float = 30) -> list[str]:
    """Cancel every queued job (or those named ``name``) and wait until they leave the queue.

    For tests whose driver died without closing its cluster. Returns the cancelled ids.
    """
    ids = queued_jobs(env, name)
    if not ids:
        return []
    _run(["scancel", *ids], env, timeout=30)
    deadline = time.monotonic() + timeout
    while set(ids) & set(queued_jobs(env)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs {ids} still queued {timeout}s after scancel")
        time.sleep(0.2)
    return ids


def sbatch(env: dict[str, str], *args: str) -> str:
    """Submit a job (``sbatch --parsable ARGS``); return its id. Raises CalledProcessError."""
    proc = _run(["sbatch", "--parsable", *args], env, timeout=60)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout.strip().split(";")[0]


def job_info(env: dict[str, str], job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (empty once the job is purged, MinJobAge=300 s after it ends)."""
    proc = _run(["scontrol", "-o", "show", "job", job_id], env, timeout=30)
    if proc.returncode != 0:
        return {}
    return dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)


def wait_job(env: dict[str, str], job_id: str, timeout: float = 60) -> str:
    """Wait until the job has ended; return its final JobState (e.g. ``COMPLETED``)."""
    deadline = time.monotonic() + timeout
    while True:
        state = job_info(env, job_id).get("JobState", "")
        if state in FINAL_STATES:
            return state
        if not state:
            raise RuntimeError(f"job {job_id} is unknown to slurmctld")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout}s")
        time.sleep(0.2)


# The session fixture. Reference-counted so that being registered twice (conftest and a test
# module importing it) still starts and stops the cluster once.
_users = 0
_started_here = False


@pytest.fixture(scope="session", name="slurm")
def slurm_session():
    """Fixture ``slurm``: the environment of a running test cluster ({"SLURM_CONF": ...}).

    Also set in os.environ for the session, so that libraries which call sbatch themselves
    (dask-jobqueue) find the cluster."""
    global _users, _started_here
    if _users == 0:
        reason = unavailable_reason()
        if reason:
            pytest.skip(reason)
        if is_up():
            _started_here = False
            env = slurm_env()
        else:
            env = ensure_slurm()
            _started_here = True
    else:
        env = slurm_env()
    _users += 1
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        yield dict(env)
    finally:
        mp.undo()
        _users -= 1
        if _users == 0 and _started_here:
            _started_here = False
            stop_slurm()
