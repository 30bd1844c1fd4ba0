"""``devices[].backend: auto``: the fastest usable backend by interleaved probe timings; the others named."""

from pathlib import Path

import pytest

from kdnas_deploy.errors import ConfigError, DeviceError
from kdnas_deploy.latency import pick
from kdnas_deploy.pipeline.config import PipelineConfig
from kdnas_deploy.runtime.runners import Runner


class _FakeBackend:
    def __init__(self, name: str) -> None:
        self.name = name

    def prepare(self, arch, workdir: Path) -> Path:
        return Path(workdir)

    def open(self, artifact, batch, seq) -> Runner:
        name = self.name
        return Runner(fn=lambda: name)


def _fake(monkeypatch, usable: list[str], unavailable: dict[str, str]) -> None:
    monkeypatch.setattr(pick, "candidates", lambda device, precision, threads: (list(usable), dict(unavailable)))
    monkeypatch.setattr(pick, "get_backend", lambda device, precision, threads, backend: _FakeBackend(backend))


def _sampler(ms_of_call, order: list[str]):
    """A fake ``sample``: one round per list entry, each fn's block ``[ms]``; the fns are fake runners' ``fn``."""

    def sample(fns, rounds):
        out = [[] for _ in fns]
        for _ in range(rounds):
            for fn, samples in zip(fns, out, strict=True):
                samples.append(ms_of_call(fn()))
                order.append(fn())
        return out

    return sample


def test_the_lowest_median_wins_and_every_backend_is_timed_in_each_round(monkeypatch):
    _fake(monkeypatch, ["cpu-ort", "cpu-openvino"], {})
    order: list[str] = []
    ms = {"cpu-ort": [3.0, 3.1, 9.0, 3.0], "cpu-openvino": [2.5, 2.6, 2.4, 30.0]}  # one slow spell each

    def ms_of_call(name):
        return ms[name][sum(1 for n in order if n == name)]

    small = (pick.PROBE_ARCH,)
    chosen = pick.pick_backend("cpu", "fp32", 2, rounds=4, sample=_sampler(ms_of_call, order), archs=small)
    assert chosen.chosen == "cpu-openvino" and chosen.medians_ms == {"cpu-ort": 3.05, "cpu-openvino": 2.55}
    assert chosen.line().startswith("backend auto (fp32): picked cpu-openvino: probe model L=2")


def test_the_student_sized_probe_outvotes_the_small_probes_fixed_cost(monkeypatch):
    """The EPYC family 26 case: the small probe favours ONNX Runtime by 11%, the student-sized one OpenVINO by
    25%; the geometric mean picks OpenVINO, and the pick records both models' medians. Backends alternate
    within each model, so the two runtimes of one model are timed next to each other."""
    _fake(monkeypatch, ["cpu-ort", "cpu-openvino"], {})
    ms = {("cpu-ort", 128): 0.390, ("cpu-openvino", 128): 0.435, ("cpu-ort", 384): 2.5, ("cpu-openvino", 384): 2.0}

    class _Sized(_FakeBackend):
        def prepare(self, arch, workdir: Path) -> Path:
            return Path(str(arch.hidden_size))

        def open(self, artifact, batch, seq) -> Runner:
            key = (self.name, int(artifact.name))
            return Runner(fn=lambda: key)

    monkeypatch.setattr(pick, "get_backend", lambda device, precision, threads, backend: _Sized(backend))
    order: list = []
    chosen = pick.pick_backend("cpu", "int8", 2, rounds=2, sample=_sampler(ms.get, order))
    assert [a.hidden_size for a in pick.PICK_ARCHS] == [128, 384]
    assert order[:4] == [("cpu-ort", 128), ("cpu-openvino", 128), ("cpu-ort", 384), ("cpu-openvino", 384)]
    assert chosen.chosen == "cpu-openvino"
    assert chosen.per_model_ms == {"L=2,H=128,A=4,F=512": {"cpu-ort": 0.39, "cpu-openvino": 0.435},
                                   "L=4,H=384,A=6,F=1536": {"cpu-ort": 2.5, "cpu-openvino": 2.0}}  # fmt: skip
    assert chosen.medians_ms == {
        "cpu-ort": round((0.390 * 2.5) ** 0.5, 4),
        "cpu-openvino": round((0.435 * 2.0) ** 0.5, 4),
    }
    assert "geometric mean of the medians on L=2,H=128,A=4,F=512 and L=4,H=384,A=6,F=1536" in chosen.line()
    assert pick.BackendPick.from_dict(chosen.to_dict()) == chosen


def test_the_picks_timer_is_the_benchs_interleave_with_its_idle_gap(monkeypatch):
    """Without the gap, ONNX Runtime's spinning threads slowed the next model (tools/results/backend_pick.json)."""
    from kdnas_deploy.runtime import timing

    calls = {}
    monkeypatch.setattr(pick, "interleave", lambda fns, rounds, block, warmup: calls.update(
        n=len(fns), rounds=rounds, block=block) or [[1.0] * rounds for _ in fns])  # fmt: skip
    per_model = pick.time_interleaved({("m", "a"): Runner(fn=lambda: None), ("m", "b"): Runner(fn=lambda: None)}, 3)
    assert per_model == {"m": {"a": 1.0, "b": 1.0}} and calls == {"n": 2, "rounds": 3, "block": pick.PICK_BLOCK}
    assert timing.interleave.__defaults__[1] == timing.PAUSE_MS >= 50  # pause_ms: the gap that sufficed, doubled
    seen: list[float] = []
    t0 = [0.0]
    fns = [lambda: seen.append(timing.time.perf_counter() - t0[0])]
    t0[0] = timing.time.perf_counter()
    timing.interleave(fns, rounds=1, block=1, warmup=0, pause_ms=60.0, block_warmup=0)
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.06  # warm-up call, then the gap, then the timed call


