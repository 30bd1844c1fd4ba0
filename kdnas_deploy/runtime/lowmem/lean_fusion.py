"""ONNX Runtime's transformer fusions with the weights left on disk: the graph optimum's ``ORTOptimizer``
writes, byte for byte, in a fraction of its memory.

``ORTOptimizer.optimize`` calls ``onnxruntime.transformers.optimizer.optimize_model``, which holds the whole
model in memory several times over: ONNX Runtime's session pass (level 1/2) serialises the optimized model
from memory, then the Python fusion pass loads it and copies it in every symbolic shape inference: 3.45 GB
peak for a BERT-base-size model (440 MB of weights) in a fresh process (kernel ``ru_maxrss``).

:func:`fuse_lean` runs the same two passes with the same settings (``optimize_by_onnxruntime`` with the
optimizers ``optimize_model`` disables, then ``optimize_by_fusion`` with the ``FusionOptions`` of the same
optimum ``OptimizationConfig``) on a copy of the model whose tensors live in an external-data file. The
fusion pass then reads a weight only where a fusion needs its values (the Q/K/V matrices it concatenates),
and :mod:`onnx_stream` converts to and from the single-file ``model.onnx`` one tensor at a time: 1.08 GB
peak for the same model (``tools/bench_latency.py --steps memory-stages``).
``tests/runtime/test_lean_fusion.py`` checks the result against ``ORTOptimizer``'s, byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdnas_deploy.runtime.lowmem.memory import release_memory
from kdnas_deploy.runtime.lowmem.onnx_stream import to_external_data, to_single_file

EXTERNAL_DATA_THRESHOLD = 1024  # bytes: smaller tensors (shapes, scalars) stay inside the graph


@contextlib.contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    """The fusion pass reads external tensors relative to the working directory (onnx's ``to_array``)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _session_pass_settings(opt_level: int, only_onnxruntime: bool) -> list[str]:
    """The optimizers ``optimize_model`` disables in ONNX Runtime's pass (onnxruntime 1.2x/1.3x)."""
    disabled = ["ConstantSharing"]
    if opt_level > 1 and not only_onnxruntime:
        disabled += [
            "MatMulScaleFusion",
            "MatMulAddFusion",
            "MatmulTransposeFusion",
            "GemmActivationFusion",
            "BiasSoftmaxFusion",
        ]
    return disabled


def fuse_lean(
    src: str | Path,
    dst: str | Path,
    opt_config: Any,
    model_type: str = "bert",
    num_heads: int = 0,
    hidden_size: int = 0,
) -> Path:
    """Write ``dst`` (one ``.onnx`` file): ``src`` through ORT's passes as ``ORTOptimizer`` would run them
    for ``opt_config`` (an optimum ``OptimizationConfig``), holding at most about one copy of the weights.

    Not for fp16 conversion (it rewrites every weight): use ``ORTOptimizer`` there.
    """
    import onnx
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_by_fusion, optimize_by_onnxruntime

    if getattr(opt_config, "fp16", False):
        raise ValueError("fuse_lean does not convert to fp16; use ORTOptimizer")
    src, dst = Path(src).resolve(), Path(dst).resolve()
    level = int(opt_config.optimization_level)
    only_ort = not opt_config.enable_transformers_specific_optimizations
    with tempfile.TemporaryDirectory(prefix="kdnas-fuse-", dir=dst.parent) as tmp:
        work = Path(tmp)
        raw = work / "raw.onnx"
        to_external_data(src, raw, "raw.onnx.data", EXTERNAL_DATA_THRESHOLD)
        release_memory()
        if level > 0:
            passed = work / "session.onnx"
            optimize_by_onnxruntime(
                str(raw),
                use_gpu=bool(opt_config.optimize_for_gpu),
                optimized_model_path=str(passed),
                opt_level=level,
                disabled_optimizers=_session_pass_settings(level, only_ort),
                save_as_external_data=True,
            )
        else:
            passed = raw
        model = onnx.load(str(passed), load_external_data=False)
        fused = work / "fused.onnx"
        with _working_directory(work):
            if only_ort:
                optimizer = MODEL_TYPES[model_type][0](model, num_heads, hidden_size)
            else:
                options = opt_config.create_fusion_options(model_type)
                optimizer = optimize_by_fusion(model, model_type, num_heads, hidden_size, options)
            optimizer.save_model_to_file(str(fused), use_external_data_format=False)
        del model, optimizer
        release_memory()
        to_single_file(fused, dst)
    return dst
