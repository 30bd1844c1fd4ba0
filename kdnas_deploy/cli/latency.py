"""``kdnas-deploy latency build|show|predict|validate``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from kdnas_deploy.cli.latency_transfer import transfer
from kdnas_deploy.errors import TableError


def _ints(values: tuple[str, ...], name: str) -> list[int]:
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError:
                raise click.BadParameter(f"{part!r} is not an integer", param_hint=name) from None
    return out


@click.group(name="latency")
def latency() -> None:
    """Build, inspect, query, validate and transfer latency lookup tables."""


latency.add_command(transfer)


@latency.command()
@click.option("--space", "space_spec", default="configs/spaces/minilm-l6.yaml", show_default=True,
              help="Search space: a YAML path or a preset name (minilm-l6, bert-base).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--backend", default=None, help="cpu-ort (cpu default), cuda-ort (cuda default) or cuda-torch.")
@click.option("--batch", "batches", multiple=True, default=("1",), show_default=True, help="Batch size(s): 1 or 1,8.")
@click.option("--seq", "seqs", multiple=True, default=("128",), show_default=True, help="Sequence length(s).")
@click.option("--precision", type=click.Choice(["fp32", "int8", "fp16"]), default="fp32", show_default=True)
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: physical cores).")
@click.option("--rounds", type=int, default=3, show_default=True, help="Readings per entry, spaced in time.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Table JSON to write.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Work folder (exports, journal).")
@click.option("--keep-models", is_flag=True, help="Keep the exported models in the work folder.")
@click.option("--export-workers", type=int, default=1, show_default=True,
              help="Processes exporting models before timing starts (0: in this process). 2 is faster but "
                   "doubles the export memory.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def build(space_spec: str, device: str, backend: str | None, batches: tuple[str, ...], seqs: tuple[str, ...],
          precision: str, threads: int | None, rounds: int, out: str, workdir: str | None, keep_models: bool,
          export_workers: int | None, quiet: bool) -> None:  # fmt: skip
    """Profile every layer variant of a space in context and write a latency table."""
    from dataclasses import replace

    from kdnas_deploy.latency.backends import get_backend
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table, validate_grid
    from kdnas_deploy.space import SearchSpace

    space = SearchSpace.load(space_spec)
    b, s = validate_grid(_ints(batches, "--batch"), _ints(seqs, "--seq"))
    if rounds < 1:
        raise TableError(f"--rounds must be at least 1, got {rounds}")
    be = get_backend(device, precision, threads=threads, backend=backend)
    policy = replace(MeasurePolicy(), rounds=rounds, min_accepted=min(2, rounds))
    t0 = time.time()
    table = build_table(space, be, b, s, out, policy=policy, workdir=workdir, log=click.echo,
                        progress=not quiet, keep_models=keep_models, export_workers=export_workers)  # fmt: skip
    click.echo(f"wrote {out}: {len(table.data['entries'])} entries, {len(space.variants)} variants x depths "
               f"{list(table.anchors)}, probe {table.probe_ms:.3f} ms, {time.time() - t0:.0f} s")  # fmt: skip


@latency.command()
@click.argument("table_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--costs", is_flag=True, help="Also list fixed and per-layer costs of every variant.")
def show(table_path: str, as_json: bool, costs: bool) -> None:
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
        click.echo(f"{'variant':>22} {'b':>3} {'s':>4} {'fixed_ms':>9}  per-layer ms by segment")
        for c in summary["costs"]:
            segs = "  ".join(f"{p['from_layers']}-{p['to_layers']}: {p['latency_ms_per_layer']:.3f}"
                             for p in c["per_layer_ms"])  # fmt: skip
            name = f"H={c['hidden_size']},A={c['num_heads']},F={c['ffn_size']}"
            click.echo(f"{name:>22} {c['batch']:>3} {c['seq']:>4} {c['fixed_ms']!s:>9}  {segs}")


@latency.command()
@click.argument("table_path", type=click.Path(dir_okay=False))
@click.option("--arch", "arch_specs", multiple=True, required=True,
              help="ARCH.json, inline JSON or L=4,H=256,A=4,F=1024 (repeatable).")
@click.option("--batch", type=int, default=None, help="A grid batch size (default: the first).")
@click.option("--seq", type=int, default=None, help="Sequence length, interpolated between grid points.")
@click.option("--recalibrate", is_flag=True, help="Re-anchor the table to this machine's speed with a probe run.")
@click.option("--json", "as_json", is_flag=True)
def predict(table_path: str, arch_specs: tuple[str, ...], batch: int | None, seq: int | None, recalibrate: bool,
            as_json: bool) -> None:  # fmt: skip
    """Predict the latency of architectures from a table."""
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.table import LatencyTable

    table = LatencyTable.load(table_path)
    archs = [Architecture.parse(a) for a in arch_specs]
    raw = table.predict(archs, batch, seq, calibrated=False)  # validates archs and grid before any probe run
    if recalibrate:
        from kdnas_deploy.latency.validate import recalibrate as do_recalibrate

        scale = do_recalibrate(table, table_path, log=lambda m: click.echo(m, err=True))
        large = table.calibration.get("scale_large")
        click.echo(f"re-anchored to the probes: small-probe scale {scale:.4f}"
                   + (f", large-probe scale {large:.4f}" if large else "") + f" (saved in {table_path})", err=True)
    else:
        for issue in table.check_machine():
            click.echo(f"warning: table measured on a different machine: {issue}", err=True)
    pred = raw * table.calibration_factors(raw)
    b = table.batch_sizes[0] if batch is None else batch
    s = table.seq_lens[0] if seq is None else seq
    rows = [{"arch": a.short(), "batch": b, "seq": s, "latency_ms": round(float(p), 4),
             "raw_latency_ms": round(float(r), 4), "calibration_factor": round(float(p / r), 5)}
            for a, p, r in zip(archs, pred, raw, strict=True)]  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return
    for row in rows:
        raw_note = f"  (raw {row['raw_latency_ms']:.3f} ms)" if row["calibration_factor"] != 1.0 else ""
        click.echo(f"{row['arch']}  b={b} s={s}  {row['latency_ms']:.3f} ms{raw_note}")


@latency.command()
@click.argument("table_path", type=click.Path(dir_okay=False))
@click.option("--n", type=int, default=100, show_default=True,
              help="Architectures to draw (100 support a ~95% claim within a few points).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False), required=True, help="Report JSON to write.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Predicted-vs-measured PNG.")
@click.option("--batch", type=int, default=None)
@click.option("--seq", type=int, default=None)
@click.option("--include-anchors", is_flag=True, help="Also draw depths the table measured (default: held out).")
@click.option("--noise-sessions", type=int, default=5, show_default=True)
@click.option("--export-workers", type=int, default=1, show_default=True, help="Export processes (0: in this one).")
@click.option("--quiet", is_flag=True)
def validate(table_path: str, n: int, seed: int, report: str, plot: str | None, batch: int | None, seq: int | None,
             include_anchors: bool, noise_sessions: int, export_workers: int | None, quiet: bool) -> None:  # fmt: skip
    """Measure N random whole models and compare with the table (refuses a table from another machine)."""
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.latency.validate import validate_table

    table = LatencyTable.load(table_path)
    out = validate_table(table, n=n, seed=seed, report=report, plot=plot, batch=batch, seq=seq,
                         include_anchors=include_anchors, noise_sessions=noise_sessions, log=click.echo,
                         progress=not quiet, export_workers=export_workers)  # fmt: skip
    click.echo(
        f"n={out['n']}: re-anchored MAPE {out['mape_pct']:.2f}%, within 5% {100 * out['within_5pct']:.0f}%, "
        f"within 10% {100 * out['within_10pct']:.0f}%, spearman {out['spearman']:.3f} | raw MAPE "
        f"{out['raw_mape_pct']:.2f}%, within 10% {100 * out['raw_within_10pct']:.0f}% | noise floor "
        f"{out['noise_floor_pct']:.2f}% -> {report}"
    )
    anchor = out["anchor"]
    click.echo(f"probe re-anchoring: factor {anchor['factor']:.4f} ({anchor['reason']}); within 10% at 95% "
               f"confidence: >= {100 * out['within_10pct_wilson_low']:.1f}%")  # fmt: skip
    if plot:
        click.echo(f"plot: {Path(plot)}")
