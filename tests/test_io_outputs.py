"""Outputs are never silently replaced: ``latency build``'s table (``force``)."""

from __future__ import annotations

import json

import pytest

from kdnas_deploy.errors import OutputExistsError
from kdnas_deploy.space import SearchSpace

SPACE = {"name": "tiny", "choices": {"num_layers": [1, 2], "hidden_size": [32], "num_heads": [2], "ffn_size": [64]}}


@pytest.fixture()
def build_args(tmp_path):
    from kdnas_deploy.latency.backends import get_backend

    return SearchSpace.from_dict(SPACE), get_backend("cpu", "fp32", threads=1)


@pytest.mark.parametrize("existing", ["text", "other_table", "folder"])
def test_latency_build_refuses_a_foreign_out_before_writing_anything(build_args, tmp_path, existing):
    from kdnas_deploy.latency.profiler import build_table

    space, backend = build_args
    out = tmp_path / "t.json"
    if existing == "text":
        out.write_text("my notes\n")
    elif existing == "other_table":
        out.write_text(json.dumps({"space_fingerprint": "0" * 16, "backend": backend.name, "precision": "fp32"}))
    else:
        out.mkdir()
        (out / "x").write_text("1")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    work = tmp_path / "work"
    with pytest.raises(OutputExistsError, match="t.json"):
        build_table(space, backend, [1], [8], out, workdir=work, progress=False, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert not work.exists()


def test_own_table_and_force_are_allowed(build_args, tmp_path):
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import _build_identity, refuse_foreign_out

    space, backend = build_args
    identity = _build_identity(space, backend, [1], [8], MeasurePolicy(), 0)
    out = tmp_path / "t.json"
    out.write_text(json.dumps({"space_fingerprint": space.fingerprint, "backend": backend.name,
                               "precision": backend.precision}))  # fmt: skip
    refuse_foreign_out(out, identity, force=False)
    out.write_text("not a table")
    refuse_foreign_out(out, identity, force=True)
    with pytest.raises(OutputExistsError, match="use --force"):
        refuse_foreign_out(out, identity, force=False)
