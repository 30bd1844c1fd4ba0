"""``kdnas-deploy latency transfer``: a table for this machine from a reference table and K measured models."""

from __future__ import annotations

import time
from pathlib import Path

import click

from kdnas_deploy.cli.options import (
    Count,
    Seed,
    Workers,
    force_option,
    no_progress_option,
    out_option,
    threads_option,
)


@click.command()
@click.argument("ref_table", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--measure", "k", type=Count, default=10, show_default=True,
              help="Whole models to measure here (at least 2; the correction never has more than K/2 parameters).")
@out_option(kind="file", help="Transferred table JSON to write.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Target device [default: the reference's].")
@click.option("--backend", default=None, help="Target backend [default: the reference's].")
@click.option("--precision", type=click.Choice(["fp32", "int8", "fp16"]), default=None,
              help="Target precision [default: the reference's].")
@threads_option()
@click.option("--space", "space_spec", default=None,
              help="Refuse a reference of another space than this one (a YAML path or a preset name).")
@click.option("--seed", type=Seed, default=0, show_default=True, help="Seed of the measured students' weights.")
@click.option("--export-workers", type=Workers, default=1, show_default=True,
              help="Export processes (0: in this one).")
@force_option(help="Replace an existing --out.")
@no_progress_option()
def transfer(ref_table: Path, k: int, out: Path, device: str | None, backend: str | None, precision: str | None,
             threads: int, space_spec: str | None, seed: int, export_workers: int, force: bool,
             no_progress: bool) -> None:  # fmt: skip
    """Transfer REF_TABLE (measured on another machine or thread count) to this machine from K models.

    Measures the probes and K whole models chosen to span the reference's cost structure, fits a correction
    (global scale up to one scale per hidden size, chosen by leave-one-out error) and writes a normal table
    with this machine's fingerprint, ``derived_from`` and the K measured points.
    """
    from kdnas_deploy.errors import TableError
    from kdnas_deploy.latency.backends import BACKEND_DEVICE, get_backend, resolve_backend_name
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.latency.transfer import transfer_table
    from kdnas_deploy.space import SearchSpace

    ref = LatencyTable.load(ref_table)  # corrupt / future schema: one line before anything else
    device = device or (BACKEND_DEVICE.get(backend, ref.device) if backend else ref.device)
    name = resolve_backend_name(device, backend or (ref.backend if ref.device == device else None))
    if BACKEND_DEVICE[name] != ref.device:
        raise TableError(f"cannot transfer {ref_table}: it is a {ref.device} table and the target is {device} "
                         f"({name}); build a {device} table instead")  # fmt: skip
    if out.exists() and not force:
        raise TableError(f"{out} already exists (use --force to replace it)")
    space = SearchSpace.load(space_spec) if space_spec else None
    be = get_backend(device, precision or ref.precision, threads=threads, backend=name)
    t0 = time.time()
    table = transfer_table(ref_table, be, k=k, out=out, seed=seed, progress=not no_progress, log=click.echo,
                           space=space, force=force, export_workers=export_workers)  # fmt: skip
    tr = table.data["transfer"]
    loo = tr["loo"][tr["model"]].get("loo_mape_pct")
    click.echo(f"wrote {out}: {len(table.data['entries'])} entries corrected by '{tr['model']}' "
               f"({tr['n_params']} parameter(s), leave-one-out MAPE {loo}% on {tr['k']} models), "
               f"{time.time() - t0:.0f} s")  # fmt: skip
