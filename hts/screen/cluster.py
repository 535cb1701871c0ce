"""Where a run's tasks execute: an embedded LocalCluster (default), an existing scheduler, or SLURM."""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import dask

from hts.errors import HtsError


@dataclass(frozen=True)
class ClusterOptions:
    """Where ``hts run`` computes. ``cluster``: ``local``, ``slurm`` or a scheduler address ``tcp://host:port``.

    These defaults are the command line's (:mod:`hts.cli_args` reads them).
    """

    cluster: str = "local"
    workers: int | None = None  # local: worker processes (default one per visible GPU, else 1); slurm: maximum jobs
    threads_per_worker: int | None = None  # local default: cores / workers
    dashboard: str = "127.0.0.1:8787"  # of the local or SLURM scheduler; a busy port falls back to a free one
    slurm: object | None = None  # hts.screen.slurm.SlurmOptions for --cluster slurm (None: its defaults)


def local_layout(workers: int | None, threads: int | None) -> tuple[int, int, int]:
    """The layout of a local cluster on the cores this process may use.

    By default one worker process with a task thread per core, whose torch
    uses every core: the watershed and writing of one field overlap the
    inference of the next (measurements: scripts/bench_pipeline.py).

    Parameters
    ----------
    workers : int or None
        Worker processes; None: 1.
    threads : int or None
        Task threads per worker; None: cores / workers.

    Returns
    -------
    tuple of int
        ``(workers, task threads per worker, torch threads per worker)``;
        the torch threads are cores / workers (at least 1) whatever ``threads``.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = workers or 1
    torch_threads = max(cores // workers, 1)
    return workers, threads or torch_threads, torch_threads


def _cuda_devices() -> int:
    """GPUs visible here (e.g. inside a multi-GPU SLURM allocation): one local worker each by default."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001  # a broken CUDA install must not stop a CPU run
        return 0


def worker_environment() -> dict:
    """Dask settings for the worker processes this run starts.

    distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers to return
    memory to the OS sooner; an explicit threshold also turns off glibc's
    dynamic mmap threshold, so every large numpy/torch buffer is mmapped and
    page-faulted anew, which slows inference. The nucleus pipeline reuses
    buffers of the same sizes, so hts keeps glibc's default.

    Returns
    -------
    dict
        A ``dask.config.set`` mapping: ``distributed.nanny.pre-spawn-environ``
        without ``MALLOC_TRIM_THRESHOLD_``.
    """
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return {"distributed.nanny.pre-spawn-environ": env}


WORKER_MODULES = ["distributed", "hts.screen.tasks"]  # what a local worker imports before its first task
# multiprocessing's resource tracker warns about the semaphores of a worker killed at shutdown (after Ctrl-C)
LEAK_WARNING = "ignore:resource_tracker:UserWarning"


