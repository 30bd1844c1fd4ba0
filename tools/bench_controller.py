"""How well the KD-NAS controller ranks candidates it has not measured, with and without its log-latency prior.

Reads the candidates of finished search runs (``candidates.jsonl``; one latency budget), averages the proxy
metric of each architecture over the runs that measured it, then repeatedly fits the controller on ``n``
random architectures and predicts the others: rank correlation (Spearman) of predictions and measurements,
and the mean measured metric of the 3 architectures it would propose (its top 3) against a random pick.

    python -m tools.bench_controller --budget-ms 2.422769 \\
        work_artifacts/search/bench-sst2-h15/{kdnas,random}-seed{0,1,2} \\
        --json tools/results/controller_prior.json

The runs' proposals are not a uniform sample of the space (the searches chose them), so these figures say
how the two controllers rank *plausible* candidates, which is what the search asks of them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.io import atomic_write_json, read_jsonl

SCHEMA_VERSION = 1
PRIORS = ("none", "log-latency")


def load_measurements(runs: list[Path]) -> tuple[list[Architecture], np.ndarray, np.ndarray]:
    metric: dict[Architecture, list[float]] = {}
    latency: dict[Architecture, float] = {}
    for run in runs:
        for r in read_jsonl(run / "candidates.jsonl"):
            arch = Architecture.from_dict(r["arch"])
            metric.setdefault(arch, []).append(float(r["proxy_metric"]))
            latency[arch] = float(next(iter(r["latency_ms"].values())))
    archs = sorted(metric, key=lambda a: a.as_tuple())
    return archs, np.array([np.mean(metric[a]) for a in archs]), np.array([latency[a] for a in archs])


def evaluate(space: Any, archs: list[Architecture], y: np.ndarray, log_ratio: np.ndarray, n: int, trials: int,
             seed: int) -> dict[str, Any]:  # fmt: skip
    from scipy.stats import spearmanr

    from kdnas_deploy.search.config import ControllerConfig
    from kdnas_deploy.search.controller import RewardController

    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {p: {"spearman": [], "top3_metric": []} for p in PRIORS}
    random_top3 = []
    for t in range(trials):
        idx = rng.permutation(len(archs))
        train, test = idx[:n], idx[n:]
        best = archs[train[int(np.argmax(y[train]))]]
        random_top3.append(float(np.mean(y[rng.choice(test, 3, replace=False)])))
        for prior in PRIORS:
            ctl = RewardController(space, 1, replace(ControllerConfig(), prior=prior), seed=t)
            ctl.fit([archs[i] for i in train], [best] * n, log_ratio[train], y[train])
            pred = ctl.predict([archs[i] for i in test], [best] * len(test), log_ratio[test])
            out[prior]["spearman"].append(float(spearmanr(pred, y[test]).statistic))
            out[prior]["top3_metric"].append(float(np.mean(y[test][np.argsort(-pred)[:3]])))
    return {
        "train_size": n,
        "trials": trials,
        **{
            p: {k: round(float(np.mean(v)), 4) for k, v in out[p].items()}
            | {f"{k}_sd": round(float(np.std(v)), 4) for k, v in out[p].items()}
            for p in PRIORS
        },
        "random_top3_metric": round(float(np.mean(random_top3)), 4),
    }


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--budget-ms", type=float, required=True, help="The budget the runs searched under (log ratios).")
@click.option("--space", default="minilm-l6", show_default=True, help="preset name or space YAML")
@click.option("--train-sizes", default="4,6,9,12", show_default=True)
@click.option("--trials", type=int, default=20, show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def main(runs, budget_ms, space, train_sizes, trials, json_path) -> None:  # noqa: ANN001
    """Rank quality of the controller with and without the log-latency prior (see the module docstring)."""
    from kdnas_deploy.space import SearchSpace

    sp = SearchSpace.load(space)
    archs, y, lat = load_measurements(list(runs))
    log_ratio = np.log(lat / budget_ms)[:, None]
    rows = [evaluate(sp, archs, y, log_ratio, int(n), trials, seed=0) for n in train_sizes.split(",")]
    for r in rows:
        click.echo(
            f"n={r['train_size']:>2}: spearman none {r['none']['spearman']:.3f} / log-latency"
            f" {r['log-latency']['spearman']:.3f}; top-3 metric none {r['none']['top3_metric']:.4f} /"
            f" log-latency {r['log-latency']['top3_metric']:.4f} / random {r['random_top3_metric']:.4f}"
        )
    if json_path:
        atomic_write_json(
            json_path,
            {
                "schema_version": SCHEMA_VERSION,
                "what": "controller rank quality on measured proxy metrics, with and without the log-latency prior",
                "runs": [str(r) for r in runs],
                "architectures": len(archs),
                "budget_ms": budget_ms,
                "results": rows,
            },
        )


if __name__ == "__main__":
    main()
