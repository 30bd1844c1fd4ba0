"""Transfer of a latency table: fitting on synthetic data, model selection, bad input, the written table;
the re-anchoring rule and the Wilson bound. Measurement is faked except in one tiny real end-to-end test."""

import hashlib
import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import TableError
from kdnas_deploy.latency.anchor import anchor_decision, anchor_factors
from kdnas_deploy.latency.backends import CpuOrtBackend, CudaOrtBackend
from kdnas_deploy.latency.measure import Measured
from kdnas_deploy.latency.stats import measurement_seconds, wilson_lower
from kdnas_deploy.latency.table import TABLE_KIND, TABLE_SCHEMA_VERSION, LatencyTable
from kdnas_deploy.latency.transfer import choose_models, fixed_costs, point_features, transfer_table
from kdnas_deploy.latency.transfer_fit import ORDER, Features, select_correction
from kdnas_deploy.space import SearchSpace

SPACE = {"name": "synth", "choices": {"num_layers": [1, 2, 3, 4, 5, 6], "hidden_size": [32, 64, 96, 128],
                                      "num_heads": [2], "ffn_size": [64, 128]}}  # fmt: skip
ANCHORS = (1, 3, 6)


def _cost(h: int, f: int, d: int) -> float:
    """A reference with a fixed cost and a per-layer cost that grows with depth (so segments differ)."""
    fixed = 0.2 + 0.002 * h
    per = 0.01 * h / 32 + 0.004 * f / 64
    return fixed + per * d * (1 + 0.02 * d)


def _backend(threads=1, precision="fp32"):
    return CpuOrtBackend(precision=precision, threads=threads)


def _reference(tmp_path, name="ref.json", space=SPACE, **over):
    sp = SearchSpace.from_dict(space)
    be = _backend()
    entries = [{"num_layers": d, "hidden_size": h, "num_heads": a, "ffn_size": f, "batch": 1, "seq": 16,
                "latency_ms": round(_cost(h, f, d), 6), "state": "fast"}
               for (h, a, f) in sp.variants for d in ANCHORS]  # fmt: skip
    data = {"schema_version": TABLE_SCHEMA_VERSION, "kind": TABLE_KIND, "created_at": "2026-01-01T00:00:00Z",
            "space": sp.to_dict(), "device": "cpu", "backend": "cpu-ort", "precision": "fp32", "batch_sizes": [1],
            "seq_lens": [16], "fingerprint": {**be.fingerprint(), "cpu_model": "Some Other CPU", "threads": 2},
            "scheme": {"name": "in-context-piecewise", "anchor_depths": list(ANCHORS)},
            "measurement": {"build_seconds": 50.0}, "entries": entries,
            "probe": {"latency_ms": 1.0, "fast_reference_ms": 0.96, "readings_ms": [0.96, 1.0, 1.02]},
            "calibration": {"scale": 1.0}, **over}  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _fake_measure(truth):
    """A measure function: each model's latency is ``truth(reference_ms, fixed_ms, hidden)``."""

    def measure(backend, archs, batch, seq, policy, seed, log, progress, workers):
        feats = point_features(measure.ref, archs, batch, seq)
        ms = truth(feats.ref, feats.fixed, feats.hidden)
        results = [Measured(float(m), 1.0, float(m), float(m), 20, [float(m)] * 3, 3, "fast") for m in ms]
        probe = {"latency_ms": 0.8, "fast_reference_ms": 0.78, "readings_ms": [0.78, 0.8]}
        measure.calls += 1
        return results, probe, SimpleNamespace(state_changes=0)

    measure.calls = 0
    return measure


def _features(ref, archs):
    return point_features(ref, archs, 1, 16)


