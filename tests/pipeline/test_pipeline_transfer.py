"""``run`` transfers another machine's table (config ``latency.transfer: auto``) instead of building one; the
transferred table is kept in the table cache, where the next run finds it; ``never`` builds as before."""

import json

import pytest

from kdnas_deploy.errors import ConfigError, TableError
from kdnas_deploy.latency import profiler, transfer
from kdnas_deploy.latency.fingerprint import MACHINE_KEYS, machine_fingerprint
from kdnas_deploy.latency.table import LatencyTable
from kdnas_deploy.pipeline import tables
from kdnas_deploy.pipeline.config import PipelineConfig
from kdnas_deploy.pipeline.run import Pipeline

SHIPPED = tables.Path(__file__).resolve().parents[2] / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json"


def _this_machine(data: dict, threads: int) -> dict:
    here = machine_fingerprint("cpu")
    data = json.loads(json.dumps(data))
    data["fingerprint"].update({k: here[k] for k in MACHINE_KEYS if k in here})
    data["fingerprint"]["threads"] = threads
    data["fingerprint"].pop("execution_provider", None)
    return data


def _reference(tmp_path, cpu_model: str | None = "Other CPU 9000", threads: int = 2):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    data = _this_machine(json.loads(SHIPPED.read_text()), threads)
    if cpu_model is not None:
        data["fingerprint"]["cpu_model"] = cpu_model
    (shipped / "ref.json").write_text(json.dumps(data))
    return shipped


@pytest.fixture
def world(monkeypatch, tmp_path):
    monkeypatch.setenv("KDNAS_CACHE_DIR", str(tmp_path / "cache"))
    calls = {"transfer": [], "build": []}

    def fake_transfer(ref, backend, k=10, out=None, **kw):
        calls["transfer"].append((str(ref), k, backend.threads))
        data = _this_machine(json.loads(tables.Path(ref).read_text()), backend.threads)
        tables.Path(out).write_text(json.dumps(data))
        return LatencyTable.load(out)

    def fake_build(space, backend, batches, seqs, out, **kw):
        calls["build"].append(str(out))
        tables.Path(out).parent.mkdir(parents=True, exist_ok=True)
        tables.Path(out).write_text(json.dumps(_this_machine(json.loads(SHIPPED.read_text()), backend.threads)))

    monkeypatch.setattr(transfer, "transfer_table", fake_transfer)
    monkeypatch.setattr(profiler, "build_table", fake_build)
    return calls


def _resolve(monkeypatch, tmp_path, shipped, run: str, **latency):
    monkeypatch.setattr(tables, "table_search_dirs",
                        lambda include_cache=True: [d for d in (shipped, tables.table_cache_dir()) if d.is_dir()])
    cfg = PipelineConfig.from_dict({"latency": latency})
    lines: list[str] = []
    p = Pipeline(cfg, tmp_path / run, echo=lines.append, progress=False)
    return p.latency_stage(cfg.devices[0]), lines


def test_auto_transfers_once_and_the_next_run_finds_the_cached_table(world, monkeypatch, tmp_path):
    shipped = _reference(tmp_path)
    out, lines = _resolve(monkeypatch, tmp_path, shipped, "run1")
    assert len(world["transfer"]) == 1 and not world["build"]
    assert world["transfer"][0][:2] == (str(shipped / "ref.json"), 10)
    line = next(x for x in lines if "no table matches" in x)
    here = machine_fingerprint("cpu")["cpu_model"]
    assert line == (f"[latency-cpu] no table matches this machine (cpu_model {here!r} vs 'Other CPU 9000'); "
                    "transferring ref.json from 10 measured models (~1 min)")
    assert out["transferred_from"] == str(shipped / "ref.json")
    cached = tables.Path(out["cached_copy"])
    assert cached.parent == tmp_path / "cache" / "tables" and cached.is_file() and "transferred" in cached.name

    again, lines = _resolve(monkeypatch, tmp_path, shipped, "run2")
    assert len(world["transfer"]) == 1 and not world["build"]
    assert again == {"table": str(cached.resolve()), "reused": True}
    assert any("reusing" in x for x in lines)


def test_never_builds_a_full_table(world, monkeypatch, tmp_path):
    shipped = _reference(tmp_path)
    out, lines = _resolve(monkeypatch, tmp_path, shipped, "run1", transfer="never")
    assert not world["transfer"] and len(world["build"]) == 1
    assert any("building one (~4 min)" in x and "cpu_model" in x for x in lines)
    assert out["reused"] is False and "transferred_from" not in out


def test_another_thread_count_is_another_machine(world, monkeypatch, tmp_path):
    shipped = _reference(tmp_path, cpu_model=None, threads=1)
    out, lines = _resolve(monkeypatch, tmp_path, shipped, "run1")
    assert [c[2] for c in world["transfer"]] == [2] and not world["build"]
    assert any("(threads 2 vs 1); transferring ref.json" in x for x in lines)


def test_a_reference_transfer_refuses_falls_back_to_a_build(world, monkeypatch, tmp_path):
    shipped = _reference(tmp_path)

    def refuse(ref, backend, **kw):
        raise TableError("ref.json was measured with backend x, the target is cpu-ort")

    monkeypatch.setattr(transfer, "transfer_table", refuse)
    out, lines = _resolve(monkeypatch, tmp_path, shipped, "run1")
    assert len(world["build"]) == 1 and out["reused"] is False
    said = [x for x in lines if "building one" in x]
    assert len(said) == 1 and said[0].startswith("[latency-cpu] cannot transfer ref.json (ref.json was measured")


def test_no_other_machine_table_builds_even_with_auto(world, monkeypatch, tmp_path):
    out, lines = _resolve(monkeypatch, tmp_path, tmp_path / "none", "run1")
    assert not world["transfer"] and len(world["build"]) == 1


def test_an_unknown_transfer_mode_is_refused_in_one_line():
    with pytest.raises(ConfigError) as exc:
        PipelineConfig.from_dict({"latency": {"transfer": "sometimes"}})
    assert str(exc.value) == "latency.transfer: must be one of 'auto', 'never', got 'sometimes'"
    assert PipelineConfig().latency.transfer == "auto"
