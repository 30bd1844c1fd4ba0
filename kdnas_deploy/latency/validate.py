"""``latency validate`` and ``--recalibrate``: judge a table against freshly measured whole models.

Validation draws ``n`` architectures of the table's space (by default *held out*: depths the table did not
measure), sends each through the same deployed path, measures them like the build does (readings spaced in
time, probe, fast-state readings only) and compares with the table's prediction, raw and re-anchored to the
probe measured in the same window. It also reports the noise floor (one model in several fresh sessions) and
the error of the simpler 2-anchor scheme on the same points, which is how the piecewise scheme is justified.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import TableError
from kdnas_deploy.io import atomic_write_json
from kdnas_deploy.latency.anchor import anchor_decision, anchor_factors, anchor_probes, probe_spread_pct
from kdnas_deploy.latency.backends import Backend, get_backend
from kdnas_deploy.latency.measure import LARGE_PROBE_ARCH, PROBE_ARCH, Job, MeasurePolicy, Measurer
from kdnas_deploy.latency.profiler import prepare_all
from kdnas_deploy.latency.scheme import piecewise
from kdnas_deploy.latency.seq_check import check_held_out, held_out_jobs, held_out_report
from kdnas_deploy.latency.stats import measurement_seconds, wilson_lower
from kdnas_deploy.latency.table import LatencyTable
from kdnas_deploy.runtime.timing import TimingPolicy

REPORT_SCHEMA_VERSION = 1


def policy_from_table(table: LatencyTable) -> MeasurePolicy:
    raw = dict(table.data.get("measurement", {}).get("policy") or {})
    if not raw:
        return MeasurePolicy()
    try:
        raw["timing"] = TimingPolicy(**raw["timing"])
        raw["probe_timing"] = TimingPolicy(**raw["probe_timing"])
        return MeasurePolicy(**raw)
    except (KeyError, TypeError) as exc:
        raise TableError(f"{table.source}: corrupt measurement policy ({exc})") from None


def backend_for(table: LatencyTable, strict: bool = True) -> Backend:
    """The backend the table was built with, checked against this machine and the table's deployed path."""
    table.check_machine(strict=strict)
    backend = get_backend(table.device, table.precision, threads=table.threads, backend=table.backend)
    want = {k: table.fingerprint.get(k) for k in backend.path_config()}
    if want != backend.path_config():
        raise TableError(f"table {table.source} was measured through {want}, this build uses {backend.path_config()}")
    return backend


def metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    err = 100.0 * (pred - meas) / meas
    rho = float(spearmanr(pred, meas).statistic) if len(pred) > 2 else float("nan")
    in5, in10 = int(np.sum(np.abs(err) <= 5.0)), int(np.sum(np.abs(err) <= 10.0))
    return {
        "mape_pct": round(float(np.mean(np.abs(err))), 3),
        "within_5pct": round(in5 / len(err), 4),
        "within_10pct": round(in10 / len(err), 4),
        "within_5pct_wilson_low": round(wilson_lower(in5, len(err)), 4),
        "within_10pct_wilson_low": round(wilson_lower(in10, len(err)), 4),
        "spearman": round(rho, 4),
        "max_abs_error_pct": round(float(np.max(np.abs(err))), 3),
        "bias_pct": round(float(np.mean(err)), 3),
    }


DEFAULT_N = 100  # supports a ~95% claim within a few points


def draw_archs(table: LatencyTable, n: int | None, seed: int, include_anchors: bool = False) -> list[Architecture]:
    """``n`` distinct members of the table's space (held-out depths unless ``include_anchors``); ``n=None``:
    :data:`DEFAULT_N`, or every candidate when the space has fewer (the default space has 96 held-out)."""
    pool = [a for a in table.space.members if include_anchors or a.num_layers not in table.anchors]
    if n is None:
        n = min(DEFAULT_N, len(pool))
    if n < 1:
        raise TableError(f"--n must be at least 1, got {n}")
    if n > len(pool):
        what = "members" if include_anchors else "held-out members (depths not measured by the table)"
        raise TableError(f"cannot draw {n} distinct {what} from space {table.space.name!r}: it has {len(pool)}")
    rng = np.random.default_rng(seed)
    return [pool[int(i)] for i in rng.choice(len(pool), size=n, replace=False)]


