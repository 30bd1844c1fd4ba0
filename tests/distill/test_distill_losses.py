import math

import pytest

torch = pytest.importorskip("torch")

from kdnas_deploy.distill.losses import LOSSES, LossInputs, relation_head_count  # noqa: E402


def _inputs(s_logits, t_logits, **kw):
    b = s_logits.shape[0]
    defaults = dict(
        labels=torch.zeros(b, dtype=torch.long),
        mask=torch.ones(b, 5, dtype=torch.long),
        is_regression=False,
        temperature=2.0,
    )
    defaults.update(kw)
    return LossInputs(s_logits, t_logits, **defaults)


def test_kd_loss_zero_for_identical_logits_and_positive_otherwise():
    t = torch.randn(4, 3)
    assert LOSSES["kd"](_inputs(t.clone(), t)).item() == pytest.approx(0.0, abs=1e-6)
    assert LOSSES["kd"](_inputs(torch.randn(4, 3), t)).item() > 0


def test_kd_loss_matches_hand_computed_kl_times_t_squared():
    s, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    temp = 2.0
    p_t = torch.softmax(t / temp, -1)[0]
    p_s = torch.softmax(s / temp, -1)[0]
    expected = float((p_t * (p_t.log() - p_s.log())).sum()) * temp**2
    assert LOSSES["kd"](_inputs(s, t, temperature=temp)).item() == pytest.approx(expected, rel=1e-5)


def test_hard_loss_is_cross_entropy_and_mse_for_regression():
    s = torch.tensor([[2.0, 0.0]])
    assert LOSSES["hard"](_inputs(s, s, labels=torch.tensor([0]))).item() == pytest.approx(
        math.log(1 + math.exp(-2.0)), rel=1e-5
    )
    reg = _inputs(
        torch.tensor([[1.5]]), torch.tensor([[0.0]]), labels=torch.tensor([0.5]), is_regression=True
    )
    assert LOSSES["hard"](reg).item() == pytest.approx(1.0)
    assert LOSSES["kd"](reg).item() == pytest.approx(2.25)


def test_hidden_loss_ignores_padding_tokens():
    t = torch.zeros(1, 4, 8)
    s = torch.zeros(1, 4, 8)
    s[0, 3] = 100.0  # a padding position
    mask = torch.tensor([[1, 1, 1, 0]])
    x = _inputs(torch.zeros(1, 2), torch.zeros(1, 2), mask=mask, hidden_pairs=[(s, t)])
    assert LOSSES["hidden"](x).item() == 0.0
    s[0, 0] = 1.0
    assert LOSSES["hidden"](x).item() == pytest.approx(8 / (3 * 8))


def test_relation_loss_zero_for_same_states_and_works_across_widths():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    h = torch.randn(1, 5, 24)
    same = {k: (h, h) for k in "qkv"}
    x = _inputs(torch.zeros(1, 2), torch.zeros(1, 2), mask=mask, relations=same, relation_heads=4)
    assert LOSSES["relation"](x).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(1, 5, 16, requires_grad=True)
    diff = {k: (student, h) for k in "qkv"}
    x = _inputs(torch.zeros(1, 2), torch.zeros(1, 2), mask=mask, relations=diff, relation_heads=4)
    loss = LOSSES["relation"](x)
    assert loss.item() > 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_relation_head_count_divides_both_widths():
    assert relation_head_count(384, 256, 8) == 8
    assert relation_head_count(384, 192, 12) == 12
    assert relation_head_count(384, 320, 12) == 8
    h = relation_head_count(384, 100, 12)
    assert 384 % h == 0 and 100 % h == 0
