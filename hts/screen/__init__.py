"""Screening whole plates and slides: the Dask task graph, the cluster (local, existing or SLURM) and ``hts run``."""
