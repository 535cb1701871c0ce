#!/usr/bin/env python
"""Select the inference thresholds on the validation split (never on test data).

    .venv/bin/python scripts/tune_postprocess.py --model runs/iu16.best.pt \\
        [--data ../shared/data/dsb2018_fluo_val.npz] [--scores 0.3 0.4 0.5 0.6 0.7] [--fg 0.4 0.5 0.6]

Runs the network once per image (proposals kept down to the lowest score),
then evaluates the watershed layer for each RPN score threshold and
foreground threshold; greedy NMS restricted to scores >= t equals NMS on the
boxes scoring >= t, so one pass serves every threshold. Prints AP@0.5, AJI,
DSB score and instance error per setting.
"""

from __future__ import annotations

import argparse
import itertools

from hts.engine.infer import predict
from hts.engine.pipeline import resolve_model
from hts.engine.preprocess import normalize
from hts.engine.scale import median_diameter, scale_factor
from hts.engine.watershed import instance_labels, size_params
from hts.model.rpn import ProposalParams
from hts.training.data import load_npz
from hts.training.metrics import evaluate_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="../shared/data/dsb2018_fluo_val.npz")
    ap.add_argument("--scores", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    ap.add_argument("--fg", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    args = ap.parse_args()
    data, model = load_npz(args.data), resolve_model(args.model)
    params = ProposalParams(score_threshold=min(args.scores))
    preds, diameters = [], []
    for image, labels in zip(data.images, data.labels):
        d = median_diameter(labels)
        diameters.append(d)
        preds.append(predict(model, normalize(image), params, scale=scale_factor(model.config.diameter, d)))
    print(f"{'score':>6} {'fg':>5} {'AP@0.5':>7} {'AJI':>6} {'DSB':>6} {'inst.err':>8} {'count err':>9}")
    for t, fg in itertools.product(args.scores, args.fg):
        labels = [
            instance_labels(p.prob, p.boxes[p.scores >= t] if model.config.rpn else None, threshold=fg,
                            **size_params(d))
            for p, d in zip(preds, diameters)
        ]
        m = evaluate_dataset(data.labels, labels)
        print(f"{t:>6.2f} {fg:>5.2f} {m['ap_50']:>7.4f} {m['aji']:>6.4f} {m['dsb_score']:>6.4f} "
              f"{m['instance_error']:>8.4f} {m['count_rel_error']:>9.4f}")


if __name__ == "__main__":
    main()
