"""``hts demo``: the main job end to end on generated data, in about a minute on a laptop CPU.

Trains a small Instance-U-Net on synthetic nuclei, segments a fresh demo
image it has never seen, and prints what it found beside the truth. (The
plate-processing issue turns this into a whole-plate demo.)
"""

from __future__ import annotations

import time
from pathlib import Path

from hts.checkpoint import load_model
from hts.data import Dataset
from hts.metrics import evaluate_image
from hts.synthetic import SyntheticConfig, generate, generate_dataset
from hts.train import TrainConfig, train
from hts.write import write_labels

DEMO_TRAIN = TrainConfig(variant="IU-BCE/Dice", width=8, steps=300, batch_size=4, crop=128, val_every=100)


def run_demo(out: Path, steps: int = DEMO_TRAIN.steps, seed: int = 0) -> int:
    """Run the demo in folder ``out``; returns the exit status (0)."""
    import numpy as np

    from hts.api import segment

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = TrainConfig(**{**DEMO_TRAIN.__dict__, "steps": steps, "seed": seed})
    images, labels = generate_dataset(24, SyntheticConfig(shape=(256, 256)), seed=seed)
    val_images, val_labels = generate_dataset(4, SyntheticConfig(shape=(256, 256)), seed=seed + 1)
    print(f"hts demo: training a width-{cfg.width} Instance-U-Net for {cfg.steps} steps on 24 synthetic images (CPU)...")
    ckpt = out / "demo-model.pt"
    train(cfg, Dataset(images, labels, source="synthetic"), Dataset(val_images, val_labels, source="synthetic"), ckpt)
    model, _ = load_model(ckpt.with_suffix(".best.pt"))

    image, truth = generate(SyntheticConfig(shape=(512, 512)), seed=seed + 2)
    t1 = time.perf_counter()
    found = segment(image, model, diameter=SyntheticConfig().diameter)
    seg_s = time.perf_counter() - t1
    np.save(out / "demo-image.npy", image)
    write_labels(out / "demo-labels.tif", found)
    m = evaluate_image(truth, found)
    print(f"demo image 512x512: found {int(found.max())} nuclei, true count {int(truth.max())} "
          f"(segmented in {seg_s:.2f} s)")
    print(f"  AP@0.5 {m['ap_50']:.3f}  AJI {m['aji']:.3f}  touching nuclei separated "
          f"{m['n_touching'] - m['n_not_separated']}/{m['n_touching']}")
    _compare_shipped(image, truth)
    print(f"  wrote {out / 'demo-labels.tif'} (uint32 labels) and {ckpt.with_suffix('.best.pt')}; "
          f"total {time.perf_counter() - t0:.0f} s")
    return 0


def _compare_shipped(image, truth) -> None:
    """The same demo image with the shipped default model (trained on real DSB2018 nuclei), when installed."""
    from hts.api import segment
    from hts.errors import HtsError
    from hts.pretrained import default_model

    try:
        model = default_model()
    except HtsError:
        return
    found = segment(image, model, diameter=SyntheticConfig().diameter)
    m = evaluate_image(truth, found)
    print(f"shipped default model on the same image: found {int(found.max())} nuclei "
          f"(AP@0.5 {m['ap_50']:.3f}, AJI {m['aji']:.3f}; trained on real DSB2018 images, not on synthetic ones)")
