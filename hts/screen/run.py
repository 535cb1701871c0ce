"""``hts run``: segment every field of an OME-Zarr plate (or a single image) on a Dask cluster.

The graph has three tasks per field, keyed by stage and place so the
dashboard's task stream reads like the plate: ``infer-B03-f2`` (read +
network; asks for a ``GPU`` resource when workers declare one),
``watershed-B03-f2`` and ``write-B03-f2``. Fields are submitted in a bounded
window (a few per worker thread), so neither the driver nor the workers ever
hold the plate. A field is done when its marker exists (:mod:`hts.io.results`);
reruns skip done fields, ``--overwrite`` recomputes all. Labels are
deterministic, so a task recomputed after a worker died writes the same
bytes.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import zarr
from tqdm import tqdm

from hts.analysis.measure import RING_PX
from hts.analysis.platemap import coverage_warnings, read_platemap, well_id
from hts.analysis.screen import nucleus_feature, write_screen
from hts.engine.blocks import BLOCK
from hts.engine.pipeline import check_min_size
from hts.engine.scale import check_diameter
from hts.engine.tta import check_tta
from hts.errors import HtsError, RunError
from hts.io.ngff import Source, open_source
from hts.io.ngff_write import open_output, repair_output
from hts.io.results import Results, results_dir
from hts.model import InstanceUNet
from hts.screen.cluster import ClusterOptions, connect, inference_resources, windowed
from hts.screen.quiet import QuietTaskFailures
from hts.screen.tasks import Job, infer_field, measured_channels, watershed_field, write_field
from hts.screen.units import ensure_volume, time_units

WINDOW_PER_THREAD = 2  # fields in flight per worker thread


@dataclass(frozen=True)
class RunOptions:
    """What ``hts run`` takes besides the input path (see ``hts run --help``).

    These defaults are the command line's: :mod:`hts.cli_args` fills the
    fields from the options of the same names and leaves out those not given.
    """

    out: str | None = None
    channel: str | int | None = None
    z: int | str | None = None  # None: maximum projection; N: that plane; "all": every plane, linked in 3D
    diameter: float | None = None
    model: str | None = None
    device: str | None = None
    batch_size: int = 4
    overwrite: bool = False
    block: int = BLOCK  # px; single images larger than this go block by block (whole-slide images)
    min_size: int | None = None  # px; objects under it merge or go; None: by the diameter
    tta: int = 1  # test-time augmentation: 1 none, 4 flips, 8 flips and rotations (hts.engine.tta)
    measure: tuple[str | int, ...] | None = None  # channels measured per nucleus; None: every channel
    ring: int = RING_PX  # px: cytoplasm ring width (0: no Cytoplasm_ features)
    platemap: str | None = None  # CSV with a well column: joined to every table, controls for screen.json
    readout: tuple[str, ...] = ()  # nucleus features whose per-well median screen.json scores
    t: str | int = "all"  # time points of a time series: "all", N or "A:B" (Python slice)
    z_link: float = 0.25  # with z="all": IoU linking a nucleus between planes (0: planes independent)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)


@dataclass
class RunSummary:
    """What a run did; ``failed`` maps field keys to the reason."""

    out: str
    results: str
    fields: int
    done: int
    skipped_done: int
    failed: dict[str, str] = field(default_factory=dict)
    n_nuclei: int = 0
    wall_s: float = 0.0
    megapixels: float = 0.0  # segmented by this run
    computed: int = 0  # fields segmented by this run

    @property
    def ok(self) -> bool:
        return not self.failed and self.done == self.fields


def plate_name(source: Source) -> str:
    """``Metadata_Plate``: the plate metadata's ``name``, else the Zarr's name without ``.zarr``."""
    name = (source.plate or {}).get("name")
    return str(name) if isinstance(name, str) and name.strip() else source.path.resolve().name.removesuffix(".zarr")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("hts", "torch", "dask", "distributed", "zarr", "ome-zarr", "numpy", "scikit-image"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _model_record(model: str | None) -> tuple[dict, InstanceUNet]:
    """Load the model once in the driver: a bad checkpoint fails before any worker starts."""
    from hts.engine.pipeline import resolve_model
    from hts.model.checkpoint import sha256sum
    from hts.model.pretrained import default_model_path

    net = resolve_model(model)
    path = Path(model) if model else default_model_path()
    return {"path": str(path), "sha256": sha256sum(path), "config": asdict(net.config)}, net


def _check_first_field(job: Job, opts: RunOptions) -> tuple[tuple[int, int], int, tuple[tuple[int, str], ...]]:
    """Metadata shared by all fields (e.g. an unknown channel or z plane) fails the run at once.

    Returns the (y, x) shape, the channel index and the measured channels (index, name).
    """
    from hts.io.ngff_image import level_shapes, resolve_channel

    info = job.image_info()
    channel = resolve_channel(info, job.channel, job.image_path)
    shape = level_shapes(info)[0]
    if opts.z is not None and opts.z != "all":
        planes = info.axis_size("z") if "z" in info.axes else None
        if planes is None:
            raise HtsError(f"--z {opts.z}: the images have no z axis (axes {', '.join(info.axes)} in {job.image_path})")
        if not 0 <= opts.z < planes:
            raise HtsError(f"--z {opts.z}: out of range, the images have {planes} z plane(s) (0 to {planes - 1})")
    if opts.diameter is not None:
        check_diameter(opts.diameter, shape, "--diameter")
    return shape, channel, measured_channels(info, opts.measure, job.image_path)


def _check_options(opts: RunOptions) -> None:
    """The options that need no input: refused before anything is read or written."""
    if opts.batch_size < 1:
        raise HtsError(f"--batch-size must be >= 1, got {opts.batch_size}")
    if opts.block < 256:
        raise HtsError(f"--block must be >= 256 px, got {opts.block}")
    check_min_size(opts.min_size, "--min-size")
    check_tta(opts.tta, "--tta")
    if isinstance(opts.ring, bool) or not isinstance(opts.ring, int) or not 0 <= opts.ring <= 100:
        raise HtsError(f"--ring must be a whole number of px from 0 to 100, got {opts.ring!r}")
    if opts.diameter is not None:
        check_diameter(opts.diameter, None, "--diameter")
    if opts.z not in (None, "all") and (isinstance(opts.z, bool) or not isinstance(opts.z, int) or opts.z < 0):
        raise HtsError(f"--z must be max, all or a plane index >= 0, got {opts.z!r}")
    if not (isinstance(opts.z_link, (int, float)) and 0 <= opts.z_link <= 1):
        raise HtsError(f"--z-link must be an IoU from 0 to 1, got {opts.z_link!r}")


def _output_path(source: Source, out: str | None) -> str:
    """Where the labels go; refuses an output that overlaps the input or cannot be written."""
    src = source.path.resolve()
    if out is None or Path(out).resolve() == src:
        _probe_writable(src, f"{source.path}: cannot write labels into the input", "; use --out OUT.zarr")
        _probe_writable(results_dir(src).parent, f"{source.path}: cannot write the results folder beside the input",
                        "; use --out OUT.zarr")
        return str(source.path)
    dst = Path(out).resolve()
    if src in dst.parents:
        raise HtsError(f"--out {out}: inside the input {source.path}; choose a path outside it")
    if dst in src.parents:
        raise HtsError(f"--out {out}: contains the input {source.path}; choose a path outside it")
    _probe_writable(dst if dst.is_dir() else dst.parent, f"--out {out}: cannot write there", "")
    return str(out)


def _probe_writable(folder: Path, what: str, hint: str) -> None:
    """Create and delete a file in ``folder``: read-only media and missing permissions fail here, in one line."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".hts-probe-"):
            pass
    except OSError as e:
        raise HtsError(f"{what} ({e.strerror}){hint}") from None


