#!/usr/bin/env python
"""Ship a trained checkpoint as the package's default model (weights + checksum + metadata).

    .venv/bin/python scripts/ship_model.py runs/iu16.best.pt --command "hts train ..."

Writes ``hts/model/weights/default.pt`` (weights and configuration only: no
optimiser state) and ``hts/model/weights/default.json`` (sha256, configuration,
training data, steps, wall time, validation history, the exact command).
The model card (``hts/model/weights/MODEL_CARD.md``) is written by hand from these
numbers and the peers script.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from hts.model.checkpoint import load_model, save_checkpoint, sha256sum
from hts.model.pretrained import WEIGHTS_DIR, default_model_path

MAX_MB = 25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--command", required=True, help="the exact training command, recorded in the metadata")
    ap.add_argument("--fg-threshold", type=float, default=0.5, help="foreground threshold selected on validation data")
    ap.add_argument("--score-threshold", type=float, default=0.5, help="RPN marker score threshold selected on validation data")
    ap.add_argument("--out", help="write the stripped checkpoint here instead of shipping it as the default")
    ap.add_argument("--hardware", default=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    args = ap.parse_args()
    model, ckpt = load_model(args.checkpoint)
    meta = dict(ckpt["meta"])
    meta.pop("loss_trace", None)
    meta["inference"] = {"fg_threshold": args.fg_threshold, "score_threshold": args.score_threshold}
    meta.update(command=args.command, hardware=args.hardware, source_checkpoint=str(args.checkpoint))
    if args.out:
        save_checkpoint(args.out, model, ckpt["step"], meta)
        print(f"wrote {args.out} (step {ckpt['step']}, inference {meta['inference']})")
        return
    path = default_model_path()
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, ckpt["step"], meta)
    size_mb = path.stat().st_size / 1e6
    if size_mb > MAX_MB:
        raise SystemExit(f"{path} is {size_mb:.1f} MB, over the {MAX_MB} MB limit")
    card = {"sha256": sha256sum(path), "size_mb": round(size_mb, 2), "step": ckpt["step"],
            "config": model.config.to_dict(), "meta": meta}
    path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"shipped {path} ({size_mb:.1f} MB, sha256 {card['sha256'][:16]}...) from step {ckpt['step']}")


if __name__ == "__main__":
    main()
