"""The per-field work of a run, as the Dask tasks execute it on workers: infer -> watershed -> write.

Each function takes and returns small, picklable values (numpy arrays and
dataclasses); the model is loaded once per worker process and kept
(:func:`worker_model`). Writing a field is idempotent and committed by a done
marker written last (:mod:`hts.io.results`), so a task re-run after a worker died
rewrites the same bytes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import zarr

import pandas as pd

from hts.analysis.count import field_quality, measure_nuclei, measure_nuclei_3d
from hts.analysis.measure import RING_PX, channel_names, measure_objects, with_metadata
from hts.analysis.platemap import well_id
from hts.engine.infer import Prediction, precision
from hts.engine.pipeline import infer_image, resolve_model, watershed_prediction
from hts.engine.preprocess import check_image
from hts.errors import HtsError
from hts.io.ngff import FieldRef
from hts.io.ngff_image import ImageInfo, image_info, read_plane, read_stack, resolve_channel
from hts.io.ngff_pyramid import write_pyramid
from hts.io.ngff_write import write_labels
from hts.io.results import Results
from hts.io.staging import fs_path, open_group_at, staged_group
from hts.model import InstanceUNet


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for one field; the same for every field of a run but ``ref``."""

    ref: FieldRef
    source: str  # input Zarr root
    out: str  # output Zarr root (may equal ``source``)
    results: str  # the run's results folder
    version: str  # NGFF version of the output
    copy_image: bool  # write the segmented plane as the output field's image (``--out``)
    channel: str | int | None
    z: int | None
    diameter: float | None
    model: str | None  # checkpoint path; None: the shipped default
    device: str | None
    batch_size: int
    threads: int  # torch threads per task
    min_size: int | None = None  # px; None: by the diameter (``hts.engine.watershed.size_params``)
    tta: int = 1  # test-time augmentation (``hts.engine.tta``): 1 none, 4 flips, 8 flips and rotations
    measure: tuple[tuple[int, str], ...] = ()  # (channel index, column-safe name) measured per nucleus
    ring: int = RING_PX  # cytoplasm ring width, px (0: none)
    plate: str = ""  # Metadata_Plate of the tables
    z_all: bool = False  # every z-plane segmented and linked into 3D nuclei (``--z all``)
    z_link: float = 0.25  # IoU that links a nucleus between planes (``--z-link``; 0: planes independent)
    volume: bool = False  # labels are a volume written per time point (time series or --z all)

    @property
    def image_path(self) -> str:
        """The input image group of this field (the root for a single image)."""
        return f"{self.source}/{self.ref.path}" if self.ref.path else self.source

    def image_info(self):
        """The input image's ``multiscales`` (:class:`hts.io.ngff_image.ImageInfo`)."""
        return image_info(zarr.open_group(self.image_path, mode="r"), self.image_path)


@dataclass
class Inferred:
    """The network output of one field plus the plane it came from (needed for intensities).

    With ``--z all``: ``plane`` is the ``(Z, H, W)`` stack and ``prediction`` a list of Z predictions.
    """

    plane: np.ndarray
    prediction: Prediction | list[Prediction] | None
    seconds: float
    where: dict  # provenance: the worker and the GPUs it was granted (recorded in the done marker)


def worker_model(model: str | None, threads: int) -> InstanceUNet:
    """The model, loaded once per worker process (checksum-verified), in eval mode.

    Sets ``threads`` torch threads for the calling thread: OpenMP's thread
    count is per calling thread, and Dask runs tasks on several.

    Parameters
    ----------
    model : str or None
        Checkpoint path; None: the shipped model.
    threads : int
        Torch threads for the calling thread (at least 1).

    Returns
    -------
    InstanceUNet
        The cached model (two at most per process).
    """
    if torch.get_num_threads() != max(threads, 1):
        torch.set_num_threads(max(threads, 1))
    return _load(model)


@lru_cache(maxsize=2)
def _load(model: str | None) -> InstanceUNet:
    return resolve_model(model).eval()


