"""``bench --peers``: every runtime a user could pick for the same teacher and student, in one interleaved run.

Issue 18 measured, on a Xeon with AMX, that OpenVINO bf16 runs the MiniLM-L6 teacher 3.4x faster than the
ONNX Runtime fp32 O2 path we ship, so "student vs teacher on the same runtime" overstates what distillation
buys. This bench times, interleaved in one process (:func:`kdnas_deploy.export.bench.interleave`):

* PyTorch eager fp32, and bf16 where the CPU computes bf16 (avx512_bf16/AMX);
* ONNX Runtime fp32 O2 and dynamic int8 (the ``cpu-ort`` deployed path);
* OpenVINO f32, and bf16 where the CPU has it, on the IR of the O2 graph (the ``cpu-openvino`` path), and
  OpenVINO int8: that IR quantised by NNCF (extra ``[openvino]``), to measure whether it pays on this CPU;
* for the student, *plain* ONNX Runtime and *plain* OpenVINO on the same ONNX file (library defaults, only
  threads and the precision set): our path must not be slower than them.

A peer that cannot run here is a row with ``skipped`` (the reason), never a missing row. The headline is the
deployed student's speedup over the teacher on the teacher's *fastest* runtime.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ExportError
from kdnas_deploy.export.bench import BenchConfig, interleave
from kdnas_deploy.export.folders import inspect_folder, load_hf_classifier
from kdnas_deploy.runtime.deploy import DeployConfig, deploy, quiet_loggers
from kdnas_deploy.runtime.inputs import DEFAULT_VOCAB, model_inputs
from kdnas_deploy.runtime.runners import Runner, ort_runner, torch_runner
from kdnas_deploy.runtime.timing import Timing

log = logging.getLogger(__name__)

PEERS_SCHEMA_VERSION = 1
TARGET_VS_TEACHER_FASTEST = 3.0  # the searched student vs the teacher on the teacher's fastest runtime
TARGET_PATH_VS_ORT_FP32 = 2.0  # the student on the chosen path vs the same student on ORT fp32 O2 (bf16 CPUs)
PLAIN_TOLERANCE = 0.03  # "never slower than plain": within 3% (the spread of an interleaved median here)
NO_BF16 = "bf16 not supported on this CPU (no avx512_bf16 / amx_bf16 flag)"
DEPLOYABLE = ("fp32", "bf16")  # the student's rows the "deployed" default picks from (int8 is judged by the
# dev metric, which this bench does not measure: pass deployable=(..., "int8") for a student whose int8 export
# passed its dev-metric check, e.g. the one `run` exported with export.quantize: int8)
PRECISIONS = ("fp32", "bf16", "int8")


@dataclass(frozen=True)
class Peer:
    """One (model, runtime, precision) of the bench; ``build`` opens its runner, ``skipped`` says why not."""

    role: str  # teacher | student
    runtime: str  # pytorch | onnxruntime | openvino
    precision: str
    kind: str  # kdnas (the deployed paths) | eager (PyTorch) | plain (library defaults on our file)
    build: Callable[[], Runner] | None = None
    skipped: str | None = None

    @property
    def label(self) -> str:
        return f"{self.role}/{self.runtime}-{self.precision}" + ("-plain" if self.kind == "plain" else "")


def quick_config(threads: int = 2) -> BenchConfig:
    """For tests and smoke runs: 2 rounds of 2 calls at seq 32 (seconds, not minutes; timings meaningless)."""
    return BenchConfig(batch=1, seq=32, threads=threads, rounds=2, block=2, warmup=1, pause_ms=20.0, block_warmup=1)


def _bf16_reason() -> str | None:
    from kdnas_deploy.runtime.openvino import bf16_flags

    return None if bf16_flags() else NO_BF16


def _openvino_reason() -> str | None:
    from kdnas_deploy.runtime.openvino import INSTALL_HINT, openvino_available

    return None if openvino_available() else f"openvino not installed ({INSTALL_HINT})"


def _torch_peer(role: str, folder: Path, cfg: BenchConfig, precision: str, inputs: dict[str, Any]) -> Peer:
    def build() -> Runner:
        import torch

        torch.set_num_threads(cfg.threads)
        model = load_hf_classifier(folder)
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        return torch_runner(model, inputs)

    reason = _bf16_reason() if precision == "bf16" else None
    return Peer(role, "pytorch", precision, "eager", None if reason else build, reason)


def _ort_peer(role: str, onnx: Path, cfg: BenchConfig, precision: str, inputs: dict[str, Any], plain: bool) -> Peer:
    def build() -> Runner:
        import onnxruntime as ort

        from kdnas_deploy.runtime.session import make_session

        if plain:  # the library's defaults, the thread count aside
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = cfg.threads
            sess = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
        else:
            sess = make_session(onnx, "cpu", cfg.threads)
        return ort_runner(sess, inputs)

    return Peer(role, "onnxruntime", precision, "plain" if plain else "kdnas", build)


def _ov_peer(role: str, path: Path, cfg: BenchConfig, precision: str, inputs: dict[str, Any], plain: bool) -> Peer:
    def build() -> Runner:
        from kdnas_deploy.runtime.openvino import OV_PRECISIONS, open_openvino, ov_runner, require_openvino

        if not plain:
            return ov_runner(open_openvino(path, cfg.threads, precision), inputs)
        ov = require_openvino()  # plain: read the ONNX file, only threads and the precision set
        core = ov.Core()
        compiled = core.compile_model(
            str(path),
            "CPU",
            {"INFERENCE_NUM_THREADS": cfg.threads, "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]},
        )
        request = compiled.create_infer_request()
        feed = {p.get_any_name(): inputs[p.get_any_name()] for p in compiled.inputs}
        return Runner(lambda: request.infer(feed), keep=[compiled, request, feed])

    reason = _openvino_reason() or (_bf16_reason() if precision == "bf16" else None)
    return Peer(role, "openvino", precision, "plain" if plain else "kdnas", None if reason else build, reason)


CALIBRATION_FEEDS = 32  # NNCF's statistics for the timing rows: seeded random requests of the bench's shape


def _ov_int8_peer(role: str, ir: Path | None, work: Path, cfg: BenchConfig, inputs: dict[str, Any],
                  vocab: int) -> Peer:  # fmt: skip
    """OpenVINO int8: the fp32 IR quantised by NNCF on seeded random requests (a timing row: a model served for
    a task would be calibrated on its texts; the kernels timed are the same). Built when the bench starts."""
    from kdnas_deploy.runtime.openvino import nncf_reason

    def build() -> Runner:
        from kdnas_deploy.runtime.openvino import open_openvino, ov_runner, quantize_ir, random_calibration

        assert ir is not None
        feeds = random_calibration(CALIBRATION_FEEDS, cfg.batch, cfg.seq, vocab)  # quantize_ir keeps the model's inputs
        int8 = quantize_ir(ir, feeds, work / role / "openvino-int8")
        return ov_runner(open_openvino(int8, cfg.threads, "int8"), inputs)

    reason = _openvino_reason() or nncf_reason()
    return Peer(role, "openvino", "int8", "kdnas", None if reason or ir is None else build, reason)


def prepare_peers(role: str, hf_dir: Path, work: Path, cfg: BenchConfig, plain: bool) -> list[Peer]:
    """Deploy ``hf_dir`` (fp32 O2, int8, the IR) into ``work`` and list its peers."""
    from kdnas_deploy.runtime.openvino import convert_to_ir

    folder = inspect_folder(hf_dir)
    if folder.runtime != "pytorch":
        raise ExportError(f"bench --peers needs Hugging Face folders (teacher, student); {hf_dir} is an ONNX folder")
    vocab = int(folder.config.get("vocab_size", DEFAULT_VOCAB))
    inputs = model_inputs(cfg.batch, cfg.seq, vocab)
    if int(folder.config.get("type_vocab_size", 2) or 0) < 1:
        inputs.pop("token_type_ids")
    paths = {}
    for name, config in (("fp32", DeployConfig.cpu_fp32()), ("int8", DeployConfig.cpu_int8())):
        with quiet_loggers():
            paths[name] = deploy(load_hf_classifier(hf_dir), work / role / name, config, consume=True).onnx_path
    ir = None
    if _openvino_reason() is None:
        ir = convert_to_ir(paths["fp32"], paths["fp32"].parent)
    peers = [_torch_peer(role, hf_dir, cfg, p, inputs) for p in ("fp32", "bf16")]
    peers += [_ort_peer(role, paths[p], cfg, p, inputs, plain=False) for p in ("fp32", "int8")]
    peers += [_ov_peer(role, ir or paths["fp32"], cfg, p, inputs, plain=False) for p in ("fp32", "bf16")]
    peers.append(_ov_int8_peer(role, ir, work, cfg, inputs, vocab))
    if plain:
        peers += [_ort_peer(role, paths[p], cfg, p, inputs, plain=True) for p in ("fp32", "int8")]
        peers += [_ov_peer(role, paths["fp32"], cfg, p, inputs, plain=True) for p in ("fp32", "bf16")]
    return peers


def _row(peer: Peer, samples: list[float] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"label": peer.label, "role": peer.role, "runtime": peer.runtime,
                           "precision": peer.precision, "kind": peer.kind}  # fmt: skip
    if samples is None:
        return {**row, "skipped": peer.skipped}
    t = Timing.from_samples(samples)
    return {**row, "median_ms": round(t.median_ms, 4), "p10_ms": round(t.p10_ms, 4), "p90_ms": round(t.p90_ms, 4),
            "spread_pct": round(t.spread_pct, 2), "reps": t.reps}  # fmt: skip


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _fingerprint() -> dict[str, Any]:
    """The machine and the runtimes' versions (the CPU model as ``/proc/cpuinfo`` names it)."""
    import os
    import platform

    import onnxruntime
    import torch

    from kdnas_deploy.runtime.devices import default_threads
    from kdnas_deploy.runtime.openvino import bf16_flags, cpu_flags, openvino_version

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "physical_cores": default_threads(), "logical_cores": os.cpu_count(),
            "isa_flags": [f for f in ISA_FLAGS if f in cpu_flags()], "bf16_flags": bf16_flags(),
            "onnxruntime_version": onnxruntime.__version__, "torch_version": torch.__version__,
            "openvino_version": openvino_version(), "python_version": platform.python_version()}  # fmt: skip