# ---------------------------------------------------------------------------------------------- fitting
@pytest.mark.parametrize("truth,model,params", [
    (lambda r, fx, h: 1.37 * r, "scale", {"scale": 1.37}),
    (lambda r, fx, h: 0.9 * r + 0.25, "scale_offset", {"scale": 0.9, "offset_ms": 0.25}),
    (lambda r, fx, h: 1.5 * fx + 0.7 * (r - fx), "fixed_layer", {"fixed_scale": 1.5, "layer_scale": 0.7}),
])  # fmt: skip
def test_known_corrections_are_recovered_exactly(tmp_path, truth, model, params):
    ref = LatencyTable.load(_reference(tmp_path))
    archs = choose_models(ref, 10, 1, 16)
    f = _features(ref, archs)
    sel = select_correction(f, truth(f.ref, f.fixed, f.hidden))
    assert sel["model"] == model
    for key, value in params.items():
        assert sel["params"][key] == pytest.approx(value, rel=1e-9, abs=1e-9)
    assert sel["loo"][model]["loo_mape_pct"] == pytest.approx(0.0, abs=1e-6)


def test_per_hidden_truth_picked_only_when_enough_points(tmp_path):
    ref = LatencyTable.load(_reference(tmp_path))
    scales = {32: 1.1, 64: 1.3, 96: 0.8, 128: 1.6}

    def truth(r, fx, h):
        return r * np.array([scales[int(x)] for x in h])

    f10 = _features(ref, choose_models(ref, 10, 1, 16))
    assert len(set(f10.hidden.tolist())) == 4
    sel = select_correction(f10, truth(f10.ref, f10.fixed, f10.hidden))
    assert sel["model"] == "per_hidden" and sel["params"]["scale_by_hidden"]["96"] == pytest.approx(0.8)
    for k in (3, 4, 6):  # at most K // 2 parameters: 4 hidden sizes need K >= 8
        f = _features(ref, choose_models(ref, k, 1, 16))
        sel = select_correction(f, truth(f.ref, f.fixed, f.hidden))
        assert sel["n_params"] <= max(1, k // 2)
        assert all(not row["allowed"] for row in sel["loo"].values() if row["n_params"] > k // 2)


def test_fixed_and_per_hidden_layer_scales_are_recovered(tmp_path):
    ref = LatencyTable.load(_reference(tmp_path))
    layer = {32: 1.4, 64: 1.7, 96: 1.8, 128: 1.9}
    f = _features(ref, choose_models(ref, 10, 1, 16))
    y = 1.1 * f.fixed + np.array([layer[int(h)] for h in f.hidden]) * (f.ref - f.fixed)
    sel = select_correction(f, y)
    assert sel["model"] == "fixed_layer_hidden" and sel["n_params"] == 5
    assert sel["params"]["fixed_scale"] == pytest.approx(1.1)
    assert sel["params"]["layer_scale_by_hidden"] == pytest.approx({str(h): v for h, v in layer.items()})


def test_scale_drifting_with_the_work_size_is_recovered(tmp_path):
    ref = LatencyTable.load(_reference(tmp_path))
    f = _features(ref, choose_models(ref, 10, 1, 16))
    sel = select_correction(f, f.ref * (1.6 + 0.2 * np.log(f.unit)))
    assert sel["model"] == "scale_by_cost"
    assert sel["params"] == pytest.approx({"scale": 1.6, "log_cost_slope": 0.2})


def test_simple_truth_with_noise_picks_the_simple_model(tmp_path):
    ref = LatencyTable.load(_reference(tmp_path))
    f = _features(ref, choose_models(ref, 10, 1, 16))
    noise = 1 + 0.01 * np.sin(np.arange(len(f)) * 2.3)
    sel = select_correction(f, 1.25 * f.ref * noise)
    assert sel["model"] == "scale" and sel["params"]["scale"] == pytest.approx(1.25, rel=0.01)


def test_two_points_fit_the_scale_only():
    f = Features(np.array([1.0, 2.0]), np.array([0.5, 0.5]), np.array([32, 64]))
    sel = select_correction(f, np.array([2.0, 4.0]))
    assert sel["model"] == "scale" and sel["max_params"] == 1 and sel["params"]["scale"] == pytest.approx(2.0)


def test_choose_models_span_depths_and_costs(tmp_path):
    ref = LatencyTable.load(_reference(tmp_path))
    archs = choose_models(ref, 10, 1, 16)
    assert len(set(archs)) == 10
    assert {a.num_layers for a in archs} == {1, 6}
    assert len({a.variant for a in archs}) >= 6
    every = choose_models(ref, len(ref.space), 1, 16)
    assert set(every) == set(ref.space.members)
    fx = fixed_costs(ref)
    assert fx.shape == (len(ref.space.variants), 1, 1) and np.all(fx > 0)


# ---------------------------------------------------------------------------------------------- the table
def test_transferred_table_loads_predicts_and_records_its_origin(tmp_path):
    path = _reference(tmp_path)
    ref = LatencyTable.load(path)
    measure = _fake_measure(lambda r, fx, h: 1.2 * fx + 1.9 * (r - fx))
    measure.ref = ref
    out = tmp_path / "new.json"
    logs = []
    table = transfer_table(path, _backend(), k=10, out=out, measure=measure, log=logs.append)
    assert any("about" in m and "10 models" in m for m in logs)  # the time estimate at the start
    again = LatencyTable.load(out)
    assert again.data == json.loads(json.dumps(table.data))
    data = again.data
    assert data["derived_from"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["derived_from"]["fingerprint"]["cpu_model"] == "Some Other CPU"
    assert data["fingerprint"]["threads"] == 1 and data["fingerprint"]["cpu_model"] != "Some Other CPU"
    assert data["probe"]["latency_ms"] == 0.8 and again.check_machine() == []
    tr = data["transfer"]
    assert tr["model"] == "fixed_layer" and tr["k"] == 10 and len(tr["points"]) == 10
    assert set(tr["loo"]) == set(ORDER)
    for p in tr["points"]:
        assert p["measured_ms"] == pytest.approx(p["predicted_ms"], rel=1e-4) and "reference_ms" in p
    members = list(ref.space.members)
    fx = fixed_costs(ref)[ref.indices(members)[0], 0, 0]
    want = 1.2 * fx + 1.9 * (ref.predict(members) - fx)
    np.testing.assert_allclose(again.predict(members), want, rtol=1e-4)
    summary = again.summary()
    assert summary["members"] == len(ref.space) and measurement_seconds(again, 8) > 0
    assert summary["derived_from"] == "ref.json" and summary["transfer_correction"] == "fixed_layer"


def test_validate_and_search_read_a_transferred_table(tmp_path):
    from kdnas_deploy.latency.validate import draw_archs, metrics, policy_from_table

    path = _reference(tmp_path)
    measure = _fake_measure(lambda r, fx, h: 2.0 * r)
    measure.ref = LatencyTable.load(path)
    out = tmp_path / "new.json"
    transfer_table(path, _backend(), k=4, out=out, measure=measure, log=lambda m: None)
    table = LatencyTable.load(out)
    policy_from_table(table)
    archs = draw_archs(table, 5, seed=0)
    pred = table.predict(archs)
    assert metrics(pred, pred)["mape_pct"] == 0.0


def _no_write(tmp_path, path, backend, match, **kw):
    out = tmp_path / "never.json"
    measure = _fake_measure(lambda r, fx, h: r)
    with pytest.raises(TableError, match=match):
        transfer_table(path, backend, out=out, measure=measure, log=lambda m: None, **kw)
    assert not out.exists() and measure.calls == 0


def test_bad_input_is_one_typed_error_and_writes_nothing(tmp_path):
    path = _reference(tmp_path)
    other = SearchSpace.from_dict({**SPACE, "name": "other", "choices": {**SPACE["choices"], "num_layers": [1, 2]}})
    _no_write(tmp_path, path, _backend(), "not of the space asked", space=other)
    _no_write(tmp_path, path, _backend(precision="int8"), "fp32 table, the target precision is int8")
    _no_write(tmp_path, path, CudaOrtBackend(precision="fp32", threads=1), "cpu table and the target is cuda")
    _no_write(tmp_path, path, _backend(), "at least 2", k=1)
    _no_write(tmp_path, path, _backend(), "exceeds the 48 architectures", k=49)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{broken")
    _no_write(tmp_path, corrupt, _backend(), "not valid JSON")
    future = _reference(tmp_path, "future.json", schema_version=TABLE_SCHEMA_VERSION + 1)
    _no_write(tmp_path, future, _backend(), "newer than this kdnas-deploy supports")
    exists = tmp_path / "exists.json"
    exists.write_text("{}")
    with pytest.raises(TableError, match="already exists"):
        transfer_table(path, _backend(), out=exists, measure=_fake_measure(lambda r, fx, h: r))
    assert exists.read_text() == "{}"
    with pytest.raises(TableError, match="the reference table itself"):
        transfer_table(path, _backend(), out=path, force=True, measure=_fake_measure(lambda r, fx, h: r))


def test_cli_bad_input_one_line_exit_2(tmp_path):
    path = _reference(tmp_path)
    out = tmp_path / "o.json"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "kdnas_deploy", "latency", "transfer", *args],
                              capture_output=True, text=True)  # fmt: skip

    for args, needle in ((["--measure", "1"], "at least 2"), (["--device", "cuda"], "cpu table and the target")):
        r = run(str(path), "--out", str(out), *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and not out.exists()


# ---------------------------------------------------------------------------------------------- anchoring, Wilson
def test_wilson_lower_bound_known_values():
    assert wilson_lower(95, 100) == pytest.approx(0.8882, abs=5e-4)
    assert wilson_lower(30, 30) == pytest.approx(0.8865, abs=5e-4)
    assert wilson_lower(0, 10) == 0.0 and wilson_lower(0, 0) == 0.0
    assert wilson_lower(50, 100) == pytest.approx(0.4038, abs=5e-4)


def test_reanchoring_within_noise_is_not_applied():
    table = {"latency_ms": 1.00, "fast_reference_ms": 0.95, "large": {"latency_ms": 5.0}}
    # the median caught a slow spell (1.076x) but the minimum did not move: nothing is applied
    quiet = {"latency_ms": 1.076, "fast_reference_ms": 0.955, "large": {"latency_ms": 5.02}}
    d = anchor_decision(table, quiet, noise_floor_pct=1.0)
    assert d["applied"] is False and d["factor"] == 1.0 and d["reason"].startswith("not applied: within noise")
    assert np.all(anchor_factors(np.array([0.5, 5.0]), table, d) == 1.0)
    slow = {"latency_ms": 1.6, "fast_reference_ms": 1.425, "large": {"latency_ms": 6.0}}
    d = anchor_decision(table, slow, noise_floor_pct=1.0)
    assert d["applied"] and d["factor"] == pytest.approx(1.5) and d["factor_large"] == pytest.approx(1.2)
    f = anchor_factors(np.array([0.95, 5.0]), table, d)
    assert f[0] == pytest.approx(1.5, rel=0.05) and f[1] == pytest.approx(1.2)
    assert anchor_decision(table, slow, noise_floor_pct=60.0)["applied"] is False


# ---------------------------------------------------------------------------------------------- real, tiny
def test_real_transfer_of_the_tiny_table(tiny_table_path, tmp_path):
    from kdnas_deploy.latency.measure import MeasurePolicy

    logging.getLogger("optimum").setLevel(logging.ERROR)
    out = tmp_path / "t.json"
    logs = []
    table = transfer_table(tiny_table_path, _backend(threads=1), k=2, out=out, policy=MeasurePolicy.quick(),
                           export_workers=0, log=logs.append)  # fmt: skip
    assert LatencyTable.load(out).predict(Architecture(2, 64, 2, 64))[0] > 0
    assert table.data["transfer"]["model"] == "scale" and len(table.data["transfer"]["points"]) == 2
    assert sum("[" in m and "ms" in m for m in logs) >= 4  # one line per reading (2 models x 2 rounds)
    from kdnas_deploy.latency.validate import validate_table

    report = validate_table(LatencyTable.load(out), n=1, seq=16, noise_sessions=2, policy=MeasurePolicy.quick(),
                            progress=False, log=logs.append)  # fmt: skip
    anchor = report["anchor"]
    assert set(anchor) >= {"factor", "applied", "noise_floor_pct", "reason"}
    assert report["anchor_scale"] == anchor["factor"] and (anchor["applied"] or anchor["factor"] == 1.0)
    assert 0.0 <= report["within_10pct_wilson_low"] <= report["within_10pct"]
    assert any(m.startswith("validating 1 models: about") for m in logs)


def test_the_noise_floor_is_the_probe_minimums_own_noise_when_the_windows_have_readings():
    from kdnas_deploy.latency.anchor import probe_min_noise_pct

    # the table's window was slow throughout (every reading ~1.2 ms), the present window fast with slow spells:
    # both reproduce their minimum in each half, so a session noise floor of 30% must not block the 0.76 factor
    table = {"latency_ms": 1.21, "fast_reference_ms": 1.11, "readings_ms": [1.22, 1.32, 1.11, 1.19, 1.25, 1.12]}
    window = {"latency_ms": 0.88, "fast_reference_ms": 0.85, "readings_ms": [0.86, 1.20, 0.85, 0.87, 1.10, 0.86]}
    assert probe_min_noise_pct(table) == pytest.approx(100 * 0.01 / 1.11)
    d = anchor_decision(table, window, noise_floor_pct=30.0)
    assert d["applied"] and d["factor"] == pytest.approx(0.85 / 1.11, rel=1e-4)
    assert d["noise_floor_source"].startswith("probe minima")
    # one half of the present window never reached the fast state: its minimum is not reproduced, nothing applied
    quiet_table = {"latency_ms": 0.91, "fast_reference_ms": 0.90, "readings_ms": [0.90, 0.92, 0.91, 0.90]}
    unsettled = {"latency_ms": 0.95, "fast_reference_ms": 0.85, "readings_ms": [1.05, 1.10, 1.02, 0.85, 0.86, 0.90]}
    d = anchor_decision(quiet_table, unsettled, noise_floor_pct=0.0)  # moved 5.6%, its halves 20% apart
    assert not d["applied"] and d["noise_floor_pct"] == pytest.approx(100 * 0.17 / 0.85, rel=1e-3)
    # too few readings for two halves: the caller's noise floor decides
    assert probe_min_noise_pct({"readings_ms": [1.0, 1.1, 1.2]}) is None
    short = {"latency_ms": 0.88, "fast_reference_ms": 0.85, "readings_ms": [0.86, 0.85]}
    assert anchor_decision(table, short, noise_floor_pct=30.0)["applied"] is False


def test_a_large_probe_move_within_its_own_noise_is_not_applied():
    """The AMX Xeon pair's full build against its held-out window (tools/results/latency_transfer.json): the
    small probe stayed (0.995), the large one 'moved' +7.6% because the build's minimum was one lucky reading; its
    own halves are 8% apart, so nothing is applied. A large move beyond its own floor still is."""
    from kdnas_deploy.latency.anchor import large_min_noise_pct

    small_t = [1.26, 1.27, 1.26, 1.28, 1.30, 1.26]
    small_w = [1.2525, 1.26, 1.27, 1.2525, 1.26, 1.27]
    table = {"latency_ms": 1.43, "fast_reference_ms": 1.25839, "readings_ms": small_t,
             "large": {"latency_ms": 15.17235, "readings_ms": [16.62284, 15.17235, 16.37879, 17.92408, 17.56847]}}
    window = {"latency_ms": 1.41, "fast_reference_ms": 1.25246, "readings_ms": small_w,
              "large": {"latency_ms": 16.31884, "readings_ms": [16.75857, 17.01119, 17.32545, 16.31884]}}  # fmt: skip
    assert large_min_noise_pct(table) == pytest.approx(100 * (16.37879 - 15.17235) / 15.17235)
    d = anchor_decision(table, window, noise_floor_pct=1.0)
    assert d["measured_factor_large"] == pytest.approx(16.31884 / 15.17235, rel=1e-4)
    assert not d["applied"] and d["factor"] == 1.0 and d["noise_floor_large_pct"] == pytest.approx(7.95, abs=0.01)
    # the same window 20% slower on the large probe only: beyond its floor, applied
    slow = {**window, "large": {"latency_ms": 18.2, "readings_ms": [18.3, 18.2, 18.4, 18.25]}}
    d = anchor_decision(table, slow, noise_floor_pct=1.0)
    assert d["applied"] and d["factor_large"] == pytest.approx(18.2 / 15.17235, rel=1e-4)
    # without large readings (older tables) the small probe's floor judges both, as before
    bare = {k: {"latency_ms": v["latency_ms"]} if k == "large" else v for k, v in table.items()}
    assert anchor_decision(bare, window, noise_floor_pct=1.0)["applied"] is True  # 7.6% > the small floor