def read_field(job: Job, region: tuple[slice, slice] | None = None, check: bool = True) -> np.ndarray:
    """The 2D nucleus plane of a field, or a ``region`` of it.

    Parameters
    ----------
    job : Job
        The field, its channel and z plane.
    region : tuple of slice, optional
        ``(y, x)`` slices of the full-resolution plane; None: all of it.
    check : bool
        Check the pixels (:func:`hts.engine.preprocess.check_image`).

    Returns
    -------
    numpy.ndarray
        Shape (h, w): t = 0, the nucleus channel, plane ``job.z`` or the maximum over z.

    Raises
    ------
    HtsError
        Naming the field: a missing channel or z plane, or (with ``check``) bad pixels.
    """
    where = job.image_path
    group = zarr.open_group(where, mode="r")
    info = image_info(group, where)
    plane = read_plane(group, info, resolve_channel(info, job.channel, where), job.z, region, job.ref.t or 0)
    return check_image(plane, name=_where(job)) if check else plane


def _where(job: Job) -> str:
    return job.image_path if job.ref.t is None else f"{job.image_path} t={job.ref.t}"


def read_field_stack(job: Job) -> np.ndarray:
    """Every z-plane of the nucleus channel at the job's time point, each checked: ``(Z, H, W)``."""
    group = zarr.open_group(job.image_path, mode="r")
    info = image_info(group, job.image_path)
    stack = read_stack(group, info, resolve_channel(info, job.channel, job.image_path), job.ref.t or 0)
    return np.stack([check_image(p, name=f"{_where(job)} z={z}") for z, p in enumerate(stack)])


def measured_channels(info: ImageInfo, measure: tuple[str | int, ...] | None, where: str) -> tuple[tuple[int, str], ...]:
    """The channels measured per nucleus (``--measure``): their indices and column-safe names.

    Parameters
    ----------
    info : ImageInfo
        The first field's metadata (every field of a plate has the same channels).
    measure : tuple of str or int, or None
        Channel names (omero labels) or indices; None: every channel.
    where : str
        The image, for messages.

    Returns
    -------
    tuple of (int, str)
        ``(index, name)`` in the order asked (channel order for None); names
        from :func:`hts.analysis.measure.channel_names`.

    Raises
    ------
    HtsError
        An unknown channel name or index (naming ``--measure`` and the channels there are).
    """
    n = info.axis_size("c") if "c" in info.axes else 1
    names = channel_names([info.channels[i] if i < len(info.channels) else "" for i in range(n)])
    if measure is None:
        return tuple(enumerate(names))
    out = []
    for m in measure:
        try:
            index = resolve_channel(info, m, where)
        except HtsError as e:
            raise HtsError(f"--measure {m}: {str(e).split(': ', 1)[-1]}") from None
        if index not in [i for i, _ in out]:
            out.append((index, names[index]))
    return tuple(out)


def field_planes(job: Job, info: ImageInfo, nucleus_plane: np.ndarray) -> dict[str, np.ndarray]:
    """The measured channels' planes of a field, each read once (the nucleus channel's is the one segmented).

    Parameters
    ----------
    job : Job
        The field, its time point and its :attr:`Job.measure` channels.
    info : ImageInfo
        The field's metadata (:meth:`Job.image_info`).
    nucleus_plane : (H, W) ndarray
        The nucleus channel's plane, already read for inference.

    Returns
    -------
    dict of str to (H, W) ndarray
        Column-safe channel name -> plane (the job's time point, plane ``job.z`` or the maximum over z).
    """
    if not job.measure:
        return {}
    group = zarr.open_group(job.image_path, mode="r")
    nucleus = resolve_channel(info, job.channel, job.image_path)
    return {name: nucleus_plane if index == nucleus else read_plane(group, info, index, job.z, None, job.ref.t or 0)
            for index, name in job.measure}


