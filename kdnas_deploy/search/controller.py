"""The KD-NAS controller: an LSTM reading an architecture as a sequence of choices and regresses its reward.

Input at step ``d`` (one step per dimension: layers, hidden, heads, FFN) is the embedding of the candidate's
choice, the embedding of the best architecture's choice so far (context), and the candidate's log latency
ratio to every budget (context). The last hidden state goes through a linear head to the (standardised)
reward. It is refit from scratch on every measured reward (MSE) before each episode, seeded, so a resumed
search proposes exactly what the uninterrupted one would have.

Prior (``ControllerConfig.prior = "log-latency"``, the default): before the LSTM, a ridge regression fits the
standardised reward on ``[1, log_ratio_b, max(log_ratio_b, 0)]`` for every budget ``b`` (a straight line in
log latency with a hinge at the budget); the LSTM then fits what that line leaves, and a prediction is the
sum. With the 3-10 rewards of the first episodes the LSTM alone predicted almost the same reward for every
candidate, so the search kept proposing small members; the line carries the trend those few rewards already
show (students using more of the budget distil better), the LSTM the architecture-specific rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.space import DIMENSIONS, SearchSpace

CONTROLLER_PRIORS = ("log-latency", "none")


@dataclass(frozen=True)
class ControllerConfig:
    """The LSTM reward regressor of the ``kdnas`` strategy and its epsilon-greedy exploration."""

    embed_dim: int = 16
    hidden_dim: int = 32
    train_steps: int = 300
    learning_rate: float = 0.01
    epsilon_start: float = 0.5
    epsilon_end: float = 0.05
    # A ridge regression of the reward on the candidate's log latency ratios (one hinge at each budget) that
    # the LSTM corrects: a handful of rewards already shows "more of the budget, higher accuracy", which the
    # LSTM alone cannot learn from so few samples. "none": the LSTM alone (the original KD-NAS controller).
    prior: str = "log-latency"
    prior_ridge: float = 0.1

    def __post_init__(self) -> None:
        if not (0.0 <= self.epsilon_end <= 1.0 and 0.0 <= self.epsilon_start <= 1.0):
            raise ConfigError("epsilon_start and epsilon_end must be in [0, 1]")
        if self.prior not in CONTROLLER_PRIORS:
            raise ConfigError(f"controller prior must be one of {CONTROLLER_PRIORS}, got {self.prior!r}")
        if not self.prior_ridge >= 0:
            raise ConfigError(f"controller prior_ridge must be >= 0, got {self.prior_ridge}")


@dataclass(frozen=True)
class ControllerFit:
    """What a fit reports: training MSE on standardised rewards and the number of samples."""

    samples: int
    mse: float


def warm_up_training() -> None:
    """Pay torch's one-time costs of a first training step now: the first ``Adam.step()`` of a process imports
    ``torch._dynamo`` (0.9 s here), which made the first :meth:`RewardController.fit` take 1.1 s instead of
    0.2 s. The search calls this in a helper thread while a remote executor starts. Global RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        net = torch.nn.LSTM(2, 2)
        opt = torch.optim.Adam(net.parameters())
        net(torch.zeros(1, 1, 2))[0].sum().backward()
        opt.step()


