"""tools/bench_transfer.py on its saved results (no measuring): rescoring a finished pair reproduces its stored
scores, and the pair name of a CPU."""

from __future__ import annotations

import json

import pytest

from tools.bench_transfer import RESULTS, cpu_slug, rescore

PAIR = "real-intel-xeon-processor-avx512-vnni"


def test_rescoring_a_saved_pair_reproduces_its_stored_scores():
    entry = json.loads(RESULTS.read_text())["pairs"][PAIR]
    again = rescore(entry, RESULTS.parent / "latency_transfer")
    for key, stored in entry["scores"].items():
        for kind in ("raw", "anchored"):
            assert again["scores"][key][kind]["mape_pct"] == pytest.approx(stored[kind]["mape_pct"], abs=1e-3)
        assert again["scores"][key]["anchor"]["factor"] == stored["anchor"]["factor"]
    # the slow-spell transfer of this pair: the probe minima agree on a 0.765 factor, and it is applied
    moved = again["scores"]["transferred"]
    assert moved["anchor"]["applied"] is True and moved["anchored"]["mape_pct"] < 0.25 * moved["raw"]["mape_pct"]


def test_a_cpu_names_its_pair_by_model_and_isa_tier():
    fp = {"cpu_model": "Intel(R) Xeon(R) Processor @ 2.60GHz", "isa_flags": ["avx2", "avx512_vnni"]}
    assert cpu_slug(fp) == "intel-xeon-processor-2-60ghz-avx512-vnni"
    epyc = {"cpu_model": "AMD EPYC", "isa_flags": ["avx2", "avx512_bf16", "avx512_vnni"]}
    assert cpu_slug(epyc) == "amd-epyc-avx512-bf16"
    # the model string alone names two EPYC generations; the fingerprint's cpu_id tells them apart
    assert cpu_slug({**epyc, "cpu_id": "AuthenticAMD family 26 model 2"}) == "amd-epyc-f26m2-avx512-bf16"


OV_PAIR = "real-openvino-amd-epyc-f26m2-avx512-bf16"


def test_one_standard_error_rule_prefers_the_smaller_correction_within_noise():
    """The OpenVINO pair's 10 saved points: per_hidden (4 parameters) has the best LOO MAPE, 2.77%, but
    scale_by_cost (2 parameters, 3.14%) lies within one standard error of it and is chosen."""
    import numpy as np

    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.latency.transfer import point_features
    from kdnas_deploy.latency.transfer_fit import select_correction

    entry = json.loads(RESULTS.read_text())["pairs"][OV_PAIR]
    saved = json.loads((RESULTS.parent / "latency_transfer" / f"{OV_PAIR}.transferred.json").read_text())
    points = saved["transfer"]["points"]
    ref = LatencyTable.load(RESULTS.parents[2] / entry["reference"])
    f = point_features(ref, [Architecture.from_dict(p["arch"]) for p in points], 1, 128)
    sel = select_correction(f, np.array([p["measured_ms"] for p in points]))
    best = min((v["loo_mape_pct"], k) for k, v in sel["loo"].items() if v.get("loo_mape_pct") is not None)
    assert best[1] == "per_hidden" and sel["model"] == "scale_by_cost"
    assert sel["loo"]["scale_by_cost"]["loo_mape_pct"] <= best[0] + sel["one_se_pct"]


def test_refit_rewrites_entries_from_the_saved_points_only(tmp_path):
    import shutil

    from kdnas_deploy.errors import TableError
    from kdnas_deploy.latency.table import LatencyTable
    from kdnas_deploy.latency.transfer import refit_table

    entry = json.loads(RESULTS.read_text())["pairs"][OV_PAIR]
    ref = RESULTS.parents[2] / entry["reference"]
    copy = tmp_path / "t.json"
    shutil.copyfile(RESULTS.parent / "latency_transfer" / f"{OV_PAIR}.transferred.json", copy)
    before = LatencyTable.load(copy).data
    after = refit_table(ref, copy).data
    assert after["transfer"]["model"] == "scale_by_cost" and after["probe"] == before["probe"]
    assert [p["measured_ms"] for p in after["transfer"]["points"]] == [
        p["measured_ms"] for p in before["transfer"]["points"]]
    assert all(e["latency_ms"] > 0 for e in after["entries"]) and LatencyTable.load(copy).data == after
    with pytest.raises(TableError, match="not a table transferred from"):
        refit_table(RESULTS.parents[2] / "latency_tables" / "cpu-minilm-l6-fp32-b1-s128.json", copy)


def test_an_int8_deployment_has_its_own_real_pair_built_and_measured_in_int8(tmp_path, monkeypatch):
    """Where no int8 table matches the machine, the int8 table `run` would transfer from gets a `real-int8-` pair,
    and a full build of a pair is built in the reference's precision (an fp32 build of an int8 pair would score
    the transfer against the wrong deployment)."""
    import tools.bench_transfer as bench

    refs = {("cpu-ort", "fp32"): None, ("cpu-openvino", "fp32"): None, ("cpu-ort", "int8"): tmp_path / "int8.json"}
    monkeypatch.setattr(bench, "run_reference", lambda backend="cpu-ort", precision="fp32": refs[backend, precision])
    pairs = bench.pairs_for(tmp_path, quick=False)
    int8 = [name for name in pairs if name.startswith("real-")]
    assert len(int8) == 1 and int8[0].startswith("real-int8-")
    assert pairs[int8[0]] == {"reference": tmp_path / "int8.json", "threads": 2}

    seen: list[list[str]] = []
    monkeypatch.setattr(bench, "run_tracked", lambda cmd: seen.append(cmd) or {"seconds": 1.0})
    bench.build(tmp_path / "full.json", 2, bench.DEFAULT_SPACE, backend="cpu-ort", precision="int8")
    cmd = seen[0]
    assert cmd[cmd.index("--precision") + 1] == "int8" and cmd[cmd.index("--backend") + 1] == "cpu-ort"


def test_a_pair_measured_on_this_cpu_stays_runnable_after_its_table_shipped(monkeypatch):
    """Once a table of this CPU ships, `run_reference` names no real pair; the results' own record of a pair
    measured here (reference file present) keeps it runnable, pairs of other CPUs or lost references do not."""
    import tools.bench_transfer as bench

    monkeypatch.setattr(bench, "cpu_name", lambda: "this cpu")
    ref = "latency_tables/cpu-minilm-l6-fp32-b1-s128.json"
    done = {"real-a": {"cpu": "this cpu", "reference": ref, "target_threads": 2},
            "real-b": {"cpu": "another cpu", "reference": ref, "target_threads": 2},
            "real-c": {"cpu": "this cpu", "reference": "latency_tables/gone.json", "target_threads": 2},
            "old": {"reference": ref, "target_threads": 1}}  # fmt: skip
    assert bench.measured_here(done) == {"real-a": {"reference": bench.ROOT / ref, "threads": 2}}
