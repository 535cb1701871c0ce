#!/usr/bin/env python
"""The paper's Table 1 on real data: U-Net vs Instance-U-Net, loss variants, and the watershed layer.

Trains U-BCE, IU-Dice, IU-BCE and IU-BCE/Dice with the same data, width,
steps, augmentation and seed(s) (resumable: rerun the same command after an
interruption), evaluates each on the validation file without a watershed
(connected components of the foreground, the paper's plain rows) and the
Instance-U-Nets also with the RPN-marker watershed layer as post-processing
(IUW-BCE, IUW-BCE/Dice: the same weights), and writes

- ``<out>/table1.md`` and ``table1.json``: the paper's four metrics (pixel
  error, mean IU, RMSE, instance error) plus AP@0.5, DSB score and AJI, mean
  and spread over seeds, hardware and wall time per variant, the paper's
  numbers beside them;
- ``<out>/fig5.png``: validation mean IU against training step, U-Net vs
  Instance-U-Net (the paper's Fig. 5).

    .venv/bin/python scripts/ablation.py --steps 2000 --width 16 --seeds 0 1 --out docs/table1

``--jobs N`` trains N (variant, seed) runs at once in separate processes;
the results do not depend on it. On one GPU use ``--device cuda --jobs 2
--workers 3``: more processes time-slice the GPU (14 on an H200 ran 4-6
steps/s each, 2 ran 17-24).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

PAPER = {  # Table 1 of the paper (its own test set): pixel error, mean IU, RMSE, instance error
    "IU-Dice": (0.0301, 0.9359, 0.1735, 0.3113), "U-BCE": (0.0292, 0.9377, 0.1710, 0.1698),
    "IU-BCE": (0.0292, 0.9378, 0.1708, 0.1132), "IUW-BCE": (0.0299, 0.9356, 0.1728, 0.0660),
    "IU-BCE/Dice": (0.0288, 0.9385, 0.1697, 0.1557), "IUW-BCE/Dice": (0.0297, 0.9372, 0.1724, 0.0566),
}
ROWS = ["U-BCE", "IU-Dice", "IU-BCE", "IUW-BCE", "IU-BCE/Dice", "IUW-BCE/Dice"]
METRICS = [("pixel_error", "pixel error"), ("mean_iu", "mean IU"), ("rmse", "RMSE"),
           ("instance_error", "instance error"), ("ap_50", "AP@0.5"), ("dsb_score", "DSB"), ("aji", "AJI")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/dsb2018_fluo_train.npz")
    ap.add_argument("--val", default="../shared/data/dsb2018_fluo_val.npz")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["U-BCE", "IU-Dice", "IU-BCE", "IU-BCE/Dice"])
    ap.add_argument("--n-synthetic", type=int, default=64, help="images when --data is 'synthetic' (smoke runs)")
    ap.add_argument("--out", type=Path, default=Path("docs/table1"))
    ap.add_argument("--device", default="cpu", help="where the networks train and run (cpu, cuda)")
    ap.add_argument("--jobs", type=int, default=1, help="(variant, seed) runs at once, one process each")
    ap.add_argument("--workers", type=int, default=0, help="batch loader processes per run")
    args = ap.parse_args()

    runs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(run_one, runs, [args] * len(runs)))
    else:
        done = [run_one(run, args) for run in runs]
    results: dict[str, list[dict]] = {}
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    wall: dict[str, list[float]] = {}
    for (variant, _), (meta, evals) in zip(runs, done):
        wall.setdefault(variant, []).append(meta["run_wall_s"])
        curves.setdefault(variant, []).append([(h["step"], h["val"]["mean_iu"]) for h in meta["history"] if "val" in h])
        for row, metrics in evals.items():
            results.setdefault(row, []).append(metrics)
    hardware = (f"{torch.cuda.get_device_name()}, " if args.device.startswith("cuda") else "") + \
        f"{platform.machine()} CPU ({multiprocessing.cpu_count()} cores), {args.jobs} run(s) at once, torch {torch.__version__}"
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in vars(args).items())
    record = {"command": f"scripts/ablation.py {flags}",
              "hardware": hardware, "total_wall_s": time.perf_counter() - t0,
              "results": results, "curves": curves, "wall_s": wall}
    (args.out / "table1.json").write_text(json.dumps(record, indent=1, default=float))
    (args.out / "table1.md").write_text(table(results, wall, args) + f"\nHardware: {record['hardware']}. "
                                        f"Command: `{record['command']}`.\n")
    plot(curves, args.out / "fig5.png")
    print((args.out / "table1.md").read_text())


def run_one(run: tuple[str, int], args: argparse.Namespace) -> tuple[dict, dict[str, dict]]:
    """Train one (variant, seed) and evaluate it: its training ``meta`` and the metrics of its Table 1 rows."""
    from hts.model.checkpoint import load_model
    from hts.training.data import open_dataset
    from hts.training.evaluate import evaluate_model
    from hts.training.train import TrainConfig, train

    variant, seed = run
    t0 = time.perf_counter()
    torch.set_num_threads(1 if args.jobs > 1 else torch.get_num_threads())
    data = open_dataset(args.data, args.n_synthetic, seed=0)
    val = open_dataset(args.val, max(args.n_synthetic // 4, 1), seed=10_000)
    cfg = TrainConfig(variant=variant, width=args.width, steps=args.steps, val_every=args.val_every, seed=seed)
    out = args.out / "checkpoints" / f"{variant.replace('/', '_')}-w{args.width}-s{seed}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = train(cfg, data, val, out, resume=True, progress=args.jobs == 1, log=print, device=args.device,
                 workers=args.workers)
    model, _ = load_model(out)
    evals = {variant: evaluate_model(model, val, device=args.device, markers="none")}
    if model.config.rpn and variant != "IU-Dice":
        evals[variant.replace("IU-", "IUW-")] = evaluate_model(model, val, device=args.device, markers="rpn")
    meta["run_wall_s"] = time.perf_counter() - t0  # training, validation and the final evaluations
    print(f"{variant} seed {seed}: done, {meta['run_wall_s']:.0f} s", flush=True)
    return meta, evals


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" + (f" ± {np.std(values):.4f}" if len(values) > 1 else "")


def table(results: dict, wall: dict, args) -> str:
    head = "| model | " + " | ".join(name for _, name in METRICS) + " | paper: pixel error / mean IU / RMSE / instance error |"
    lines = [head, "| --- " * (len(METRICS) + 2) + "|"]
    for row in [r for r in ROWS if r in results]:
        cells = [_cell([r[key] for r in results[row]]) for key, _ in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {' / '.join(f'{v:.4f}' for v in PAPER[row])} |")
    timing = ", ".join(f"{v}: {np.mean(s) / 60:.1f} min" for v, s in wall.items())
    return (f"Validation split, width {args.width}, {args.steps} steps, seeds {args.seeds}; "
            f"mean ± std over seeds. Wall time per variant (training + validation): {timing}.\n\n"
            + "\n".join(lines) + "\n")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for variant, runs in curves.items():
        for i, run in enumerate(runs):
            steps, miu = zip(*run) if run else ((), ())
            ax.plot(steps, miu, label=variant if i == 0 else None, color=f"C{list(curves).index(variant)}", alpha=0.8)
    ax.set(xlabel="training step", ylabel="validation mean IU", ylim=(0.5, 1.0),
           title="U-Net vs Instance-U-Net: validation mean IU (cf. paper Fig. 5)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
