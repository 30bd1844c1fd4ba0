"""The deployed path, in one place: PyTorch -> ONNX (optimum exporter) -> ORT transformer fusions
(``ORTOptimizer``, O1/O2/O3) -> optionally dynamic int8 (``onnxruntime.quantization``).

Latency tables are measured through exactly this function and ``export`` writes models through it, so a
table's prediction is a prediction of what ``export`` ships. :class:`DeployConfig` names the path; its
``to_dict()`` is recorded in table fingerprints and export reports. :func:`deploy` with ``consume=True``
(a model built only to be deployed, as the tables' are) drops the weights as soon as they are in the file
and hands memory back to the OS between steps: the same graph, a lower peak.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ExportError

OPT_LEVELS = ("none", "O1", "O2", "O3")
PRECISIONS = ("fp32", "int8", "fp16")
DEVICES = ("cpu", "cuda")
ONNX_FILE = "model.onnx"
ORT_CONFIG_FILE = "ort_config.json"
DEFAULT_OPSET = 18
# Dynamic int8 schemes: name -> quantize_dynamic keyword arguments (weights always s8, activations u8).
# "per_channel_matmul" keeps SST-2 accuracy within a point of fp32 at the same speed as per-tensor
# (tools/results/export_int8_variants.json); "per_tensor_all_ops" is the scheme of the first tables.
INT8_SCHEMES: dict[str, dict[str, Any]] = {
    "per_channel_matmul": {"per_channel": True, "op_types_to_quantize": ["MatMul", "Attention"]},
    "per_tensor_all_ops": {},
}
DEFAULT_INT8_SCHEME = "per_channel_matmul"
LEGACY_INT8_SCHEME = "per_tensor_all_ops"  # what an int8 config dict without ``int8_scheme`` was built with
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "QAttention",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLinear",
)


@dataclass(frozen=True)
class DeployConfig:
    """How a model is turned into a served ONNX graph."""

    optimize: str = "O2"
    precision: str = "fp32"
    device: str = "cpu"
    opset: int = DEFAULT_OPSET
    int8_scheme: str = DEFAULT_INT8_SCHEME  # only meaningful (and only recorded) for precision int8

    def __post_init__(self) -> None:
        if self.int8_scheme not in INT8_SCHEMES:
            raise ExportError(f"unknown int8 scheme {self.int8_scheme!r} (choose from {', '.join(INT8_SCHEMES)})")
        if self.optimize not in OPT_LEVELS:
            raise ExportError(f"unknown optimization level {self.optimize!r} (choose from {', '.join(OPT_LEVELS)})")
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        if self.device not in DEVICES:
            raise ExportError(f"unknown device {self.device!r} (choose from {', '.join(DEVICES)})")
        if self.precision == "int8" and self.device != "cpu":
            raise ExportError("dynamic int8 quantization targets the CPU execution provider only")
        if self.precision == "fp16" and self.device != "cuda":
            raise ExportError("fp16 graphs are for --device cuda (CPU kernels run fp16 slower than fp32)")
        if self.precision == "fp16" and self.optimize in ("none", "O1"):
            raise ExportError("fp16 conversion needs optimization level O2 or O3")

    # named presets (as in optimum's AutoOptimizationConfig.O2())
    @classmethod
    def cpu_fp32(cls) -> DeployConfig:
        return cls("O2", "fp32", "cpu")

    @classmethod
    def cpu_int8(cls) -> DeployConfig:
        return cls("O2", "int8", "cpu")

    @classmethod
    def cuda_fp32(cls) -> DeployConfig:
        return cls("O2", "fp32", "cuda")

    @classmethod
    def cuda_fp16(cls) -> DeployConfig:
        return cls("O2", "fp16", "cuda")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.precision != "int8":
            d.pop("int8_scheme")  # fp32/fp16 graphs do not depend on it: their dicts stay as before
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployConfig:
        kwargs = {k: data[k] for k in ("optimize", "precision", "device", "opset", "int8_scheme") if k in data}
        scheme = int8_scheme_of(data)
        if scheme is not None:
            kwargs["int8_scheme"] = scheme
        return cls(**kwargs)


def int8_scheme_of(data: dict[str, Any]) -> str | None:
    """The dynamic-int8 scheme of a recorded deploy config (one recorded before schemes were: the legacy one);
    None when it is not an int8 graph."""
    if data.get("precision") != "int8":
        return None
    return str(data.get("int8_scheme", LEGACY_INT8_SCHEME))


@dataclass(frozen=True)
class DeployedModel:
    """Result of :func:`deploy`: an ONNX folder loadable by ``ORTModelForSequenceClassification``."""

    folder: Path
    onnx_path: Path
    config: DeployConfig
    fused_ops: dict[str, int]


def export_onnx(
    model: Any,
    out_dir: str | Path,
    tokenizer: Any = None,
    opset: int = DEFAULT_OPSET,
    stream_weights: bool = True,
    consume_model: bool = False,
) -> Path:
    """Export a PyTorch sequence classifier with optimum's (TorchScript-based) exporter; eager attention.

    Returns the path of ``model.onnx`` inside ``out_dir`` (which also gets ``config.json``). With
    ``stream_weights`` the exporter writes the weights one tensor at a time
    (:mod:`kdnas_deploy.runtime.lowmem.streamed_weights`): the same file, without the 4x weight copies at its peak.
    ``consume_model`` (with ``stream_weights``): the model's weights are dropped as soon as they are in the
    file; for a model built only to be exported (the latency tables').
    """
    import warnings
    from contextlib import nullcontext

    from optimum.exporters.onnx import onnx_export_from_model

    from kdnas_deploy.runtime.lowmem.streamed_weights import streamed_weights

    out_dir = Path(out_dir)
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.config._attn_implementation = "eager"
    model = model.eval()
    with warnings.catch_warnings(), streamed_weights(consume_model) if stream_weights else nullcontext():
        warnings.simplefilter("ignore")
        try:
            onnx_export_from_model(
                model,
                output=out_dir,
                task="text-classification",
                opset=opset,
                do_validation=False,
                preprocessors=[tokenizer] if tokenizer is not None else None,
            )
        except Exception as exc:  # optimum raises many types; surface one typed error
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    path = out_dir / ONNX_FILE
    if not path.is_file():
        raise ExportError(f"ONNX export wrote no {ONNX_FILE} in {out_dir}")
    return path


def optimize_onnx(onnx_dir: str | Path, out_dir: str | Path, config: DeployConfig, lean: bool = True) -> Path:
    """Apply ORT transformer fusions at ``config.optimize`` as optimum's ``ORTOptimizer`` does; returns the
    optimized path.

    ``onnx_dir`` must hold ``model.onnx`` and ``config.json`` (what :func:`export_onnx` writes). The
    optimizer's ``ort_config.json`` is written beside the model. ``lean`` (fp32, single-file models) runs
    the same passes with the weights on disk (:mod:`kdnas_deploy.runtime.lowmem.lean_fusion`): the same graph, a
    third of the memory; fp16 conversion and ``lean=False`` call ``ORTOptimizer.optimize`` itself.
    """
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    out_dir = Path(out_dir)
    if config.optimize == "none":
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(onnx_dir) / ONNX_FILE, out_dir / ONNX_FILE)
        return out_dir / ONNX_FILE
    level = config.optimize
    kwargs: dict[str, Any] = {"for_gpu": config.device == "cuda"}
    if config.precision == "fp16":
        kwargs["fp16"] = True
    opt_config = getattr(AutoOptimizationConfig, level)(**kwargs)
    try:
        optimizer = ORTOptimizer.from_pretrained(onnx_dir, file_names=[ONNX_FILE])
        if lean and config.precision != "fp16" and not _uses_external_data(Path(onnx_dir) / ONNX_FILE):
            _optimize_lean(optimizer, Path(onnx_dir), out_dir, opt_config)
        else:
            optimizer.optimize(opt_config, save_dir=out_dir, file_suffix="")
    except Exception as exc:
        raise ExportError(f"ORT graph optimization ({level}) failed: {type(exc).__name__}: {exc}") from exc
    path = out_dir / ONNX_FILE
    if not path.is_file():
        raise ExportError(f"ORTOptimizer wrote no {ONNX_FILE} in {out_dir}")
    return path


def _uses_external_data(onnx_path: Path) -> bool:
    """Whether an exported model keeps its weights in external data files (optimum writes ``*.onnx_data``
    beside models over 2 GB); read from the folder, since loading a single-file model costs its size."""
    folder = onnx_path.parent
    return any(folder.glob("*.onnx_data")) or any(folder.glob("*.data"))


def _optimize_lean(optimizer: Any, onnx_dir: Path, out_dir: Path, opt_config: Any) -> None:
    """What ``ORTOptimizer.optimize`` writes (model, config, ``ort_config.json``, preprocessors), through
    :func:`lean_fusion.fuse_lean`."""
    from optimum.onnxruntime.configuration import ORTConfig
    from optimum.onnxruntime.utils import ORTConfigManager
    from optimum.utils.save_utils import maybe_save_preprocessors

    from kdnas_deploy.runtime.lowmem.lean_fusion import fuse_lean

    out_dir.mkdir(parents=True, exist_ok=True)
    ORTConfigManager.check_optimization_supported_model(optimizer.model_type, opt_config)
    model_type = ORTConfigManager.get_model_ort_type(optimizer.config.model_type)
    norm = optimizer.normalized_config
    fuse_lean(onnx_dir / ONNX_FILE, out_dir / ONNX_FILE, opt_config, model_type,
              norm.num_attention_heads, norm.hidden_size)  # fmt: skip
    optimizer.config.save_pretrained(out_dir)
    ORTConfig(optimization=opt_config, use_external_data_format=False, one_external_file=True).save_pretrained(out_dir)
    maybe_save_preprocessors(onnx_dir, out_dir)


def quantize_int8(src: str | Path, dst: str | Path, scheme: str = DEFAULT_INT8_SCHEME) -> Path:
    """Dynamic int8 (u8 activations, s8 weights) of a possibly fused graph, with one of :data:`INT8_SCHEMES`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            **INT8_SCHEMES[scheme],
        )
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
    return Path(dst)


