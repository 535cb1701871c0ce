"""OME-Zarr (NGFF 0.4 / 0.5) output: label groups installed in one step, the output plate, their repair.

Labels are built under a hidden name and installed by rename (:mod:`hts.io.staging`);
their arrays and ``multiscales`` follow the image (:mod:`hts.io.ngff_pyramid`).
Metadata is written with ``ome-zarr-py``. Reading the input is :mod:`hts.io.ngff`.

Choices (documented in the README): labels are uint32 arrays at
``<image>/labels/nuclei/<level>`` with the image's axes without ``c``
(``(y, x)`` for a ``cyx`` image, ``(t, z, y, x)`` for ``tczyx``; every axis
but ``y, x`` of size 1, since one 2D plane is segmented), one level per image
level with the same ``y, x`` shape, nearest-neighbour downsampled, chunked
like the image's ``y, x`` chunks; ``image-label`` carries ``version``,
``source``, ``colors`` and per-nucleus ``properties`` (up to
:data:`MAX_LABEL_ENTRIES` nuclei). A field copied with ``--out`` keeps all
the image's axes, ``c`` of size 1.
"""

from __future__ import annotations

import colorsys
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import Format, FormatV04, FormatV05
from ome_zarr.writer import add_metadata, write_plate_metadata, write_well_metadata

from hts.errors import HtsError
from hts.io.ngff import Source
from hts.io.ngff_image import ImageInfo
from hts.io.ngff_meta import LABEL_NAME, ome_attrs, reason
from hts.io.ngff_pyramid import create_levels, downsample_to, write_multiscales
from hts.io.planes import PlaneView
from hts.io.staging import STAGED, fs_path, install, open_group_at, staged_name, sweep


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
        listed = ome_attrs(zarr.open_group(str(labels_dir), mode="r")).get("labels")
    except Exception:  # noqa: BLE001  # unreadable metadata: judged by the members below
        listed = None
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        return tuple(listed)
    members = {e.name for e in os.scandir(labels_dir) if e.is_dir() and not STAGED.match(e.name)}
    if members <= {LABEL_NAME}:
        return None
    raise HtsError(f"{labels_dir}: a labels group without a valid 'labels' list, holding {sorted(members)}; "
                   "hts does not replace labels written by another tool: repair or remove it")


