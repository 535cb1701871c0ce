"""Per-nucleus measurements of every channel, named as CellProfiler names them (numpy and pandas).

The table that image-based profiling tools read: pycytominer infers its
features from the ``Nuclei_``, ``Cytoplasm_`` and ``Cells_`` prefixes and its
metadata from ``Metadata_`` (``../shared/docs/screening-conventions.md``).
Names follow CellProfiler's ``<Object>_<Category>_<Feature>[_<Image>]``:

- ``Nuclei_AreaShape_Area``, ``_Perimeter``, ``_Eccentricity``, ``_Solidity``,
  ``_MajorAxisLength``, ``_MinorAxisLength``, ``_FormFactor`` (4 pi area /
  perimeter^2), ``Nuclei_Location_Center_X`` / ``_Y`` (px; CellProfiler's
  convention, x the column);
- ``<Object>_Intensity_MeanIntensity_<Channel>``, ``_IntegratedIntensity_``,
  ``_StdIntensity_``, ``_MaxIntensity_`` for ``Nuclei`` and ``Cytoplasm``, in the
  image's own units (CellProfiler rescales to [0, 1]; ``hts`` keeps the stored
  values so integrated DNA content stays comparable across bit depths).

The cytoplasm is a ring: the nuclei grown by ``ring`` px without touching
each other (:func:`skimage.segmentation.expand_labels`), minus the nuclei,
so every nucleus has one cytoplasm object with its number (CellProfiler's
``Cytoplasm_Parent_Nuclei`` is then the object number itself). A nucleus
whose ring is empty (enclosed by others) has NaN cytoplasm intensities.

Intensities are one ``bincount`` per moment over the labelled pixels (no
Python loop over nuclei); so are the moments of the shape features, and
perimeter and solidity come from :func:`skimage.measure.regionprops_table`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hts.analysis.count import label_moments

RING_PX = 5  # default cytoplasm ring width, px
SHAPE_FEATURES = ("Area", "Perimeter", "Eccentricity", "Solidity", "MajorAxisLength", "MinorAxisLength",
                  "FormFactor")
INTENSITY_FEATURES = ("MeanIntensity", "IntegratedIntensity", "StdIntensity", "MaxIntensity")
COMPARTMENTS = ("Nuclei", "Cytoplasm")


def channel_names(labels: Sequence[str]) -> list[str]:
    """Column-safe, unique names of channels for the ``_<Channel>`` suffix of the feature names.

    Letters, digits and ``_`` are kept, every other run of characters becomes
    one ``_`` (``"Alexa 488"`` -> ``"Alexa_488"``); an empty name becomes
    ``Ch<i>`` (its 0-based index), a repeated one gets ``_<i>`` appended.

    Parameters
    ----------
    labels : sequence of str
        The channels' ``omero`` labels, in channel order ("" where unnamed).

    Returns
    -------
    list of str
        One name per channel, in the same order.
    """
    out: list[str] = []
    for i, label in enumerate(labels):
        name = re.sub(r"[^0-9A-Za-z_]+", "_", str(label)).strip("_") or f"Ch{i}"
        out.append(f"{name}_{i}" if name in out else name)
    return out


def cytoplasm_ring(labels: np.ndarray, ring: int = RING_PX) -> np.ndarray:
    """The cytoplasm objects: each nucleus grown by ``ring`` px (not into another), minus the nuclei.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Nucleus labels, 0 = background.
    ring : int
        Growth distance, px (0: no cytoplasm, all zeros).

    Returns
    -------
    (H, W) ndarray
        Labels of the rings, same dtype and ids as ``labels``; 0 on the nuclei and beyond the rings.
    """
    from skimage.segmentation import expand_labels

    if ring <= 0:
        return np.zeros_like(labels)
    grown = expand_labels(labels, distance=ring)
    grown[labels > 0] = 0
    return grown


def _index(labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pixels (flat indices) and the row of ``ids`` each belongs to (-1: an id not in ``ids``)."""
    flat = labels.ravel()
    pix = np.flatnonzero(flat)
    rows = np.searchsorted(ids, flat[pix])
    rows = np.where((rows < ids.size) & (ids[np.minimum(rows, ids.size - 1)] == flat[pix]), rows, -1)
    keep = rows >= 0
    return pix[keep], rows[keep]


