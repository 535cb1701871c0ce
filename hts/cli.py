"""The ``hts`` command line: ``train``, ``eval``, ``segment``, ``import``, ``run``, ``counts``, ``report``, ``demo``.

Every :class:`hts.errors.HtsError` becomes one line ``hts: error: ...`` on
stderr and exit status 2 (1 for a :class:`hts.errors.RunError`: a run that
could not finish its output); Ctrl-C exits with 130. The options themselves are
defined in :mod:`hts.cli_args`.
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
import threading

from hts import __version__
from hts.cli_args import add_commands, cluster_options, run_options, train_config
from hts.errors import HtsError


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one ``hts: error: ...`` line (no usage block), exit status 2."""

    def error(self, message: str):
        """Print ``hts: error: <command>: <message>`` and a pointer to ``--help``; exit 2."""
        where = "" if self.prog == "hts" else f"{self.prog}: "
        self.exit(2, f"hts: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``hts`` command line.

    Returns
    -------
    argparse.ArgumentParser
        Parsing sets ``args.func``, the subcommand's ``cmd_*`` function.
    """
    parser = OneLineParser(prog="hts", description="Nucleus segmentation and counting with the Instance-U-Net.")
    parser.add_argument("--version", action="version", version=f"hts {__version__}")
    add_commands(parser.add_subparsers(dest="command", required=True),
                 {"train": cmd_train, "eval": cmd_eval, "segment": cmd_segment, "run": cmd_run, "counts": cmd_counts,
                  "report": cmd_report, "demo": cmd_demo, "import": cmd_import})
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    """``hts train``: train, then print the best validation step and the checkpoint path; returns 0."""
    from hts.training.data import open_dataset
    from hts.training.train import train

    cfg = train_config(args)
    data = open_dataset(args.data, args.n_synthetic, seed=cfg.seed)
    val = open_dataset(args.val, max(args.n_synthetic // 4, 1), seed=cfg.seed + 10_000) if args.val else None
    meta = train(cfg, data, val, args.out, resume=not args.no_resume, device=args.device, workers=args.workers)
    if meta.get("best"):
        best = meta["best"]
        print(f"best step {best['step']}: val DSB {best['val']['dsb_score']:.4f}, AP50 {best['val']['ap_50']:.4f}, "
              f"mean IU {best['val']['mean_iu']:.4f}  -> {args.out.with_suffix('.best.pt')}")
    print(f"checkpoint: {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``hts eval``: print the metrics of a model or of saved predictions on annotated data; returns 0."""
    from hts.training.data import load_labels_npz, load_npz, save_labels_npz
    from hts.training.metrics import evaluate_dataset

    data = load_npz(args.data)
    if args.pred is None:
        from hts.engine.pipeline import resolve_model
        from hts.training.evaluate import predict_dataset

        model = resolve_model(args.model)
        labels, probs = predict_dataset(model, data.images, args.device, progress=not args.json, markers=args.markers,
                                        diameters=_eval_diameters(args.diameter, data, model), tta=args.tta)
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


def _eval_diameters(spec: float | str | None, data, model) -> list[float | None]:
    """Per image, the diameter of ``eval --diameter``: ``gt``, None (``auto``: measured by ``model``) or px."""
    from hts.engine.scale import median_diameter
    from hts.engine.size import estimate_diameter

    if spec == "gt":
        return [median_diameter(lb) for lb in data.labels]
    if spec is None:
        return [estimate_diameter(model, im).diameter for im in data.images]
    return [float(spec)] * len(data)


def cmd_segment(args: argparse.Namespace) -> int:
    """``hts segment``: segment one image and write its labels; returns 0."""
    from hts.api import segment
    from hts.engine.pipeline import check_min_size
    from hts.io.images import check_label_path, open_image, write_label_file

    check_min_size(args.min_size, "--min-size")
    to_zarr = args.output.suffix.lower() == ".zarr"
    if not to_zarr:
        check_label_path(args.output)
    image = open_image(args.input, args.channel, option="--channel")
    labels = segment(image, args.model, diameter=args.diameter, device=args.device, batch_size=args.batch_size,
                     out=args.output if to_zarr else None, min_size=args.min_size, progress=True, tta=args.tta)
    if not to_zarr:
        write_label_file(args.output, labels)
    n = labels.attrs["n_nuclei"] if to_zarr else int(labels.max())
    print(f"{args.input}: {n} nuclei -> {args.output}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``hts import``: write a folder of per-field TIFFs as an OME-Zarr plate and print what was written; returns 0."""
    from hts.io.imports import import_plate

    s = import_plate(args.folder, args.out, pattern=args.pattern, version=args.ngff, channel_names=args.channel_names,
                     pixel_size=args.pixel_size, plate=args.plate, overwrite=args.overwrite)
    t, _, z, y, x = s.shape
    extra = (f", {t} time points" if t > 1 else "") + (f", {z} z planes" if z > 1 else "")
    size = f", {s.pixel_size:g} um/px" if s.pixel_size else ""
    ignored = f"; {s.ignored} file(s) ignored (not matching the pattern)" if s.ignored else ""
    print(f"{s.fields} fields in {s.wells} wells, channels {', '.join(s.channels)} ({y}x{x} {s.dtype}{extra}{size}; "
          f"read by {s.reader}{ignored}) -> {s.out} (NGFF {s.version}, {s.wall_s:.1f} s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``hts demo``: run the synthetic plate; returns 0 when every field was segmented, else 1."""
    from hts.synthetic.demo import run_demo, run_screen_demo

    if args.screen:
        return run_screen_demo(args.out, workers=args.workers)
    return run_demo(args.out, workers=args.workers)


def cmd_run(args: argparse.Namespace) -> int:
    """``hts run``: segment a plate or image on Dask and print the summary; returns 1 if fields failed, else 0."""
    from hts.screen.cluster import start_worker_server

    cluster = cluster_options(args)
    if cluster.cluster == "local":
        start_worker_server()  # the workers' imports run beside the driver's from here on
    from hts.screen.run import run

    opts = run_options(args, cluster)
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
    """``hts counts``: print the per-well (or per-field) counts of a run as CSV; returns 0."""
    from hts.io.results import read_counts

    sys.stdout.write(read_counts(args.path, fields=args.fields, by_time=args.by_time).to_csv(index=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``hts report``: write the HTML report of a run and print its path; returns 0."""
    from hts.analysis.report import write_report

    print(write_report(args.path, args.out, args.platemap, args.readout))
    return 0


# OSError numbers that mean a bad path was given (exit 2), not a failure while working (exit 1)
BAD_PATH = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                      errno.EEXIST, errno.ENAMETOOLONG})


class Terminated(Exception):
    """SIGTERM (e.g. ``scancel`` of the driver's job): unwind so clusters and worker jobs are closed."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run the ``hts`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``hts`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when ``hts run`` left fields
        failed or could not write its tables (:class:`~hts.errors.RunError`),
        2 on another :class:`~hts.errors.HtsError` (one line on stderr),
        130 on Ctrl-C, 143 on SIGTERM. A bad command line exits with 2 from
        argparse. An OSError (a path that cannot be read or written, a full
        disk) is one line too: status 2 for a bad path, 1 otherwise.
    """
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except HtsError as exc:
        print(f"hts: error: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:  # a path the user gave that cannot be read or written, a full disk, a lost mount
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hts: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2 if exc.errno in BAD_PATH else 1
    except MemoryError:
        print("hts: error: out of memory; segment fewer or smaller images at a time (--workers, --block, "
              "--batch-size)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hts: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("hts: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
