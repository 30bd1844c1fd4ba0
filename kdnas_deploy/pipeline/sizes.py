"""The proxy plan of a ``run`` config's task (:mod:`kdnas_deploy.search.proxy_plan`), checked before anything
is written: sizes that do not fit the train split are scaled down with a logged notice; a split too small for
any search is one line (exit 2)."""

from __future__ import annotations

from typing import Any

from kdnas_deploy.search.proxy_plan import ProxyPlan, plan_proxy


def proxy_plan(config: Any) -> ProxyPlan:
    """The plan the search of ``config`` (a PipelineConfig) will use on its task's train split."""
    from kdnas_deploy.distill.config import DistillConfig
    from kdnas_deploy.tasks import get_task

    s, base = config.search, DistillConfig.proxy()
    n = len(get_task(config.task.name, config.task.data_dir).load_split("train"))
    return plan_proxy(n, s.proxy_fraction, s.heldout_size, s.proxy_epochs or base.epochs, base.batch_size,
                      s.proxy_min_rows, s.proxy_min_steps)  # fmt: skip
