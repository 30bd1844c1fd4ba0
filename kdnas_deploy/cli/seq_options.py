"""``--seq auto``: a sequence length or ``auto`` (the task's p95 token length, see :mod:`kdnas_deploy.tasks.lengths`).

Like :mod:`kdnas_deploy.cli.options`, this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from kdnas_deploy.limits import RANGES

F = TypeVar("F", bound=Callable[..., Any])
AUTO = "auto"


class SeqOrAuto(click.ParamType):
    """A sequence length in the ``seq`` range, or the word ``auto``; returns an int or ``"auto"``."""

    name = "seq|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif str(value).strip().lower() == AUTO:
            return AUTO
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an integer or 'auto'", param, ctx)
        low, high = RANGES["seq"]
        if not low <= number <= high:
            self.fail(f"{number} is not in the range {low}<=x<={high} (or 'auto')", param, ctx)
        return number


class Quantile(click.ParamType):
    """``mean`` or a quantile in (0, 1]; returns a float or ``"mean"``."""

    name = "quantile|mean"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | str:
        if str(value).strip().lower() == "mean":
            return "mean"
        try:
            q = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number or 'mean'", param, ctx)
        if not 0 < q <= 1:
            self.fail(f"{value} is not in (0, 1] (or 'mean')", param, ctx)
        return q


SEQ_OR_AUTO = SeqOrAuto()
QUANTILE = Quantile()


def seq_auto_option(help: str = "Sequence length, or 'auto': the task's p95 token length.") -> Callable[[F], F]:
    return click.option("--seq", "seq", type=SEQ_OR_AUTO, default=None, help=help)


def seq_quantile_option() -> Callable[[F], F]:
    return click.option("--seq-quantile", "seq_quantile", type=QUANTILE, default=0.95, show_default=True,
                        help="With --seq auto: the length quantile the budget applies to, or 'mean'.")  # fmt: skip