def field_table(job: Job, info: ImageInfo, labels: np.ndarray, plane: np.ndarray) -> pd.DataFrame:
    """The nucleus table of a field: hts's columns, then the CellProfiler-named ones, with ``t`` for a time point.

    Parameters
    ----------
    job : Job
        The field (plate name, well, site, time point, channels, ring).
    info : ImageInfo
        Its metadata.
    labels : (H, W) or, with ``--z all``, (Z, H, W) uint32 ndarray
        Its nucleus labels.
    plane : ndarray
        Its nucleus plane (the stack with ``--z all``).

    Returns
    -------
    pandas.DataFrame
        One row per nucleus in label order: :func:`hts.analysis.count.measure_nuclei`
        (``measure_nuclei_3d`` for 3D nuclei, which have no CellProfiler
        columns yet), then ``Metadata_Plate``, ``Metadata_Well`` (``B03``),
        ``Metadata_Site``, ``Metadata_ObjectNumber`` and the features.
    """
    ref = job.ref
    if job.z_all:
        table = measure_nuclei_3d(labels, plane)
    else:
        well = well_id(ref.row, ref.column) if ref.well else ""
        site = int(ref.field) if ref.field and ref.field.isdigit() else (ref.field or 0)
        profile = with_metadata(measure_objects(labels, field_planes(job, info, plane), job.ring), job.plate, well,
                                site)
        table = pd.concat([measure_nuclei(labels, plane), profile], axis=1)
    if ref.t is not None:
        table.insert(1, "t", np.int64(ref.t))
    return table


def worker_device(device: str | None) -> str | None:
    """The torch device of this worker.

    Parameters
    ----------
    device : str or None
        The ``--device`` of the run.

    Returns
    -------
    str or None
        ``device`` when given, or when fewer than two GPUs are visible (None:
        the default device); else ``cuda:i`` for the worker's index ``i`` in
        its job (dask-jobqueue names workers ``<job>-<i>``, LocalCluster
        ``<i>``), modulo the GPUs visible.
    """
    if device is not None or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        index = int(str(get_worker().name).rsplit("-", 1)[-1])
    except (ValueError, ImportError):
        return device
    return f"cuda:{index % torch.cuda.device_count()}"


def infer_field(job: Job) -> Inferred:
    """Read the field and run the network (the GPU stage).

    Parameters
    ----------
    job : Job
        The field.

    Returns
    -------
    Inferred
        The plane, the prediction, the seconds taken and the :func:`provenance`.
    """
    t0 = time.perf_counter()
    net = worker_model(job.model, job.threads)
    device = worker_device(job.device)
    if job.z_all:  # every plane, one at a time through the network: (Z, H, W) and Z predictions
        stack = read_field_stack(job)
        preds = [infer_image(net, p, job.diameter, device=device, batch_size=job.batch_size, tta=job.tta)
                 for p in stack]
        return Inferred(stack, preds, time.perf_counter() - t0, provenance(device))
    plane = read_field(job)
    pred = infer_image(net, plane, job.diameter, device=device, batch_size=job.batch_size, tta=job.tta)
    return Inferred(plane, pred, time.perf_counter() - t0, provenance(device))


def provenance(device: str | None) -> dict:
    """Which worker ran the inference, on which device, with which GPUs granted.

    Parameters
    ----------
    device : str or None
        The device the inference ran on (None: the default, cuda when available).

    Returns
    -------
    dict
        ``infer_worker`` (the Dask worker's name, or ``local``), ``device``,
        ``precision`` (``bf16`` or ``fp32``, :func:`hts.engine.infer.precision`),
        ``cuda_visible_devices`` and ``slurm_job`` (from the environment, or None).
    """
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        name = "local"
    dev = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return {"infer_worker": name, "device": dev, "precision": precision(torch.device(dev)),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "slurm_job": os.environ.get("SLURM_JOB_ID")}