def fused_operator_counts(onnx_path: str | Path) -> dict[str, int]:
    """Counts of the fused/quantized operators of interest in a graph (zeros included)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    counts = Counter(node.op_type for node in model.graph.node)
    return {op: int(counts.get(op, 0)) for op in FUSED_OPS}


def attention_fused(fused_ops: dict[str, int], num_layers: int) -> bool:
    """True when every layer's attention became one fused operator."""
    n = fused_ops.get("Attention", 0) + fused_ops.get("MultiHeadAttention", 0) + fused_ops.get("QAttention", 0)
    return n == num_layers


def quantization_config(scheme: str = DEFAULT_INT8_SCHEME) -> Any:
    """The settings :func:`quantize_int8` runs ``quantize_dynamic`` with, as optimum's ``QuantizationConfig``
    (the format ``ORTQuantizer`` records in ``ort_config.json``): dynamic, QOperator, IntegerOps, u8
    activations (asymmetric), s8 weights (symmetric, ORT's default for s8), no reduced range."""
    from onnxruntime.quantization import QuantFormat, QuantizationMode, QuantType
    from optimum.onnxruntime.configuration import QuantizationConfig

    options = INT8_SCHEMES[scheme]
    return QuantizationConfig(
        is_static=False,
        format=QuantFormat.QOperator,
        mode=QuantizationMode.IntegerOps,
        activations_dtype=QuantType.QUInt8,
        activations_symmetric=False,
        weights_dtype=QuantType.QInt8,
        weights_symmetric=True,
        per_channel=bool(options.get("per_channel", False)),
        reduce_range=False,
        operators_to_quantize=list(options.get("op_types_to_quantize", [])),  # empty: every supported op
    )


