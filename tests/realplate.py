"""Real annotated fields for plate tests written by third-party tools.

Fields are DSB2018 validation images (``../shared/data``, see its README)
taken in file order, so no test chooses the images it passes on. A plate is
imaged at one magnification, while the DSB images come from many: fields are
taken from one size class, images whose true median nucleus diameter lies in
:data:`ONE_MAGNIFICATION` (19 of the 30 256x256 images). (A plate mixing
8.7 px and 21 px fields is not a plate; ``hts run`` uses one diameter per
plate.) Tests that use them take the ``val_npz`` fixture (skipped where the
data are absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the validation split beside the checkout (as tests/conftest.py finds it; see ../shared/data/README.md)
VAL_NPZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018_fluo_val.npz"
FIELD_SHAPE = (256, 256)  # the most common size of the validation split (30 of 54 images)
ONE_MAGNIFICATION = (12.0, 16.0)  # px, true median nucleus diameter of the fields of one plate


def real_fields(npz: str | Path, n: int, shape: tuple[int, int] = FIELD_SHAPE,
                diameters: tuple[float, float] = ONE_MAGNIFICATION) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n`` validation images of ``shape`` and one size class, in file order, with their labels.

    Parameters
    ----------
    npz : str or Path
        ``dsb2018_fluo_val.npz``.
    n : int
        How many fields.
    shape : tuple of int
        Only images of this ``(H, W)`` are taken, so fields stack into one plate.
    diameters : tuple of float
        Only images whose true median nucleus diameter (px) lies in this range.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        ``(image uint8 (H, W), labels uint16 (H, W))``; ``labels.max()`` is the
        field's true nucleus count.
    """
    from hts.engine.scale import median_diameter

    data = np.load(npz)
    out = []
    for i in range(int(data["n"])):
        image = data[f"images_{i:04d}"]
        if image.shape == tuple(shape):
            labels = data[f"labels_{i:04d}"]
            if diameters[0] <= median_diameter(labels) <= diameters[1]:
                out.append((image, labels))
            if len(out) == n:
                return out
    raise ValueError(f"{npz}: only {len(out)} images of shape {shape}, {n} asked for")


def plate_layout(n_wells: int, fields_per_well: int, columns: int = 2) -> list[tuple[str, int, list[int]]]:
    """Wells ``A1, A2, B1, ...`` with the indices of their fields in :func:`real_fields`' list.

    Returns
    -------
    list of (str, int, list of int)
        ``(row letter, column number from 1, field indices)`` per well.
    """
    return [("ABCDEFGH"[w // columns], w % columns + 1, list(range(w * fields_per_well, (w + 1) * fields_per_well)))
            for w in range(n_wells)]
