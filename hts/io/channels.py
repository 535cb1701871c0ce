"""The nucleus channel of a multi-channel image file: TIFF (plain, ImageJ, OME-TIFF), RGB(A) PNG, NPY.

A file is read into :class:`Planes` (its pixels, one axis letter per
dimension and the channel names the file gives), and :func:`select_channel`
turns that into the one 2D plane to segment.

Rules (documented in the README, ``hts segment --help``):

- Axes are tifffile's (``TiffFile.series[0].axes``): ``Y``, ``X``; ``C``
  channels; ``S`` samples (RGB(A) colour, or planes of a pixel); ``Z``, ``T``
  and every other letter are planes that are not channels; ``Q``/``I``
  unknown. Singleton axes are ignored.
- Channel names: OME-TIFF ``Channel/@Name``; ImageJ ``Labels`` when the
  image's only stack axis is ``C``; ``R``, ``G``, ``B``, ``A`` (also ``red``,
  ``green``, ``blue``, ``alpha``) for RGB(A) samples, ``L``, ``A`` for a
  grey + alpha PNG. Names match case-insensitively.
- A stack without axis information (a ``Q``/``I`` axis: a plain multi-page
  TIFF, a ``(n, H, W)`` NPY array) has its singleton axes dropped and the
  last two taken as ``Y``, ``X``; it is taken as channels when it has at most
  :data:`MAX_UNLABELLED_CHANNELS` planes, and refused as a z/time stack
  otherwise.
- Without a chosen channel, one channel is used as it is, and so is RGB(A)
  whose colour planes are all equal (grey saved as RGB); anything else with
  several channels is refused with a line listing them. Any other axis (z,
  t, ...) longer than 1 is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hts.errors import HtsError

MAX_UNLABELLED_CHANNELS = 8  # a stack with no axis information and at most this many planes is taken as channels
CHANNEL_AXES = "CS"
UNKNOWN_AXES = "QI"
AXIS_NAMES = {"Z": "z", "T": "time", "E": "wavelength", "A": "angle", "P": "phase", "R": "tile", "H": "lifetime",
              "L": "exposure", "V": "event", "M": "mosaic"}
COLOUR_ALIASES = {"red": "R", "green": "G", "blue": "B", "alpha": "A", "grey": "L", "gray": "L"}


@dataclass(frozen=True)
class Planes:
    """An image as read from a file, before one plane is chosen.

    Attributes
    ----------
    data : numpy.ndarray
        The pixels, any shape with a ``Y`` and an ``X`` axis, the file's dtype.
    axes : str
        One tifffile axis letter per dimension of ``data`` (``"CYX"``, ``"YXS"``, ``"QYX"``, ...).
    names : tuple of str
        Channel names in order along the channel axis, as the file gives
        them (``""`` where it gives none); empty when it names none.
    colour : bool
        The ``S`` axis holds colour samples (RGB(A), or grey + alpha), named ``R G B A`` or ``L A``.
    """

    data: np.ndarray
    axes: str
    names: tuple[str, ...] = ()
    colour: bool = False


def read_planes(path: str | os.PathLike) -> Planes:
    """Read a ``.tif/.tiff``, ``.png`` or ``.npy`` file with what it says about its axes and channels.

    Parameters
    ----------
    path : str or os.PathLike
        An existing file with one of those suffixes (TIFF: the first series is read).

    Returns
    -------
    Planes
        The pixels, their axes and the channel names.

    Raises
    ------
    HtsError
        The file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
            return Planes(data, _unknown_axes(data.ndim))
        if suffix == ".png":
            from skimage.io import imread

            data = np.asarray(imread(path))
            colour = data.ndim == 3 and data.shape[2] in (2, 3, 4)
            return Planes(data, "YXS" if colour else _unknown_axes(data.ndim), colour=colour)
        return _read_tiff(path)
    except HtsError:
        raise
    except Exception as exc:
        raise HtsError(f"{path}: cannot read image ({type(exc).__name__}: {str(exc)[:100]})") from None


def _unknown_axes(ndim: int) -> str:
    return "Q" * max(ndim - 2, 0) + "YX"[-min(ndim, 2):] if ndim else ""


def _read_tiff(path: Path) -> Planes:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = np.asarray(series.asarray())
        axes = series.axes
        if len(axes) != data.ndim:  # never seen; fall back to no axis information
            axes = _unknown_axes(data.ndim)
        colour = "S" in axes and tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
        names: tuple[str, ...] = ()
        if tif.is_ome:
            names = _ome_names(tif.ome_metadata)
        elif tif.is_imagej:
            labels = (tif.imagej_metadata or {}).get("Labels")
            stack = [a for a, s in zip(axes, data.shape) if s > 1 and a not in "YX"]
            if stack == ["C"] and isinstance(labels, list) and len(labels) == data.shape[axes.index("C")]:
                names = tuple(str(x) for x in labels)
    return Planes(data, axes, names, colour)


def _ome_names(xml: str | None) -> tuple[str, ...]:
    """The ``Name`` of each ``Channel`` of the first OME ``Image`` (``""`` where unnamed); () when unreadable."""
    import tifffile

    try:
        image = tifffile.xml2dict(xml)["OME"]["Image"]
        image = image[0] if isinstance(image, list) else image
        channels = image["Pixels"].get("Channel", [])
    except Exception:  # OME-XML is optional help here, never a reason to refuse the pixels
        return ()
    channels = channels if isinstance(channels, list) else [channels]
    names = tuple(str(c.get("Name") or "") if isinstance(c, dict) else "" for c in channels)
    return names if any(names) else ()


