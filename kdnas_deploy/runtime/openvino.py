"""OpenVINO on the CPU: the runtime of the ``cpu-openvino`` backend, of ``export --backend cpu-openvino`` and of
``bench``.

Why plain ``openvino`` reading our ONNX file, not ONNX Runtime's OpenVINO execution provider: that provider
ships as ``onnxruntime-openvino`` (1.24 on the index), a second package installing the import name
``onnxruntime``; it would replace the ``onnxruntime`` 1.32 of the ``cpu`` extra (the path every table prices).
``openvino`` installs beside it. And why not optimum-intel's ``OVModelForSequenceClassification`` for loading:
every optimum-intel release on the index (2.1, 2.2) needs ``optimum~=2.3`` (we pin 2.1 through optimum-onnx).
The IR ``export`` writes (``openvino_model.xml``/``.bin`` beside ``config.json``) is the layout that class
loads, so a user who has it can; here it is read with ``openvino.Core().read_model``.

Precisions: ``fp32`` and ``bf16`` are inference precisions of one fp32 graph (OpenVINO's CPU plugin converts
on the fly, ``INFERENCE_PRECISION_HINT``). OpenVINO picks bf16 *by itself* on a CPU that has it, so fp32 is
asked for explicitly; and it silently runs f32 where bf16 is asked for on a CPU without it (observed on a
Xeon with avx512_vnni but no avx512_bf16), so bf16 is refused there (:func:`require_precision`) rather than
timed as if it were bf16. ``int8`` is another graph: the fp32 IR quantised by NNCF (:func:`quantize_ir`),
compiled with the f32 hint for the ops NNCF leaves in float; an IR without NNCF's ``FakeQuantize`` ops is
refused at int8 rather than timed as if it were int8. Measured on a 2-core Xeon (AVX-512 VNNI,
``tools/results/peers.json``): the teacher 9.92 ms against 12.45 ms on ONNX Runtime's dynamic int8, the
student 4.12 against 5.77 ms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.errors import DeviceError, ModelError
from kdnas_deploy.runtime.inputs import feed_for
from kdnas_deploy.runtime.runners import Runner

log = logging.getLogger(__name__)

IR_FILE = "openvino_model.xml"  # optimum-intel's name: OVModelForSequenceClassification loads this file
IR_WEIGHTS = "openvino_model.bin"
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # our precision -> OpenVINO's inference precision
# hint (int8: an NNCF-quantised IR; f32 for the ops it leaves in float)
INT8_OP = "FakeQuantize"  # how NNCF marks the quantised inputs of an OpenVINO model
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags that give bf16 compute on x86
INSTALL_HINT = "pip install 'kdnas-deploy[openvino]'"


def require_openvino(what: str = "the cpu-openvino backend") -> Any:
    """The ``openvino`` module; DeviceError (one line) when it is not installed or does not import."""
    try:
        import openvino
    except ImportError as exc:
        raise DeviceError(f"{what} needs OpenVINO, which is not installed here ({INSTALL_HINT}): {exc}") from None
    return openvino


def openvino_available() -> bool:
    try:
        require_openvino()
    except DeviceError:
        return False
    return True


def openvino_version() -> str | None:
    try:
        return str(require_openvino().__version__)
    except DeviceError:
        return None


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's ISA flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def bf16_flags(flags: frozenset[str] | None = None) -> list[str]:
    """The bf16 flags of this CPU (``avx512_bf16``, ``amx_bf16``); empty: no bf16 compute."""
    have = cpu_flags() if flags is None else flags
    return [f for f in BF16_FLAGS if f in have]


def require_precision(precision: str, what: str = "cpu-openvino") -> None:
    """DeviceError for a precision this CPU cannot compute in (bf16 without avx512_bf16 or AMX)."""
    if precision not in OV_PRECISIONS:
        raise DeviceError(f"{what} supports precision {', '.join(OV_PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and not bf16_flags():
        raise DeviceError(f"{what} bf16 needs a CPU with avx512_bf16 or AMX (amx_bf16); this CPU has neither "
                          "(OpenVINO would silently run f32): use precision fp32")  # fmt: skip


@dataclass(frozen=True)
class OpenVinoSettings:
    """How a model is compiled: ``threads`` inference threads, one stream, the latency hint, the inference
    precision asked for explicitly (OpenVINO's own default is bf16 on a bf16 CPU)."""

    threads: int | None = None
    precision: str = "fp32"

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                  "INFERENCE_PRECISION_HINT": OV_PRECISIONS[self.precision]}  # fmt: skip
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        return config

    def to_dict(self) -> dict[str, Any]:
        return {"device": "CPU", **self.to_config()}


