"""Faults a careless operator or a full file system causes: each ends in one clear line, nothing is lost.

Bad options stop before any worker starts (exit 2, nothing written); a full
disk fails the fields it hits and the tables in one line each (exit 1), and
a rerun with space completes the plate; read-only media are named, with the
way out (``--out``); one broken well or field is skipped with its file and
reason while the rest is processed; a done marker cut to 0 bytes is not
taken for done; Ctrl-C ends in ``hts: interrupted``. Disk full and read-only
media are real: a small tmpfs (root only; without root read-only is
``chmod`` and the disk-full case is skipped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from cli_run import hts, hts_in_process, interrupt_after, one_line_error
from hts.io.results import results_dir
from hts.screen.cluster import ClusterOptions, connect
from hts.synthetic.plate import PlateSpec, write_plate

pytestmark = pytest.mark.slow
RUN = ("--channel", "DAPI", "--workers", "1", "--diameter", "20")


def user_lines(stderr: str) -> list[str]:
    """stderr without the progress bar's redraws."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("fields:")]


def no_leftovers(root: Path) -> list[Path]:
    """Temporary files and staged groups under ``root`` (there should be none once a command has ended)."""
    from hts.io.staging import PARTIAL, STAGED

    return [p for p in root.rglob("*") if STAGED.match(p.name) or PARTIAL.match(p.name)]


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A tmpfs of ``size`` mounted at ``where`` for the block (root only; skips the test otherwise)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "plate.zarr"
    write_plate(path, PlateSpec(rows=2, columns=3, fields=2, size=256))
    return path


@pytest.fixture(scope="module")
def reference(plate, tmp_path_factory) -> pd.DataFrame:
    """The per-field counts of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out.zarr"
    proc = hts("run", plate, "--out", out, *RUN)
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(results_dir(out) / "fields.csv")


def test_a_full_disk_fails_in_one_line_per_field_and_a_rerun_with_space_completes(plate, reference, tmp_path):
    with tmpfs(tmp_path / "disk", "16m") as disk:
        work = disk / "plate.zarr"
        shutil.copytree(plate, work)
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - 96 * 1024))  # room for a few fields only
        proc = hts("run", work, *RUN)
        assert proc.returncode == 1, proc.stderr
        lines = user_lines(proc.stderr)
        assert all(line.startswith("hts: ") for line in lines), proc.stderr  # no traceback, no worker log
        assert "No space left on device" in proc.stderr
        assert no_leftovers(disk) == []
        (disk / "filler").unlink()
        again = hts("run", work, *RUN)
        assert again.returncode == 0, again.stderr
        assert "12/12 fields done" in again.stdout
        pd.testing.assert_frame_equal(pd.read_csv(results_dir(work) / "fields.csv"), reference)
        assert no_leftovers(disk) == []


def _read_only(tmp_path: Path, plate: Path):
    """A copy of ``plate`` on read-only media: a tmpfs remounted ro (root), else a chmod'ed folder."""
    if os.geteuid() == 0:
        stack = contextlib.ExitStack()
        disk = stack.enter_context(tmpfs(tmp_path / "ro", "32m"))
        shutil.copytree(plate, disk / "plate.zarr")
        remount(disk, "ro")
        return stack, disk / "plate.zarr", "Read-only file system"
    folder = tmp_path / "ro"
    shutil.copytree(plate, folder / "plate.zarr")
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    return contextlib.ExitStack(), folder / "plate.zarr", "Permission denied"


def test_read_only_input_and_unwritable_out_are_one_line_naming_the_way_out(plate, tmp_path):
    stack, ro_plate, why = _read_only(tmp_path, plate)
    with stack:
        one_line_error(hts("run", ro_plate, *RUN), str(ro_plate), why, "use --out")
        one_line_error(hts("run", plate, "--out", ro_plate.parent / "out.zarr", *RUN), "--out", why)
    # that the way out works on a read-only plate: tests/screen/test_plate.py::test_out_leaves_a_read_only_plate_untouched


def _z_stack(path: Path, planes: int) -> Path:
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(np.zeros((1, planes, 128, 128), np.uint16), group, axes="czyx", fmt=FormatV04(), scaler=None)
    return path


