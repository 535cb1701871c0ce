"""The units of work of a run: plate fields, or (field, time point) pairs of a time series; label volumes.

A time series (an image ``t`` axis longer than 1) is segmented time point
by time point, each its own Dask tasks (``infer-B03-f2-t05``), nucleus table
and done marker, so a killed run resumes at the time point it stopped at and
a worker holds one plane stack of one field, never a whole series. Its
labels are one volume per field (:mod:`hts.io.ngff_volume`), installed
before the field's first time point is submitted.
"""

from __future__ import annotations

from dataclasses import replace

import zarr

from hts.errors import HtsError
from hts.io.ngff import FieldRef, Source
from hts.io.ngff_image import image_info
from hts.io.results import Results
from hts.screen.tasks import Job


def time_units(source: Source, opts) -> tuple[list[FieldRef], bool]:
    """The units of work: each field, or each (field, time point) of a time series; and whether labels are volumes.

    ``opts`` is the run's :class:`hts.screen.run.RunOptions` (its ``t`` and ``z``).

    The first field's ``t`` axis stands for the plate's (a plate is one
    acquisition). A time series (``t`` longer than 1) or ``--z all`` writes
    label volumes (:mod:`hts.io.ngff_volume`); a 2D plate keeps one label
    image per field, as before.

    Raises
    ------
    HtsError
        ``--t`` names time points the images do not have.
    """
    group = zarr.open_group(f"{source.path}/{source.fields[0].path}" if source.fields[0].path else str(source.path),
                            mode="r")
    info = image_info(group, str(source.path))
    n = info.axis_size("t") if "t" in info.axes else 1
    points = time_points(opts.t, n)
    if n == 1:
        return list(source.fields), opts.z == "all"
    return [replace(ref, t=t) for ref in source.fields for t in points], True


def time_points(spec: str | int, n: int) -> list[int]:
    """``--t``: ``all``, ``N`` or ``A:B`` (A to B-1, a Python slice; either may be left out) over ``n`` time points."""
    if spec == "all":
        return list(range(n))
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        t = int(spec)
        if not 0 <= t < n:
            raise HtsError(f"--t {spec}: out of range, the images have {n} time point(s) (0 to {n - 1})")
        return [t]
    a, sep, b = str(spec).partition(":")
    try:
        if not sep:
            raise ValueError
        points = list(range(n))[slice(int(a) if a.strip() else None, int(b) if b.strip() else None)]
    except ValueError:
        raise HtsError(f"--t must be all, a time point N or a range A:B, got {spec!r}") from None
    if not points:
        raise HtsError(f"--t {spec}: no time point in range (the images have {n}: 0 to {n - 1})")
    return points


def ensure_volume(job: Job) -> None:
    """Install the field's empty label volume unless one of its shape exists (:mod:`hts.io.ngff_volume`)."""
    from hts.io.ngff_volume import ensure_label_volume, volume_sizes
    from hts.io.staging import open_group_at

    info = job.image_info()
    root = open_group_at(job.out)
    ensure_label_volume(root[job.ref.path] if job.ref.path else root, info, Results.fmt_of(job.version),
                        volume_sizes(info, job.z_all))
