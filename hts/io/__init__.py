"""All file I/O: image files, OME-Zarr (NGFF) plates and images, a run's results folder.

Nothing here knows Dask; the engine and the screen layer read and write through these modules.
"""