def run_peers(teacher_dir: str | Path, student_dir: str | Path, cfg: BenchConfig, workdir: str | Path | None = None,
              progress: bool = True, deployable: Sequence[str] = DEPLOYABLE) -> dict[str, Any]:  # fmt: skip
    """Deploy both models every way, time every peer that can run here interleaved, and judge the targets.

    ``deployable``: the student precisions the headline's "deployed student" is chosen from (the fastest of
    them among our paths)."""
    bad = [d for d in deployable if d not in PRECISIONS]
    if bad or not deployable:
        raise ExportError(f"--deployable: {', '.join(bad) or 'nothing'} given, choose from {', '.join(PRECISIONS)}")
    with tempfile.TemporaryDirectory(prefix="kdnas-peers-", dir=workdir) as tmp:
        peers = prepare_peers("teacher", Path(teacher_dir), Path(tmp), cfg, plain=False)
        peers += prepare_peers("student", Path(student_dir), Path(tmp), cfg, plain=True)
        live = [p for p in peers if p.build is not None]
        if not any(p.role == "student" and p.kind == "kdnas" and p.precision in deployable for p in live):
            raise ExportError(f"--deployable {','.join(deployable)}: no such student path can run here")
        log.info("timing %d peers interleaved (%d skipped)", len(live), len(peers) - len(live))
        runners = [p.build() for p in live]  # type: ignore[misc]
        samples = dict(zip((p.label for p in live), interleave(runners, cfg, progress), strict=True))
        for r in runners:
            r.close()
    rows = [_row(p, samples.get(p.label)) for p in peers]
    return {"schema_version": PEERS_SCHEMA_VERSION, "kind": "kdnas-peers-bench",
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "teacher": str(teacher_dir), "student": str(student_dir),
            "config": asdict(replace(cfg)), "machine": _fingerprint(), "rows": rows,
            "deployable": list(deployable), **judge(rows, deployable)}  # fmt: skip


