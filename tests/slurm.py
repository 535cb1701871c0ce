"""A real single-node SLURM for tests: start it, hand out its environment, stop it.

The cluster is the one of ``cluster/dev/slurm-up.sh`` (8 advertised CPUs, 2 fake GPUs,
partitions ``debug`` (default) and ``gpu``; no slurmdbd, so no ``sacct``: use
:func:`wait_job`). It needs root and, when Slurm is not installed yet, ``apt-get``;
otherwise the tests that use the :func:`slurm` fixture are skipped with the reason.
``HTS_SLURM_TESTS=0`` skips them on purpose (e.g. a root laptop without network).

Each test session gets a cluster of its own: a fresh state directory under ``/var/tmp``
(``hts-slurm-XXXXXXXX``), free TCP ports for slurmctld and slurmd and its own ClusterName,
so two sessions on one machine (two ``make test`` at once) never meet; they share only
munged, which is machine-wide. The cluster is stopped at the end of the session, failed or
not, and by slurm-up.sh's watcher if the session is killed. ``HTS_SLURM_DIR`` names a state
directory to use instead (e.g. a cluster started by hand with ``slurm-up.sh``): a cluster
already up there is used and left running.

Register the fixture in ``tests/conftest.py`` with ``pytest_plugins = ["slurm"]``
(``tests/`` is on ``sys.path`` under pytest's default ``prepend`` import mode); a test module
can also pull it in by importing it: ``from slurm import slurm_session  # noqa: F401``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "cluster" / "dev" / "slurm-up.sh"
DOWN = REPO / "cluster" / "dev" / "slurm-down.sh"
MARKER = ".hts-slurm"  # slurm-up.sh's mark on its state directory
PRIVATE_BASE = Path("/var/tmp")  # where each session's state directory is made
PORTS = (20000, 32000)  # test clusters' ports: below Linux's ephemeral range (32768-60999)
START_ATTEMPTS = 3  # slurm-up.sh tries, each with other ports, when a port was taken meanwhile

# Job states after which a job never runs again (scontrol's JobState=...).
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE",
})


class SlurmUnavailable(Exception):
    """SLURM cannot be started here; the message says why (used as the skip reason)."""


def explicit_dir() -> Path | None:
    """The state directory named by ``HTS_SLURM_DIR``, or None (each session makes its own)."""
    value = os.environ.get("HTS_SLURM_DIR")
    return Path(value) if value else None


def private_dir() -> Path:
    """A new, empty state directory for one session's cluster (``/var/tmp/hts-slurm-XXXXXXXX``)."""
    return Path(tempfile.mkdtemp(prefix="hts-slurm-", dir=PRIVATE_BASE))


def slurm_env(directory: Path) -> dict[str, str]:
    """The environment variables that point Slurm commands at the cluster in ``directory``."""
    return {"SLURM_CONF": str(directory / "slurm.conf")}


def free_ports(n: int = 2) -> list[int]:
    """``n`` distinct TCP ports that nothing listens on now, drawn at random from :data:`PORTS`.

    slurm-up.sh checks them again under its machine-wide lock before starting the daemons.
    """
    ports: list[int] = []
    while len(ports) < n:
        port = random.randrange(*PORTS)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def cluster_settings(owner: int | None = None) -> dict[str, str]:
    """slurm-up.sh's environment for a cluster of its own: ports, ClusterName and owner.

    Parameters
    ----------
    owner : int or None
        A PID: the cluster stops itself once that process has ended (None: it does not).
    """
    ctld, slurmd = free_ports(2)
    env = {"HTS_SLURM_CTLD_PORT": str(ctld), "HTS_SLURM_SLURMD_PORT": str(slurmd),
           "HTS_SLURM_CLUSTER": f"hts-{uuid.uuid4().hex[:8]}"}
    if owner is not None:
        env["HTS_SLURM_OWNER_PID"] = str(owner)
    return env


