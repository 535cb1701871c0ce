"""hts: Instance-U-Net nucleus segmentation and counting for high-throughput screening."""

from __future__ import annotations

__version__ = "0.1.0"

from hts.api import segment  # noqa: E402
from hts.errors import HtsError  # noqa: E402

__all__ = ["segment", "HtsError", "__version__"]