def ov_reason(exc: BaseException) -> str:
    """The line of an OpenVINO exception that says what is wrong: its runtime prefixes the message with
    ``Exception from src/...cpp:N:`` lines (a corrupt ONNX file: three lines, the third "Unable to read the
    model ...")."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith("Exception from ")]
    return (said or lines or [type(exc).__name__])[0]


def convert_to_ir(onnx_path: str | Path, out_dir: str | Path) -> Path:
    """Convert an ONNX graph into OpenVINO IR (``openvino_model.xml`` + ``.bin``, fp32 weights kept: no fp16
    compression) in ``out_dir``; returns the ``.xml`` path.

    Read by the runtime's ONNX frontend (``Core.read_model``), not by the model converter
    (``openvino.convert_model``): the converter sends usage events to Google Analytics from a forked process per
    event (3 s timeout each where the network drops them) unless the user opted out, and its offline passes
    only tidy the saved graph, which the CPU plugin transforms again when it compiles. Measured (OpenVINO
    2026.4, Xeon family 6 model 167, students L=6,H=384 / L=4,H=256 / L=2,H=128): outputs bit-identical, fp32
    and after NNCF int8 (same number of ``FakeQuantize`` ops), latency within noise (12 interleaved rounds:
    13.59 vs 13.90 ms, 3.85 vs 3.83 ms; int8 4.61 vs 4.62 ms, 2.19 vs 2.21 ms), 0.12-0.31 s instead of
    0.44-0.71 s. One ``latency transfer`` of the OpenVINO fp32 table (K=10, 12 conversions) here: 64.6 -> 36.5 s,
    resident memory summed over its processes 2.79 -> 0.81 GB at peak (the forked senders count the export
    process's pages again)."""
    ov = require_openvino("--backend cpu-openvino")
    out = Path(out_dir) / IR_FILE
    try:
        model = ov.Core().read_model(str(onnx_path))
        ov.save_model(model, str(out), compress_to_fp16=False)
    except Exception as exc:  # openvino raises its own RuntimeError subclasses
        raise ModelError(f"OpenVINO cannot convert {onnx_path}: {ov_reason(exc)}") from exc
    return out


NNCF_HINT = "pip install 'kdnas-deploy[openvino]' (it brings nncf, OpenVINO's quantizer)"


def nncf_reason() -> str | None:
    """Why OpenVINO int8 (NNCF post-training quantization) cannot be built here; None when it can."""
    try:
        require_openvino()
        import nncf  # noqa: F401
    except (DeviceError, ImportError) as exc:
        return f"openvino int8 needs nncf ({NNCF_HINT}): {str(exc).splitlines()[0]}"
    return None


# Ops NNCF leaves in fp32 (``nncf.IgnoredScope`` name patterns): the task head, ``classifier`` (BERT, RoBERTa)
# and ``pre_classifier`` (DistilBERT). Measured on this EPYC (NNCF 3.4, the GLUE table's int8 STS-B student
# L=4,H=256,A=4,F=768, 300 train calibration rows): with its 256->1 regression head quantised, dev pearson
# fell 76.34 -> 69.81 (sign agreement with fp32 96.7%); with the head in fp32, 76.47 (99.8%); keeping the
# pooler in fp32 instead did not help (69.79). Cost: 1.3239 vs 1.3216 ms median (b1 s128, 2 threads,
# 30 interleaved rounds), within noise. CoLA and SST-2 students moved by less than 0.1 point either way.
# The head is found by name and, where an export renamed it (ONNX Runtime's optimizer can name the last MatMul
# after the graph output, e.g. ``logits``), as the MatMul nearest each output (:func:`head_matmuls`).
FP32_SCOPE = (".*classifier.*",)


def head_matmuls(model: Any, max_hops: int = 6) -> list[str]:
    """Friendly names of the MatMuls nearest the outputs of an OpenVINO ``model``: walking up from each output
    through non-MatMul ops (bias Add, Reshape, Convert...), the first MatMul on each path, within ``max_hops``."""
    found: list[str] = []
    for result in model.get_results():
        frontier, hops = [result], 0
        while frontier and hops < max_hops:
            nxt = []
            for op in frontier:
                for value in op.input_values():
                    node = value.get_node()
                    if node.get_type_name() == "MatMul":
                        found.append(node.get_friendly_name())
                    else:
                        nxt.append(node)
            frontier, hops = nxt, hops + 1
    return sorted(set(found))


def nncf_int8(model: Any, feeds: list[dict[str, np.ndarray]], head_fp32: bool = True, where: Any = "the model") -> Any:
    """NNCF's post-training int8 of an in-memory OpenVINO ``model`` (transformer preset) calibrated on ``feeds``;
    with ``head_fp32`` the task head stays in fp32 (:data:`FP32_SCOPE`, :func:`head_matmuls`)."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    names = [p.get_any_name() for p in model.inputs]
    data = nncf.Dataset([feed_for(names, f, where) for f in feeds])
    scope = (nncf.IgnoredScope(names=head_matmuls(model), patterns=list(FP32_SCOPE), validate=False) if head_fp32
             else nncf.IgnoredScope())  # fmt: skip
    return nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
                         ignored_scope=scope)  # fmt: skip


def quantize_ir(model_path: str | Path, feeds: list[dict[str, np.ndarray]], out_dir: str | Path) -> Path:
    """OpenVINO int8 of an IR or ONNX file by NNCF's post-training quantization (``nncf.quantize`` with
    ``ModelType.TRANSFORMER``: SmoothQuant and fast bias correction, NNCF's recipe for BERT-like models) on the
    calibration ``feeds`` (input name -> array), the task head kept in fp32 (:data:`FP32_SCOPE`); writes
    ``openvino_model.xml`` + ``.bin`` in ``out_dir`` and returns the ``.xml``. The int8 IR is compiled like an
    fp32 one (f32 hint: the ops NNCF left unquantised).

    Calibration sets the activation ranges, so a model served for a task is calibrated on that task's texts;
    random token ids serve timing only (the kernels run are the same)."""
    ov = require_openvino("OpenVINO int8")
    reason = nncf_reason()
    if reason:
        raise DeviceError(reason)
    if not feeds:
        raise ModelError("OpenVINO int8 needs at least one calibration input")
    out = Path(out_dir) / IR_FILE
    try:
        quantized = nncf_int8(ov.Core().read_model(str(model_path)), feeds, where=model_path)
        tmp = out.parent / f".{IR_FILE}.tmp"  # the .xml last: present means complete
        tmp.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, str(tmp / IR_FILE), compress_to_fp16=False)
        (tmp / IR_WEIGHTS).replace(out.parent / IR_WEIGHTS)
        (tmp / IR_FILE).replace(out)
        tmp.rmdir()
    except Exception as exc:  # nncf and openvino raise their own RuntimeError subclasses
        raise ModelError(f"NNCF cannot quantize {model_path}: {ov_reason(exc)}") from exc
    return out


def random_calibration(requests: int, batch: int = 1, seq: int = 128,
                       vocab_size: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """``requests`` seeded random requests (:func:`~kdnas_deploy.runtime.inputs.model_inputs`, seeds 0..n-1):
    calibration for timing only (ranges move, the kernels timed do not)."""
    from kdnas_deploy.runtime.inputs import DEFAULT_VOCAB, model_inputs

    return [model_inputs(batch, seq, vocab_size or DEFAULT_VOCAB, seed=i) for i in range(requests)]


def quantization_record(examples: int, source: str) -> dict[str, Any]:
    """What an int8 artifact records of its quantisation (export reports, table fingerprints)."""
    return {"tool": "nncf", "nncf_version": nncf_version(), "algorithm": "nncf.quantize (post-training)",
            "model_type": "transformer", "calibration_examples": int(examples), "calibration": source}  # fmt: skip


def nncf_version() -> str | None:
    try:
        import nncf
    except ImportError:
        return None
    return str(nncf.__version__)


def is_int8_model(model: Any) -> bool:
    """Whether an OpenVINO model carries NNCF's quantisation (``FakeQuantize`` ops)."""
    return any(op.get_type_name() == INT8_OP for op in model.get_ops())


def compile_model(path: str | Path, settings: OpenVinoSettings) -> Any:
    """An OpenVINO compiled model of an IR (``.xml``) or ONNX file on the CPU; ModelError when it cannot load,
    or when int8 is asked of a model NNCF did not quantise."""
    ov = require_openvino()
    require_precision(settings.precision)
    try:
        core = ov.Core()
        model = core.read_model(str(path))
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot load {path}: {ov_reason(exc)}") from exc
    if settings.precision == "int8" and not is_int8_model(model):
        raise ModelError(f"{path} is not an OpenVINO int8 model (no {INT8_OP} ops): quantise it with NNCF "
                         "(export --backend cpu-openvino --quantize int8)")  # fmt: skip
    try:
        return core.compile_model(model, "CPU", settings.to_config())
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot load {path}: {ov_reason(exc)}") from exc


def ir_or_onnx(folder_or_file: str | Path) -> Path:
    """The IR of a folder when it has one, else its ``model.onnx`` (a file is returned as it is)."""
    path = Path(folder_or_file)
    if path.is_file():
        return path
    return path / IR_FILE if (path / IR_FILE).is_file() else path / "model.onnx"


@dataclass(frozen=True)
class _Input:
    name: str


class OpenVinoSession:
    """An OpenVINO compiled model with the part of ``onnxruntime.InferenceSession``'s interface that parity,
    the dev-metric check and the runners use: ``get_inputs()`` (``.name``) and ``run(None, feed)``."""

    def __init__(self, path: str | Path, settings: OpenVinoSettings) -> None:
        self.path = Path(path)
        self.settings = settings
        self.compiled = compile_model(path, settings)
        self.request = self.compiled.create_infer_request()
        self._inputs = [_Input(p.get_any_name()) for p in self.compiled.inputs]

    def get_inputs(self) -> list[_Input]:
        return list(self._inputs)

    def run(self, output_names: Any, feed: dict[str, Any]) -> list[np.ndarray]:
        result = self.request.infer(feed)
        return [np.asarray(result[out]) for out in self.compiled.outputs]

    def infer_fn(self, feed: dict[str, Any]) -> Any:
        """The bare call a runner times (inputs shared, not copied, on every call)."""
        request = self.request
        return lambda: request.infer(feed, share_inputs=True)


def open_openvino(path: str | Path, threads: int | None = None, precision: str = "fp32") -> OpenVinoSession:
    """An :class:`OpenVinoSession` of an IR or ONNX file (or a folder: its IR, else its ``model.onnx``)."""
    return OpenVinoSession(ir_or_onnx(path), OpenVinoSettings(threads, precision))


def ov_runner(session: OpenVinoSession, inputs: dict[str, Any], where: Any = "the OpenVINO model") -> Runner:
    """A runner of an OpenVINO session on the entries of ``inputs`` it takes (ModelError for a missing one)."""
    feed = feed_for([i.name for i in session.get_inputs()], inputs, where)
    return Runner(session.infer_fn(feed), keep=[session, feed])
