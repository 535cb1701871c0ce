"""The ``type=`` converters and shared help texts of the command line (:mod:`hts.cli_args`).

Each converter turns one option's text into its value or raises
``argparse.ArgumentTypeError`` with the value expected, which argparse
prints as one ``hts: error:`` line naming the option.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def positive(text: str, expected: str = "a number > 0") -> float:
    """A finite number > 0 (``--pixel-size``, ``--diameter``); else an argparse error saying what was ``expected``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def diameter_px(text: str) -> float | None:
    """``--diameter`` of segment and run: a number of px > 0, or ``auto`` (None: estimated)."""
    return None if text == "auto" else positive(text, "a number of px > 0 or 'auto'")


def eval_diameter(text: str) -> float | str | None:
    """``--diameter`` of eval: as :func:`diameter_px`, or ``gt`` (each image's ground-truth median)."""
    if text == "gt":
        return text
    try:
        return diameter_px(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'gt', 'auto' or a number of px > 0, got {text!r}") from None


PLATEMAP_HELP = ("CSV with a 'well' column (A01, A1 or A/1) and any others (e.g. treatment, dose, role); "
                 "role negative|positive|sample marks the controls; its columns join every table as "
                 "Metadata_<column> and the screen statistics go to screen.json")
READOUT_HELP = ("a nucleus feature (a nuclei.parquet column, e.g. Nuclei_Intensity_MeanIntensity_GFP) whose "
                "per-well median is scored like the count (Z', SSMD, B-score, dose-response); repeatable or "
                "comma-separated")


def z_mode(text: str) -> int | str | None:
    t = text.strip().lower()
    if t == "max":
        return None
    if t == "all":
        return "all"
    if t.isdigit():
        return int(t)
    raise argparse.ArgumentTypeError(f"expected max, all or a plane index, got {text!r}")


def channel_list(text: str) -> tuple[str | int, ...]:
    names = tuple(channel(t.strip()) for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected channel names or indices separated by commas, got {text!r}")
    return names


def readout_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected feature names separated by commas, got {text!r}")
    return names


def channel(text: str) -> str | int:
    """``--channel``: an index when all digits, else a name."""
    return int(text) if text.isdigit() else text


def path_str(text: str) -> str:
    """A path as a string, normalised as :class:`pathlib.Path` writes it (``a//b/`` -> ``a/b``)."""
    return str(Path(text))


def name_list(text: str) -> list[str]:
    """``--channel-names DAPI,GFP``: names separated by commas."""
    return [n.strip() for n in text.split(",")]
