import time

import pytest

from kdnas_deploy.runtime.timing import Timing, time_callable


def test_from_samples_percentiles():
    t = Timing.from_samples([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    assert t.median_ms == 6.0
    assert t.min_ms == 1.0
    assert t.p10_ms == pytest.approx(2.0)
    assert t.p90_ms == pytest.approx(10.0)
    assert t.spread_pct == pytest.approx(100 * 8 / 6)
    assert t.to_dict()["reps"] == 11


def test_time_callable_counts_calls_and_measures_sleep():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    t = time_callable(fn, warmup=3, reps=10)
    assert len(calls) == 13
    assert t.reps == 10
    assert 1.5 < t.median_ms < 50


def test_empty_samples_rejected():
    with pytest.raises(ValueError):
        Timing.from_samples([])
