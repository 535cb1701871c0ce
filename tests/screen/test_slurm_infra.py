"""The test cluster of cluster/dev/slurm-up.sh behaves like a small GPU node, and is the session's own.

Skipped (with the reason) where SLURM cannot be started: not root, or no apt-get.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

# The fixture lives in tests/slurm.py (tests/ is on sys.path under pytest's default import
# mode) as `slurm_session`, registered under the name `slurm`; importing it here makes this
# file work whether or not conftest registers it too.
from slurm import (  # noqa: F401
    SHOW_MY_GRES,
    cluster_config,
    ensure_slurm,
    gres_gpu_indices,
    is_up,
    private_dir,
    queued_jobs,
    sbatch,
    scancel_leftovers,
    slurm_session,
    stop_slurm,
    wait_job,
)

pytestmark = pytest.mark.slurm

JOB_TIMEOUT = 60  # seconds; a job on an idle test node starts in well under one


@pytest.fixture
def jobs(slurm, tmp_path):
    """Submit helper writing job output under tmp_path; cancels what a test leaves behind."""

    def submit(*args: str) -> tuple[str, object]:
        job_id = sbatch(slurm, f"--chdir={tmp_path}", f"--output={tmp_path}/%j.out", "--time=2", *args)
        return job_id, tmp_path / f"{job_id}.out"

    yield submit
    scancel_leftovers(slurm)


@pytest.mark.parametrize("gpus, visible", [(1, "0"), (2, "0,1")])
def test_gpu_jobs_see_their_devices(slurm, jobs, gpus, visible):
    job_id, out = jobs(f"--gres=gpu:{gpus}", "--wrap", f'echo "CVD=$CUDA_VISIBLE_DEVICES"; {SHOW_MY_GRES}')
    assert wait_job(slurm, job_id, JOB_TIMEOUT) == "COMPLETED"
    text = out.read_text()
    assert text.split()[0] == f"CVD={visible}"
    assert ",".join(gres_gpu_indices(text)) == visible  # the GPUs SLURM granted the job are those it sees


def test_more_gpus_than_the_node_has_are_rejected(slurm, jobs):
    with pytest.raises(subprocess.CalledProcessError) as err:
        jobs("--gres=gpu:3", "--wrap", "true")
    assert "configuration is not available" in err.value.stderr


def test_two_one_cpu_jobs_run_at_once(slurm, jobs, tmp_path):
    # Each job announces itself, then waits for the other: both complete only if they overlap.
    script = 'touch "ran.$1"; for i in $(seq 200); do [ -e "ran.$2" ] && exit 0; sleep 0.1; done; exit 1'
    a, _ = jobs("--cpus-per-task=1", "--wrap", f"bash -c '{script}' - a b")
    b, _ = jobs("--cpus-per-task=1", "--wrap", f"bash -c '{script}' - b a")
    assert wait_job(slurm, a, JOB_TIMEOUT) == "COMPLETED"
    assert wait_job(slurm, b, JOB_TIMEOUT) == "COMPLETED"


def _daemon_pids(directory: Path) -> list[int]:
    return [int(line.split()[1]) for line in (directory / "pids").read_text().splitlines()]


def _alive(pid: int) -> bool:
    """Is PID a live process (not gone, not a zombie left for a PID 1 that does not reap)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_second_cluster_on_the_machine_is_isolated_and_stops_with_its_owner(slurm, tmp_path):
    """What two concurrent sessions rely on: own state, ports and name; stopping one leaves the other."""
    owner = subprocess.Popen(["sleep", "300"])  # stands for a second pytest session
    other_dir = private_dir()
    try:
        other = ensure_slurm(other_dir, owner=owner.pid)
        mine, theirs = cluster_config(slurm), cluster_config(other)
        for key in ("ClusterName", "SlurmctldPort", "SlurmdPort", "StateSaveLocation", "SlurmdSpoolDir"):
            assert mine[key] != theirs[key], key
        # a job of the other cluster is invisible here, and both clusters run jobs at once
        held = sbatch(other, f"--chdir={tmp_path}", "--output=/dev/null", "--job-name=iso-probe", "--wrap", "sleep 60")
        assert not queued_jobs(slurm, "iso-probe") and queued_jobs(other, "iso-probe") == [held]
        here = sbatch(slurm, f"--chdir={tmp_path}", "--output=/dev/null", "--wrap", "true")
        assert wait_job(slurm, here, JOB_TIMEOUT) == "COMPLETED"
        # its owner ends (as a killed session would): it stops by itself, jobs and daemons included
        daemons = _daemon_pids(other_dir)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert _wait_until(lambda: not other_dir.exists(), 60), "the cluster outlived its owner"
        assert not any(_alive(pid) for pid in daemons)
        # this session's cluster is untouched: it answers and runs jobs (munged still up)
        assert is_up(Path(slurm["SLURM_CONF"]).parent)
        again = sbatch(slurm, f"--chdir={tmp_path}", "--output=/dev/null", "--wrap", "true")
        assert wait_job(slurm, again, JOB_TIMEOUT) == "COMPLETED"
    finally:
        owner.kill()
        owner.wait()
        if other_dir.exists():
            stop_slurm(other_dir)
