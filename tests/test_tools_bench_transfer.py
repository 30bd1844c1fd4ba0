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
