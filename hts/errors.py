"""The one exception type the command line turns into a one-line error."""

from __future__ import annotations


class HtsError(ValueError):
    """Bad input or state, with a message fit for one line on stderr.

    The message names the file, field or parameter at fault. The CLI prints it
    as ``hts: error: <message>`` and exits with status 2, never a traceback.
    """
