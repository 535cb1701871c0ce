"""Where a run's tasks execute: an embedded LocalCluster (default), an existing scheduler, or SLURM."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator

from hts.errors import HtsError


@dataclass(frozen=True)
class ClusterOptions:
    """``cluster``: ``local``, ``slurm`` or a scheduler address ``tcp://host:port``."""

    cluster: str = "local"
    workers: int | None = None  # local: worker processes (default: cores / threads); slurm: maximum jobs
    threads_per_worker: int = 1
    dashboard: str = "127.0.0.1:8787"  # local scheduler's dashboard; a busy port falls back to a free one
    slurm: dict | None = None  # extra keyword arguments for the SLURM cluster (see hts.slurm)


def default_workers(threads_per_worker: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cores // max(threads_per_worker, 1), 1)


@contextmanager
def connect(opts: ClusterOptions, log=print) -> Iterator:
    """A ``distributed.Client`` for the run; the cluster (and its worker jobs) is closed on any exit."""
    from distributed import Client, LocalCluster

    if opts.threads_per_worker < 1:
        raise HtsError(f"--threads-per-worker must be >= 1, got {opts.threads_per_worker}")
    if opts.workers is not None and opts.workers < 1:
        raise HtsError(f"--workers must be >= 1, got {opts.workers}")
    cluster = None
    if opts.cluster == "local":
        n = opts.workers or default_workers(opts.threads_per_worker)
        cluster = LocalCluster(n_workers=n, threads_per_worker=opts.threads_per_worker, processes=True,
                               dashboard_address=opts.dashboard, host="127.0.0.1")
        client = Client(cluster)
        log(f"LocalCluster: {n} worker process(es) x {opts.threads_per_worker} thread(s)")
    elif opts.cluster == "slurm":
        from hts.slurm import slurm_cluster

        cluster = slurm_cluster(opts, log=log)
        client = Client(cluster)
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


def gpu_workers(client) -> bool:
    """True when some worker declares a ``GPU`` resource (inference tasks then ask for one)."""
    return bool(client.run_on_scheduler(_scheduler_has_gpu))


def _scheduler_has_gpu(dask_scheduler=None) -> bool:
    return any(ws.resources.get("GPU") for ws in dask_scheduler.workers.values())


def windowed(client, items, submit, window: int):
    """Yield ``(item, future)`` as futures finish, keeping at most ``window`` items in flight.

    ``submit(item) -> future`` builds the item's tasks; memory stays bounded
    whatever the number of items. Each yielded future is released by the caller.
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