def intensity_features(labels: np.ndarray, planes: Mapping[str, np.ndarray], ids: np.ndarray,
                       compartment: str) -> pd.DataFrame:
    """Mean, integrated, standard deviation and maximum intensity of every plane inside each object.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Object labels (nuclei or their cytoplasm rings), 0 = background.
    planes : mapping of str to (H, W) ndarray
        Channel name (:func:`channel_names`) -> intensity plane, any real dtype.
    ids : (N,) int ndarray
        The object ids of the rows, sorted ascending; an id with no pixels gets NaN
        (and 0 integrated intensity).
    compartment : str
        The column prefix, ``"Nuclei"`` or ``"Cytoplasm"``.

    Returns
    -------
    pandas.DataFrame
        N rows; columns ``<compartment>_Intensity_<feature>_<channel>`` for each
        feature of :data:`INTENSITY_FEATURES` and each plane (image units;
        ``StdIntensity`` the population standard deviation, as CellProfiler).
    """
    pix, rows = _index(labels, ids)
    n = np.bincount(rows, minlength=ids.size).astype(np.float64)
    cols: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, plane in planes.items():
            if plane.shape != labels.shape:
                raise ValueError(f"plane {name!r} {plane.shape} and labels {labels.shape} differ in shape")
            v = np.asarray(plane).ravel()[pix].astype(np.float64)
            total = np.bincount(rows, weights=v, minlength=ids.size)
            mean = np.where(n > 0, total / n, np.nan)
            var = np.bincount(rows, weights=(v - mean[rows]) ** 2, minlength=ids.size) / n
            peak = np.full(ids.size, -np.inf)
            np.maximum.at(peak, rows, v)
            cols[f"{compartment}_Intensity_MeanIntensity_{name}"] = mean
            cols[f"{compartment}_Intensity_IntegratedIntensity_{name}"] = total
            cols[f"{compartment}_Intensity_StdIntensity_{name}"] = np.sqrt(var)
            cols[f"{compartment}_Intensity_MaxIntensity_{name}"] = np.where(n > 0, peak, np.nan)
    return pd.DataFrame(cols)


def shape_features(labels: np.ndarray) -> pd.DataFrame:
    """Area, perimeter, eccentricity, solidity, axis lengths, form factor and centre of each nucleus.

    Moments (area, centre, eccentricity, axis lengths) come vectorised from
    :func:`hts.analysis.count.label_moments`, with skimage's definitions;
    perimeter and solidity, which need each nucleus's outline and convex
    hull, from :func:`skimage.measure.regionprops_table` (most of the cost:
    about 0.45 s per 1,000 nuclei on one core).

    Parameters
    ----------
    labels : (H, W) int ndarray
        Nucleus labels, 0 = background.

    Returns
    -------
    pandas.DataFrame
        One row per label present, ascending: ``ObjectNumber`` (the label) and
        ``Nuclei_AreaShape_<feature>`` for :data:`SHAPE_FEATURES` (px, px^2,
        dimensionless), ``Nuclei_Location_Center_X`` / ``_Y`` (px, column / row).
    """
    from skimage.measure import regionprops_table

    m = label_moments(labels)
    l1, l2 = m["inertia"]
    labels = np.asarray(labels)
    if m["label"].size and m["label"][-1] > 4 * m["label"].size + 1024:  # sparse ids: regionprops wants them dense
        from skimage.segmentation import relabel_sequential

        labels = relabel_sequential(labels)[0]  # keeps the order, so the rows still match
    props = regionprops_table(labels, properties=("label", "perimeter", "solidity"))
    area, perimeter = m["area"], props["perimeter"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "ObjectNumber": m["label"].astype(np.int64),
            "Nuclei_AreaShape_Area": area,
            "Nuclei_AreaShape_Perimeter": perimeter,
            "Nuclei_AreaShape_Eccentricity": np.sqrt(1 - np.divide(l2, l1, out=np.ones_like(l1), where=l1 > 0)),
            "Nuclei_AreaShape_Solidity": props["solidity"].astype(np.float64),
            "Nuclei_AreaShape_MajorAxisLength": 4 * np.sqrt(l1),
            "Nuclei_AreaShape_MinorAxisLength": 4 * np.sqrt(l2),
            "Nuclei_AreaShape_FormFactor": np.where(perimeter > 0, 4 * np.pi * area / perimeter**2, np.nan),
            "Nuclei_Location_Center_X": m["centroid"][1],
            "Nuclei_Location_Center_Y": m["centroid"][0],
        })


