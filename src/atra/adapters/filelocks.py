"""Inter-process locks and temp files for the store and the journal.

* :func:`dataset_lock`: one writer per dataset. A second writer waits up to a timeout, then
  fails with a one-line :class:`DataError`.
* :func:`exclusive_lock`: one holder at once, refused at once (a live run's journal); the
  holder writes its pid into the lock file so the refusal can name it.
* :func:`create_temp` / :func:`remove_stale_temps`: temp files for atomic replaces, created
  ``0o666`` so the umask alone sets the final file's mode, and removed under the lock when a
  killed writer left them behind.

The locks are ``flock`` locks (:mod:`filelock`): the kernel drops them when the holder dies, so
a killed process never leaves a dataset or a journal locked. Lock files stay on disk (deleting
them would race with a waiting process); they are hidden and empty or hold a pid.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from filelock import FileLock, Timeout

from atra.errors import DataError

DEFAULT_LOCK_TIMEOUT_S: Final[float] = 60.0
"""How long a dataset writer waits for another writer of the same dataset to finish."""


def lock_path_of(path: Path) -> Path:
    """The lock file of ``path`` (hidden, next to it): ``dir/.name.lock``."""
    return path.with_name(f".{path.name}.lock")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def dataset_lock(path: Path, name: str, timeout_s: float) -> Iterator[None]:
    """Hold the writer lock of the dataset at ``path`` (creating its folder); wait up to
    ``timeout_s`` for another writer, then fail with a one-line DataError naming ``name``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"dataset {name}: cannot create {path.parent}: {_one_line(exc)}") from None
    lock_file = lock_path_of(path)
    lock = FileLock(lock_file, timeout=timeout_s, fallback_to_soft=False)
    try:
        lock.acquire()
    except Timeout:
        raise DataError(
            f"dataset {name}: another writer has held {lock_file} for over {timeout_s:g} s; "
            "wait for it to finish and rerun"
        ) from None
    except OSError as exc:
        raise DataError(f"dataset {name}: cannot lock {lock_file}: {_one_line(exc)}") from None
    try:
        yield
    finally:
        lock.release()


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def holder_pid(lock_file: Path) -> int | None:
    """The pid the holder of ``lock_file`` wrote, None when unknown."""
    try:
        text = lock_file.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class ExclusiveLock:
    """A lock taken without waiting: :meth:`acquire` raises at once when another process
    holds it. The holder's pid is written into the lock file."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.lock_file = lock_path_of(path)
        self.what = what
        self._lock = FileLock(
            self.lock_file, timeout=0, fallback_to_soft=False, on_acquired=_write_pid
        )

    def acquire(self) -> None:
        """Take the lock or raise a one-line DataError naming the holder's pid if known."""
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            if not self.lock_file.is_file():  # not held: it could not be created at all
                raise DataError(
                    f"{self.what} {self.path}: cannot create the lock file {self.lock_file}"
                ) from None
            pid = holder_pid(self.lock_file)
            by = f"process {pid}" if pid is not None else "another process"
            raise DataError(
                f"{self.what} {self.path} is in use by {by} (lock {self.lock_file}); "
                "stop it first, or use another file"
            ) from None
        except OSError as exc:
            raise DataError(
                f"{self.what} {self.path}: cannot lock {self.lock_file}: {_one_line(exc)}"
            ) from None

    def release(self) -> None:
        """Release the lock (a no-op when not held)."""
        if self._lock.is_locked:
            self._lock.release()


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[ExclusiveLock]:
    """Hold :class:`ExclusiveLock` of ``path`` for the block."""
    lock = ExclusiveLock(path, what)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path: Path) -> None:
    """Delete temp files a killed writer of ``path`` left behind. Call it under the lock of
    ``path``: only the lock holder writes temp files, so any that exist are a dead writer's."""
    for tmp in path.parent.glob(f"{glob.escape(_temp_prefix(path))}*.tmp"):
        tmp.unlink(missing_ok=True)


def create_temp(path: Path) -> Path:
    """A new, empty temp file next to ``path``, created ``0o666`` so the umask alone sets its
    mode (``tempfile.mkstemp`` would force 0600 onto the file it replaces)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f"{_temp_prefix(path)}{secrets.token_hex(8)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise DataError(f"cannot create a temp file next to {path}: every name tried exists")
