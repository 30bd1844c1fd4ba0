"""``kdnas-deploy export`` and ``bench``: thin commands over :mod:`kdnas_deploy.export` (heavy imports inside)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from kdnas_deploy.cli import options as o

log = logging.getLogger(__name__)


@click.command("export")
@click.argument("model_dir", type=click.Path(path_type=Path))
@o.out_option(kind="dir", dest="out_dir", help="Output ONNX folder.")
@click.option(
    "--optimize",
    type=click.Choice(["none", "O1", "O2", "O3"]),
    default="O2",
    show_default=True,
    help="ORTOptimizer level (O2: transformer fusions).",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8"]),
    default="none",
    show_default=True,
    help="Dynamic int8 quantization (CPU).",
)
@click.option(
    "--int8-scheme",
    type=click.Choice(["per_channel_matmul", "per_tensor_all_ops"]),
    default="per_channel_matmul",
    show_default=True,
    help="Dynamic int8 scheme (with --quantize int8).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Device the ONNX model is optimized for and measured on.",
)
@click.option("--fp16", is_flag=True, help="fp16 graph (with --device cuda).")
@click.option(
    "--backend",
    type=click.Choice(["cpu-ort", "cpu-openvino", "cuda-ort"]),
    default=None,
    help="Runtime the folder is validated and measured on [default: the device's]; cpu-openvino also writes the "
    "OpenVINO IR (openvino_model.xml/.bin; the openvino extra).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "int8", "fp16", "bf16"]),
    default=None,
    help="Precision, in the words of `latency build` (int8 = --quantize int8: ORT dynamic int8, or with "
    "--backend cpu-openvino NNCF's int8 of the IR, calibrated on --metric-task's train split; fp16 = --fp16; "
    "bf16: cpu-openvino on a CPU with avx512_bf16 or AMX).",
)
@o.task_option(
    required=False,
    help="Task whose dev-set metric is checked before/after export (e.g. sst2); "
    "required with --quantize int8. " + o.TASK_HELP,
    name="--metric-task",
    dest="task",
)
@o.hidden_alias("--task", "task", help="Old name of --metric-task.")
@o.data_dir_option(help="GLUE root folder for --metric-task; default $KDNAS_GLUE_DIR.")
@click.option(
    "--max-metric-drop",
    type=o.NonNegativeFloat,
    default=1.0,
    show_default=True,
    help="Largest allowed drop of the task metric, in points (x100).",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0.0, 1.0),
    default=0.9,
    show_default=True,
    help="int8: smallest share of dev inputs (of the parity sentences without --metric-task) on which the "
    "export predicts what PyTorch predicts (argmax; sign about the mean for regression).",
)
@click.option("--max-eval-examples", type=o.Count, default=None, help="Evaluate on the first N dev rows only.")
@click.option(
    "--atol", type=o.NonNegativeFloat, default=None, help="Parity tolerance on logits (default per precision)."
)
@click.option(
    "--rtol", type=o.NonNegativeFloat, default=None, help="Relative parity tolerance (default per precision)."
)
@o.threads_option(help="Threads for the measured latency " + o.THREADS_DEFAULT)
@o.batch_option(name="--bench-batch", help="Batch size of the measured latency.")
@o.seq_option(name="--bench-seq", help="Sequence length of the measured latency.")
@click.option(
    "--bench-reps",
    type=o.Count0,
    default=30,
    show_default=True,
    help="Timed calls of the latency measurement; 0 skips it.",
)
@click.option("--table", type=o.ExistingPath(dir_okay=False), default=None, help="Latency table for the prediction.")
@click.option(
    "--tokenizer", type=o.ExistingPath(file_okay=False), default=None, help="Tokenizer folder when MODEL_DIR has none."
)
@o.force_option("Replace a non-empty --out; accept a metric drop beyond the limit.")
def export(
    model_dir: Path,
    out_dir: Path,
    optimize: str,
    quantize: str,
    int8_scheme: str,
    device: str,
    fp16: bool,
    backend: str | None,
    precision: str | None,
    task: str | None,
    data_dir: Path | None,
    max_metric_drop: float,
    min_agreement: float,
    max_eval_examples: int | None,
    atol: float | None,
    rtol: float | None,
    threads: int,
    bench_batch: int,
    bench_seq: int,
    bench_reps: int,
    table: Path | None,
    tokenizer: Path | None,
    force: bool,
) -> None:
    """Export MODEL_DIR (a Hugging Face sequence classifier) to an optimized ONNX folder, validated against
    PyTorch, with an export report (fused operators, sizes, parity, metric, measured/predicted latency)."""
    from kdnas_deploy.export.exporter import ExportOptions, export_model

    quantize, fp16, bf16 = _precision_flags(precision, quantize, fp16)
    opts = ExportOptions(
        optimize=optimize,
        quantize=quantize,
        int8_scheme=int8_scheme,
        device=device,
        fp16=fp16,
        backend=backend,
        bf16=bf16,
        task=task,
        data_dir=str(data_dir) if data_dir else None,
        max_metric_drop=max_metric_drop,
        min_agreement=min_agreement,
        max_eval_examples=max_eval_examples,
        atol=atol,
        rtol=rtol,
        threads=threads,
        bench_batch=bench_batch,
        bench_seq=bench_seq,
        bench_reps=bench_reps,
        table=str(table) if table else None,
        tokenizer=str(tokenizer) if tokenizer else None,
        force=force,
    )
    report = export_model(model_dir, out_dir, opts, log=log.info)
    ops = report["fused_ops"]
    ir = f", OpenVINO IR {report['openvino']['ir']}" if report.get("openvino") else ""
    click.echo(
        f"wrote {out_dir} ({report['backend']} {report['precision']}, {report['deploy_config']['optimize']}{ir}): "
        f"Attention={ops['Attention'] + ops['QAttention']} SkipLayerNorm={ops['SkipLayerNormalization']} "
        f"parity max|diff|={max(c['max_abs_diff'] for c in report['parity']['cases']):.2e}"
    )
    if report["metric_check"]:
        m = report["metric_check"]
        click.echo(
            f"{m['task']} {m['metric']}: {100 * m['before']:.2f} -> {100 * m['after']:.2f} "
            f"(drop {m['drop_points']:.2f} points)"
        )
    if report.get("agreement"):
        a = report["agreement"]
        click.echo(
            f"prediction agreement with PyTorch ({a['kind']}, {a['source']}): {100 * a['value']:.1f}% of "
            f"{a['examples']} (min {100 * a['min_agreement']:.1f}%{'' if a['judged'] else ', not judged'})"
        )
    if report["latency_measured"]:
        lat = report["latency_measured"]
        line = f"latency b{lat['batch']} s{lat['seq_len']} {lat['threads']} threads: {lat['median_ms']:.2f} ms"
        if report["latency_predicted"]:
            line += f" (table predicts {report['latency_predicted']['predicted_ms']:.2f} ms)"
        click.echo(line)


def _precision_flags(precision: str | None, quantize: str, fp16: bool) -> tuple[str, bool, bool]:
    """``--precision`` as (quantize, fp16, bf16); a UsageError when it contradicts ``--quantize``/``--fp16``."""
    if precision is None:
        return quantize, fp16, False
    want = ({"int8": "int8"}.get(precision, "none"), precision == "fp16")
    if (quantize != "none" and quantize != want[0]) or (fp16 and not want[1]):
        raise click.UsageError(f"--precision {precision} contradicts --quantize {quantize}"
                               f"{' --fp16' if fp16 else ''}")  # fmt: skip
    return want[0], want[1], precision == "bf16"


@click.command("bench")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@o.batch_option()
@o.seq_option()
@o.threads_option()
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Device the models run on."
)
@click.option("--rounds", type=o.Count, default=10, show_default=True, help="Interleaved rounds.")
@click.option("--block", type=o.Count, default=5, show_default=True, help="Timed calls per model per round.")
@o.json_option(help="Write the rows as JSON to this file.", dest="json_out")
@click.option("--table", type=o.ExistingPath(dir_okay=False), default=None, help="Latency table: add predicted_ms.")
@click.option(
    "--end-to-end",
    "end_to_end",
    is_flag=True,
    help="Replay real dev-set texts of --task: tokenizer + inputs + session per request, unpadded (ONNX folders).",
)
@o.task_option(required=False, help="Task whose dev texts --end-to-end replays. " + o.TASK_HELP)
@o.data_dir_option()
@click.option(
    "--concurrency", type=o.Threads, default=1, show_default=True,
    help="Client threads sharing one session (--end-to-end); its intra-op threads are --threads / N.",
)  # fmt: skip
@click.option("--requests", type=o.Count, default=200, show_default=True, help="Requests replayed (--end-to-end).")
@click.option(
    "--tokenizer", type=o.ExistingPath(file_okay=False), default=None, help="Tokenizer folder when a PATH has none."
)
@click.option(
    "--backend",
    type=click.Choice(["cpu-ort", "cpu-openvino"]),
    default=None,
    help="Runtime of every ONNX folder: cpu-ort or cpu-openvino (the folder's IR, at its export's precision). "
    "Default: each folder's own export backend (export_report.json), so an OpenVINO export runs on its IR.",
)
@click.option(
    "--peers",
    is_flag=True,
    help="PATHS are TEACHER STUDENT (Hugging Face folders): time every runtime a user could pick for both "
    "(PyTorch, ORT fp32/int8, OpenVINO f32/bf16, plain ORT/OpenVINO) interleaved; report the student's speedup "
    "over the teacher on the teacher's fastest runtime.",
)
@click.option("--quick", is_flag=True, help="With --peers: 2 short rounds at seq 32 (a smoke run, no timing).")
@click.option(
    "--deployable", default="fp32,bf16", show_default=True,
    help="With --peers: student precisions the headline may deploy (of fp32, bf16, int8). Add int8 only for a "
    "student whose int8 export passed its dev-metric check (export --metric-task, or run with quantize: int8).",
)  # fmt: skip
def bench(
    paths: tuple[Path, ...],
    batch: int,
    seq: int,
    threads: int,
    device: str,
    rounds: int,
    block: int,
    json_out: Path | None,
    table: Path | None,
    end_to_end: bool,
    task_name: str | None,
    data_dir: Path | None,
    concurrency: int,
    requests: int,
    tokenizer: Path | None,
    backend: str | None,
    peers: bool,
    quick: bool,
    deployable: str,
) -> None:
    """Time PATHS (Hugging Face folders in PyTorch eager, ONNX folders in ONNX Runtime) side by side,
    interleaved in one process. The first PATH is the baseline of the speedup column (e.g. the teacher).
    With --end-to-end, serve real dev-set requests of --task through tokenizer and session instead."""
    from kdnas_deploy.io import atomic_write_json

    if peers:
        doc = _bench_peers(paths, batch, seq, threads, device, rounds, block, quick, deployable)
        if json_out is not None:
            atomic_write_json(json_out, doc)
            click.echo(f"wrote {json_out}", err=True)
        return
    if quick:
        raise click.UsageError("--quick goes with --peers")
    if deployable != "fp32,bf16":
        raise click.UsageError("--deployable goes with --peers")
    if end_to_end:
        rows = _bench_e2e(paths, task_name, data_dir, concurrency, requests, threads, device, tokenizer)
    else:
        from kdnas_deploy.export.bench import BenchConfig, format_rows, run_bench

        cfg = BenchConfig(batch=batch, seq=seq, threads=threads, device=device, rounds=rounds, block=block,
                          backend=backend)  # fmt: skip
        rows = run_bench(list(paths), cfg, table=table)
        click.echo(format_rows(rows))
    if json_out is not None:
        atomic_write_json(json_out, rows)
        click.echo(f"wrote {json_out}", err=True)


def _bench_peers(paths: tuple[Path, ...], batch: int, seq: int, threads: int, device: str, rounds: int, block: int,
                 quick: bool, deployable: str) -> dict[str, Any]:  # fmt: skip
    from kdnas_deploy.export.bench import BenchConfig
    from kdnas_deploy.export.peers import format_peers, quick_config, run_peers

    if len(paths) != 2:
        raise click.UsageError(f"--peers takes two PATHS, TEACHER STUDENT (got {len(paths)})")
    if device != "cpu":
        raise click.UsageError("--peers compares the CPU runtimes (--device cpu)")
    cfg = quick_config(threads) if quick else BenchConfig(batch=batch, seq=seq, threads=threads, rounds=rounds,
                                                          block=block)  # fmt: skip
    doc = run_peers(paths[0], paths[1], cfg, deployable=[d.strip() for d in deployable.split(",") if d.strip()])
    click.echo(format_peers(doc))
    return doc


def _bench_e2e(paths: tuple[Path, ...], task_name: str | None, data_dir: Path | None, concurrency: int,
               requests: int, threads: int, device: str, tokenizer: Path | None) -> list[dict[str, Any]]:  # fmt: skip
    from kdnas_deploy.export.e2e import E2EConfig, format_e2e, run_e2e

    if not task_name:
        raise click.UsageError("--end-to-end needs --task (the dev texts it replays)")
    cfg = E2EConfig(task=task_name, data_dir=str(data_dir) if data_dir else None, requests=requests,
                    concurrency=concurrency, threads=threads, device=device,
                    tokenizer=str(tokenizer) if tokenizer else None)  # fmt: skip
    rows = run_e2e(list(paths), cfg)
    click.echo(format_e2e(rows))
    return rows
