"""The segmentation engine: preprocess -> scale -> tile -> infer -> watershed -> stitch, as plain functions.

numpy arrays and torch tensors in and out; nothing here knows Dask, Zarr
stores of a plate, or SLURM (:mod:`hts.screen` composes them).
"""
