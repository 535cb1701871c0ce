"""Staged Zarr groups: build a group under a hidden name, then install it with one rename.

A reader (or a rerun after SIGKILL) of an output Zarr must never meet a
half-written group: a ``labels`` group without its ``labels`` list, an
image without ``multiscales``. So every group hts writes into an existing
Zarr is built whole beside its final place, as ``.<name>.<pid>.<token>.tmp``
(NGFF readers and validators ignore such unlisted, hidden members), and
then installed:

- a new name: one :func:`os.rename` of the directory (atomic on POSIX);
- a name that exists (a rerun replacing its own output): the two
  directories are swapped atomically with ``renameat2(RENAME_EXCHANGE)``
  (Linux >= 3.15 on local file systems), then the old one is deleted under
  its hidden name. Where the exchange is not supported (other kernels,
  some network file systems) the old group is first renamed away, leaving
  a moment without it; :func:`sweep` and the label repair of
  :mod:`hts.io.ngff_write` put right what a kill at that moment leaves.

Every write through :class:`StepStore` and every install is a kill point
(:mod:`hts.io.killpoint`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zarr
from zarr.storage import LocalStore

from hts.io import killpoint

STAGED = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.(tmp|old)$")  # names made by staged_name() and atomic_write()
PARTIAL = re.compile(r"^.+\.[0-9a-f]{32}\.partial$")  # a file zarr was writing when the process died
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


class StepStore(LocalStore):
    """A :class:`zarr.storage.LocalStore` whose every completed key write is a kill point.

    zarr writes each key atomically (temporary file, rename), so a kill
    between two steps leaves whole files only.
    """

    async def set(self, key: str, value) -> None:  # noqa: D102 (zarr's docstring)
        await super().set(key, value)
        killpoint.step(f"{self.root}/{key}")


def open_group_at(path: str | os.PathLike, mode: str = "r+", zarr_format: int | None = None) -> zarr.Group:
    """The Zarr group at ``path`` on a :class:`StepStore` (for writing).

    Parameters
    ----------
    path : str or os.PathLike
        The group's directory.
    mode : str
        ``zarr.open_group`` mode: ``"r+"`` an existing group, ``"w"`` a new one.
    zarr_format : int, optional
        2 (NGFF 0.4) or 3 (NGFF 0.5); needed with ``mode="w"``.

    Returns
    -------
    zarr.Group
    """
    return zarr.open_group(store=StepStore(str(path)), mode=mode, zarr_format=zarr_format)


def fs_path(group: zarr.Group) -> Path:
    """The directory of ``group``, a group of a local store."""
    store = group.store
    if not isinstance(store, LocalStore):
        raise TypeError(f"not a local Zarr store: {store!r}")
    return Path(store.root) / group.path if group.path else Path(store.root)


def staged_name(name: str, kind: str = "tmp") -> str:
    """A hidden sibling name for ``name``, unique to this process: ``.<name>.<pid>.<token>.<kind>``."""
    return f".{name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (``renameat2(RENAME_EXCHANGE)``); False where that is unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def install(tmp: Path, final: Path) -> None:
    """Put the staged directory ``tmp`` at ``final`` in one step, replacing what is there.

    Parameters
    ----------
    tmp : pathlib.Path
        The staged directory (complete).
    final : pathlib.Path
        Its place, a sibling of ``tmp``; an existing directory there is
        replaced (and deleted).
    """
    if not final.exists():
        os.rename(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp)  # now the old group, under the hidden name
    else:
        old = final.with_name(staged_name(final.name, "old"))
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    killpoint.step(f"install {final}")


@contextmanager
def staged_group(final: Path, zarr_format: int) -> Iterator[zarr.Group]:
    """A new Zarr group that appears at ``final`` only when the ``with`` block completes.

    Parameters
    ----------
    final : pathlib.Path
        Where the group goes (its parent must exist); an existing group
        there is replaced at the end.
    zarr_format : int
        2 (NGFF 0.4) or 3 (NGFF 0.5).

    Yields
    ------
    zarr.Group
        The staged group (on a :class:`StepStore`), at a hidden sibling of
        ``final``. On an exception it is deleted and ``final`` is left as it was.
    """
    tmp = final.with_name(staged_name(final.name))
    try:
        yield open_group_at(tmp, mode="w", zarr_format=zarr_format)
        install(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep(folder: Path) -> list[Path]:
    """Delete what writes killed midway left in ``folder``: staged groups and files, zarr's ``*.partial`` files.

    Call it only while no other process writes there (``hts run`` holds its
    lock and has not started its workers).

    Parameters
    ----------
    folder : pathlib.Path
        A group directory.

    Returns
    -------
    list of pathlib.Path
        What was deleted.
    """
    gone = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return gone
    for entry in entries:
        if STAGED.match(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif (STAGED.match(entry.name) or PARTIAL.match(entry.name)) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
        else:
            continue
        gone.append(Path(entry.path))
    return gone
