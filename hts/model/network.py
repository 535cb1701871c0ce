"""The Instance-U-Net: shared encoder, U-Net decoder and (optionally) the RPN.

``InstanceUNet(ModelConfig(rpn=False))`` is the plain U-Net baseline of the
paper (U-BCE); with ``rpn=True`` the RPN losses also train the shared encoder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from hts.errors import HtsError
from hts.model.anchors import PAPER_ASPECT_RATIOS, PAPER_SCALES, grid_anchors
from hts.model.rpn import RPNHead
from hts.model.unet import Decoder, Encoder

STRIDE = 16  # px: four 2x2 poolings; input sides are multiples of it. The one definition: import it
MAX_WIDTH = 256  # channels of the first step: 4x the paper's 64; more is a typo or a hostile checkpoint
MAX_PX = 1024.0  # largest anchor base and canonical diameter, px of the network input
MAX_FACTORS = 16  # anchor scales, and aspect ratios, at most this many each


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an Instance-U-Net; stored in every checkpoint.

    Parameters
    ----------
    width : int
        Channels of the first encoder step (paper: 64; 16 is the CPU width).
    rpn : bool
        Build the RPN head; False gives the plain U-Net baseline.
    anchor_base : float
        Anchor base size, px of the network input. With the paper's scales
        0.5/1/2 the default 32 gives anchors of 16, 32 and 64 px, which
        brackets nuclei of 15-60 px diameter.
    scales, aspect_ratios : tuple of float
        Anchor scales (multiples of ``anchor_base``) and aspect ratios (h / w).
    diameter : float or None
        Canonical nucleus diameter (px) the model was trained at; inputs are
        resampled so their nuclei have this size (see :mod:`hts.engine.scale`).
        None: trained at the data's native scale, inputs are used as they are.

    Raises
    ------
    HtsError
        Naming the first field of the wrong type or outside its range:
        ``width`` an int in 1..MAX_WIDTH, ``rpn`` a bool, ``anchor_base``
        and ``diameter`` (or None) px in (0, MAX_PX], ``scales`` and
        ``aspect_ratios`` 1..MAX_FACTORS finite positive numbers.
    """

    width: int = 16
    rpn: bool = True
    anchor_base: float = 32.0
    scales: tuple[float, ...] = field(default=PAPER_SCALES)
    aspect_ratios: tuple[float, ...] = field(default=PAPER_ASPECT_RATIOS)
    diameter: float | None = 32.0

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, int) or not 1 <= self.width <= MAX_WIDTH:
            raise HtsError(f"model width must be a positive integer up to {MAX_WIDTH}, got {self.width!r}")
        if not isinstance(self.rpn, bool):
            raise HtsError(f"model rpn must be true or false, got {self.rpn!r}")
        _check_px("anchor_base", self.anchor_base)
        if self.diameter is not None:
            _check_px("diameter", self.diameter)
        _check_factors("scales", self.scales)
        _check_factors("aspect_ratios", self.aspect_ratios)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map pixel, ``k = len(scales) * len(aspect_ratios)``."""
        return len(self.scales) * len(self.aspect_ratios)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples as lists), as stored in checkpoints."""
        d = asdict(self)
        d["scales"], d["aspect_ratios"] = list(self.scales), list(self.aspect_ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; an unknown key raises :class:`HtsError` (a foreign checkpoint)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise HtsError(f"unknown model configuration fields {sorted(unknown)}")
        d = dict(d)
        for key in ("scales", "aspect_ratios"):
            if key in d:
                _check_factors(key, d[key])
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)


def _is_number(value: object) -> bool:
    """A finite real number (int or float, not bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_px(name: str, value: object) -> None:
    """Raise HtsError unless ``value`` is a number of px in (0, MAX_PX]."""
    if not (_is_number(value) and 0 < value <= MAX_PX):
        raise HtsError(f"model {name} must be a number of px in (0, {MAX_PX:g}], got {value!r}")


def _check_factors(name: str, values: object) -> None:
    """Raise HtsError unless ``values`` is a list or tuple of 1..MAX_FACTORS finite numbers > 0."""
    if not (isinstance(values, (list, tuple)) and 1 <= len(values) <= MAX_FACTORS
            and all(_is_number(v) and 0 < v < 1e3 for v in values)):
        raise HtsError(f"model {name} must be 1 to {MAX_FACTORS} numbers in (0, 1000), got {values!r}"[:200])


class InstanceUNet(nn.Module):
    """The Instance-U-Net: shared encoder, U-Net decoder and, with ``config.rpn``, the RPN head.

    Parameters
    ----------
    config : ModelConfig, optional
        The architecture (default: CPU width 16 with the RPN).

    Attributes
    ----------
    inference : dict of str to float
        Inference settings selected on validation data (checkpoint meta
        ``"inference"``): ``fg_threshold`` and ``score_threshold``.
    """

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.width)
        self.decoder = Decoder(config.width)
        self.rpn = RPNHead(8 * config.width, config.num_anchors) if config.rpn else None
        self._anchor_cache: dict[tuple, torch.Tensor] = {}
        # Inference settings selected on validation data (checkpoint meta "inference"):
        # fg_threshold (foreground probability) and score_threshold (RPN markers).
        self.inference: dict[str, float] = {}

    def anchors(self, feature_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Anchors of a feature map, cached per size and device.

        Parameters
        ----------
        feature_size : tuple of int
            ``(Hf, Wf)`` of the stride-16 feature map.
        device : torch.device
            Where the anchors live.

        Returns
        -------
        (Hf * Wf * k, 4) float32 tensor
            ``(x1, y1, x2, y2)`` in px of the network input (see :func:`grid_anchors`).
        """
        key = (feature_size, str(device))
        if key not in self._anchor_cache:
            c = self.config
            self._anchor_cache[key] = grid_anchors(
                feature_size, STRIDE, c.anchor_base, c.scales, c.aspect_ratios, device=device
            )
        return self._anchor_cache[key]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Foreground logits and, with the RPN, anchor scores and box offsets.

        Parameters
        ----------
        x : (B, 1, H, W) float tensor
            Normalised images (see :func:`hts.engine.preprocess.normalize`);
            H and W positive multiples of :data:`STRIDE` (16 px).

        Returns
        -------
        dict of str to tensor
            ``logits (B, 2, H, W)`` (background, foreground); with the RPN also
            ``rpn_logits (B, A, 2)``, ``rpn_deltas (B, A, 4)`` and ``anchors (A, 4)``
            (px), ``A = H/16 * W/16 * k``.
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise HtsError(f"model input must be (B, 1, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % STRIDE or w % STRIDE or h == 0 or w == 0:
            raise HtsError(f"model input sides must be positive multiples of {STRIDE}, got {h}x{w}")
        features, skips = self.encoder(x)
        out = {"logits": self.decoder(features, skips)}
        if self.rpn is not None:
            out["rpn_logits"], out["rpn_deltas"] = self.rpn(features)
            out["anchors"] = self.anchors(tuple(features.shape[-2:]), features.device)
        return out