def _same_settings(results: Results, earlier: dict, settings: dict, diameter: float | None, n_done: int,
                   log) -> float | None:
    """Refuse to add fields segmented differently from the done ones (``earlier``); returns the diameter to use.

    An unset ``--diameter`` takes the done fields' diameter (one per plate),
    so a resumed run does not re-estimate it on another field.
    """
    def show(key: str, value) -> str:
        if value is None:
            return "unset"
        return f"sha256 {value[:12]}..." if key == "model_sha256" else f"index {value}" if key == "channel" \
            else f"{value:.1f} px" if key == "diameter" else str(value)

    option = {"model_sha256": "--model", "channel": "--channel", "z": "--z", "min_size": "--min-size", "tta": "--tta",
              "measure": "--measure", "ring": "--ring", "z_link": "--z-link"}
    earlier = {"tta": 1, "z_link": None} | earlier  # fields done before --tta existed had none (nor --measure)
    for key, name in option.items():
        if key in settings and earlier.get(key) != settings[key]:
            raise HtsError(f"{results.path}: {n_done} fields were segmented with {name} "
                           f"{show(key, earlier.get(key))}, this run asks {show(key, settings[key])}; rerun with "
                           "the same options, or add --overwrite to segment every field again")
    if diameter is None:
        log(f"nucleus diameter: {show('diameter', earlier['diameter'])} (from the {n_done} fields done earlier)")
    elif earlier["diameter"] is None or abs(earlier["diameter"] - diameter) > 0.05:
        raise HtsError(f"{results.path}: {n_done} fields were segmented with --diameter "
                       f"{show('diameter', earlier['diameter'])}, this run asks {show('diameter', diameter)}; "
                       "rerun with the same options, or add --overwrite to segment every field again")
    return earlier["diameter"]  # the recorded value, also when --diameter gives it rounded


