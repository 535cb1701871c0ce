"""Worker-side logging of a run: a failed field is reported once, by the driver, in one line."""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

# (logger, start of the message) of the worker records hts leaves out: the driver reports these events itself
NOISE = (
    ("distributed.worker", "Compute Failed"),  # a task raised: the driver prints "failed <field>: <reason>"
    ("distributed.worker.state_machine", "Async instruction"),  # a task cancelled as the cluster closes
)


class _Drop(logging.Filter):
    """Drops the records whose message starts with ``start``."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


class QuietTaskFailures(WorkerPlugin):
    """A Dask worker plugin: the worker does not print what the driver already reports.

    distributed logs every task that raises as ``Compute Failed`` with its
    traceback on the worker's stderr, and every task cancelled when the
    cluster closes (after Ctrl-C) as a warning; ``hts run`` already names
    a failed field and its reason in one line (``failed B03-f1: ...``) and an
    interrupt as ``hts: interrupted``, so these are noise on the user's
    terminal (:data:`NOISE`). Other worker messages are kept.
    """

    name = "hts-quiet-task-failures"

    def setup(self, worker=None) -> None:
        """Install the filters on the worker's loggers (idempotent)."""
        for name, start in NOISE:
            log = logging.getLogger(name)
            if not any(isinstance(f, _Drop) and f.start == start for f in log.filters):
                log.addFilter(_Drop(start))
