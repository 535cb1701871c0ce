"""Region Proposal Network on the shared stride-16 map: head, proposals and loss.

Head (Faster R-CNN): a 3x3 convolution with ReLU (as Faster R-CNN and
torchvision; the paper names only the two 1x1 convolutions), then two 1x1
convolutions giving ``2k`` object/not-object logits and ``4k`` box offsets.

Training targets (the paper is silent; Faster R-CNN defaults adapted to
small nuclei on a stride-16 grid):

* an anchor is **positive** when its IoU with some ground-truth box is
  >= ``fg_iou`` (0.5; Faster R-CNN uses 0.7, which few anchors reach for
  20-40 px nuclei), and every ground-truth box also claims its best anchor(s),
  so no nucleus goes without a positive anchor;
* **negative** when its best IoU is < ``bg_iou`` (0.3); anchors in between are
  ignored;
* per image ``batch_per_image`` (256) anchors are sampled at random with at
  most ``positive_fraction`` (0.5) positives;
* loss = cross-entropy over the sampled anchors + ``lambda`` (1) x smooth-L1
  (beta 1/9) on the encoded offsets of the sampled positives, both divided by
  the number of sampled anchors (torchvision's normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hts.model.boxes import BoxCoder, box_iou, nms


class RPNHead(nn.Module):
    """RPN head: a 3x3 conv + ReLU, then 1x1 convs to ``2k`` object logits and ``4k`` box offsets.

    Parameters
    ----------
    channels : int
        Channels ``C`` of the shared feature map.
    num_anchors : int, optional
        Anchors ``k`` per feature-map pixel (paper: 9).
    """

    def __init__(self, channels: int, num_anchors: int = 9) -> None:
        super().__init__()
        self.k = num_anchors
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(channels, 2 * num_anchors, 1)
        self.reg = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.cls, self.reg):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score and regress every anchor of ``features``.

        Parameters
        ----------
        features : (B, C, Hf, Wf) float tensor
            The shared stride-16 map.

        Returns
        -------
        logits : (B, Hf*Wf*k, 2) tensor
            (not object, object) logits, in the order of :func:`hts.model.anchors.grid_anchors`.
        deltas : (B, Hf*Wf*k, 4) tensor
            Encoded box offsets (see :class:`hts.model.boxes.BoxCoder`).
        """
        b, _, hf, wf = features.shape
        t = self.conv(features)
        # (B, k*2, Hf, Wf) -> (B, Hf, Wf, k, 2) -> (B, Hf*Wf*k, 2): same order as grid_anchors.
        logits = self.cls(t).view(b, self.k, 2, hf, wf).permute(0, 3, 4, 1, 2).reshape(b, -1, 2)
        deltas = self.reg(t).view(b, self.k, 4, hf, wf).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        return logits, deltas


@dataclass(frozen=True)
class ProposalParams:
    """How raw anchors become proposals (defaults documented in the model card)."""

    score_threshold: float = 0.5  # objectness probability a proposal must reach
    nms_iou: float = 0.3  # the paper's NMS threshold
    pre_nms_top_n: int = 4000  # per 448x448 px of input (scaled with the image area)
    post_nms_top_n: int = 2000  # per 448x448 px of input
    min_size: float = 2.0  # px; smaller decoded boxes are dropped


