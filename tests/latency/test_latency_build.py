"""Build: resumable journal, atomic output, validation report, recalibration (real ORT, tiny shapes)."""

import dataclasses
import json
import logging

import pytest

from kdnas_deploy.latency.backends import get_backend
from kdnas_deploy.latency.measure import MeasurePolicy, Measurer
from kdnas_deploy.latency.profiler import JOURNAL, build_table
from kdnas_deploy.latency.table import LatencyTable
from kdnas_deploy.space import SearchSpace

SMALL = {"name": "small", "choices": {"num_layers": [1, 2], "hidden_size": [32], "num_heads": [2], "ffn_size": [64]}}


@pytest.fixture(autouse=True)
def _quiet_optimum():
    logging.getLogger("optimum").setLevel(logging.ERROR)


def test_interrupted_build_resumes_without_remeasuring(tmp_path, monkeypatch):
    space = SearchSpace.from_dict(SMALL)
    backend = get_backend("cpu", "fp32", threads=1)
    # no re-measure passes and no state detection: a busy machine must not add readings to the count below
    policy = dataclasses.replace(MeasurePolicy.quick(), extra_rounds=0, max_spread_pct=1e9, state_tolerance=1e9)
    out, work = tmp_path / "t.json", tmp_path / "work"
    real_read = Measurer._read
    calls = {"n": 0}

    def flaky_read(self, job, round_no):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_read(self, job, round_no)

    monkeypatch.setattr(Measurer, "_read", flaky_read)
    with pytest.raises(KeyboardInterrupt):
        build_table(space, backend, [1], [8], out, policy=policy, workdir=work, progress=False, log=lambda m: None)
    assert not out.exists()  # no half-written table
    kept = [json.loads(x) for x in (work / JOURNAL).read_text().splitlines()]
    n_kept = sum(r["type"] == "reading" for r in kept)
    assert n_kept == 2  # probe_every=4 would flush at 4; the first pass of 2 models was flushed
    calls["n"] = -10**6  # no more interruptions
    logs = []
    table = build_table(space, backend, [1], [8], out, policy=policy, workdir=work, progress=False, log=logs.append)
    assert any("resuming: 2 reading" in m for m in logs)
    assert calls["n"] == -10**6 + 2  # only the second round was measured
    assert table.data["measurement"]["resumed"] is True
    assert LatencyTable.load(out).predict(list(space.members)).shape == (2,)
    assert not work.exists()


def test_state_detection_rejects_slow_state_readings(tmp_path):
    backend = get_backend("cpu", "fp32", threads=1)
    m = Measurer(backend, tmp_path / "unused.onnx", MeasurePolicy(), log=lambda s: None)
    from kdnas_deploy.latency.measure import Reading

    for ms in (2.3, 2.4, 3.6, 3.7, 2.35):
        m.add_probe(ms)
    assert m.state_changes == 2 and m.state == "fast"
    m.readings["x"] = [
        Reading("x", 10.0, 9.8, 10.3, 20, 0, 0.0, 2.3, 2.4),   # fast
        Reading("x", 14.0, 13.5, 14.2, 20, 1, 1.0, 3.6, 3.7),  # slow state: rejected
        Reading("x", 9.0, 5.0, 20.0, 20, 2, 2.0, 2.3, 2.35),   # too noisy: rejected
    ]
    kept = m.summarise("x")
    assert kept.accepted_readings == 1 and kept.latency_ms == 10.0 and kept.state == "fast"
    summary = m.probe_summary()
    assert summary["latency_ms"] == pytest.approx(2.35) and summary["state_changes"] == 2


def test_validate_writes_report_and_plot(tiny_table_path, tmp_path):
    from kdnas_deploy.latency.validate import validate_table

    table = LatencyTable.load(tiny_table_path)
    report, plot = tmp_path / "r.json", tmp_path / "r.png"
    out = validate_table(table, n=2, seed=0, report=report, plot=plot, seq=16, noise_sessions=2, progress=False,
                         log=lambda m: None)
    data = json.loads(report.read_text())
    assert data == json.loads(json.dumps(out))
    for key in ("n", "mape_pct", "within_5pct", "within_10pct", "spearman", "raw_mape_pct", "raw_within_5pct",
                "raw_within_10pct", "raw_spearman", "noise_floor_pct", "points"):
        assert key in data, key
    assert data["n"] == 2 and len(data["points"]) == 2
    for p in data["points"]:
        assert p["arch"]["num_layers"] == 2  # held out: the tiny table measured depths 1, 3, 4
        assert p["measured_ms"] > 0 and p["predicted_ms"] > 0
    assert 0.0 <= data["within_10pct"] <= 1.0
    assert plot.stat().st_size > 1000