def validate_table(
    table: LatencyTable,
    n: int | None = None,
    seed: int = 0,
    report: str | Path | None = None,
    plot: str | Path | None = None,
    batch: int | None = None,
    seq: int | None = None,
    include_anchors: bool = False,
    noise_sessions: int = 5,
    policy: MeasurePolicy | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    export_workers: int = 0,
    wait_s: float = 60.0,
    seq_held_out: Sequence[int] = (),
) -> dict[str, Any]:
    """Measure ``n`` drawn architectures and compare with the table (see module doc); returns the report.
    ``seq_held_out``: lengths between the grid's, measured too (section ``seq_held_out``, :mod:`.seq_check`)."""
    from tqdm.auto import tqdm

    backend = backend_for(table, strict=True)
    b = table.batch_sizes[0] if batch is None else int(batch)
    s = table.seq_lens[0] if seq is None else int(seq)
    table.predict(table.space.members[:1], b, s)  # grid check before any work
    held = check_held_out(table.seq_lens, seq_held_out)
    archs = draw_archs(table, n, seed, include_anchors)
    policy = policy or policy_from_table(table)
    at = f" at {1 + len(held)} lengths" if held else ""
    log(f"validating {n} models{at}: about "
        f"{measurement_seconds(table, n * (1 + len(held))):.0f} s (the table's time per model)")  # fmt: skip
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="kdnas-validate-") as tmp:
        work = Path(tmp)
        todo = [(PROBE_ARCH, work / "probe"), (LARGE_PROBE_ARCH, work / "probe-large")]
        todo += [(a, work / f"m{i}") for i, a in enumerate(archs)]
        paths = prepare_all(backend, todo, seed, export_workers, progress)
        probe, large = paths[:2] if "large" in table.probe else (paths[0], None)
        jobs = [Job(f"{i}:{a.short()}", p, b, s) for i, (a, p) in enumerate(zip(archs, paths[2:], strict=True))]
        extra = held_out_jobs(jobs, held)  # the same models at the held-out lengths
        mbar = tqdm(total=len(jobs + extra) * policy.rounds, desc="measure", unit="reading", disable=not progress,
                    dynamic_ncols=True)  # fmt: skip
        say: Callable[[str], None] = mbar.write if progress else log
        measurer = Measurer(backend, probe, policy, log=say, progress=mbar, large_probe_artifact=large)
        in_state = measurer.wait_for_state(table.probe_ms, timeout_s=wait_s)
        results = measurer.run(jobs + extra)
        mbar.close()
        raw = table.predict(archs, b, s, calibrated=False)
        noise = noise_floor(backend, jobs[int(np.argsort(raw)[len(raw) // 2])], policy.timing, noise_sessions)
    probe_window = measurer.probe_summary()
    anchor = anchor_decision(table.probe, probe_window, noise["noise_floor_pct"])
    factors = anchor_factors(raw, table.probe, anchor)
    measured = np.array([results[j.key].latency_ms for j in jobs])
    anchored = raw * factors
    table_name = Path(str(table.source)).name  # the report lives beside its table
    out: dict[str, Any] = {"schema_version": REPORT_SCHEMA_VERSION, "table": table_name, "n": n, "seed": seed}
    out.update(metrics(anchored, measured))
    out.update({f"raw_{k}": v for k, v in metrics(raw, measured).items()})
    out["noise_floor_pct"] = noise["noise_floor_pct"]
    out.update(
        batch=b, seq=s, held_out_only=not include_anchors, device=table.device, backend=table.backend,
        precision=table.precision, anchor=anchor, anchor_scale=anchor["factor"], probe_window=probe_window,
        anchor_scale_large=anchor["factor_large"], anchoring="two-probe" if large else "one-probe",
        table_probe_ms=table.probe_ms, noise=noise, started_in_table_state=in_state,
        unsettled_models=int(sum(results[j.key].state != "fast" for j in jobs)),
        scheme_ablation=ablation(table, archs, b, s, factors, measured),
        measured_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), seconds=round(time.time() - t0, 1),
        fingerprint=backend.fingerprint(),
    )  # fmt: skip
    out["points"] = report_points(archs, anchored, raw, measured, [results[j.key] for j in jobs])
    if held:
        out["seq_held_out"] = held_out_report(table, archs, jobs, held, results, anchor, metrics)
    if report:
        atomic_write_json(report, out)
    if plot:
        plot_report(out, plot)
    return out


def report_points(archs: Sequence[Architecture], anchored: np.ndarray, raw: np.ndarray, measured: np.ndarray,
                  results: Sequence[Any]) -> list[dict[str, Any]]:  # fmt: skip
    """One report point per model: predicted (re-anchored and raw), measured, errors and how it was measured."""
    return [
        {
            "arch": a.to_dict(),
            "predicted_ms": round(float(p), 5),
            "measured_ms": round(float(m), 5),
            "raw_predicted_ms": round(float(r), 5),
            "error_pct": round(float(100 * (p - m) / m), 3),
            "raw_error_pct": round(float(100 * (r - m) / m), 3),
            **{k: v for k, v in res.to_dict().items() if k != "latency_ms"},
        }
        for a, p, r, m, res in zip(archs, anchored, raw, measured, results, strict=True)
    ]


def noise_floor(backend: Backend, job: Job, timing: TimingPolicy, sessions: int) -> dict[str, Any]:
    """One model measured in ``sessions`` fresh sessions back to back: (max - min) / median of their medians."""
    meds = []
    for _ in range(max(sessions, 2)):
        runner = backend.open(job.artifact, job.batch, job.seq)
        try:
            meds.append(runner.time(timing).median_ms)
        finally:
            runner.close()
    arr = np.array(meds)
    return {
        "model": job.key.split(":", 1)[1],
        "sessions": len(meds),
        "session_medians_ms": [round(float(x), 5) for x in arr],
        "noise_floor_pct": round(float(100 * (arr.max() - arr.min()) / np.median(arr)), 3),
    }


def ablation(table: LatencyTable, archs: Sequence[Architecture], batch: int, seq: int, scale: np.ndarray,
             measured: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Errors on the same points of schemes that use fewer anchors (e.g. 1 and 3 layers, extrapolated)."""
    out: dict[str, Any] = {}
    anchors = list(table.anchors)
    if len(anchors) < 3 or seq not in table.seq_lens:
        return out
    rows, depths = table.indices(archs)
    sub = table._array[rows, table.batch_sizes.index(batch), table.seq_lens.index(seq)]
    for keep in (anchors[:2], [anchors[0], anchors[-1]]):
        idx = [anchors.index(d) for d in keep]
        pred = piecewise(depths, keep, sub[:, idx]) * scale
        name = "anchors_" + "_".join(map(str, keep))
        out[name] = {k: v for k, v in metrics(pred, measured).items() if k in ("mape_pct", "within_10pct", "bias_pct")}
    return out


def plot_report(report: dict[str, Any], path: str | Path, budget_ms: float | None = None) -> Path:
    """Measured against predicted (raw, and re-anchored to the probe measured in the same window), with the
    +-10% band;
    ``budget_ms`` draws a latency budget as a horizontal line on the measured axis.

    Drawn on a :class:`matplotlib.figure.Figure` (the object API): matplotlib's global backend is left alone.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    pts = report["points"]
    meas = np.array([p["measured_ms"] for p in pts])
    pred = np.array([p["predicted_ms"] for p in pts])
    raw = np.array([p["raw_predicted_ms"] for p in pts])
    values = [meas, pred, raw] + ([np.array([budget_ms])] if budget_ms else [])
    lo, hi = min(float(v.min()) for v in values) * 0.85, max(float(v.max()) for v in values) * 1.15
    xs = np.linspace(lo, hi, 50)
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="tab:green", alpha=0.15, label="±10%")
    ax.plot(xs, xs, color="k", lw=0.8)
    ax.scatter(raw, meas, s=14, marker="x", color="tab:gray", label=f"raw table (MAPE {report['raw_mape_pct']:.1f}%)")
    within = 100 * report["within_10pct"]
    label = f"re-anchored (MAPE {report['mape_pct']:.1f}%, {within:.0f}% in ±10%)"
    ax.scatter(pred, meas, s=18, color="tab:blue", label=label)
    if budget_ms:
        ax.axhline(budget_ms, color="tab:red", ls="--", lw=1.0, label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"predicted latency (ms); dots re-anchored to the probe ({report.get('anchoring', 'one-probe')})")
    ax.set_ylabel("measured latency (ms)")
    ax.set_title(f"{report['device']} {report['precision']} b{report['batch']} s{report['seq']}: "
                 f"n={report['n']}, noise floor {report['noise_floor_pct']:.1f}%", fontsize=10)  # fmt: skip
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return Path(path)


def recalibrate(table: LatencyTable, path: str | Path, readings: int = 5, log: Callable[[str], None] = print) -> float:
    """Re-anchor the table to this machine's present speed with a few probe readings; saved into the file.

    Returns the small probe's scale; the large probe is measured too when the table has one.
    """
    issues = table.check_machine()
    for issue in issues:
        log(f"warning: {issue}")
    backend = backend_for(table, strict=False)
    policy = policy_from_table(table)
    with tempfile.TemporaryDirectory(prefix="kdnas-probe-") as tmp:
        probe = backend.prepare(PROBE_ARCH, Path(tmp) / "probe")
        large = backend.prepare(LARGE_PROBE_ARCH, Path(tmp) / "probe-large") if "large" in table.probe else None
        m = Measurer(backend, probe, policy, log=log, large_probe_artifact=large)
        for i in range(max(readings, 1)):
            m.measure_large_probe() if large is not None and i % 2 == 0 else m.measure_probe()
    summary = m.probe_summary()
    noise = max(probe_spread_pct(summary, policy.state_tolerance),
                float(table.data.get("measurement", {}).get("noise_floor_pct") or 0.0))  # fmt: skip
    anchor = anchor_decision(table.probe, summary, noise)
    log(f"probe re-anchoring: factor {anchor['factor']:.4f} ({anchor['reason']})")
    _, now = anchor_probes(table.probe, anchor)
    info = {"calibrated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "readings_ms": summary["readings_ms"],
            "anchor": anchor}  # fmt: skip
    scale = table.set_calibration(now, info)
    table.save(path)
    return scale
