"""Whole-slide images on Dask: blocks with a halo, stitched so that every nucleus has one label in the image.

The two passes of :mod:`hts.engine.blocks`, its per-block functions submitted
as Dask tasks over the block grid of :mod:`hts.engine.stitch`:

1. ``infer-bIII_JJJ`` (read + network) / ``store-...`` (watershed,
   :func:`hts.engine.blocks.store_owned`): each block plus its halo is
   segmented and reduced to the nuclei it owns (centroid in its core); those
   labels go to a scratch Zarr in the results folder with a per-block
   marker, so an interrupted run resumes block by block;
2. ``stitch-...``: global ids follow from the per-block counts (grid order,
   :func:`hts.engine.blocks.label_offsets`); each block core is assembled
   from its own and its neighbours' owned nuclei
   (:func:`hts.engine.blocks.stitch_core`) and written (cores are
   chunk-aligned, so no two tasks write one chunk), with the nucleus table of
   the nuclei it owns; then ``pyramid-...`` tasks fill the lower levels,
   chunk-aligned too.

The label metadata and the field's done marker come last.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from tqdm import tqdm

from hts.analysis.count import measure_nuclei
from hts.engine.blocks import (
    block_name,
    label_offsets,
    read_owned,
    stitch_core,
    store_owned,
)
from hts.engine.pipeline import HALO_NETWORK_PX, infer_image, watershed_prediction
from hts.engine.preprocess import check_image
from hts.engine.stitch import Block, aligned_blocks, block_grid
from hts.io.ngff_image import image_info, level_shapes, resolve_channel
from hts.io.ngff_pyramid import (
    create_levels,
    downsample_region,
    write_multiscales,
    write_omero,
)
from hts.io.ngff_write import begin_labels, finish_labels
from hts.io.planes import PlaneView, trailing_plane
from hts.io.results import Results
from hts.io.staging import open_group_at
from hts.screen.cluster import windowed
from hts.screen.tasks import Job, read_field, worker_device, worker_model


@dataclass(frozen=True)
class BlockJob:
    """One block of a slide and what its tasks share.

    Attributes
    ----------
    job : Job
        The slide's field job (its ``diameter`` already rounded by
        :func:`hts.engine.stitch.aligned_blocks`).
    block : Block
        The block (input px of the slide's level 0).
    value_range : tuple of float
        ``(lo, hi)``: the slide's intensity range, the same for every block.
    """

    job: Job
    block: Block
    value_range: tuple[float, float]

    @property
    def key(self) -> str:
        """``"bIII_JJJ"`` (:func:`hts.engine.blocks.block_name`): task keys, scratch names."""
        return block_name(self.block.index)


def _scratch(job: Job) -> Path:
    return Path(job.results) / "slide"


def infer_block(bj: BlockJob):
    """Task ``infer-bIII_JJJ``: read the block plus halo and run the network.

    Parameters
    ----------
    bj : BlockJob
        The block; normalised with the slide's intensity range.

    Returns
    -------
    hts.engine.infer.Prediction
        Probability (float32, shape of ``bj.block.region``) and proposals, in
        input px of the region.
    """
    region = check_image(read_field(bj.job, bj.block.region_slices, check=False), name=f"{bj.job.source} {bj.key}")
    net = worker_model(bj.job.model, bj.job.threads)
    return infer_image(net, region, bj.job.diameter, device=worker_device(bj.job.device), batch_size=bj.job.batch_size,
                       value_range=bj.value_range, tta=bj.job.tta)


def store_block(bj: BlockJob, prediction) -> int:
    """Task ``store-bIII_JJJ``: watershed, then store the nuclei the block owns and the block's marker.

    Parameters
    ----------
    bj : BlockJob
        The block.
    prediction : hts.engine.infer.Prediction
        Its network output (:func:`infer_block`).

    Returns
    -------
    int
        The block's nucleus count, also written to its marker
        ``<results>/slide/bIII_JJJ.json`` (after its labels, so a marker
        means the block is stored).
    """
    net = worker_model(bj.job.model, bj.job.threads)
    labels = watershed_prediction(net, prediction, bj.job.diameter, min_size=bj.job.min_size)
    scratch = _scratch(bj.job)
    n = store_owned(labels, bj.block, zarr.open_group(str(scratch / "owned.zarr"), mode="a"))
    (scratch / f"{bj.key}.json").write_text(json.dumps({"count": n}))
    return n


def stitch_block(bj: BlockJob, blocks: dict, offsets: dict, labels: str) -> pd.DataFrame:
    """Task ``stitch-bIII_JJJ``: write the block core's global labels (and image, with ``copy_image``).

    Parameters
    ----------
    bj : BlockJob
        The block.
    blocks : dict
        The slide's grid, :class:`Block` by grid index.
    offsets : dict
        Global id offset of each block by grid index
        (:func:`hts.engine.blocks.label_offsets`).
    labels : str
        The staged label group inside the image (:attr:`hts.io.ngff_write.LabelStage.name`).

    Returns
    -------
    pandas.DataFrame
        The table of the nuclei the block owns (:func:`hts.analysis.count.measure_nuclei`),
        one row per nucleus, with global ``label`` (uint32) and centroids in
        px of the slide.
    """
    owned = cache(partial(read_owned, zarr.open_group(str(_scratch(bj.job) / "owned.zarr"), mode="r")))
    core = stitch_core(bj.block.index, blocks, offsets, owned)
    _array(bj.job.out, bj.job.ref.path, labels, 0, "r+")[bj.block.core_slices] = core
    if bj.job.copy_image:
        _array(bj.job.out, bj.job.ref.path, "", 0, "r+")[bj.block.core_slices] = read_field(
            bj.job, bj.block.core_slices, check=False)
    table = measure_nuclei(owned(bj.block.index), read_field(bj.job, bj.block.region_slices, check=False))
    table["label"] = (table["label"] + offsets[bj.block.index]).astype(np.uint32)
    table["centroid_y"] += bj.block.region[0]
    table["centroid_x"] += bj.block.region[2]
    return table


def _array(out: str, image: str, name: str, level: int, mode: str) -> PlaneView:
    """The ``(y, x)`` plane of level ``level`` of multiscale ``name`` ("" = the image) of group ``image`` in ``out``."""
    return trailing_plane(zarr.open_array("/".join(p for p in (out, image, name, str(level)) if p), mode=mode))


def pyramid_region(out: str, image: str, level: int, rows: tuple[int, int], cols: tuple[int, int],
                   names: tuple[str, ...]) -> None:
    """Task ``pyramid-lL-Y_X``: fill a region of a lower level of each multiscale from its level 0.

    Parameters
    ----------
    out : str
        The output Zarr root.
    image : str
        The image group in it ("" = the root).
    level : int
        The level to fill (>= 1).
    rows, cols : tuple of int
        ``[r0, r1)`` x ``[c0, c1)``: the region, px of that level.
    names : tuple of str
        The multiscales: the staged label group (:attr:`hts.io.ngff_write.LabelStage.name`),
        and ``""`` for the image itself.

    Returns
    -------
    None
        Nearest-neighbour values (:func:`hts.io.ngff_pyramid.downsample_region`),
        as :func:`hts.io.ngff_pyramid.downsample_to` writes a whole image.
    """
    for name in names:
        base, dst = _array(out, image, name, 0, "r"), _array(out, image, name, level, "r+")
        dst[rows[0] : rows[1], cols[0] : cols[1]] = downsample_region(base, dst.shape, rows, cols)


def _grid(shape: tuple[int, int], step: tuple[int, int]):
    for y in range(0, shape[0], step[0]):
        for x in range(0, shape[1], step[1]):
            yield (y, min(y + step[0], shape[0])), (x, min(x + step[1], shape[1]))


def run_slide(client, job: Job, block: int, gpu: dict | None, window: int, progress: bool, log) -> dict:
    """Segment one large image block by block on the cluster and commit it as a done field.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    job : Job
        The field: a single image (``job.ref``) of the run.
    block : int
        Wanted block side, px (input frame); rounded up to whole network
        strides (:func:`hts.engine.stitch.aligned_blocks`).
    gpu : dict or None
        Dask resources an ``infer-...`` task asks for (e.g. ``{"GPU": 1}``).
    window : int
        Blocks in flight during the first pass.
    progress : bool
        Show progress bars.
    log : callable
        ``log(message)``: one line about the block grid.

    Returns
    -------
    dict
        The field's done summary (:meth:`hts.io.results.Results.commit`).

    Raises
    ------
    HtsError
        When a block fails, or the nuclei do not fit uint32 labels.
    """
    from hts.engine.preprocess import intensity_range

    src = zarr.open_group(job.source, mode="r")
    info = image_info(src, job.source)
    shape = level_shapes(info)[0]
    net = worker_model(job.model, job.threads)
    diameter, side, halo = aligned_blocks(job.diameter, net.config.diameter, block, HALO_NETWORK_PX)
    job = replace(job, diameter=diameter)
    blocks = block_grid(shape, side, halo)
    step = max(1, int(np.ceil(np.sqrt(shape[0] * shape[1] / (1 << 22)))))
    value_range = intensity_range(read_field(job, (slice(None, None, step), slice(None, None, step)), check=False))
    jobs = {b.index: BlockJob(job, b, value_range) for b in blocks.values()}
    scratch = _scratch(job)
    scratch.mkdir(parents=True, exist_ok=True)
    log(f"{job.source}: {shape[0]} x {shape[1]} px in {len(blocks)} blocks of {side} px (halo {halo} px, "
        f"diameter {diameter} px)")

    def submit_segment(bj: BlockJob):
        pred = client.submit(infer_block, bj, key=f"infer-{bj.key}", resources=gpu, pure=False)
        return client.submit(store_block, bj, pred, key=f"store-{bj.key}", pure=False)

    todo = [bj for bj in jobs.values() if not (scratch / f"{bj.key}.json").is_file()]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="block", desc="segment", disable=not progress)
    for bj, fut in windowed(client, todo, submit_segment, window):
        fut.result()  # a failed block fails the image (raised here, recorded by the caller)
        fut.release()
        bar.update(1)
    bar.close()

    counts = {i: json.loads((scratch / f"{bj.key}.json").read_text())["count"] for i, bj in jobs.items()}
    offsets, total = label_offsets(counts, job.source)  # grid order
    fmt = Results.fmt_of(job.version)
    root = open_group_at(job.out)
    image = root[job.ref.path] if job.ref.path else root
    chunked = replace(info, chunks_yx=(side, side))  # one chunk per block core: no two tasks write one chunk
    stage, _ = begin_labels(image, chunked, fmt)
    names = (stage.name, "") if job.copy_image else (stage.name,)
    if job.copy_image:
        create_levels(image, chunked, fmt, read_field(job, (slice(0, 1), slice(0, 1)), check=False).dtype,
                      keep_channel=True)
    tables = []
    futures = [client.submit(stitch_block, bj, blocks, offsets, stage.name, key=f"stitch-{bj.key}", pure=False)
               for bj in jobs.values()]
    for fut in tqdm(futures, desc="stitch", unit="block", disable=not progress):
        tables.append(fut.result())
        fut.release()
    pyramid = [client.submit(pyramid_region, job.out, job.ref.path, level, rows, cols, names,
                             key=f"pyramid-l{level}-{rows[0]}_{cols[0]}", pure=False)
               for level, lshape in enumerate(level_shapes(info)[1:], start=1)
               for rows, cols in _grid(lshape, (side, side))]
    client.gather(pyramid)
    if job.copy_image:
        write_multiscales(image, info, fmt, "image", keep_channel=True)
        channel = resolve_channel(info, job.channel, job.image_path)
        write_omero(image, info, fmt, channel, np.asarray(value_range))
    finish_labels(stage, info, fmt, {"n_nuclei": total})
    table = pd.concat(tables, ignore_index=True) if tables else measure_nuclei(np.zeros((1, 1), np.uint32), np.zeros((1, 1)))
    summary = Results(job.results).commit(job.ref, table, pixels=shape[0] * shape[1])
    shutil.rmtree(scratch, ignore_errors=True)
    return summary
