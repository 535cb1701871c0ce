"""``hts demo``: the main job end to end on a generated plate (run time: docs/performance.md).

Writes a small synthetic OME-Zarr plate (2 x 3 wells x 2 fields of 512 x 512
px, nuclei of known number), runs ``hts run`` on it on an embedded Dask
LocalCluster with the shipped model, and prints the per-well counts beside
the true counts.
"""

from __future__ import annotations

from pathlib import Path

from hts.screen.cluster import ClusterOptions
from hts.screen.run import RunOptions, run
from hts.synthetic.plate import PlateSpec, write_plate


def run_demo(out: Path, spec: PlateSpec = PlateSpec(), workers: int | None = None, progress: bool = True) -> int:
    """Write a synthetic plate, run ``hts run`` on it and print found against true counts per well.

    Parameters
    ----------
    out : pathlib.Path
        Folder for the plate and its results (created).
    spec : PlateSpec, optional
        The plate (default 2 x 3 wells x 2 fields of 512 px).
    workers : int, optional
        Local Dask workers; default chosen by :class:`hts.screen.cluster.ClusterOptions`.
    progress : bool, optional
        Show the run's progress bar.

    Returns
    -------
    int
        Exit status: 0 when every field was segmented, else 1.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plate = out / "plate.zarr"
    print(f"writing a synthetic plate: {spec.rows} x {spec.columns} wells x {spec.fields} fields of "
          f"{spec.size} x {spec.size} px, NGFF {spec.version} -> {plate}")
    truth = write_plate(plate, spec)
    summary = run(plate, RunOptions(channel="DAPI", overwrite=True, cluster=ClusterOptions(workers=workers)),
                  progress=progress)
    import pandas as pd

    wells = pd.read_csv(Path(summary.results) / "wells.csv", dtype={"column": str})
    wells["true"] = wells["well"].map(lambda w: sum(truth[w]))
    wells["error_%"] = (100 * (wells["n_nuclei"] - wells["true"]) / wells["true"]).round(1)
    print()
    print(wells[["well", "fields", "n_nuclei", "true", "error_%"]].to_string(index=False))
    total, true = int(wells["n_nuclei"].sum()), int(wells["true"].sum())
    print(f"\n{summary.done}/{summary.fields} fields, {total} nuclei found, {true} true "
          f"({100 * (total - true) / true:+.1f}%), {summary.wall_s:.1f} s")
    print(f"labels: {plate}/<row>/<column>/<field>/labels/nuclei   tables: {summary.results}/")
    print(f"next: `hts counts {plate}`, or open {plate} in napari (napari-ome-zarr)")
    return 0 if summary.ok else 1


def run_screen_demo(out: Path, workers: int | None = None, progress: bool = True) -> int:
    """Write the synthetic screen, run ``hts run --platemap`` on it and print its statistics beside the truth.

    Parameters
    ----------
    out : pathlib.Path
        Folder for the plate, its platemap and results (created).
    workers : int, optional
        Local Dask workers.
    progress : bool, optional
        Show the run's progress bar.

    Returns
    -------
    int
        Exit status: 0 when every field was segmented, else 1.
    """
    import json

    from hts.synthetic.screen import ScreenSpec, write_screen

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plate, spec, readout = out / "screen.zarr", ScreenSpec(), "Nuclei_Intensity_MeanIntensity_GFP"
    print(f"writing a synthetic screen: {spec.rows} x {spec.columns} wells (DMSO, STS, CPD1 dose-response of GFP, "
          f"CPD2 G2/M arrest) -> {plate}")
    truth = write_screen(plate, spec)
    summary = run(plate, RunOptions(channel="DAPI", overwrite=True, platemap=str(truth.platemap_path),
                                    readout=(readout,), cluster=ClusterOptions(workers=workers)), progress=progress)
    record = json.loads((Path(summary.results) / "screen.json").read_text())
    fit = next((f for f in record["dose_response"] if f["treatment"] == "CPD1" and f["readout"] == readout), None)
    print(f"\nZ' of nuclei per well: {record['readouts']['n_nuclei']['z_prime']:.3f} "
          f"(true counts: {truth.z_prime_counts:.3f})")
    if fit and fit["converged"]:
        print(f"CPD1 EC50 on {readout}: {fit['ec50']:.3g} uM [{fit['ec50_ci'][0]:.3g}, {fit['ec50_ci'][1]:.3g}] "
              f"(true {truth.ec50['CPD1']:.3g} uM)")
    top = truth.wells[truth.wells["treatment"] == "CPD2"].sort_values("dose").iloc[-1]
    dna = {w["well"]: w for w in record["dna_content"]["wells"]}.get(top["well"]) if record["dna_content"] else None
    if dna:
        print(f"CPD2 top dose ({top['well']}) G2/M: {dna['g2m_fraction']:.1%} (true {top['g2m_fraction']:.1%})")
    print(f"tables: {summary.results}/ (screen.csv, screen.json, nuclei.parquet, image.parquet); "
          f"next: `hts report {plate}`")
    return 0 if summary.ok else 1
