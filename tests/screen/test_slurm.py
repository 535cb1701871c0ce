"""``hts run --cluster slurm`` against a real single-node SLURM (cluster/dev/slurm-up.sh, fake GPUs).

Each run's labels and counts are compared with a LocalCluster run of the same plate. The
first tests check ``--lifetime``'s worker retirement (:class:`hts.screen.slurm.RetireAfter`)
and the driver's loop on an in-process LocalCluster, without SLURM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from slurm import (
    SHOW_MY_GRES,
    gres_gpu_indices,
    queued_jobs,
    sbatch,
    scancel_leftovers,
    wait_job,
)

from hts.io.results import results_dir
from hts.screen.cluster import windowed
from hts.screen.slurm import RetireAfter, register_worker_plugin
from hts.synthetic.plate import PlateSpec, write_plate

REPO = Path(__file__).resolve().parents[2]
FIELDS = [f"{r}/{c}/{f}" for r in "AB" for c in "12" for f in "01"]
MIN_LIFETIME_S = 8.0  # of a worker in the recycling test; see there


def write_profile(path: Path, extra: str = "") -> Path:
    """A dask-jobqueue profile for the test cluster (the shape of cluster/jobqueue.yaml); logs beside it.

    Each worker job's log (``logs/hts-worker-JOBID.out``) starts with the GPUs SLURM granted it.
    ``extra``: more YAML (other Dask settings, which ``--jobqueue`` also reads).
    """
    prologue = [f"source {Path(sys.executable).parent}/activate", SHOW_MY_GRES]
    path.write_text(extra + f"""jobqueue:
  slurm:
    name: hts-worker
    queue: gpu
    walltime: "00:10:00"
    cores: 1
    memory: "2GB"
    interface: lo
    death-timeout: 20
    log-directory: "{path.parent / "logs"}"
    job-script-prologue: {json.dumps(prologue)}
