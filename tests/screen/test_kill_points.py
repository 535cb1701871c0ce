"""SIGKILL at every write step of a field: the output stays valid, and a rerun gives a clean run's output.

The write of one field (labels pyramid, NGFF metadata, nucleus table, done
marker; with ``--out`` also the image) is killed right after each of its
write steps in turn (``HTS_KILL_AFTER_WRITES``, :mod:`hts.io.killpoint`),
by ``killpoint_child.py``. After each kill:

- the output Zarr validates as a whole with ome-zarr-models (the strict
  reader that refused plates bricked by older versions) and ``open_source``
  still lists the field;
- the labels a reader sees are the previous ones or the new ones, never a
  mix, and a done marker exists only beside the new ones;
- a rerun (the repair ``hts run`` does under its lock, then the field's
  write) leaves exactly the arrays, metadata and tables of an uninterrupted
  write, array by array, and no staged leftovers.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from hts.engine.infer import Prediction
from hts.io.ngff import open_source
from hts.io.ngff_write import create_output, repair_output, write_labels
from hts.io.results import Results, results_dir
from hts.io.staging import PARTIAL, STAGED
from hts.screen.tasks import Inferred, Job, read_field, write_field
from hts.synthetic.plate import PlateSpec, read_truth, write_plate

CHILD = Path(__file__).with_name("killpoint_child.py")
FIELD = "A/1/0"

# (NGFF version, how the field is written, what is at <field>/labels before)
CASES = [
    ("0.4", "in-place", "truth"),  # a labels group exists: nuclei is staged inside it, then listed
    ("0.5", "in-place", "none"),  # no labels group: the whole group is staged and installed
    ("0.4", "in-place", "nuclei"),  # an earlier nuclei is replaced (atomic exchange)
    ("0.5", "out", "none"),  # --out: the whole output field (image + labels) is staged
]


def arrays(root: Path, prefix: str) -> dict[str, np.ndarray]:
    """Every array under ``prefix`` of the Zarr at ``root``, by path."""
    group = zarr.open_group(str(root), mode="r")[prefix]
    return {name: np.asarray(node) for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def label_attrs(root: Path) -> tuple[dict, dict]:
    group = zarr.open_group(str(root), mode="r")
    return dict(group[f"{FIELD}/labels"].attrs), dict(group[f"{FIELD}/labels/nuclei"].attrs)


def staged_leftovers(root: Path) -> list[Path]:
    """Staged groups, temporary files and zarr's partial files anywhere under ``root``."""
    return [p for p in root.rglob("*") if STAGED.match(p.name) or PARTIAL.match(p.name)]


def marker(results: Path) -> dict | None:
    p = results / "fields" / "A01-f0.json"
    if not p.is_file():
        return None
    m = json.loads(p.read_text())
    m.pop("seconds")
    return m


def _template(tmp: Path, version: str, mode: str, before: str) -> tuple[Path, Job, tuple]:
    """The output tree before the field is written, the field's job and its segmentation."""
    template = tmp / "template"
    plate = template / "plate.zarr"
    write_plate(plate, PlateSpec(rows=1, columns=2, fields=1, size=128, version=version))
    labels = read_truth(plate, FIELD)
    if before != "truth":
        shutil.rmtree(plate / FIELD / "labels")
    out = template / "out.zarr" if mode == "out" else plate
    if mode == "out":
        create_output(open_source(plate), out)
    job = Job(open_source(plate).fields[0], str(plate), str(out), str(results_dir(out)), version, mode == "out",
              "DAPI", None, 20.0, None, None, 1, 1)
    plane = read_field(job)
    if before == "nuclei":  # an earlier run's labels, which the write replaces
        image = zarr.open_group(str(out), mode="r+")[FIELD]
        write_labels(image, (labels > 0).astype(np.uint32), job.image_info(), Results.fmt_of(version))
    empty = Prediction(np.empty((0, 0), np.float32), np.empty((0, 4), np.float32), np.empty(0, np.float32))
    return template, job, (labels.astype(np.uint32), Inferred(plane, empty, 0.0, {}))


