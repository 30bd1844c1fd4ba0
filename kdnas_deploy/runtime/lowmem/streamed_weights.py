"""Let torch's TorchScript ONNX exporter write a model's weights one tensor at a time.

``torch.onnx.export(..., dynamo=False)`` (the exporter optimum uses, and the only one after which ONNX
Runtime fuses attention) builds the whole ``ModelProto`` in C++ with a copy of every weight, serialises it
to a string and hands Python a copy of that: the weights sit in memory four times at once (2.3 GB peak for
a BERT-base-size model). Inside :func:`streamed_weights`, an export whose ``f`` is a path runs with
``export_params=False`` instead, which yields the same graph with the weights as plain graph inputs and no
data, and the weights (the exporter's own, after constant folding and de-duplication) are then written into
the file from the tensors the exporter computed, one at a time, where its C++ encoder would have put them:
as initializers in the order of those inputs. The file is byte-identical to the ordinary export's
(``tests/runtime/test_streamed_weights.py``).

This reaches into two of the exporter's internals (``torch._C._jit_pass_onnx_deduplicate_initializers``
for the weights, the weightless input order for their places). Where either is not there, the export runs
unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdnas_deploy.errors import ExportError

_DEDUP = "_jit_pass_onnx_deduplicate_initializers"


def _onnx_type(dtype: Any) -> int:
    import torch
    from onnx import TensorProto

    types = {
        torch.float32: TensorProto.FLOAT,
        torch.float16: TensorProto.FLOAT16,
        torch.bfloat16: TensorProto.BFLOAT16,
        torch.float64: TensorProto.DOUBLE,
        torch.int64: TensorProto.INT64,
        torch.int32: TensorProto.INT32,
        torch.int16: TensorProto.INT16,
        torch.int8: TensorProto.INT8,
        torch.uint8: TensorProto.UINT8,
        torch.bool: TensorProto.BOOL,
    }
    if dtype not in types:
        raise ExportError(f"streamed ONNX export: no ONNX type for weights of dtype {dtype}")
    return types[dtype]


def add_weights(onnx_path: Path, params: dict[str, Any]) -> None:
    """Turn the graph inputs of the weightless export ``onnx_path`` named in ``params`` into initializers
    holding those tensors, in input order, rewriting the file in place."""
    import onnx
    import torch

    from kdnas_deploy.runtime.lowmem.onnx_stream import raw_tensor_chunks, write_with_initializers

    model = onnx.load(str(onnx_path))
    inputs = list(model.graph.input)
    weights = [vi.name for vi in inputs if vi.name in params]
    if set(weights) != set(params):
        missing = sorted(set(params) - set(weights))[:3]
        raise ExportError(f"streamed ONNX export: weights {missing} are not inputs of the exported graph")
    del model.graph.input[:]
    model.graph.input.extend(vi for vi in inputs if vi.name not in params)

    def initializers() -> Iterator[list[Any]]:
        for name in weights:
            tensor = params[name].detach().cpu().contiguous()
            raw = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            yield raw_tensor_chunks(name, tensor.shape, _onnx_type(tensor.dtype), raw)

    write_with_initializers(model, initializers, onnx_path)


def release_weights(model: Any) -> None:
    """Drop the data of ``model``'s parameters and buffers (the objects stay, empty): for a model built only
    to be exported, whose weights are in the file now."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = torch.empty(0, dtype=tensor.dtype)


@contextmanager
def streamed_weights(release: bool = False) -> Iterator[None]:
    """While active, ``torch.onnx.export(model, args, f=PATH, ..., dynamo=False)`` writes the same file with
    a fraction of the memory (see the module docstring). Other exports pass through untouched. ``release``:
    the exported model's weights are dropped once written (:func:`release_weights`), so that what the
    caller does next with the file (optimum reads it back whole) does not hold them twice."""
    import torch
    import torch.onnx

    original = torch.onnx.export
    dedup = getattr(torch._C, _DEDUP, None)
    if dedup is None:  # not the exporter this was written against: leave it alone
        yield
        return

    def export(model: Any, args: Any = (), f: Any = None, **kwargs: Any) -> Any:
        plain = (
            kwargs.get("dynamo", True) is not False
            or not isinstance(f, str | os.PathLike)
            or kwargs.get("export_params", True) is not True
            or kwargs.get("keep_initializers_as_inputs") is True
        )
        if plain:
            return original(model, args, f, **kwargs)
        captured: dict[str, Any] = {}

        def capture(*a: Any) -> Any:
            captured["params"] = params = dedup(*a)
            return params

        setattr(torch._C, _DEDUP, capture)
        try:
            result = original(model, args, f, **{**kwargs, "export_params": False})
        finally:
            setattr(torch._C, _DEDUP, dedup)
        if "params" not in captured:
            raise ExportError("streamed ONNX export: the exporter did not report its weights")
        add_weights(Path(f), captured.pop("params"))
        if release:
            release_weights(model)
        return result

    torch.onnx.export = export
    try:
        yield
    finally:
        torch.onnx.export = original
