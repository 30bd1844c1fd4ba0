"""``kdnas-deploy latency build|list|show|predict|validate``: thin commands over :mod:`kdnas_deploy.latency`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from kdnas_deploy.cli import options as o
from kdnas_deploy.cli.latency_transfer import transfer

log = logging.getLogger(__name__)

TABLE_ARG = click.argument("table_path", type=click.Path(dir_okay=False, path_type=Path))
BATCH_AT = o.batch_option(default=None, help="A grid batch size [default: the table's first].")
SEQ_AT = o.seq_option(default=None, help="Sequence length, interpolated between grid points [default: the first].")
EXPORT_WORKERS_HELP = (
    "Processes exporting models before timing starts (0: in this process). 2 is faster but doubles the export memory."
)


@click.group(name="latency")
def latency() -> None:
    """Build, list, inspect, query, validate and transfer latency lookup tables."""


latency.add_command(transfer)


@latency.command()
@click.option(
    "--space",
    "space_spec",
    default="minilm-l6",
    show_default=True,
    help="Search space: a preset name (minilm-l6, bert-base) or a YAML path.",
)
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Device to measure on."
)
@click.option(
    "--backend",
    default=None,
    help="cpu-ort (cpu default), cpu-openvino (the openvino extra), cuda-ort (cuda default) or cuda-torch.",
)
@o.batches_option()
@o.seqs_option()
@click.option(
    "--precision",
    type=click.Choice(["fp32", "int8", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="Precision of the deployed models timed (int8: ORT dynamic int8 on cpu-ort, NNCF's int8 IR on "
    "cpu-openvino; fp16: CUDA; bf16: cpu-openvino on a CPU with avx512_bf16 or AMX).",
)
@o.threads_option()
@click.option("--rounds", type=o.Count, default=3, show_default=True, help="Readings per entry, spaced in time.")
@o.out_option(kind="file", help="Table JSON to write.")
@o.force_option("Replace an existing --out (a killed build of the same table resumes without it).")
@click.option("--workdir", type=o.OUT_DIR, default=None, help="Work folder (exports, journal).")
@click.option("--keep-models", is_flag=True, help="Keep the exported models in the work folder.")
@click.option("--export-workers", type=o.Workers, default=1, show_default=True, help=EXPORT_WORKERS_HELP)
@o.no_progress_option(quiet_alias=True)
def build(
    space_spec: str,
    device: str,
    backend: str | None,
    batches: list[int],
    seqs: list[int],
    precision: str,
    threads: int,
    rounds: int,
    out: Path,
    force: bool,
    workdir: Path | None,
    keep_models: bool,
    export_workers: int,
    no_progress: bool,
) -> None:
    """Profile every layer variant of a space in context and write a latency table."""
    from dataclasses import replace

    from kdnas_deploy.latency.backends import get_backend
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table, validate_grid
    from kdnas_deploy.space import SearchSpace

    space = SearchSpace.load(space_spec)
    b, s = validate_grid(batches, seqs)
    be = get_backend(device, precision, threads=threads, backend=backend)
    policy = replace(MeasurePolicy(), rounds=rounds, min_accepted=min(2, rounds))
    t0 = time.time()
    table = build_table(
        space,
        be,
        b,
        s,
        out,
        policy=policy,
        workdir=workdir,
        log=log.info,
        progress=not no_progress,
        keep_models=keep_models,
        export_workers=export_workers,
        force=force,
    )
    click.echo(
        f"wrote {out}: {len(table.data['entries'])} entries, {len(space.variants)} variants x depths "
        f"{list(table.anchors)}, probe {table.probe_ms:.3f} ms, {time.time() - t0:.0f} s"
    )


@latency.command(name="list")
@click.option(
    "--space",
    "space_spec",
    default="minilm-l6",
    show_default=True,
    help="Space the run would search: a preset name or a YAML path.",
)
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Device the run deploys on."
)
@click.option("--backend", default=None, help="Backend the run deploys with [default: the device's].")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "int8", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="Precision the run deploys.",
)
@o.threads_option()
@o.batch_option(default=1, help="Batch size the run predicts at.")
@o.seq_option(default=128, help="Sequence length the run predicts at.")
@click.option(
    "--optimize",
    type=click.Choice(["none", "O1", "O2", "O3"]),
    default="O2",
    show_default=True,
    help="Export optimization level the run deploys with.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_tables(
    space_spec: str, device: str, backend: str | None, precision: str, threads: int, batch: int, seq: int,
    optimize: str, as_json: bool,
) -> None:  # fmt: skip
    """List the tables a run would consider (shipped latency_tables/, then the table cache in $KDNAS_CACHE_DIR
    or the user cache folder) and why each matches this machine and these settings or not."""
    from kdnas_deploy.pipeline.tables import (
        TableRequirement,
        list_candidate_tables,
        table_cache_dir,
        table_search_dirs,
    )
    from kdnas_deploy.space import SearchSpace

    need = TableRequirement(
        space=SearchSpace.load(space_spec),
        device=device,
        precision=precision,
        threads=threads,
        batch=batch,
        seq=seq,
        optimize=optimize,
        backend=backend,
    )
    dirs = table_search_dirs()
    candidates = list_candidate_tables(need, dirs)
    cache = table_cache_dir()
    if as_json:
        rows = [{"path": str(c.path), "matches": c.matches, "why": list(c.why)} for c in candidates]
        doc = {"dirs": [str(d) for d in dirs], "table_cache": str(cache), "tables": rows}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo("searched: " + (", ".join(str(d) for d in dirs) or "(no table folder exists)"))
    if not cache.is_dir():
        click.echo(f"table cache: {cache} (empty: no run has built a table yet)")
    if not candidates:
        click.echo("no tables found")
    for c in candidates:
        click.echo(f"{'match' if c.matches else 'no match':>8}  {c.path}")
        for why in c.why:
            click.echo(f"{'':>10}- {why}")


@latency.command()
@TABLE_ARG
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--costs", is_flag=True, help="Also list fixed and per-layer costs of every variant.")
def show(table_path: Path, as_json: bool, costs: bool) -> None:
    """Summarise a table: space, device, grid, probe, fingerprint check."""
    from kdnas_deploy.latency.table import LatencyTable

    table = LatencyTable.load(table_path)
    summary = table.summary()
    summary["machine_mismatch"] = table.check_machine()
    if costs:
        summary["costs"] = table.decomposition()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for k, v in summary.items():
        if k not in ("costs", "machine_mismatch"):
            click.echo(f"{k:>24}: {v}")
    for issue in summary["machine_mismatch"]:
        click.echo(f"warning: measured on a different machine: {issue}", err=True)
    if costs:
        _print_costs(summary["costs"])


def _print_costs(costs: list[dict[str, Any]]) -> None:
    click.echo(f"{'variant':>22} {'b':>3} {'s':>4} {'fixed_ms':>9}  per-layer ms by segment")
    for c in costs:
        segs = "  ".join(
            f"{p['from_layers']}-{p['to_layers']}: {p['latency_ms_per_layer']:.3f}" for p in c["per_layer_ms"]
        )
        name = f"H={c['hidden_size']},A={c['num_heads']},F={c['ffn_size']}"
        click.echo(f"{name:>22} {c['batch']:>3} {c['seq']:>4} {c['fixed_ms']!s:>9}  {segs}")


@latency.command()
@TABLE_ARG
@click.option(
    "--arch",
    "archs",
    type=o.ARCH,
    multiple=True,
    required=True,
    help="ARCH.json, inline JSON or L=4,H=256,A=4,F=1024 (repeatable).",
)
@BATCH_AT
@SEQ_AT
@click.option("--recalibrate", is_flag=True, help="Re-anchor the table to this machine's speed with a probe run.")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
def predict(
    table_path: Path, archs: tuple[Any, ...], batch: int | None, seq: int | None, recalibrate: bool, as_json: bool
) -> None:
    """Predict the latency of architectures from a table."""
    from kdnas_deploy.latency.table import LatencyTable

    table = LatencyTable.load(table_path)
    archs = list(archs)
    raw = table.predict(archs, batch, seq, calibrated=False)  # validates archs and grid before any probe run
    if recalibrate:
        from kdnas_deploy.latency.validate import recalibrate as do_recalibrate

        scale = do_recalibrate(table, table_path, log=lambda m: click.echo(m, err=True))
        large = table.calibration.get("scale_large")
        click.echo(
            f"re-anchored to the probes: small-probe scale {scale:.4f}"
            + (f", large-probe scale {large:.4f}" if large else "")
            + f" (saved in {table_path})",
            err=True,
        )
    else:
        for issue in table.check_machine():
            click.echo(f"warning: table measured on a different machine: {issue}", err=True)
    pred = raw * table.calibration_factors(raw)
    b = table.batch_sizes[0] if batch is None else batch
    s = table.seq_lens[0] if seq is None else seq
    rows = [
        {
            "arch": a.short(),
            "batch": b,
            "seq": s,
            "latency_ms": round(float(p), 4),
            "raw_latency_ms": round(float(r), 4),
            "calibration_factor": round(float(p / r), 5),
        }
        for a, p, r in zip(archs, pred, raw, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return
    for row in rows:
        raw_note = f"  (raw {row['raw_latency_ms']:.3f} ms)" if row["calibration_factor"] != 1.0 else ""
        click.echo(f"{row['arch']}  b={b} s={s}  {row['latency_ms']:.3f} ms{raw_note}")


@latency.command()
@TABLE_ARG
@click.option("--n", type=o.Count, default=None,
              help="Architectures to draw [default: 100, or every held-out member of a smaller space]; 100 support "
                   "a ~95% claim within a few points.")  # fmt: skip
@click.option("--seed", type=o.Seed, default=0, show_default=True, help="Seed of the draw.")
@click.option("--report", type=o.OUT_FILE, required=True, help="Report JSON to write.")
@click.option("--plot", type=o.OUT_FILE, default=None, help="Predicted-vs-measured PNG.")
@BATCH_AT
@SEQ_AT
@click.option("--include-anchors", is_flag=True, help="Also draw depths the table measured (default: held out).")
@click.option(
    "--seq-held-out",
    "seq_held_out",
    type=o.PositiveIntList,
    default=None,
    help="Lengths between the grid's (e.g. 48,96) at which the models are measured again: interpolation error.",
)
@click.option(
    "--noise-sessions",
    type=o.PositiveInt,
    default=5,
    show_default=True,
    help="Sessions of one model timed to estimate the noise floor.",
)
@click.option("--export-workers", type=o.Workers, default=1, show_default=True, help=EXPORT_WORKERS_HELP)
@o.no_progress_option(quiet_alias=True)
def validate(
    table_path: Path,
    n: int | None,
    seed: int,
    report: Path,
    plot: Path | None,
    batch: int | None,
    seq: int | None,
    include_anchors: bool,
    seq_held_out: tuple[int, ...] | None,
    noise_sessions: int,
    export_workers: int,
    no_progress: bool,
) -> None:
    """Measure N random whole models and compare with the table (refuses a table from another machine)."""
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.latency.validate import validate_table

    table = LatencyTable.load(table_path)
    out = validate_table(
        table,
        n=n,
        seed=seed,
        report=report,
        plot=plot,
        batch=batch,
        seq=seq,
        include_anchors=include_anchors,
        noise_sessions=noise_sessions,
        log=log.info,
        progress=not no_progress,
        export_workers=export_workers,
        seq_held_out=seq_held_out or (),
    )
    click.echo(
        f"n={out['n']}: re-anchored MAPE {out['mape_pct']:.2f}%, within 5% {100 * out['within_5pct']:.0f}%, "
        f"within 10% {100 * out['within_10pct']:.0f}%, spearman {out['spearman']:.3f} | raw MAPE "
        f"{out['raw_mape_pct']:.2f}%, within 10% {100 * out['raw_within_10pct']:.0f}% | noise floor "
        f"{out['noise_floor_pct']:.2f}% -> {report}"
    )
    anchor = out["anchor"]
    click.echo(f"probe re-anchoring: factor {anchor['factor']:.4f} ({anchor['reason']}); within 10% at 95% "
               f"confidence: >= {100 * out['within_10pct_wilson_low']:.1f}%")  # fmt: skip
    if "seq_held_out" in out:
        from kdnas_deploy.latency.seq_check import held_out_line

        click.echo(held_out_line(out["seq_held_out"]))
    if plot:
        click.echo(f"plot: {plot}")
