"""Click commands ``export`` and ``bench`` (heavy imports happen inside the commands)."""

from __future__ import annotations

from pathlib import Path

import click

from kdnas_deploy.errors import ExportError


@click.command("export")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output ONNX folder.")
@click.option("--optimize", type=click.Choice(["none", "O1", "O2", "O3"]), default="O2", show_default=True,
              help="ORTOptimizer level (O2: transformer fusions).")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default="none", show_default=True,
              help="Dynamic int8 quantization (CPU).")
@click.option("--int8-scheme", type=click.Choice(["per_channel_matmul", "per_tensor_all_ops"]),
              default="per_channel_matmul", show_default=True, help="Dynamic int8 scheme (with --quantize int8).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--fp16", is_flag=True, help="fp16 graph (with --device cuda).")
@click.option("--task", default=None, help="Task whose dev-set metric is checked before/after (e.g. sst2); "
              "required with --quantize int8.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="GLUE root folder for --task.")
@click.option("--max-metric-drop", type=float, default=1.0, show_default=True,
              help="Largest allowed drop of the task metric, in points (x100).")
@click.option("--max-eval-examples", type=int, default=None, help="Evaluate on the first N dev rows only.")
@click.option("--atol", type=float, default=None, help="Parity tolerance on logits (default per precision).")
@click.option("--rtol", type=float, default=None, help="Relative parity tolerance (default per precision).")
@click.option("--threads", type=int, default=2, show_default=True, help="Threads for the measured latency.")
@click.option("--bench-batch", type=int, default=1, show_default=True)
@click.option("--bench-seq", type=int, default=128, show_default=True)
@click.option("--bench-reps", type=int, default=30, show_default=True, help="0 skips the latency measurement.")
@click.option("--table", type=click.Path(path_type=Path), default=None, help="Latency table for the prediction.")
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
              help="Tokenizer folder when MODEL_DIR has none.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out; accept a metric drop beyond the limit.")
def export(model_dir: Path, out_dir: Path, optimize: str, quantize: str, int8_scheme: str, device: str, fp16: bool,
           task: str | None, data_dir: Path | None, max_metric_drop: float, max_eval_examples: int | None,
           atol: float | None, rtol: float | None, threads: int, bench_batch: int, bench_seq: int, bench_reps: int,
           table: Path | None, tokenizer: Path | None, force: bool) -> None:
    """Export MODEL_DIR (a Hugging Face sequence classifier) to an optimized ONNX folder, validated against
    PyTorch, with an export report (fused operators, sizes, parity, metric, measured/predicted latency)."""
    from kdnas_deploy.export.exporter import ExportOptions, export_model

    if table is not None and not table.is_file():
        raise ExportError(f"latency table not found: {table}")
    opts = ExportOptions(
        optimize=optimize, quantize=quantize, int8_scheme=int8_scheme, device=device, fp16=fp16, task=task,
        data_dir=str(data_dir) if data_dir else None, max_metric_drop=max_metric_drop,
        max_eval_examples=max_eval_examples, atol=atol, rtol=rtol, threads=threads, bench_batch=bench_batch,
        bench_seq=bench_seq, bench_reps=bench_reps, table=str(table) if table else None,
        tokenizer=str(tokenizer) if tokenizer else None, force=force,
    )
    report = export_model(model_dir, out_dir, opts, log=lambda m: click.echo(m, err=True))
    ops = report["fused_ops"]
    click.echo(f"wrote {out_dir} ({report['precision']}, {report['deploy_config']['optimize']}): "
               f"Attention={ops['Attention'] + ops['QAttention']} SkipLayerNorm={ops['SkipLayerNormalization']} "
               f"parity max|diff|={max(c['max_abs_diff'] for c in report['parity']['cases']):.2e}")
    if report["metric_check"]:
        m = report["metric_check"]
        click.echo(f"{m['task']} {m['metric']}: {100 * m['before']:.2f} -> {100 * m['after']:.2f} "
                   f"(drop {m['drop_points']:.2f} points)")
    if report["latency_measured"]:
        lat = report["latency_measured"]
        line = f"latency b{lat['batch']} s{lat['seq_len']} {lat['threads']} threads: {lat['median_ms']:.2f} ms"
        if report["latency_predicted"]:
            line += f" (table predicts {report['latency_predicted']['predicted_ms']:.2f} ms)"
        click.echo(line)


@click.command("bench")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--seq", type=int, default=128, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--rounds", type=int, default=10, show_default=True, help="Interleaved rounds.")
@click.option("--block", type=int, default=5, show_default=True, help="Timed calls per model per round.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write rows as JSON.")
@click.option("--table", type=click.Path(path_type=Path), default=None, help="Latency table: add predicted_ms.")
def bench(paths: tuple[Path, ...], batch: int, seq: int, threads: int, device: str, rounds: int, block: int,
          json_out: Path | None, table: Path | None) -> None:
    """Time PATHS (Hugging Face folders in PyTorch eager, ONNX folders in ONNX Runtime) side by side,
    interleaved in one process. The first PATH is the baseline of the speedup column (e.g. the teacher)."""
    from kdnas_deploy.export.bench import BenchConfig, format_rows, run_bench
    from kdnas_deploy.io import atomic_write_json

    cfg = BenchConfig(batch=batch, seq=seq, threads=threads, device=device, rounds=rounds, block=block)
    rows = run_bench(list(paths), cfg, table=table)
    click.echo(format_rows(rows))
    if json_out is not None:
        atomic_write_json(json_out, rows)
        click.echo(f"wrote {json_out}", err=True)
