import numpy as np
import pytest

from kdnas_deploy.search.config import RewardConfig
from kdnas_deploy.search.pareto import pareto_mask
from kdnas_deploy.search.reward import mnas_reward, proxy_metric


def test_reward_at_budget_is_the_metric():
    assert mnas_reward(0.9, np.array([5.0]), np.array([5.0]), RewardConfig()) == pytest.approx(0.9)


def test_reward_uses_alpha_within_and_beta_beyond_budget():
    cfg = RewardConfig(alpha=-0.1, beta=-0.5)
    fast = mnas_reward(0.8, np.array([2.5]), np.array([5.0]), cfg)
    slow = mnas_reward(0.8, np.array([10.0]), np.array([5.0]), cfg)
    assert fast == pytest.approx(0.8 * 0.5**-0.1)
    assert slow == pytest.approx(0.8 * 2.0**-0.5)
    assert fast > 0.8 > slow


def test_reward_multiplies_over_budgets():
    cfg = RewardConfig()
    both = mnas_reward(0.7, np.array([4.0, 12.0]), np.array([2.0, 6.0]), cfg)
    assert both == pytest.approx(0.7 * 2.0**-0.07 * 2.0**-0.07)


def test_loss_metric_is_monotone_and_bounded():
    vals = [proxy_metric("loss", 0.0, loss) for loss in (0.0, 0.1, 1.0, 10.0)]
    assert vals[0] == 1.0
    assert all(a > b for a, b in zip(vals, vals[1:], strict=False))
    assert vals[-1] > 0
    assert proxy_metric("task", 0.83, 5.0) == 0.83


def test_pareto_mask_matches_brute_force():
    rng = np.random.default_rng(3)
    lat = rng.uniform(1, 10, size=(40, 2))
    met = rng.uniform(0.5, 0.9, size=40)
    mask = pareto_mask(lat, met)
    for i in range(40):
        dominated = any(
            np.all(lat[j] <= lat[i]) and met[j] >= met[i] and (np.any(lat[j] < lat[i]) or met[j] > met[i])
            for j in range(40)
            if j != i
        )
        assert mask[i] == (not dominated)
    assert mask.any()


def test_pareto_single_objective_front_is_monotone():
    lat = np.array([[1.0], [2.0], [3.0], [2.5]])
    met = np.array([0.5, 0.7, 0.9, 0.6])
    assert pareto_mask(lat, met).tolist() == [True, True, True, False]


def test_metric_registry_matches_the_config_choices():
    from kdnas_deploy.search.config import REWARD_METRICS
    from kdnas_deploy.search.reward import METRICS

    assert set(METRICS) == set(REWARD_METRICS)
