"""The journal's SQL: the schema, built by numbered migrations, and the statements
:class:`~atra.adapters.journal.database.Journal` runs.

Tables: ``signals`` (every primary signal, taken or blocked, with p(take), threshold, reasons,
model id and the guard that blocked it), ``orders``, ``fills``, ``positions``, ``equity``,
``cycles``, ``guard_events``, ``symbol_state`` (the last bar processed per symbol: where a
restart resumes), ``position_marks`` (each open position at each equity mark: the mark price
and unrealised P&L, written with its equity row) and ``meta`` (the run id). A signal is
unique by ``(strategy, symbol, bar_time_ms)``, an order by its client order id, a fill by
``(client_order_id, leg)``, a guard event by ``(guard, symbol, time_ms)``: writing any of them
twice is a no-op, so a bar processed again after a crash changes nothing (its equity row and
position marks are replaced whole).

Each :class:`Migration` takes the schema one version up; :data:`SCHEMA_VERSION` is the newest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SCHEMA_VERSION: Final[int] = 3


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
    Migration(
        3,
        "position_marks",
        """
        CREATE TABLE position_marks (
            bar_time_ms INTEGER NOT NULL,
            position_id TEXT NOT NULL,
            symbol TEXT NOT NULL,
            side INTEGER NOT NULL,
            quantity REAL NOT NULL,
            entry_price REAL NOT NULL,
            mark_price REAL NOT NULL,
            unrealized_pnl REAL NOT NULL,
            PRIMARY KEY (bar_time_ms, position_id)
        );
        """,
    ),
)


# ---- SQL -----------------------------------------------------------------------------------

INSERT_SIGNAL: Final[str] = (
    "INSERT OR IGNORE INTO signals (run_id, strategy, symbol, bar_time_ms, side, entry, sl, tp1,"
    " tp2, horizon_bars, p_take, threshold, take, reasons, model_id, quantity, created_ms,"
    " blocked_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ORDER: Final[str] = (
    "INSERT INTO orders (client_order_id, run_id, strategy, symbol, bar_time_ms, side, kind,"
    " quantity, status, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (client_order_id) DO UPDATE SET status = excluded.status"
)
INSERT_FILL: Final[str] = (
    "INSERT OR IGNORE INTO fills (client_order_id, leg, symbol, time_ms, price, quantity, fee,"
    " pnl, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_POSITION: Final[str] = (
    "INSERT OR REPLACE INTO positions (position_id, strategy, symbol, side, signal_time_ms,"
    " quantity, sl_dist, tp1_dist, tp2_dist, horizon_bars, status, entry_time_ms, entry_price,"
    " legs_done, exit_time_ms, exit_price, reason, pnl, ret_net)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_GUARD: Final[str] = (
    "INSERT OR IGNORE INTO guard_events (time_ms, guard, symbol, detail) VALUES (?, ?, ?, ?)"
)
UPSERT_STATE: Final[str] = (
    "INSERT INTO symbol_state (symbol, last_bar_ms) VALUES (?, ?) ON CONFLICT (symbol)"
    " DO UPDATE SET last_bar_ms = max(last_bar_ms, excluded.last_bar_ms)"
)
UPSERT_EQUITY: Final[str] = (
    "INSERT OR REPLACE INTO equity (bar_time_ms, equity, realized_pnl, open_positions)"
    " VALUES (?, ?, ?, ?)"
)
DELETE_MARKS: Final[str] = "DELETE FROM position_marks WHERE bar_time_ms = ?"
INSERT_MARK: Final[str] = (
    "INSERT INTO position_marks (bar_time_ms, position_id, symbol, side, quantity, entry_price,"
    " mark_price, unrealized_pnl) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
MARK_COLUMNS: Final[str] = (
    "bar_time_ms, position_id, symbol, side, quantity, entry_price, mark_price, unrealized_pnl"
)
UPSERT_CYCLE: Final[str] = (
    "INSERT OR REPLACE INTO cycles (bar_time_ms, run_id, started_ms, ended_ms, symbols_ok,"
    " symbols_failed, latency_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
POSITION_COLUMNS: Final[str] = (
    "position_id, strategy, symbol, side, signal_time_ms, quantity, sl_dist, tp1_dist, tp2_dist,"
    " horizon_bars, status, entry_time_ms, entry_price, legs_done, exit_time_ms, exit_price,"
    " reason, pnl, ret_net"
)
SNAPSHOT_QUERIES: Final[dict[str, str]] = {
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
    "positions": f"SELECT {POSITION_COLUMNS} FROM positions ORDER BY position_id",  # noqa: S608
    "equity": "SELECT * FROM equity ORDER BY bar_time_ms",
    "guard_events": "SELECT time_ms, guard, symbol, detail FROM guard_events"
    " ORDER BY time_ms, guard, symbol",
    "symbol_state": "SELECT * FROM symbol_state ORDER BY symbol",
    "position_marks": "SELECT * FROM position_marks ORDER BY bar_time_ms, position_id",
}
