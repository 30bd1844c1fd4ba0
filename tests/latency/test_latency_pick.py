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
        runner = Runner(fn=lambda: None)
        runner.backend_name = self.name  # type: ignore[attr-defined]
        return runner


def _fake(monkeypatch, usable: list[str], unavailable: dict[str, str]) -> None:
    monkeypatch.setattr(pick, "candidates", lambda device, precision, threads: (list(usable), dict(unavailable)))
    monkeypatch.setattr(pick, "get_backend", lambda device, precision, threads, backend: _FakeBackend(backend))


def test_the_lowest_median_wins_and_every_backend_is_timed_in_each_round(monkeypatch):
    _fake(monkeypatch, ["cpu-ort", "cpu-openvino"], {})
    order: list[str] = []
    ms = {"cpu-ort": [3.0, 3.1, 9.0, 3.0], "cpu-openvino": [2.5, 2.6, 2.4, 30.0]}  # one slow spell each

    def timer(runner):
        order.append(runner.backend_name)
        return ms[runner.backend_name][sum(1 for n in order if n == runner.backend_name) - 1]

    chosen = pick.pick_backend("cpu", "fp32", 2, rounds=4, time_fn=timer)
    assert chosen.chosen == "cpu-openvino" and chosen.medians_ms == {"cpu-ort": 3.05, "cpu-openvino": 2.55}
    assert order[:4] == ["cpu-ort", "cpu-openvino", "cpu-ort", "cpu-openvino"]  # interleaved rounds
    assert chosen.line().startswith("backend auto (fp32): picked cpu-openvino: probe model L=2")


def test_one_usable_backend_is_picked_without_timing_and_the_others_are_named(monkeypatch):
    _fake(monkeypatch, ["cpu-ort"], {"cpu-openvino": "OpenVINO is not installed"})
    chosen = pick.pick_backend("cpu", "fp32", 2, time_fn=lambda r: pytest.fail("timed"))
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
    cfg = PipelineConfig.from_dict({"devices": [{"name": "a", "backend": "auto", "budget_ms": 2.0},
                                                {"name": "b", "backend": "auto", "table": table, "budget_ms": 2.0}]})
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
