"""The range of every count a user can type, in one place (CLI options and config sections check the same).

The upper limits are far above any sensible value and low enough that a number cannot overflow a C ``int``
(ONNX Runtime's and torch's thread counts), allocate terabytes (a batch of 10^12 random token ids) or run for
years (10^12 benchmark rounds). A value above one is a typing error, refused before any work starts, with a
message that names the range.
"""

from __future__ import annotations

import math
from typing import Any

from kdnas_deploy.errors import ConfigError, KdnasError

MAX_THREADS = 1024  # intra-op threads; torch.set_num_threads overflows past 2**31
MAX_BATCH = 4096
MAX_SEQ = 8192  # tokens; a model's own position limit is checked where the model is loaded
MAX_COUNT = 1_000_000  # episodes, candidates, rounds, repetitions, requests, rows
MAX_EPOCHS = 10_000.0
MAX_SEED = 2**32 - 1  # numpy's seeds are unsigned 32-bit

# name -> (low, high): the inclusive range of a count of that kind
RANGES: dict[str, tuple[int, int]] = {
    "threads": (1, MAX_THREADS),
    "batch": (1, MAX_BATCH),
    "seq": (1, MAX_SEQ),
    "count": (1, MAX_COUNT),
    "count0": (0, MAX_COUNT),
    "seed": (0, MAX_SEED),
}


def check_int(name: str, value: Any, kind: str, error: type[KdnasError] = ConfigError) -> int:
    """``value`` as an int inside the range of ``kind`` (see :data:`RANGES`), else ``error`` naming ``name``."""
    low, high = RANGES[kind]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def check_float(name: str, value: Any, low: float = 0.0, high: float = math.inf, low_open: bool = True,
                error: type[KdnasError] = ConfigError) -> float:  # fmt: skip
    """``value`` as a finite float in ``(low, high]`` (``[low, high]`` with ``low_open=False``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value < low or (low_open and value == low) or value > high):
        ok = False
    if not ok:
        bracket = "(" if low_open else "["
        raise error(f"{name} must be a finite number in {bracket}{low:g}, {high:g}], got {value!r}")
    return float(value)