class RewardController:
    """LSTM reward regressor over a search space (torch imported on construction)."""

    def __init__(self, space: SearchSpace, n_budgets: int, cfg: ControllerConfig, seed: int) -> None:
        import torch
        from torch import nn

        self.space = space
        self.cfg = cfg
        self.n_budgets = n_budgets
        self.vocab = [len(v) for v in space.choice_lists().values()]
        torch.manual_seed(seed)
        self._generator = torch.Generator().manual_seed(seed)

        class _Net(nn.Module):
            def __init__(self, vocab: list[int], embed: int, hidden: int, n_ctx: int) -> None:
                super().__init__()
                self.embeds = nn.ModuleList(nn.Embedding(v, embed) for v in vocab)
                self.lstm = nn.LSTM(2 * embed + n_ctx, hidden, batch_first=True)
                self.head = nn.Linear(hidden, 1)

            def forward(self, tokens: torch.Tensor, best: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
                steps = []
                for d, emb in enumerate(self.embeds):
                    steps.append(torch.cat([emb(tokens[:, d]), emb(best[:, d]), ctx], dim=-1))
                out, _ = self.lstm(torch.stack(steps, dim=1))
                return self.head(out[:, -1]).squeeze(-1)

        self.net = _Net(self.vocab, cfg.embed_dim, cfg.hidden_dim, n_budgets)
        self._mean = 0.0
        self._std = 1.0
        self._prior_w: np.ndarray | None = None  # ridge weights of the prior (None: no prior)

    def _prior(self, log_ratio: np.ndarray) -> np.ndarray:
        """Features of the log-latency prior: intercept, log ratio and its hinge at each budget."""
        lr = np.asarray(log_ratio, dtype=np.float64).reshape(-1, self.n_budgets)
        return np.hstack([np.ones((len(lr), 1)), lr, np.maximum(lr, 0.0)])

    def _fit_prior(self, log_ratio: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Fit the prior by ridge regression (intercept not penalised); returns its fitted values."""
        if self.cfg.prior == "none":
            self._prior_w = None
            return np.zeros(1)
        x = self._prior(log_ratio)
        penalty = self.cfg.prior_ridge * np.eye(x.shape[1])
        penalty[0, 0] = 0.0
        self._prior_w = np.linalg.solve(x.T @ x + penalty + 1e-9 * np.eye(x.shape[1]), x.T @ target)
        return x @ self._prior_w

    def _prior_values(self, log_ratio: np.ndarray) -> np.ndarray:
        return np.zeros(1) if self._prior_w is None else self._prior(log_ratio) @ self._prior_w

    # ------------------------------------------------------------------ features
    def _tensors(self, archs: Sequence[Architecture], best: Sequence[Architecture], log_ratio: np.ndarray):  # noqa: ANN202
        import torch

        tok = torch.tensor([self.space.encode(a) for a in archs], dtype=torch.long).reshape(-1, len(DIMENSIONS))
        bst = torch.tensor([self.space.encode(a) for a in best], dtype=torch.long).reshape(-1, len(DIMENSIONS))
        ctx = torch.tensor(np.asarray(log_ratio, dtype=np.float32).reshape(len(archs), self.n_budgets))
        return tok, bst, ctx

    # ------------------------------------------------------------------ training and scoring
    def fit(
        self,
        archs: Sequence[Architecture],
        best: Sequence[Architecture],
        log_ratio: np.ndarray,
        rewards: Sequence[float],
    ) -> ControllerFit:
        """The prior (if any), then MSE regression of the LSTM on what it leaves (full batch, Adam,
        ``train_steps`` steps), on every measured reward."""
        import torch

        y = np.asarray(rewards, dtype=np.float64)
        self._mean = float(y.mean())
        self._std = float(y.std()) if y.std() > 1e-9 else 1.0
        standardised = (y - self._mean) / self._std
        residual = standardised - self._fit_prior(log_ratio, standardised)
        target = torch.tensor(residual, dtype=torch.float32)
        tok, bst, ctx = self._tensors(archs, best, log_ratio)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.learning_rate)
        self.net.train()
        loss = torch.tensor(0.0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a few hundred samples: threads only add overhead (and contention)
        try:
            for _ in range(self.cfg.train_steps):
                opt.zero_grad()
                loss = torch.mean((self.net(tok, bst, ctx) - target) ** 2)
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        self.net.eval()
        return ControllerFit(samples=len(y), mse=float(loss.detach()))

    def predict(self, archs: Sequence[Architecture], best: Sequence[Architecture], log_ratio: np.ndarray) -> np.ndarray:
        """Predicted rewards (in reward units) of ``archs``."""
        import torch

        if not archs:
            return np.zeros(0)
        tok, bst, ctx = self._tensors(archs, best, log_ratio)
        with torch.no_grad():
            out = self.net(tok, bst, ctx).numpy().astype(np.float64) + self._prior_values(log_ratio)
        return out * self._std + self._mean
