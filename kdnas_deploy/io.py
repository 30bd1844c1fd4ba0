"""Small I/O helpers: atomic writes of JSON/YAML/text, atomic directory publication, append-only JSONL logs
(torn tails dropped and truncated, garbage refused), folder locks, and one-line errors for failed writes."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kdnas_deploy.errors import BusyError, DataError, DiskError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
# errnos caused by the user's path or disk (exit 2); any other OSError on a write is a fault (exit 1)
USER_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EEXIST", "ENAMETOOLONG",
                 "EFBIG", "ELOOP", "ENOENT", "EXDEV", "ENOTEMPTY")  # fmt: skip
    if hasattr(errno, name)
)


def disk_error(path: str | os.PathLike[str], exc: OSError, action: str = "write") -> DiskError:
    """``exc`` as a one-line :class:`DiskError` naming ``path`` and the errno's meaning."""
    code = exc.errno
    meaning = os.strerror(code) if code else (str(exc) or type(exc).__name__)
    if code == errno.EFBIG:
        meaning += " (the file size limit, ulimit -f, was reached)"
    return DiskError(f"cannot {action} {path}: {meaning}", exit_code=2 if code in USER_ERRNOS else 1)


def embedded_errno(exc: BaseException) -> int | None:
    """The errno of an I/O failure that a non-``OSError`` carries in its message (safetensors' Rust writer
    raises ``SafetensorError: ... I/O error: No space left on device (os error 28)``)."""
    import re

    m = re.search(r"\(os error (\d+)\)", str(exc))
    return int(m.group(1)) if m else None


@contextmanager
def writing(path: str | os.PathLike[str], action: str = "write", cleanup: str | os.PathLike[str] | None = None
            ) -> Iterator[None]:  # fmt: skip
    """Turn an ``OSError`` inside the block (or an error carrying ``(os error N)``, as safetensors raises) into
    a :class:`DiskError` for ``path``; remove ``cleanup`` (a partial file) when the block fails."""
    try:
        yield
    except OSError as exc:
        if cleanup is not None:
            Path(cleanup).unlink(missing_ok=True)
        if isinstance(exc, FileExistsError) and not exc.errno:
            raise  # atomic_directory's "not empty" refusal: the CLI reports it with --force advice
        raise disk_error(path, exc, action) from None
    except BaseException as exc:
        if cleanup is not None:
            Path(cleanup).unlink(missing_ok=True)
        code = embedded_errno(exc) if isinstance(exc, Exception) and not isinstance(exc, DiskError) else None
        if code is None:
            raise
        raise disk_error(path, OSError(code, os.strerror(code)), action) from None