def test_a_pick_cached_before_two_models_reads_back_with_its_one_probe():
    old = {"chosen": "cpu-ort", "precision": "int8", "medians_ms": {"cpu-ort": 0.39, "cpu-openvino": 0.435},
           "unavailable": {}, "probe_arch": "L=2,H=128,A=4,F=512"}  # fmt: skip
    picked = pick.BackendPick.from_dict(old)
    assert picked.per_model_ms == {"L=2,H=128,A=4,F=512": {"cpu-ort": 0.39, "cpu-openvino": 0.435}}
    assert picked.line() == ("backend auto (int8): picked cpu-ort: probe model L=2,H=128,A=4,F=512: "
                             "cpu-ort 0.390 ms, cpu-openvino 0.435 ms")  # fmt: skip


def test_one_usable_backend_is_picked_without_timing_and_the_others_are_named(monkeypatch):
    _fake(monkeypatch, ["cpu-ort"], {"cpu-openvino": "OpenVINO is not installed"})
    chosen = pick.pick_backend("cpu", "fp32", 2, sample=lambda fns, n: pytest.fail("timed"))
    assert chosen.chosen == "cpu-ort" and chosen.medians_ms == {}
    assert "not available: cpu-openvino (OpenVINO is not installed)" in chosen.line()


def test_no_usable_backend_is_one_line(monkeypatch):
    _fake(monkeypatch, [], {"cpu-openvino": "bf16 needs avx512_bf16 or AMX"})
    with pytest.raises(DeviceError, match=r"backend auto: no backend runs cpu at bf16 here \(cpu-openvino: bf16"):
        pick.pick_backend("cpu", "bf16", 2)


def test_real_candidates_list_only_backends_of_the_device_and_precision():
    usable, unavailable = pick.candidates("cpu", "int8", 2)  # ORT dynamic int8 and OpenVINO's NNCF int8
    assert "cpu-ort" in usable and set(usable) | set(unavailable) == {"cpu-ort", "cpu-openvino"}
    assert pick.candidates("cpu", "bf16", 2)[0] + list(pick.candidates("cpu", "bf16", 2)[1]) == ["cpu-openvino"]
    usable, unavailable = pick.candidates("cpu", "fp32", 2)
    assert "cpu-ort" in usable and set(usable) | set(unavailable) == {"cpu-ort", "cpu-openvino"}


def test_config_accepts_auto_and_refuses_a_precision_no_backend_prices():
    cfg = PipelineConfig.from_dict({"devices": [{"name": "cpu", "backend": "auto", "budget_ms": 2.0}]})
    assert cfg.devices[0].backend == "auto"
    with pytest.raises(ConfigError, match="backend auto is not resolved yet"):
        _ = cfg.devices[0].backend_name
    with pytest.raises(ConfigError, match="no backend of cpu prices 'fp16'"):
        PipelineConfig.from_dict({"devices": [{"name": "cpu", "backend": "auto", "precision": "fp16",
                                               "budget_ms": 2.0}]})  # fmt: skip


def test_run_resolves_auto_once_and_keeps_the_pick_on_resume(monkeypatch, tmp_path, repo_root):
    from kdnas_deploy.pipeline.run import Pipeline

    calls = []

    def fake_pick(device, precision, threads, batch, seq):
        calls.append(device)
        return pick.BackendPick("cpu-openvino", precision, {"cpu-openvino": 1.0, "cpu-ort": 1.2}, {})

    monkeypatch.setattr(pick, "pick_backend", fake_pick)
    table = str(repo_root / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json")
    cfg = PipelineConfig.from_dict(
        {
            "devices": [
                {"name": "a", "backend": "auto", "budget_ms": 2.0},
                {"name": "b", "backend": "auto", "table": table, "budget_ms": 2.0},
            ]
        }
    )
    lines: list[str] = []
    for _ in range(2):
        p = Pipeline(cfg, tmp_path / "run", echo=lines.append)
        p.run_dir.mkdir(exist_ok=True)
        p.resolve_backends()
        assert [d.backend for d in p.config.devices] == ["cpu-openvino", "cpu-ort"]  # b: its table's backend
    assert calls == ["cpu"]  # the second pass reused the stage
    assert any("picked cpu-openvino: probe model" in line for line in lines)
    assert "backend: cpu-openvino" in (tmp_path / "run" / "config.resolved.yaml").read_text()


def test_run_preflight_refuses_auto_when_no_backend_runs_here(monkeypatch):
    from kdnas_deploy.pipeline.tables import check_device_backend

    _fake(monkeypatch, [], {"cpu-openvino": "bf16 needs avx512_bf16 or AMX"})
    dev = PipelineConfig.from_dict({"devices": [{"name": "x", "backend": "auto", "precision": "bf16",
                                                 "budget_ms": 2.0}]}).devices[0]  # fmt: skip
    with pytest.raises(DeviceError, match=r"devices\['x'\]: backend auto: no backend runs cpu at bf16 here"):
        check_device_backend(dev)
