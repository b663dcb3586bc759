"""The live loop's journal: SQLite through aiosqlite, WAL mode, schema versioned by migrations.

``async with Journal.open(path) as j:`` opens (or creates) the file, switches it to WAL,
applies every pending migration of :mod:`atra.adapters.journal.schema` (each in its own
transaction, recorded in ``schema_version``) and closes the connection on the way out, also on
error or cancellation.

:meth:`Journal.write` stores one :class:`~atra.adapters.journal.records.JournalBatch` in ONE
transaction: all of it or none of it reaches the file, whatever kills the process. The read
methods return the records of :mod:`atra.adapters.journal.records`.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite

from atra.adapters.filelocks import ExclusiveLock
from atra.adapters.journal.records import (
    CycleRecord,
    EquityRecord,
    FillRecord,
    GuardEvent,
    JournalBatch,
    OrderRecord,
    PositionMark,
    PositionRecord,
    SignalRecord,
)
from atra.adapters.journal.schema import (
    DELETE_MARKS,
    INSERT_FILL,
    INSERT_GUARD,
    INSERT_MARK,
    INSERT_ORDER,
    INSERT_SIGNAL,
    MARK_COLUMNS,
    MIGRATIONS,
    POSITION_COLUMNS,
    SCHEMA_VERSION,
    SNAPSHOT_QUERIES,
    UPSERT_CYCLE,
    UPSERT_EQUITY,
    UPSERT_POSITION,
    UPSERT_STATE,
    Migration,
)
from atra.core.symbols import check_symbol
from atra.errors import ConfigError, DataError

JOURNAL_TABLES: Final[tuple[str, ...]] = (
    "signals",
    "orders",
    "fills",
    "positions",
    "equity",
    "cycles",
    "guard_events",
    "symbol_state",
)
"""The tables :meth:`Journal.row_counts` counts."""
_NOW_MS: Final[str] = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


def _num(value: float | None) -> float | None:
    """NaN and None are stored as NULL (SQLite has no NaN)."""
    if value is None or math.isnan(value):
        return None
    return float(value)


def _signal_row(s: SignalRecord) -> tuple[Any, ...]:
    return (
        s.run_id, s.strategy, s.symbol, s.bar_time_ms, s.side, s.entry, s.sl, s.tp1, s.tp2,
        s.horizon_bars, _num(s.p_take), _num(s.threshold), int(s.take), json.dumps(s.reasons),
        s.model_id, s.quantity, s.created_ms, s.blocked_by,
    )  # fmt: skip


def _position_row(p: PositionRecord) -> tuple[Any, ...]:
    return (
        p.position_id, p.strategy, p.symbol, p.side, p.signal_time_ms, p.quantity, p.sl_dist,
        p.tp1_dist, p.tp2_dist, p.horizon_bars, p.status, p.entry_time_ms, _num(p.entry_price),
        p.legs_done, p.exit_time_ms, _num(p.exit_price), p.reason, _num(p.pnl), _num(p.ret_net),
    )  # fmt: skip


def _position(row: Sequence[Any]) -> PositionRecord:
    return PositionRecord(*row)


def _mark_row(m: PositionMark) -> tuple[Any, ...]:
    return (
        m.bar_time_ms, m.position_id, m.symbol, m.side, m.quantity, m.entry_price, m.mark_price,
        m.unrealized_pnl,
    )  # fmt: skip


class Journal:
    """An open journal. Build it with :meth:`open` (an async context manager)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    @asynccontextmanager
    async def open(
        cls, path: Path | str, *, target_version: int = SCHEMA_VERSION, exclusive: bool = False
    ) -> AsyncIterator[Journal]:
        """Open ``path`` (created with its folder when missing), migrate it to
        ``target_version`` (tests stop at an older version) and close it on exit.

        ``exclusive`` (a live run or a replay: one loop per journal) first takes the journal's
        inter-process lock (``.{name}.lock`` next to it) and holds it until the journal is
        closed; when another process holds it, a one-line DataError names the journal and the
        holder's pid, at once. Readers (reports, explain) open without it."""
        p = Path(path)
        if not 1 <= target_version <= SCHEMA_VERSION:
            raise DataError(f"journal {p}: no schema version {target_version}")
        if p.is_dir():  # refused before its folder, lock or WAL files are created
            raise ConfigError(f"journal {p}: is a folder, expected a journal file")
        p.parent.mkdir(parents=True, exist_ok=True)
        lock = ExclusiveLock(p, "journal") if exclusive else None
        if lock is not None:
            lock.acquire()
        try:
            db = await aiosqlite.connect(p, isolation_level=None)
            try:
                journal = cls(db, p)
                await journal._setup(target_version)
                yield journal
            finally:
                await db.close()
        finally:
            if lock is not None:
                lock.release()

    async def _setup(self, target_version: int) -> None:
        try:
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                " description TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            low = str(exc).lower()
            if "disk i/o error" in low or "disk is full" in low:  # the file could not be written
                raise DataError(
                    f"journal {self.path}: cannot write it ({exc}): disk full or a file-size "
                    "limit; free space and rerun"
                ) from None
            raise DataError(f"journal {self.path}: not a usable SQLite database ({exc})") from None
        current = await self.schema_version()
        if current > SCHEMA_VERSION:
            raise DataError(
                f"journal {self.path}: schema version {current} is newer than this atra "
                f"understands ({SCHEMA_VERSION}); upgrade atra"
            )
        for mig in MIGRATIONS:
            if current < mig.version <= target_version:
                await self._migrate(mig)

    async def _migrate(self, mig: Migration) -> None:
        script = (
            "BEGIN IMMEDIATE;\n"
            f"{mig.sql}\n"
            "INSERT INTO schema_version (version, description, applied_ms) VALUES "
            f"({mig.version}, '{mig.description}', {_NOW_MS});\n"
            "COMMIT;"
        )
        try:
            await self._db.executescript(script)
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                await self._db.rollback()
            raise DataError(
                f"journal {self.path}: migration to version {mig.version} failed: {exc}"
            ) from None

    async def schema_version(self) -> int:
        """The highest migration applied (0 for a new file)."""
        row = await self._one("SELECT coalesce(max(version), 0) FROM schema_version")
        return int(row[0])

    # ---- writes ----------------------------------------------------------------------------

    async def write(self, batch: JournalBatch) -> None:
        """Store ``batch`` in one transaction (rolled back whole on any error)."""
        if not batch:
            return
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            if batch.signals:
                await db.executemany(INSERT_SIGNAL, [_signal_row(s) for s in batch.signals])
            if batch.orders:
                await db.executemany(
                    INSERT_ORDER,
                    [
                        (
                            o.client_order_id,
                            o.run_id,
                            o.strategy,
                            o.symbol,
                            o.bar_time_ms,
                            o.side,
                            o.kind,
                            o.quantity,
                            o.status,
                            o.created_ms,
                        )
                        for o in batch.orders
                    ],
                )
            if batch.fills:
                await db.executemany(
                    INSERT_FILL,
                    [
                        (
                            f.client_order_id,
                            f.leg,
                            f.symbol,
                            f.time_ms,
                            f.price,
                            f.quantity,
                            f.fee,
                            f.pnl,
                            f.reason,
                        )
                        for f in batch.fills
                    ],
                )
            if batch.positions:
                await db.executemany(UPSERT_POSITION, [_position_row(p) for p in batch.positions])
            if batch.guard_events:
                await db.executemany(
                    INSERT_GUARD,
                    [(g.time_ms, g.guard, g.symbol, g.detail) for g in batch.guard_events],
                )
            if batch.symbol_state:
                await db.executemany(UPSERT_STATE, sorted(batch.symbol_state.items()))
            if batch.equity is not None:
                e = batch.equity
                await db.execute(
                    UPSERT_EQUITY, (e.bar_time_ms, e.equity, e.realized_pnl, e.open_positions)
                )
                if e.positions is not None:  # a bar marked again replaces its marks whole
                    await db.execute(DELETE_MARKS, (e.bar_time_ms,))
                    await db.executemany(INSERT_MARK, [_mark_row(m) for m in e.positions])
            if batch.cycle is not None:
                c = batch.cycle
                await db.execute(
                    UPSERT_CYCLE,
                    (c.bar_time_ms, c.run_id, c.started_ms, c.ended_ms, c.symbols_ok,
                     json.dumps(c.symbols_failed, sort_keys=True), c.latency_ms, c.status),
                )  # fmt: skip
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    async def record_signal(self, signal: SignalRecord) -> bool:
        """Insert one signal; False when ``(strategy, symbol, bar_time_ms)`` was already there."""
        before = self._db.total_changes
        await self.write(JournalBatch(signals=[signal]))
        return self._db.total_changes > before

    async def meta(self, key: str, default: str) -> str:
        """The value stored under ``key``; stores and returns ``default`` the first time."""
        await self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, default)
        )
        row = await self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing what was there)."""
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # ---- reads -----------------------------------------------------------------------------

    async def meta_value(self, key: str) -> str | None:
        """The value stored under ``key``, None when there is none (nothing is written)."""
        rows = await self._all("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def row_counts(self, tables: Sequence[str] = JOURNAL_TABLES) -> dict[str, int]:
        """Rows per table of ``tables`` (names of :data:`JOURNAL_TABLES`)."""
        unknown = [t for t in tables if t not in JOURNAL_TABLES]
        if unknown:
            raise DataError(f"journal {self.path}: no table {', '.join(unknown)}")
        out: dict[str, int] = {}
        for table in tables:  # names checked against a constant list above
            out[table] = int((await self._one(f"SELECT count(*) FROM {table}"))[0])  # noqa: S608
        return out

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        if row is None:  # pragma: no cover  (aggregates always return a row)
            raise DataError(f"journal {self.path}: no row for {sql!r}")
        return tuple(row)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._db.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [tuple(r) for r in rows]

    async def tables(self) -> list[str]:
        rows = await self._all("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        return [str(r[0]) for r in rows]

    async def journal_mode(self) -> str:
        return str((await self._one("PRAGMA journal_mode"))[0])

    async def signals(self, symbol: str | None = None) -> list[SignalRecord]:
        sql = (
            "SELECT strategy, symbol, bar_time_ms, side, entry, sl, tp1, tp2, horizon_bars, p_take,"
            " threshold, take, reasons, model_id, quantity, blocked_by, run_id, created_ms"
            " FROM signals"
        )
        params: tuple[Any, ...] = ()
        if symbol is not None:
            sql += " WHERE symbol = ?"
            params = (symbol,)
        rows = await self._all(sql + " ORDER BY bar_time_ms, symbol, strategy", params)
        return [
            SignalRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                bool(r[11]),
                tuple(json.loads(r[12])),
                r[13],
                r[14],
                r[15],
                r[16],
                r[17],
            )
            for r in rows
        ]

    async def orders(self, status: str | None = None) -> list[OrderRecord]:
        sql = (
            "SELECT client_order_id, strategy, symbol, bar_time_ms, side, kind, quantity, status,"
            " run_id, created_ms FROM orders"
        )
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        rows = await self._all(sql + " ORDER BY bar_time_ms, client_order_id", params)
        return [OrderRecord(*r) for r in rows]

    async def fills(self) -> list[FillRecord]:
        rows = await self._all(
            "SELECT client_order_id, leg, symbol, time_ms, price, quantity, fee, pnl, reason"
            " FROM fills ORDER BY time_ms, client_order_id, leg"
        )
        return [FillRecord(*r) for r in rows]

    async def positions(self, statuses: Iterable[str] | None = None) -> list[PositionRecord]:
        sql = f"SELECT {POSITION_COLUMNS} FROM positions"  # noqa: S608  (constant columns)
        params: tuple[Any, ...] = ()
        if statuses is not None:
            wanted = tuple(statuses)
            sql += f" WHERE status IN ({', '.join('?' * len(wanted))})"
            params = wanted
        rows = await self._all(sql + " ORDER BY signal_time_ms, symbol", params)
        return [_position(r) for r in rows]

    async def equity(self) -> list[EquityRecord]:
        rows = await self._all("SELECT * FROM equity ORDER BY bar_time_ms")
        return [EquityRecord(*r) for r in rows]

    async def position_marks(self, bar_time_ms: int | None = None) -> list[PositionMark]:
        """The open positions' marks (at ``bar_time_ms``), by bar then position id."""
        sql = f"SELECT {MARK_COLUMNS} FROM position_marks"  # noqa: S608  (constant columns)
        params: tuple[Any, ...] = ()
        if bar_time_ms is not None:
            sql, params = sql + " WHERE bar_time_ms = ?", (bar_time_ms,)
        rows = await self._all(sql + " ORDER BY bar_time_ms, position_id", params)
        return [PositionMark(*r) for r in rows]

    async def cycles(self) -> list[CycleRecord]:
        rows = await self._all(
            "SELECT bar_time_ms, run_id, started_ms, ended_ms, symbols_ok, symbols_failed,"
            " latency_ms, status FROM cycles ORDER BY bar_time_ms"
        )
        return [
            CycleRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows
        ]

    async def guard_events(self) -> list[GuardEvent]:
        rows = await self._all(
            "SELECT time_ms, guard, symbol, detail FROM guard_events"
            " ORDER BY time_ms, guard, symbol"
        )
        return [GuardEvent(*r) for r in rows]

    async def symbol_state(self) -> dict[str, int]:
        """The last bar (open time, ms) processed per symbol."""
        rows = await self._all("SELECT symbol, last_bar_ms FROM symbol_state")
        return {self._symbol(r[0], "symbol_state"): int(r[1]) for r in rows}

    def _symbol(self, value: object, table: str) -> str:
        """A symbol read back from ``table``, through the one symbol validator."""
        try:
            return check_symbol(value, f"journal {self.path} table {table}")
        except ConfigError as exc:  # the file is bad, not the command line
            raise DataError(str(exc)) from None

    async def realized_fills(self) -> list[tuple[int, float, str, str]]:
        """``(time_ms, pnl, client_order_id, leg)`` of every fill, in time order: the realised
        P&L history (entry fees, exit legs, funding)."""
        return [
            (int(r[0]), float(r[1]), str(r[2]), str(r[3]))
            for r in await self._all(
                "SELECT time_ms, pnl, client_order_id, leg FROM fills"
                " ORDER BY time_ms, client_order_id, leg"
            )
        ]

    async def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's deterministic content (no wall-clock columns, no run ids), sorted:
        two runs over the same bars give equal snapshots."""
        return {name: await self._all(sql) for name, sql in SNAPSHOT_QUERIES.items()}
