"""The count ranges shared by the CLI options and the config sections."""

from __future__ import annotations

import math

import pytest

from kdnas_deploy.errors import ConfigError, ExportError
from kdnas_deploy.limits import MAX_THREADS, check_float, check_int


@pytest.mark.parametrize("value", [0, -1, MAX_THREADS + 1, 10**12, 2.0, True, "4", None])
def test_check_int_refuses_outside_the_range(value):
    with pytest.raises(ConfigError, match=r"threads must be an integer in \[1, 1024\]"):
        check_int("threads", value, "threads")


def test_check_int_accepts_the_ends_and_names_the_error_class():
    assert check_int("threads", 1, "threads") == 1
    assert check_int("threads", MAX_THREADS, "threads") == MAX_THREADS
    assert check_int("seed", 0, "seed") == 0
    with pytest.raises(ExportError):
        check_int("bench_reps", -1, "count0", ExportError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300, "1"])
def test_check_float_refuses_non_finite_and_out_of_range(value):
    with pytest.raises(ConfigError, match="finite number"):
        check_float("epochs", value, high=1e4)


def test_check_float_closed_lower_end():
    assert check_float("x", 0.0, low_open=False) == 0.0
    assert check_float("x", 2, high=2) == 2.0
