"""The options of the ``hts`` command line, and how they fill the options dataclasses.

The options of ``hts run`` fill :class:`~hts.screen.run.RunOptions`,
:class:`~hts.screen.cluster.ClusterOptions` and
:class:`~hts.screen.slurm.SlurmOptions`, those of ``hts train``
:class:`~hts.training.train.TrainConfig`: an option's argparse ``dest`` is the
name of its field, and its default is the field's. An option left out is
left out of the dataclass too (:func:`options_from`), and ``--help`` shows
the field's default (:class:`Default`), so each default is written once, in
its dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

from hts.cli_types import (
    PLATEMAP_HELP,
    READOUT_HELP,
    channel,
    channel_list,
    diameter_px,
    eval_diameter,
    name_list,
    path_str,
    positive,
    readout_list,
    z_mode,
)
from hts.training.losses import VARIANTS

RUN, CLUSTER, SLURM, TRAIN = ("hts.screen.run:RunOptions", "hts.screen.cluster:ClusterOptions",
                              "hts.screen.slurm:SlurmOptions", "hts.training.train:TrainConfig")

MIN_SIZE_HELP = ("px: objects under this size are merged into the nucleus they touch, or dropped when isolated; 0 keeps "
                 "every object, e.g. for micronuclei (default: slivers under 10%% of the median nucleus area merge, "
                 "isolated objects under 5%% of it or 25 px are dropped)")
DIAMETER_HELP = "median nucleus diameter of the input images in px, or 'auto'"
DEVICE_HELP = "torch device (default: cuda if available, else cpu)"
WORKERS_HELP = "worker processes (default: one per visible GPU, else one with a task thread per core)"
TTA = (1, 4, 8)  # the choices of --tta (hts.engine.tta.TTA_CHOICES, not imported: it brings torch)
TTA_HELP = ("test-time augmentation: the network output averaged over 4 flips or 8 flips and 90-degree rotations of "
            "each image, at 4 or 8 times the network time; 1: none")


class Default:
    """The default of field ``name`` of the dataclass ``owner`` (``"module:Class"``), imported only when shown.

    As an argparse default it stands for "not given": :func:`options_from`
    leaves it out, so the dataclass applies its own default, and ``--help``
    prints it (``%(default)s``). Only then is the dataclass's module
    imported: ``hts.screen.run`` brings ome-zarr and the task graph, which
    the other commands are spared and ``hts run`` imports after starting its
    worker server.
    """

    def __init__(self, owner: str, name: str) -> None:
        self.owner, self.name = owner, name

    def value(self):
        """The field's default (imports its module)."""
        module, _, cls = self.owner.partition(":")
        return field_default(getattr(importlib.import_module(module), cls), self.name)

    def __str__(self) -> str:
        return str(self.value())

    def __repr__(self) -> str:
        return f"Default({self.owner}.{self.name})"


def field_default(cls: type, name: str):
    """The default of a dataclass field.

    Parameters
    ----------
    cls : type
        A dataclass.
    name : str
        One of its fields.

    Returns
    -------
    object
        The field's default; a fresh one for a ``default_factory``.
    """
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def given(value) -> bool:
    """Whether an option was given on the command line.

    Parameters
    ----------
    value : object
        The option's parsed value.

    Returns
    -------
    bool
        False for None and for a :class:`Default`, the marks of an option left out.
    """
    return value is not None and not isinstance(value, Default)


def options_from(args: argparse.Namespace, cls: type, **fields):
    """A dataclass built from the parsed options whose ``dest`` is one of its field names.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line. An option left out (None, or a
        :class:`Default`) is left out of the dataclass, which then applies its
        own default.
    cls : type
        The options dataclass, e.g. :class:`hts.screen.run.RunOptions`.
    **fields
        Fields set as they are (None included), in place of the option of that name.

    Returns
    -------
    object
        The ``cls`` instance.
    """
    names = {f.name for f in dataclasses.fields(cls)} - fields.keys()
    return cls(**{n: getattr(args, n) for n in names if given(getattr(args, n, None))}, **fields)


def train_config(args: argparse.Namespace):
    """The :class:`~hts.training.train.TrainConfig` of ``hts train``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``hts train`` command line.

    Returns
    -------
    hts.training.train.TrainConfig
        ``--canonical-diameter 0`` (or the old ``--diameter 0``) gives
        ``diameter=None``: training at the data's native scale.
    """
    from hts.training.train import TrainConfig

    d = args.canonical_diameter
    return options_from(args, TrainConfig, **({"diameter": d or None} if given(d) else {}))


