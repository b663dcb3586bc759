"""A journal opened for reading only, by another process or thread than the loop writing it.

``async with open_readonly(path) as j:`` connects with SQLite's ``mode=ro`` URI (nothing can
be written, no migration runs, a missing file is not created) and reads everything inside ONE
read transaction: the journal is in WAL mode, so every query of ``j`` sees the same committed
state (a step of the loop either wholly or not at all) and the loop's writes are never
blocked. ``j`` is a :class:`JournalReader`: a
:class:`~atra.adapters.journal.database.Journal` (its read methods work, its write methods
fail with SQLite's read-only error) with the few extra queries a status page polls.

A reader never migrates: it reads the current schema and the one before it
(:data:`MIN_READABLE_VERSION`); what an older journal does not hold (the per-position marks
before schema 3) reads as None, never as a made-up value.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Final
from urllib.parse import quote

import aiosqlite

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import CycleRecord, EquityRecord
from atra.adapters.journal.schema import SCHEMA_VERSION
from atra.errors import DataError

__all__ = ["MIN_READABLE_VERSION", "JournalReader", "open_readonly"]

MIN_READABLE_VERSION: Final[int] = 2
"""The oldest schema a reader reads without a migration (2: no ``position_marks``)."""
MARKS_VERSION: Final[int] = 3
"""The schema that added ``position_marks``."""


class JournalReader(Journal):
    """A read-only journal (built by :func:`open_readonly`) with single-row queries;
    ``version``: the schema version of the file."""

    version: int = SCHEMA_VERSION

    async def last_cycle(self) -> CycleRecord | None:
        """The cycle of the newest bar, None before the first cycle."""
        rows = await self._all(
            "SELECT bar_time_ms, run_id, started_ms, ended_ms, symbols_ok, symbols_failed,"
            " latency_ms, status FROM cycles ORDER BY bar_time_ms DESC LIMIT 1"
        )
        if not rows:
            return None
        r = rows[0]
        return CycleRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])

    async def newest_model_id(self) -> str | None:
        """The model id of the newest journalled decision, None before the first one."""
        rows = await self._all(
            "SELECT model_id FROM signals ORDER BY bar_time_ms DESC, id DESC LIMIT 1"
        )
        return str(rows[0][0]) if rows else None

    async def last_equity(self) -> EquityRecord | None:
        """The newest equity mark with its positions' marks, None before the first one
        (``positions`` None: a journal from before the marks were written)."""
        rows = await self._all(
            "SELECT bar_time_ms, equity, realized_pnl, open_positions FROM equity"
            " ORDER BY bar_time_ms DESC LIMIT 1"
        )
        if not rows:
            return None
        mark = EquityRecord(*rows[0])
        if self.version < MARKS_VERSION:
            return mark
        return replace(mark, positions=tuple(await self.position_marks(mark.bar_time_ms)))


@asynccontextmanager
async def open_readonly(path: Path | str) -> AsyncIterator[JournalReader]:
    """The journal ``path`` read-only, in one snapshot (see the module docstring). A missing
    file, a file that is not a journal, or a schema newer than this atra is a one-line
    :class:`DataError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"journal {p}: no such file")
    uri = f"file:{quote(str(p.resolve()))}?mode=ro"
    try:
        db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise DataError(f"journal {p}: cannot open it read-only ({exc})") from None
    try:
        journal = JournalReader(db, p)
        try:
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("BEGIN")  # deferred: the snapshot starts at the first read
            version = await journal.schema_version()
        except sqlite3.Error as exc:
            raise DataError(f"journal {p}: not a readable journal ({exc})") from None
        if version == 0:
            raise DataError(f"journal {p}: empty, no schema yet (the loop has not started it)")
        if version > SCHEMA_VERSION:
            raise DataError(
                f"journal {p}: schema version {version} is newer than this atra understands "
                f"({SCHEMA_VERSION}); upgrade atra"
            )
        if version < MIN_READABLE_VERSION:  # a reader never migrates; the loop does
            raise DataError(
                f"journal {p}: schema version {version}, expected {MIN_READABLE_VERSION} to "
                f"{SCHEMA_VERSION}; open it once with a writer (atra live, atra journal trades) "
                "to migrate it"
            )
        journal.version = version
        yield journal
    finally:
        if db.in_transaction:
            await db.rollback()
        await db.close()
