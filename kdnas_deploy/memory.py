"""Give freed memory back to the operating system between the memory-heavy steps of an export."""

from __future__ import annotations

import gc


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    An ONNX export or load leaves hundreds of MB freed but still mapped in the process; without the trim the
    next step's peak (fusion, quantization, the next model) lands on top of it.
    """
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
