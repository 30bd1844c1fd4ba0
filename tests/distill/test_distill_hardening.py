"""Hardening of the distill library: checkpoints never run code, full disks are one line, caches are checked."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import torch

from kdnas_deploy.distill import loop
from kdnas_deploy.distill.loop import CHECKPOINT, SIGNATURE, LoopConfig, run_loop
from kdnas_deploy.errors import DiskError

CFG = LoopConfig(epochs=1, batch_size=4, learning_rate=0.05, seed=3, checkpoint_every=2)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def _run(work, signature=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(12, 3)

    def loss_fn(idx):
        return (model(x[idx]).squeeze(-1) ** 2).mean()

    result = run_loop(config=CFG, lengths=np.ones(12, dtype=np.int64), modules={"m": model}, loss_fn=loss_fn,
                      evaluate=lambda: ({}, 0.0), on_best=lambda: None, work_dir=work, progress=False,
                      signature=signature)  # fmt: skip
    return result, model


def test_checkpoint_is_plain_tensors_and_has_a_signature_file(tmp_path):
    work = tmp_path / "w"
    _run(work, signature={"run": 1, "arch": (1, 2)})
    assert json.loads((work / SIGNATURE).read_text()) == {"signature": {"run": 1, "arch": [1, 2]}}
    saved = torch.load(work / CHECKPOINT, weights_only=True)
    assert saved["signature"] == {"run": 1, "arch": [1, 2]}
    result, _ = _run(work, signature={"run": 1, "arch": (1, 2)})
    assert result.resumed_from_step == 3  # finished run found and resumed from


def test_a_planted_pickle_never_runs(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    marker = tmp_path / "PWNED"
    torch.save({"signature": None, "x": _Evil(str(marker))}, work / CHECKPOINT)
    (work / SIGNATURE).write_text(json.dumps({"signature": None}))
    result, _ = _run(work)
    assert not marker.exists()
    out = [line for line in capsys.readouterr().out.splitlines() if "checkpoint" in line]
    assert len(out) == 1 and "ignoring the unreadable or unsafe checkpoint" in out[0]
    assert "loading it could run code" in out[0]
    assert result.resumed_from_step == 0


def test_a_foreign_signature_is_refused_before_the_checkpoint_is_opened(tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    _run(work, signature={"run": 1})

    def no_load(*a, **k):
        raise AssertionError("torch.load called on a checkpoint of another run")

    monkeypatch.setattr(torch, "load", no_load)
    result, _ = _run(work, signature={"run": 2})
    assert "from a different run" in capsys.readouterr().out
    assert result.resumed_from_step == 0
    (work / SIGNATURE).unlink()
    result, _ = _run(work, signature={"run": 2})  # no signature file: never opened either
    assert result.resumed_from_step == 0


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_tmp(tmp_path, monkeypatch):
    work = tmp_path / "w"

    def full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskError, match=r"cannot write .*\.checkpoint\.pt\.tmp: No space left on device"):
        _run(work)
    assert not any(p.name.endswith(".tmp") for p in work.iterdir())
    assert loop.CHECKPOINT not in {p.name for p in work.iterdir()}


@pytest.fixture()
def tiny_cache_inputs(tiny_teacher, builtin_small):
    from kdnas_deploy.distill.data import encode
    from kdnas_deploy.distill.teachers import load_classifier, load_tokenizer

    task, train, _ = builtin_small
    teacher = load_classifier(str(tiny_teacher), task)
    enc = encode(train.select(range(24)), task, load_tokenizer(str(tiny_teacher)), 32)
    return teacher, str(tiny_teacher), enc


def _cache(inputs, cache_dir):
    from kdnas_deploy.distill.cache import build_or_load_cache

    teacher, teacher_dir, enc = inputs
    return build_or_load_cache(teacher, teacher_dir, enc, 32, (0, 2), cache_dir, 8, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_a_corrupt_cache_is_detected_and_rebuilt(tiny_cache_inputs, tmp_path, caplog, damage):
    first = _cache(tiny_cache_inputs, tmp_path)
    ref = np.array(first.hidden[2])
    target = first.folder / "hidden_2.npy"
    size = target.stat().st_size
    del first
    if damage == "truncate":
        with open(target, "r+b") as fh:
            fh.truncate(size // 2)
    else:
        target.write_bytes(np.random.default_rng(0).bytes(size))
    from kdnas_deploy.distill import cache as cache_mod

    cache_mod._VERIFIED.clear()
    again = _cache(tiny_cache_inputs, tmp_path)
    assert not again.hit
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    assert np.array_equal(np.array(again.hidden[2]), ref)


def test_a_cache_that_cannot_fit_is_refused_before_writing(tiny_cache_inputs, tmp_path, monkeypatch):
    import shutil as sh

    from kdnas_deploy import io

    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(DiskError, match="not enough free space .* teacher-output cache"):
        _cache(tiny_cache_inputs, tmp_path / "c")
    assert not any((tmp_path / "c").iterdir())


def test_no_space_while_preallocating_is_one_line_and_removes_the_partial_entry(tiny_cache_inputs, tmp_path,
                                                                               monkeypatch):  # fmt: skip
    from kdnas_deploy.distill import cache as cache_mod

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_mod.os, "posix_fallocate", full)
    with pytest.raises(DiskError, match="No space left on device") as exc:
        _cache(tiny_cache_inputs, tmp_path / "c")
    assert exc.value.exit_code == 2
    assert list((tmp_path / "c").iterdir()) == []


def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _broken_teacher(tiny_teacher, tmp_path, how):
    import shutil

    folder = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, folder)
    if how == "weights":
        (folder / "model.safetensors").write_bytes(np.random.default_rng(1).bytes(4096))
    elif how == "tokenizer":
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)
    elif how == "config":
        (folder / "config.json").write_bytes(b"\xff\xfe{not utf-8")
    return folder


@pytest.mark.parametrize("how", ["weights", "tokenizer", "config"])
def test_distill_with_a_broken_teacher_refuses_in_one_line_and_writes_nothing(tiny_teacher, builtin_small,
                                                                              tmp_path, how):  # fmt: skip
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.distill import DistillConfig, distill
    from kdnas_deploy.errors import ModelError

    teacher = _broken_teacher(tiny_teacher, tmp_path, how)
    task, train, dev = builtin_small
    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(ModelError) as exc:
        distill(str(teacher), Architecture(1, 32, 2, 64), task, config=DistillConfig.proxy(), train=train, eval=dev,
                out_dir=runs / "s", cache_dir=runs / "cache", progress=False)  # fmt: skip
    assert "\n" not in str(exc.value) and str(teacher) in str(exc.value)
    if how == "tokenizer":
        assert "has no tokenizer" in str(exc.value)
    assert _snapshot(runs) == []


@pytest.mark.parametrize("field,value", [("learning_rate", float("nan")), ("epochs", float("inf")), ("epochs", 1e300),
                                         ("batch_size", 10**12), ("augment_copies", 10**12),
                                         ("temperature", float("nan")), ("kd_weight", float("nan"))])
def test_distill_refuses_non_finite_numbers_before_writing(tiny_teacher, builtin_small, tmp_path, field, value):
    from dataclasses import replace

    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.distill import DistillConfig, distill
    from kdnas_deploy.errors import ConfigError

    task, train, dev = builtin_small
    with pytest.raises(ConfigError, match=field):
        cfg = replace(DistillConfig.proxy(), **{field: value})
        distill(str(tiny_teacher), Architecture(1, 32, 2, 64), task, config=cfg,
                train=train, eval=dev, out_dir=tmp_path / "s", cache_dir=tmp_path / "c", progress=False)  # fmt: skip
    assert _snapshot(tmp_path) == []


def test_a_second_distill_into_the_same_folder_is_refused_while_the_first_runs(tiny_teacher, builtin_small, tmp_path):
    from kdnas_deploy.arch import Architecture
    from kdnas_deploy.distill import DistillConfig, distill
    from kdnas_deploy.errors import BusyError
    from kdnas_deploy.io import FolderLock

    task, train, dev = builtin_small
    with FolderLock(tmp_path / ".s.work"):
        with pytest.raises(BusyError, match=r"\.s\.work is in use by another process \(pid \d+\)"):
            distill(str(tiny_teacher), Architecture(1, 32, 2, 64), task, config=DistillConfig.proxy(), train=train,
                    eval=dev, out_dir=tmp_path / "s", progress=False)  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_evaluate_checks_numbers_and_json_before_running(tiny_teacher, builtin_small, tmp_path, monkeypatch):
    from kdnas_deploy.distill import evaluate as ev
    from kdnas_deploy.errors import ConfigError

    task = builtin_small[0]
    monkeypatch.setattr(ev, "predict", lambda *a, **k: pytest.fail("evaluated before checking"))
    with pytest.raises(ConfigError, match="batch size"):
        ev.evaluate_model(str(tiny_teacher), task, batch_size=0)
    with pytest.raises(ConfigError, match="max sequence length"):
        ev.evaluate_model(str(tiny_teacher), task, max_seq_len=-1)
    with pytest.raises(DiskError, match="Is a directory"):
        ev.evaluate_model(str(tiny_teacher), task, json_path=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DiskError, match="not a directory"):
        ev.evaluate_model(str(tiny_teacher), task, json_path=tmp_path / "file" / "m.json")


@pytest.mark.parametrize("field,value", [("epochs", 0), ("epochs", -1), ("batch_size", 0), ("max_seq_len", 0),
                                         ("learning_rate", float("nan")), ("max_train_samples", 0),
                                         ("epochs", 1e300), ("batch_size", 10**12)])
def test_finetune_refuses_bad_numbers_before_writing(tiny_backbone, builtin_small, tmp_path, field, value):
    from kdnas_deploy.distill.finetune import FinetuneConfig, finetune_teacher
    from kdnas_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        finetune_teacher(str(tiny_backbone), builtin_small[0], tmp_path / "t",
                         FinetuneConfig(**{field: value}), progress=False)  # fmt: skip
    assert _snapshot(tmp_path) == []


def test_a_pickled_pytorch_model_bin_is_refused_and_never_runs(tiny_teacher, builtin_small, tmp_path):
    import pickle
    import shutil

    from kdnas_deploy.distill.teachers import load_classifier
    from kdnas_deploy.errors import ModelError

    folder = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil(str(marker))}))
    with pytest.raises(ModelError, match="holds more than tensors"):
        load_classifier(str(folder), builtin_small[0])
    assert not marker.exists()
