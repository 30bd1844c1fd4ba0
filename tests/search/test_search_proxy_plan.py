"""Proxy sizing from the train split: minimum rows and steps, held-out standard error, scaled-down notices."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from kdnas_deploy.errors import DataError
from kdnas_deploy.search.evaluator import split_train
from kdnas_deploy.search.proxy_plan import MAX_PROXY_EPOCHS, plan_proxy


def test_a_small_task_gets_a_larger_share_and_a_minimum_of_steps():
    # the MRPC search: 5% of 3,668 rows was 183 rows, 6 steps per candidate
    old = plan_proxy(3668, 0.05, 1000, 1.0, 32)
    assert (old.proxy, old.steps) == (183, 6)
    plan = plan_proxy(3668, 0.05, 1000, 1.0, 32, min_rows=2000, min_steps=150)
    assert plan.proxy == 2000 and plan.steps >= 150 and plan.heldout == 733
    assert plan.heldout_se_max == pytest.approx(0.5 / np.sqrt(733))
    assert "733 rows" in plan.line() and "standard error" in plan.line()


def test_a_large_task_is_unchanged_by_the_minimums():
    plan = plan_proxy(67349, 0.1, 1000, 1.0, 32, min_rows=2000, min_steps=150)
    assert (plan.proxy, plan.epochs, plan.heldout, plan.notices) == (6735, 1.0, 1000, ())


@pytest.mark.parametrize("n", [2490, 3668, 67349, 500])
def test_twice_the_budget_is_twice_the_steps(n):
    one = plan_proxy(n, 0.1, 1000, 1.0, 32, min_rows=2000, min_steps=150)
    two = plan_proxy(n, 0.1, 1000, 1.0, 32, min_rows=2000, min_steps=150, scale=2.0)
    assert two.proxy >= one.proxy and (two.steps >= 2 * one.steps - 1 or two.epochs == MAX_PROXY_EPOCHS)


def test_a_train_split_smaller_than_proxy_plus_heldout_is_scaled_down_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="kdnas_deploy"):
        plan = plan_proxy(500, 0.1, 1000, 1.0, 32, min_rows=2000)
    assert (plan.heldout, plan.proxy) == (100, 400) and plan.heldout + plan.proxy <= 500
    assert "proxy set scaled down from 2000 to 400 rows" in caplog.text and "proxy_min_rows <= 400" in caplog.text
    with pytest.raises(DataError, match="needs at least 2"):
        plan_proxy(1, 0.1, 10, 1.0, 32)


def test_a_larger_proxy_set_is_a_superset_disjoint_from_the_heldout_slice():
    a, b = split_train(3668, 0.1, 1000, 0, 2000), split_train(3668, 0.1, 1000, 0, 2935)
    assert set(a.proxy) <= set(b.proxy) and not set(b.proxy) & set(b.heldout)
    assert np.array_equal(a.heldout, b.heldout)


def test_final_epochs_are_raised_to_final_min_steps_on_a_small_split_only():
    from kdnas_deploy.search.proxy_plan import MAX_FINAL_EPOCHS, final_epochs

    # STS-B's 5,749 rows at batch 32: 180 steps an epoch, 2 epochs = 360 steps; 1500 asked -> 8.33 epochs
    assert final_epochs(5749, 2.0, 32, 1500) == pytest.approx(1500 / 180, abs=0.01)
    assert final_epochs(67349, 2.0, 32, 1500) == 2.0  # SST-2 makes 4,210 steps in 2 epochs: unchanged
    assert final_epochs(5749, 2.0, 32, 0) == 2.0  # off
    assert final_epochs(635, 2.0, 32, 1500) == MAX_FINAL_EPOCHS  # WNLI: capped, not 75 epochs
    assert final_epochs(635, 30.0, 32, 1500) == 30.0  # never below the epochs asked


def test_final_min_steps_is_a_checked_setting_of_the_glue_preset():
    from kdnas_deploy.errors import ConfigError
    from kdnas_deploy.search.config import PRESETS, SearchSettings

    assert SearchSettings.from_dict(PRESETS.merged("glue")).final_min_steps == 1500
    assert SearchSettings().final_min_steps == 0
    with pytest.raises(ConfigError, match="final_min_steps"):
        SearchSettings(final_min_steps=-1)
