"""Atomic file writes: the one place in hts that writes a file through a temporary file and a rename.

Every file hts writes whole (label images, checkpoints, a run's done
markers, tables and records) goes through :func:`atomic_write`, so an
interrupted write (an exception, Ctrl-C, a killed job) never leaves a
partial file under the final name, and a reader sees the old file or the
new one, never a mix.

This module imports nothing but the standard library (and the stdlib-only
:mod:`hts.io.killpoint`: each write is a kill point), so every layer of
hts may use it (:mod:`hts.model.checkpoint` included) without importing
the rest of :mod:`hts.io`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from hts.io import killpoint

Writer = Callable[[BinaryIO], object]


def atomic_write(path: str | os.PathLike, data: bytes | Writer) -> Path:
    """Write a file atomically: a temporary file in the same folder, fsync, then :func:`os.replace`.

    Parameters
    ----------
    path : str or os.PathLike
        The file to (re)write. Its folder must exist.
    data : bytes or callable
        The whole content, or a writer called once with the temporary file
        open for binary writing (seekable), e.g. ``lambda f: np.save(f, a)``;
        the writer must not close it.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    The temporary file is ``.<name>.<pid>.<random>.tmp`` beside ``path``
    (the same file system, so the replace is a rename; no glob for the
    final suffix matches it). The file gets the permissions of any new file (``0o666`` less the
    umask). On any exception (``BaseException`` included: ``KeyboardInterrupt``,
    ``SystemExit``) the temporary file is removed, ``path`` is left as it
    was, and the exception propagates.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # hidden, same folder
    try:
        with open(tmp, "xb") as f:  # O_EXCL: never someone else's file
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file the caller asked for, not the temporary one
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    killpoint.step(f"write {path}")
    return path
