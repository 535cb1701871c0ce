"""The default model shipped inside the package, loaded with its checksum verified."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from hts.errors import HtsError
from hts.model import InstanceUNet
from hts.model.checkpoint import load_model

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_NAME = "default"


def default_model_path() -> Path:
    """Path of the shipped default checkpoint.

    Returns
    -------
    pathlib.Path
        ``hts/model/weights/default.pt`` inside the package; it may not exist
        (a source checkout without shipped weights).
    """
    return WEIGHTS_DIR / f"{DEFAULT_NAME}.pt"


@lru_cache(maxsize=1)
def default_model() -> InstanceUNet:
    """The shipped default Instance-U-Net, checksum verified; cached per process.

    The SHA-256 recorded in ``default.json`` beside the weights is checked
    before they are loaded, so a corrupt or replaced file is refused.

    Returns
    -------
    InstanceUNet
        In eval mode, on the CPU, with its validated inference settings.

    Raises
    ------
    HtsError
        When no default model is installed or its checksum differs.
    """
    path = default_model_path()
    card = path.with_suffix(".json")
    if not path.is_file() or not card.is_file():
        raise HtsError(
            f"no default model is installed ({path} not found); train one with `hts train` and pass it with --model/model="
        )
    sha = json.loads(card.read_text())["sha256"]
    model, _ = load_model(path, expected_sha256=sha)
    return model