def test_recalibrate_rewrites_scale(tiny_table_path, tmp_path):
    from kdnas_deploy.latency.validate import recalibrate

    path = tmp_path / "t.json"
    path.write_bytes(tiny_table_path.read_bytes())
    scale = recalibrate(LatencyTable.load(path), path, readings=2, log=lambda m: None)
    again = LatencyTable.load(path)
    assert again.scale == pytest.approx(scale, rel=1e-4) and scale > 0
    assert again.calibration["probe_ms"] > 0 and len(again.calibration["readings_ms"]) == 2
    assert "large" in again.probe and again.calibration["scale_large"] > 0  # two-probe re-anchoring


def test_export_worker_process_gives_the_same_graph(tmp_path):
    import onnx

    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.profiler import prepare_all

    backend = get_backend("cpu", "int8", threads=1)
    arch = Architecture(1, 32, 2, 64)
    todo = [(arch, tmp_path / "w")]
    (in_worker,) = prepare_all(backend, todo, seed=0, workers=1, progress=False)
    (here,) = prepare_all(backend, [(arch, tmp_path / "h")], seed=0, workers=0, progress=False)
    assert onnx.load(str(in_worker)).graph == onnx.load(str(here)).graph


def test_by_artifact_puts_each_models_shapes_together_in_first_seen_order(tmp_path):
    from kdnas_deploy.latency.measure import Job, by_artifact

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    jobs = [Job("a32", a, 1, 32), Job("b32", b, 1, 32), Job("a64", a, 1, 64), Job("b64", b, 1, 64)]
    assert [j.key for j in by_artifact(jobs)] == ["a32", "a64", "b32", "b64"]
    assert [j.key for j in by_artifact(jobs[::-1])] == ["b64", "b32", "a64", "a32"]  # the odd passes' order


def test_multi_length_build_loads_each_model_once_per_pass(tmp_path, monkeypatch):
    space = SearchSpace.from_dict(SMALL)
    backend = get_backend("cpu", "fp32", threads=1)
    policy = dataclasses.replace(MeasurePolicy.quick(), extra_rounds=0, max_spread_pct=1e9, state_tolerance=1e9)
    loads, reads = [], []
    real_open_shapes, real_read = type(backend).open_shapes, Measurer._read

    def counting_open_shapes(self, artifact):
        loads.append(artifact.parent.name)
        return real_open_shapes(self, artifact)

    def logged_read(self, job, round_no):
        reads.append((round_no, job.artifact.parent.name, job.seq))
        return real_read(self, job, round_no)

    monkeypatch.setattr(type(backend), "open_shapes", counting_open_shapes)
    monkeypatch.setattr(Measurer, "_read", logged_read)
    out = tmp_path / "t.json"
    table = build_table(space, backend, [1], [8, 16, 32], out, policy=policy, progress=False, log=lambda m: None)
    models = {name for _, name, _ in reads}
    assert len(models) == 2 and len(reads) == 2 * 3 * policy.rounds
    assert sorted(n for n in loads if n in models) == sorted(list(models) * policy.rounds)  # not once per shape
    for rnd in range(policy.rounds):  # within a pass, a model's three lengths are read back to back
        names = [name for r, name, _ in reads if r == rnd]
        assert names == sorted(names, key=names.index) and len(set(names[:3])) == 1
    assert table.predict(list(space.members), seq=16).shape == (2,)


def test_probe_cadence_counts_models_not_readings(tmp_path):
    """All of a model's shapes are read between the same two probes: a 3-length pass probes as often as a
    1-length one (probe_every=2 models -> 3 probes for 3 models, not one per 2 readings)."""
    from types import SimpleNamespace

    from kdnas_deploy.latency.measure import Job

    opened = []

    class Runner:
        def __init__(self, ms):
            self.ms = ms

        def time(self, policy):
            return SimpleNamespace(median_ms=self.ms, p10_ms=self.ms, p90_ms=self.ms, reps=3)

        def close(self):
            pass

    class FakeBackend:
        def open(self, artifact, batch, seq):
            opened.append(artifact.name)
            return Runner(1.0)

        def open_shapes(self, artifact):
            return lambda batch, seq: Runner(seq / 10)

    policy = dataclasses.replace(MeasurePolicy.quick(), probe_every=2)
    m = Measurer(FakeBackend(), tmp_path / "probe.onnx", policy, log=lambda s: None)
    jobs = [Job(f"{name}{seq}", tmp_path / f"{name}.onnx", 1, seq) for name in "abc" for seq in (32, 64, 128)]
    m._pass(jobs, 0)
    assert opened == ["probe.onnx"] * 3  # before the pass, after a+b, after c
    assert sum(len(v) for v in m.readings.values()) == 9
    for name in "abc":  # one probe pair per model
        pairs = {(r.probe_before_ms, r.probe_after_ms) for k, v in m.readings.items() if k[0] == name for r in v}
        assert len(pairs) == 1


