"""One artifact per device: each device of a run config is exported at its precision, benched on its device and
checked against its own budget by measurement; a device this machine cannot run is said to be unmeasured."""

import dataclasses
import json

import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import ConfigError
from kdnas_deploy.pipeline.config import PipelineConfig
from kdnas_deploy.pipeline.per_device import (
    DeployStages,
    device_exports,
    device_result,
    raw_predictions,
    skipped_result,
    teacher_table,
    unavailable_reason,
)
from kdnas_deploy.pipeline.summary import RunFacts, write_outputs

TWO = {"devices": [{"name": "cpu-fp32", "precision": "fp32", "budget_fraction": 0.33},
                   {"name": "cpu-int8", "precision": "int8", "budget_fraction": 0.2}]}  # fmt: skip


def _anchor(applied: bool = False, factor: float = 1.0) -> dict:
    return {"factor": factor, "measured_factor": factor, "applied": applied, "noise_floor_pct": 0.8,
            "reason": "applied" if applied else "not applied: within noise"}  # fmt: skip


def _bench(student_ms: float, raw_ms: float | None, anchor: dict | None = None) -> dict:
    return {"bench": "b.json", "anchor": anchor or _anchor(), "e2e": None, "rows": [
        {"path": "teacher", "precision": "fp32", "median_ms": 12.0, "predicted_raw_ms": None, "predicted_ms": None},
        {"path": "student", "precision": "int8", "median_ms": student_ms, "predicted_raw_ms": raw_ms},
    ]}  # fmt: skip


def test_each_device_is_exported_at_its_own_precision():
    targets = device_exports(PipelineConfig.from_dict(TWO))
    assert [(t.name, t.quantize, t.suffix) for t in targets] == [("cpu-fp32", "none", ""),
                                                                 ("cpu-int8", "int8", "-cpu-int8")]
    # the first device keeps the stage names of a one-device run (old run folders resume)
    assert [t.student_stage for t in targets] == ["export-student", "export-student-cpu-int8"]
    assert [t.bench_stage for t in targets] == ["bench", "bench-cpu-int8"]


def test_export_quantize_int8_with_an_fp32_device_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="device 'cpu-fp32' is fp32: each device is exported at its own"):
        device_exports(PipelineConfig.from_dict({**TWO, "export": {"quantize": "int8"}}))


def test_the_teacher_is_priced_by_the_first_cpu_fp32_table():
    cfg = PipelineConfig.from_dict({"devices": list(reversed(TWO["devices"]))})
    assert teacher_table(cfg, {"cpu-fp32": "fp32.json", "cpu-int8": "int8.json"}) == "fp32.json"
    only_int8 = PipelineConfig.from_dict({"devices": [TWO["devices"][1]]})
    assert teacher_table(only_int8, {"cpu-int8": "int8.json"}) is None


def test_an_int8_table_does_not_price_the_fp32_teacher():
    rows = _bench(2.0, 1.9)["rows"]
    assert raw_predictions("int8", rows, [7.5, 1.9]) == [None, 1.9]
    assert raw_predictions("fp32", rows, [7.5, 1.9]) == [7.5, None]


def test_a_missed_budget_is_measured_and_said():
    target = device_exports(PipelineConfig.from_dict(TWO))[1]
    met = device_result(target, 2.5, _bench(2.2, 2.1), "model")
    assert met["meets_budget_measured"] is True and met["measured_ms"] == 2.2 and met["predicted_ms"] == 2.1
    assert met["speedup_vs_teacher_fp32"] == pytest.approx(12.0 / 2.2, abs=1e-3)
    missed = device_result(target, 2.0, _bench(2.2, 2.1), "model")
    assert missed["meets_budget_measured"] is False and missed["budget_checked_on"] == "model"
    slow_now = device_result(target, 2.0, _bench(2.2, 1.5, _anchor(True, 1.2)), "model")
    assert slow_now["meets_budget_at_table_state"] is True and slow_now["predicted_ms"] == pytest.approx(1.8)


def test_a_device_this_machine_cannot_run_is_named_not_measured():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a CUDA provider")
    cfg = PipelineConfig.from_dict({"devices": [{"name": "gpu", "device": "cuda", "precision": "fp16",
                                                 "threads": 1, "budget_ms": 1.0}]})  # fmt: skip
    target = device_exports(cfg)[0]
    assert target.fp16 and target.quantize == "none"
    reason = unavailable_reason(target)
    assert reason and "CUDAExecutionProvider" in reason
    assert unavailable_reason(device_exports(PipelineConfig.from_dict(TWO))[0]) is None
    skipped = skipped_result(target, 1.0, reason)
    assert skipped["measured"] is False and skipped["meets_budget_measured"] is None


