#!/usr/bin/env python
"""The nucleus-size estimate on validation images resampled by 0.5-5x (nuclei of ~6 to ~250 px).

For each image of ``--data`` and each factor of ``--factors``, the image is
resampled (bilinear, anti-aliased when shrinking) and its labels (nearest
neighbour); the truth is the median equivalent diameter of the resampled
labels. With ``--texture A``, a copy of every resampled image also gets a
multiplicative chromatin-like texture of amplitude ``A`` inside the nuclei
(Gaussian noise smoothed at a tenth of the diameter), the texture that made
the classical estimate fail on large nuclei from other labs. Reports, per
method (``network``: :func:`hts.engine.size.estimate_diameter`;
``classical``: :func:`hts.engine.scale.classical_diameter`), the fraction of
images estimated within 25% of the truth, the median |error|, and the CPU
time of the estimate against that of segmenting the image at the true
diameter (the cost target: at most 20%).

    .venv/bin/python scripts/size_benchmark.py --data ../shared/data/dsb2018_fluo_val.npz --json out.json

``--ap-curve K K ...`` instead segments every image (not resampled) with its
ground-truth diameter times each factor K and reports AP@0.5, AJI and the
count error per factor: what a wrong estimate costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from scipy import ndimage
from skimage.transform import resize

from hts.engine.pipeline import resolve_model, segment_image
from hts.engine.scale import classical_diameter, median_diameter
from hts.engine.size import estimate_diameter
from hts.training.data import load_npz


def resampled(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (float32, bilinear) and ``labels`` (nearest) resampled by ``factor``."""
    shape = tuple(max(1, int(round(s * factor))) for s in image.shape)
    im = resize(image.astype(np.float32), shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    lab = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
    return im.astype(np.float32), lab


def textured(image: np.ndarray, labels: np.ndarray, diameter: float, amplitude: float,
             rng: np.random.Generator) -> np.ndarray:
    """``image`` times ``1 + amplitude * n`` inside the nuclei, ``n`` unit Gaussian noise smoothed at diameter / 10."""
    n = ndimage.gaussian_filter(rng.standard_normal(image.shape), max(diameter / 10, 1.0))
    n /= n.std() + 1e-12
    return (image * np.clip(1 + amplitude * n * (labels > 0), 0.05, None)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/dsb2018_fluo_val.npz")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--factors", type=float, nargs="+", default=[0.5, 1, 2, 3, 5])
    p.add_argument("--texture", type=float, default=0.25, help="texture amplitude of the textured copies (0: none)")
    p.add_argument("--every", type=int, default=1, help="use every N-th image")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-timing", action="store_true", help="skip the segmentation-time reference")
    p.add_argument("--ap-curve", type=float, nargs="+", metavar="K",
                   help="AP@0.5 with the true diameter times each K instead (e.g. 0.5 0.71 1 1.41 2)")
    p.add_argument("--json", help="write per-image rows and the summary here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = resolve_model(args.model)
    data = load_npz(args.data)
    if args.ap_curve:
        return ap_curve(net, data, args.ap_curve, args.json)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(0, len(data.images), args.every):
        for f in args.factors:
            im, lab = resampled(data.images[i], data.labels[i], f)
            truth = median_diameter(lab)
            if truth is None:
                continue
            variants = [("plain", im)]
            if args.texture > 0:
                variants.append(("texture", textured(im, lab, truth, args.texture, rng)))
            for name, img in variants:
                t0 = time.process_time()
                est = estimate_diameter(net, img)
                t_net = time.process_time() - t0
                t0 = time.process_time()
                cl = classical_diameter(img)
                t_cl = time.process_time() - t0
                t_seg = None
                if not args.no_timing and name == "plain":
                    t0 = time.process_time()
                    segment_image(net, img, truth)
                    t_seg = time.process_time() - t0
                row = {"image": i, "factor": f, "variant": name, "shape": list(img.shape), "truth": truth,
                       "network": est.diameter, "classical": cl, "trials": est.trials, "n_objects": est.n_objects,
                       "t_network": t_net, "t_classical": t_cl, "t_segment": t_seg}
                rows.append(row)
                print(f"{i:3d} x{f:<4} {name:8s} truth {truth:6.1f}  network {est.diameter or 0:6.1f} "
                      f"({len(est.trials)} trials, {t_net:.2f} s)  classical {cl or 0:6.1f}", flush=True)
    summary = summarize(rows)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "rows": rows}, fh, default=float)
    return 0


def ap_curve(net, data, factors: list[float], out: str | None) -> int:
    """AP@0.5, AJI and count error with each image's true diameter times each factor."""
    from hts.training.evaluate import predict_dataset
    from hts.training.metrics import evaluate_dataset

    truth = [median_diameter(lb) for lb in data.labels]
    curve = {}
    for k in factors:
        labels, _ = predict_dataset(net, data.images, None, False, "auto", [d * k if d else None for d in truth])
        r = evaluate_dataset(data.labels, labels)
        curve[str(k)] = {m: r[m] for m in ("ap_50", "aji", "count_rel_error", "n_pred", "n_gt")}
        print(f"diameter x{k:<5} AP@0.5 {r['ap_50']:.3f}  AJI {r['aji']:.3f}  count error {r['count_rel_error']:.3f}",
              flush=True)
    if out:
        with open(out, "w") as fh:
            json.dump({"ap_curve": curve}, fh, indent=1)
    return 0


def _ratio(est, truth) -> float:
    return float(est) / truth if est else 0.0


def summarize(rows: list[dict]) -> dict:
    """Per variant and factor: fraction within 25% and median |relative error| of both methods; cost ratio."""
    out: dict = {}
    for variant in sorted({r["variant"] for r in rows}):
        sel = [r for r in rows if r["variant"] == variant]
        per = {}
        for f in sorted({r["factor"] for r in sel}) + ["all"]:
            rs = [r for r in sel if f == "all" or r["factor"] == f]
            per[str(f)] = {m: {"within_25%": float(np.mean([abs(_ratio(r[m], r["truth"]) - 1) <= 0.25 for r in rs])),
                               "median_abs_err": float(np.median([abs(_ratio(r[m], r["truth"]) - 1) for r in rs]))}
                           for m in ("network", "classical")}
            per[str(f)]["n"] = len(rs)
        out[variant] = per
    timed = [r for r in rows if r["t_segment"]]
    if timed:
        out["cost"] = {"estimate_over_segment_median": float(np.median([r["t_network"] / r["t_segment"] for r in timed])),
                       "estimate_s_total": float(sum(r["t_network"] for r in timed)),
                       "segment_s_total": float(sum(r["t_segment"] for r in timed))}
    return out


if __name__ == "__main__":
    sys.exit(main())