def begin_labels(image: zarr.Group, info: ImageInfo, fmt: Format,
                 sizes: dict[str, int] | None = None) -> tuple[LabelStage, list[PlaneView]]:
    """A staged ``<image>/labels/nuclei`` with empty uint32 levels; nothing changes at its final place yet.

    Parameters
    ----------
    image : zarr.Group
        The image group (of a local store, opened for writing).
    info : ImageInfo
        Its :func:`~hts.io.ngff_image.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    sizes : dict of str to int, optional
        A label volume's ``t`` / ``z`` sizes (:func:`hts.io.ngff_pyramid.create_levels`).

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
        return stage, create_levels(group, info, fmt, np.uint32, sizes=sizes)
    except BaseException:  # e.g. a full disk: nothing of the stage stays behind
        abort_labels(stage)
        raise


def finish_labels(stage: LabelStage, info: ImageInfo, fmt: Format, properties: dict | None = None,
                  objects: dict[str, np.ndarray] | None = None) -> None:
    """Write the staged label group's NGFF metadata, install it, then list it in ``labels``.

    Each step leaves a valid image: before the install the old labels (or
    none), after it the new ones; a new ``nuclei`` is listed only once it
    is in place.

    Parameters
    ----------
    stage : LabelStage
        From :func:`begin_labels`, its arrays written.
    info : ImageInfo
        The image's :func:`~hts.io.ngff_image.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    properties : dict, optional
        JSON-able values stored under ``image-label`` ``hts`` (e.g. ``n_nuclei``).
    objects : dict of str to numpy.ndarray, optional
        Per-nucleus columns, ``label`` first (:func:`image_label`).
    """
    group = open_group_at(stage.image_dir / stage.name)
    write_multiscales(group, info, fmt, LABEL_NAME)
    add_metadata(group, {"image-label": image_label(fmt, properties, objects)}, fmt=fmt)
    if stage.listed is None:
        labels = open_group_at(stage.staged)
        add_metadata(labels, {"labels": [LABEL_NAME]}, fmt=fmt)
        stamp_version(labels, fmt)
    install(stage.staged, stage.final)
    if stage.listed is not None and LABEL_NAME not in stage.listed:
        labels = open_group_at(stage.image_dir / "labels")
        add_metadata(labels, {"labels": [*stage.listed, LABEL_NAME]}, fmt=fmt)
        stamp_version(labels, fmt)


MAX_LABEL_ENTRIES = 20_000  # nuclei listed in image-label colors/properties; beyond (whole slides) the table has them


def label_color(value: int) -> list[int]:
    """A distinct, stable RGBA colour (0-255) for label ``value``: golden-ratio hues, 0 transparent."""
    if value == 0:
        return [0, 0, 0, 0]
    r, g, b = colorsys.hsv_to_rgb((value * 0.618033988749895) % 1.0, 0.75, 1.0)
    return [round(r * 255), round(g * 255), round(b * 255), 255]


def image_label(fmt: Format, properties: dict | None = None, objects: dict[str, np.ndarray] | None = None) -> dict:
    """The ``image-label`` metadata of hts's nucleus labels.

    Parameters
    ----------
    fmt : ome_zarr.format.Format
        The NGFF version (its ``version`` key; NGFF 0.4 asks for it, 0.5 has it under ``ome``).
    properties : dict, optional
        JSON-able run values stored under ``hts`` (e.g. ``n_nuclei``).
    objects : dict of str to numpy.ndarray, optional
        Per-nucleus columns of equal length, ``label`` (the label value) and
        e.g. ``area`` (px): one ``colors`` entry (:func:`label_color`) and one
        ``properties`` entry per nucleus, as napari and iohub read them.
        Without them, or with more than :data:`MAX_LABEL_ENTRIES` nuclei, only
        the background's transparent colour is written (the nucleus table
        holds them all).

    Returns
    -------
    dict
        ``version``, ``source`` (``../../``: the image), ``colors``,
        ``properties`` (when ``objects`` are given) and ``hts``.
    """
    label: dict = {"version": fmt.version, "source": {"image": "../../"},
                   "colors": [{"label-value": 0, "rgba": label_color(0)}]}
    if objects is not None and 0 < len(objects["label"]) <= MAX_LABEL_ENTRIES:
        # ome-zarr-models asks colors and properties to list the same label values
        columns = {k: np.asarray(v).tolist() for k, v in objects.items()}
        values = [int(v) for v in columns.pop("label")]
        label["colors"] = [{"label-value": v, "rgba": label_color(v)} for v in values]
        label["properties"] = [{"label-value": v, **{k: c[i] for k, c in columns.items()}} for i, v in enumerate(values)]
    if properties:
        label["hts"] = properties
    return label


def abort_labels(stage: LabelStage) -> None:
    """Delete a staged label group that will not be finished (its final place was never touched)."""
    shutil.rmtree(stage.staged, ignore_errors=True)


def write_labels(image: zarr.Group, labels: np.ndarray, info: ImageInfo, fmt: Format, properties: dict | None = None,
                 objects: dict[str, np.ndarray] | None = None) -> None:
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
        The image's :func:`~hts.io.ngff_image.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    properties, objects : dict, optional
        As in :func:`finish_labels`.
    """
    stage, levels = begin_labels(image, info, fmt)
    try:
        for level, arr in enumerate(levels):
            arr[...] = labels if level == 0 else downsample_to(labels, arr.shape)
        finish_labels(stage, info, fmt, properties, objects)
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
        listed = ome_attrs(group).get("labels")
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
        complete = "image-label" in ome_attrs(zarr.open_group(str(nuclei), mode="r"))
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
    if fmt.zarr_format == 3 and "version" not in ome_attrs(labels_group):
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
        if "plate" not in ome_attrs(root):
            write_plate_metadata(root, [r["name"] for r in plate["rows"]], [c["name"] for c in plate["columns"]],
                                 wells, fmt=fmt, field_count=plate.get("field_count"), name=plate.get("name"))
        by_well: dict[str, list[str]] = {}
        for f in source.fields:
            by_well.setdefault(f.well, []).append(f.field)
        for well, images in by_well.items():
            wg = root.require_group(well)
            if "well" not in ome_attrs(wg):
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
            raise HtsError(f"{source.path}: cannot write labels into the input ({reason(e)}); use --out") from None
    if Path(out).exists() and not (Path(out) / ".zgroup").exists() and not (Path(out) / "zarr.json").exists():
        raise HtsError(f"--out {out}: exists and is not a Zarr group")
    return create_output(source, out)
