"""Anchor generation for the RPN, after torchvision's ``AnchorGenerator``.

k = len(scales) * len(aspect_ratios) anchors sit on every feature-map pixel,
centred on that pixel's centre in the input image (stride 16 in the paper).
"""

from __future__ import annotations

import torch

PAPER_SCALES = (0.5, 1.0, 2.0)
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def cell_anchors(
    base_size: float,
    scales: tuple[float, ...] = PAPER_SCALES,
    aspect_ratios: tuple[float, ...] = PAPER_ASPECT_RATIOS,
) -> torch.Tensor:
    """The k anchors centred on (0, 0), ordered scale-major.

    An anchor of scale ``s`` and aspect ratio ``r = h / w`` has area
    ``(s * base_size)^2``: ``w = s * base / sqrt(r)``, ``h = s * base * sqrt(r)``.

    Parameters
    ----------
    base_size : float
        Side of a scale-1, ratio-1 anchor, px.
    scales, aspect_ratios : tuple of float, optional
        The paper's 0.5/1/2 each.

    Returns
    -------
    (k, 4) float32 tensor
        ``(x1, y1, x2, y2)`` in px, ``k = len(scales) * len(aspect_ratios)``.
    """
    out = []
    for s in scales:
        for r in aspect_ratios:
            w = s * base_size / r**0.5
            h = s * base_size * r**0.5
            out.append((-w / 2, -h / 2, w / 2, h / 2))
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(
    feature_size: tuple[int, int],
    stride: int,
    base_size: float,
    scales: tuple[float, ...] = PAPER_SCALES,
    aspect_ratios: tuple[float, ...] = PAPER_ASPECT_RATIOS,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """All anchors of a feature map, centred on its pixels.

    Order matches the RPN head outputs flattened as ``(Hf, Wf, k)``: anchor
    ``(i, j, a)`` is centred at pixel ``((j + 0.5) * stride, (i + 0.5) * stride)``.

    Parameters
    ----------
    feature_size : tuple of int
        ``(Hf, Wf)`` of the feature map.
    stride : int
        Input px per feature-map pixel (16).
    base_size : float
        Anchor base size, px (see :func:`cell_anchors`).
    scales, aspect_ratios : tuple of float, optional
        As in :func:`cell_anchors`.
    device : torch.device or str, optional
        Where to build them.

    Returns
    -------
    (Hf * Wf * k, 4) float32 tensor
        ``(x1, y1, x2, y2)`` in px of the network input.
    """
    hf, wf = feature_size
    base = cell_anchors(base_size, scales, aspect_ratios).to(device)
    ys = (torch.arange(hf, dtype=torch.float32, device=device) + 0.5) * stride
    xs = (torch.arange(wf, dtype=torch.float32, device=device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)
