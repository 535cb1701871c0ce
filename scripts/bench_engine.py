#!/usr/bin/env python
"""Engine benchmark: seconds per megapixel of one large field, stage by stage, beside the classical peer.

A benchmark, not a test: it prints ratios measured in one run on the machine it runs on.

    .venv/bin/python scripts/bench_engine.py                          # 2048 px, nuclei of 32 and 20 px
    .venv/bin/python scripts/bench_engine.py --diameters 20 --settings 448:fp32 1280:fp32 1280:bf16
    .venv/bin/python scripts/bench_engine.py --device cuda --settings 448:auto

The field is a mosaic of real validation images (``--data``), each resampled so
its median nucleus has the given diameter and normalised on its own, packed
row by row into a ``--size`` square (the ground truth is packed alike, so the
AP@0.5 and count error of every setting are printed too). The engine runs
with the diameter given, as ``hts run --diameter`` does.

Per setting (``--settings TILE:PRECISION``: the largest tile side, network px,
0 = the engine's default for the device; on CPU ``fp32``, ``bf16`` or ``auto``,
the engine's choice, :func:`hts.engine.infer.precision`) it prints:

- ``s/MP`` end to end (normalise, resample, tiled network, watershed layer,
  per-nucleus measurements), and the same per stage; ``network`` is the
  time spent in the forward passes, ``tiling`` the rest of the tiled
  inference (tile copies, blending, proposal decoding, NMS);
- ``host core-s/MP``: the CPU time of the process (all threads, all cores)
  per MP with the network replaced by a stub that replays the real network's
  outputs (same shapes, same values, so the watershed does the same work).
  This bounds what a node can feed a GPU: 16 cores at 0.15 core-s/MP feed
  about 100 MP/s;
- on CUDA, ``MP/s`` end to end and the GPU busy fraction (time inside the
  synchronised forward passes over the wall time);
- AP@0.5 and count error against the packed truth, and the share of the
  first setting's nuclei reproduced at IoU >= 0.9 (a tile change is adopted
  only when this stays within the tiled-vs-single-pass tolerance, 0.99).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import clear_border

import hts.engine.infer as infer
from hts.analysis.count import measure_nuclei
from hts.engine.classical import classical_segment
from hts.engine.pipeline import resolve_model
from hts.engine.preprocess import normalize
from hts.engine.scale import median_diameter, rescale, resize_to, scale_factor
from hts.engine.watershed import instance_labels, size_params
from hts.training.data import load_npz
from hts.training.metrics import average_precision, count_relative_error, reproduced

ROOT = Path(__file__).resolve().parents[1]


def mosaic(data: Path, size: int, diameter: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` uint16 field of real images at nuclei of ``diameter`` px, and its labels.

    Images are taken in a seeded random order, resampled (labels by nearest
    neighbour), normalised per image (percentiles 1, 99.8) to 0-10,000 over a
    background of 200, and packed on shelves; images that do not fit are skipped.
    """
    ds = load_npz(data)
    field = np.full((size, size), 200.0, np.float32)
    truth = np.zeros((size, size), np.uint32)
    y = x = shelf = 0
    next_label = 1
    for i in np.random.default_rng(seed).permutation(len(ds)):
        image, labels = ds.images[i], ds.labels[i]
        d = median_diameter(labels)
        if d is None:
            continue
        f = diameter / d
        img = ndimage.zoom(normalize(image).astype(np.float32), f, order=1)
        lab = ndimage.zoom(labels.astype(np.int64), f, order=0)
        h, w = lab.shape
        if h > size or w > size:
            continue
        if x + w > size:
            y, x, shelf = y + shelf, 0, 0
        if y + h > size:
            break
        field[y : y + h, x : x + w] = 200.0 + 10000.0 * np.clip(img, 0, 1.5)
        ids = np.unique(lab)[1:]
        lut = np.zeros(int(lab.max()) + 1, np.uint32)
        lut[ids] = np.arange(next_label, next_label + len(ids), dtype=np.uint32)
        truth[y : y + h, x : x + w] = lut[lab]
        next_label += len(ids)
        x, shelf = x + w, max(shelf, h)
    return np.clip(field, 0, 65535).astype(np.uint16), truth


