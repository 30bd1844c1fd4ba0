"""Convert an ONNX file between its single-file form and external data, one tensor in memory at a time.

``onnx.load`` + ``onnx.save_model`` hold a model two or three times over (the file's bytes, the parsed
message, the serialised copy): 1.3 GB for a BERT-base-size model. These functions walk the protobuf wire
format instead. The output is what ``onnx.save_model`` writes for the same message, byte for byte: protobuf
serialises known fields in field-number order, so a graph is its fields before ``initializer`` (5), then each
initializer, then its later fields (``tests/runtime/test_onnx_stream.py`` checks the round trip).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

MODEL_GRAPH_FIELD = 7  # ModelProto.graph
GRAPH_INITIALIZER_FIELD = 5  # GraphProto.initializer
TENSOR_RAW_DATA_FIELD = 9  # TensorProto.raw_data
LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(f: IO[bytes]) -> int | None:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise ValueError("truncated varint in ONNX file")
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7


def _fields(f: IO[bytes], end: int) -> Iterator[tuple[int, int, int, int]]:
    """Fields of the message between the file position and ``end``: (number, start of the field, start of
    its payload, end of the field). The caller may move the file position; iteration resumes after the field."""
    pos = f.tell()
    while pos < end:
        f.seek(pos)
        key = _read_varint(f)
        if key is None:
            return
        number, wire = key >> 3, key & 7
        if wire == LENGTH_DELIMITED:
            length = _read_varint(f) or 0
            payload = f.tell()
            field_end = payload + length
        elif wire == 0:
            _read_varint(f)
            payload = field_end = f.tell()
        elif wire in (1, 5):
            payload = f.tell()
            field_end = payload + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in ONNX file")
        yield number, pos, payload, field_end
        pos = field_end


def _split(message: Any, number: int) -> tuple[Any, Any]:
    """Copies of ``message`` with only its fields numbered below / above ``number``."""
    low, high = type(message)(), type(message)()
    low.CopyFrom(message)
    high.CopyFrom(message)
    for field in message.DESCRIPTOR.fields:
        if field.number >= number:
            low.ClearField(field.name)
        if field.number <= number:
            high.ClearField(field.name)
    return low, high


def to_external_data(src: str | Path, dst: str | Path, location: str, size_threshold: int = 1024) -> Path:
    """Rewrite the single-file model ``src`` as ``dst`` + ``dst``'s folder/``location`` (tensors of at least
    ``size_threshold`` bytes), reading one initializer at a time. What ``onnx.save_model(...,
    save_as_external_data=True, all_tensors_to_one_file=True)`` writes for the loaded model."""
    import onnx
    from onnx.external_data_helper import set_external_data

    src, dst = Path(src), Path(dst)
    data_path = dst.parent / location
    model = onnx.ModelProto()
    graph = onnx.GraphProto()
    tensors: list[Any] = []
    with open(src, "rb") as f, open(data_path, "wb") as data:
        rest = bytearray()  # every model field but the graph, as found
        for number, start, payload, field_end in _fields(f, src.stat().st_size):
            if number != MODEL_GRAPH_FIELD:
                f.seek(start)
                rest += f.read(field_end - start)
                continue
            f.seek(payload)
            others = bytearray()  # the graph's fields but its initializers
            for g_number, g_start, g_payload, g_end in _fields(f, field_end):
                if g_number != GRAPH_INITIALIZER_FIELD:
                    f.seek(g_start)
                    others += f.read(g_end - g_start)
                    continue
                f.seek(g_payload)
                tensor = onnx.TensorProto.FromString(f.read(g_end - g_payload))
                if tensor.HasField("raw_data") and len(tensor.raw_data) >= size_threshold:
                    offset = data.tell()
                    data.write(tensor.raw_data)
                    set_external_data(tensor, location, offset, len(tensor.raw_data))
                    tensor.ClearField("raw_data")
                    tensor.data_location = onnx.TensorProto.EXTERNAL
                tensors.append(tensor)
            graph.ParseFromString(bytes(others))
            graph.initializer.extend(tensors)
        model.ParseFromString(bytes(rest))
    model.graph.CopyFrom(graph)
    onnx.save_model(model, str(dst))
    return dst


def _clear_default_fields(tensor: Any) -> None:
    """A tensor read back from external data carries explicit default fields; drop them."""
    from onnx import TensorProto

    if tensor.HasField("data_location") and tensor.data_location == TensorProto.DEFAULT:
        tensor.ClearField("data_location")
    if tensor.HasField("doc_string") and not tensor.doc_string:
        tensor.ClearField("doc_string")


def to_single_file(src: str | Path, dst: str | Path) -> Path:
    """Write the model ``src`` (tensors in external data beside it) as the single file ``dst``, loading one
    tensor at a time. What ``onnx.save_model`` writes for ``onnx.load(src)``."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)

    def tensors() -> Iterator[bytes]:
        for tensor in model.graph.initializer:
            if uses_external_data(tensor):
                loaded = onnx.TensorProto()
                loaded.CopyFrom(tensor)
                load_external_data_for_tensor(loaded, str(src.parent))
                _clear_default_fields(loaded)
                yield loaded.SerializeToString()
            else:
                yield tensor.SerializeToString()

    return write_with_initializers(model, lambda: ([blob] for blob in tensors()), dst)


