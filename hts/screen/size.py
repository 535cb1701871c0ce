"""The plate's nucleus diameter: the network's estimate on fields spread over the plate, and their consensus.

Magnification is fixed per plate, so one diameter serves every field; but
one field can mislead (empty, out of focus, debris), so the estimate is taken
on up to ``FIELDS`` fields spread evenly over the plate and the median is
used. Fields more than ``TOLERANCE`` away from it are named in a warning, and
the per-field values go into the run record.
"""

from __future__ import annotations

import numpy as np

from hts.engine.size import Consensus, consensus, estimate_diameter
from hts.model import InstanceUNet
from hts.screen.tasks import Job, read_field

FIELDS = 6  # fields measured per plate
TOLERANCE = 0.25  # a field further than this from the consensus is named
CROP = 2048  # px: the central crop of a field the estimate reads (bounded for whole slides)


def spread_over(jobs: list[Job], n: int = FIELDS) -> list[Job]:
    """Up to ``n`` of ``jobs`` spread evenly over the list (plate order: rows, columns, fields)."""
    if len(jobs) <= n:
        return list(jobs)
    return [jobs[i] for i in np.unique(np.linspace(0, len(jobs) - 1, n).round().astype(int))]


def plate_diameter(net: InstanceUNet, jobs: list[Job], shape: tuple[int, int], log=print) -> Consensus:
    """The consensus nucleus diameter (px) of the fields ``jobs`` of a plate.

    Parameters
    ----------
    net : InstanceUNet
        The model the plate will be segmented with (it measures the nuclei).
    jobs : list of Job
        The fields to choose from (e.g. those left to do), in plate order.
    shape : (int, int)
        The full-resolution (y, x) shape of the fields, px.
    log : callable
        Takes one line per event.

    Returns
    -------
    Consensus
        The median of the fields' estimates (None when no field had nuclei),
        the per-field values (keyed by field, e.g. ``B/3/0``), their spread
        and the outliers.
    """
    y0, x0 = max((shape[0] - CROP) // 2, 0), max((shape[1] - CROP) // 2, 0)
    region = (slice(y0, y0 + CROP), slice(x0, x0 + CROP))
    per_field = {job.ref.key: estimate_diameter(net, read_field(job, region)).diameter for job in spread_over(jobs)}
    c = consensus(per_field, TOLERANCE)
    values = [v for v in per_field.values() if v is not None]
    if c.diameter is None:
        log(f"nucleus diameter: no nuclei found on {len(per_field)} fields to measure it on; images are not rescaled "
            "(set --diameter)")
        return c
    log(f"nucleus diameter: {c.diameter:.1f} px (median of {len(values)} fields, {min(values):.1f}-{max(values):.1f} px, "
        f"spread {100 * c.spread:.0f}%; set --diameter to fix it)")
    if c.outliers:
        named = ", ".join(f"{k} ({per_field[k]:.1f} px)" for k in c.outliers)
        log(f"warning: nucleus diameter: {named} differ from the plate's {c.diameter:.1f} px by more than "
            f"{100 * TOLERANCE:.0f}%; if the plate mixes magnifications, run those wells with their own --diameter")
    return c