def cluster_config(env: dict[str, str]) -> dict[str, str]:
    """``scontrol show config`` of the cluster as a dict (e.g. ``ClusterName``, ``SlurmctldPort``)."""
    proc = _run(["scontrol", "show", "config"], env, timeout=30)
    pairs = (line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


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


def is_up(directory: Path) -> bool:
    """Is the test cluster in ``directory`` up and answering?"""
    if not (directory / MARKER).exists() or not shutil.which("scontrol"):
        return False
    try:
        return _run(["scontrol", "ping"], slurm_env(directory), timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _last_log_lines(directory: Path, n: int = 15) -> str:
    return "".join(
        f"\n--- {log.name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-n:])
        for log in sorted((directory / "log").glob("*.log"))
    )


def ensure_slurm(directory: Path, owner: int | None = None) -> dict[str, str]:
    """Start a test cluster of its own in ``directory`` unless one is up there; return its environment.

    Each start draws new free ports and a new ClusterName (:func:`cluster_settings`); a start
    that lost a port to another process meanwhile is retried with others.

    Parameters
    ----------
    directory : Path
        The state directory: absent, empty, or slurm-up.sh's.
    owner : int or None
        A PID: the cluster stops itself once that process has ended (None: it does not).

    Returns
    -------
    dict
        ``{"SLURM_CONF": ...}``.

    Raises
    ------
    SlurmUnavailable
        SLURM cannot be started on this machine (the reason is the message).
    RuntimeError
        It could be, but ``slurm-up.sh`` failed.
    """
    reason = unavailable_reason()
    if reason:
        raise SlurmUnavailable(reason)
    for attempt in range(1, START_ATTEMPTS + 1):
        # Installing the packages can take a while on a slow mirror.
        proc = subprocess.run(["bash", str(UP), str(directory)], check=False, capture_output=True, text=True,
                              timeout=900, env={**os.environ, **cluster_settings(owner)})
        if proc.returncode == 0:
            return slurm_env(directory)
        logs = _last_log_lines(directory)  # the daemons' last words, before slurm-down removes them
        if (directory / MARKER).exists():
            subprocess.run(["bash", str(DOWN), str(directory)], check=False, capture_output=True, timeout=300)
        taken = re.search(r"in use|port \d+ taken|Address already in use", proc.stderr + logs)
        if not taken or attempt == START_ATTEMPTS:
            raise RuntimeError(f"{UP.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}{logs}")
    raise AssertionError("unreachable")


def stop_slurm(directory: Path) -> None:
    """Cancel the cluster's jobs and stop it (only the daemons slurm-up.sh started for it)."""
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


def gres_gpu_indices(text: str) -> list[str]:
    """The GPU indices in ``scontrol -d show job`` output (``GRES=gpu:2(IDX:0-1)`` -> ``["0", "1"]``).

    SLURM lists them only while the job runs: run ``scontrol -d show job $SLURM_JOB_ID`` inside
    the job (e.g. in a job-script prologue) to keep them.
    """
    indices: list[str] = []
    for group in re.findall(r"\bGRES=gpu[^\s(]*\(IDX:([0-9,\-]+)\)", text):
        for part in group.split(","):
            lo, _, hi = part.partition("-")
            indices += [str(i) for i in range(int(lo), int(hi or lo) + 1)]
    return indices


SHOW_MY_GRES = 'scontrol -d show job "$SLURM_JOB_ID" | grep -o "GRES=gpu[^ ]*" || true'  # a job-script line


# The session fixture. Reference-counted so that being registered twice (conftest and a test
# module importing it) still starts and stops the cluster once.
_users = 0
_started_here = False
_directory: Path | None = None


def _open_session() -> dict[str, str]:
    """Start this session's cluster (or find the one of ``HTS_SLURM_DIR``); return its environment."""
    global _started_here, _directory
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    directory = explicit_dir()
    if directory is not None and is_up(directory):
        _started_here, _directory = False, directory
        return slurm_env(directory)
    directory = directory or private_dir()
    try:
        env = ensure_slurm(directory, owner=os.getpid())
    except BaseException:
        if directory.parent == PRIVATE_BASE and directory.exists() and not any(directory.iterdir()):
            directory.rmdir()
        raise
    _started_here, _directory = True, directory
    return env


@pytest.fixture(scope="session", name="slurm")
def slurm_session():
    """Fixture ``slurm``: the environment of this session's running test cluster ({"SLURM_CONF": ...}).

    Also set in os.environ for the session, so that libraries which call sbatch themselves
    (dask-jobqueue) find the cluster. The cluster is stopped when the session ends, also
    after failures; a cluster found up in ``HTS_SLURM_DIR`` is left running.
    """
    global _users, _started_here
    env = _open_session() if _users == 0 else slurm_env(_directory)
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
            stop_slurm(_directory)
