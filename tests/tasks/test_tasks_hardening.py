"""Tasks fail fast and in one line: offline without --data-dir, non-UTF-8 files."""

from __future__ import annotations

import time

import pytest

from kdnas_deploy.errors import DataError
from kdnas_deploy.tasks import glue


def test_offline_glue_without_a_data_dir_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv(glue.GLUE_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    task = glue.glue_task("sst2")
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="not available offline .*HF_DATASETS_OFFLINE is set.*pass --data-dir"):
        task.load_split("train")
    assert time.perf_counter() - t0 < 2.0


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    for env in glue.OFFLINE_ENVS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.delenv(glue.GLUE_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setattr(glue, "HUB_HOST", ("127.0.0.1", 9))  # discard port: refused at once
    with pytest.raises(DataError, match="unreachable"):
        glue.glue_task("rte").load_split("dev")


def test_non_utf8_glue_tsv_is_one_line(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(b"sentence\tlabel\ngood \xff\xfe movie\t1\n")
    with pytest.raises(DataError, match=r"train\.tsv is not UTF-8 text \(byte \d+"):
        glue.glue_task("sst2", tmp_path).load_split("train")


def test_non_utf8_task_file_is_one_line(tmp_path):
    from kdnas_deploy.tasks.files import file_task

    (tmp_path / "train.csv").write_bytes(b"text,label\n\xff\xfe bad,1\n")
    with pytest.raises(DataError, match="cannot parse .*train.csv"):
        file_task(tmp_path).load_split("train")