def watershed_field(job: Job, inferred: Inferred) -> tuple[np.ndarray, Inferred]:
    """Labels of a field from its prediction (the CPU stage).

    Parameters
    ----------
    job : Job
        The field (diameter and size rule).
    inferred : Inferred
        Its :func:`infer_field` result.

    Returns
    -------
    tuple
        ``(labels, inferred)``: uint32 labels and ``inferred`` without the
        prediction's maps and boxes, so that little goes to the write task.
    """
    net = worker_model(job.model, job.threads)
    if job.z_all:
        from hts.engine.zlink import link_planes, split_waists

        planes = np.stack([watershed_prediction(net, p, job.diameter, min_size=job.min_size)
                           for p in inferred.prediction])
        linked = split_waists(link_planes(planes, job.z_link)) if job.z_link > 0 else link_planes(planes, 0)
        return linked, Inferred(inferred.plane, None, inferred.seconds, inferred.where)
    labels = watershed_prediction(net, inferred.prediction, job.diameter, min_size=job.min_size)
    return labels, Inferred(inferred.plane, Prediction(np.empty((0, 0), np.float32), inferred.prediction.boxes[:0],
                                                        inferred.prediction.scores[:0]), inferred.seconds,
                            inferred.where)


def write_field(job: Job, segmented: tuple[np.ndarray, Inferred]) -> dict:
    """Write labels (and, with ``--out``, the plane), the nucleus table, then the done marker.

    Parameters
    ----------
    job : Job
        The field.
    segmented : tuple
        Its :func:`watershed_field` result.

    Returns
    -------
    dict
        What :meth:`hts.io.results.Results.commit` recorded in the done
        marker: nuclei, pixels, seconds, provenance and quality of the field.

    Raises
    ------
    HtsError
        More nuclei than uint32 labels hold.
    """
    labels, inferred = segmented
    ref, fmt = job.ref, Results.fmt_of(job.version)
    if labels.max(initial=0) >= 2**32 - 1:
        raise HtsError(f"{ref.key}: too many nuclei for uint32 labels")
    if job.volume:
        return _write_time_point(job, labels, inferred)
    info = job.image_info()
    properties = {"n_nuclei": int(labels.max(initial=0))}
    table = field_table(job, info, labels, inferred.plane)
    objects = {"label": table["label"].to_numpy(), "area": table["area"].to_numpy()}
    root = open_group_at(job.out)
    channel = resolve_channel(info, job.channel, job.image_path) if job.copy_image else None
    if job.copy_image and ref.path:  # the whole output field appears at once, image and labels
        with staged_group(fs_path(root) / ref.path, fmt.zarr_format) as image:
            write_pyramid(image, inferred.plane, info, fmt, ref.key, channel)
            write_labels(image, labels, info, fmt, properties, objects)
    else:
        if job.copy_image:  # a single image: the output root is the image (no metadata until complete)
            write_pyramid(root, inferred.plane, info, fmt, ref.key, channel)
        write_labels(root[ref.path] if ref.path else root, labels, info, fmt, properties, objects)
    return Results(job.results).commit(ref, table, pixels=labels.size, seconds=inferred.seconds,
                                       extra={**inferred.where, **field_quality(inferred.plane)})


def _write_time_point(job: Job, labels: np.ndarray, inferred: Inferred) -> dict:
    """Write one time point's planes into the field's label volume, its nucleus table, then its done marker.

    The volume was installed by the driver (:func:`hts.io.ngff_volume.ensure_label_volume`)
    before the field's first time point was submitted.
    """
    from hts.io.ngff_volume import write_time_point

    ref, info = job.ref, job.image_info()
    root = open_group_at(job.out)
    write_time_point(root[ref.path] if ref.path else root, info, ref.t, labels)
    table = field_table(job, info, labels, inferred.plane)
    plane = inferred.plane.max(axis=0) if job.z_all else inferred.plane
    return Results(job.results).commit(ref, table, pixels=labels.size, seconds=inferred.seconds,
                                       extra={**inferred.where, **field_quality(plane),
                                              **({"t": ref.t} if ref.t is not None else {})})
