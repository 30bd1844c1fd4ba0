"""``cpu-openvino``: OpenVINO's CPU plugin serving the deployed path's ONNX graph, converted to IR.

The graph is the one ``cpu-ort`` fp32 ships (export -> ORT O2 fusions, fp32), converted once to OpenVINO IR
(:func:`kdnas_deploy.runtime.openvino.convert_to_ir`), so ``export --backend cpu-openvino`` writes that very
IR beside the ONNX file. fp32 and bf16 are OpenVINO inference precisions of that one graph; bf16 is refused
on a CPU without avx512_bf16/AMX (see :mod:`kdnas_deploy.runtime.openvino`). int8 is that IR quantised by NNCF
(:func:`~kdnas_deploy.runtime.openvino.quantize_ir`) on seeded random requests: calibration moves activation
ranges, not the kernels a table times; an export calibrates on the task's texts. Without the ``openvino`` extra
(which brings nncf) the backend refuses with one line (:class:`~kdnas_deploy.errors.DeviceError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import DeviceError
from kdnas_deploy.latency.backends.base import DeployedBackend, deploy_student
from kdnas_deploy.runtime.deploy import DeployConfig
from kdnas_deploy.runtime.inputs import model_inputs
from kdnas_deploy.runtime.openvino import (
    IR_FILE,
    OpenVinoSettings,
    convert_to_ir,
    nncf_reason,
    open_openvino,
    openvino_version,
    ov_runner,
    quantization_record,
    quantize_ir,
    random_calibration,
    require_openvino,
    require_precision,
)
from kdnas_deploy.runtime.runners import Runner

CALIBRATION_REQUESTS = 8  # seeded random b1 s128 requests NNCF calibrates a table's int8 models on
CALIBRATION_SEQ = 128


class CpuOpenVinoBackend(DeployedBackend):
    name = "cpu-openvino"
    device = "cpu"
    precisions = ("fp32", "bf16", "int8")
    provider = "openvino-CPU"
    # one fp32 graph for all: bf16 is OpenVINO's inference precision, int8 NNCF's quantisation of its IR
    deploy_configs = {"fp32": DeployConfig.cpu_fp32(), "bf16": DeployConfig.cpu_fp32(), "int8": DeployConfig.cpu_fp32()}

    @property
    def settings(self) -> OpenVinoSettings:
        return OpenVinoSettings(threads=self.threads, precision=self.precision)

    def check_available(self) -> None:
        require_openvino()
        require_precision(self.precision)
        reason = nncf_reason() if self.precision == "int8" else None
        if reason:
            raise DeviceError(f"cpu-openvino {reason}")

    def path_config(self) -> dict[str, Any]:
        config = {"runtime": "openvino", "format": "openvino-ir", "deploy_config": self.deploy_config.to_dict()}
        if self.precision == "int8":
            config["quantization"] = quantization_record(CALIBRATION_REQUESTS, "seeded random requests")
        return config

    def machine_fingerprint(self) -> dict[str, Any]:
        from kdnas_deploy.latency.fingerprint import cpu_fingerprint

        return {**cpu_fingerprint(), "openvino_version": openvino_version()}

    def extra_fingerprint(self) -> dict[str, Any]:
        return {"openvino_config": self.settings.to_dict()}

    def prepare(self, arch: Architecture, workdir: Path, seed: int = 0) -> Path:
        """The deployed ONNX graph (reused when complete) and its IR beside it; returns the IR's path."""
        onnx_path = deploy_student(arch, workdir, self.deploy_config, seed)
        ir = Path(workdir) / IR_FILE
        if not ir.is_file():
            tmp_dir = Path(workdir) / ".ir-tmp"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            convert_to_ir(onnx_path, tmp_dir)
            (tmp_dir / "openvino_model.bin").replace(Path(workdir) / "openvino_model.bin")
            (tmp_dir / IR_FILE).replace(ir)  # the .xml last: present means complete
            tmp_dir.rmdir()
        if self.precision != "int8":
            return ir
        int8 = Path(workdir) / "int8" / IR_FILE
        if not int8.is_file():  # quantize_ir writes the .xml last
            quantize_ir(ir, random_calibration(CALIBRATION_REQUESTS, 1, CALIBRATION_SEQ), int8.parent)
        return int8

    def open(self, artifact: Path, batch: int, seq: int) -> Runner:
        session = open_openvino(artifact, self.threads, self.precision)
        return ov_runner(session, model_inputs(batch, seq), where=f"{artifact}")
