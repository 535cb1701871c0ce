"""Synthetic data with known truth: nucleus images, OME-Zarr plates, and ``hts demo``."""
