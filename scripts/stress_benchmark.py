#!/usr/bin/env python
"""Stress benchmark: AP@0.5, count error and AJI on the validation images under each perturbation.

Every validation image of ``--data`` is perturbed, segmented with
:func:`hts.engine.pipeline.segment_image` and scored against its labels with
:func:`hts.training.metrics.evaluate_dataset`. The diameter given to the
segmentation is the ground-truth median equivalent diameter of the (for
``scale_*`` resampled) labels (:func:`hts.engine.scale.median_diameter`), or,
for the ``*_est`` variants, the network's estimate
(:func:`hts.engine.size.estimate_diameter`) on the perturbed image. The
target (issue 15): every perturbation within 0.05 AP@0.5 of ``clean``.

    .venv/bin/python scripts/stress_benchmark.py --json /tmp/stress.json
    .venv/bin/python scripts/stress_benchmark.py --every 6 --only gamma_2 debris

Perturbations (deterministic: image ``i`` under perturbation ``p`` draws from
``numpy.random.default_rng((SEED, i, crc32(p)))``; the labels are unchanged
unless said):

``clean``
    The image as it is.
``clean_est``
    The image as it is, diameter estimated.
``gamma_0.5``, ``gamma_2``
    ``m * (x / m) ** g`` with ``m`` the image's max, rounded back to the
    image's dtype (a constant-zero image is left as it is).
``noise``
    Poisson shot noise plus Gaussian read noise, on a reference intensity
    ``p`` = the 99th percentile of the image inside the nuclei (of the whole
    image when it has no nucleus): ``x' = p / 100 * Poisson(100 x / p) +
    N(0, (0.05 p)^2)``, i.e. the shot noise std is 10% of ``p`` at ``p``
    (100 photons) and the read noise std 5% of ``p`` everywhere (11% in all
    at ``p``). float32, not clipped (negative values are kept, as a camera
    offset would allow).
``blur_2``
    Gaussian blur, sigma 2 px (``scipy.ndimage.gaussian_filter``, reflect
    borders), float32.
``scale_0.3``, ``scale_3`` and ``scale_0.3_est``, ``scale_3_est``
    Image resampled by 0.3 / 3 (bilinear, anti-aliased when shrinking) and
    labels by nearest neighbour (``size_benchmark.resampled``), float32. The
    truth is the resampled labels. x3 makes images of up to ~1560x2090 px
    (the estimate's cost grows with them; segmenting at the given diameter
    resamples them back down first). x0.3 turns the 9-px nuclei into ~3 px
    ones and images segmented at the given diameter are upsampled ~10x.
``jpeg_30``
    The image stretched to uint8 by its own range (min -> 0, max -> 255),
    JPEG-encoded at quality 30 by Pillow (4:2:0 irrelevant: grayscale),
    decoded and mapped back to the original range, float32.
``debris``
    3-6 bright discs on the background, not labelled: radius
    ``U(0.5, 1.5) * d`` (``d`` the median nucleus diameter, 20 px without
    nuclei), intensity ``U(2, 5) * q`` (``q`` the median intensity inside
    the nuclei), clipped to the dtype's max (so often saturated in uint8),
    hard-edged and set over the pixels (not added). A disc is placed with
    its centre at a random pixel whose distance to every labelled pixel is
    at least ``radius + 2``; where no position fits, the radius is shrunk to
    the largest that fits (at least 2 px), else the disc is dropped. Discs
    may overlap each other and be cut by the image border; no labelled pixel
    is ever changed.

Output: one row per perturbation (AP@0.5, its difference to ``clean``, the
count error ``|n_pred - n_gt| / n_gt`` and AJI, means over images, the number
of images, the CPU seconds spent), printed and written with ``--json`` with
the per-image scores (and for the ``*_est`` variants the estimated and true
diameters).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from hts.engine.pipeline import resolve_model, segment_image
from hts.engine.scale import median_diameter
from hts.engine.size import estimate_diameter
from hts.training.data import load_npz
from hts.training.metrics import evaluate_dataset, evaluate_image

SEED = 2024
NOISE_PHOTONS = 100.0  # photons at the reference intensity: shot-noise std 10% of it
READ_NOISE = 0.05  # Gaussian read-noise std, fraction of the reference intensity
BLUR_SIGMA = 2.0
JPEG_QUALITY = 30
DEBRIS_COUNT = (3, 6)  # inclusive
DEBRIS_RADIUS = (0.5, 1.5)  # times the median nucleus diameter: discs of 1-3 diameters
DEBRIS_GAIN = (2.0, 5.0)  # times the median nucleus intensity
DEBRIS_MARGIN = 2.0  # px of background kept between a disc and any nucleus


def _sibling(name: str):
    """The module ``scripts/<name>.py`` (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


resampled = _sibling("size_benchmark").resampled


def _to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` rounded and clipped into an integer ``dtype``, or cast to a float one."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """``m * (image / m) ** g``, ``m`` the image's max, in the image's dtype."""
    x = image.astype(np.float64)
    m = x.max()
    if m <= 0:
        return image.copy()
    return _to_dtype(m * np.clip(x / m, 0, None) ** g, image.dtype)


def _foreground_reference(image: np.ndarray, labels: np.ndarray, q: float) -> float:
    """Percentile ``q`` of ``image`` inside the nuclei (of all of it without nuclei), at least 1e-6."""
    fg = image[labels > 0]
    return max(float(np.percentile(fg if fg.size else image, q)), 1e-6)


def noise(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson (100 photons at the 99th-percentile foreground intensity) plus 5% Gaussian read noise, float32."""
    p = _foreground_reference(image, labels, 99)
    x = np.clip(image.astype(np.float64), 0, None)
    shot = rng.poisson(x * (NOISE_PHOTONS / p)) * (p / NOISE_PHOTONS)
    return (shot + rng.normal(0.0, READ_NOISE * p, image.shape)).astype(np.float32)


def blur(image: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of ``sigma`` px, float32."""
    return ndimage.gaussian_filter(image.astype(np.float32), sigma)


def jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """JPEG round trip at ``quality`` of the image stretched to uint8 by its own range; float32, original range."""
    x = image.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo if hi > lo else 1.0
    u8 = np.clip(np.rint((x - lo) / span * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    dec = np.asarray(Image.open(buf).convert("L"), dtype=np.float64)
    return (dec / 255 * span + lo).astype(np.float32)


def debris(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """3-6 unlabelled bright discs of 1-3 nucleus diameters at 2-5x the nuclei's intensity, on background only."""
    d = median_diameter(labels) or 20.0
    fg = image[labels > 0]
    level = float(np.median(fg)) if fg.size else _foreground_reference(image, labels, 99)
    level = max(level, 1.0)
    # distance of every pixel to the nearest labelled one (inf-like without labels)
    dist = ndimage.distance_transform_edt(labels == 0) if (labels > 0).any() else np.full(labels.shape, np.inf)
    out = image.astype(np.float64)
    yy, xx = np.indices(image.shape)
    for _ in range(int(rng.integers(DEBRIS_COUNT[0], DEBRIS_COUNT[1] + 1))):
        radius = rng.uniform(*DEBRIS_RADIUS) * d
        value = rng.uniform(*DEBRIS_GAIN) * level
        fits = dist >= radius + DEBRIS_MARGIN
        if not fits.any():
            radius = float(dist.max()) - DEBRIS_MARGIN
            if radius < 2:
                continue
            fits = dist >= radius + DEBRIS_MARGIN
        cy, cx = np.argwhere(fits)[rng.integers(int(fits.sum()))]
        out[(yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2] = value
    return _to_dtype(out, image.dtype)


Perturb = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Perturbation:
    """``apply(image, labels, rng) -> (image, labels)``; ``estimate``: segment at the estimated diameter."""

    name: str
    apply: Perturb
    estimate: bool = False


def _same(image, labels, rng):
    return image, labels


def _scale(factor: float) -> Perturb:
    return lambda image, labels, rng: resampled(image, labels, factor)


PERTURBATIONS = [
    Perturbation("clean", _same),
    Perturbation("clean_est", _same, estimate=True),
    Perturbation("gamma_0.5", lambda im, lab, rng: (gamma(im, 0.5), lab)),
    Perturbation("gamma_2", lambda im, lab, rng: (gamma(im, 2.0), lab)),
    Perturbation("noise", lambda im, lab, rng: (noise(im, lab, rng), lab)),
    Perturbation("blur_2", lambda im, lab, rng: (blur(im), lab)),
    Perturbation("scale_0.3", _scale(0.3)),
    Perturbation("scale_0.3_est", _scale(0.3), estimate=True),
    Perturbation("scale_3", _scale(3.0)),
    Perturbation("scale_3_est", _scale(3.0), estimate=True),
    Perturbation("jpeg_30", lambda im, lab, rng: (jpeg(im), lab)),
    Perturbation("debris", lambda im, lab, rng: (debris(im, lab, rng), lab)),
]
BY_NAME = {p.name: p for p in PERTURBATIONS}


def rng_for(index: int, name: str) -> np.random.Generator:
    """The generator of image ``index`` under perturbation ``name``."""
    return np.random.default_rng((SEED, index, zlib.crc32(name.encode())))


def perturbed(p: Perturbation, index: int, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` and its labels under ``p``."""
    return p.apply(image, labels, rng_for(index, p.name))


def run_perturbation(net, p: Perturbation, data, indices: list[int]) -> dict:
    """Segment every image of ``indices`` under ``p``; aggregate and per-image scores."""
    t0 = time.process_time()
    gts, preds, rows = [], [], []
    for i in indices:
        img, lab = perturbed(p, i, data.images[i], data.labels[i])
        truth = median_diameter(lab)
        diameter = truth
        row = {"image": i, "shape": list(img.shape), "truth_diameter": truth}
        if p.estimate:
            est = estimate_diameter(net, img)
            diameter = est.diameter
            row.update(diameter=diameter, ratio=(diameter / truth) if diameter and truth else None)
        pred, _ = segment_image(net, img, diameter)
        r = evaluate_image(lab, pred)
        row.update({k: float(r[k]) for k in ("ap_50", "count_rel_error", "aji")}, n_gt=int(r["n_gt"]),
                   n_pred=int(r["n_pred"]))
        rows.append(row)
        gts.append(lab)
        preds.append(pred)
    agg = evaluate_dataset(gts, preds)
    out = {k: agg[k] for k in ("ap_50", "count_rel_error", "aji", "n_images", "n_gt", "n_pred")}
    out["cpu_s"] = time.process_time() - t0
    if p.estimate:
        ratios = [r["ratio"] for r in rows if r["ratio"]]
        out["diameter_ratio_median"] = float(np.median(ratios)) if ratios else None
        out["within_25%"] = float(np.mean([abs(x - 1) <= 0.25 for x in ratios])) if ratios else 0.0
        out["n_no_estimate"] = sum(r["diameter"] is None for r in rows)
    return {"summary": out, "rows": rows}


def table(summary: dict[str, dict]) -> str:
    """The printed table: one line per perturbation, delta against ``clean``."""
    ref = summary["clean"]["ap_50"]
    header = (f"{'perturbation':14s} {'AP@0.5':>7s} {'delta':>7s} {'count err':>9s} {'AJI':>6s} {'n':>4s} "
              f"{'CPU s':>7s}  target")
    lines = [header]
    for name, s in summary.items():
        delta = s["ap_50"] - ref
        extra = ""
        if "diameter_ratio_median" in s:
            extra = f"  (diameter est/true median {s['diameter_ratio_median'] or 0:.2f}, " \
                    f"{s['within_25%']:.0%} within 25%)"
        lines.append(f"{name:14s} {s['ap_50']:7.3f} {delta:+7.3f} {s['count_rel_error']:9.3f} {s['aji']:6.3f} "
                     f"{s['n_images']:4d} {s['cpu_s']:7.0f}  {'ok' if delta >= -0.05 else 'MISS'}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/dsb2018_fluo_val.npz")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--every", type=int, default=1, help="use every N-th image")
    p.add_argument("--only", nargs="+", choices=list(BY_NAME), metavar="NAME",
                   help=f"run only these ({', '.join(BY_NAME)}); clean always runs, as the reference")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", help="write the summary and per-image rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = resolve_model(args.model)
    data = load_npz(args.data)
    indices = list(range(0, len(data.images), max(1, args.every)))
    names = ["clean"] + [n for n in (args.only or BY_NAME) if n != "clean"]
    t_wall = time.perf_counter()
    results = {}
    for name in names:
        results[name] = run_perturbation(net, BY_NAME[name], data, indices)
        s = results[name]["summary"]
        print(f"{name:14s} AP@0.5 {s['ap_50']:.3f}  count error {s['count_rel_error']:.3f}  AJI {s['aji']:.3f}  "
              f"({s['cpu_s']:.0f} CPU s)", flush=True)
    summary = {n: r["summary"] for n, r in results.items()}
    wall = time.perf_counter() - t_wall
    print()
    print(table(summary))
    print(f"\n{len(indices)} images, {wall:.0f} s wall, {args.threads} torch thread(s)")
    if args.json:
        ref = summary["clean"]["ap_50"]
        for s in summary.values():
            s["delta_ap_50"] = s["ap_50"] - ref
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "seed": SEED, "wall_s": wall, "summary": summary,
                       "rows": {n: r["rows"] for n, r in results.items()}}, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
