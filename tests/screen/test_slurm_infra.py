"""The test cluster of cluster/dev/slurm-up.sh behaves like a small GPU node.

Skipped (with the reason) where SLURM cannot be started: not root, or no apt-get.
"""

from __future__ import annotations

import subprocess

import pytest

# The fixture lives in tests/slurm.py (tests/ is on sys.path under pytest's default import
# mode) as `slurm_session`, registered under the name `slurm`; importing it here makes this
# file work whether or not conftest registers it too.
from slurm import sbatch, scancel_leftovers, slurm_session, wait_job  # noqa: F401

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
    job_id, out = jobs(f"--gres=gpu:{gpus}", "--wrap", 'echo "CVD=$CUDA_VISIBLE_DEVICES"')
    assert wait_job(slurm, job_id, JOB_TIMEOUT) == "COMPLETED"
    assert out.read_text().split() == [f"CVD={visible}"]


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
