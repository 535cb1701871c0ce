#!/usr/bin/env python
"""Benchmark: inference tiles/s and training images/s for the paper width and the CPU width.

A benchmark, not a test: it prints numbers for the machine it runs on.

    .venv/bin/python scripts/benchmark.py                 # widths 16 and 64, CPU (or CUDA if present)
    .venv/bin/python scripts/benchmark.py --device cpu --widths 8 16 64 --repeats 5

Inference: batches of 448x448 tiles through the network (``torch.inference_mode``),
plus the watershed layer on one tile's output. Training: one optimiser step
on ``--train-batch`` augmented 256x256 crops of synthetic nuclei, data
preparation (augmentation, weight map, boxes) timed separately.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hts.engine.infer import resolve_device
from hts.engine.preprocess import normalize
from hts.engine.watershed import instance_labels
from hts.model import InstanceUNet, ModelConfig
from hts.model.boxes import boxes_from_labels
from hts.synthetic.nuclei import SyntheticConfig, generate
from hts.training.data import synthetic_dataset
from hts.training.train import TrainConfig, make_batch, train_step


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    ap.add_argument("--tile-batch", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    print(f"device: {dev} ({name}); torch {torch.__version__}, {torch.get_num_threads()} threads")

    data = synthetic_dataset(8, seed=0)
    images = [normalize(im) for im in data.images]
    rng = np.random.default_rng(0)
    cfg = TrainConfig(batch_size=args.train_batch, crop=256)
    prep = timed(lambda: make_batch(images, data.labels, rng, cfg), args.repeats, lambda: None)
    tile = torch.randn(args.tile_batch, 1, 448, 448, device=dev)
    # The watershed layer on a realistic 448x448 tile: true foreground and true boxes of synthetic nuclei.
    _, tile_labels = generate(SyntheticConfig(shape=(448, 448)), seed=1)
    prob, boxes = (tile_labels > 0).astype(np.float32) * 0.9, boxes_from_labels(tile_labels)
    t_ws = timed(lambda: instance_labels(prob, boxes), args.repeats, lambda: None)

    print(f"{'width':>5} {'params':>8} {'infer tiles/s':>14} {'watershed s/tile':>17} {'train img/s':>12} {'data prep img/s':>16}")
    for width in args.widths:
        model = InstanceUNet(ModelConfig(width=width)).to(dev)
        model.eval()
        with torch.inference_mode():
            t_inf = timed(lambda: model(tile), args.repeats, sync)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        batch = make_batch(images, data.labels, rng, cfg)
        batch.images, batch.target, batch.weight = batch.images.to(dev), batch.target.to(dev), batch.weight.to(dev)
        batch.boxes = [b.to(dev) for b in batch.boxes]
        gen = torch.Generator().manual_seed(0)

        def step() -> None:
            loss = train_step(model, batch, cfg, gen)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        t_train = timed(step, args.repeats, sync)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{width:>5} {n_params / 1e6:>7.2f}M {args.tile_batch / t_inf:>14.2f} {t_ws:>17.3f} "
              f"{args.train_batch / t_train:>12.2f} {args.train_batch / prep:>16.1f}")


if __name__ == "__main__":
    main()