def measure_objects(labels: np.ndarray, planes: Mapping[str, np.ndarray], ring: int = RING_PX) -> pd.DataFrame:
    """The CellProfiler-named per-nucleus table of one field: shape, location, nucleus and cytoplasm intensities.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Nucleus labels, 0 = background.
    planes : mapping of str to (H, W) ndarray
        The channels measured, by column-safe name (:func:`channel_names`);
        each plane is read once by the caller and only the field is in memory.
    ring : int
        Cytoplasm ring width, px (:func:`cytoplasm_ring`; 0: no ``Cytoplasm_`` columns).

    Returns
    -------
    pandas.DataFrame
        One row per nucleus in label order: ``ObjectNumber`` (int64, the
        label), the :func:`shape_features`, the :func:`intensity_features`
        of ``Nuclei``, ``Nuclei_Intensity_IntegratedIntensityAboveBackground_<channel>``
        (integrated intensity minus area x the field's background, the median
        of the pixels beyond every nucleus and ring: DNA content must not
        include the camera offset, which would pull G2/G1 below 2) and, with
        ``ring > 0``, the ``Cytoplasm`` intensities.
    """
    labels = np.asarray(labels)
    table = shape_features(labels)
    ids = table["ObjectNumber"].to_numpy()
    nuclei = intensity_features(labels, planes, ids, "Nuclei")
    cyto = cytoplasm_ring(labels, ring)
    outside = (labels == 0) & (cyto == 0)  # background: beyond every nucleus and its ring
    area = table["Nuclei_AreaShape_Area"].to_numpy()
    for name, plane in planes.items():
        bg = float(np.median(np.asarray(plane)[outside])) if outside.any() else 0.0
        nuclei[f"Nuclei_Intensity_IntegratedIntensityAboveBackground_{name}"] = \
            nuclei[f"Nuclei_Intensity_IntegratedIntensity_{name}"].to_numpy() - area * bg
    parts = [table, nuclei]
    if ring > 0:
        parts.append(intensity_features(cyto, planes, ids, "Cytoplasm"))
    return pd.concat(parts, axis=1)


def with_metadata(table: pd.DataFrame, plate: str, well: str, site: int | str) -> pd.DataFrame:
    """``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` and ``Metadata_ObjectNumber`` first, then the features.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`measure_objects` table (its ``ObjectNumber`` becomes ``Metadata_ObjectNumber``).
    plate : str
        The plate's name.
    well : str
        The well as CellProfiler names it, ``B03`` (:func:`hts.analysis.platemap.well_id`).
    site : int or str
        The field within the well.

    Returns
    -------
    pandas.DataFrame
        A new table with the four metadata columns in front.
    """
    meta = pd.DataFrame({"Metadata_Plate": pd.Series([plate] * len(table), dtype=object),
                         "Metadata_Well": pd.Series([well] * len(table), dtype=object),
                         "Metadata_Site": pd.Series([site] * len(table)),
                         "Metadata_ObjectNumber": table["ObjectNumber"].to_numpy()})
    return pd.concat([meta, table.drop(columns="ObjectNumber").reset_index(drop=True)], axis=1)
