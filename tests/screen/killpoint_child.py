"""Kill-point sweep for tests/screen/test_kill_points.py: write one field, SIGKILLed after write step k = 1, 2, ...

Run as ``python killpoint_child.py SPEC.pkl``. The spec holds a job, its
segmentation, a template output tree and a work folder. For each k this
process copies the template to ``<work>/<k>``, forks, and the child writes
the field there with ``HTS_KILL_AFTER_WRITES=k`` (hts.io.killpoint), so it
dies right after its k-th write step. The sweep stops at the first k the
write outlives; one JSON line on stdout then lists each k and whether its
child was killed. Forking (after the imports, before any Zarr use) makes a
kill point cost a copy and a write instead of a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from hts.io import killpoint
from hts.screen.tasks import write_field


def _relocate(job, template: Path, copy: Path):
    def move(p: str) -> str:
        return str(copy / Path(p).relative_to(template))

    return replace(job, source=move(job.source), out=move(job.out), results=move(job.results))


def main(spec_path: str) -> None:
    spec = pickle.loads(Path(spec_path).read_bytes())
    template, work = Path(spec["template"]), Path(spec["work"])
    outcomes = []
    for k in range(1, spec["max_steps"] + 1):
        copy = work / str(k)
        shutil.copytree(template, copy, symlinks=True)
        job = _relocate(spec["job"], template, copy)
        pid = os.fork()
        if pid == 0:
            os.environ[killpoint.ENV] = str(k)
            code = 0
            try:
                write_field(job, spec["segmented"])
            except BaseException:  # noqa: BLE001  # reported to the test as exit status 3
                traceback.print_exc()
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        outcomes.append({"k": k, "killed": killed, "status": os.waitstatus_to_exitcode(status), "dir": str(copy)})
        if not killed:
            break
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main(sys.argv[1])