""")
    return path


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    return write_profile(tmp_path_factory.mktemp("jobqueue") / "jobqueue.yaml")


def worker_log(profile: Path, job: str) -> str:
    """The standard output of worker job ``job`` (its prologue's; the Dask worker logs to ``.err``)."""
    return (profile.parent / "logs" / f"hts-worker-{job}.out").read_text(errors="replace")


def _work(path: Path, name: str, seconds: float) -> str:
    with path.open("a") as f:
        f.write(f"start {name}\n")
    time.sleep(seconds)
    with path.open("a") as f:
        f.write(f"end {name}\n")
    return name


def _one_worker_cluster():
    from distributed import LocalCluster

    return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0")


def test_a_retiring_worker_finishes_its_task_and_leaves_without_counting_as_a_death(tmp_path):
    from distributed import Client

    trace = tmp_path / "trace"
    with _one_worker_cluster() as cluster, Client(cluster) as client:
        register_worker_plugin(cluster, RetireAfter(lifetime=1.0, stagger=0.0, drain=10.0))
        first = next(iter(cluster.scheduler.workers))
        running = client.submit(_work, trace, "running", 2.5, key="running", pure=False)  # still running at 1 s
        queued = client.submit(_work, trace, "queued", 0.1, key="queued", pure=False)  # waits on the same worker
        assert running.result(timeout=30) == "running"  # collected from the retiring worker
        running.release()
        deadline = time.monotonic() + 30
        while cluster.scheduler.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cluster.scheduler.workers, "the worker did not retire"
        removed = [m for _, m in client.get_events(first) if m.get("action") == "remove-worker"]
        assert [m["expected"] for m in removed] == [True]  # a retirement, not a death
        assert cluster.scheduler.tasks["queued"].suspicious == 0
        cluster.scale(2)  # a replacement (adaptive scaling's job on SLURM) runs the queued task
        assert queued.result(timeout=30) == "queued"
    assert trace.read_text().split("\n") == ["start running", "end running", "start queued", "end queued", ""]


def test_a_task_longer_than_the_drain_fails_its_field_and_the_driver_loop_ends(tmp_path):
    """No recomputing for ever: a task that outlasts lifetime + drain counts as an attempt (KilledWorker)."""
    from distributed import Client, KilledWorker

    seen = []
    with (dask.config.set({"distributed.scheduler.allowed-failures": 0}), _one_worker_cluster() as cluster,
          Client(cluster) as client):
        register_worker_plugin(cluster, RetireAfter(lifetime=0.5, stagger=0.0, drain=0.5))

        def submit(name: str):
            return client.submit(_work, tmp_path / "trace", name, 3.0, key=name, pure=False)

        for item, fut in windowed(client, ["long"], submit, 2):
            seen.append((item, fut.status, type(fut.exception())))
    assert seen == [("long", "error", KilledWorker)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The plate with its LocalCluster result, the clean plate, and that run's wall time (s) on this machine now."""
    path = tmp_path_factory.mktemp("ref") / "plate.zarr"
    write_plate(path, PlateSpec(rows=2, columns=2, fields=2, size=512))
    clean = path.parent / "clean.zarr"
    shutil.copytree(path, clean)
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "hts", "run", path, "--channel", "DAPI", "--diameter", "20"],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return path, clean, time.monotonic() - t0


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


@pytest.mark.slurm
@pytest.mark.slow
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
    # every inference ran in a worker job that SLURM granted exactly one GPU, and saw that GPU, whichever of
    # the node's two a concurrent worker job left it (fake GPUs: CUDA_VISIBLE_DEVICES is the granted index)
    for m in markers(plate):
        assert m["infer_worker"].startswith("SLURMCluster") and m["slurm_job"] != job, m
        granted = gres_gpu_indices(worker_log(profile, m["slurm_job"]))
        assert len(granted) == 1 and granted[0] in ("0", "1"), (m, granted)
        assert m["cuda_visible_devices"] == granted[0], (m, granted)
    assert not queued_jobs(slurm, "hts-worker")  # no orphaned worker jobs


@pytest.mark.slurm
@pytest.mark.slow
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


@pytest.mark.slurm
@pytest.mark.slow
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
                           check=False, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"({len(done_before)} from earlier runs)" in again.stdout
    after = {m["key"]: m for m in markers(plate)}
    assert all(after[k] == v for k, v in done_before.items())  # finished fields were not recomputed
    assert_same_as_reference(plate, reference)


@pytest.mark.slurm
@pytest.mark.slow
def test_worker_lifetime_recycling_loses_nothing(slurm, reference, tmp_path):
    # its own logs; a retired worker's job is replaced 2 s after it left instead of 15 s
    profile = write_profile(tmp_path / "jobqueue.yaml", "distributed: {deploy: {lost-worker-timeout: 2s}}\n")
    plate = fresh_plate(reference, tmp_path)
    # Workers live a third of the time the plate took on a LocalCluster here (2 threads): two 1-core worker
    # jobs need longer, so several generations share the plate, each long enough for a few tasks on a slow
    # or loaded machine (on which starting a worker and loading the model alone can take 10 s).
    lifetime = max(reference[2] / 3, MIN_LIFETIME_S)
    # two jobs, so that a retiring worker usually has another to hand its results to (the case without
    # is test_a_retiring_worker_finishes_its_task_and_leaves_without_counting_as_a_death)
    run = subprocess.run([sys.executable, "-m", "hts", *slurm_args(plate, profile, "--min-jobs", "2", "--max-jobs", "2",
                                                                     "--lifetime", f"{lifetime:.0f}s",
                                                                     "--lifetime-stagger", f"{lifetime / 4:.0f}s")],
                         env=hts_env(slurm), check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "8/8 fields done" in run.stdout
    assert "workers died" not in run.stderr  # no retirement was taken for a worker death (KilledWorker's count)
    jobs = {m["slurm_job"] for m in markers(plate)}
    assert len(jobs) >= 2, f"expected fields from several generations of worker jobs, got {jobs}"
    # workers retired while they had work: at least one finished a running task first
    retirements = re.findall(r"reached its lifetime .*finishing (\d+) running",
                             "".join(log.read_text() for log in (tmp_path / "logs").glob("*.err")))
    assert any(int(n) for n in retirements), retirements
    assert_same_as_reference(plate, reference)
    assert not queued_jobs(slurm, "hts-worker")


@pytest.mark.slurm
@pytest.mark.slow
def test_tls_between_scheduler_workers_and_client(slurm, reference, profile, tmp_path):
    plate = fresh_plate(reference, tmp_path)
    run = subprocess.run([sys.executable, "-m", "hts", *slurm_args(plate, profile, "--tls", "--max-jobs", "1")],
                         env=hts_env(slurm), check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "scheduler: tls://127.0.0.1:" in run.stdout
    assert_same_as_reference(plate, reference)


@pytest.mark.slurm
@pytest.mark.slow
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
