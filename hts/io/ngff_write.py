"""OME-Zarr (NGFF 0.4 / 0.5) output: label pyramids, multiscales metadata, the output plate.

Metadata is written with ``ome-zarr-py``; pixel arrays go through ``zarr``
directly so each field is written by one task without a nested Dask
computation. Reading the input is :mod:`hts.io.ngff`.

Choices (documented in the README): labels are 2D ``(y, x)`` uint32 arrays
at ``<image>/labels/nuclei/<level>``, one level per image level with the
same ``y, x`` shape, nearest-neighbour downsampled, chunked like the image's
``y, x`` chunks.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import Format, FormatV04, FormatV05
from ome_zarr.writer import (
    add_metadata,
    write_multiscales_metadata,
    write_plate_metadata,
    write_well_metadata,
)

from hts.errors import HtsError
from hts.io.ngff import LABEL_NAME, ImageInfo, Source, _first_error, _ome, level_shapes
from hts.io.staging import STAGED, fs_path, install, open_group_at, staged_name, sweep


def downsample_to(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of a 2D array to ``shape`` (labels stay labels)."""
    return downsample_region(labels, shape, (0, shape[0]), (0, shape[1]))


def downsample_region(array, shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Rows ``[r0, r1)`` x columns ``[c0, c1)`` of :func:`downsample_to` ``(array, shape)``.

    Reads only the window of ``array`` (numpy or zarr, 2D) that those output
    pixels come from: output pixel ``(y, x)`` is ``array[y * H // shape[0],
    x * W // shape[1]]``.
    """
    h, w = array.shape
    r = (np.arange(*rows) * h) // shape[0]
    c = (np.arange(*cols) * w) // shape[1]
    if r.size == 0 or c.size == 0:
        return np.zeros((r.size, c.size), array.dtype)
    window = np.asarray(array[r[0] : r[-1] + 1, c[0] : c[-1] + 1])
    return window[np.ix_(r - r[0], c - c[0])]


def _yx_axes() -> list[dict]:
    """The NGFF ``axes`` of a 2D ``(y, x)`` multiscale (the same in NGFF 0.4 and 0.5)."""
    return [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _create_array(group: zarr.Group, name: str, shape: tuple[int, int], dtype, chunks: tuple[int, int],
                  fmt: Format) -> zarr.Array:
    kwargs = {"dimension_names": ["y", "x"]} if fmt.zarr_format == 3 else {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    chunks = (max(min(chunks[0], shape[0]), 1), max(min(chunks[1], shape[1]), 1))
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, overwrite=True, **kwargs)


def create_levels(group: zarr.Group, info: ImageInfo, fmt: Format, dtype) -> list[zarr.Array]:
    """Empty 2D ``(y, x)`` arrays ``0..L-1`` with the image's level shapes and ``y, x`` chunks.

    Parameters
    ----------
    group : zarr.Group
        Where the arrays are created (existing ones are replaced).
    info : ImageInfo
        The image whose levels are mirrored.
    fmt : ome_zarr.format.Format
        The NGFF version written (Zarr v2 for 0.4, v3 for 0.5).
    dtype : numpy dtype
        Of the arrays (fill value 0).

    Returns
    -------
    list of zarr.Array
        One per level, ``level_shapes(info)[i]``.
    """
    return [_create_array(group, str(level), shape, dtype, info.chunks_yx, fmt)
            for level, shape in enumerate(level_shapes(info))]


def write_multiscales(group: zarr.Group, info: ImageInfo, fmt: Format, name: str) -> None:
    """The ``multiscales`` metadata of a 2D ``(y, x)`` pyramid in ``group``, with the image's level scales.

    Parameters
    ----------
    group : zarr.Group
        Holds arrays ``0..L-1`` (:func:`create_levels`).
    info : ImageInfo
        The image whose ``yx_scales`` are written.
    fmt : ome_zarr.format.Format
        The NGFF version.
    name : str
        The multiscale's name.
    """
    datasets = [{"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": [sy, sx]}]}
                for level, (sy, sx) in enumerate(info.yx_scales)]
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=_yx_axes(), name=name)


def omero_channel(info: ImageInfo, channel: int, plane: np.ndarray) -> dict:
    """The ``omero`` entry of the copied ``channel``: the input's (label, color, window, ...), completed.

    NGFF readers name channels from it (bioio, napari); ``color`` and
    ``window`` are required by the schema, so missing ones are filled in
    (white; the plane's range).

    Parameters
    ----------
    info : ImageInfo
        The input image's :func:`~hts.io.ngff.image_info`.
    channel : int
        The index of the copied channel.
    plane : numpy.ndarray
        The copied plane (for a missing window).

    Returns
    -------
    dict
        A JSON-able omero channel.
    """
    entry = dict(info.channel_meta[channel]) if channel < len(info.channel_meta) else {}
    lo, hi = (float(plane.min()), float(plane.max())) if plane.size else (0.0, 0.0)
    window = entry.get("window") if isinstance(entry.get("window"), dict) else {}
    entry["window"] = {"min": lo, "max": hi, "start": lo, "end": hi} | window
    entry.setdefault("color", "FFFFFF")
    entry.setdefault("label", info.channels[channel] if channel < len(info.channels) else f"c{channel}")
    entry.setdefault("active", True)
    return entry


def write_pyramid(group: zarr.Group, plane: np.ndarray, info: ImageInfo, fmt: Format, name: str,
                  channel: int | None = None) -> None:
    """``plane`` and its downsampled levels as a 2D ``(y, x)`` multiscale in ``group``, metadata last.

    Parameters
    ----------
    group : zarr.Group
        Receives arrays ``0..L-1`` and their ``multiscales`` metadata.
    plane : numpy.ndarray
        ``(H, W)``, the full-resolution level; its dtype is kept.
    info : ImageInfo
        The image whose level shapes, chunks and scales are used.
    fmt : ome_zarr.format.Format
        The NGFF version.
    name : str
        The multiscale's name.
    channel : int, optional
        The input channel ``plane`` is: its ``omero`` entry is written
        (:func:`omero_channel`), so readers keep its name.
    """
    for level, arr in enumerate(create_levels(group, info, fmt, plane.dtype)):
        arr[...] = plane if level == 0 else downsample_to(plane, arr.shape)
    write_multiscales(group, info, fmt, name)
    if channel is not None:
        write_omero(group, info, fmt, channel, plane)


def write_omero(group: zarr.Group, info: ImageInfo, fmt: Format, channel: int, plane: np.ndarray) -> None:
    """The ``omero`` metadata of a one-channel output image copied from ``channel`` (:func:`omero_channel`)."""
    add_metadata(group, {"omero": {"channels": [omero_channel(info, channel, plane)]}}, fmt=fmt)


@dataclass(frozen=True)
class LabelStage:
    """Where :func:`begin_labels` builds an image's ``labels/nuclei`` until :func:`finish_labels` installs it.

    ``name`` is the staged label group's path inside the image group (e.g.
    ``labels/.nuclei.<pid>.<token>.tmp``, or ``.labels.<pid>.<token>.tmp/nuclei``
    when the whole ``labels`` group is new), for tasks that write its arrays.
    """

    image_dir: Path  # the image group's directory
    name: str  # the staged label group, relative to the image group
    staged: Path  # the directory installed by finish_labels: a staged labels/nuclei, or a staged labels
    final: Path  # where it goes: <image>/labels/nuclei or <image>/labels
    listed: tuple[str, ...] | None  # the labels list of an existing labels group; None: the whole group is staged


def _listed_labels(image_dir: Path, fmt: Format) -> tuple[str, ...] | None:
    """The ``labels`` list of ``<image>/labels``; None when there is no such group, or one hts may replace whole.

    A ``labels`` group without a readable list holding nothing but hts's own
    ``nuclei`` (what a run killed by older versions left) may be replaced;
    one with other members is another tool's and is refused.
    """
    labels_dir = image_dir / "labels"
    if not labels_dir.is_dir():
        return None
    try:
        listed = _ome(zarr.open_group(str(labels_dir), mode="r")).get("labels")
    except Exception:  # noqa: BLE001  # unreadable metadata: judged by the members below
        listed = None
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        return tuple(listed)
    members = {e.name for e in os.scandir(labels_dir) if e.is_dir() and not STAGED.match(e.name)}
    if members <= {LABEL_NAME}:
        return None
    raise HtsError(f"{labels_dir}: a labels group without a valid 'labels' list, holding {sorted(members)}; "
                   "hts does not replace labels written by another tool: repair or remove it")


def begin_labels(image: zarr.Group, info: ImageInfo, fmt: Format) -> tuple[LabelStage, list[zarr.Array]]:
    """A staged ``<image>/labels/nuclei`` with empty uint32 levels; nothing changes at its final place yet.

    Parameters
    ----------
    image : zarr.Group
        The image group (of a local store, opened for writing).
    info : ImageInfo
        Its :func:`~hts.io.ngff.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.

    Returns
    -------
    stage : LabelStage
        For :func:`finish_labels` (or :func:`abort_labels`).
    levels : list of zarr.Array
        The staged group's uint32 ``(y, x)`` levels, zero-filled.

    Raises
    ------
    HtsError
        ``<image>/labels`` belongs to another tool and has no valid ``labels`` list.
    """
    image_dir = fs_path(image)
    listed = _listed_labels(image_dir, fmt)
    if listed is None:  # build the whole labels group, install it with one rename
        final = image_dir / "labels"
        staged = final.with_name(staged_name("labels"))
        name = f"{staged.name}/{LABEL_NAME}"
    else:
        final = image_dir / "labels" / LABEL_NAME
        staged = final.with_name(staged_name(LABEL_NAME))
        name = f"labels/{staged.name}"
    stage = LabelStage(image_dir, name, staged, final, listed)
    try:
        if listed is None:
            open_group_at(staged, mode="w", zarr_format=fmt.zarr_format)
        group = open_group_at(image_dir / name, mode="w", zarr_format=fmt.zarr_format)
        return stage, create_levels(group, info, fmt, np.uint32)
    except BaseException:  # e.g. a full disk: nothing of the stage stays behind
        abort_labels(stage)
        raise


def finish_labels(stage: LabelStage, info: ImageInfo, fmt: Format, properties: dict | None = None) -> None:
    """Write the staged label group's NGFF metadata, install it, then list it in ``labels``.

    Each step leaves a valid image: before the install the old labels (or
    none), after it the new ones; a new ``nuclei`` is listed only once it
    is in place.

    Parameters
    ----------
    stage : LabelStage
        From :func:`begin_labels`, its arrays written.
    info : ImageInfo
        The image's :func:`~hts.io.ngff.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    properties : dict, optional
        JSON-able values stored under ``image-label`` ``hts`` (e.g. ``n_nuclei``).
    """
    group = open_group_at(stage.image_dir / stage.name)
    write_multiscales(group, info, fmt, LABEL_NAME)
    label = {"source": {"image": "../../"}, **({"hts": properties} if properties else {}), "version": fmt.version}
    add_metadata(group, {"image-label": label}, fmt=fmt)
    if stage.listed is None:
        labels = open_group_at(stage.staged)
        add_metadata(labels, {"labels": [LABEL_NAME]}, fmt=fmt)
        stamp_version(labels, fmt)
    install(stage.staged, stage.final)
    if stage.listed is not None and LABEL_NAME not in stage.listed:
        labels = open_group_at(stage.image_dir / "labels")
        add_metadata(labels, {"labels": [*stage.listed, LABEL_NAME]}, fmt=fmt)
        stamp_version(labels, fmt)


def abort_labels(stage: LabelStage) -> None:
    """Delete a staged label group that will not be finished (its final place was never touched)."""
    shutil.rmtree(stage.staged, ignore_errors=True)


def write_labels(image: zarr.Group, labels: np.ndarray, info: ImageInfo, fmt: Format, properties: dict | None = None) -> None:
    """Write ``labels`` as ``<image>/labels/nuclei`` (NGFF ``image-label``), valid at every instant.

    Built under a hidden name and installed in one step (:mod:`hts.io.staging`),
    replacing an earlier ``nuclei``. A label image file (TIFF, NPY) is
    :func:`hts.io.images.write_label_file`.

    Parameters
    ----------
    image : zarr.Group
        The image group (of a local store, opened for writing).
    labels : numpy.ndarray
        ``(H, W)`` integer labels at full resolution, 0 = background
        (stored as uint32, one level per image level, nearest-neighbour
        downsampled).
    info : ImageInfo
        The image's :func:`~hts.io.ngff.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    properties : dict, optional
        As in :func:`finish_labels`.
    """
    stage, levels = begin_labels(image, info, fmt)
    try:
        for level, arr in enumerate(levels):
            arr[...] = labels if level == 0 else downsample_to(labels, arr.shape)
        finish_labels(stage, info, fmt, properties)
    except BaseException:
        abort_labels(stage)
        raise


def repair_labels(image_dir: Path) -> list[str]:
    """Put right what a killed run left in an image group's labels; returns one line per repair.

    Removes staged groups that were never installed (:func:`hts.io.staging.sweep`),
    a ``labels`` group that older versions of hts left without its list
    (holding only ``nuclei``), and a listed ``nuclei`` that is missing or
    has no metadata (dropped from the list; the field has no done marker
    then, so the run writes it again). Other tools' labels are not touched.
    Call it only while holding the run lock, before workers start.

    Parameters
    ----------
    image_dir : pathlib.Path
        An image group's directory.

    Returns
    -------
    list of str
        What was repaired (for the run's log); empty when nothing was.
    """
    done = [f"removed {p}" for p in sweep(image_dir)]
    labels_dir = image_dir / "labels"
    if not labels_dir.is_dir():
        return done
    done += [f"removed {p}" for p in sweep(labels_dir) + sweep(labels_dir / LABEL_NAME)]
    try:
        group = zarr.open_group(str(labels_dir), mode="r+")
        listed = _ome(group).get("labels")
    except Exception:  # noqa: BLE001
        group, listed = None, None
    if not isinstance(listed, list):
        members = {e.name for e in os.scandir(labels_dir) if e.is_dir()}
        if members <= {LABEL_NAME}:
            shutil.rmtree(labels_dir)
            done.append(f"removed {labels_dir} (left without its 'labels' list by a killed run)")
        return done
    nuclei = labels_dir / LABEL_NAME
    try:
        complete = "image-label" in _ome(zarr.open_group(str(nuclei), mode="r"))
    except Exception:  # noqa: BLE001  # absent or unreadable
        complete = False
    if LABEL_NAME in listed and not complete:
        shutil.rmtree(nuclei, ignore_errors=True)
        fmt = FormatV05() if group.metadata.zarr_format == 3 else FormatV04()
        add_metadata(group, {"labels": [n for n in listed if n != LABEL_NAME]}, fmt=fmt)
        done.append(f"removed the incomplete {nuclei}")
    return done


def repair_output(root: Path, source: Source) -> list[str]:
    """:func:`repair_labels` for every field of ``source`` in the output root ``root``, and staged fields swept.

    Parameters
    ----------
    root : pathlib.Path
        The output Zarr root (the input itself, or ``--out``); need not exist yet.
    source : Source
        The opened input: which image groups to look at.

    Returns
    -------
    list of str
        One line per repair.
    """
    done: list[str] = []
    if not root.is_dir():
        return done
    for well in {ref.well for ref in source.fields if ref.well}:
        done += [f"removed {p}" for p in sweep(root / well)]
    for ref in source.fields:
        image_dir = root / ref.path if ref.path else root
        if image_dir.is_dir():
            done += repair_labels(image_dir)
    return done


def stamp_version(labels_group: zarr.Group, fmt: Format) -> None:
    """NGFF 0.5 wants ``ome.version`` in every group; ome-zarr-py leaves it out of the ``labels`` group.

    Parameters
    ----------
    labels_group : zarr.Group
        An image's ``labels`` group.
    fmt : ome_zarr.format.Format
        The NGFF version (nothing is written for 0.4).
    """
    if fmt.zarr_format == 3 and "version" not in _ome(labels_group):
        add_metadata(labels_group, {"version": fmt.version}, fmt=fmt)


def create_output(source: Source, out: str | os.PathLike) -> zarr.Group:
    """A new Zarr root at ``out`` with the plate/well structure of ``source`` (images are added per field).

    Parameters
    ----------
    source : Source
        The opened input (:func:`~hts.io.ngff.open_source`).
    out : str or os.PathLike
        The output root; an existing one is reused (metadata already there is kept).

    Returns
    -------
    zarr.Group
        The root, opened for writing, in the input's NGFF version.
    """
    fmt = source.fmt
    root = zarr.open_group(str(out), mode="a", zarr_format=fmt.zarr_format)
    if source.kind == "plate":
        plate = source.plate
        wells = [w["path"] for w in plate["wells"]]
        if "plate" not in _ome(root):
            write_plate_metadata(root, [r["name"] for r in plate["rows"]], [c["name"] for c in plate["columns"]],
                                 wells, fmt=fmt, field_count=plate.get("field_count"), name=plate.get("name"))
        by_well: dict[str, list[str]] = {}
        for f in source.fields:
            by_well.setdefault(f.well, []).append(f.field)
        for well, images in by_well.items():
            wg = root.require_group(well)
            if "well" not in _ome(wg):
                write_well_metadata(wg, images, fmt=fmt)
    return root


def open_output(source: Source, out: str | os.PathLike | None) -> zarr.Group:
    """The Zarr root that receives labels: the input itself, or a new tree at ``out``.

    Parameters
    ----------
    source : Source
        The opened input (:func:`~hts.io.ngff.open_source`).
    out : str, os.PathLike or None
        The output root; None (or the input's own path): write into the input.

    Returns
    -------
    zarr.Group
        The root, opened for writing.

    Raises
    ------
    HtsError
        The input is not writable, or ``out`` exists and is not a Zarr group.
    """
    if out is None or Path(out).resolve() == source.path.resolve():
        try:
            return zarr.open_group(str(source.path), mode="r+")
        except Exception as e:
            raise HtsError(f"{source.path}: cannot write labels into the input ({_first_error(e)}); use --out") from None
    if Path(out).exists() and not (Path(out) / ".zgroup").exists() and not (Path(out) / "zarr.json").exists():
        raise HtsError(f"--out {out}: exists and is not a Zarr group")
    return create_output(source, out)