def test_summary_and_report_give_every_devices_budget(tmp_path):
    teacher_arch, student_arch = Architecture(6, 384, 12, 1536), Architecture(3, 384, 12, 1536)
    targets = device_exports(PipelineConfig.from_dict(TWO))
    first = {**_bench(3.0, 3.1), "rows": [
        {"path": "t", "precision": "fp32", "median_ms": 12.0, "predicted_raw_ms": 11.0},
        {"path": "s", "precision": "fp32", "median_ms": 3.0, "predicted_raw_ms": 3.1}]}
    devices = [device_result(targets[0], 4.0, first, "model"),
               device_result(targets[1], 2.0, _bench(2.2, 1.9), "model")]
    facts = RunFacts(tmp_path, "sst2", ["cpu-fp32", "cpu-int8"], {"cpu-fp32": 0.0, "cpu-int8": 0.0}, {})
    teacher = {"teacher": "t", "main_metric": "accuracy", "dev_metrics": {"accuracy": 0.9},
               "baseline": {"accuracy": 0.5}}
    search = {"winner": {"arch": student_arch.to_dict(), "dev_metrics": {"accuracy": 0.88}}, "student": "s",
              "run": str(tmp_path / "search")}
    lines: list[str] = []
    tables, budgets = {"cpu-fp32": "a.json", "cpu-int8": "b.json"}, [("a.json", 4.0), ("b.json", 2.0)]
    summary = write_outputs(facts, tables, budgets, teacher, teacher_arch, search, first, echo=lines.append,
                            device_results=devices)
    assert summary["meets_budget_measured"] is True  # the first device's headline
    assert summary["meets_every_budget_measured"] is False  # but the int8 budget is missed, by measurement
    assert [d["name"] for d in summary["devices"]] == ["cpu-fp32", "cpu-int8"]
    report = (tmp_path / "report.md").read_text()
    assert "**Device cpu-int8 (int8)**: 2.200 ms measured, predicted 1.9: MISSES its budget 2.000 ms" in report
    assert any(line.startswith("Device cpu-int8 (int8): 2.200 ms measured") for line in lines)
    assert json.loads((tmp_path / "summary.json").read_text())["devices"][1]["measured_ms"] == 2.2


class _FallbackStages(DeployStages):
    """export_stage and latency_stage doubles: OpenVINO's int8 export fails the dev-metric check."""

    def __init__(self, config, pick, fail=("cpu-openvino",)):
        self.config, self.backend_picks, self.fail = config, {"cpu-int8": pick}, fail
        self.lines, self.tables = [], []
        self.echo = self.lines.append

    def export_stage(self, name, model_dir, table, upstream, target=None):
        from kdnas_deploy.errors import MetricDropError

        if target.backend in self.fail:
            raise MetricDropError(f"the exported model loses 2.70 points of pearson ({target.backend})")
        return {"onnx": f"onnx/{name}", "table": table}

    def latency_stage(self, dev):
        self.tables.append((dev.name, dev.backend, dev.precision))
        return {"table": f"{dev.backend}-{dev.precision}.json"}


def _int8_auto_config():
    return PipelineConfig.from_dict({"task": {"name": "builtin"}, "teacher": {"path": "t"},
                                     "devices": [{"name": "cpu-int8", "backend": "auto", "precision": "int8"}]})


def test_backend_auto_exports_on_the_next_fastest_backend_when_the_metric_check_fails():
    pick = {"chosen": "cpu-openvino", "medians_ms": {"cpu-openvino": 0.45, "cpu-ort": 0.58}}
    stages = _FallbackStages(_int8_auto_config(), pick)
    target = dataclasses.replace(device_exports(stages.config)[0], backend="cpu-openvino")
    export, used, table, fallbacks = stages.export_student(target, "student", "ov-int8.json", "k")
    assert used.backend == "cpu-ort" and table == "cpu-ort-int8.json" and export["table"] == table
    assert stages.tables == [("cpu-int8-cpu-ort", "cpu-ort", "int8")]  # that backend's table, its own stage
    assert len(fallbacks) == 1 and fallbacks[0].startswith("cpu-openvino: the exported model loses")
    assert "exporting on cpu-ort" in stages.lines[0]


def test_the_last_backend_failing_the_metric_check_is_the_runs_error_and_a_plain_device_has_no_fallback():
    from kdnas_deploy.errors import MetricDropError
    pick = {"chosen": "cpu-openvino", "medians_ms": {"cpu-openvino": 0.45, "cpu-ort": 0.58}}
    stages = _FallbackStages(_int8_auto_config(), pick, fail=("cpu-openvino", "cpu-ort"))
    target = dataclasses.replace(device_exports(stages.config)[0], backend="cpu-openvino")
    with pytest.raises(MetricDropError, match=r"\(cpu-ort\)"):
        stages.export_student(target, "student", "ov-int8.json", "k")
    stages = _FallbackStages(_int8_auto_config(), {})  # not an auto pick: no other backend is tried
    with pytest.raises(MetricDropError, match=r"\(cpu-openvino\)"):
        stages.export_student(target, "student", "ov-int8.json", "k")
    assert stages.tables == []