def _timed(rows: list[dict[str, Any]], **match: str) -> list[dict[str, Any]]:
    return [r for r in rows if "median_ms" in r and all(r.get(k) == v for k, v in match.items())]


def judge(rows: list[dict[str, Any]], deployable: Sequence[str] = DEPLOYABLE) -> dict[str, Any]:
    """The headline ratios and the issue's bench targets (``value``, ``target``, ``met``; ``met`` None with a
    ``note`` where the target does not apply here)."""
    teacher = min(_timed(rows, role="teacher"), key=lambda r: r["median_ms"])
    ours = [r for r in _timed(rows, role="student", kind="kdnas") if r["precision"] in deployable]
    deployed = min(ours, key=lambda r: r["median_ms"])
    ort_fp32 = _timed(rows, role="student", kind="kdnas", runtime="onnxruntime", precision="fp32")[0]
    same = _timed(rows, role="teacher", kind="kdnas", runtime=deployed["runtime"], precision=deployed["precision"])
    vs_fastest = teacher["median_ms"] / deployed["median_ms"]
    path = ort_fp32["median_ms"] / deployed["median_ms"]
    has_bf16 = any(r["precision"] == "bf16" for r in _timed(rows, role="student"))
    worst = None
    for plain in _timed(rows, role="student", kind="plain"):
        mine = _timed(rows, role="student", kind="kdnas", runtime=plain["runtime"], precision=plain["precision"])
        if mine:
            ratio = mine[0]["median_ms"] / plain["median_ms"]
            worst = ratio if worst is None or ratio > worst else worst
    targets = {
        "student_vs_teacher_fastest": {"value": round(vs_fastest, 3), "target": TARGET_VS_TEACHER_FASTEST,
                                       "met": vs_fastest >= TARGET_VS_TEACHER_FASTEST},
        "student_path_vs_student_ort_fp32": {"value": round(path, 3), "target": TARGET_PATH_VS_ORT_FP32,
                                             "met": path >= TARGET_PATH_VS_ORT_FP32 if has_bf16 else None,
                                             **({} if has_bf16 else {"note": f"target is for bf16 CPUs: {NO_BF16}"})},
        "ours_over_plain_worst": {"value": None if worst is None else round(worst, 3), "target": 1.0,
                                  "tolerance": PLAIN_TOLERANCE,
                                  "met": None if worst is None else worst <= 1.0 + PLAIN_TOLERANCE},
    }  # fmt: skip
    headline = {"deployed_student": deployed["label"], "teacher_fastest": teacher["label"],
                "speedup_vs_teacher_fastest": round(vs_fastest, 3),
                "speedup_vs_teacher_same_runtime": round(same[0]["median_ms"] / deployed["median_ms"], 3)
                if same else None}  # fmt: skip
    return {"headline": headline, "targets": targets}


def format_peers(doc: dict[str, Any]) -> str:
    """The rows as a plain-text table and the targets, one line each."""
    lines = [f"{'peer':<40} {'median ms':>10} {'p10-p90 ms':>16} {'spread %':>9}"]
    for r in doc["rows"]:
        if "median_ms" in r:
            lines.append(f"{r['label']:<40} {r['median_ms']:>10.3f} {r['p10_ms']:>7.3f}-{r['p90_ms']:<8.3f} "
                         f"{r['spread_pct']:>9.1f}")  # fmt: skip
        else:
            lines.append(f"{r['label']:<40} skipped: {r['skipped']}")
    h = doc["headline"]
    lines.append(f"deployed student {h['deployed_student']} vs teacher's fastest {h['teacher_fastest']}: "
                 f"{h['speedup_vs_teacher_fastest']:.2f}x")  # fmt: skip
    for name, t in doc["targets"].items():
        lines.append(f"target {name}: {t['value']} (target {t['target']}) met={t['met']}")
    return "\n".join(lines)
