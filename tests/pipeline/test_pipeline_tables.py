"""Which table a run uses: candidates and why each matches or not, the table cache, the no-match line."""

import json

import pytest

from kdnas_deploy.pipeline import tables
from kdnas_deploy.pipeline.tables import Candidate, TableRequirement, list_candidate_tables, no_match_line
from kdnas_deploy.space import SearchSpace


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KDNAS_CACHE_DIR", str(tmp_path / "c"))
    assert tables.table_cache_dir() == tmp_path / "c" / "tables"
    monkeypatch.delenv("KDNAS_CACHE_DIR")
    assert "kdnas-deploy" in str(tables.cache_dir())


def test_cached_tables_are_searched_last(monkeypatch, tmp_path):
    monkeypatch.setenv("KDNAS_CACHE_DIR", str(tmp_path))
    (tmp_path / "tables").mkdir()
    dirs = tables.table_search_dirs()
    assert dirs[-1] == (tmp_path / "tables").resolve()
    assert (tmp_path / "tables").resolve() not in tables.table_search_dirs(include_cache=False)


def test_keep_in_cache_copies_the_table_and_its_report(monkeypatch, tmp_path):
    monkeypatch.setenv("KDNAS_CACHE_DIR", str(tmp_path / "cache"))
    built = tmp_path / "cpu.json"
    built.write_text("{}")
    built.with_name("cpu.validation.json").write_text("{}")
    kept = tables.keep_in_cache(built, "cpu-x.json")
    assert kept == tmp_path / "cache" / "tables" / "cpu-x.json" and kept.is_file()
    assert (tmp_path / "cache" / "tables" / "cpu-x.validation.json").is_file()


def test_a_file_that_is_no_table_is_listed_with_its_reason(tmp_path):
    (tmp_path / "junk.json").write_text(json.dumps({"schema_version": 1}))
    need = TableRequirement(SearchSpace.load("minilm-l6"), "cpu", "fp32", 2, 1, 128, "O2")
    [cand] = list_candidate_tables(need, [tmp_path])
    assert not cand.matches and "not a latency table" in cand.why[0]


def test_the_no_match_line_names_the_machine_difference():
    need = TableRequirement(SearchSpace.load("minilm-l6"), "cpu", "fp32", 2, 1, 128, "O2")
    cand = Candidate(tables.Path("t.json"), ("cpu_model: table has 'Xeon A', this machine has 'EPYC B'",))
    line = no_match_line([cand], need)
    assert line == "no shipped table matches this machine (cpu_model 'EPYC B' vs 'Xeon A'); building one (~4 min)"


@pytest.mark.slow
def test_shipped_tables_are_listed_with_reasons():
    need = TableRequirement(SearchSpace.load("minilm-l6"), "cpu", "fp32", 2, 1, 128, "O2")
    cands = list_candidate_tables(need)
    assert cands and all(isinstance(c.why, tuple) for c in cands)


def test_an_int8_table_of_another_int8_scheme_does_not_serve(repo_root, tmp_path):
    """A table of the legacy dynamic-int8 scheme prices another graph than `export` makes: not a match (the
    bench's re-anchoring refused it after the search had used it); one of the export's scheme matches."""
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.pipeline.tables import table_mismatches

    legacy = LatencyTable.load(repo_root / "latency_tables" / "cpu-minilm-l6-int8-b1-s128.json")
    assert "int8_scheme" not in legacy.fingerprint["deploy_config"]
    need = TableRequirement(SearchSpace.load("minilm-l6"), "cpu", "int8", 2, 1, 128, "O2")
    assert "int8 scheme per_tensor_all_ops != per_channel_matmul (the export's)" in table_mismatches(legacy, need)
    doc = json.loads((repo_root / "latency_tables" / "cpu-minilm-l6-int8-b1-s128.json").read_text())
    doc["fingerprint"]["deploy_config"]["int8_scheme"] = "per_channel_matmul"
    (tmp_path / "t.json").write_text(json.dumps(doc))
    current = LatencyTable.load(tmp_path / "t.json")
    assert not [w for w in table_mismatches(current, need) if "int8 scheme" in w]


def test_a_table_naming_this_cpu_comes_before_one_that_only_shares_its_model_string(repo_root, tmp_path,
                                                                                     monkeypatch):  # fmt: skip
    """Both match (a legacy fingerprint has no ``cpu_id``, so it is not compared); the one that names this CPU's
    family and model is listed, and so used, first, whatever the file names' order."""
    doc = json.loads((repo_root / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json").read_text())
    doc["fingerprint"].pop("cpu_id", None)
    here = tables._cpu_id() or "GenuineTest family 1 model 2"
    monkeypatch.setattr(tables, "_cpu_id", lambda: here)
    (tmp_path / "a-legacy.json").write_text(json.dumps(doc))
    doc["fingerprint"]["cpu_id"] = here
    (tmp_path / "b-this-cpu.json").write_text(json.dumps(doc))
    doc["fingerprint"]["cpu_id"] = "OtherVendor family 9 model 9"
    (tmp_path / "0-other.json").write_text(json.dumps(doc))
    monkeypatch.setattr("kdnas_deploy.latency.table.LatencyTable.check_machine", lambda self, strict=False: [])
    need = TableRequirement(SearchSpace.load("minilm-l6"), "cpu", "fp32", 2, 1, 128, "O2")
    names = [c.path.name for c in list_candidate_tables(need, [tmp_path])]
    assert names == ["b-this-cpu.json", "0-other.json", "a-legacy.json"]
    assert tables.find_table(need, [tmp_path]).name == "b-this-cpu.json"
