"""The runtime an export is validated and measured on: ONNX Runtime (``cpu-ort``, ``cuda-ort``) or OpenVINO
(``cpu-openvino``, which also writes the OpenVINO IR beside the ONNX file).

Parity, the dev-metric check and the latency measurement run through the path the export is for: the
OpenVINO compiled model at its inference precision for ``cpu-openvino``, not the ONNX Runtime session, since
that is what a user of the folder's IR runs (bf16 moves logits like int8 does, so it is judged like int8:
prediction agreement and the dev metric).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import DeviceError, ExportError
from kdnas_deploy.runtime.inputs import model_inputs
from kdnas_deploy.runtime.runners import Runner, ort_runner
from kdnas_deploy.runtime.session import make_session

# the latency backends whose artifact is an ONNX folder, and their device (the names of latency.backends; export
# reads no latency module but the table)
EXPORT_BACKENDS = {"cpu-ort": "cpu", "cpu-openvino": "cpu", "cuda-ort": "cuda"}
DEFAULT_BACKEND = {"cpu": "cpu-ort", "cuda": "cuda-ort"}
OPENVINO = "cpu-openvino"
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")  # int8: the IR quantised by NNCF on the task's train texts
# Train rows NNCF calibrates a served int8 IR on (fewer when the split is smaller). NNCF's default subset is 300;
# measured on the GLUE table's int8 students (this EPYC, head in fp32), 1,000 rows kept more of the fp32 dev
# metric: CoLA MCC 15.18 -> 16.25 (fp32 16.31), SST-2 accuracy 87.39 -> 87.61 (fp32 87.39), STS-B pearson
# 76.47 -> 76.22 (fp32 76.34); calibration took 4-6 s instead of 2-3 s.
CALIBRATION_EXAMPLES = 1000


def resolve_export_backend(device: str, backend: str | None, precision: str) -> str:
    """The backend an export is for (the device's default when None); ExportError for one that serves no
    ONNX folder, runs on another device, or does not serve the precision."""
    name = backend or DEFAULT_BACKEND.get(device, "")
    if name not in EXPORT_BACKENDS:
        raise ExportError(f"--backend {name or backend} serves no ONNX folder (choose from "
                          f"{', '.join(EXPORT_BACKENDS)})")  # fmt: skip
    if EXPORT_BACKENDS[name] != device:
        raise ExportError(f"--backend {name} runs on {EXPORT_BACKENDS[name]}, not on --device {device}")
    if precision == "bf16" and name != OPENVINO:
        raise ExportError(f"bf16 is served by --backend {OPENVINO} (OpenVINO's CPU plugin), not {name}")
    if name == OPENVINO and precision not in OPENVINO_PRECISIONS:
        raise ExportError(f"--backend {OPENVINO} serves {', '.join(OPENVINO_PRECISIONS)} (OpenVINO's inference "
                          f"precisions of the fp32 graph, and NNCF's int8 of it), not {precision}")  # fmt: skip
    return name


def require_backend(backend: str, precision: str) -> None:
    """DeviceError before any work when the backend cannot run here (OpenVINO missing, bf16 on a CPU without
    avx512_bf16/AMX, int8 without nncf)."""
    if backend == OPENVINO:
        from kdnas_deploy.runtime.openvino import nncf_reason, require_openvino, require_precision

        require_openvino("--backend cpu-openvino")
        require_precision(precision, "--backend cpu-openvino")
        reason = nncf_reason() if precision == "int8" else None
        if reason:
            raise DeviceError(f"--backend cpu-openvino {reason}")


Calibration = Callable[[], list[dict[str, Any]]]


def write_served_artifact(backend: str, onnx_path: Path, precision: str = "fp32",
                          calibration: Calibration | None = None) -> dict[str, Any] | None:  # fmt: skip
    """What the backend serves beyond the ONNX file: the OpenVINO IR for ``cpu-openvino`` (None otherwise); at
    int8 the IR is NNCF's quantisation of the fp32 one on ``calibration()``'s inputs, and the ONNX file stays
    the fp32 graph it came from."""
    if backend != OPENVINO:
        return None
    from kdnas_deploy.runtime.openvino import (
        FP32_SCOPE,
        IR_FILE,
        IR_WEIGHTS,
        convert_to_ir,
        openvino_version,
        quantization_record,
        quantize_ir,
    )

    folder = onnx_path.parent
    info: dict[str, Any] = {"ir": IR_FILE, "weights": IR_WEIGHTS, "openvino_version": openvino_version(),
                            "source": onnx_path.name}  # fmt: skip
    if precision != "int8":
        convert_to_ir(onnx_path, folder)
        return info
    if calibration is None:
        raise ExportError("OpenVINO int8 needs calibration data: give the task (--metric-task)")
    feeds = calibration()
    fp32_dir = folder / ".ir-fp32"
    fp32_dir.mkdir(exist_ok=True)
    try:
        quantize_ir(convert_to_ir(onnx_path, fp32_dir), feeds, folder)
    finally:
        shutil.rmtree(fp32_dir, ignore_errors=True)
    return {**info, "quantization": {**quantization_record(len(feeds), "the task's train split"),
                                     "fp32_scope": list(FP32_SCOPE)}}


def calibration_feeds(tokenizer: Any, task: str, data_dir: str | None, max_length: int,
                      examples: int = CALIBRATION_EXAMPLES) -> list[dict[str, Any]]:  # fmt: skip
    """Up to ``examples`` rows of the task's train split, one request each (unpadded, truncated at
    ``max_length``), as NNCF calibrates on them."""
    import numpy as np

    from kdnas_deploy.tasks import get_task
    from kdnas_deploy.tasks.lengths import task_texts

    texts = task_texts(get_task(task, data_dir), "train", limit=examples)
    if not texts:
        raise ExportError(f"task {task!r} has no train rows to calibrate OpenVINO int8 on")
    out = []
    for text in texts:
        enc = tokenizer(*text, truncation=True, max_length=max_length, return_tensors="np")
        out.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    return out


def open_served(backend: str, folder: Path, device: str, threads: int, precision: str) -> Any:
    """A session of the served artifact with ``get_inputs()``/``run(None, feed)``: ONNX Runtime on the ONNX
    file, or OpenVINO on the IR at ``precision``."""
    if backend == OPENVINO:
        from kdnas_deploy.runtime.openvino import open_openvino

        return open_openvino(folder, threads, precision)
    return make_session(folder / "model.onnx", device, threads)


def served_runner(backend: str, session: Any, batch: int, seq: int, vocab_size: int, device: str) -> Runner:
    inputs = model_inputs(batch, seq, vocab_size)
    if backend == OPENVINO:
        from kdnas_deploy.runtime.openvino import ov_runner

        return ov_runner(session, inputs)
    return ort_runner(session, inputs, device)


def openvino_settings(threads: int, precision: str) -> dict[str, Any]:
    from kdnas_deploy.runtime.openvino import OpenVinoSettings

    return OpenVinoSettings(threads, precision).to_dict()