def write_with_initializers(
    model: Any, initializers: Callable[[], Iterator[Sequence[bytes | memoryview]]], dst: str | Path
) -> Path:
    """Write ``model`` as the single file ``dst`` with, in place of its graph's initializers, the serialised
    ``TensorProto`` messages ``initializers()`` yields (each as a list of byte chunks, so that a tensor's
    data need not be copied). ``initializers`` is called twice: once to size the graph, once to write it.
    Written to ``dst.partial`` first, then renamed."""
    import onnx

    dst = Path(dst)
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    graph.ClearField("initializer")
    head, tail = _split(graph, GRAPH_INITIALIZER_FIELD)
    model_graphless = onnx.ModelProto()
    model_graphless.CopyFrom(model)
    model_graphless.ClearField("graph")
    before, after = _split(model_graphless, MODEL_GRAPH_FIELD)

    head_bytes, tail_bytes = head.SerializeToString(), tail.SerializeToString()
    init_key = _varint(GRAPH_INITIALIZER_FIELD << 3 | LENGTH_DELIMITED)
    graph_len = len(head_bytes) + len(tail_bytes)
    for chunks in initializers():  # first pass: the graph's length prefix comes before its tensors
        size = sum(len(c) for c in chunks)
        graph_len += len(init_key) + len(_varint(size)) + size
    tmp = dst.with_name(dst.name + ".partial")
    with open(tmp, "wb") as out:
        out.write(before.SerializeToString())
        out.write(_varint(MODEL_GRAPH_FIELD << 3 | LENGTH_DELIMITED) + _varint(graph_len))
        out.write(head_bytes)
        for chunks in initializers():
            out.write(init_key + _varint(sum(len(c) for c in chunks)))
            for chunk in chunks:
                out.write(chunk)
        out.write(tail_bytes)
        out.write(after.SerializeToString())
    tmp.replace(dst)
    return dst


def raw_tensor_chunks(name: str, dims: Sequence[int], data_type: int, raw: memoryview) -> list[bytes | memoryview]:
    """A ``TensorProto`` with ``dims``, ``data_type``, ``name`` and ``raw_data`` = ``raw``, serialised as two
    chunks (the fields before ``raw_data``, then the data itself, uncopied): ``raw_data`` (9) is the last
    field such a tensor sets."""
    import onnx

    header = onnx.TensorProto(dims=list(dims), data_type=data_type, name=name).SerializeToString()
    return [header + _varint(TENSOR_RAW_DATA_FIELD << 3 | LENGTH_DELIMITED) + _varint(raw.nbytes), raw]