def _platemap(results: Results, platemap, log):
    """The run's platemap: ``--platemap`` (kept as ``platemap.csv`` in the results), else the one kept by an earlier run."""
    from hts.io.atomic import atomic_write

    kept = results.path / "platemap.csv"
    if platemap is not None:
        atomic_write(kept, platemap.to_csv(index=False).encode())
        return platemap
    if kept.is_file():
        log(f"platemap: {kept} (kept from an earlier run; --platemap replaces it)")
        return read_platemap(kept)
    return None


def _write_attrs(out: zarr.Group, source: Source, fields, wells, complete: bool) -> None:
    """Counts into the plate and well attributes (key ``hts``, beside the NGFF metadata).

    A time series records the counts of its last time point done, and per
    well ``n_nuclei_by_t``.
    """
    if source.kind != "plate":
        n = int(fields["n_nuclei"].sum()) if len(fields) else 0
        out.attrs["hts"] = {"n_nuclei": n, "complete": complete}
        return
    series = "t" in fields
    if series and len(fields):
        by_t = {w: part.groupby("t")["n_nuclei"].sum() for w, part in fields.groupby("well", sort=False)}
        fields = fields[fields["t"] == fields["t"].max()]
        wells = wells[wells["t"] == wells["t"].max()]
    for well, part in fields.groupby("well", sort=False):
        out[well].attrs["hts"] = {"n_nuclei": int(part["n_nuclei"].sum()),
                                  "fields": {str(f): int(n) for f, n in zip(part["field"], part["n_nuclei"])},
                                  **({"n_nuclei_by_t": {str(t): int(n) for t, n in by_t[well].items()}}
                                     if series else {})}
    out.attrs["hts"] = {"n_nuclei": int(wells["n_nuclei"].sum()) if len(wells) else 0, "complete": complete,
                        "wells": {w: int(n) for w, n in zip(wells["well"], wells["n_nuclei"])}}


