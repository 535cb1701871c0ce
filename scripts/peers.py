#!/usr/bin/env python
"""Peers on the same validation images: classical pipeline, plain U-Net, Instance-U-Net.

    .venv/bin/python scripts/peers.py --data ../shared/data/dsb2018_fluo_val.npz \\
        --unet runs/u16.best.pt [--model CKPT] [--diameter gt|auto] [--out docs/peers.json]

(a) classical: percentile normalisation, Gaussian smoothing, Otsu threshold,
    distance-transform peaks as markers, watershed (:mod:`hts.engine.classical`);
(b) the plain U-Net (no RPN, ``--unet``) with distance-transform markers;
(c) the Instance-U-Net with RPN markers (``--model``, default: the shipped model).
Prints a markdown table of AP@0.5, AP@0.75, DSB score, AJI, instance error,
count error and seconds per megapixel (end to end: normalisation, resampling,
tiled inference, watershed) on the machine that runs it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from hts.api import segment
from hts.engine.classical import classical_segment
from hts.engine.pipeline import resolve_model
from hts.engine.scale import median_diameter
from hts.training.data import load_npz
from hts.training.metrics import evaluate_dataset

COLUMNS = [("ap_50", "AP@0.5"), ("ap_75", "AP@0.75"), ("dsb_score", "DSB score"), ("aji", "AJI"),
           ("instance_error", "instance error"), ("count_rel_error", "count error"), ("s_per_mp", "s / MP")]


def run_peer(name: str, fn, data, diameters) -> dict:
    """Segment every image with ``fn(image, diameter)``, time it, evaluate it."""
    preds, seconds = [], 0.0
    for image, diameter in zip(data.images, diameters):
        t = time.perf_counter()
        preds.append(fn(image, diameter))
        seconds += time.perf_counter() - t
    mp = sum(im.size for im in data.images) / 1e6
    result = evaluate_dataset(data.labels, preds)
    result["s_per_mp"] = seconds / mp
    result["name"] = name
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/dsb2018_fluo_val.npz")
    ap.add_argument("--model", help="Instance-U-Net checkpoint (default: the shipped model)")
    ap.add_argument("--unet", help="plain U-Net (U-BCE) checkpoint; omitted: peer (b) is skipped")
    ap.add_argument("--diameter", choices=["gt", "auto"], default="gt",
                    help="nucleus diameter per image: ground-truth median (known magnification) or estimated")
    ap.add_argument("--out", help="also write the results as JSON")
    args = ap.parse_args()
    data = load_npz(args.data)
    diameters = [median_diameter(lb) if args.diameter == "gt" else None for lb in data.labels]
    print(f"{len(data)} images, {sum(im.size for im in data.images) / 1e6:.2f} MP; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; diameter: {args.diameter}")
    peers = [run_peer("classical (Otsu + distance-peak watershed)", lambda im, d: classical_segment(im), data, diameters)]
    if args.unet:
        unet = resolve_model(args.unet)
        peers.append(run_peer("U-Net + distance-transform markers", lambda im, d: segment(im, unet, diameter=d), data, diameters))
    model = resolve_model(args.model)
    peers.append(run_peer("Instance-U-Net + RPN markers (watershed layer)", lambda im, d: segment(im, model, diameter=d),
                          data, diameters))
    print("| method | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for p in peers:
        print(f"| {p['name']} | " + " | ".join(f"{p[key]:.3f}" for key, _ in COLUMNS) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "diameter": args.diameter, "peers": peers}, f, indent=1)


if __name__ == "__main__":
    main()
