"""``export --backend cpu-openvino``: the ONNX folder plus the OpenVINO IR, validated through OpenVINO; the
refusals (bf16 elsewhere or without CPU support, int8 through OpenVINO, OpenVINO missing); ``bench`` on the IR
and ``bench --peers``."""

import json
import sys

import pytest

from kdnas_deploy.errors import DeviceError, ExportError, ModelError, TableError
from kdnas_deploy.export.exporter import ExportOptions, export_model, predict_latency
from kdnas_deploy.runtime import openvino as rov


@pytest.fixture(scope="module")
def ov_folder(tiny_hf, tmp_path_factory):
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("ov") / "ov"
    report = export_model(tiny_hf, out, ExportOptions(backend="cpu-openvino", threads=1, bench_reps=3),
                          log=lambda m: None)  # fmt: skip
    return out, report


def test_export_writes_the_ir_and_validates_through_openvino(ov_folder):
    import openvino as ov

    out, report = ov_folder
    assert report["backend"] == "cpu-openvino" and report["precision"] == "fp32"
    assert report["openvino"]["ir"] == "openvino_model.xml"
    assert report["openvino"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert report["parity"]["ok"] and report["latency_measured"]["backend"] == "cpu-openvino"
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file()
    model = ov.Core().read_model(str(out / "openvino_model.xml"))
    assert {p.get_any_name() for p in model.inputs} >= {"input_ids", "attention_mask"}
    assert "openvino_model.xml" in (out / "README.md").read_text()
    assert json.loads((out / "export_config.json").read_text())["backend"] == "cpu-openvino"


def test_bench_serves_the_ir(ov_folder):
    from kdnas_deploy.export.bench import BenchConfig, run_bench

    out, _ = ov_folder
    cfg = BenchConfig(seq=16, threads=1, rounds=1, block=1, backend="cpu-openvino", pause_ms=0.0)
    row = run_bench([out], cfg, progress=False)[0]
    assert row["runtime"] == "openvino" and row["precision"] == "fp32" and row["median_ms"] > 0
    # no backend given: each folder runs on the backend it was exported for (an OpenVINO export on its IR)
    row = run_bench([out], BenchConfig(seq=16, threads=1, rounds=1, block=1, pause_ms=0.0), progress=False)[0]
    assert row["runtime"] == "openvino"
    cfg = BenchConfig(seq=16, threads=1, rounds=1, block=1, backend="cpu-ort", pause_ms=0.0)
    row = run_bench([out], cfg, progress=False)[0]
    assert row["runtime"] == "onnxruntime"


@pytest.mark.parametrize("kwargs,error,needle", [
    ({"bf16": True}, ExportError, "bf16 is served by --backend cpu-openvino"),
    ({"backend": "cpu-openvino", "quantize": "int8", "fp16": True}, ExportError, "exclude each other"),
    ({"backend": "cpu-openvino", "bf16": True, "fp16": True}, ExportError, "bf16 excludes"),
    ({"backend": "cuda-torch", "device": "cuda"}, ExportError, "serves no ONNX folder"),
    ({"backend": "cuda-ort"}, ExportError, "runs on cuda, not on --device cpu"),
], ids=["bf16-ort", "ov-int8-fp16", "bf16-fp16", "torch", "wrong-device"])  # fmt: skip
def test_bad_backend_and_precision_refused(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        ExportOptions(**kwargs)


def test_refusals_before_anything_is_written(tiny_hf, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(rov, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    with pytest.raises(DeviceError, match="avx512_bf16 or AMX"):
        export_model(tiny_hf, out, ExportOptions(backend="cpu-openvino", bf16=True, force=True))
    with pytest.raises(ExportError, match="bf16 needs --metric-task"):
        export_model(tiny_hf, out, ExportOptions(backend="cpu-openvino", bf16=True))
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(DeviceError, match="not installed"):
        export_model(tiny_hf, out, ExportOptions(backend="cpu-openvino"))
    assert not out.exists()


def test_table_of_another_backend_refused(tmp_path, repo_root):
    from kdnas_deploy.arch import Architecture

    table = repo_root / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json"
    with pytest.raises(TableError, match="prices backend cpu-ort, this export is for cpu-openvino"):
        predict_latency(str(table), Architecture(4, 256, 4, 1024), 1, 128, "fp32", backend="cpu-openvino")


@pytest.mark.slow  # ~20 s here: four tiny deploys (fp32 and int8 of teacher and student)
def test_peers_quick_records_every_runtime(tiny_hf, tmp_path, monkeypatch):
    from kdnas_deploy.export.peers import NO_BF16, quick_config, run_peers

    monkeypatch.setattr(rov, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    doc = run_peers(tiny_hf, tiny_hf, quick_config(threads=1), workdir=tmp_path, progress=False)
    assert doc["schema_version"] == 1 and doc["machine"]["bf16_flags"] == []
    labels = {r["label"]: r for r in doc["rows"]}
    for role in ("teacher", "student"):
        assert labels[f"{role}/pytorch-bf16"]["skipped"] == NO_BF16
        assert labels[f"{role}/onnxruntime-fp32"]["median_ms"] > 0
        assert labels[f"{role}/onnxruntime-int8"]["median_ms"] > 0
    assert "student/onnxruntime-fp32-plain" in labels
    if rov.nncf_reason() is None:  # OpenVINO int8 through NNCF, timed beside the others
        assert labels["teacher/openvino-int8"]["median_ms"] > 0 and labels["student/openvino-int8"]["median_ms"] > 0
    for name in ("student_vs_teacher_fastest", "student_path_vs_student_ort_fp32", "ours_over_plain_worst"):
        assert set(doc["targets"][name]) >= {"value", "target", "met"}
    assert doc["targets"]["student_path_vs_student_ort_fp32"]["met"] is None  # no bf16 here: not applicable
    assert doc["headline"]["deployed_student"].startswith("student/")
    assert not list(tmp_path.iterdir())  # the deployed models are removed


def test_openvino_int8_row_is_skipped_with_the_reason_without_nncf(tiny_hf, tmp_path, monkeypatch):
    from kdnas_deploy.export import peers

    monkeypatch.setattr(rov, "nncf_reason", lambda: "openvino int8 needs nncf (pip install ...): no module")
    row = peers._ov_int8_peer(
        "student", tmp_path / "model.xml", tmp_path, peers.quick_config(1), {"input_ids": None}, 100
    )
    assert row.build is None and row.skipped.startswith("openvino int8 needs nncf")
    assert row.label == "student/openvino-int8"


def test_quantize_ir_writes_an_int8_ir_that_runs(ov_folder, tmp_path):
    pytest.importorskip("nncf")
    import numpy as np

    from kdnas_deploy.runtime.inputs import model_inputs

    out, _ = ov_folder
    feeds = [model_inputs(1, 16, 100, seed=i) for i in range(4)]
    xml = rov.quantize_ir(out / "openvino_model.xml", feeds, tmp_path / "int8")
    assert xml == tmp_path / "int8" / "openvino_model.xml" and xml.with_suffix(".bin").is_file()
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ops()}
    assert "FakeQuantize" in ops  # NNCF's int8 marks
    logits = rov.open_openvino(xml, 1).run(None, feeds[0])[0]
    assert logits.shape[0] == 1 and np.isfinite(logits).all()


def test_quantize_ir_keeps_the_task_head_in_fp32(ov_folder, tmp_path):
    """A quantised regression head cost the GLUE table's STS-B student 6.5 points of pearson: NNCF must leave
    the classifier's MatMul unquantised (no FakeQuantize on its inputs) and quantise the encoder's."""
    pytest.importorskip("nncf")
    import openvino as ov

    from kdnas_deploy.runtime.inputs import model_inputs

    out, _ = ov_folder
    feeds = [model_inputs(1, 16, 100, seed=i) for i in range(4)]
    model = ov.Core().read_model(str(rov.quantize_ir(out / "openvino_model.xml", feeds, tmp_path / "int8")))

    def quantised(op):
        return any(v.get_node().get_type_name() == "FakeQuantize" for v in op.input_values())

    matmuls = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    names = rov.head_matmuls(ov.Core().read_model(str(out / "openvino_model.xml")))
    head = [op for op in matmuls if op.get_friendly_name() in names]
    assert len(head) == 1  # the classifier's, not the pooler's
    assert head and not any(quantised(op) for op in head)
    assert any(quantised(op) for op in matmuls if op not in head)


def test_quantize_ir_refuses_no_calibration_data(ov_folder, tmp_path):
    pytest.importorskip("nncf")
    out, _ = ov_folder
    with pytest.raises(ModelError, match="at least one calibration input"):
        rov.quantize_ir(out / "openvino_model.xml", [], tmp_path / "int8")
    assert not (tmp_path / "int8").exists()


@pytest.fixture(scope="module")
def ov_int8_folder(tiny_hf, tmp_path_factory):
    pytest.importorskip("nncf")
    out = tmp_path_factory.mktemp("ov8") / "ov8"
    report = export_model(tiny_hf, out, ExportOptions(backend="cpu-openvino", quantize="int8", task="builtin",
                                                      threads=1, bench_reps=3), log=lambda m: None)  # fmt: skip
    return out, report


def test_openvino_int8_export_quantises_the_ir_on_the_task_and_checks_the_metric(ov_int8_folder):
    import onnx
    import openvino as ov

    out, report = ov_int8_folder
    assert report["backend"] == "cpu-openvino" and report["precision"] == "int8"
    q = report["openvino"]["quantization"]
    assert q["tool"] == "nncf" and q["calibration"] == "the task's train split" and q["calibration_examples"] > 0
    assert rov.is_int8_model(ov.Core().read_model(str(out / "openvino_model.xml")))
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}
    assert not ops & {"QAttention", "MatMulInteger", "DynamicQuantizeLinear"}  # the ONNX file stays fp32
    assert report["metric_check"]["task"] == "builtin" and report["agreement"] is not None
    assert report["latency_measured"]["backend"] == "cpu-openvino"
    assert not list(out.glob(".ir-*")) and not list(out.glob(".*.tmp"))


def test_bench_labels_an_openvino_int8_folder_int8(ov_int8_folder):
    from kdnas_deploy.export.bench import BenchConfig, run_bench

    out, _ = ov_int8_folder
    cfg = BenchConfig(seq=16, threads=1, rounds=1, block=1, backend="cpu-openvino", pause_ms=0.0)
    row = run_bench([out], cfg, progress=False)[0]
    assert row["runtime"] == "openvino" and row["precision"] == "int8" and row["median_ms"] > 0
    # ONNX Runtime on the same folder runs its fp32 model.onnx: labelled by the graph, not by the IR's precision
    cfg = BenchConfig(seq=16, threads=1, rounds=1, block=1, backend="cpu-ort", pause_ms=0.0)
    row = run_bench([out], cfg, progress=False)[0]
    assert row["runtime"] == "onnxruntime" and row["precision"] == "fp32"


def test_openvino_int8_needs_the_task_even_with_force(tiny_hf, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="needs --metric-task: NNCF calibrates"):
        export_model(tiny_hf, out, ExportOptions(backend="cpu-openvino", quantize="int8", force=True))
    assert not out.exists()


def test_an_fp32_ir_is_not_opened_as_int8(ov_folder):
    out, _ = ov_folder
    with pytest.raises(ModelError, match="not an OpenVINO int8 model"):
        rov.open_openvino(out, 1, "int8")


def _row(role, runtime, precision, ms, kind="kdnas"):
    label = f"{role}/{runtime}-{precision}" + ("-plain" if kind == "plain" else "")
    return {"role": role, "runtime": runtime, "precision": precision, "kind": kind, "label": label, "median_ms": ms}


def test_the_deployed_student_comes_from_the_deployable_precisions_only():
    from kdnas_deploy.export.peers import judge

    rows = [_row("teacher", "onnxruntime", "fp32", 12.0), _row("teacher", "openvino", "int8", 6.0),
            _row("student", "onnxruntime", "fp32", 4.0), _row("student", "onnxruntime", "int8", 1.5)]  # fmt: skip
    default = judge(rows)
    assert default["headline"]["deployed_student"] == "student/onnxruntime-fp32"  # int8 needs a metric check
    assert default["targets"]["student_vs_teacher_fastest"]["value"] == 1.5
    checked = judge(rows, deployable=("fp32", "int8"))
    assert checked["headline"]["deployed_student"] == "student/onnxruntime-int8"
    assert checked["targets"]["student_vs_teacher_fastest"] == {"value": 4.0, "target": 3.0, "met": True}
    assert checked["headline"]["speedup_vs_teacher_same_runtime"] is None  # no ORT int8 teacher row here


def test_peers_refuses_an_unknown_deployable_precision_before_any_work(tiny_hf, tmp_path, cli):
    from kdnas_deploy.errors import ExportError
    from kdnas_deploy.export.peers import quick_config, run_peers

    with pytest.raises(ExportError, match="--deployable"):
        run_peers(tiny_hf, tiny_hf, quick_config(threads=1), workdir=tmp_path, deployable=("fp16",))
    assert not list(tmp_path.iterdir())
    r = cli("bench", str(tiny_hf), str(tiny_hf), "--peers", "--deployable", "int4", "--quick")
    assert r.returncode == 2 and "--deployable" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("bench", str(tiny_hf), "--deployable", "int8")
    assert r.returncode == 2 and "goes with --peers" in r.stderr
