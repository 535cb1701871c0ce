"""hts: Instance-U-Net nucleus segmentation and counting for high-throughput screening."""

from __future__ import annotations

__version__ = "0.1.0"

from hts.api import segment  # noqa: E402
from hts.errors import HtsError  # noqa: E402

__all__ = ["segment", "open_results", "HtsError", "__version__"]


def __getattr__(name: str):
    """``hts.open_results`` (:mod:`hts.analysis.load`), imported on first use (keeps pandas and Zarr out of CLI start-up)."""
    if name == "open_results":
        from hts.analysis.load import open_results

        return open_results
    raise AttributeError(f"module 'hts' has no attribute {name!r}")