# Folders this process created (the outermost new one per make_dirs call): what a refusal may take back.
CREATED_FOLDERS: list[Path] = []
# Files that hold no result: a refused command that left only these (or empty files) in a folder it created
# removes the folder, so bad input writes nothing (a resolved config.yaml, the lock, an empty log).
SETUP_FILES = frozenset({LOCK_FILE, "config.yaml"})


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` with a one-line error (a parent that is a file, a read-only disk, ...)."""
    path = Path(path)
    top = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        top = folder
    with writing(path, "create the folder"):
        path.mkdir(parents=True, exist_ok=True)
    if top is not None:
        CREATED_FOLDERS.append(top.absolute())
    return path


def _holds_no_result(folder: Path) -> bool:
    for p in folder.rglob("*"):
        if p.is_symlink() or (p.is_file() and p.name not in SETUP_FILES and p.stat().st_size > 0):
            return False
    return True


def discard_unused_folders() -> list[Path]:
    """Remove the folders this process created that hold no result (see :data:`SETUP_FILES`); called by the
    CLI when a command is refused, so a refusal after the output folder was opened leaves nothing behind.
    A folder with any computed record (a non-empty log, a table, a checkpoint) is kept: nothing is lost."""
    removed = []
    for folder in reversed(CREATED_FOLDERS):
        try:
            if folder.is_dir() and _holds_no_result(folder):
                shutil.rmtree(folder)
                removed.append(folder)
        except OSError:
            continue  # best effort: a folder we cannot read or remove stays
    CREATED_FOLDERS.clear()
    return removed


def check_writable(path: str | os.PathLike[str], what: str = "the output") -> Path:
    """Refuse, before any work, an output file ``path`` that cannot be written: a folder, a path below a file,
    or one on a read-only or unwritable disk (measured at its nearest existing ancestor)."""
    path = Path(path)
    if path.is_dir():
        raise DiskError(f"cannot write {what} {path}: {os.strerror(errno.EISDIR)}")
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DiskError(f"cannot write {what} {path}: {probe} is {os.strerror(errno.ENOTDIR).lower()}")
    if not os.access(probe, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only(probe) else errno.EACCES
        raise DiskError(f"cannot write {what} {path}: {os.strerror(code)}")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_free_space(folder: str | os.PathLike[str], needed: int, what: str = "the data") -> None:
    """Refuse (one line, exit 2) before writing ``needed`` bytes into ``folder`` when the disk cannot hold them
    (the nearest existing ancestor of ``folder`` is measured)."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if needed > free:
        raise DiskError(
            f"not enough free space in {folder} for {what}: needs {needed / 2**20:.1f} MB, "
            f"{free / 2**20:.1f} MB free"
        )


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    make_dirs(path.parent)
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with writing(path, cleanup=tmp):
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON and write it atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    import yaml

    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=None))


def _valid_prefix(path: Path, data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of a JSONL file's bytes and the length of its valid prefix. A bad last line without a
    newline is a torn tail (a kill mid-write): dropped. A bad line anywhere else: :class:`DataError`."""
    out: list[dict[str, Any]] = []
    pos, lineno = 0, 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        complete = end >= 0
        line = data[pos : end if complete else len(data)]
        lineno += 1
        if line.strip():
            try:
                rec = json.loads(line.decode("utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError):
                if not complete:
                    return out, pos  # torn tail
                raise DataError(
                    f"{path}:{lineno}: not a JSON record (a corrupt log: repair or remove the line)"
                ) from None
            out.append(rec)
        if not complete:
            return out, len(data)  # a complete record missing only its newline
        pos = end + 1
    return out, len(data)


def read_jsonl(path: str | os.PathLike[str], repair: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file. A torn last line (from a kill mid-write) is dropped with a warning and, with
    ``repair``, truncated away so the next append starts on a fresh line; appends repair it anyway."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise disk_error(path, exc, "read") from None
    records, keep = _valid_prefix(path, data)
    if keep < len(data):
        _warn_torn(path, len(data) - keep)
        if repair:
            _truncate(path, keep)
    elif data and not data.endswith(b"\n") and repair:
        with writing(path), open(path, "ab") as fh:
            fh.write(b"\n")
    return records


_WARNED: set[tuple[str, int]] = set()


def _warn_torn(path: Path, n: int) -> None:
    """One warning per torn tail (a log is read several times by one run)."""
    if (str(path), n) not in _WARNED:
        _WARNED.add((str(path), n))
        log.warning("%s: dropped a torn last line (%d bytes, from an interrupted write)", path, n)


def _truncate(path: Path, size: int) -> None:
    with writing(path), open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())


def _repair_tail(path: Path, fh: IO[bytes]) -> None:
    """Before an append: cut a torn last line (no newline) so the new record does not join it."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    fh.seek(0)
    data = fh.read()
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:].decode("utf-8"))
        fh.seek(0, os.SEEK_END)
        fh.write(b"\n")  # a whole record that only lacks its newline
    except (ValueError, UnicodeDecodeError):
        _warn_torn(path, size - start)
        fh.truncate(start)
    fh.seek(0, os.SEEK_END)


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and fsync, so a killed process never loses a finished record. A torn last line
    left by an earlier kill is truncated first."""
    path = Path(path)
    line = (json.dumps(record) + "\n").encode("utf-8")
    make_dirs(path.parent)
    with writing(path), open(path, "a+b") as fh:
        _repair_tail(path, fh)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``<folder>/.lock``, held until :meth:`release` (or process exit: the
    kernel drops it, so a killed process never leaves a stale lock). The file records the holder's pid."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        make_dirs(self.folder)
        while True:
            with writing(self.path, "lock"):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise BusyError(f"run folder {self.folder} is in use by another process (pid {pid})") from None
            except OSError as exc:
                os.close(fd)
                raise disk_error(self.path, exc, "lock") from None
            if self._same_file(fd):
                break
            os.close(fd)  # a releasing holder unlinked the file we locked: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file (while still holding the lock: a waiter re-checks the inode) and unlock."""
        if self._fd is not None:
            if self._same_file(self._fd):
                try:
                    os.unlink(self.path)
                except OSError:
                    pass  # a read-only folder: the stale file is harmless (the kernel lock is what counts)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> FolderLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_folder(path: str | os.PathLike[str]) -> FolderLock:
    """``with lock_folder(run_dir): ...`` -- :class:`BusyError` at once when another process holds it."""
    return FolderLock(path)


def is_empty_dir(path: str | os.PathLike[str]) -> bool:
    """True for a missing folder or one holding nothing but its lock file."""
    path = Path(path)
    return not path.is_dir() or all(p.name == LOCK_FILE for p in path.iterdir())


@contextmanager
def atomic_directory(final: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place only on success.

    Yields the temporary directory. If the block raises, the temporary directory is removed and
    ``final`` is left as it was. With ``force`` an existing ``final`` is replaced. An ``OSError`` of the
    block or of the publication becomes a one-line :class:`DiskError` for ``final``."""
    final = Path(final)
    make_dirs(final.parent)
    with writing(final, "create"):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        with writing(final):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not force and any(final.iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(str(final))
        old = final.with_name(f".{final.name}.old")
        with writing(final, "replace"):
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        with writing(final, "publish"):
            tmp.rename(final)
