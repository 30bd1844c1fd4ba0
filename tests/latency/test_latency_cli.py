"""The `latency` CLI: outputs on a tiny table, and bad input -> one line, exit code 2, no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdnas_deploy", "latency", *args], capture_output=True, text=True,
                          cwd=cwd)


def _bad(r, needle):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_predict_show(tiny_table_path, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"num_layers": 2, "hidden_size": 32, "num_heads": 2, "ffn_size": 64}))
    r = run("predict", str(tiny_table_path), "--arch", str(arch), "--arch", "L=3,H=64,A=2,F=64", "--seq", "24",
            "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["arch"] for row in rows] == ["L=2,H=32,A=2,F=64", "L=3,H=64,A=2,F=64"]
    assert rows[0]["latency_ms"] > 0 and rows[0]["seq"] == 24
    r = run("show", str(tiny_table_path), "--costs")
    assert r.returncode == 0 and "anchor_depths" in r.stdout and "fixed_ms" in r.stdout


def test_bad_inputs(tiny_table_path, tmp_path):
    _bad(run("show", str(tmp_path / "missing.json")), "not found")
    corrupt = tmp_path / "c.json"
    corrupt.write_text("[]")
    _bad(run("predict", str(corrupt), "--arch", "L=1,H=32,A=2,F=64"), "not a latency table")
    _bad(run("predict", str(tiny_table_path), "--arch", "L=9,H=32,A=2,F=64"), "outside space")
    _bad(run("predict", str(tiny_table_path), "--arch", "L=1,H=32,A=3,F=64"), "does not divide")
    _bad(run("validate", str(tiny_table_path), "--n", "99", "--report", str(tmp_path / "r.json")), "cannot draw 99")
    future = tmp_path / "f.json"
    future.write_text(json.dumps({**json.loads(tiny_table_path.read_text()), "schema_version": 99}))
    _bad(run("show", str(future)), "newer")


@pytest.mark.parametrize(
    "space_text,needle",
    [
        ("choices: {num_layers: [1], hidden_size: [30], num_heads: {30: [4]}, ffn_size: [64]}", "do not divide"),
        ("choices: {num_layers: [1], hidden_size: [32], num_heads: [2], ffn_size: [64], depth: [3]}", "unknown"),
    ],
)
def test_malformed_space_writes_nothing(tmp_path, space_text, needle):
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    out = tmp_path / "t.json"
    _bad(run("build", "--space", str(space), "--out", str(out)), needle)
    assert not out.exists()


def test_cuda_device_error_without_gpu(tmp_path):
    from test_latency_cuda import _has_cuda

    if _has_cuda():
        pytest.skip("a GPU is present")
    out = tmp_path / "t.json"
    _bad(run("build", "--space", "minilm-l6", "--device", "cuda", "--out", str(out)), "cuda")
    _bad(run("build", "--device", "cuda", "--backend", "cuda-torch", "--precision", "fp16", "--out", str(out)), "cuda")
    _bad(run("build", "--device", "cpu", "--precision", "fp16", "--out", str(out)), "fp16")
    assert not out.exists()


def test_list_shows_why_each_table_matches_or_not(tiny_table_path, tiny_space, tmp_path):
    import os
    import shutil

    import yaml

    cache = tmp_path / "cache"
    (cache / "tables").mkdir(parents=True)
    shutil.copy(tiny_table_path, cache / "tables" / "tiny.json")
    (cache / "tables" / "junk.json").write_text("[]")
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(tiny_space.to_dict()))
    env = {**os.environ, "KDNAS_CACHE_DIR": str(cache)}

    def listing(*args):
        r = subprocess.run([sys.executable, "-m", "kdnas_deploy", "latency", "list", "--json", *args],
                           capture_output=True, text=True, cwd=tmp_path, env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        return doc, {Path(t["path"]).name: t for t in doc["tables"]}

    doc, rows = listing("--space", str(space), "--threads", "1", "--batch", "1", "--seq", "16")
    assert doc["table_cache"] == str(cache / "tables")
    assert rows["tiny.json"]["matches"] and rows["tiny.json"]["why"] == []
    assert not rows["junk.json"]["matches"] and "not a latency table" in rows["junk.json"]["why"][0]
    assert any(not t["matches"] for name, t in rows.items() if name.startswith("cpu-minilm-l6"))
    _, rows = listing("--space", str(space), "--threads", "3", "--seq", "16")
    assert rows["tiny.json"]["why"] == ["threads 1 != 3"]
    _bad(run("list", "--threads", "0"), "--threads")


def test_build_refuses_a_finished_table_without_force(tiny_table_path, tmp_path):
    out = tmp_path / "t.json"
    out.write_bytes(tiny_table_path.read_bytes())
    _bad(run("build", "--space", "minilm-l6", "--out", str(out)), "--force")
    assert out.read_bytes() == tiny_table_path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


@pytest.mark.skipif(not Path("/sys/fs").is_dir(), reason="needs sysfs (a folder no one can create below)")
def test_build_refuses_an_out_folder_it_cannot_create_before_measuring(tmp_path):
    import yaml

    from tests.latency.conftest import TINY_SPACE

    space, work = tmp_path / "space.yaml", tmp_path / "work"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    r = run("build", "--space", str(space), "--batch", "1", "--seq", "8", "--rounds", "1", "--out",
            "/sys/fs/kdnas-test-no-such-folder/t.json", "--workdir", str(work), "--no-progress")  # fmt: skip
    _bad(r, "/sys/fs/kdnas-test-no-such-folder")
    assert not work.exists()  # refused before the work folder (exports, journal) was made
