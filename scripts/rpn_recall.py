#!/usr/bin/env python
"""RPN centroid recall on annotated images: does every nucleus get exactly one marker?

    .venv/bin/python scripts/rpn_recall.py --data ../shared/data/dsb2018_fluo_val.npz [--model CKPT] [--diameter gt|auto]

Counts, over all ground-truth nuclei, those holding >= 1 proposal centroid
(recall), exactly one (what the watershed layer needs) and two or more
(split), and centroids that fall on background.
"""

from __future__ import annotations

import argparse

from hts.engine.infer import predict
from hts.engine.pipeline import resolve_model
from hts.engine.preprocess import normalize
from hts.engine.scale import median_diameter, scale_factor
from hts.engine.size import estimate_diameter
from hts.model.boxes import box_centroids
from hts.training.data import load_npz
from hts.training.metrics import centroid_recall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/dsb2018_fluo_val.npz")
    ap.add_argument("--model", help="checkpoint (default: the shipped model)")
    ap.add_argument("--diameter", choices=["gt", "auto"], default="gt")
    args = ap.parse_args()
    data, model = load_npz(args.data), resolve_model(args.model)
    total = {"n_gt": 0, "hit": 0, "single": 0, "split": 0, "stray": 0, "markers": 0}
    for image, labels in zip(data.images, data.labels):
        d = median_diameter(labels) if args.diameter == "gt" else estimate_diameter(model, image).diameter
        pred = predict(model, normalize(image), scale=scale_factor(model.config.diameter, d))
        b = pred.boxes
        counts = centroid_recall(labels, box_centroids(b))
        for k, v in counts.items():
            total[k] += v
        total["markers"] += len(b)
    n = max(total["n_gt"], 1)
    print(f"{len(data)} images, {total['n_gt']} nuclei, {total['markers']} proposals (diameter: {args.diameter})")
    print(f"centroid recall (>= 1 marker): {total['hit'] / n:.4f}")
    print(f"exactly one marker:            {total['single'] / n:.4f}")
    print(f"split (>= 2 markers):          {total['split'] / n:.4f}")
    print(f"markers on background:         {total['stray'] / max(total['markers'], 1):.4f} of proposals")


if __name__ == "__main__":
    main()
