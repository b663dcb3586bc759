"""The live loop's journal: SQLite through aiosqlite, WAL mode, schema versioned by migrations.

``async with Journal.open(path) as j:`` opens (or creates) the file, switches it to WAL,
applies every pending migration (each in its own transaction, recorded in ``schema_version``)
and closes the connection on the way out, also on error or cancellation.

Tables: ``signals`` (every primary signal, taken or blocked, with p(take), threshold, reasons,
model id and the guard that blocked it), ``orders``, ``fills``, ``positions``, ``equity``,
``cycles``, ``guard_events``, ``symbol_state`` (the last bar processed per symbol: where a
restart resumes) and ``meta`` (the run id). A signal is unique by ``(strategy, symbol,
bar_time_ms)``, an order by its client order id, a fill by ``(client_order_id, leg)``, a
guard event by ``(guard, symbol, time_ms)``: writing any of them twice is a no-op, so a bar
processed again after a crash changes nothing.

:meth:`Journal.write` stores one :class:`JournalBatch` in ONE transaction: all of it or none
of it reaches the file, whatever kills the process.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiosqlite

from atra.errors import DataError

SCHEMA_VERSION: Final[int] = 2
_NOW_MS: Final[str] = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``sql`` takes a database at ``version - 1`` to ``version``."""

    version: int
    description: str
    sql: str


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "signals, orders, fills, positions, equity, cycles, meta",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE signals (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            strategy TEXT NOT NULL,
            symbol TEXT NOT NULL,
            bar_time_ms INTEGER NOT NULL,
            side INTEGER NOT NULL,
            entry REAL NOT NULL,
            sl REAL NOT NULL,
            tp1 REAL NOT NULL,
            tp2 REAL NOT NULL,
            horizon_bars INTEGER NOT NULL,
            p_take REAL,
            threshold REAL,
            take INTEGER NOT NULL,
            reasons TEXT NOT NULL,
            model_id TEXT NOT NULL,
            quantity REAL NOT NULL,
            created_ms INTEGER NOT NULL,
            UNIQUE (strategy, symbol, bar_time_ms)
        );
        CREATE TABLE orders (
            client_order_id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            strategy TEXT NOT NULL,
            symbol TEXT NOT NULL,
            bar_time_ms INTEGER NOT NULL,
            side INTEGER NOT NULL,
            kind TEXT NOT NULL,
            quantity REAL NOT NULL,
            status TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE fills (
            client_order_id TEXT NOT NULL,
            leg TEXT NOT NULL,
            symbol TEXT NOT NULL,
            time_ms INTEGER NOT NULL,
            price REAL NOT NULL,
            quantity REAL NOT NULL,
            fee REAL NOT NULL,
            pnl REAL NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (client_order_id, leg)
        );
        CREATE TABLE positions (
            position_id TEXT PRIMARY KEY,
            strategy TEXT NOT NULL,
            symbol TEXT NOT NULL,
            side INTEGER NOT NULL,
            signal_time_ms INTEGER NOT NULL,
            quantity REAL NOT NULL,
            sl_dist REAL NOT NULL,
            tp1_dist REAL NOT NULL,
            tp2_dist REAL NOT NULL,
            horizon_bars INTEGER NOT NULL,
            status TEXT NOT NULL,
            entry_time_ms INTEGER,
            entry_price REAL,
            legs_done INTEGER NOT NULL,
            exit_time_ms INTEGER,
            exit_price REAL,
            reason TEXT,
            pnl REAL,
            ret_net REAL
        );
        CREATE INDEX positions_status ON positions (status);
        CREATE TABLE equity (
            bar_time_ms INTEGER PRIMARY KEY,
            equity REAL NOT NULL,
            realized_pnl REAL NOT NULL,
            open_positions INTEGER NOT NULL
        );
        CREATE TABLE cycles (
            bar_time_ms INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            started_ms INTEGER NOT NULL,
            ended_ms INTEGER NOT NULL,
            symbols_ok INTEGER NOT NULL,
            symbols_failed TEXT NOT NULL,
            latency_ms REAL NOT NULL,
            status TEXT NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "signals.blocked_by, guard_events, symbol_state",
        """
        ALTER TABLE signals ADD COLUMN blocked_by TEXT;
        CREATE TABLE guard_events (
            id INTEGER PRIMARY KEY,
            time_ms INTEGER NOT NULL,
            guard TEXT NOT NULL,
            symbol TEXT NOT NULL,
            detail TEXT NOT NULL,
            UNIQUE (guard, symbol, time_ms)
        );
        CREATE TABLE symbol_state (
            symbol TEXT PRIMARY KEY,
            last_bar_ms INTEGER NOT NULL
        );
        """,
    ),
)


