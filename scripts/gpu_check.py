#!/usr/bin/env python
"""GPU check: the engine on CUDA vs CPU on the same synthetic images, and GPU tiles/s per width and precision.

    .venv/bin/python scripts/gpu_check.py [--model CKPT] [--images 3] [--size 1024]

Needs a CUDA GPU (exits with a message otherwise). Runs :func:`hts.segment`
on CPU (fp32) and on CUDA (bf16 autocast, channels_last) for the same
synthetic images, matches their nuclei one-to-one at IoU >= 0.9 and reports
the matched fraction (reduced precision may move a few boundary pixels),
then prints the network's 448x448 tiles/s on the GPU for the CPU width (16)
and the paper width (64), at fp32 and bf16. CI never runs it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from hts.api import segment
from hts.engine.pipeline import resolve_model
from hts.model import InstanceUNet, ModelConfig
from hts.synthetic.nuclei import SyntheticConfig, generate
from hts.training.metrics import match_instances


def matched_fraction(a: np.ndarray, b: np.ndarray, iou: float = 0.9) -> float:
    """Fraction of the nuclei of ``a`` matched one-to-one in ``b`` at IoU >= ``iou``."""
    _, _, m = match_instances(a, b)
    n = m.shape[0]
    return float(((m >= iou).sum(axis=1) >= 1).sum() / n) if n else 1.0


def tiles_per_second(width: int, dtype: torch.dtype | None, batch: int = 16, repeats: int = 10) -> float:
    model = InstanceUNet(ModelConfig(width=width)).cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 448, 448, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            model(x)
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped model)")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False)")
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    model = resolve_model(args.model)
    fractions = []
    for i in range(args.images):
        image, truth = generate(SyntheticConfig(shape=(args.size, args.size)), seed=100 + i)
        t = time.perf_counter()
        cpu = segment(image, model, diameter=20.0, device="cpu")
        t_cpu = time.perf_counter() - t
        t = time.perf_counter()
        gpu = segment(image, model, diameter=20.0, device="cuda", batch_size=16)
        t_gpu = time.perf_counter() - t
        fractions.append(matched_fraction(cpu, gpu))
        print(f"image {i}: {int(cpu.max())} nuclei on CPU ({t_cpu:.2f} s), {int(gpu.max())} on GPU ({t_gpu:.2f} s), "
              f"matched at IoU>=0.9: {fractions[-1]:.4f}")
    print(f"mean matched fraction CPU fp32 vs GPU bf16: {np.mean(fractions):.4f}")
    print(f"{'width':>5} {'fp32 tiles/s':>13} {'bf16 tiles/s':>13}")
    for width in (16, 64):
        print(f"{width:>5} {tiles_per_second(width, None):>13.1f} {tiles_per_second(width, torch.bfloat16):>13.1f}")


if __name__ == "__main__":
    main()
