"""Give freed memory back to the operating system between the memory-heavy steps of an export."""

from __future__ import annotations

import gc


def release_memory(full: bool = False) -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    An ONNX export or load leaves hundreds of MB freed but still mapped in the process; without the trim the
    next step's peak (fusion, quantization, the next model) lands on top of it. Weights, protobufs and arrays
    are freed by reference counting; the collection only catches recent reference cycles (generations 0-1,
    well under 1 ms) unless ``full``: a full collection walks every object torch and transformers created,
    0.2 s each time here, which five calls per exported model turned into a third of a table build.
    """
    gc.collect() if full else gc.collect(1)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
