#!/usr/bin/env python
"""Pipeline efficiency: ``hts run`` throughput beside the model-only inference rate on the same pixels.

A benchmark, not a test. In one run it writes a synthetic plate, then

1. model only: every field's nucleus plane through the network (resampling
   + tiled inference, ``hts.engine.pipeline.infer_image``) in this process, all cores
   to torch, planes already in memory;
2. pipeline: ``hts run`` on the plate on a LocalCluster (read, inference,
   watershed, NGFF labels, tables), ``--overwrite`` so every field runs;

and prints fields/s and megapixels/s of each and their ratio (the pipeline's
efficiency; target >= 0.8 on a 2-core machine). Both sides are timed warm,
in one process: the model after a warm-up call, ``hts run`` after a warm-up
run, whose worker fork server (torch and hts imported) the timed runs reuse,
as repeated ``hts.screen.run`` calls in a notebook do; each timed run still starts
and closes its own cluster and loads the model in its worker. A cold
``hts run`` from a shell adds interpreter start and imports (README).

    .venv/bin/python scripts/bench_pipeline.py                       # 2x3 wells x 2 fields of 1024 px
    .venv/bin/python scripts/bench_pipeline.py --size 2048 --workers 2 --threads-per-worker 1
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--columns", type=int, default=3)
    ap.add_argument("--fields", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="field side, px")
    ap.add_argument("--workers", type=int, help="LocalCluster workers (default: cores / threads)")
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--diameter", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    ap.add_argument("--workdir", type=Path, help="where to write the plate (default: a temporary folder)")
    args = ap.parse_args()

    from hts.engine.pipeline import infer_image, resolve_model
    from hts.io.ngff import open_source
    from hts.screen.cluster import ClusterOptions
    from hts.screen.run import RunOptions, run
    from hts.screen.tasks import Job, read_field
    from hts.synthetic.plate import PlateSpec, write_plate

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        plate = Path(tmp) / "bench.zarr"
        write_plate(plate, PlateSpec(rows=args.rows, columns=args.columns, fields=args.fields, size=args.size))
        source = open_source(plate)
        base = dict(source=str(plate), out=str(plate), results="", version=source.version, copy_image=False,
                    channel="DAPI", z=None, diameter=args.diameter, model=None, device="cpu", batch_size=4, threads=1)
        planes = [read_field(Job(ref, **base)) for ref in source.fields]
        mp = sum(p.size for p in planes) / 1e6
        net = resolve_model(None)
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(cores)
        infer_image(net, planes[0], args.diameter)  # warm-up
        opts = RunOptions(channel="DAPI", diameter=args.diameter, overwrite=True,
                          cluster=ClusterOptions(workers=args.workers, threads_per_worker=args.threads_per_worker))
        run(plate, opts, progress=False, log=lambda s: None)  # warm-up (file cache, imports)
        model_runs, run_runs, steady_runs = [], [], []
        for _ in range(args.repeats):  # interleaved, so drifts of this VM's speed hit both alike
            t0 = time.perf_counter()
            for p in planes:
                infer_image(net, p, args.diameter)
            model_runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            summary = run(plate, opts, progress=False, log=lambda s: None)
            run_runs.append(time.perf_counter() - t0)
            done = sorted(p.stat().st_mtime for p in (plate.parent / "bench.hts" / "fields").glob("*.json"))
            steady_runs.append((done[-1] - done[0]) / (len(done) - 1))  # s per field once the cluster runs
        model_s, run_s, steady_s = (float(np.median(x)) for x in (model_runs, run_runs, steady_runs))
    n = len(planes)
    print(f"machine: {platform.machine()}, {cores} cores, torch {torch.__version__}, {platform.python_version()}")
    print(f"plate: {args.rows}x{args.columns} wells x {args.fields} fields of {args.size} px = {n} fields, {mp:.1f} MP")
    print(f"medians of {args.repeats} interleaved repeats")
    print(f"model only (in process, {cores} torch threads): {n / model_s:.2f} fields/s, {mp / model_s:.2f} MP/s")
    print(f"hts run (LocalCluster, incl. cluster start): {n / run_s:.2f} fields/s, {mp / run_s:.2f} MP/s, "
          f"{summary.n_nuclei} nuclei")
    print(f"hts run, steady state (first to last field done): {1 / steady_s:.2f} fields/s, "
          f"{mp / n / steady_s:.2f} MP/s")
    print(f"efficiency (pipeline / model only): {model_s / run_s:.2f} end to end, {model_s / n / steady_s:.2f} steady state")


if __name__ == "__main__":
    main()