class Timer:
    """Wall and process CPU seconds per named stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        w, c = time.perf_counter(), time.process_time()
        yield
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c


@contextmanager
def network_hook(timer: Timer, device: torch.device, record: list | None = None, replay: list | None = None):
    """Time every forward pass (``network``); record its outputs, or replay recorded ones instead (the stub)."""
    real = infer._forward
    calls = iter(replay) if replay is not None else None

    def forward(model, x):
        with timer.stage("network"):
            if calls is not None:
                return next(calls)
            out = real(model, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
        if record is not None:
            record.append({k: v.clone() for k, v in out.items()})
        return out

    infer._forward = forward
    try:
        yield
    finally:
        infer._forward = real


def run_engine(net, image: np.ndarray, diameter: float, device: torch.device, tile: int, timer: Timer,
               batch_size: int) -> np.ndarray:
    """The engine's stages on one field, each timed (the composition of :func:`hts.engine.pipeline.segment_image`)."""
    with timer.stage("normalise"):
        norm = normalize(image)
    with timer.stage("resample"):
        scale = scale_factor(net.config.diameter, diameter)
        scaled = rescale(norm, scale)
    model = infer.prepared_model(net, device)
    kw = {} if tile == 0 else {"tile": tile}
    with timer.stage("tiled inference"):
        pred = infer.predict_tiles(model, scaled, infer.proposal_params(net), device, batch_size=batch_size, **kw)
    with timer.stage("resample"):
        if scaled.shape != image.shape:
            sy, sx = image.shape[0] / scaled.shape[0], image.shape[1] / scaled.shape[1]
            pred = infer.Prediction(resize_to(pred.prob, image.shape), pred.boxes * np.array([sx, sy, sx, sy], np.float32),
                                    pred.scores)
    with timer.stage("watershed"):
        labels = instance_labels(pred.prob, pred.boxes, threshold=infer.fg_threshold(net), **size_params(diameter))
    with timer.stage("measure"):
        measure_nuclei(labels, image)
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/dsb2018_fluo_val.npz")
    ap.add_argument("--size", type=int, default=2048, help="field side, px")
    ap.add_argument("--diameters", type=float, nargs="+", default=[32.0, 20.0], help="nucleus diameters, px")
    ap.add_argument("--settings", nargs="+", default=["448:fp32", "0:auto"], metavar="TILE:PRECISION",
                    help="settings to compare: the largest tile side, network px (0: the engine's default for the "
                         "device), and on CPU fp32, bf16 or auto (the engine's choice); default: before and after")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--model", help="checkpoint (default: the shipped model)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = infer.resolve_device(args.device)
    net = resolve_model(args.model)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}; field {args.size}x{args.size} of {args.data.name}")
    stages = ["normalise", "resample", "network", "tiling", "watershed", "measure"]
    for d in args.diameters:
        image, truth = mosaic(args.data, args.size, d)
        mp = image.size / 1e6
        t = time.perf_counter()
        classical_segment(image)
        peer = (time.perf_counter() - t) / mp
        print(f"\nnuclei {d:g} px ({len(np.unique(truth)) - 1} true), {mp:.2f} MP; classical peer {peer:.3f} s/MP")
        print("tile:precision " + "  ".join(f"{s:>9}" for s in stages) + "   s/MP  host core-s/MP  AP@0.5  count err  reproduced")
        first = None
        for setting in args.settings:
            tile_text, _, prec = setting.partition(":")
            tile = int(tile_text)
            if device.type == "cpu" and prec in ("fp32", "bf16"):  # the engine's switch, read once per process
                os.environ["HTS_CPU_BF16"] = "1" if prec == "bf16" else "0"
            else:
                os.environ.pop("HTS_CPU_BF16", None)
            infer.cpu_bf16.cache_clear()
            if prec == "bf16" and infer.precision(device) != "bf16":
                print(f"{setting}: this CPU has no bf16 instructions; skipped")
                continue
            run_engine(net, image[:256, :256], d, device, tile, Timer(), args.batch_size)  # warm-up
            timer, outputs = Timer(), []
            with network_hook(timer, device, record=outputs):
                t = time.perf_counter()
                labels = run_engine(net, image, d, device, tile, timer, args.batch_size)
                wall = time.perf_counter() - t
            timer.wall["tiling"] = timer.wall.pop("tiled inference") - timer.wall["network"]
            stub = Timer()
            with network_hook(stub, device, replay=outputs):
                run_engine(net, image, d, device, tile, stub, args.batch_size)
            # the stub's forward costs nothing; "tiled inference" holds the (replayed) network stage
            host = sum(stub.cpu[s] for s in ("normalise", "resample", "tiled inference", "watershed", "measure")) \
                - stub.cpu["network"]
            ap50 = float(average_precision(truth, labels, (0.5,))[0])
            err = count_relative_error(truth, labels)
            if first is None:
                first, agree = labels, 1.0
            else:
                inner = clear_border(first)
                agree = float(reproduced(inner, labels, np.unique(inner)[1:]).mean())
            name = f"{'default' if tile == 0 else tile}:{infer.precision(device)}"
            print(f"{name:>12}" + "  ".join(f"{timer.wall[s] / mp:9.3f}" for s in stages)
                  + f"  {wall / mp:5.2f}  {host / mp:14.3f}  {ap50:6.3f}  {err:9.3f}  {agree:10.4f}")
            if device.type == "cuda":
                print(f"        {mp / wall:.1f} MP/s end to end; GPU busy {timer.wall['network'] / wall:.0%}")


if __name__ == "__main__":
    main()