def channel_list(names: tuple[str, ...], n: int) -> str:
    """``"0=DAPI, 1=GFP"`` (``"0, 1"`` where unnamed), as ``hts run`` lists channels."""
    return ", ".join(f"{i}={names[i]}" if i < len(names) and names[i] else str(i) for i in range(n))


def select_channel(planes: Planes, channel: str | int | None = None, *, name: str = "image",
                   option: str = "channel") -> np.ndarray:
    """The 2D plane of ``planes`` to segment: the chosen channel, or the only one.

    Parameters
    ----------
    planes : Planes
        The image as read (:func:`read_planes`).
    channel : str, int or None
        A channel index (0-based; also as a string of digits), a channel name
        (case-insensitive; ``R``/``G``/``B`` or ``red``/``green``/``blue`` for
        RGB), or None for the only channel (or grey saved as RGB).
    name : str
        The image's name (its path) for error messages.
    option : str
        How the caller spells the choice, for error messages (``"--channel"`` on the command line).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` in the file's dtype (a view of ``planes.data`` where possible); not yet checked
        by :func:`hts.engine.preprocess.check_image`.

    Raises
    ------
    HtsError
        One line: an axis other than channels longer than 1, a stack too long
        to be channels, channels on two axes, several channels and none
        chosen, an unknown name or an index out of range.
    """
    data, axes = planes.data, planes.axes
    if set(axes) <= set("YX" + UNKNOWN_AXES) and data.ndim > 2:  # no axis information: Y, X are the last two kept
        data = np.squeeze(data)
        axes = _unknown_axes(data.ndim)
    if "Y" not in axes or "X" not in axes:
        raise HtsError(f"{name}: expected a 2D (height, width) image, got shape {data.shape}")
    shape = f"shape {data.shape}, axes {axes}"
    stack = [(i, a) for i, (a, s) in enumerate(zip(axes, data.shape)) if a not in "YX" and s > 1]
    for i, a in stack:
        if a not in CHANNEL_AXES + UNKNOWN_AXES:
            what = AXIS_NAMES.get(a, f"'{a}'")
            raise HtsError(f"{name}: {data.shape[i]} {what} planes ({shape}); hts segment reads one 2D plane "
                           "per channel: project or split the stack first")
    unknown = [(i, a) for i, a in stack if a in UNKNOWN_AXES]
    known = [(i, a) for i, a in stack if a in CHANNEL_AXES]
    if unknown and (known or len(unknown) > 1 or data.shape[unknown[0][0]] > MAX_UNLABELLED_CHANNELS):
        n = int(np.prod([data.shape[i] for i, _ in unknown]))
        raise HtsError(f"{name}: expected a 2D image, got a stack of {n} planes with no axis information "
                       f"({shape}); only a stack of up to {MAX_UNLABELLED_CHANNELS} planes is taken as channels")
    if len(known) > 1:
        raise HtsError(f"{name}: channels on two axes ({shape}); hts segment reads one channel axis")
    axis = (known or unknown or [(None, "")])[0]
    index, letter = axis
    n = 1 if index is None else data.shape[index]
    names = _names(planes, letter, n)
    colour = planes.colour and letter == "S"
    grey = channel is None and colour and _grey(data, index, names)
    chosen = 0 if grey else _resolve(channel, names, n, colour, name, option)
    yx = [axes.index("Y"), axes.index("X")]
    key = tuple(slice(None) if d in yx else (chosen if d == index else 0) for d in range(data.ndim))
    plane = data[key]
    return plane if yx[0] < yx[1] else plane.T


def _grey(data: np.ndarray, axis: int, names: tuple[str, ...]) -> bool:
    """Whether the colour samples on ``axis`` (alpha left out) are all equal: grey saved as RGB(A)."""
    colours = [i for i, c in enumerate(names) if c != "A"]
    first = np.take(data, colours[0], axis=axis)
    return all(np.array_equal(first, np.take(data, i, axis=axis)) for i in colours[1:])


def _names(planes: Planes, letter: str, n: int) -> tuple[str, ...]:
    """The names of the ``n`` channels on axis ``letter`` (``""`` for none): colour samples, or the file's."""
    if planes.colour and letter == "S":
        return ("L", "A") if n == 2 else ("R", "G", "B", "A")[:n]
    return planes.names if len(planes.names) == n else ()


def _resolve(channel: str | int | None, names: tuple[str, ...], n: int, colour: bool, name: str,
             option: str) -> int:
    """The index of ``channel`` among ``n`` channels named ``names``, or a one-line :class:`HtsError`."""
    listed = channel_list(names, n)
    if channel is None:
        if n > 1:
            raise HtsError(f"{name}: {n} channels ({listed}); choose the nucleus channel with {option} NAME|INDEX")
        return 0
    if isinstance(channel, (int, np.integer)) or (isinstance(channel, str) and channel.strip().isdigit()):
        index = int(channel)
        if not 0 <= index < n:
            raise HtsError(f"{name}: {option} {index} out of range: the image has {n} channel(s) ({listed}); "
                           "indices start at 0")
        return index
    if not isinstance(channel, str):
        raise HtsError(f"{name}: {option} must be a channel name or index, got {channel!r}")
    wanted = channel.strip().casefold()
    if colour:
        wanted = COLOUR_ALIASES.get(wanted, wanted).casefold()
    matches = [i for i, c in enumerate(names) if c.casefold() == wanted]
    if not matches:
        raise HtsError(f"{name}: {option} {channel!r}: no such channel (channels: {listed}"
                       f"{'' if any(names) else '; the file names none, choose by index'})")
    return matches[0]

