"""How much of the training split the proxy phase uses: held-out slice, proxy set and proxy steps per candidate.

Sized from the training split, not fixed fractions alone:

- held-out slice: ``heldout_size`` rows, at most a fifth of the train split; its worst-case standard error
  (a metric at 0.5: ``0.5 / sqrt(n)``) is part of the plan, so the log says how far apart two candidates must
  be to differ;
- proxy set: ``proxy_fraction`` of the train split, raised to ``proxy_min_rows`` (a small task uses a larger
  share of its data), at most everything but the held-out slice;
- proxy epochs: the proxy preset's (or ``proxy_epochs``), raised so every candidate makes at least
  ``proxy_min_steps`` optimizer steps (at most :data:`MAX_PROXY_EPOCHS`).

``scale`` (2 after a degenerate search) multiplies the proxy budget: the set grows (a superset of the first
one) and, where the split has no rows left, the epochs grow instead, so the optimizer steps are ``scale`` times
the first plan's. A train split too small for what was asked is scaled down with a logged notice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from kdnas_deploy.errors import DataError

log = logging.getLogger(__name__)

MAX_PROXY_EPOCHS = 20.0


@dataclass(frozen=True)
class ProxyPlan:
    train: int
    heldout: int
    proxy: int
    epochs: float
    batch_size: int
    steps: int
    scale: float = 1.0
    notices: tuple[str, ...] = ()

    @property
    def heldout_se_max(self) -> float:
        """Standard error of a 0.5 accuracy on the held-out slice: the largest of any accuracy-like metric."""
        return 0.5 / math.sqrt(self.heldout)

    def to_dict(self) -> dict[str, object]:
        doc = asdict(self)
        doc["notices"] = list(self.notices)
        doc["heldout_se_max"] = round(self.heldout_se_max, 6)
        return doc

    def line(self) -> str:
        return (f"proxy plan: {self.proxy} of {self.train} train rows x {self.epochs:g} epoch(s) = {self.steps} "
                f"optimizer steps per candidate (batch {self.batch_size}), held-out slice {self.heldout} rows "
                f"(standard error <= {self.heldout_se_max:.4f})" + (f", budget x{self.scale:g}" if self.scale != 1
                                                                    else ""))  # fmt: skip


def plan_proxy(n: int, proxy_fraction: float, heldout_size: int, epochs: float, batch_size: int,
               min_rows: int = 0, min_steps: int = 0, scale: float = 1.0) -> ProxyPlan:  # fmt: skip
    """The plan for a train split of ``n`` rows (see the module doc); DataError below 2 rows. Its notices
    (sizes scaled down to fit the split) are logged."""
    plan = _plan(n, proxy_fraction, heldout_size, epochs, batch_size, min_rows, min_steps, scale)
    for notice in plan.notices:
        log.warning("notice: %s", notice)
    return plan


def _plan(n: int, proxy_fraction: float, heldout_size: int, epochs: float, batch_size: int, min_rows: int,
          min_steps: int, scale: float) -> ProxyPlan:  # fmt: skip
    if n < 2:
        raise DataError(f"the training split has {n} row(s); a search needs at least 2")
    notices: list[str] = []
    heldout = min(heldout_size, max(1, n // 5))
    if heldout < heldout_size:
        notices.append(f"held-out slice scaled down from heldout_size {heldout_size} to {heldout} rows (a fifth of "
                       f"the {n} train rows)")  # fmt: skip
    rest = n - heldout
    asked = max(1, round(proxy_fraction * n), int(min_rows))
    want = max(1, round(asked * scale))
    proxy = min(rest, want)
    if asked > rest:
        notices.append(f"proxy set scaled down from {asked} to {proxy} rows (the {n} train rows less the "
                       f"{heldout}-row held-out slice); sizes that fit: proxy_min_rows <= {rest}")  # fmt: skip
    per_epoch = max(1, math.ceil(proxy / batch_size))
    if scale == 1:
        steps_wanted = max(float(epochs) * per_epoch, float(min_steps))
    else:  # the steps of the unscaled plan, times scale
        steps_wanted = scale * _plan(n, proxy_fraction, heldout_size, epochs, batch_size, min_rows, min_steps,
                                     1.0).steps  # fmt: skip
    final = min(max(float(epochs), steps_wanted / per_epoch), MAX_PROXY_EPOCHS)
    final = math.ceil(final * 100 - 1e-9) / 100
    return ProxyPlan(n, heldout, proxy, final, batch_size, math.ceil(final * per_epoch - 1e-9), scale,
                     tuple(notices))


MAX_FINAL_EPOCHS = 20.0  # a tiny train split (WNLI's 635 rows) is not repeated past this for final_min_steps


def final_epochs(rows: int, epochs: float, batch_size: int, min_steps: int) -> float:
    """Epochs of the final distillation on ``rows`` training rows: ``epochs``, raised so it makes at least
    ``min_steps`` optimizer steps (at most :data:`MAX_FINAL_EPOCHS`, never below ``epochs``).

    Why: a fixed epoch count gives a small task few steps (STS-B: 5,749 rows x 2 epochs = 360 steps at batch 32),
    and a student sliced from a few teacher layers is still far from converged there; docs/RESULTS.md measures it.
    """
    if min_steps <= 0 or rows <= 0:
        return epochs
    per_epoch = math.ceil(rows / batch_size)
    if per_epoch * epochs >= min_steps:
        return epochs
    return max(epochs, min(MAX_FINAL_EPOCHS, round(min_steps / per_epoch, 2)))
