"""io primitives: torn/garbage JSONL, folder locks, one-line disk errors and partial-file cleanup."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from kdnas_deploy import io
from kdnas_deploy.errors import BusyError, DataError, DiskError


def test_torn_last_line_is_dropped_reported_and_truncated_before_the_next_append(tmp_path, caplog):
    log = tmp_path / "candidates.jsonl"
    log.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "rew')
    with caplog.at_level(logging.WARNING, logger="kdnas_deploy.io"):
        assert io.read_jsonl(log) == [{"i": 0}, {"i": 1}]
    assert "torn last line" in caplog.text and str(log) in caplog.text
    io.append_jsonl(log, {"i": 2})
    assert log.read_bytes() == b'{"i": 0}\n{"i": 1}\n{"i": 2}\n'
    assert io.read_jsonl(log) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_read_with_repair_truncates_and_a_whole_record_without_newline_is_kept(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_bytes(b'{"i": 0}\n{"i":')
    assert io.read_jsonl(log, repair=True) == [{"i": 0}]
    assert log.read_bytes() == b'{"i": 0}\n'
    log.write_bytes(b'{"i": 0}\n{"i": 1}')
    assert io.read_jsonl(log) == [{"i": 0}, {"i": 1}]
    io.append_jsonl(log, {"i": 2})
    assert io.read_jsonl(log) == [{"i": 0}, {"i": 1}, {"i": 2}]


@pytest.mark.parametrize("garbage", [b"not json\n", b"\xff\xfe\n", b"[1, 2]\n", b'{"i": 1{"i": 2}\n'])
def test_garbage_in_the_middle_is_a_one_line_error_naming_file_and_line(tmp_path, garbage):
    log = tmp_path / "episodes.jsonl"
    log.write_bytes(b'{"i": 0}\n' + garbage + b'{"i": 2}\n')
    with pytest.raises(DataError, match=r"episodes\.jsonl:2: not a JSON record") as exc:
        io.read_jsonl(log)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError):  # appending never hides it either
        io.append_jsonl(log, {"i": 3})
        io.read_jsonl(log)


def test_folder_lock_refuses_a_second_holder_with_its_pid(tmp_path):
    run = tmp_path / "run"
    with io.lock_folder(run):
        assert (run / io.LOCK_FILE).read_text().strip() == str(os.getpid())
        assert io.is_empty_dir(run)
        code = textwrap.dedent(f"""
            from kdnas_deploy import io
            from kdnas_deploy.errors import BusyError
            try:
                io.lock_folder({str(run)!r}).acquire()
            except BusyError as e:
                print(e)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
        assert out.strip() == f"run folder {run} is in use by another process (pid {os.getpid()})"
        with pytest.raises(BusyError):
            io.FolderLock(run).acquire()  # another open file description: refused in-process too
    with io.lock_folder(run):  # released
        pass
    assert not (run / io.LOCK_FILE).exists()  # a released lock leaves no file behind


def test_a_lock_taken_on_an_unlinked_file_is_retaken_on_the_new_one(tmp_path):
    run = tmp_path / "run"
    first = io.FolderLock(run).acquire()
    stale_fd = os.open(run / io.LOCK_FILE, os.O_RDWR)  # a waiter that opened the file before release
    first.release()
    second = io.FolderLock(run).acquire()  # creates a new file: the stale descriptor points at the old inode
    assert os.fstat(stale_fd).st_ino != os.stat(run / io.LOCK_FILE).st_ino
    os.close(stale_fd)
    with pytest.raises(BusyError):
        io.FolderLock(run).acquire()
    second.release()


def test_discard_unused_folders_takes_back_only_what_holds_no_result(tmp_path):
    io.CREATED_FOLDERS.clear()
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("x: 1\n")  # existed before: never touched
    io.make_dirs(old / "sub")
    setup_only = io.make_dirs(tmp_path / "a" / "b")
    (setup_only / "config.yaml").write_text("x: 1\n")
    (setup_only / "episodes.jsonl").write_text("")
    computed = io.make_dirs(tmp_path / "c")
    (computed / "config.yaml").write_text("x: 1\n")
    (computed / "episodes.jsonl").write_text('{"episode": 0}\n')
    removed = io.discard_unused_folders()
    assert sorted(p.name for p in removed) == ["a", "sub"]
    assert not (tmp_path / "a").exists() and not (old / "sub").exists()
    assert (old / "config.yaml").is_file() and (computed / "episodes.jsonl").is_file()
    assert io.CREATED_FOLDERS == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failed_atomic_write_is_one_line_and_leaves_no_tmp(tmp_path, monkeypatch, code):
    def boom(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(io.os, "fsync", boom)
    target = tmp_path / "out.json"
    with pytest.raises(DiskError) as exc:
        io.atomic_write_json(target, {"a": 1})
    assert str(exc.value) == f"cannot write {target}: {os.strerror(code)}"
    assert exc.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_jsonl_append_and_folder_creation_errors_are_typed(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DiskError, match="cannot create the folder .*file/sub: Not a directory"):
        io.append_jsonl(blocker / "sub" / "log.jsonl", {"a": 1})
    monkeypatch.setattr(io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    with pytest.raises(DiskError, match="Input/output error") as exc:
        io.append_jsonl(tmp_path / "log.jsonl", {"a": 1})
    assert exc.value.exit_code == 1  # not the user's input


def test_dev_full_is_no_space(tmp_path):
    with pytest.raises(DiskError, match="No space left on device"):
        with io.writing("/dev/full"), open("/dev/full", "w") as fh:
            fh.write("x" * 10)
            fh.flush()


def test_free_space_check(tmp_path):
    io.check_free_space(tmp_path / "not" / "yet", 1, "a cache")
    with pytest.raises(DiskError, match="not enough free space .* for a cache"):
        io.check_free_space(tmp_path, 1 << 62, "a cache")


def test_atomic_directory_failure_is_typed_and_cleans_up(tmp_path, monkeypatch):
    final = tmp_path / "model"
    with pytest.raises(DiskError, match="No space left"):
        with io.atomic_directory(final) as tmp:
            (tmp / "a").write_text("x")
            raise OSError(errno.ENOSPC, "full")
    assert list(tmp_path.iterdir()) == []
    final.mkdir()
    (final / "x").write_text("1")
    with pytest.raises(FileExistsError):
        with io.atomic_directory(final) as tmp:
            pass
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["model"]'


def test_check_writable(tmp_path, monkeypatch):
    io.check_writable(tmp_path / "new" / "deeper" / "m.json")
    with pytest.raises(DiskError, match="Is a directory"):
        io.check_writable(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(DiskError, match="not a directory"):
        io.check_writable(tmp_path / "f" / "m.json")
    monkeypatch.setattr(io.os, "access", lambda p, mode: False)
    monkeypatch.setattr(io, "_read_only", lambda p: True)
    with pytest.raises(DiskError, match="Read-only file system") as exc:
        io.check_writable(tmp_path / "m.json", "--json")
    assert str(exc.value) == f"cannot write --json {tmp_path / 'm.json'}: Read-only file system"


def test_an_io_error_inside_another_exception_type_is_a_disk_error(tmp_path):
    class SafetensorError(Exception):
        pass

    with pytest.raises(DiskError, match="cannot write .*m: No space left on device"):
        with io.writing(tmp_path / "m"):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(ValueError):
        with io.writing(tmp_path / "m"):
            raise ValueError("unrelated")
