"""All file I/O: image files, OME-Zarr (NGFF) plates and images, a run's results folder, atomic writes.

Nothing here knows Dask; the engine and the screen layer read and write through these modules.
This ``__init__`` imports nothing, so that :mod:`hts.io.atomic` (stdlib-only) can be used from any layer.
"""
