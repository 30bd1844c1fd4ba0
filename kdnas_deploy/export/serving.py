"""The runtime an export is validated and measured on: ONNX Runtime (``cpu-ort``, ``cuda-ort``) or OpenVINO
(``cpu-openvino``, which also writes the OpenVINO IR beside the ONNX file).

Parity, the dev-metric check and the latency measurement run through the path the export is for: the
OpenVINO compiled model at its inference precision for ``cpu-openvino``, not the ONNX Runtime session, since
that is what a user of the folder's IR runs (bf16 moves logits like int8 does, so it is judged like int8:
prediction agreement and the dev metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ExportError
from kdnas_deploy.runtime.inputs import model_inputs
from kdnas_deploy.runtime.runners import Runner, ort_runner
from kdnas_deploy.runtime.session import make_session

# the latency backends whose artifact is an ONNX folder, and their device (the names of latency.backends; export
# reads no latency module but the table)
EXPORT_BACKENDS = {"cpu-ort": "cpu", "cpu-openvino": "cpu", "cuda-ort": "cuda"}
DEFAULT_BACKEND = {"cpu": "cpu-ort", "cuda": "cuda-ort"}
OPENVINO = "cpu-openvino"
OPENVINO_PRECISIONS = ("fp32", "bf16")


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
                          f"precisions of the fp32 graph), not {precision}")  # fmt: skip
    return name


def require_backend(backend: str, precision: str) -> None:
    """DeviceError before any work when the backend cannot run here (OpenVINO missing, bf16 on a CPU without
    avx512_bf16/AMX)."""
    if backend == OPENVINO:
        from kdnas_deploy.runtime.openvino import require_openvino, require_precision

        require_openvino("--backend cpu-openvino")
        require_precision(precision, "--backend cpu-openvino")


def write_served_artifact(backend: str, onnx_path: Path) -> dict[str, Any] | None:
    """What the backend serves beyond the ONNX file: the OpenVINO IR for ``cpu-openvino`` (None otherwise)."""
    if backend != OPENVINO:
        return None
    from kdnas_deploy.runtime.openvino import IR_FILE, IR_WEIGHTS, convert_to_ir, openvino_version

    convert_to_ir(onnx_path, onnx_path.parent)
    return {"ir": IR_FILE, "weights": IR_WEIGHTS, "openvino_version": openvino_version(), "source": onnx_path.name}


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
