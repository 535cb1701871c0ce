"""Running the ``hts`` command line as a user does, for the tests: a real process, its exit status and stderr.

Importable from any test module (``tests/`` is on ``sys.path`` under pytest's
default ``prepend`` import mode, as for ``tests/slurm.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def hts(*args, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m hts ARGS`` to completion; output captured as text."""
    return subprocess.run([sys.executable, "-m", "hts", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def hts_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """``hts.cli.main(ARGS)`` in this process: the command's code path without an interpreter start each.

    For checks of options and refusals, where a new interpreter (torch's
    import) would cost seconds per case. ``capsys`` is pytest's fixture.
    """
    from hts.cli import main

    argv = [str(a) for a in args]
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own checks
        status = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, status, out, err)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str, status: int = 2) -> str:
    """Assert the command failed with ``status`` and exactly one ``hts: error:`` line holding ``fragments``."""
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hts: error:"), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def interrupt_after(args, wait_for, timeout: float = 240) -> subprocess.CompletedProcess:
    """Start ``hts ARGS`` in its own process group, send SIGINT to the group (Ctrl-C) once ``wait_for()`` is true.

    SIGINT is restored to its default in the child: a shell starts
    background jobs with it ignored, and Python would inherit that.
    """
    proc = subprocess.Popen([sys.executable, "-m", "hts", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + timeout
    while time.time() < deadline and not wait_for() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
