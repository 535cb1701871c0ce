"""``hts run --cluster slurm``: Dask workers as SLURM jobs (dask-jobqueue), one worker process per GPU.

Settings come from a dask-jobqueue profile (``cluster/jobqueue.yaml`` is the
documented template: partition, account, walltime, memory, a job-script
prologue that activates the environment, network interface), given with
``--jobqueue FILE`` or found where Dask looks (``~/.config/dask/``,
``DASK_CONFIG``); command-line flags override it. Worker jobs ask for
``--gres=gpu:N`` and start N worker processes, each declaring ``GPU=1`` so
inference tasks run one per GPU; the number of jobs adapts between
``--min-jobs`` and ``--max-jobs``. ``--lifetime`` retires workers before the
walltime ends (staggered, so not all at once); adaptive scaling replaces
them, and fields are written as they finish, so nothing is lost. Every
worker job is cancelled when the run ends, fails or is interrupted
(Ctrl-C, or SIGTERM from ``scancel`` of the driver).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dask

from hts.errors import HtsError


@dataclass(frozen=True)
class SlurmOptions:
    """Flags of ``hts run --cluster slurm``; None keeps the profile's (or dask-jobqueue's) value.

    These defaults are the command line's (:mod:`hts.cli_args` reads them).
    """

    jobqueue: str | None = None  # a dask-jobqueue YAML profile
    partition: str | None = None
    account: str | None = None
    walltime: str | None = None  # e.g. "02:00:00"
    memory: str | None = None  # per job, e.g. "32GB"
    cores: int | None = None  # per job
    gpus: int = 1  # per job: --gres=gpu:N, N worker processes; 0: CPU-only workers
    min_jobs: int = 0
    max_jobs: int = 4
    interface: str | None = None  # e.g. "ib0"; the scheduler listens on it only
    lifetime: str | None = None  # e.g. "55m": retire workers before the walltime
    lifetime_stagger: str = "5m"
    tls: bool = False  # encrypt scheduler <-> workers <-> client with temporary certificates
    prologue: list[str] = field(default_factory=list)  # job-script lines, e.g. "source .venv/bin/activate"
    log_directory: str | None = None


def load_profile(path: str | os.PathLike) -> None:
    """Merge a dask-jobqueue YAML profile into Dask's configuration (returns None).

    Parameters
    ----------
    path : str or os.PathLike
        A YAML file with a top-level ``jobqueue:`` mapping (template: ``cluster/jobqueue.yaml``).

    Raises
    ------
    HtsError
        The file is missing, not valid YAML, or has no ``jobqueue:`` mapping.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise HtsError(f"--jobqueue {p}: no such file")
    try:
        config = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise HtsError(f"--jobqueue {p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict) or "jobqueue" not in config:
        raise HtsError(f"--jobqueue {p}: expected a top-level 'jobqueue:' mapping (see cluster/jobqueue.yaml)")
    dask.config.update(dask.config.config, config, priority="new")


def slurm_cluster(so: SlurmOptions, dashboard: str, shared_dir: str | os.PathLike, log=print):
    """A started, adaptive ``SLURMCluster``; the caller closes it (which cancels every worker job).

    Parameters
    ----------
    so : SlurmOptions
        The flags; unset ones take the profile's values (``so.jobqueue``, or
        the one Dask finds), else cores: 2 and memory: 8GB per worker process.
    dashboard : str
        The scheduler's dashboard address.
    shared_dir : str or os.PathLike
        A folder the worker jobs can read: the temporary TLS certificates go there.
    log : callable
        ``log(message)``: the ``#SBATCH`` lines of the worker job.

    Returns
    -------
    dask_jobqueue.SLURMCluster
        Scaling between ``so.min_jobs`` and ``so.max_jobs`` jobs, with
        ``torch_threads`` (a job's cores / its worker processes) and
        ``infer_resources`` (``{"GPU": 1}``, or None for CPU workers) set.

    Raises
    ------
    HtsError
        On a bad profile or job counts, or when dask-jobqueue cannot start the cluster.
    """
    from dask_jobqueue import SLURMCluster

    if threading.current_thread() is threading.main_thread():
        # importing dask_jobqueue installs `SIGINT -> sys.exit()` (exit status 0, no message):
        # give Ctrl-C back to Python so the run unwinds, reports and exits 130
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if so.jobqueue:
        load_profile(so.jobqueue)
    if so.gpus < 0 or so.min_jobs < 0 or so.max_jobs < max(so.min_jobs, 1):
        raise HtsError(f"slurm: need gpus >= 0 and 0 <= min-jobs <= max-jobs >= 1, got gpus={so.gpus}, "
                       f"min-jobs={so.min_jobs}, max-jobs={so.max_jobs}")

    def get(key: str):
        return dask.config.get(f"jobqueue.slurm.{key}", None)

    processes = max(so.gpus, 1)
    cores = so.cores or get("cores") or 2 * processes
    memory = so.memory or get("memory") or f"{8 * processes}GB"
    directives = list(get("job-extra-directives") or [])
    worker_args = list(get("worker-extra-args") or [])
    if so.gpus:
        directives.append(f"--gres=gpu:{so.gpus}")
        worker_args += ["--resources", "GPU=1"]
    if so.lifetime:
        worker_args += ["--lifetime", so.lifetime, "--lifetime-stagger", so.lifetime_stagger]
    kwargs = {"cores": cores, "processes": processes, "memory": memory, "job_extra_directives": directives,
              "worker_extra_args": worker_args, "python": get("python") or sys.executable,
              "job_script_prologue": list(get("job-script-prologue") or []) + list(so.prologue),
              "scheduler_options": {**(get("scheduler-options") or {}), "dashboard_address": dashboard}}
    for key, value in (("queue", so.partition), ("account", so.account), ("walltime", so.walltime),
                       ("interface", so.interface), ("log_directory", so.log_directory)):
        if value is not None:
            kwargs[key] = value
    if so.tls:
        from distributed.security import Security

        kwargs.update(security=Security.temporary(), protocol="tls://", shared_temp_directory=str(shared_dir))
    try:
        cluster = SLURMCluster(**kwargs)
    except (ValueError, OSError) as e:
        raise HtsError(f"slurm: cannot start the cluster: {e}") from None
    header = [line for line in cluster.job_script().splitlines() if line.startswith("#SBATCH")]
    log("SLURM worker job: " + " ".join(line.removeprefix("#SBATCH ") for line in header))
    cluster.adapt(minimum_jobs=so.min_jobs, maximum_jobs=so.max_jobs)
    cluster.torch_threads = max(int(cores) // processes, 1)
    cluster.infer_resources = {"GPU": 1} if so.gpus else None
    return cluster