def run(path: str | os.PathLike, opts: RunOptions = RunOptions(), progress: bool = True, log=print) -> RunSummary:
    """Segment every field of ``path``; write labels, counts and tables; return the summary.

    Parameters
    ----------
    path : str or os.PathLike
        An OME-Zarr (NGFF 0.4/0.5) HCS plate or single image.
    opts : RunOptions
        Everything else ``hts run`` takes; the output goes into ``path``
        unless ``opts.out`` names another Zarr.
    progress : bool
        Show a progress bar over fields.
    log : callable
        ``log(message)``: one line per event (cluster, diameter, skipped or failed fields).

    Returns
    -------
    RunSummary
        Fields done (including those of earlier runs), failed with the reason,
        nuclei counted, wall time. A failed field does not raise.

    Raises
    ------
    HtsError
        On a bad option, input or channel, a model that does not load,
        settings that differ from the fields done earlier, or another run
        holding the output.
    """
    t0 = time.perf_counter()
    _check_options(opts)
    source = open_source(path)
    for note in source.notes:
        log(f"warning: {note}")
    out_path = _output_path(source, opts.out)
    base = {"source": str(source.path), "out": out_path, "results": str(results_dir(out_path)),
            "version": source.version, "copy_image": Path(out_path).resolve() != source.path.resolve(),
            "channel": opts.channel, "z": None if opts.z == "all" else opts.z, "model": opts.model, "device": opts.device,
            "batch_size": opts.batch_size, "min_size": opts.min_size, "tta": opts.tta,
            "threads": 1}  # torch threads: set from the workers' threads once connected
    shape, channel, measured = _check_first_field(Job(source.fields[0], diameter=None, **base), opts)
    platemap = read_platemap(opts.platemap) if opts.platemap else None
    base |= {"measure": measured, "ring": opts.ring, "plate": plate_name(source)}
    units, volume = time_units(source, opts)
    base |= {"z_all": opts.z == "all", "z_link": float(opts.z_link), "volume": volume}
    if volume and base["copy_image"]:
        raise HtsError("--out with a time series or --z all is not supported yet: the label volume is written "
                       "into the plate (run without --out on a writable copy)")
    closing: threading.Thread | None = None
    summary: RunSummary | None = None
    results = Results(results_dir(out_path))
    results.lock()
    try:
        repaired = repair_output(Path(out_path), source) + [f"removed {p}" for p in results.sweep()]
        for line in repaired[:3]:  # what a killed run left
            log(f"repaired: {line}")
        if len(repaired) > 3:
            log(f"repaired: ... and {len(repaired) - 3} more left by a killed run")
        out = open_output(source, opts.out)
        if opts.overwrite:
            results.forget()
        model, net = _model_record(opts.model)  # the net also measures the plate's diameter
        todo = [f for f in units if not results.is_done(f)]
        summary = RunSummary(out_path, str(results.path), len(units) + len(source.skipped), 0,
                             len(units) - len(todo))
        summary.failed = {ref.key: reason for ref, reason in source.skipped}
        for key, reason in summary.failed.items():
            log(f"skipped {key}: {reason}")
        settings = {"model_sha256": model["sha256"], "channel": channel, "z": opts.z, "min_size": opts.min_size,
                    "tta": opts.tta, "measure": [name for _, name in measured], "ring": opts.ring,
                    "z_link": float(opts.z_link) if opts.z == "all" else None,
                    "dna_feature": nucleus_feature(measured, channel)}
        platemap = _platemap(results, platemap, log)
        diameter, earlier = opts.diameter, results.settings() if summary.skipped_done else None
        size = None  # the plate's diameter estimate, when made
        if earlier is not None:
            diameter = _same_settings(results, earlier, settings, diameter, summary.skipped_done, log)
        elif todo and diameter is None:
            from hts.screen.size import plate_diameter

            try:
                size = plate_diameter(net, [Job(r, diameter=None, **base) for r in todo], shape, log)
                diameter = size.diameter
            except HtsError as e:
                log(f"nucleus diameter: cannot estimate it ({e}); images are not rescaled")
        if todo and not summary.skipped_done:
            results.write_settings(settings | {"diameter": diameter})
        jobs = [Job(ref, diameter=diameter, **base) for ref in todo]
        if jobs:  # until this run ends, nothing may look complete
            results.invalidate()
            out.attrs["hts"] = {"complete": False}
            closing = _compute(jobs, opts, summary, progress, log)
        _finish(results, out, source, units, summary, base["plate"], platemap, log)
        if platemap is not None:
            _write_or_fail(results.path, "screen.json", lambda: write_screen(
                results.path, platemap, opts.readout, settings["dna_feature"], log))
        summary.wall_s = time.perf_counter() - t0
        _write_or_fail(results.path, "the run record", lambda: results.write_record({
            "input": str(source.path), "output": out_path, "kind": source.kind, "ngff": source.version,
            "options": asdict(opts) | {"diameter": diameter},
            "diameter_estimate": None if size is None else asdict(size), "model": model, "versions": _versions(),
            "host": platform.node(), "summary": asdict(summary), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    finally:
        if closing is not None:
            closing.join()
        if summary is not None and summary.failed:  # a failed write's zarr I/O may outlive its task's cleanup
            _quietly(lambda: repair_output(Path(out_path), source))
        results.unlock()
    return summary


def _quietly(step) -> None:
    """``step()``, ignoring OSError: tidying up after a failure must not hide the failure's own message."""
    try:
        step()
    except OSError:
        pass


def _finish(results: Results, out: zarr.Group, source: Source, units: list, summary: RunSummary, plate: str,
            platemap, log) -> None:
    """Tables from the done markers, counts into the Zarr attributes; a full disk is a :class:`RunError`."""
    if platemap is not None:
        for line in coverage_warnings(platemap, sorted({well_id(f.row, f.column) for f in source.fields if f.well})):
            log(f"warning: {line}")
    fields, wells = _write_or_fail(results.path, "the count tables",
                                   lambda: results.write_tables(units, plate, platemap))
    summary.done = len(fields)
    summary.n_nuclei = int(fields["n_nuclei"].sum()) if len(fields) else 0
    _write_or_fail(Path(summary.out), "the counts into the Zarr attributes",
                   lambda: _write_attrs(out, source, fields, wells, complete=summary.done == len(units)))


def _write_or_fail(where: Path, what: str, write):
    """``write()``, turning an OSError (full disk, lost mount) into one line that says the done fields are kept."""
    try:
        return write()
    except OSError as e:
        raise RunError(f"{where}: cannot write {what} ({e.strerror or e}); the fields done are kept, "
                       "rerun when the cause is fixed") from None


def _compute(jobs: list[Job], opts: RunOptions, summary: RunSummary, progress: bool, log) -> threading.Thread:
    """Run the jobs on the cluster, recording each field's outcome as it finishes.

    After the last field the cluster is closed in the returned (started)
    thread, so that shutting the workers down overlaps the driver writing
    the tables; join it before returning. On an error or
    interrupt the cluster is closed before this function raises.
    """
    stack = ExitStack()
    client = stack.enter_context(connect(opts.cluster, log=log, shared_dir=Path(jobs[0].results)))
    try:
        _compute_on(client, jobs, opts, summary, progress, log)
    except BaseException:  # Ctrl-C, SIGTERM, an error: the reason is printed once, the shutdown quietly
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        stack.close()
        raise
    closing = threading.Thread(target=stack.close, name="hts-close-cluster")
    closing.start()
    return closing


def _compute_on(client, jobs: list[Job], opts: RunOptions, summary: RunSummary, progress: bool, log) -> None:
    """The body of :func:`_compute` on a connected ``client``."""
    client.register_plugin(QuietTaskFailures())
    gpu = getattr(client, "infer_resources", None) or inference_resources(client)
    nthreads = client.nthreads()
    window = max(WINDOW_PER_THREAD * (sum(nthreads.values()) or 1), 2)
    threads = getattr(client, "torch_threads", None) or (min(nthreads.values()) if nthreads else 1)
    jobs = [replace(job, threads=threads) for job in jobs]
    if len(jobs) == 1 and jobs[0].ref.well is None and not jobs[0].volume and _is_large(jobs[0], opts):
        from hts.screen.slide import run_slide

        _record(summary, jobs[0], run_slide(client, jobs[0], opts.block, gpu, window, progress, log))
        return

    ensured: set[str] = set()

    def submit(job: Job):
        if job.volume and job.ref.path not in ensured:  # the field's label volume, before its first time point
            ensure_volume(job)
            ensured.add(job.ref.path)
        k = job.ref.key
        inferred = client.submit(infer_field, job, key=f"infer-{k}", resources=gpu, pure=False)
        labels = client.submit(watershed_field, job, inferred, key=f"watershed-{k}", pure=False)
        return client.submit(write_field, job, labels, key=f"write-{k}", pure=False)

    bar = tqdm(total=summary.fields, initial=summary.skipped_done, unit="field", desc="fields",
               disable=not progress, dynamic_ncols=True)
    with bar:  # closed (ending its line) also on Ctrl-C, so the last message starts a line of its own
        for job, fut in windowed(client, jobs, submit, window):
            outcome = fut.result() if fut.status == "finished" else fut.exception()
            fut.release()
            _record(summary, job, outcome, bar.write if progress else log)
            bar.update(1)
            bar.set_postfix(nuclei=summary.n_nuclei, failed=len(summary.failed))


def _is_large(job: Job, opts: RunOptions) -> bool:
    """A single image bigger than one block goes block by block (whole-slide images)."""
    from hts.io.ngff_image import level_shapes

    return max(level_shapes(job.image_info())[0]) > opts.block


def _record(summary: RunSummary, job: Job, outcome, log=print) -> None:
    """Account one field: its summary dict, or the exception that stopped it."""
    if isinstance(outcome, dict):
        summary.computed += 1
        summary.n_nuclei += outcome["n_nuclei"]
        summary.megapixels += outcome["pixels"] / 1e6
        return
    reason = str(outcome) if isinstance(outcome, HtsError) else f"{type(outcome).__name__}: {outcome}"
    summary.failed[job.ref.key] = reason
    log(f"failed {job.ref.key}: {reason}")
