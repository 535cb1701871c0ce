"""Training of the Instance-U-Net and its Table 1 variants (``hts train``).

Deterministic on CPU for a given seed: batch ``s`` is drawn from
``numpy.random.default_rng((seed, s))``, so a run resumed from its
checkpoint at step ``s`` sees exactly the batches an uninterrupted run sees
(also when ``workers`` loader processes draw them ahead); the torch RNG
(anchor sampling) is saved in the checkpoint. On CUDA the batches are the
same but cuDNN's fastest kernels are allowed, so GPU runs are not bit for
bit reproducible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hts.engine.infer import resolve_device
from hts.engine.preprocess import normalize
from hts.engine.scale import median_diameter, scale_factor
from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.model.boxes import boxes_from_labels
from hts.model.checkpoint import load_model, read_checkpoint, save_checkpoint, sha256sum
from hts.model.network import STRIDE
from hts.model.rpn import rpn_loss
from hts.training.augment import PAPER_SCALE, AugmentParams, augment
from hts.training.data import Dataset
from hts.training.evaluate import evaluate_model
from hts.training.losses import (
    VARIANTS,
    segmentation_loss,
    segmentation_target,
    weight_map,
)
from hts.training.photometric import PhotometricParams, photometric_crop

# Fields added after checkpoints were first written, with the value those checkpoints were trained with.
LATER_FIELDS = {"decay_from": None, "photometric": False, "scale_range": PAPER_SCALE, "init": None}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in the checkpoint.

    Parameters
    ----------
    variant : str
        A key of :data:`hts.training.losses.VARIANTS` (paper's Table 1).
    width, anchor_base, diameter
        Architecture, as in :class:`hts.model.ModelConfig` (``diameter``: the
        canonical nucleus diameter, px; None: native scale).
    steps : int
        Optimiser steps.
    batch_size : int
        Crops per step.
    crop : int
        Side of the square training crops, px (a multiple of 16).
    lr : float
        Adam learning rate (paper: 1e-4).
    seed : int
        Seeds the batches (per step) and torch.
    val_every : int
        Validate and checkpoint every this many steps.
    augment : bool
        The paper's random mirror, scaling and rotation.
    decay_from : int or None
        Step where lr starts a linear decay to 0 at ``steps``; None: constant.
    photometric : bool
        Also the intensity perturbations of :mod:`hts.training.photometric`
        (gain, gamma, contrast, shading, background, noise, blur, JPEG,
        debris, saturation), then normalisation as at inference; labels are
        unchanged.
    scale_range : tuple of float
        Range of the random scale factor (with ``augment``): the paper's
        (0.8, 1.2) is drawn uniformly, any other range log-uniformly (e.g.
        (0.5, 2.0) for screens whose nuclei differ from the canonical size).
    init : str or None
        Path of a checkpoint whose weights start the run (fine-tuning, e.g.
        the shipped model); its architecture must equal this run's. The
        optimiser starts fresh.

    Raises
    ------
    HtsError
        For an unknown variant or an out-of-range value.
    """

    variant: str = "IU-BCE/Dice"
    width: int = 16
    anchor_base: float = 32.0
    steps: int = 2000
    batch_size: int = 8
    crop: int = 256  # px, square training crops (multiple of the network's stride, 16)
    lr: float = 1e-4  # Adam, the paper's rate
    seed: int = 0
    val_every: int = 250
    augment: bool = True
    diameter: float | None = 32.0  # canonical nucleus diameter (px); None: native scale
    decay_from: int | None = None  # step where lr starts a linear decay to 0 at ``steps``; None: constant lr
    photometric: bool = False  # intensity augmentation (hts.training.photometric)
    scale_range: tuple[float, float] = PAPER_SCALE  # paper's range uniform, any other log-uniform
    init: str | None = None  # checkpoint whose weights start the run (fine-tuning); None: random

    def __post_init__(self) -> None:
        scale = tuple(float(v) for v in self.scale_range)  # a list from the command line or a checkpoint
        if len(scale) != 2 or not (math.isfinite(scale[1]) and 0 < scale[0] <= scale[1]):
            raise HtsError(f"scale_range must be two numbers 0 < lo <= hi, got {self.scale_range}")
        object.__setattr__(self, "scale_range", scale)
        if self.variant not in VARIANTS:
            raise HtsError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        for name in ("steps", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise HtsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop < STRIDE or self.crop % STRIDE:
            raise HtsError(f"crop must be a positive multiple of {STRIDE} px, got {self.crop}")
        if not self.lr > 0:
            raise HtsError(f"lr must be > 0, got {self.lr}")
        if self.decay_from is not None and not 0 <= self.decay_from < self.steps:
            raise HtsError(f"decay_from must be in [0, steps={self.steps}), got {self.decay_from}")

    def lr_at(self, step: int) -> float:
        """Learning rate for the update that takes the model from ``step`` to ``step + 1``.

        Parameters
        ----------
        step : int
            Steps done so far.

        Returns
        -------
        float
            ``lr``, or its linear decay after ``decay_from``.
        """
        if self.decay_from is None or step < self.decay_from:
            return self.lr
        return self.lr * (self.steps - step) / (self.steps - self.decay_from)

    def model_config(self) -> ModelConfig:
        """The architecture this run trains (RPN from the variant)."""
        return ModelConfig(width=self.width, rpn=VARIANTS[self.variant].rpn, anchor_base=self.anchor_base,
                           diameter=self.diameter)


@dataclass
class Batch:
    """A training batch: ``images (B, 1, S, S)``, ``target (B, S, S)``, ``weight (B, S, S)``, boxes per image."""

    images: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    boxes: list[torch.Tensor]


def zoom_factors(labels: list[np.ndarray], diameter: float | None) -> list[float]:
    """Per image, the zoom that brings its median nucleus diameter to ``diameter``.

    Parameters
    ----------
    labels : list of (H, W) int ndarray
        Instance labels of the training images.
    diameter : float or None
        Canonical diameter, px; None: no zoom.

    Returns
    -------
    list of float
        Canonical / median diameter per image (1.0 for None or an image without nuclei).
    """
    return [scale_factor(diameter, median_diameter(lb)) if diameter else 1.0 for lb in labels]


def make_batch(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    rng: np.random.Generator,
    cfg: TrainConfig,
    zooms: list[float] | None = None,
) -> Batch:
    """Draw ``cfg.batch_size`` augmented crops from normalised ``images`` and their ``labels``.

    Parameters
    ----------
    images : list of (H, W) float ndarray
        Normalised training images.
    labels : list of (H, W) int ndarray
        Their instance labels.
    rng : numpy.random.Generator
        Picks the images and the augmentation (photometric: from its first
        spawned child, :meth:`numpy.random.Generator.spawn`).
    cfg : TrainConfig
        Batch size, crop side, scale range and augmentation switches.
    zooms : list of float, optional
        Per image (see :func:`zoom_factors`): resampling to the canonical
        nucleus diameter; default no zoom.

    Returns
    -------
    Batch
        Targets and weight maps from :mod:`hts.training.losses`, boxes from the crops' labels.
    """
    ims, tgs, wts, bxs = [], [], [], []
    params = AugmentParams(scale=cfg.scale_range, log_scale=cfg.scale_range != PAPER_SCALE) if cfg.augment else None
    # photometric draws from a child stream, so the geometry (and the labels) are those of the plain path
    photo_rng = rng.spawn(1)[0] if cfg.photometric else None
    for i in rng.integers(0, len(images), cfg.batch_size):
        zoom = 1.0 if zooms is None else zooms[i]
        if photo_rng is None:
            im, lb = augment(rng, images[i], labels[i], (cfg.crop, cfg.crop), params, zoom)
        else:
            im, lb = photometric_crop(rng, photo_rng, images[i], labels[i], (cfg.crop, cfg.crop), params, zoom)
        target = segmentation_target(lb)
        ims.append(im)
        tgs.append(target)
        wts.append(weight_map(lb, target))
        bxs.append(torch.from_numpy(boxes_from_labels(lb)))
    return Batch(
        torch.from_numpy(np.stack(ims))[:, None],
        torch.from_numpy(np.stack(tgs)),
        torch.from_numpy(np.stack(wts)),
        bxs,
    )


class StepBatches(torch.utils.data.Dataset):
    """Batch ``i`` is the batch of training step ``start + i``: a pure function of (seed, step).

    A map-style dataset so that a :class:`torch.utils.data.DataLoader` with
    worker processes draws batches ahead of the GPU without changing them.

    Parameters
    ----------
    images, labels, cfg, zooms
        As in :func:`make_batch`.
    start : int
        The step of batch 0.
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], cfg: TrainConfig,
                 zooms: list[float] | None, start: int) -> None:
        self.images, self.labels, self.cfg, self.zooms, self.start = images, labels, cfg, zooms, start

    def __len__(self) -> int:
        return self.cfg.steps - self.start

    def __getitem__(self, i: int) -> Batch:
        rng = np.random.default_rng((self.cfg.seed, self.start + i))
        return make_batch(self.images, self.labels, rng, self.cfg, self.zooms)


def batches(images: list[np.ndarray], labels: list[np.ndarray], cfg: TrainConfig, zooms: list[float] | None,
            start: int, workers: int = 0) -> Iterator[Batch]:
    """The batches of steps ``start .. cfg.steps - 1`` in order, drawn by ``workers`` processes.

    Parameters
    ----------
    images, labels, cfg, zooms
        As in :func:`make_batch`.
    start : int
        First step (a resumed run's checkpoint step).
    workers : int, optional
        DataLoader processes drawing ahead; 0: drawn inline. Either way the
        batches are the same.

    Returns
    -------
    iterator of Batch
    """
    data = StepBatches(images, labels, cfg, zooms, start)
    if workers == 0:
        return (data[i] for i in range(len(data)))
    return iter(torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                                            prefetch_factor=4, collate_fn=_identity))


def _identity(batch: Batch) -> Batch:
    return batch


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch's tensors on ``device`` (the batch itself on the CPU).

    Parameters
    ----------
    batch : Batch
        Drawn on the CPU.
    device : torch.device
        Where the step runs.

    Returns
    -------
    Batch
    """
    if device.type == "cpu":
        return batch
    return Batch(batch.images.to(device, non_blocking=True), batch.target.to(device, non_blocking=True),
                 batch.weight.to(device, non_blocking=True), [b.to(device) for b in batch.boxes])


def train_step(model: InstanceUNet, batch: Batch, cfg: TrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Forward pass and losses of one batch (no optimiser step).

    Parameters
    ----------
    model : InstanceUNet
        In train mode.
    batch : Batch
        On the model's device.
    cfg : TrainConfig
        Its variant chooses the segmentation terms.
    generator : torch.Generator
        For the RPN's anchor sampling.

    Returns
    -------
    dict of str to scalar tensor
        ``seg``, with an RPN ``rpn_cls`` and ``rpn_reg``, and ``total``, their
        sum: what to minimise.
    """
    out = model(batch.images)
    losses = {"seg": segmentation_loss(out["logits"], batch.target, batch.weight, VARIANTS[cfg.variant])}
    if model.rpn is not None:
        losses["rpn_cls"], losses["rpn_reg"] = rpn_loss(
            out["rpn_logits"], out["rpn_deltas"], out["anchors"], batch.boxes, generator=generator
        )
    losses["total"] = sum(losses.values())
    return losses


def train(
    cfg: TrainConfig,
    data: Dataset,
    val: Dataset | None,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
    workers: int = 0,
) -> dict:
    """Train, validating and checkpointing every ``cfg.val_every`` steps.

    Parameters
    ----------
    cfg : TrainConfig
        The run.
    data : Dataset
        Training images and labels (normalised here).
    val : Dataset or None
        Validation set; None: no validation and no best checkpoint.
    out : str or pathlib.Path
        Receives the latest checkpoint (with optimiser state, to resume);
        ``<out>.best.pt`` the one with the best validation DSB score.
    resume : bool, optional
        Continue an existing ``out`` of the same configuration (``steps``,
        ``val_every`` and a later ``decay_from`` may change).
    progress : bool, optional
        A tqdm bar with loss and images/s.
    log : callable, optional
        Receives the status lines.
    device : str or torch.device, optional
        Where the network trains (batches are drawn on the CPU).
    workers : int, optional
        Loader processes that draw batches ahead (0: in this process; worth
        2-4 on a GPU, where drawing a batch costs more than the step).
        Neither ``device`` nor ``workers`` changes the batches.

    Returns
    -------
    dict
        The final checkpoint's ``meta``: ``train`` (the config), ``history``
        (validation metrics per ``val_every`` steps), ``best``, ``wall_s``
        (seconds of training), ``loss_trace``.

    Raises
    ------
    HtsError
        For a configuration that does not match ``out`` on resume, negative
        ``workers``, or a diverged loss.
    """
    out = Path(out)
    device = resolve_device(device)
    if workers < 0:
        raise HtsError(f"workers must be >= 0, got {workers}")
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(device.type == "cpu")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = InstanceUNet(cfg.model_config()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = {"train": asdict(cfg), "data": data.source, "n_train": len(data), "val": val.source if val else None,
            "history": [], "best": None, "wall_s": 0.0}
    if cfg.photometric:  # the ranges used, as code defaults may change
        meta["photometric_params"] = asdict(PhotometricParams())
    step = 0
    if resume and out.exists():
        ckpt = read_checkpoint(out)
        # Steps, validation cadence and a decay that starts at or after this step may change on resume;
        # nothing else may (the resumed run then equals a fresh run of the new configuration).
        free = {"steps": cfg.steps, "val_every": cfg.val_every}
        if cfg.decay_from is None or cfg.decay_from >= ckpt["step"]:
            free["decay_from"] = cfg.decay_from
        if LATER_FIELDS | ckpt["meta"].get("train", {}) | free != asdict(cfg):
            raise HtsError(f"cannot resume {out}: it was trained with another configuration {ckpt['meta'].get('train')}")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        step, meta = ckpt["step"], ckpt["meta"]
        meta["train"] = asdict(cfg)
        log(f"resuming {out} at step {step}")
    if step == 0 and cfg.init is not None:
        meta["init"] = _start_from(model, cfg)
        log(f"starting from the weights of {cfg.init} (step {meta['init']['step']})")
    if step >= cfg.steps:
        log(f"{out} is already trained for {step} steps")
        return meta
    images = [normalize(im) for im in data.images]
    zooms = zoom_factors(data.labels, cfg.diameter)
    if step == 0 and val is not None:  # the untrained baseline: the first point of the mean IU curve
        meta["history"].append({"step": 0, "val": evaluate_model(model.eval(), val, device=device)})
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=cfg.variant, unit="step", disable=not progress)
    t0, done = time.perf_counter(), 0
    for batch in batches(images, data.labels, cfg, zooms, step, workers):
        batch = to_device(batch, device)
        losses = train_step(model, batch, cfg, gen)
        if not math.isfinite(losses["total"].item()):
            raise HtsError(f"training diverged at step {step} (loss {losses['total'].item()})")
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        meta.setdefault("loss_trace", []).append(round(losses["total"].item(), 5))
        step += 1
        done += 1
        elapsed = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{losses['total'].item():.3f}", img_s=f"{done * cfg.batch_size / elapsed:.1f}")
        if step % cfg.val_every == 0 or step == cfg.steps:
            entry = {"step": step, "loss": {k: round(v.item(), 5) for k, v in losses.items()}, "time_s": round(
                meta.get("wall_s", 0.0) + elapsed, 2)}
            if val is not None:
                entry["val"] = evaluate_model(model.eval(), val, device=device)
                model.train()
                best = meta["best"]
                if best is None or entry["val"]["dsb_score"] > best["val"]["dsb_score"]:
                    meta["best"] = entry
                    save_checkpoint(out.with_suffix(".best.pt"), model, step, meta)
            meta["history"].append(entry)
            meta["wall_s"] = meta.get("wall_s", 0.0) + elapsed
            t0, done = time.perf_counter(), 0
            save_checkpoint(out, model, step, meta, optimizer=opt.state_dict(), rng=gen.get_state())
            if val is not None:
                v = entry["val"]
                (bar.write if progress else log)(f"step {step}: loss {entry['loss']['total']:.4f}  val mean IU {v['mean_iu']:.4f}  "
                          f"AP50 {v['ap_50']:.3f}  AJI {v['aji']:.3f}  DSB {v['dsb_score']:.3f}")
    bar.close()
    model.eval()
    return meta


def _start_from(model: InstanceUNet, cfg: TrainConfig) -> dict:
    """Load the weights of checkpoint ``cfg.init`` into ``model``; returns its path, sha256 and step."""
    start, ckpt = load_model(cfg.init)
    if start.config != cfg.model_config():
        raise HtsError(f"init {cfg.init}: its architecture {start.config} differs from this run's {cfg.model_config()}")
    model.load_state_dict(start.state_dict())
    return {"path": str(cfg.init), "sha256": sha256sum(cfg.init), "step": int(ckpt.get("step", 0))}