@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("--diameter", "0", "--diameter"), ("--diameter", "-5", "--diameter"), ("--diameter", "nan", "--diameter"),
    ("--diameter", "1e9", "wider than the images"), ("--diameter", "2", "under 4 px"),
    ("--z", "-1", "--z"), ("--z", "3", "no z axis"), ("--z", "7", "out of range"),
])
def test_bad_options_stop_before_anything_starts_or_is_written(plate, tmp_path, capsys, option, value, fragment):
    """In-process ``hts.cli.main`` (the same code path as the command, without an interpreter start each)."""
    work = tmp_path / "plate.zarr"
    shutil.copytree(plate, work)
    if option == "--z" and value == "7":
        work = _z_stack(tmp_path / "stack.zarr", planes=3)
    proc = hts_in_process(capsys, "run", work, "--channel", "DAPI" if "plate" in work.name else "0", "--workers", "1",
                          option, value)
    one_line_error(proc, fragment)
    assert "LocalCluster" not in proc.stdout  # no worker started
    assert not results_dir(work).exists()  # nothing written


def test_out_inside_the_input_is_refused_and_writes_nothing(plate, tmp_path):
    work = tmp_path / "plate.zarr"
    shutil.copytree(plate, work)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    one_line_error(hts("run", work, "--out", work / "A" / "out.zarr", *RUN), "inside the input")
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before


def test_one_broken_well_or_field_is_skipped_with_its_file_and_the_rest_processed(plate, tmp_path):
    work = tmp_path / "plate.zarr"
    shutil.copytree(plate, work)
    well_attrs = work / "A" / "1" / ".zattrs"
    well_attrs.write_text(well_attrs.read_text()[:20])  # cut short
    level0 = next(p for p in (work / "B" / "2" / "1").iterdir() if (p / ".zarray").is_file())
    (level0 / ".zarray").write_text("{ broken")
    proc = hts("run", work, *RUN)
    assert proc.returncode == 1, proc.stderr
    assert f"{well_attrs}: not valid JSON" in proc.stdout
    assert f"{level0 / '.zarray'}: not valid JSON" in proc.stdout
    assert "2 field(s) failed" in proc.stderr  # the well (its fields unknown) and B/2/1
    fields = pd.read_csv(results_dir(work) / "fields.csv", dtype={"column": str, "field": str})
    assert len(fields) == 9 and "A/1" not in set(fields["well"])


def test_an_empty_done_marker_is_not_taken_for_done(plate, reference, tmp_path):
    work = tmp_path / "plate.zarr"
    shutil.copytree(plate, work)
    assert hts("run", work, *RUN).returncode == 0
    marker = results_dir(work) / "fields" / "A01-f0.json"
    marker.write_bytes(b"")  # as a crash of the file system could leave it
    proc = hts("run", work, *RUN)
    assert proc.returncode == 0, proc.stderr
    assert "12/12 fields done (11 from earlier runs)" in proc.stdout
    pd.testing.assert_frame_equal(pd.read_csv(results_dir(work) / "fields.csv"), reference)


def test_ctrl_c_ends_in_one_line_and_status_130(plate, tmp_path):
    work = tmp_path / "plate.zarr"
    shutil.copytree(plate, work)
    markers = results_dir(work) / "fields"
    proc = interrupt_after(["run", work, *RUN], lambda: markers.is_dir() and any(markers.glob("*.json")))
    assert proc.returncode == 130, proc.stderr
    assert user_lines(proc.stderr) == ["hts: interrupted"], proc.stderr


def test_a_busy_dashboard_port_falls_back_to_a_free_one_without_a_warning(recwarn):
    """A second run on a node finds the dashboard port taken: one dashboard line, no multi-line warning."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines: list[str] = []
        with connect(ClusterOptions(workers=1, threads_per_worker=1, dashboard=f"127.0.0.1:{port}"),
                     log=lines.append) as client:
            link = client.dashboard_link
    assert link.startswith("http://127.0.0.1:") and f":{port}/" not in link
    assert f"dashboard: {link}" in lines
    assert not [w for w in recwarn if "already in use" in str(w.message)]