def _moved(job: Job, template: Path, copy: Path) -> Job:
    from dataclasses import replace

    def move(p: str) -> str:
        return str(copy / Path(p).relative_to(template))

    return replace(job, source=move(job.source), out=move(job.out), results=move(job.results))


@pytest.mark.parametrize(("version", "mode", "before"), CASES, ids=["-".join(c) for c in CASES])
def test_a_kill_at_every_write_step_leaves_valid_output_and_the_rerun_equals_a_clean_write(
        tmp_path, version, mode, before):
    from ome_zarr_models import open_ome_zarr

    template, job, segmented = _template(tmp_path, version, mode, before)
    spec = tmp_path / "spec.pkl"
    spec.write_bytes(pickle.dumps({"template": template, "work": tmp_path / "kills", "job": job,
                                   "segmented": segmented, "max_steps": 200}))
    proc = subprocess.run([sys.executable, str(CHILD), str(spec)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    *kills, clean = outcomes
    assert clean["status"] == 0 and not clean["killed"], clean
    assert len(kills) >= 5, "a field write has at least its label levels, metadata, table and marker"
    assert all(k["killed"] for k in kills)
    print(f"{version} {mode} {before}: {len(kills)} kill points")

    ref = _moved(job, template, Path(clean["dir"]))
    ref_out, ref_results = Path(ref.out), Path(ref.results)
    ref_arrays = arrays(ref_out, FIELD)
    ref_attrs = label_attrs(ref_out)
    ref_marker = marker(ref_results)
    ref_table = pd.read_parquet(ref_results / "nuclei" / "A01-f0.parquet")
    before_labels = arrays(Path(_moved(job, template, template).out), FIELD) if mode != "out" else {}
    assert ref_marker is not None and staged_leftovers(Path(clean["dir"])) == []

    for k in kills:
        kj = _moved(job, template, Path(k["dir"]))
        out, results = Path(kj.out), Path(kj.results)
        # valid at this instant: strict whole-tree validation, and the field is still readable
        open_ome_zarr(zarr.open_group(str(out), mode="r"))
        assert [f.path for f in open_source(kj.source).fields] == [FIELD, "A/2/0"], k
        # what a reader sees is the old state or the new one, never a mix
        seen = arrays(out, FIELD) if (out / FIELD).is_dir() else {}
        seen_nuclei = {p: a for p, a in seen.items() if p.startswith("labels/nuclei/")}
        old_nuclei = {p: a for p, a in before_labels.items() if p.startswith("labels/nuclei/")}
        new_nuclei = {p: a for p, a in ref_arrays.items() if p.startswith("labels/nuclei/")}
        is_new = seen_nuclei.keys() == new_nuclei.keys() and all(np.array_equal(seen_nuclei[p], new_nuclei[p])
                                                                  for p in new_nuclei)
        is_old = seen_nuclei.keys() == old_nuclei.keys() and all(np.array_equal(seen_nuclei[p], old_nuclei[p])
                                                                  for p in old_nuclei)
        assert is_new or is_old, f"kill after step {k['k']}: labels are neither the old nor the new ones"
        if marker(results) is not None:
            assert is_new, f"kill after step {k['k']}: a done marker beside labels that are not the new ones"
        # the rerun: repair under the lock, then the field again
        repair_output(out, open_source(kj.source))
        Results(results).sweep()
        write_field(kj, segmented)
        again = arrays(out, FIELD)
        assert again.keys() == ref_arrays.keys(), k
        for p, a in ref_arrays.items():
            np.testing.assert_array_equal(again[p], a, err_msg=f"kill after step {k['k']}: {p}")
        assert label_attrs(out) == ref_attrs, k
        assert marker(results) == ref_marker, k
        pd.testing.assert_frame_equal(pd.read_parquet(results / "nuclei" / "A01-f0.parquet"), ref_table)
        assert staged_leftovers(Path(k["dir"])) == [], k