def proposals(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int],
    params: ProposalParams = ProposalParams(),
    coder: BoxCoder = BoxCoder(),
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: the proposals after decoding, clipping, thresholding and NMS.

    Parameters
    ----------
    logits : (B, A, 2) tensor
        RPN object logits.
    deltas : (B, A, 4) tensor
        RPN box offsets.
    anchors : (A, 4) tensor
        Anchors ``(x1, y1, x2, y2)``, px.
    image_size : tuple of int
        ``(H, W)`` of the network input, px: boxes are clipped to it and the
        top-n caps of ``params`` scale with its area.
    params : ProposalParams, optional
        Thresholds and caps.
    coder : BoxCoder, optional
        Decodes the offsets.

    Returns
    -------
    list of (boxes, scores)
        One pair per image: ``boxes (N, 4)`` float32, px, and ``scores (N,)``,
        the softmax object probability, highest first.
    """
    h, w = image_size
    area = max(1.0, h * w / 448**2)
    pre_n, post_n = int(params.pre_nms_top_n * area), int(params.post_nms_top_n * area)
    out = []
    probs = logits.float().softmax(-1)[..., 1]
    for p, d in zip(probs, deltas.float()):
        keep = p >= params.score_threshold
        p, d, a = p[keep], d[keep], anchors[keep]
        if p.numel() > pre_n:
            top = torch.topk(p, pre_n).indices
            p, d, a = p[top], d[top], a[top]
        boxes = coder.decode(d, a)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        big = ((boxes[:, 2] - boxes[:, 0]) >= params.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= params.min_size)
        boxes, p = boxes[big], p[big]
        kept = nms(boxes, p, params.nms_iou)[:post_n]
        out.append((boxes[kept], p[kept]))
    return out


@dataclass(frozen=True)
class MatchParams:
    """Anchor-to-ground-truth matching and sampling (see the module docstring)."""

    fg_iou: float = 0.5
    bg_iou: float = 0.3
    batch_per_image: int = 256
    positive_fraction: float = 0.5
    reg_weight: float = 1.0  # lambda
    smooth_l1_beta: float = 1.0 / 9


def match_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, params: MatchParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Label anchors 1 (object), 0 (background) or -1 (ignored); see the module docstring.

    Parameters
    ----------
    anchors : (A, 4) tensor
        Anchors, px.
    gt_boxes : (G, 4) tensor
        Ground-truth boxes, px.
    params : MatchParams
        IoU thresholds.

    Returns
    -------
    labels : (A,) int64 tensor
        1, 0 or -1 per anchor (all 0 when ``G == 0``).
    matched : (A,) int64 tensor
        Index into ``gt_boxes``; meaningless where ``labels != 1``.
    """
    a = anchors.shape[0]
    if gt_boxes.numel() == 0:
        return torch.zeros(a, dtype=torch.long, device=anchors.device), torch.zeros(a, dtype=torch.long, device=anchors.device)
    iou = box_iou(gt_boxes, anchors)  # (G, A)
    best_iou, matched = iou.max(dim=0)
    labels = torch.full((a,), -1, dtype=torch.long, device=anchors.device)
    labels[best_iou < params.bg_iou] = 0
    labels[best_iou >= params.fg_iou] = 1
    # Every gt box claims the anchor(s) with its highest IoU (ties included).
    best_per_gt = iou.max(dim=1, keepdim=True).values
    gt_idx, anchor_idx = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
    labels[anchor_idx] = 1
    matched[anchor_idx] = gt_idx
    return labels, matched


def sample_anchors(labels: torch.Tensor, params: MatchParams, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random indices of sampled positive and negative anchors (Faster R-CNN sampling).

    Parameters
    ----------
    labels : (A,) int64 tensor
        From :func:`match_anchors`.
    params : MatchParams
        ``batch_per_image`` anchors at most, at most ``positive_fraction`` of them positive.
    generator : torch.Generator, optional
        CPU generator for the draw (reproducible training).

    Returns
    -------
    pos, neg : 1D int64 tensors
        Indices into ``labels`` of the sampled positives and negatives.
    """
    pos = torch.nonzero(labels == 1).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    n_pos = min(pos.numel(), int(params.batch_per_image * params.positive_fraction))
    n_neg = min(neg.numel(), params.batch_per_image - n_pos)
    pos = pos[torch.randperm(pos.numel(), generator=generator, device="cpu")[:n_pos].to(pos.device)]
    neg = neg[torch.randperm(neg.numel(), generator=generator, device="cpu")[:n_neg].to(neg.device)]
    return pos, neg


def rpn_loss(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    params: MatchParams = MatchParams(),
    coder: BoxCoder = BoxCoder(),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification and regression losses of a batch (see the module docstring).

    Parameters
    ----------
    logits, deltas, anchors : tensors
        The RPN head's ``(B, A, 2)`` logits and ``(B, A, 4)`` offsets and the
        ``(A, 4)`` anchors in px, as for :func:`proposals`.
    gt_boxes : list of (G_b, 4) tensors
        Per image, the ground-truth boxes in input px.
    params : MatchParams, optional
        Matching, sampling and loss weights.
    coder : BoxCoder, optional
        Encodes the regression targets.
    generator : torch.Generator, optional
        For the anchor sampling.

    Returns
    -------
    cls, reg : scalar float32 tensors
        Cross-entropy and weighted smooth-L1 terms, each divided by the
        number of sampled anchors.
    """
    cls_terms, reg_terms, n_sampled = [], [], 0
    for lg, dl, boxes in zip(logits, deltas, gt_boxes):
        labels, matched = match_anchors(anchors, boxes, params)
        pos, neg = sample_anchors(labels, params, generator)
        idx = torch.cat((pos, neg))
        n_sampled += idx.numel()
        cls_terms.append(F.cross_entropy(lg[idx].float(), labels[idx], reduction="sum"))
        if pos.numel():
            target = coder.encode(boxes[matched[pos]], anchors[pos])
            reg_terms.append(
                F.smooth_l1_loss(dl[pos].float(), target, beta=params.smooth_l1_beta, reduction="sum")
            )
    n = max(n_sampled, 1)
    cls = torch.stack(cls_terms).sum() / n
    reg = torch.stack(reg_terms).sum() / n if reg_terms else deltas.sum() * 0.0
    return cls, params.reg_weight * reg
