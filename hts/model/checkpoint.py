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
import math
import os
import warnings
import zipfile
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

    The container is checked before torch reads it (a torch zip archive
    with its ``data.pkl``), so a plain pickle, a truncated file or another
    zip is refused in one line, and torch's warnings about such files are
    not printed. Loading keeps ``weights_only=True``.

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
    _check_container(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before it refuses: the error says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HtsError(f"checkpoint {path} is corrupt or not a torch file ({reason[:120]})") from None
    if not isinstance(ckpt, dict):
        raise HtsError(f"checkpoint {path} is not an hts checkpoint (a {type(ckpt).__name__}, not a dict)")
    if ckpt.get("format") != FORMAT:
        raise HtsError(f"checkpoint {path} is not an hts checkpoint (field 'format' is {_short(ckpt.get('format'))}, "
                       f"expected {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise HtsError(f"checkpoint {path} has format version {_short(ckpt.get('version'))} (field 'version'); "
                       f"this hts reads {VERSION}")
    return ckpt


def _check_container(path: Path) -> None:
    """Raise HtsError unless ``path`` is a zip archive holding torch's ``<name>/data.pkl``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise HtsError(f"checkpoint {path} is corrupt or not a torch file (not a zip archive: truncated, "
                       f"a plain pickle or another format; {str(exc)[:80]})") from None
    if not any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
        raise HtsError(f"checkpoint {path} is corrupt or not a torch file (a zip archive without torch's data.pkl)")


def _short(value: object) -> str:
    """``repr(value)``, cut to 60 characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_model(path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[InstanceUNet, dict[str, Any]]:
    """Model (eval mode, CPU) and the checkpoint dict from ``path``.

    With ``expected_sha256`` the file's checksum is verified first. The
    configuration is validated (types and ranges, :class:`ModelConfig`) and
    the state dict's names, shapes and dtypes are checked against those the
    configuration implies, on torch's ``meta`` device, before any model is
    allocated: a hostile checkpoint costs no memory and ends in one line.

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
        invalid configuration, state dict or inference setting (naming the field).
    """
    if expected_sha256 is not None:
        actual = sha256sum(path)
        if actual != expected_sha256:
            raise HtsError(f"checkpoint {path} fails its checksum (sha256 {actual[:12]}..., expected {expected_sha256[:12]}...)")
    ckpt = read_checkpoint(path)
    config = _model_config(ckpt, path)
    state = _checked_state(ckpt, config, path)
    inference = _inference_settings(ckpt, path)
    model = InstanceUNet(config)
    model.load_state_dict(state)
    model.inference = inference
    return model.eval(), ckpt


def _model_config(ckpt: dict[str, Any], path: str | os.PathLike) -> ModelConfig:
    """The checkpoint's validated ``config``, or a one-line HtsError naming the field."""
    raw = ckpt.get("config")
    if not isinstance(raw, dict):
        raise HtsError(f"checkpoint {path} has an invalid model configuration (field 'config' is {_short(raw)}, not a dict)")
    try:
        return ModelConfig.from_dict(raw)
    except (HtsError, TypeError, ValueError, KeyError) as exc:
        raise HtsError(f"checkpoint {path} has an invalid model configuration (field 'config': {str(exc)[:160]})") from None


def expected_state(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name to ``(shape, dtype)`` of every state-dict entry of ``InstanceUNet(config)``, allocating nothing.

    Parameters
    ----------
    config : ModelConfig
        A validated architecture.

    Returns
    -------
    dict of str to (tuple of int, torch.dtype)
        Built on torch's ``meta`` device (shapes only, no memory).
    """
    with torch.device("meta"):
        model = InstanceUNet(config)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def _checked_state(ckpt: dict[str, Any], config: ModelConfig, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entry once its names, shapes, dtypes and values fit ``config``; else one-line HtsError."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise HtsError(f"checkpoint {path} has an invalid field 'state_dict' (must map names to tensors)")
    expected = expected_state(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k, (shape, dtype) in expected.items() if k in state and (tuple(state[k].shape), state[k].dtype) != (shape, dtype)]
    if missing or unexpected or wrong:
        detail = ((missing and f"missing {missing[0]}") or (unexpected and f"unexpected {unexpected[0]}")
                  or f"shape/dtype of {wrong[0]}: {tuple(state[wrong[0]].shape)} {state[wrong[0]].dtype}, "
                     f"expected {expected[wrong[0]][0]} {expected[wrong[0]][1]}")
        raise HtsError(f"checkpoint {path} does not match its architecture {config.to_dict()} (field 'state_dict': {detail})")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise HtsError(f"checkpoint {path} has NaN or infinite weights (field 'state_dict', entry {bad})")
    return state


def _inference_settings(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, float]:
    """``meta["inference"]`` as floats in [0, 1] (probability thresholds), or a one-line HtsError naming the field."""
    meta = ckpt.get("meta", {})
    inference = meta.get("inference", {}) if isinstance(meta, dict) else None
    if not isinstance(inference, dict):
        raise HtsError(f"checkpoint {path} has an invalid field 'meta' (must be a dict with a dict 'inference')")
    out = {}
    for key, value in inference.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1
        if not (isinstance(key, str) and ok):
            raise HtsError(f"checkpoint {path} has an invalid field 'meta.inference.{key}' "
                           f"(must be a probability in [0, 1], got {_short(value)})")
        out[key] = float(value)
    return out


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
