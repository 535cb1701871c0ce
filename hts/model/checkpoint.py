"""Checkpoints: model configuration, weights, training state and metrics in one file.

A checkpoint is a ``torch.save`` dict of plain types and tensors, loaded with
``weights_only=True`` so that loading never unpickles arbitrary objects::

    {"format": "hts-checkpoint", "version": 1, "config": {...ModelConfig...},
     "state_dict": {...}, "step": int, "meta": {...JSON-able...},
     "optimizer": {...} (training only), "rng": ByteTensor (training only)}

Written through :func:`hts.io.atomic.atomic_write`, the one atomic-write
helper; the model package imports nothing else from :mod:`hts.io` (that
module is stdlib-only).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from hts.errors import HtsError
from hts.io.atomic import atomic_write
from hts.model import InstanceUNet, ModelConfig

FORMAT = "hts-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: InstanceUNet, step: int = 0, meta: dict | None = None, **training: Any) -> None:
    """Write a checkpoint atomically (:func:`hts.io.atomic.atomic_write`): never a half-written file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pt`` file; missing folders are created.
    model : InstanceUNet
        Its configuration and weights (copied to CPU) are stored.
    step : int
        Training updates done so far.
    meta : dict, optional
        JSON-able metadata (training options, metrics, ``inference`` settings).
    **training
        Extra entries to store, e.g. ``optimizer=opt.state_dict()``,
        ``rng=generator.get_state()`` (to resume training).
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "meta": dict(meta or {}),
        **training,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, checked for format; one-line errors for bad files.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_checkpoint`.

    Returns
    -------
    dict
        The checkpoint (see the module docstring), tensors on CPU.

    Raises
    ------
    HtsError
        A missing, corrupt or non-hts file, or another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise HtsError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HtsError(f"checkpoint {path} is corrupt or not a torch file ({reason[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise HtsError(f"checkpoint {path} is not an hts checkpoint (missing format tag {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise HtsError(f"checkpoint {path} has format version {ckpt.get('version')!r}; this hts reads {VERSION}")
    return ckpt


def load_model(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[InstanceUNet, dict[str, Any]]:
    """Model (eval mode, CPU) and the checkpoint dict from ``path``.

    With ``expected_sha256`` the file's checksum is verified first. A state
    dict that does not fit the stored configuration (another architecture)
    is refused with a one-line error.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_checkpoint`.
    expected_sha256 : str, optional
        Hex SHA-256 the file must have.

    Returns
    -------
    model : InstanceUNet
        In eval mode, on CPU; ``model.inference`` holds the checkpoint's
        ``meta["inference"]`` settings as floats.
    checkpoint : dict
        The raw checkpoint (:func:`read_checkpoint`).

    Raises
    ------
    HtsError
        A checksum mismatch, or any :func:`read_checkpoint` error, or an
        invalid configuration or mismatching state dict.
    """
    if expected_sha256 is not None:
        actual = sha256sum(path)
        if actual != expected_sha256:
            raise HtsError(f"checkpoint {path} fails its checksum (sha256 {actual[:12]}..., expected {expected_sha256[:12]}...)")
    ckpt = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except (TypeError, KeyError) as exc:
        raise HtsError(f"checkpoint {path} has an invalid model configuration ({exc})") from None
    model = InstanceUNet(config)
    state = ckpt.get("state_dict", {})
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (missing and f"missing {missing[0]}") or (unexpected and f"unexpected {unexpected[0]}") or f"shape of {wrong[0]}"
        raise HtsError(f"checkpoint {path} does not match its architecture {config.to_dict()} ({detail})")
    model.load_state_dict(state)
    model.inference = {k: float(v) for k, v in ckpt.get("meta", {}).get("inference", {}).items()}
    return model.eval(), ckpt


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file.

    Parameters
    ----------
    path : str or os.PathLike
        Any file (read in 1 MiB blocks).

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
