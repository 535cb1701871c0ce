"""``hts run --cluster slurm``: Dask workers as SLURM jobs (dask-jobqueue), one worker process per GPU.

Settings come from a dask-jobqueue profile (``cluster/jobqueue.yaml`` is the
documented template: partition, account, walltime, memory, a job-script
prologue that activates the environment, network interface), given with
``--jobqueue FILE`` or found where Dask looks (``~/.config/dask/``,
``DASK_CONFIG``); command-line flags override it. Worker jobs ask for
``--gres=gpu:N`` and start N worker processes, each declaring ``GPU=1`` so
inference tasks run one per GPU; the number of jobs adapts between
``--min-jobs`` and ``--max-jobs``. ``--lifetime`` retires workers before the
walltime ends (staggered, so not all at once; :class:`RetireAfter`): a
retiring worker takes no new task, finishes those it runs (for at most
:data:`RETIRE_DRAIN_S`; keep lifetime + stagger + that under the walltime),
hands its results over and leaves without its tasks counting as failed;
adaptive scaling replaces it, and fields are written as they finish, so
nothing is lost. Every worker job is cancelled when the run ends, fails or
is interrupted (Ctrl-C, or SIGTERM from ``scancel`` of the driver).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dask
from dask.utils import parse_timedelta
from distributed.diagnostics.plugin import WorkerPlugin

from hts.errors import HtsError

# A child of distributed's logger, so that a worker job's log shows it like the worker's own lines.
logger = logging.getLogger("distributed.hts")
RETIRE_DRAIN_S = 60.0  # s a retiring worker waits for its running tasks before it leaves anyway
RETIRE_COLLECT_S = 2.0  # s it then waits for the driver to collect finished results (fields' summaries)


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


class RetireAfter(WorkerPlugin):
    """Worker plugin of ``--lifetime``: retire the worker gracefully after ``lifetime ± stagger`` seconds.

    distributed's own ``--lifetime`` closes the worker even when its results
    cannot be handed to another worker (always, while one worker job runs at
    a time): the scheduler then takes the exit for a worker death, counts it
    against every task the worker was running or holding queued, and after
    ``distributed.scheduler.allowed-failures`` (3) such deaths fails the
    field with ``KilledWorker``; the task cut short starts again from
    scratch. This plugin makes the worker, at its lifetime:

    1. take no new task (status ``closing_gracefully``, so the scheduler
       stops assigning it any);
    2. finish the tasks it is running, for at most ``drain`` seconds, and
       give the driver up to :data:`RETIRE_COLLECT_S` to collect results;
    3. hand its other results to another worker when there is one
       (``Scheduler.retire_workers``);
    4. leave as an expected departure: the tasks queued on it run elsewhere
       and results nobody else holds are recomputed, none counted as a failure.

    A task still running after ``drain`` seconds is left as a job killed at
    its walltime would leave it: counted as a failed attempt, so that a task
    longer than the lifetime ends as a failed field instead of starting over
    for ever. Registered on the scheduler by :func:`register_worker_plugin`.

    Parameters
    ----------
    lifetime : float
        Seconds from the plugin's set-up on the worker (its registration).
    stagger : float
        The lifetime is drawn uniformly from ``lifetime ± stagger``.
    drain : float
        Seconds to wait for running tasks.
    """

    name = "hts-retire-after"

    def __init__(self, lifetime: float, stagger: float = 0.0, drain: float = RETIRE_DRAIN_S):
        self.lifetime, self.stagger, self.drain = float(lifetime), float(stagger), float(drain)
        self._task: asyncio.Task | None = None
        self._retiring = False

    def __getstate__(self) -> dict:
        return {"lifetime": self.lifetime, "stagger": self.stagger, "drain": self.drain}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    async def setup(self, worker) -> None:
        """Start the clock (called by the worker when the plugin is added)."""
        delay = max(self.lifetime + (random.random() * 2 - 1) * self.stagger, 0.0)
        self._task = asyncio.create_task(self.retire_after(worker, delay))

    def teardown(self, worker) -> None:
        """Stop the clock if the worker closes for another reason first."""
        if self._task is not None and not self._retiring:
            self._task.cancel()

    async def retire_after(self, worker, delay: float) -> None:
        """Wait ``delay`` seconds, then retire ``worker`` (steps 1-4 above)."""
        from distributed.core import Status

        await asyncio.sleep(delay)
        if worker.status not in (Status.running, Status.paused):
            return
        self._retiring = True
        logger.info("hts: worker %s reached its lifetime (%.1f s): takes no new task, finishing %d running",
                    worker.address, delay, len(worker.state.executing))
        worker.status = Status.closing_gracefully  # also tells the scheduler
        await _scheduler_sees(worker, "closing_gracefully")
        if await self._drained(worker):
            await _collected(worker, RETIRE_COLLECT_S)
            await _hand_over(worker)
        else:
            logger.warning("hts: worker %s still running %d task(s) after %g s: leaving anyway, they count as "
                           "failed attempts", worker.address, len(worker.state.executing), self.drain)
        await worker.close(nanny=True, reason="worker-lifetime-reached")

    async def _drained(self, worker) -> bool:
        """Wait until ``worker`` runs no task (True), or ``drain`` seconds have passed (False)."""
        deadline = time.monotonic() + self.drain
        while worker.state.executing or worker.state.long_running:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True


async def _collected(worker, timeout: float) -> None:
    """Wait until ``worker`` holds no result (all collected or released), or ``timeout`` s.

    Results that tasks still need stay until the timeout; those the driver
    wants (a field's summary) are fetched within milliseconds of finishing,
    and need not be recomputed after the worker has left.
    """
    deadline = time.monotonic() + timeout
    while len(worker.data) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _scheduler_sees(worker, status: str, timeout: float = 10.0) -> None:
    """Wait until the scheduler knows ``worker``'s new status (or ``timeout`` s).

    The status travels on the worker's batched stream, ``retire_workers`` on
    another connection: if it arrived first, an aborted retirement would set
    the worker back to ``running`` and start its queued tasks again.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await worker.scheduler.identity()
        if info["workers"].get(worker.address, {}).get("status") == status:
            return
        await asyncio.sleep(0.05)


async def _hand_over(worker) -> None:
    """Move ``worker``'s results to another worker and remove it from the scheduler as expected."""
    stimulus = f"hts-retire-{time.time()}"
    others = (await worker.scheduler.identity())["workers"]
    if any(info["status"] == "running" for addr, info in others.items() if addr != worker.address):
        retired = await worker.scheduler.retire_workers(workers=[worker.address], close_workers=False, remove=True,
                                                        stimulus_id=stimulus)
        if worker.address in retired:
            logger.info("hts: worker %s retired, its results handed over", worker.address)
            return
    # no other worker can take its results: they are recomputed, which is no failure of theirs
    await worker.scheduler.unregister(address=worker.address, stimulus_id=stimulus, expected=True, close=False)
    logger.info("hts: worker %s retired (%s)", worker.address,
                "no other worker took its results: they are recomputed" if len(worker.data) else "it held no results")


def retire_plugin(so: SlurmOptions) -> RetireAfter | None:
    """The :class:`RetireAfter` plugin for ``so.lifetime`` (None without one).

    Raises
    ------
    HtsError
        On a lifetime or stagger that is not a duration (e.g. ``55m``, ``2h``, ``90s``).
    """
    if not so.lifetime:
        return None
    try:
        lifetime, stagger = parse_timedelta(so.lifetime), parse_timedelta(so.lifetime_stagger or 0)
    except (ValueError, KeyError, TypeError):
        raise HtsError(f"--lifetime {so.lifetime} / --lifetime-stagger {so.lifetime_stagger}: "
                       "expected durations such as 55m, 2h or 90s") from None
    if lifetime <= 0:
        raise HtsError(f"--lifetime must be longer than 0 s, got {so.lifetime}")
    if not 0 <= stagger < lifetime:
        raise HtsError(f"--lifetime-stagger {so.lifetime_stagger} must be shorter than --lifetime {so.lifetime} "
                       "(workers retire at lifetime +- stagger)")
    return RetireAfter(lifetime, stagger)


def register_worker_plugin(cluster, plugin) -> None:
    """Give ``plugin`` to every worker that ``cluster``'s (in-process) scheduler has or will have."""
    cluster.sync(cluster.scheduler.register_worker_plugin, comm=None, plugin=pickle.dumps(plugin),
                 name=plugin.name, idempotent=False)


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
    retire = retire_plugin(so)  # instead of the worker's --lifetime (see RetireAfter)
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
    if retire is not None:
        register_worker_plugin(cluster, retire)  # before adapt() submits the first job
    cluster.adapt(minimum_jobs=so.min_jobs, maximum_jobs=so.max_jobs)
    cluster.torch_threads = max(int(cores) // processes, 1)
    cluster.infer_resources = {"GPU": 1} if so.gpus else None
    return cluster
