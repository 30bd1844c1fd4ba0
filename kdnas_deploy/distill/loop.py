"""A small resumable training loop: AdamW + linear warmup/decay, length-bucketed batches, checkpoint
every ``checkpoint_every`` steps and at each epoch end, evaluation each epoch (and every ``eval_every`` steps),
best model kept."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas_deploy.distill.data import bucket_batches
from kdnas_deploy.io import make_dirs

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHECKPOINT = "checkpoint.pt"
SIGNATURE = "checkpoint.json"


@dataclass(frozen=True)
class LoopConfig:
    epochs: float
    batch_size: int
    learning_rate: float
    seed: int
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200  # steps; 0 = epoch ends only
    eval_every: int = 0  # steps between mid-epoch evaluations; 0 = epoch ends only
    ema_decay: float = 0.0  # > 0: evaluate (and keep) an exponential moving average of the weights

    @classmethod
    def of(cls, config: Any, **overrides: Any) -> LoopConfig:
        """The loop settings of a training config (DistillConfig, FinetuneConfig: the fields they share with
        this class), with ``overrides``."""
        from dataclasses import fields

        values = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**{**values, **overrides})


@dataclass
class LoopState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: float = -1.0
    best_index: int = -1  # index of the best epoch in ``history``
    loss_sum: float = 0.0
    loss_count: int = 0
    last_epoch_loss: float = float("nan")
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopResult:
    state: LoopState
    resumed_from_step: int


def publish_best(best_dir: Path, *saveables: Any) -> None:
    """Save each object with ``save_pretrained`` into a temporary folder, then replace ``best_dir`` by it (a
    failed write is one :class:`~kdnas_deploy.errors.DiskError` line and leaves no temporary folder)."""
    import shutil

    from kdnas_deploy.io import writing

    tmp = best_dir.with_name(best_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(best_dir):
            for obj in saveables:
                obj.save_pretrained(tmp)
            shutil.rmtree(best_dir, ignore_errors=True)
            tmp.rename(best_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _save_checkpoint(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: Any,
    scheduler: Any,
    state: LoopState,
    signature: dict[str, Any] | None = None,
    ema: WeightAverage | None = None,
) -> None:
    """Tensors and plain containers only (it loads with ``weights_only=True``); the signature also goes to a
    small JSON beside it, checked before the checkpoint is opened at all."""
    import torch

    from kdnas_deploy.io import atomic_write_json, writing

    tmp = path.with_name(f".{path.name}.tmp")
    payload = {
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": asdict(state),
        "torch_rng": torch.get_rng_state(),
        "signature": _jsonable(signature),
        "ema": ema.state_dict() if ema is not None else None,
    }
    with writing(tmp, cleanup=tmp):
        torch.save(payload, tmp)
    atomic_write_json(path.with_name(SIGNATURE), {"signature": _jsonable(signature)})
    with writing(path, cleanup=tmp):
        os.replace(tmp, path)


def _load_checkpoint(ckpt: Path, signature: dict[str, Any] | None, desc: str) -> dict[str, Any] | None:
    """The checkpoint of this run in ``ckpt``'s folder, or None (with one line why) when there is none, it is
    from another run (signature JSON checked first, the checkpoint is not even opened), or it holds anything
    but tensors and plain containers (``weights_only=True``: a planted pickle never runs)."""
    import torch

    if not ckpt.is_file():
        return None
    sig_file = ckpt.with_name(SIGNATURE)
    try:
        stored = json.loads(sig_file.read_text(encoding="utf-8")).get("signature")
    except (OSError, ValueError, AttributeError):
        print(f"{desc}: checkpoint in {ckpt.parent} has no readable {SIGNATURE}; starting afresh", flush=True)
        return None
    if stored != _jsonable(signature):
        print(f"{desc}: checkpoint in {ckpt.parent} is from a different run; starting afresh", flush=True)
        return None
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        import pickle

        if isinstance(exc, pickle.UnpicklingError):
            reason = "it holds more than tensors and plain data; loading it could run code"
        else:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        print(f"{desc}: ignoring the unreadable or unsafe checkpoint {ckpt} ({reason}); starting afresh",
              flush=True)  # fmt: skip
        return None
    if not isinstance(saved, dict) or saved.get("signature") != stored:
        print(f"{desc}: checkpoint {ckpt} does not match its {SIGNATURE}; starting afresh", flush=True)
        return None
    return saved


class WeightAverage:
    """An exponential moving average of ``params`` (decay ramped up as min(decay, (1 + t) / (10 + t)) so that
    early evaluations are not dominated by the initial weights); :meth:`swapped` puts it into the model."""

    def __init__(self, params: list[Any], decay: float) -> None:
        self.params, self.decay, self.steps = params, decay, 0
        self.shadow = [p.detach().clone() for p in params]

    def update(self) -> None:
        import torch

        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own weights again after."""
        import torch

        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], backup)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for mine, saved in zip(self.shadow, state["shadow"], strict=True):
            mine.copy_(saved)


