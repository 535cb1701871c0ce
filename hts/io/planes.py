"""2D views of N-D arrays: the ``(y, x)`` plane of an array whose other axes are singletons.

NGFF images and labels carry the image's axes (e.g. ``(t, z, y, x)`` labels
of a ``(t, c, z, y, x)`` image); a 2D segmentation fills the one ``(y, x)``
plane of such an array. The engine and the writers index ``(y, x)``; a
:class:`PlaneView` maps that onto the N-D array, reading and writing only
the region asked for.
"""

from __future__ import annotations

import numpy as np


class PlaneView:
    """The 2D plane of an array with singleton axes, e.g. a ``(1, 1, H, W)`` Zarr array as ``(H, W)``.

    Parameters
    ----------
    array : zarr.Array or array-like
        Anything with ``shape``, ``dtype`` and numpy-style basic indexing.
    keep : tuple of bool, optional
        Which two axes form the plane; every other axis must have size 1 and
        is fixed at 0. Default: the axes longer than 1, which must be two
        (for arrays read as images); :func:`trailing_plane` keeps the last two
        (for NGFF arrays, whose ``y, x`` are last).
    """

    def __init__(self, array, keep: tuple[bool, ...] | None = None) -> None:
        from hts.errors import HtsError

        self.array = array
        self._keep = tuple(keep) if keep is not None else tuple(s != 1 for s in array.shape)
        if sum(self._keep) != 2 or any(s != 1 for s, k in zip(array.shape, self._keep) if not k):
            raise HtsError(f"expected a 2D image, got shape {tuple(array.shape)}")
        self.shape = tuple(int(s) for s, k in zip(array.shape, self._keep) if k)
        self.dtype = np.dtype(array.dtype)
        self.ndim = 2

    def __repr__(self) -> str:
        return f"<PlaneView {self.shape} {self.dtype} of {tuple(self.array.shape)}>"

    @property
    def attrs(self):
        """The underlying array's attributes (a zarr array's ``attrs``)."""
        return self.array.attrs

    def _key(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (2 - len(key) + 1) + key[i + 1 :]
        if len(key) > 2:
            raise IndexError(f"too many indices for a 2D array: {len(key)}")
        rest = iter(key + (slice(None),) * (2 - len(key)))
        return tuple(next(rest) if keep else 0 for keep in self._keep)

    def __getitem__(self, key) -> np.ndarray:
        """The region ``key`` (up to two slices or ints, ``...`` allowed) read now, as numpy."""
        return np.asarray(self.array[self._key(key)])

    def __setitem__(self, key, value) -> None:
        """Write ``value`` (broadcast to the region) into the region ``key`` of the plane."""
        self.array[self._key(key)] = value

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)


def trailing_plane(array) -> PlaneView:
    """The last two axes of ``array`` as a :class:`PlaneView` (the ``y, x`` of an NGFF array).

    A 2D array is wrapped too, so callers need no special case.
    """
    return PlaneView(array, (False,) * (len(array.shape) - 2) + (True, True))