# ---- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One primary signal and what was decided about it."""

    strategy: str
    symbol: str
    bar_time_ms: int
    side: int
    entry: float
    sl: float
    tp1: float
    tp2: float
    horizon_bars: int
    p_take: float | None
    threshold: float | None
    take: bool
    reasons: tuple[str, ...]
    model_id: str
    quantity: float
    blocked_by: str | None = None
    run_id: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order (paper or real); ``status`` pending / filled / cancelled / rejected."""

    client_order_id: str
    strategy: str
    symbol: str
    bar_time_ms: int
    side: int
    kind: str
    quantity: float
    status: str
    run_id: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One fill of an order; ``leg`` is ``entry``, ``leg1``, ``leg2`` or ``funding:<time ms>``.
    ``pnl`` is the fill's own cash: minus the fee for the entry, ``side x qty x (price -
    entry)`` minus the exit fee for a leg, minus the payment for funding."""

    client_order_id: str
    leg: str
    symbol: str
    time_ms: int
    price: float
    quantity: float
    fee: float
    pnl: float
    reason: str


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A position from its decision to its last exit; ``status`` pending / open / closed."""

    position_id: str
    strategy: str
    symbol: str
    side: int
    signal_time_ms: int
    quantity: float
    sl_dist: float
    tp1_dist: float
    tp2_dist: float
    horizon_bars: int
    status: str
    entry_time_ms: int | None = None
    entry_price: float | None = None
    legs_done: int = 0
    exit_time_ms: int | None = None
    exit_price: float | None = None
    reason: str | None = None
    pnl: float | None = None
    ret_net: float | None = None


@dataclass(frozen=True, slots=True)
class EquityRecord:
    """Equity marked at a bar close (realised P&L + open positions at their last close)."""

    bar_time_ms: int
    equity: float
    realized_pnl: float
    open_positions: int


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """One cycle of the loop: which symbols were fetched, which failed (and why), latency."""

    bar_time_ms: int
    run_id: str
    started_ms: int
    ended_ms: int
    symbols_ok: int
    symbols_failed: dict[str, str]
    latency_ms: float
    status: str


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """A risk guard that refused an action."""

    time_ms: int
    guard: str
    symbol: str
    detail: str


@dataclass(slots=True)
class JournalBatch:
    """Everything one step writes; :meth:`Journal.write` stores it in one transaction."""

    signals: list[SignalRecord] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    positions: list[PositionRecord] = field(default_factory=list)
    guard_events: list[GuardEvent] = field(default_factory=list)
    symbol_state: dict[str, int] = field(default_factory=dict)
    equity: EquityRecord | None = None
    cycle: CycleRecord | None = None

    def __bool__(self) -> bool:
        return bool(
            self.signals
            or self.orders
            or self.fills
            or self.positions
            or self.guard_events
            or self.symbol_state
            or self.equity is not None
            or self.cycle is not None
        )


# ---- SQL -----------------------------------------------------------------------------------

_INSERT_SIGNAL: Final[str] = (
    "INSERT OR IGNORE INTO signals (run_id, strategy, symbol, bar_time_ms, side, entry, sl, tp1,"
    " tp2, horizon_bars, p_take, threshold, take, reasons, model_id, quantity, created_ms,"
    " blocked_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ORDER: Final[str] = (
    "INSERT INTO orders (client_order_id, run_id, strategy, symbol, bar_time_ms, side, kind,"
    " quantity, status, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (client_order_id) DO UPDATE SET status = excluded.status"
)
_INSERT_FILL: Final[str] = (
    "INSERT OR IGNORE INTO fills (client_order_id, leg, symbol, time_ms, price, quantity, fee,"
    " pnl, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_POSITION: Final[str] = (
    "INSERT OR REPLACE INTO positions (position_id, strategy, symbol, side, signal_time_ms,"
    " quantity, sl_dist, tp1_dist, tp2_dist, horizon_bars, status, entry_time_ms, entry_price,"
    " legs_done, exit_time_ms, exit_price, reason, pnl, ret_net)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_GUARD: Final[str] = (
    "INSERT OR IGNORE INTO guard_events (time_ms, guard, symbol, detail) VALUES (?, ?, ?, ?)"
)
_UPSERT_STATE: Final[str] = (
    "INSERT INTO symbol_state (symbol, last_bar_ms) VALUES (?, ?) ON CONFLICT (symbol)"
    " DO UPDATE SET last_bar_ms = max(last_bar_ms, excluded.last_bar_ms)"
)
_UPSERT_EQUITY: Final[str] = (
    "INSERT OR REPLACE INTO equity (bar_time_ms, equity, realized_pnl, open_positions)"
    " VALUES (?, ?, ?, ?)"
)
_UPSERT_CYCLE: Final[str] = (
    "INSERT OR REPLACE INTO cycles (bar_time_ms, run_id, started_ms, ended_ms, symbols_ok,"
    " symbols_failed, latency_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_POSITION_COLUMNS: Final[str] = (
    "position_id, strategy, symbol, side, signal_time_ms, quantity, sl_dist, tp1_dist, tp2_dist,"
    " horizon_bars, status, entry_time_ms, entry_price, legs_done, exit_time_ms, exit_price,"
    " reason, pnl, ret_net"
)
_SNAPSHOT_QUERIES: Final[dict[str, str]] = {
    "signals": (
        "SELECT strategy, symbol, bar_time_ms, side, entry, sl, tp1, tp2, horizon_bars, p_take,"
        " threshold, take, reasons, model_id, quantity, blocked_by FROM signals"
        " ORDER BY strategy, symbol, bar_time_ms"
    ),
    "orders": (
        "SELECT client_order_id, strategy, symbol, bar_time_ms, side, kind, quantity, status"
        " FROM orders ORDER BY client_order_id"
    ),
    "fills": "SELECT * FROM fills ORDER BY client_order_id, leg",
    # constant column list, no outside input
    "positions": f"SELECT {_POSITION_COLUMNS} FROM positions ORDER BY position_id",  # noqa: S608
    "equity": "SELECT * FROM equity ORDER BY bar_time_ms",
    "guard_events": "SELECT time_ms, guard, symbol, detail FROM guard_events"
    " ORDER BY time_ms, guard, symbol",
    "symbol_state": "SELECT * FROM symbol_state ORDER BY symbol",
}


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


class Journal:
    """An open journal. Build it with :meth:`open` (an async context manager)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    @asynccontextmanager
    async def open(
        cls, path: Path | str, *, target_version: int = SCHEMA_VERSION
    ) -> AsyncIterator[Journal]:
        """Open ``path`` (created with its folder when missing), migrate it to
        ``target_version`` (tests stop at an older version) and close it on exit."""
        p = Path(path)
        if not 1 <= target_version <= SCHEMA_VERSION:
            raise DataError(f"journal {p}: no schema version {target_version}")
        p.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(p, isolation_level=None)
        try:
            journal = cls(db, p)
            await journal._setup(target_version)
            yield journal
        finally:
            await db.close()

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
                await db.executemany(_INSERT_SIGNAL, [_signal_row(s) for s in batch.signals])
            if batch.orders:
                await db.executemany(
                    _INSERT_ORDER,
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
                    _INSERT_FILL,
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
                await db.executemany(_UPSERT_POSITION, [_position_row(p) for p in batch.positions])
            if batch.guard_events:
                await db.executemany(
                    _INSERT_GUARD,
                    [(g.time_ms, g.guard, g.symbol, g.detail) for g in batch.guard_events],
                )
            if batch.symbol_state:
                await db.executemany(_UPSERT_STATE, sorted(batch.symbol_state.items()))
            if batch.equity is not None:
                e = batch.equity
                await db.execute(
                    _UPSERT_EQUITY, (e.bar_time_ms, e.equity, e.realized_pnl, e.open_positions)
                )
            if batch.cycle is not None:
                c = batch.cycle
                await db.execute(
                    _UPSERT_CYCLE,
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

    # ---- reads -----------------------------------------------------------------------------

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
        sql = f"SELECT {_POSITION_COLUMNS} FROM positions"  # noqa: S608  (constant columns)
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
        return {str(r[0]): int(r[1]) for r in rows}

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
        return {name: await self._all(sql) for name, sql in _SNAPSHOT_QUERIES.items()}
