"""The SQLite journal: WAL, migrations, idempotent writes, one transaction per write."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import (
    CycleRecord,
    EquityRecord,
    FillRecord,
    GuardEvent,
    JournalBatch,
    OrderRecord,
    PositionRecord,
    SignalRecord,
)
from atra.adapters.journal.schema import MIGRATIONS, SCHEMA_VERSION
from atra.errors import DataError


def _signal(symbol: str = "BTCUSDT", t: int = 3_600_000, **kw: object) -> SignalRecord:
    base: dict[str, object] = {
        "strategy": "ema_cross",
        "symbol": symbol,
        "bar_time_ms": t,
        "side": 1,
        "entry": 100.0,
        "sl": 98.0,
        "tp1": 104.0,
        "tp2": 106.0,
        "horizon_bars": 24,
        "p_take": 0.61,
        "threshold": 0.55,
        "take": True,
        "reasons": ("rsi_14=55 (+0.120)", "ret_24=0.01 (+0.050)"),
        "model_id": "m1",
        "quantity": 2.5,
        "blocked_by": None,
        "run_id": "r1",
        "created_ms": 123,
    }
    base.update(kw)
    return SignalRecord(**base)  # type: ignore[arg-type]


def _position(pid: str = "p1", status: str = "open", **kw: object) -> PositionRecord:
    base: dict[str, object] = {
        "position_id": pid,
        "strategy": "ema_cross",
        "symbol": "BTCUSDT",
        "side": 1,
        "signal_time_ms": 3_600_000,
        "quantity": 2.5,
        "sl_dist": 2.0,
        "tp1_dist": 4.0,
        "tp2_dist": 6.0,
        "horizon_bars": 24,
        "status": status,
        "entry_time_ms": 7_200_000,
        "entry_price": 100.5,
    }
    base.update(kw)
    return PositionRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "journal.sqlite"


async def test_open_creates_wal_database_at_latest_version(db_path: Path) -> None:
    async with Journal.open(db_path) as j:
        assert await j.schema_version() == SCHEMA_VERSION
        assert await j.journal_mode() == "wal"
        tables = set(await j.tables())
    assert {
        "signals",
        "orders",
        "fills",
        "positions",
        "equity",
        "cycles",
        "guard_events",
        "symbol_state",
        "schema_version",
        "meta",
    } <= tables
    assert db_path.exists()
    with sqlite3.connect(db_path) as raw:
        versions = [r[0] for r in raw.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == [m.version for m in MIGRATIONS]


async def test_signal_is_unique_by_strategy_symbol_bar(db_path: Path) -> None:
    async with Journal.open(db_path) as j:
        assert await j.record_signal(_signal()) is True
        assert await j.record_signal(_signal(p_take=0.99, take=False)) is False
        assert await j.record_signal(_signal(strategy="donchian")) is True
        assert await j.record_signal(_signal(symbol="ETHUSDT")) is True
        rows = await j.signals()
        btc = await j.signals("BTCUSDT")
    assert len(rows) == 3
    first = next(r for r in btc if r.strategy == "ema_cross")
    assert first.p_take == pytest.approx(0.61)  # the first write wins
    assert first.take is True
    assert first.reasons == ("rsi_14=55 (+0.120)", "ret_24=0.01 (+0.050)")


async def test_nan_probability_is_stored_as_null(db_path: Path) -> None:
    async with Journal.open(db_path) as j:
        await j.record_signal(_signal(p_take=math.nan, threshold=None, blocked_by="max_positions"))
        (row,) = await j.signals()
    assert row.p_take is None
    assert row.threshold is None
    assert row.blocked_by == "max_positions"


async def test_write_is_one_transaction(db_path: Path) -> None:
    fill = FillRecord("c1", "leg1", "BTCUSDT", 1, 100.0, 1.0, 0.0, 0.0, "TP1")
    batch = JournalBatch(
        signals=[_signal()],
        fills=[fill],
        positions=[_position(), _position("p2", quantity=None)],  # NOT NULL broken
        symbol_state={"BTCUSDT": 3_600_000},
    )
    async with Journal.open(db_path) as j:
        with pytest.raises(sqlite3.IntegrityError):
            await j.write(batch)
        assert await j.signals() == []
        assert await j.positions() == []
        assert await j.fills() == []
        assert await j.symbol_state() == {}
        # the connection is usable afterwards
        await j.write(JournalBatch(signals=[_signal()]))
        assert len(await j.signals()) == 1


async def test_full_batch_round_trip_and_reopen(db_path: Path) -> None:
    order = OrderRecord("c1", "ema_cross", "BTCUSDT", 3_600_000, 1, "entry", 2.5, "pending", "r1")
    fills = [
        FillRecord("c1", "entry", "BTCUSDT", 7_200_000, 100.5, 2.5, 0.1, -0.1, "ENTRY"),
        FillRecord("c1", "leg1", "BTCUSDT", 10_800_000, 104.5, 2.5, 0.1, 9.8, "TP1"),
    ]
    batch = JournalBatch(
        signals=[_signal()],
        orders=[order],
        fills=fills,
        positions=[_position()],
        guard_events=[GuardEvent(3_600_000, "max_positions", "ETHUSDT", "5 open")],
        symbol_state={"BTCUSDT": 3_600_000, "ETHUSDT": 3_600_000},
        equity=EquityRecord(3_600_000, 10_000.0, 0.0, 1),
        cycle=CycleRecord(3_600_000, "r1", 1, 2, 2, {"XRPUSDT": "timeout"}, 12.5, "partial"),
    )
    assert bool(batch)
    async with Journal.open(db_path) as j:
        await j.write(batch)
        await j.write(JournalBatch())  # empty: nothing happens
        # updates: order filled, position closed, state moves forward only
        await j.write(
            JournalBatch(
                orders=[
                    OrderRecord(
                        "c1", "ema_cross", "BTCUSDT", 3_600_000, 1, "entry", 2.5, "filled", "r1"
                    )
                ],
                positions=[
                    _position(status="closed", exit_time_ms=10_800_000, exit_price=104.5, pnl=9.8)
                ],
                fills=fills,  # again: ignored
                symbol_state={"BTCUSDT": 7_200_000, "ETHUSDT": 0},
                guard_events=batch.guard_events,  # again: ignored
            )
        )
        snap1 = await j.snapshot()
    async with Journal.open(db_path) as j:
        assert await j.schema_version() == SCHEMA_VERSION
        assert await j.snapshot() == snap1
        assert [o.status for o in await j.orders()] == ["filled"]
        assert await j.orders("pending") == []
        assert len(await j.fills()) == 2
        assert await j.realized_fills() == [
            (7_200_000, -0.1, "c1", "entry"),
            (10_800_000, 9.8, "c1", "leg1"),
        ]
        (pos,) = await j.positions()
        assert pos.status == "closed"
        assert pos.pnl == pytest.approx(9.8)
        assert await j.positions(("open", "pending")) == []
        assert await j.symbol_state() == {"BTCUSDT": 7_200_000, "ETHUSDT": 3_600_000}
        assert await j.equity() == [EquityRecord(3_600_000, 10_000.0, 0.0, 1)]
        (cycle,) = await j.cycles()
        assert cycle.symbols_failed == {"XRPUSDT": "timeout"}
        assert cycle.status == "partial"
        assert await j.guard_events() == batch.guard_events
        with sqlite3.connect(db_path) as raw:
            assert raw.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(
                MIGRATIONS
            )


async def test_meta_keeps_the_first_value(db_path: Path) -> None:
    async with Journal.open(db_path) as j:
        assert await j.meta("run_id", "a") == "a"
    async with Journal.open(db_path) as j:
        assert await j.meta("run_id", "b") == "a"


async def test_migration_from_v1_keeps_rows(db_path: Path) -> None:
    async with Journal.open(db_path, target_version=1) as j:
        assert await j.schema_version() == 1
        assert "guard_events" not in await j.tables()
    with sqlite3.connect(db_path) as raw:  # a row written by a v1 build
        raw.execute(
            "INSERT INTO signals (run_id, strategy, symbol, bar_time_ms, side, entry, sl, tp1, tp2,"
            " horizon_bars, p_take, threshold, take, reasons, model_id, quantity, created_ms)"
            " VALUES ('r', 's', 'BTCUSDT', 1, -1, 10, 11, 9, 8, 5, 0.5, 0.5, 0, '[]', 'm', 0, 0)"
        )
    async with Journal.open(db_path) as j:
        assert await j.schema_version() == SCHEMA_VERSION
        (row,) = await j.signals()
        assert row.blocked_by is None
        assert row.side == -1
        await j.write(JournalBatch(guard_events=[GuardEvent(1, "kill_switch", "BTCUSDT", "x")]))
        assert len(await j.guard_events()) == 1


async def test_failed_migration_rolls_back(db_path: Path) -> None:
    async with Journal.open(db_path, target_version=1):
        pass
    with sqlite3.connect(db_path) as raw:  # something in the way of migration 2
        raw.execute("CREATE TABLE symbol_state (x INTEGER)")
    with pytest.raises(DataError, match="migration to version 2 failed"):
        async with Journal.open(db_path):
            pass  # pragma: no cover
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 1
        cols = [r[1] for r in raw.execute("PRAGMA table_info(signals)")]
    assert "blocked_by" not in cols


async def test_newer_schema_is_refused(db_path: Path) -> None:
    async with Journal.open(db_path):
        pass
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    with pytest.raises(DataError, match="schema version 99 is newer"):
        async with Journal.open(db_path):
            pass  # pragma: no cover


async def test_not_a_database_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataError, match=r"junk\.sqlite: not a usable SQLite database"):
        async with Journal.open(path):
            pass  # pragma: no cover


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1])
async def test_unknown_target_version(db_path: Path, version: int) -> None:
    with pytest.raises(DataError, match="no schema version"):
        async with Journal.open(db_path, target_version=version):
            pass  # pragma: no cover