def record_quantization(folder: Path, scheme: str) -> None:
    """Write the int8 scheme into the folder's ``ort_config.json`` (created when the graph was not optimized)."""
    from optimum.onnxruntime.configuration import ORTConfig

    config = ORTConfig.from_pretrained(folder) if (folder / ORT_CONFIG_FILE).is_file() else ORTConfig()
    config.quantization = quantization_config(scheme)
    config.save_pretrained(folder)


def deploy(model: Any, out_dir: str | Path, config: DeployConfig, tokenizer: Any = None,
           consume: bool = False) -> DeployedModel:  # fmt: skip
    """Run the whole path; ``out_dir`` ends up with ``model.onnx`` (final graph), ``config.json``,
    ``ort_config.json`` (when optimized or quantized) and the tokenizer files when a tokenizer is given.

    ``consume``: the model was built only to be deployed; its weights are dropped as soon as the exporter
    has written them and memory is handed back to the OS between steps (the latency tables' builds).
    ``out_dir`` is written in place (callers wanting atomicity pass a temporary folder).
    """
    from kdnas_deploy.runtime.lowmem.memory import release_memory

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / ONNX_FILE
    with tempfile.TemporaryDirectory(prefix=".deploy-", dir=out_dir) as tmp:
        raw_dir, opt_dir = Path(tmp) / "raw", Path(tmp) / "optimized"
        export_onnx(model, raw_dir, tokenizer=tokenizer, opset=config.opset, consume_model=consume)
        if consume:
            del model
            release_memory()
        optimized = optimize_onnx(raw_dir, opt_dir, config)
        if consume:  # the fusion pass leaves its graph objects in reference cycles: collect before quantizing
            release_memory(full=config.precision == "int8")
        if config.precision == "int8":
            quantize_int8(optimized, final, config.int8_scheme)
        else:
            shutil.copy2(optimized, final)
        for src_dir in (raw_dir, opt_dir):
            for f in src_dir.iterdir():
                if f.suffix != ".onnx" and f.is_file():
                    shutil.copy2(f, out_dir / f.name)
    if config.precision == "int8":
        record_quantization(out_dir, config.int8_scheme)
    if consume:
        release_memory()
    return DeployedModel(out_dir, final, config, fused_operator_counts(final))


@contextmanager
def quiet_loggers(level: int = logging.WARNING) -> Iterator[None]:
    """Silence the exporter's and quantizer's per-model chatter (the same warnings for every model).

    optimum re-configures its loggers whenever one of its modules is imported, so levels do not stick:
    ``logging.disable`` does, and is restored afterwards.
    """
    old = logging.root.manager.disable
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(old)
