"""``search.png``: proxy metric vs predicted latency, one panel per budget, search-target line and Pareto front."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kdnas_deploy.search.budget import BudgetSet


def plot_search(
    path: str | Path,
    records: list[dict[str, Any]],
    front: list[dict[str, Any]],
    budgets: BudgetSet,
    best: dict[str, Any] | None,
    title: str = "",
) -> Path:
    from matplotlib.figure import Figure

    names = budgets.names
    fig = Figure(figsize=(6.0 * len(names), 4.5))  # the object API: no pyplot, no global backend switch
    axes = fig.subplots(1, len(names), squeeze=False)
    episodes = [r["episode"] for r in records]
    for ax, (j, name) in zip(axes[0], enumerate(names), strict=True):
        xs = [r["latency_ms"][name] for r in records]
        ys = [r["proxy_metric"] for r in records]
        sc = ax.scatter(xs, ys, c=episodes, cmap="viridis", s=28, alpha=0.85, label="candidates")
        fx = [r["latency_ms"][name] for r in front]
        fy = [r["proxy_metric"] for r in front]
        order = sorted(range(len(fx)), key=lambda i: fx[i])
        ax.plot(
            [fx[i] for i in order],
            [fy[i] for i in order],
            "r-o",
            ms=4,
            lw=1.2,
            mfc="none",
            label="Pareto front",
        )
        # the latency the search had to fit: the budget less any headroom (the deployed model is checked
        # against the budget itself, in the run report), so not labelled "budget"
        target = budgets.budget_ms[j]
        ax.axvline(target, color="k", ls="--", lw=1, label=f"search target {target:g} ms")
        if best is not None:
            ax.scatter(
                [best["latency_ms"][name]],
                [best["proxy_metric"]],
                marker="*",
                s=220,
                c="gold",
                edgecolors="k",
                zorder=5,
                label=f"best {best['arch_str']}",
            )
        ax.set_xlabel(f"predicted latency [ms] ({name})")
        ax.set_ylabel(f"proxy metric ({records[0]['metric_kind'] if records else ''})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.colorbar(sc, ax=axes[0, -1], label="episode")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
