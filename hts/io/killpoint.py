"""Kill points: SIGKILL this process right after its N-th write step, to prove outputs are valid at every instant.

A *write step* is one file or directory change that another process could
observe: a file written by :func:`hts.io.atomic.atomic_write`, a Zarr key
written through :class:`hts.io.staging.StepStore`, a staged group installed
by :func:`hts.io.staging.install`. Each calls :func:`step` once it is done.

With the environment variable ``HTS_KILL_AFTER_WRITES=N`` the process kills
itself with SIGKILL (nothing runs after it: no ``finally``, no atexit) right
after its N-th step; ``N:group`` kills its whole process group instead (a
driver with its workers, as ``scancel`` or the OOM killer would). Tests
sweep N = 1, 2, ... until a run outlives N, so every step of a write is a
kill point without the test knowing how many there are. Unset (the normal
case), :func:`step` costs one dictionary lookup.

Standard library only, so every layer may call it.
"""

from __future__ import annotations

import os
import signal

ENV = "HTS_KILL_AFTER_WRITES"
_steps = 0  # write steps done by this process (a forked child inherits its parent's count)


def step(what: str = "") -> None:
    """Count one completed write step; SIGKILL here if ``HTS_KILL_AFTER_WRITES`` asks for this one.

    Parameters
    ----------
    what : str
        What was written (for a debugger; not used otherwise).
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    global _steps
    _steps += 1
    count, _, scope = spec.partition(":")
    if _steps == int(count):
        if scope == "group":
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