def cluster_options(args: argparse.Namespace):
    """The :class:`~hts.screen.cluster.ClusterOptions` of ``hts run``, with its SLURM options.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``hts run`` command line.

    Returns
    -------
    hts.screen.cluster.ClusterOptions
        With ``slurm`` set to the :class:`~hts.screen.slurm.SlurmOptions` of the SLURM flags.
    """
    from hts.screen.cluster import ClusterOptions
    from hts.screen.slurm import SlurmOptions

    return options_from(args, ClusterOptions, slurm=options_from(args, SlurmOptions))


def run_options(args: argparse.Namespace, cluster=None):
    """The :class:`~hts.screen.run.RunOptions` of ``hts run``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``hts run`` command line.
    cluster : hts.screen.cluster.ClusterOptions, optional
        Its cluster options, when built already (default: :func:`cluster_options`).

    Returns
    -------
    hts.screen.run.RunOptions
    """
    from hts.screen.run import RunOptions

    return options_from(args, RunOptions, cluster=cluster or cluster_options(args))


def add_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add the subcommands ``train``, ``eval``, ``segment``, ``import``, ``run``, ``counts``, ``report`` and ``demo``.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subparsers of the ``hts`` parser.
    commands : dict
        ``commands[name](args) -> exit status`` runs subcommand ``name``; it
        is stored as ``args.func``.
    """
    for name, add in (("train", _add_train), ("eval", _add_eval), ("segment", _add_segment), ("import", _add_import), ("run", _add_run),
                      ("counts", _add_counts), ("report", _add_report), ("demo", _add_demo)):
        add(sub).set_defaults(func=commands[name])


def _add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train an Instance-U-Net (or a Table 1 variant)",
                       description="Train with Adam (lr 1e-4) on augmented crops; checkpoints record "
                       "configuration, data, steps and validation metrics. Rerun the same command to resume.")
    p.add_argument("--data", required=True, help="training data: a .npz in the shared layout, or 'synthetic'")
    p.add_argument("--val", help="validation data: a .npz, or 'synthetic' (default: none)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint path (.pt); the best one goes to <out>.best.pt")
    p.add_argument("--variant", default=Default(TRAIN, "variant"), choices=list(VARIANTS),
                   help="Table 1 variant (default %(default)s)")
    p.add_argument("--width", type=int, default=Default(TRAIN, "width"),
                   help="channels of the first step (paper 64; default %(default)s for CPU)")
    p.add_argument("--anchor-base", type=float, default=Default(TRAIN, "anchor_base"),
                   help="anchor base size in px (default %(default)s)")
    p.add_argument("--steps", type=int, default=Default(TRAIN, "steps"), help="optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=Default(TRAIN, "batch_size"),
                   help="crops per step (default %(default)s)")
    p.add_argument("--crop", type=int, default=Default(TRAIN, "crop"),
                   help="crop side in px, multiple of 16 (default %(default)s)")
    p.add_argument("--lr", type=float, default=Default(TRAIN, "lr"), help="Adam learning rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=Default(TRAIN, "seed"),
                   help="seed; fixes the run on CPU (default %(default)s)")
    p.add_argument("--decay-from", type=int, metavar="STEP",
                   help="decay the learning rate linearly from STEP to 0 at the last step (default: constant)")
    p.add_argument("--val-every", type=int, default=Default(TRAIN, "val_every"),
                   help="validate and checkpoint every N steps (default %(default)s)")
    p.add_argument("--canonical-diameter", type=float, default=Default(TRAIN, "diameter"), metavar="PX",
                   help="the model's canonical nucleus diameter: each training image is resampled so its median "
                   "nucleus has this size, and inference resamples images to it (default %(default)s); 0 trains "
                   "at the data's native scale")
    p.add_argument("--diameter", dest="canonical_diameter", type=float, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the former name of --canonical-diameter, still accepted
    p.add_argument("--n-synthetic", type=int, default=64, help="images generated when --data/--val is 'synthetic'")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="plain random crops (no mirror/scale/rotation)")
    p.add_argument("--scale-range", nargs=2, type=float, metavar=("LO", "HI"), default=Default(TRAIN, "scale_range"),
                   help="range of the random scale factor; the paper's default is drawn uniformly, any other range "
                   "log-uniformly, e.g. 0.5 2 for screens whose nuclei stray from the canonical size (default "
                   "%(default)s)")
    p.add_argument("--photometric", action="store_true", default=Default(TRAIN, "photometric"),
                   help="also perturb intensities as they differ between screens: gain, gamma, contrast, shading, "
                   "background, noise, defocus, JPEG, debris, saturation; see docs/augmentation.md (default "
                   "%(default)s)")
    p.add_argument("--init", metavar="CKPT", default=Default(TRAIN, "init"),
                   help="start from the weights of this checkpoint (fine-tuning, e.g. hts/model/weights/default.pt); "
                   "its architecture must match; the optimiser starts fresh (default: random weights)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out exists")
    p.add_argument("--device", default="cpu", help="where the network trains: cpu, cuda, cuda:1 (default %(default)s; "
                   "CUDA runs are not bit-reproducible)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that draw batches ahead (default %(default)s; 2-4 keep a GPU busy)")
    return p


def _add_eval(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a model or saved predictions on annotated data")
    p.add_argument("--data", required=True, help="annotated .npz in the shared layout")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint to run on the images (default, without --pred: the shipped model)")
    src.add_argument("--pred", help="predicted labels .npz (n, labels_0000, ...)")
    p.add_argument("--markers", choices=["auto", "rpn", "distance", "none"], default="auto",
                   help="watershed markers for --model: rpn (box centroids), distance (distance-transform peaks), "
                   "none (connected components, no watershed), or auto (default): rpn if the model has an RPN, "
                   "else distance")
    p.add_argument("--diameter", type=eval_diameter, default="gt",
                   help=f"{DIAMETER_HELP}: estimated per image, or 'gt' (default): each image's ground-truth "
                   "median, as for a known magnification; used with --model")
    p.add_argument("--save-pred", type=Path, help="also write the labels predicted by --model to this .npz "
                   "(ignored with --pred)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--tta", type=int, choices=TTA, default=1, help=f"{TTA_HELP} (default %(default)s); used with --model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _add_segment(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("segment", help="segment the nuclei of one 2D image of any size",
                       description="Segment one 2D image, or one channel (--channel) of a multi-channel TIFF, "
                       "OME-TIFF or RGB image. Images over 4096x4096 px and Zarr arrays are processed "
                       "block by block; from a Zarr array to a Zarr array in bounded memory.")
    p.add_argument("input", type=Path, help="2D image: .tif/.tiff (also multi-channel, ImageJ or OME-TIFF), .png "
                   "(also RGB), .npy or a .zarr array")
    p.add_argument("output", type=Path, help="labels (uint32, 0 = background): .tif/.tiff, .npy or .zarr")
    p.add_argument("--channel", type=channel, metavar="NAME|INDEX",
                   help="nucleus channel of a multi-channel file: an index from 0, or a name (OME-TIFF channel "
                   "name, ImageJ label; R, G, B or red, green, blue for RGB), case-insensitive (default: the "
                   "only channel; grey saved as RGB is used as is). A stack with no axis information is taken "
                   "as channels when it has at most 8 planes; z or time stacks are refused")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--diameter", type=diameter_px,
                   help=f"{DIAMETER_HELP} (default): estimated from the image")
    p.add_argument("--batch-size", type=int, help="448x448 tiles per forward pass (default 4)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--min-size", type=int, metavar="PX", help=MIN_SIZE_HELP)
    p.add_argument("--tta", type=int, choices=TTA, default=1, help=f"{TTA_HELP} (default %(default)s)")
    return p


def _add_import(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="write a folder of per-field TIFFs (ImageXpress, Operetta, ...) as an "
                       "OME-Zarr plate", description="Write a folder of per-field, per-channel TIFFs as an OME-Zarr "
                       "HCS plate (plate, well and channel metadata; one field in memory at a time). An ImageXpress "
                       "acquisition with a .jdce descriptor is read with bioio-imagexpress; other folders by file "
                       "name (--pattern). OUT appears only when complete. See docs/import.md.")
    p.add_argument("folder", type=Path, metavar="FOLDER", help="the instrument's export folder (searched recursively)")
    p.add_argument("out", type=Path, metavar="OUT", help="the plate to write, e.g. plate.zarr")
    p.add_argument("--pattern", metavar="PRESET|REGEX",
                   help="how file names give well, site and channel: 'imagexpress' (default: <plate>_<well>_s<site>"
                   "_w<channel>.tif, TimePoint_<t>/ and ZStep_<z>/ folders), 'operetta' (r01c01f01p01-ch1sk1fk1fl1."
                   "tiff), or a Python regex matched against each file's path relative to FOLDER, with named groups "
                   "well (or row and column), and optionally site, channel, plate, t, z; files that do not match "
                   "are ignored")
    p.add_argument("--channel-names", type=name_list, metavar="A,B,...",
                   help="channel names in channel order (default: the instrument's .HTD or TIFF tags, else w1, w2, ...)")
    p.add_argument("--pixel-size", type=positive, metavar="UM", help="pixel size in um (default: the instrument's, "
                   "when its files say)")
    p.add_argument("--plate", help="the plate to import when the files name several (the pattern's plate group)")
    p.add_argument("--ngff", choices=("0.4", "0.5"), default="0.5",
                   help="NGFF version: 0.5 on Zarr v3, or 0.4 on Zarr v2 (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (when the new plate is complete)")
    return p


def _add_demo(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="write a small synthetic plate and run the whole pipeline on it",
                       description="Write a 2x3-well synthetic OME-Zarr plate (2 fields of 512x512 px per well) "
                       "with known nucleus counts, run `hts run` on it on a local Dask cluster with the shipped "
                       "model and print the counts beside the truth.")
    p.add_argument("--out", type=Path, default=Path("hts-demo"),
                   help="work folder (default %(default)s); a rerun segments the plate again")
    p.add_argument("--workers", type=int, help=f"local {WORKERS_HELP}")
    p.add_argument("--screen", action="store_true", help="a 4x6-well synthetic screen with a platemap instead "
                   "(controls, a dose-response, a G2/M arrest): prints Z', EC50 and G2/M beside the truth")
    return p


def _add_run(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="segment and count every field of an OME-Zarr plate or image on Dask",
                       description="Segment every field of an OME-Zarr (NGFF 0.4/0.5) plate, or a single "
                       "image, on a Dask cluster; write NGFF labels (<image>/labels/nuclei) and count tables "
                       "(<name>.hts/ beside the output). Reruns skip finished fields.")
    p.add_argument("path", type=Path, help="OME-Zarr plate or image")
    p.add_argument("--channel", type=channel,
                   help="nucleus channel, by name (omero label) or index (default: the only one)")
    p.add_argument("--z", type=z_mode, metavar="max|all|N",
                   help="z: max (default: maximum projection), N (that plane) or all (every plane segmented "
                   "and linked into 3D nuclei; labels (t, z, y, x))")
    p.add_argument("--z-link", type=float, default=Default(RUN, "z_link"), metavar="IOU",
                   help="with --z all: a nucleus continues to the next plane when their IoU is at least IOU; "
                   "0 keeps independent plane labels (default %(default)s)")
    p.add_argument("--t", default=Default(RUN, "t"), metavar="all|N|A:B",
                   help="time points of a time series: all, N, or A:B (A to B-1); labels are a (t, z, y, x) "
                   "volume, tables get a t column; a rerun may add time points (default %(default)s)")
    p.add_argument("--out", type=path_str, help="write results to this Zarr (created with the plate layout, the "
                   "nucleus plane and the labels) instead of into PATH (for read-only plates)")
    p.add_argument("--cluster", default=Default(CLUSTER, "cluster"),
                   help="local, slurm, or a running scheduler tcp://HOST:PORT (or tls://) (default %(default)s)")
    p.add_argument("--workers", type=int, help=f"local: {WORKERS_HELP}; slurm: the most worker jobs "
                   "(in place of --max-jobs)")
    p.add_argument("--threads-per-worker", type=int,
                   help="local: task threads per worker (default: cores / workers; each worker's torch uses cores "
                   "/ workers threads either way); slurm: torch threads per task (default: a job's cores / its "
                   "worker processes)")
    p.add_argument("--batch-size", type=int, default=Default(RUN, "batch_size"),
                   help="448x448 tiles per forward pass (default %(default)s)")
    p.add_argument("--diameter", type=diameter_px, help=f"{DIAMETER_HELP} (default): estimated once per plate; "
                   "a rerun takes the diameter of the fields done earlier")
    p.add_argument("--min-size", type=int, metavar="PX", help=MIN_SIZE_HELP)
    p.add_argument("--tta", type=int, choices=TTA, default=Default(RUN, "tta"), metavar="{1,4,8}",
                   help=f"{TTA_HELP}; a rerun must give that of the fields done earlier (default %(default)s)")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    ms = p.add_argument_group("measurements and screening (tables in <name>.hts/: nuclei.parquet, image.parquet, "
                              "screen.json)")
    ms.add_argument("--measure", type=channel_list, metavar="CH,CH",
                    help="channels measured in every nucleus and its cytoplasm ring, by name or index "
                    "(default: every channel); a rerun must give those of the fields done earlier")
    ms.add_argument("--ring", type=int, default=Default(RUN, "ring"), metavar="PX",
                    help="cytoplasm ring: each nucleus grown by PX px without touching its neighbours, minus "
                    "the nucleus (0: no Cytoplasm_ features) (default %(default)s)")
    ms.add_argument("--platemap", type=path_str, metavar="MAP.csv", help=PLATEMAP_HELP)
    ms.add_argument("--readout", type=readout_list, action="extend", metavar="FEATURE", help=READOUT_HELP)
    p.add_argument("--device", help="torch device of the workers (default: cuda if the worker has a GPU, else cpu; "
                   "where a worker sees several GPUs, worker i takes cuda:i)")
    p.add_argument("--block", type=int, default=Default(RUN, "block"),
                   help="px: a single image larger than this is processed in blocks of about this side with a "
                   "halo, stitched so each nucleus has one label (default %(default)s)")
    p.add_argument("--dashboard", default=Default(CLUSTER, "dashboard"),
                   help="dashboard address of the scheduler a local or slurm run starts; a busy port falls back "
                   "to a free one (default %(default)s)")
    sl = p.add_argument_group("SLURM (--cluster slurm; an unset flag takes the dask-jobqueue profile's value)")
    sl.add_argument("--jobqueue", help="dask-jobqueue YAML profile (template: cluster/jobqueue.yaml; default: the "
                    "one Dask finds in ~/.config/dask/ or DASK_CONFIG)")
    sl.add_argument("--partition", help="SLURM partition of the worker jobs")
    sl.add_argument("--account", help="SLURM account")
    sl.add_argument("--walltime", help="worker job walltime, HH:MM:SS")
    sl.add_argument("--memory", help="memory per worker job, e.g. 32GB (default: the profile's, else 8GB per worker process)")
    sl.add_argument("--cores", type=int, help="CPU cores per worker job (default: the profile's, else 2 per worker process)")
    sl.add_argument("--gpus", type=int, default=Default(SLURM, "gpus"), help="GPUs per worker job (--gres=gpu:N, "
                    "one worker each; 0: one CPU worker) (default %(default)s)")
    sl.add_argument("--min-jobs", type=int, default=Default(SLURM, "min_jobs"),
                    help="adaptive scaling: fewest worker jobs (default %(default)s)")
    sl.add_argument("--max-jobs", type=int, default=Default(SLURM, "max_jobs"),
                    help="adaptive scaling: most worker jobs (default %(default)s)")
    sl.add_argument("--interface", help="network interface for scheduler and workers, e.g. ib0 (listens there only)")
    sl.add_argument("--lifetime", help="retire workers after this long (e.g. 50m for a 1 h walltime: keep "
                    "lifetime + stagger + 1m under it); a retiring worker finishes its tasks (up to 60 s) and "
                    "adaptive scaling replaces it")
    sl.add_argument("--lifetime-stagger", default=Default(SLURM, "lifetime_stagger"),
                    help="spread of the lifetimes, shorter than --lifetime (default %(default)s)")
    sl.add_argument("--tls", action="store_true", default=None,
                    help="TLS between scheduler, workers and client (temporary certificates)")
    sl.add_argument("--job-prologue", dest="prologue", action="append", metavar="LINE",
                    help="a line for the worker job script before the worker starts, after the profile's "
                    "(repeatable), e.g. 'source .venv/bin/activate'")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="overwrite", action="store_false", default=None,
                      help="skip fields finished by an earlier run (default)")
    mode.add_argument("--overwrite", dest="overwrite", action="store_true", default=None,
                      help="recompute every field")
    return p


def _add_counts(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("counts", help="print the per-well nucleus counts of a run as CSV",
                       description="Print the per-well counts (well,row,column,fields,n_nuclei,...) of the "
                       "output of `hts run` as CSV on stdout.")
    p.add_argument("path", type=Path, help="the output Zarr of `hts run` (or its .hts results folder)")
    p.add_argument("--fields", action="store_true", help="one row per field instead of per well")
    p.add_argument("--by-time", action="store_true", help="a time series: well,t,n_nuclei (nuclei per well and "
                   "time point)")
    return p


def _add_report(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="write an HTML report of a run (plate heatmaps, QC flags, thumbnails, metadata)",
                       description="Write index.html with plate heatmaps (nuclei, area, intensity per well; a "
                       "density map for single images), a histogram of nuclei per field, thumbnails with label "
                       "outlines, QC flags (empty, saturated, out-of-focus fields; outlier wells; edge effect) and "
                       "the run's metadata; print its path.")
    p.add_argument("path", type=Path, help="the output Zarr of `hts run` (or its .hts results folder)")
    p.add_argument("--out", type=Path, help="report folder (default: <name>.hts/report)")
    p.add_argument("--platemap", type=path_str, metavar="MAP.csv", help=PLATEMAP_HELP + " (default: the run's)")
    p.add_argument("--readout", type=readout_list, action="extend", metavar="FEATURE",
                   help=READOUT_HELP + " (default: the run's)")
    return p
