"""``hts run --cluster slurm`` against a real single-node SLURM (cluster/dev/slurm-up.sh, fake GPUs).

Each run's labels and counts are compared with a LocalCluster run of the same plate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from slurm import queued_jobs, sbatch, scancel_leftovers, wait_job

from hts.io.results import results_dir
from hts.synthetic.plate import PlateSpec, write_plate

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
FIELDS = [f"{r}/{c}/{f}" for r in "AB" for c in "12" for f in "01"]


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    """A dask-jobqueue profile for the test cluster (the shape of cluster/jobqueue.yaml)."""
    path = tmp_path_factory.mktemp("jobqueue") / "jobqueue.yaml"
    logs = path.parent / "logs"
    path.write_text(f"""jobqueue:
  slurm:
    name: hts-worker
    queue: gpu
    walltime: "00:10:00"
    cores: 1
    memory: "2GB"
    interface: lo
    death-timeout: 20
    log-directory: "{logs}"
    job-script-prologue: ["source {Path(sys.executable).parent}/activate"]
""")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The plate and its LocalCluster result."""
    path = tmp_path_factory.mktemp("ref") / "plate.zarr"
    write_plate(path, PlateSpec(rows=2, columns=2, fields=2, size=512))
    clean = path.parent / "clean.zarr"
    shutil.copytree(path, clean)
    run = subprocess.run([sys.executable, "-m", "hts", "run", path, "--channel", "DAPI", "--diameter", "20"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return path, clean


def fresh_plate(reference, tmp_path) -> Path:
    dst = tmp_path / "plate.zarr"
    shutil.copytree(reference[1], dst)
    return dst


def slurm_args(plate, profile, *extra) -> list[str]:
    return ["run", str(plate), "--channel", "DAPI", "--diameter", "20", "--cluster", "slurm", "--jobqueue",
            str(profile), "--dashboard", "127.0.0.1:0", *extra]


def assert_same_as_reference(plate: Path, reference) -> None:
    ref = reference[0]
    for p in FIELDS:
        a = np.asarray(zarr.open_group(str(ref), mode="r")[f"{p}/labels/nuclei/0"])
        b = np.asarray(zarr.open_group(str(plate), mode="r")[f"{p}/labels/nuclei/0"])
        np.testing.assert_array_equal(a, b, err_msg=p)
    assert (results_dir(ref) / "wells.csv").read_text() == (results_dir(plate) / "wells.csv").read_text()


def markers(plate: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results_dir(plate) / "fields").glob("*.json"))]


def hts_env(slurm) -> dict:
    return {**os.environ, **slurm}


def test_sbatch_screen_plate_matches_local_and_gpu_requests_are_honoured(slurm, reference, profile, tmp_path):
    plate = fresh_plate(reference, tmp_path)
    log = tmp_path / "driver.out"
    job = sbatch(slurm, f"--chdir={tmp_path}", f"--output={log}", "--partition=debug",
                 f"--export=ALL,PLATE={plate},CHANNEL=DAPI,HTS_VENV={Path(sys.executable).parent.parent},"
                 f"JOBQUEUE={profile},DASHBOARD=127.0.0.1:0,HTS_ARGS=--diameter 20 --max-jobs 2",
                 str(REPO / "cluster" / "screen-plate.sbatch"))
    state = wait_job(slurm, job, timeout=300)
    text = log.read_text()
    assert state == "COMPLETED", text[-3000:]
    assert "--gres=gpu:1" in text and "8/8 fields done" in text and "scheduler: tcp://127.0.0.1:" in text
    assert_same_as_reference(plate, reference)
    # every inference ran in a worker job that SLURM granted one GPU (fake GPUs: CUDA_VISIBLE_DEVICES is that GPU's
    # index: "0", or "1" when a second worker job runs while the first holds GPU 0)
    assert all(m["cuda_visible_devices"] in ("0", "1") and m["infer_worker"].startswith("SLURMCluster")
               for m in markers(plate))
    assert not queued_jobs(slurm, "hts-worker")  # no orphaned worker jobs


def test_scancel_of_a_worker_job_mid_run_changes_nothing(slurm, reference, profile, tmp_path):
    plate = fresh_plate(reference, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "hts", *slurm_args(plate, profile, "--min-jobs", "1",
                                                                       "--max-jobs", "2")],
                            env=hts_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = results_dir(plate) / "fields"
    deadline = time.time() + 120
    while time.time() < deadline and not (folder.exists() and list(folder.glob("*.json"))):
        time.sleep(0.1)
    workers = queued_jobs(slurm, "hts-worker")
    assert workers, "no worker job to cancel"
    subprocess.run(["scancel", workers[0]], env=hts_env(slurm), check=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "8/8 fields done" in out
    assert_same_as_reference(plate, reference)
    assert not queued_jobs(slurm, "hts-worker")


def test_driver_killed_and_restarted_resumes_without_recomputing(slurm, reference, profile, tmp_path):
    plate = fresh_plate(reference, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "hts", *slurm_args(plate, profile, "--max-jobs", "1")],
                            env=hts_env(slurm), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = results_dir(plate) / "fields"
    deadline = time.time() + 120
    while time.time() < deadline and not (folder.exists() and len(list(folder.glob("*.json"))) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    scancel_leftovers(slurm, "hts-worker")  # its worker jobs would otherwise wait out their death-timeout
    done_before = {m["key"]: m for m in markers(plate)}
    assert 2 <= len(done_before) < 8
    again = subprocess.run([sys.executable, "-m", "hts", *slurm_args(plate, profile)], env=hts_env(slurm),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"({len(done_before)} from earlier runs)" in again.stdout
    after = {m["key"]: m for m in markers(plate)}
    assert all(after[k] == v for k, v in done_before.items())  # finished fields were not recomputed
    assert_same_as_reference(plate, reference)


def test_worker_lifetime_recycling_loses_nothing(slurm, reference, profile, tmp_path):
    plate = fresh_plate(reference, tmp_path)
    run = subprocess.run([sys.executable, "-m", "hts", *slurm_args(plate, profile, "--min-jobs", "1", "--max-jobs", "2",
                                                                     "--lifetime", "8s", "--lifetime-stagger", "2s")],
                         env=hts_env(slurm), capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = {m["slurm_job"] for m in markers(plate)}
    assert len(jobs) >= 2, f"expected fields from several generations of worker jobs, got {jobs}"
    assert_same_as_reference(plate, reference)
    assert not queued_jobs(slurm, "hts-worker")


def test_tls_between_scheduler_workers_and_client(slurm, reference, profile, tmp_path):
    plate = fresh_plate(reference, tmp_path)
    run = subprocess.run([sys.executable, "-m", "hts", *slurm_args(plate, profile, "--tls", "--max-jobs", "1")],
                         env=hts_env(slurm), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "scheduler: tls://127.0.0.1:" in run.stdout
    assert_same_as_reference(plate, reference)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_driver_cancels_every_worker_job(slurm, reference, profile, tmp_path, sig, code):
    plate = fresh_plate(reference, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "hts", *slurm_args(plate, profile, "--max-jobs", "2")],
                            env=hts_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not queued_jobs(slurm, "hts-worker"):
        time.sleep(0.1)
    assert queued_jobs(slurm, "hts-worker"), "no worker job was submitted"
    proc.send_signal(sig)  # Ctrl-C, or scancel of the driver's own job
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    deadline = time.time() + 30
    while time.time() < deadline and queued_jobs(slurm, "hts-worker"):
        time.sleep(0.2)
    assert not queued_jobs(slurm, "hts-worker"), "worker jobs outlived the driver"
