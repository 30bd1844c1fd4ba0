import numpy as np
import pytest
from search_doubles import TINY_SPACE, FlopsPredictor

from kdnas_deploy.errors import SearchError, SpaceError
from kdnas_deploy.search.api import resolve_budget_pairs
from kdnas_deploy.search.budget import Budget, BudgetSet, parse_budget_option
from kdnas_deploy.space import SearchSpace


def test_budget_below_fastest_member_names_it():
    pred = FlopsPredictor()
    lat = pred.predict(TINY_SPACE.members)
    fastest = TINY_SPACE.members[int(np.argmin(lat))]
    with pytest.raises(SearchError) as err:
        BudgetSet([Budget(pred, float(lat.min()) * 0.9, "cpu-fp32")])
    msg = str(err.value)
    assert str(fastest) in msg and f"{lat.min():.3f} ms" in msg


def test_feasible_means_every_budget():
    a, b = FlopsPredictor(), FlopsPredictor(ms_per_mflop=0.02, fixed_ms=0.05)
    la, lb = a.predict(TINY_SPACE.members), b.predict(TINY_SPACE.members)
    ba, bb = float(np.median(la)), float(np.median(lb)) * 0.8
    bs = BudgetSet([Budget(a, ba, "a"), Budget(b, bb, "b")])
    expected = (la <= ba) & (lb <= bb)
    assert bs.feasible_mask().tolist() == expected.tolist()
    assert expected.sum() > 0 and expected.sum() < (la <= ba).sum()
    arch = TINY_SPACE.members[int(np.argmax(expected))]
    assert bs.feasible(arch) and set(bs.latency_dict(arch)) == {"a", "b"}


def test_table_of_another_space_is_refused():
    other = SearchSpace.load("minilm-l6")
    with pytest.raises(SearchError, match="built on space"):
        BudgetSet([Budget(FlopsPredictor(), 1.0, "a"), Budget(FlopsPredictor(other), 1.0, "b")])
    with pytest.raises(SearchError, match="built on space"):
        BudgetSet([Budget(FlopsPredictor(), 1.0, "a")], space=other)


def test_no_member_meets_every_budget_at_once():
    # a budget that only tiny-FFN models meet and one that only shallow, narrow ones meet, but not together
    a, b = FlopsPredictor(), FlopsPredictor(ms_per_mflop=0.0, fixed_ms=1.0)
    with pytest.raises(SearchError):
        BudgetSet([Budget(a, 10.0, "a"), Budget(b, 0.5, "b")])


def test_teacher_outside_space_has_no_prediction():
    bs = BudgetSet([Budget(FlopsPredictor(), 1.0, "a")])
    from kdnas_deploy.arch import Architecture

    assert bs.predict_any(Architecture(12, 768, 12, 3072)) == {"a": None}
    with pytest.raises(SpaceError):
        bs.latencies([Architecture(12, 768, 12, 3072)])


@pytest.mark.parametrize("text", ["table.json", "table.json:fast", ":3.0"])
def test_bad_budget_option(text):
    with pytest.raises(SearchError):
        parse_budget_option(text)


def test_budget_option_parses_last_colon():
    assert parse_budget_option("C:/t/x.json:4.5") == ("C:/t/x.json", 4.5)
    assert resolve_budget_pairs("t.json", 3.0, ["u.json:2"]) == [("t.json", 3.0), ("u.json", 2.0)]
    with pytest.raises(SearchError):
        resolve_budget_pairs("t.json", None, [])
    with pytest.raises(SearchError):
        resolve_budget_pairs(None, None, [])