def test_time_floor_scales_with_a_shapes_tokens_over_the_runs_largest(tmp_path):
    """floor_by_tokens: a 32-token reading gets a quarter of the 128-token reading's min_seconds (about as many
    calls, not as many seconds); a one-shape run, or the policy switched off, keeps the floor as it is."""
    from types import SimpleNamespace

    from kdnas_deploy.latency.measure import Job

    floors: dict[tuple[int, int], float] = {}

    class Runner:
        def __init__(self, shape):
            self.shape = shape

        def time(self, policy):
            floors[self.shape] = policy.min_seconds
            return SimpleNamespace(median_ms=1.0, p10_ms=1.0, p90_ms=1.0, reps=3)

        def close(self):
            pass

    class FakeBackend:
        def open(self, artifact, batch, seq):
            return Runner((0, 0))

        def open_shapes(self, artifact):
            return lambda batch, seq: Runner((batch, seq))

    timing = dataclasses.replace(MeasurePolicy.quick().timing, min_seconds=0.2)
    policy = dataclasses.replace(MeasurePolicy.quick(), rounds=1, extra_rounds=0, timing=timing)
    shapes = [(1, 32), (1, 64), (1, 128), (2, 32)]
    jobs = [Job(f"a{b}x{s}", tmp_path / "a.onnx", b, s) for b, s in shapes]
    Measurer(FakeBackend(), tmp_path / "probe.onnx", policy, log=lambda s: None).run(jobs)
    assert floors[(1, 32)] == pytest.approx(0.05) and floors[(1, 64)] == pytest.approx(0.1)
    assert floors[(1, 128)] == pytest.approx(0.2) and floors[(2, 32)] == pytest.approx(0.1)
    floors.clear()
    Measurer(FakeBackend(), tmp_path / "probe.onnx", policy, log=lambda s: None).run(jobs[:1])
    assert floors[(1, 32)] == pytest.approx(0.2)  # alone in its run: the largest shape
    off = dataclasses.replace(policy, floor_by_tokens=False)
    Measurer(FakeBackend(), tmp_path / "probe.onnx", off, log=lambda s: None).run(jobs)
    assert {floors[s] for s in shapes} == {0.2}


def test_a_machine_mostly_in_its_slow_state_is_measured_in_that_state(tmp_path):
    """The fastest probe state is the reference only while it holds min_fast_fraction (half) of the readings:
    with 1 fast reading in 12 (the EPYC of 2026-12-07: 1.3% of 531), readings are accepted in the slow state
    the machine is in, a reading next to the rare fast probe is not, and the probe summary describes that state."""
    from kdnas_deploy.latency.anchor import probe_min_noise_pct, state_readings
    from kdnas_deploy.latency.measure import Reading

    backend = get_backend("cpu", "fp32", threads=1)
    m = Measurer(backend, tmp_path / "unused.onnx", MeasurePolicy(), log=lambda s: None)
    for ms in (0.59, 0.41, 0.585, 0.58, 0.59, 0.588, 0.583, 0.586, 0.59, 0.584, 0.587, 0.581):
        m.add_probe(ms)
    assert m.reference_state == "dominant" and m.reference_ms == pytest.approx(0.58)
    m.readings["x"] = [
        Reading("x", 7.0, 6.9, 7.1, 20, 0, 0.0, 0.41, 0.585),  # beside the rare fast probe: not accepted
        Reading("x", 9.0, 8.9, 9.1, 20, 1, 1.0, 0.58, 0.59),  # the state the machine is in
    ]
    kept = m.summarise("x")
    assert kept.state == "fast" and kept.accepted_readings == 1 and kept.latency_ms == 9.0
    summary = m.probe_summary()
    assert summary["fast_reference_ms"] == pytest.approx(0.58) and summary["fastest_ms"] == pytest.approx(0.41)
    assert summary["reference_state"] == "dominant" and summary["fast_fraction"] == pytest.approx(1 / 12, abs=1e-3)
    assert 0.58 <= summary["latency_ms"] <= 0.59
    assert 0.41 not in state_readings(summary) and probe_min_noise_pct(summary) < 2.0  # the halves of that state
    for ms in (0.41, 0.412, 0.409) * 4:  # 13 of 24 fast: the fast state holds most readings again
        m.add_probe(ms)
    assert m.reference_state == "fast" and m.reference_ms == pytest.approx(0.409)
    again = m.summarise("x")  # neither reading has the fast state on both sides: the minimum of all, unsettled
    assert again.state == "unsettled" and again.latency_ms == 7.0
