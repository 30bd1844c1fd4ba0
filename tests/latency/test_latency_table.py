"""The table file and predictor on a tiny table built through the real deployed path and ONNX Runtime."""

import json

import numpy as np
import pytest

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import SpaceError, TableError
from kdnas_deploy.latency.table import TABLE_SCHEMA_VERSION, LatencyTable


def _entry(table, arch, seq):
    for e in table.data["entries"]:
        if (e["num_layers"], e["hidden_size"], e["num_heads"], e["ffn_size"]) == arch.as_tuple() and e["seq"] == seq:
            return e
    raise AssertionError(arch)


def test_table_file_contents(tiny_table_path):
    data = json.loads(tiny_table_path.read_text())
    assert data["schema_version"] == TABLE_SCHEMA_VERSION
    fp = data["fingerprint"]
    for key in ("cpu_model", "physical_cores", "isa_flags", "onnxruntime_version", "execution_provider",
                "precision", "optimization_level", "threads", "deploy_config"):
        assert key in fp, key
    assert fp["deploy_config"] == {"optimize": "O2", "precision": "fp32", "device": "cpu", "opset": 18}
    assert data["scheme"]["anchor_depths"] == [1, 3, 4]
    assert len(data["entries"]) == 2 * 3 * 2  # variants x anchors x seqs
    for e in data["entries"]:
        assert e["latency_ms"] > 0 and e["reps"] >= 3 and "spread_pct" in e and len(e["readings_ms"]) >= 2
    assert data["probe"]["latency_ms"] > 0


def test_predict_reproduces_anchors_and_interpolates(tiny_table_path, tiny_space):
    table = LatencyTable.load(tiny_table_path)
    a1, a3, a2 = Architecture(1, 64, 2, 64), Architecture(3, 64, 2, 64), Architecture(2, 64, 2, 64)
    p = table.predict([a1, a3, a2], seq=16)
    e1, e3 = _entry(table, a1, 16)["latency_ms"], _entry(table, a3, 16)["latency_ms"]
    np.testing.assert_allclose(p, [e1, e3, (e1 + e3) / 2], rtol=1e-9)
    lo, hi = table.predict(a2, seq=16)[0], table.predict(a2, seq=32)[0]
    assert table.predict(a2, seq=24)[0] == pytest.approx((lo + hi) / 2)
    assert table.predict(a2).shape == (1,)
    every = table.predict(list(tiny_space.members), seq=20)
    assert every.shape == (len(tiny_space),) and np.all(every > 0)


def test_predict_errors(tiny_table_path):
    table = LatencyTable.load(tiny_table_path)
    with pytest.raises(SpaceError, match="num_layers=5"):
        table.predict(Architecture(5, 64, 2, 64))
    with pytest.raises(SpaceError, match="hidden_size=48"):
        table.predict([Architecture(1, 64, 2, 64), Architecture(1, 48, 2, 64)])
    with pytest.raises(TableError, match="batch 8"):
        table.predict(Architecture(1, 64, 2, 64), batch=8)
    with pytest.raises(TableError, match="seq 64"):
        table.predict(Architecture(1, 64, 2, 64), seq=64)


def test_calibration_lives_in_the_file(tiny_table_path, tmp_path):
    table = LatencyTable.load(tiny_table_path)
    arch = Architecture(2, 32, 2, 64)
    base = table.predict_one(arch)
    scale = table.set_calibration(table.probe_ms * 1.25, {"calibrated_at": "now"})
    assert scale == pytest.approx(1.25)
    path = tmp_path / "cal.json"
    table.save(path)
    again = LatencyTable.load(path)
    assert again.predict_one(arch) == pytest.approx(base * 1.25, rel=1e-4)
    assert again.predict(arch, calibrated=False)[0] == pytest.approx(base)


def test_bad_table_files(tiny_table_path, tmp_path):
    with pytest.raises(TableError, match="not found"):
        LatencyTable.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TableError, match="not valid JSON"):
        LatencyTable.load(bad)
    data = json.loads(tiny_table_path.read_text())
    future = dict(data, schema_version=TABLE_SCHEMA_VERSION + 1)
    bad.write_text(json.dumps(future))
    with pytest.raises(TableError, match="newer"):
        LatencyTable.load(bad)
    bad.write_text(json.dumps(dict(data, entries=data["entries"][:-1])))
    with pytest.raises(TableError, match="incomplete"):
        LatencyTable.load(bad)
    broken = json.loads(json.dumps(data))
    broken["entries"][0]["latency_ms"] = "fast"
    bad.write_text(json.dumps(broken))
    with pytest.raises(TableError, match="corrupt"):
        LatencyTable.load(bad)


def test_check_machine_flags_other_machines(tiny_table_path):
    table = LatencyTable.load(tiny_table_path)
    assert table.check_machine() == []
    table.fingerprint["cpu_model"] = "Some Other CPU 9000"
    table.fingerprint["onnxruntime_version"] = "0.0.1"
    issues = table.check_machine()
    assert len(issues) == 2 and "cpu_model" in issues[0]
    with pytest.raises(TableError, match="different machine"):
        table.check_machine(strict=True)



def test_validate_draws_every_held_out_member_by_default_when_the_space_has_fewer_than_100(tiny_table_path):
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.latency.validate import DEFAULT_N, draw_archs

    table = LatencyTable.load(tiny_table_path)
    held = [a for a in table.space.members if a.num_layers not in table.anchors]
    assert 0 < len(held) < DEFAULT_N
    drawn = draw_archs(table, None, seed=0)
    assert sorted(a.short() for a in drawn) == sorted(a.short() for a in held)
    assert len(draw_archs(table, 1, seed=0)) == 1