def _evaluate_now(
    state: LoopState,
    n_batches: int,
    evaluate: Callable[[], tuple[dict[str, float], float]],
    on_best: Callable[[], None],
    write: Callable[[str], None],
) -> None:
    """Evaluate, append a row to ``state.history`` and call ``on_best`` when the score improves."""
    metrics, score = evaluate()
    epoch_done = round(state.epoch + state.step_in_epoch / n_batches, 4)
    state.history.append(
        {
            "epoch": epoch_done,
            "train_loss": state.loss_sum / max(1, state.loss_count),
            "step": state.global_step,
            **metrics,
        }
    )
    if score > state.best_score:
        state.best_score, state.best_epoch, state.best_index = score, epoch_done, len(state.history) - 1
        on_best()
    write(
        f"epoch {epoch_done:.2f}: loss {state.history[-1]['train_loss']:.4f} "
        + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )


def _optimizer(config: LoopConfig, params: list[Any], total_steps: int) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) with a linear warmup and decay."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def _restore(saved: dict[str, Any] | None, modules: dict[str, Any], optimizer: Any, scheduler: Any,
             ema: WeightAverage | None) -> LoopState:  # fmt: skip
    """Load a checkpoint into the modules, optimizer, scheduler, RNG and average; its loop state."""
    import torch

    if saved is None:
        return LoopState()
    for k, m in modules.items():
        m.load_state_dict(saved["modules"][k])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if ema is not None and saved.get("ema") is not None:
        ema.load_state_dict(saved["ema"])
    return LoopState(**saved["state"])


def run_loop(
    *,
    config: LoopConfig,
    lengths: np.ndarray,
    modules: dict[str, torch.nn.Module],
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    evaluate: Callable[[], tuple[dict[str, float], float]],
    on_best: Callable[[], None],
    work_dir: Path,
    progress: bool = True,
    desc: str = "train",
    signature: dict[str, Any] | None = None,
) -> LoopResult:
    """Train ``modules`` by minimising ``loss_fn(batch_indices)``; resume from ``work_dir`` if it holds a
    checkpoint. ``evaluate`` runs after each epoch (and at the end of a fractional one) and, with
    ``config.eval_every``, every that many steps within an epoch."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    n_batches = math.ceil(len(lengths) / config.batch_size)
    total_steps = max(1, math.ceil(config.epochs * n_batches))
    optimizer, scheduler = _optimizer(config, params, total_steps)
    ema = WeightAverage(params, config.ema_decay) if config.ema_decay > 0 else None
    make_dirs(work_dir)
    ckpt = work_dir / CHECKPOINT
    state = _restore(_load_checkpoint(ckpt, signature, desc), modules, optimizer, scheduler, ema)
    resumed_from = state.global_step

    bar = tqdm(
        total=total_steps, initial=state.global_step, desc=desc, disable=not progress, dynamic_ncols=True
    )
    while state.global_step < total_steps:
        batches = bucket_batches(lengths, config.batch_size, config.seed, state.epoch)
        remaining = total_steps - (state.global_step - state.step_in_epoch)
        batches = batches[: min(len(batches), remaining)]
        for m in modules.values():
            m.train()
        for idx in batches[state.step_in_epoch :]:
            t0 = time.perf_counter()
            loss = loss_fn(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state.step_in_epoch += 1
            state.global_step += 1
            state.loss_sum += float(loss.detach())
            state.loss_count += 1
            state.train_seconds += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(epoch=state.epoch, loss=f"{state.loss_sum / state.loss_count:.4f}")
            last_of_epoch = state.step_in_epoch == len(batches)
            if ema is not None:
                ema.update()
            if config.eval_every and state.global_step % config.eval_every == 0 and not last_of_epoch:
                with ema.swapped() if ema is not None else nullcontext():
                    _evaluate_now(state, n_batches, evaluate, on_best, bar.write)
                for m in modules.values():
                    m.train()
            if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
                _save_checkpoint(ckpt, modules, optimizer, scheduler, state, signature, ema)
        # epoch (or the fractional tail) done
        state.last_epoch_loss = state.loss_sum / max(1, state.loss_count)
        with ema.swapped() if ema is not None else nullcontext():
            _evaluate_now(state, n_batches, evaluate, on_best, bar.write)
        for m in modules.values():
            m.train()
        state.epoch += 1
        state.step_in_epoch = 0
        state.loss_sum, state.loss_count = 0.0, 0
        _save_checkpoint(ckpt, modules, optimizer, scheduler, state, signature, ema)
    bar.close()
    return LoopResult(state=state, resumed_from_step=resumed_from)
