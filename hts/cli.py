"""The ``hts`` command line: ``train``, ``eval``, ``segment``, ``run``, ``counts``, ``report``, ``demo``.

Every :class:`hts.errors.HtsError` becomes one line ``hts: error: ...`` on
stderr and exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from hts import __version__
from hts.errors import HtsError
from hts.training.losses import VARIANTS

MIN_SIZE_HELP = ("px: objects under this size are merged into the nucleus they touch, or dropped when isolated; 0 keeps "
                 "every object, e.g. for micronuclei (default: slivers under 10%% of the median nucleus area merge, "
                 "isolated objects under 5%% of it or 25 px are dropped)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an Instance-U-Net (or a Table 1 variant)",
                       description="Train with Adam (lr 1e-4) on augmented crops; checkpoints record "
                       "configuration, data, steps and validation metrics. Rerun the same command to resume.")
    p.add_argument("--data", required=True, help="training data: a .npz in the shared layout, or 'synthetic'")
    p.add_argument("--val", help="validation data: a .npz, or 'synthetic' (default: none)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint path (.pt); the best one goes to <out>.best.pt")
    p.add_argument("--variant", default="IU-BCE/Dice", choices=list(VARIANTS), help="Table 1 variant (default %(default)s)")
    p.add_argument("--width", type=int, default=16, help="channels of the first step (paper 64; default %(default)s for CPU)")
    p.add_argument("--anchor-base", type=float, default=32.0, help="anchor base size in px (default %(default)s)")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default %(default)s)")
    p.add_argument("--crop", type=int, default=256, help="crop side in px, multiple of 16 (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed; fixes the run on CPU (default %(default)s)")
    p.add_argument("--decay-from", type=int, default=None, metavar="STEP",
                   help="decay the learning rate linearly from STEP to 0 at the last step (default: constant)")
    p.add_argument("--val-every", type=int, default=250, help="validate and checkpoint every N steps (default %(default)s)")
    p.add_argument("--diameter", type=float, default=32.0,
                   help="canonical nucleus diameter in px: each training image is resampled so its median nucleus "
                   "has this size (default %(default)s); 0 trains at the data's native scale")
    p.add_argument("--n-synthetic", type=int, default=64, help="images generated when --data/--val is 'synthetic'")
    p.add_argument("--no-augment", action="store_true", help="plain random crops (no mirror/scale/rotation)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out exists")
    p.add_argument("--device", default="cpu", help="where the network trains: cpu, cuda, cuda:1 (default %(default)s; "
                   "CUDA runs are not bit-reproducible)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that draw batches ahead (default %(default)s; 2-4 keep a GPU busy)")
    p.set_defaults(func=cmd_train)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model or saved predictions on annotated data")
    p.add_argument("--data", required=True, help="annotated .npz in the shared layout")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint to run on the images (default, without --pred: the shipped model)")
    src.add_argument("--pred", help="predicted labels .npz (n, labels_0000, ...)")
    p.add_argument("--markers", choices=["auto", "rpn", "distance", "none"], default="auto",
                   help="watershed markers for --model: RPN centroids, distance peaks, or none (connected components, "
                   "no watershed) (default: RPN if the model has one)")
    p.add_argument("--diameter", default="gt",
                   help="nucleus diameter for --model: 'gt' (each image's ground-truth median, a known "
                   "magnification; default), 'auto' (estimated per image) or a number of px")
    p.add_argument("--save-pred", type=Path, help="also write the predicted labels to this .npz")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment the nuclei of one 2D image of any size",
                       description="Segment one 2D image; large and Zarr images are processed block by block "
                       "in bounded memory.")
    p.add_argument("input", type=Path, help="2D image: .tif/.tiff, .png, .npy or a .zarr array")
    p.add_argument("output", type=Path, help="labels (uint32, 0 = background): .tif/.tiff, .npy or .zarr")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--diameter", type=float, help="median nucleus diameter in px (default: estimated)")
    p.add_argument("--batch-size", type=int, help="448x448 tiles per forward pass (default 4)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--min-size", type=int, metavar="PX", help=MIN_SIZE_HELP)
    p.set_defaults(func=cmd_segment)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="write a small synthetic plate and run the whole pipeline on it",
                       description="Write a 2x3-well synthetic OME-Zarr plate with known nucleus counts, run "
                       "`hts run` on it on a local Dask cluster and print the counts beside the truth.")
    p.add_argument("--out", type=Path, default=Path("hts-demo"), help="work folder (default %(default)s)")
    p.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    p.set_defaults(func=cmd_demo)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="segment and count every field of an OME-Zarr plate or image on Dask",
                       description="Segment every field of an OME-Zarr (NGFF 0.4/0.5) plate, or a single "
                       "image, on a Dask cluster; write NGFF labels (<image>/labels/nuclei) and count tables "
                       "(<name>.hts/ beside the output). Reruns skip finished fields.")
    p.add_argument("path", type=Path, help="OME-Zarr plate or image")
    p.add_argument("--channel", help="nucleus channel, by name (omero label) or index (default: the only one)")
    p.add_argument("--z", type=int, help="z plane to segment (default: maximum projection over z)")
    p.add_argument("--out", type=Path, help="write results to this new Zarr (same plate layout, nucleus plane "
                   "and labels) instead of into PATH (for read-only plates)")
    p.add_argument("--cluster", default="local", help="local (default), slurm, or a scheduler tcp://HOST:PORT")
    p.add_argument("--workers", type=int, help="local worker processes (default 1)")
    p.add_argument("--threads-per-worker", type=int,
                   help="task threads per local worker (default, and each worker's torch threads: cores / workers)")
    p.add_argument("--batch-size", type=int, default=4, help="448x448 tiles per forward pass (default %(default)s)")
    p.add_argument("--diameter", type=float, help="median nucleus diameter in px (default: estimated once per plate)")
    p.add_argument("--min-size", type=int, metavar="PX", help=MIN_SIZE_HELP)
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--device", help="torch device on the workers (default: cuda if available, else cpu)")
    p.add_argument("--block", type=int, default=4096,
                   help="px: a single image larger than this is processed in blocks of about this side with a "
                   "halo, stitched so each nucleus has one label (default %(default)s)")
    p.add_argument("--dashboard", default="127.0.0.1:8787", help="local dashboard address (default %(default)s)")
    sl = p.add_argument_group("SLURM (--cluster slurm; defaults from the dask-jobqueue profile)")
    sl.add_argument("--jobqueue", help="dask-jobqueue YAML profile (template: cluster/jobqueue.yaml)")
    sl.add_argument("--partition", help="SLURM partition of the worker jobs")
    sl.add_argument("--account", help="SLURM account")
    sl.add_argument("--walltime", help="worker job walltime, HH:MM:SS")
    sl.add_argument("--memory", help="memory per worker job, e.g. 32GB")
    sl.add_argument("--cores", type=int, help="CPU cores per worker job")
    sl.add_argument("--gpus", type=int, default=1, help="GPUs per worker job (--gres=gpu:N, one worker each; "
                    "0: CPU workers) (default %(default)s)")
    sl.add_argument("--min-jobs", type=int, default=0, help="adaptive scaling: fewest worker jobs (default %(default)s)")
    sl.add_argument("--max-jobs", type=int, default=4, help="adaptive scaling: most worker jobs (default %(default)s)")
    sl.add_argument("--interface", help="network interface for scheduler and workers, e.g. ib0 (listens there only)")
    sl.add_argument("--lifetime", help="retire workers after this long (e.g. 55m, under the walltime); "
                    "adaptive scaling replaces them")
    sl.add_argument("--lifetime-stagger", default="5m", help="spread of the lifetimes (default %(default)s)")
    sl.add_argument("--tls", action="store_true", help="TLS between scheduler, workers and client (temporary certificates)")
    sl.add_argument("--job-prologue", action="append", default=[], metavar="LINE",
                    help="a line for the worker job script before the worker starts, e.g. 'source .venv/bin/activate'")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="overwrite", action="store_false", default=False,
                      help="skip fields finished by an earlier run (default)")
    mode.add_argument("--overwrite", dest="overwrite", action="store_true", help="recompute every field")
    p.set_defaults(func=cmd_run)


def _add_counts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("counts", help="print the per-well nucleus counts of a run as CSV",
                       description="Print the per-well counts (well,row,column,fields,n_nuclei,...) of the "
                       "output of `hts run` as CSV on stdout.")
    p.add_argument("path", type=Path, help="the output Zarr of `hts run` (or its .hts results folder)")
    p.add_argument("--fields", action="store_true", help="one row per field instead of per well")
    p.set_defaults(func=cmd_counts)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report of a run (plate heatmaps, QC flags, thumbnails, metadata)",
                       description="Write index.html with plate heatmaps (nuclei, area, intensity per well; a "
                       "density map for single images), a histogram of nuclei per field, thumbnails with label "
                       "outlines, QC flags (empty, saturated, out-of-focus fields; outlier wells; edge effect) and "
                       "the run's metadata; print its path.")
    p.add_argument("path", type=Path, help="the output Zarr of `hts run` (or its .hts results folder)")
    p.add_argument("--out", type=Path, help="report folder (default: <name>.hts/report)")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hts", description="Nucleus segmentation and counting with the Instance-U-Net.")
    parser.add_argument("--version", action="version", version=f"hts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_segment, _add_run, _add_counts, _add_report, _add_demo):
        add(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from hts.training.data import open_dataset
    from hts.training.train import TrainConfig, train

    cfg = TrainConfig(variant=args.variant, width=args.width, anchor_base=args.anchor_base, steps=args.steps,
                      batch_size=args.batch_size, crop=args.crop, lr=args.lr, seed=args.seed,
                      val_every=args.val_every, augment=not args.no_augment, diameter=args.diameter or None,
                      decay_from=args.decay_from)
    data = open_dataset(args.data, args.n_synthetic, seed=args.seed)
    val = open_dataset(args.val, max(args.n_synthetic // 4, 1), seed=args.seed + 10_000) if args.val else None
    meta = train(cfg, data, val, args.out, resume=not args.no_resume, device=args.device, workers=args.workers)
    if meta.get("best"):
        best = meta["best"]
        print(f"best step {best['step']}: val DSB {best['val']['dsb_score']:.4f}, AP50 {best['val']['ap_50']:.4f}, "
              f"mean IU {best['val']['mean_iu']:.4f}  -> {args.out.with_suffix('.best.pt')}")
    print(f"checkpoint: {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from hts.training.data import load_labels_npz, load_npz, save_labels_npz
    from hts.training.metrics import evaluate_dataset

    data = load_npz(args.data)
    if args.pred is None:
        from hts.engine.pipeline import resolve_model
        from hts.training.evaluate import predict_dataset

        model = resolve_model(args.model)
        labels, probs = predict_dataset(model, data.images, args.device, progress=not args.json, markers=args.markers,
                                        diameters=_eval_diameters(args.diameter, data))
        if args.save_pred:
            save_labels_npz(args.save_pred, labels, data.ids)
    else:
        labels, probs = load_labels_npz(args.pred), None
        if len(labels) != len(data):
            raise HtsError(f"prediction file {args.pred} has {len(labels)} images but {args.data} has {len(data)}")
        for i, (g, p) in enumerate(zip(data.labels, labels)):
            if g.shape != p.shape:
                raise HtsError(f"prediction file {args.pred}: labels_{i:04d} shape {p.shape} differs from data {g.shape}")
    result = evaluate_dataset(data.labels, labels, probs)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0


def _eval_diameters(spec: str, data) -> list[float | None]:
    from hts.engine.scale import estimate_diameter, median_diameter

    if spec == "gt":
        return [median_diameter(lb) for lb in data.labels]
    if spec == "auto":
        return [estimate_diameter(im) for im in data.images]
    try:
        value = float(spec)
    except ValueError:
        raise HtsError(f"--diameter must be 'gt', 'auto' or a number of px, got {spec!r}") from None
    if not value > 0:
        raise HtsError(f"--diameter must be > 0 px, got {spec}")
    return [value] * len(data)


def cmd_segment(args: argparse.Namespace) -> int:
    from hts.api import segment
    from hts.engine.pipeline import check_min_size
    from hts.io.images import check_label_path, open_image, write_labels

    check_min_size(args.min_size, "--min-size")
    to_zarr = args.output.suffix.lower() == ".zarr"
    if not to_zarr:
        check_label_path(args.output)
    image = open_image(args.input)
    labels = segment(image, args.model, diameter=args.diameter, device=args.device, batch_size=args.batch_size,
                     out=args.output if to_zarr else None, min_size=args.min_size, progress=True)
    if not to_zarr:
        write_labels(args.output, labels)
    n = labels.attrs["n_nuclei"] if to_zarr else int(labels.max())
    print(f"{args.input}: {n} nuclei -> {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hts.synthetic.demo import run_demo

    return run_demo(args.out, workers=args.workers)


def cmd_run(args: argparse.Namespace) -> int:
    from hts.screen.cluster import ClusterOptions, start_worker_server

    if args.cluster == "local":
        start_worker_server()  # the workers' imports run beside the driver's from here on
    from hts.screen.run import RunOptions, run
    from hts.screen.slurm import SlurmOptions

    channel = int(args.channel) if args.channel is not None and args.channel.isdigit() else args.channel
    opts = RunOptions(out=str(args.out) if args.out else None, channel=channel, z=args.z, diameter=args.diameter,
                      model=args.model, device=args.device, batch_size=args.batch_size, overwrite=args.overwrite,
                      block=args.block, min_size=args.min_size,
                      cluster=ClusterOptions(cluster=args.cluster, workers=args.workers,
                                             threads_per_worker=args.threads_per_worker, dashboard=args.dashboard,
                                             slurm=SlurmOptions(
                                                 jobqueue=args.jobqueue, partition=args.partition,
                                                 account=args.account, walltime=args.walltime, memory=args.memory,
                                                 cores=args.cores, gpus=args.gpus, min_jobs=args.min_jobs,
                                                 max_jobs=args.max_jobs, interface=args.interface,
                                                 lifetime=args.lifetime, lifetime_stagger=args.lifetime_stagger,
                                                 tls=args.tls, prologue=args.job_prologue)))
    s = run(args.path, opts)
    rate = f", {s.computed / s.wall_s:.2f} fields/s, {s.megapixels / s.wall_s:.2f} MP/s" if s.computed else ""
    print(f"{s.done}/{s.fields} fields done ({s.skipped_done} from earlier runs), {s.n_nuclei} nuclei, "
          f"{s.wall_s:.1f} s{rate}")
    print(f"labels: {s.out}   tables: {s.results}")
    for key, reason in s.failed.items():
        print(f"hts: field {key} failed: {reason}", file=sys.stderr)
    if s.failed:
        print(f"hts: error: {len(s.failed)} field(s) failed; the others are written; rerun to retry them",
              file=sys.stderr)
        return 1
    return 0


def cmd_counts(args: argparse.Namespace) -> int:
    from hts.io.results import read_counts

    sys.stdout.write(read_counts(args.path, fields=args.fields).to_csv(index=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hts.analysis.report import write_report

    print(write_report(args.path, args.out))
    return 0


class Terminated(Exception):
    """SIGTERM (e.g. ``scancel`` of the driver's job): unwind so clusters and worker jobs are closed."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except HtsError as exc:
        print(f"hts: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hts: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("hts: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
