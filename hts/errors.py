"""The exception types the command line turns into a one-line error."""

from __future__ import annotations


class HtsError(ValueError):
    """Bad input or state, with a message fit for one line on stderr.

    The message names the file, field or parameter at fault. The CLI prints it
    as ``hts: error: <message>`` and exits with :attr:`status` (2: bad input
    or options), never a traceback.
    """

    status = 2


class RunError(HtsError):
    """A run that started but could not finish its output (e.g. a full disk): exit status 1.

    The fields already done stay done (their markers are valid); rerunning
    after the cause is fixed completes the run.
    """

    status = 1