def start_worker_server() -> None:
    """Start multiprocessing's fork server with the workers' modules (torch, hts, distributed) imported.

    Local workers are forked from it (``forkserver`` method) instead of
    spawned as fresh interpreters, which saves each of them importing torch
    and hts; started early (``hts run`` does so before its own imports), that
    import runs beside the driver's work. The server is a single-threaded
    process that never touches CUDA, so forking it is safe. It gets the
    environment distributed gives spawned workers. It and its workers
    ignore SIGINT: Ctrl-C in a terminal reaches the whole process group,
    and the driver alone answers it (closing the cluster, one line
    ``hts: interrupted``); nor do they warn about semaphores a worker killed
    at shutdown leaves to the resource tracker. Idempotent; returns None.
    """
    import multiprocessing
    from multiprocessing import forkserver

    env = {k: str(v) for k, v in worker_environment()["distributed.nanny.pre-spawn-environ"].items()}
    env["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), LEAK_WARNING]))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    interrupt = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        if interrupt is not None:  # the server and the workers forked from it ignore Ctrl-C: the driver stops them
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        multiprocessing.get_context("forkserver").set_forkserver_preload(WORKER_MODULES)
        forkserver.ensure_running()
    finally:
        if interrupt is not None:
            signal.signal(signal.SIGINT, interrupt)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def connect(opts: ClusterOptions, log=print, shared_dir: str | os.PathLike = ".") -> Iterator:
    """A ``distributed.Client`` for the run; the cluster (and its worker jobs) is closed on any exit.

    Parameters
    ----------
    opts : ClusterOptions
        Where to compute: a LocalCluster (one worker per visible GPU, else
        :func:`local_layout`), SLURM worker jobs
        (:func:`hts.screen.slurm.slurm_cluster`) or a running scheduler.
    log : callable
        ``log(message)``: the cluster's layout, scheduler and dashboard addresses.
    shared_dir : str or os.PathLike
        A folder the workers can read (TLS certificates of SLURM workers).

    Yields
    ------
    distributed.Client
        Connected; with ``torch_threads`` (local, slurm) and ``infer_resources``
        (slurm) set for the tasks.

    Raises
    ------
    HtsError
        On bad options, or a scheduler that cannot be reached.
    """
    from distributed import Client, LocalCluster

    if opts.threads_per_worker is not None and opts.threads_per_worker < 1:
        raise HtsError(f"--threads-per-worker must be >= 1, got {opts.threads_per_worker}")
    if opts.workers is not None and opts.workers < 1:
        raise HtsError(f"--workers must be >= 1, got {opts.workers}")
    cluster = None
    stack = ExitStack()
    stack.enter_context(dask.config.set(worker_environment()))
    # A second run on the node finds the dashboard port taken: distributed serves on a free one and says
    # so in a multi-line UserWarning; the dashboard line below names the port actually used
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    if opts.cluster == "local":
        start_worker_server()
        stack.enter_context(dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}))
        gpus = _cuda_devices()
        n, threads, torch_threads = local_layout(opts.workers or gpus or None, opts.threads_per_worker)
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                               resources={"GPU": 1} if gpus else None,  # one inference per GPU at a time
                               dashboard_address=opts.dashboard, host="127.0.0.1")
        client = Client(cluster)
        client.torch_threads = torch_threads
        log(f"LocalCluster: {n} worker process(es) x {threads} thread(s), {torch_threads} torch thread(s) each")
    elif opts.cluster == "slurm":
        from hts.screen.slurm import SlurmOptions, slurm_cluster

        so = opts.slurm or SlurmOptions()
        if opts.workers:
            so = replace(so, max_jobs=opts.workers)
        cluster = slurm_cluster(so, opts.dashboard, shared_dir, log=log)
        client = Client(cluster)
        client.torch_threads = opts.threads_per_worker or cluster.torch_threads
        client.infer_resources = cluster.infer_resources
    elif opts.cluster.startswith(("tcp://", "tls://")):
        try:
            client = Client(opts.cluster, timeout="20s")
        except OSError as e:
            raise HtsError(f"--cluster {opts.cluster}: cannot connect to the scheduler ({e})") from None
    else:
        raise HtsError(f"--cluster must be local, slurm or tcp://HOST:PORT, got {opts.cluster!r}")
    try:
        log(f"scheduler: {client.scheduler.address}")
        if client.dashboard_link:
            log(f"dashboard: {client.dashboard_link}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        stack.close()


def inference_resources(client) -> dict | None:
    """What an inference task asks for: a ``GPU`` when some worker declares GPUs, else nothing.

    Parameters
    ----------
    client : distributed.Client
        The connected client.

    Returns
    -------
    dict or None
        ``{"GPU": 1}``, or None when no worker declares a ``GPU`` resource.
    """
    return {"GPU": 1} if "GPU" in client.run_on_scheduler(_declared_resources) else None


def _declared_resources(dask_scheduler=None) -> list[str]:
    return sorted({r for ws in dask_scheduler.workers.values() for r, n in ws.resources.items() if n})


def windowed(client, items, submit, window: int):
    """Yield ``(item, future)`` as futures finish, keeping at most ``window`` items in flight.

    Memory stays bounded whatever the number of items.

    Parameters
    ----------
    client : distributed.Client
        The connected client.
    items : iterable
        What to submit, in order; read as the window frees.
    submit : callable
        ``submit(item) -> future``: builds the item's tasks.
    window : int
        Items in flight at most (at least 1).

    Yields
    ------
    tuple
        ``(item, future)`` in the order the futures finish; the caller
        releases each future.
    """
    from distributed import as_completed

    pending = iter(items)
    owner = {}
    queue = as_completed()
    for item in [i for _, i in zip(range(max(window, 1)), pending)]:
        fut = submit(item)
        owner[fut] = item
        queue.add(fut)
    for fut in queue:
        yield owner.pop(fut), fut
        nxt = next(pending, None)
        if nxt is not None:
            new = submit(nxt)
            owner[new] = nxt
            queue.add(new)
