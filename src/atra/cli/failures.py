"""Failures of the machine rather than of ATRA, mapped to one :class:`~atra.errors.AtraError`.

A full disk, a missing permission, a path that is a file where a folder is expected, a
corrupt compressed file or an SQLite error can surface from any command. :func:`main` in
:mod:`atra.cli` turns them into one line and the exit code of the error type they map to:

* the environment refuses the write (disk full, quota, file-size limit, read-only or failing
  disk, SQLite "database or disk is full"): :class:`~atra.errors.DataError` (exit 4), the
  file named when known;
* a path argument is wrong (not a directory, is a directory, no permission, missing, SQLite
  "unable to open database file"): :class:`~atra.errors.ConfigError` (exit 3);
* compressed data or an SQLite file is corrupt: :class:`~atra.errors.DataError` (exit 4).

Anything else is left alone (a bug keeps its traceback).
"""

from __future__ import annotations

import errno
import sqlite3
import zipfile
import zlib

from atra.errors import AtraError, ConfigError, DataError

_STORAGE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file-size limit reached)",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
}
_PATH = {
    errno.ENOTDIR: "not a directory (a file is in the way)",
    errno.EISDIR: "is a directory, expected a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
}


def environment_error(exc: BaseException) -> AtraError | None:
    """The one-line :class:`AtraError` for ``exc`` (or its cause), ``None`` if not ours."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        mapped = _map_one(current)
        if mapped is not None:
            return mapped
        current = current.__cause__ or current.__context__
    return None


def _map_one(exc: BaseException) -> AtraError | None:
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        return _os_error(exc)
    if isinstance(exc, zlib.error | zipfile.BadZipFile | EOFError):
        return DataError(f"corrupt compressed data ({type(exc).__name__}: {_one_line(exc)})")
    if isinstance(exc, sqlite3.Error):
        text = _one_line(exc)
        low = text.lower()
        if "disk is full" in low or "disk i/o" in low:
            return DataError(
                f"SQLite: {text}; free space and rerun (the failed write was not committed)"
            )
        if "unable to open database" in low or "readonly" in low or "read-only" in low:
            return ConfigError(f"SQLite: {text} (is the path a folder, or not writable?)")
        if "not a database" in low or "malformed" in low:
            return DataError(f"SQLite: {text}")
        return DataError(f"SQLite {type(exc).__name__}: {text}")
    return None


def _os_error(exc: OSError) -> AtraError | None:
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    prefix = f"{where}: " if where else ""
    code = exc.errno
    text = _one_line(exc)
    if code is None and "No space left on device" in text:
        code = errno.ENOSPC
    if code in _STORAGE:
        return DataError(f"{prefix}{_STORAGE[code]}; free space and rerun")
    if code in _PATH:
        return ConfigError(f"{prefix}{_PATH[code]}")
    if code is None:
        return None
    return DataError(f"{prefix}{exc.strerror or text}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
