"""The closed-trades CSV: number and time format, exit legs, backtest and journal rows, the
atomic write, and the random-skip control's percentile."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import FillRecord, JournalBatch, PositionRecord
from atra.adapters.trades_csv import (
    closed_trades_of_journal,
    read_journal_trades,
    write_trades_csv,
)
from atra.core.closed_trades import (
    CLOSED_TRADE_COLUMNS,
    ClosedTrade,
    ExitLeg,
    closed_trade,
    closed_trades_of_backtest,
    format_decimal,
    format_time,
    trades_csv_text,
)
from atra.errors import DataError
from atra.research.evaluation.frozen import check_out_of_sample, percentile_of

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "0.5"),
        (0.1, "0.1"),
        (42000.0, "42000"),
        (2 / 3, "0.6666666667"),
        (-3.3333333333333, "-3.333333333"),
        (1.234567890123e-4, "0.000123456789"),
        (123456789012.5, "123456789000"),
        (1e20, "100000000000000000000"),
        (0.0, "0"),
        (-0.0, "0"),
    ],
)
def test_decimals_have_ten_significant_digits_and_no_exponent(value: float, text: str) -> None:
    assert format_decimal(value, "x") == text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_amount_is_refused_by_name(bad: float) -> None:
    with pytest.raises(DataError, match="trade row 3 pnl is"):
        format_decimal(bad, "trade row 3 pnl")


def test_times_are_iso_utc_with_z() -> None:
    assert format_time(T0 + 5 * H) == "2024-01-01T05:00:00Z"
    assert format_time(T0 + 123) == "2024-01-01T00:00:00.123Z"


def test_exit_price_is_the_quantity_weighted_average_of_the_legs() -> None:
    legs = [ExitLeg(T0 + 3 * H, 110.0, 3.0, "TP1"), ExitLeg(T0 + 9 * H, 100.0, 1.0, "BE")]
    t = closed_trade(
        symbol="BTCUSDT", side=1, entry_time_ms=T0, entry_price=100.0, qty=4.0, legs=legs,
        fees=0.1, funding=0.0, pnl=29.9, where="t",
    )  # fmt: skip
    assert t.exit_price == pytest.approx((3 * 110 + 1 * 100) / 4)
    assert (t.exit_time_ms, t.exit_reason) == (T0 + 9 * H, "BE")  # the last leg's
    with pytest.raises(DataError, match="position p1: a closed trade without an exit leg"):
        closed_trade(
            symbol="X", side=1, entry_time_ms=T0, entry_price=1.0, qty=1.0, legs=[], fees=0.0,
            funding=0.0, pnl=0.0, where="position p1",
        )  # fmt: skip


def _trade(symbol: str, entry_ms: int, side: int = 1) -> ClosedTrade:
    return ClosedTrade(symbol, side, entry_ms, 10.0, 2.0, entry_ms + H, 11.0, "TP2", 0.02, 0.0, 1.9)


def test_csv_rows_are_sorted_by_entry_time_then_symbol() -> None:
    text = trades_csv_text(
        [_trade("ETHUSDT", T0 + H), _trade("BTCUSDT", T0 + H, -1), _trade("ADAUSDT", T0 + 2 * H)]
    )
    lines = text.splitlines()
    assert lines[0] == ",".join(CLOSED_TRADE_COLUMNS)
    assert [line.split(",")[0] for line in lines[1:]] == ["BTCUSDT", "ETHUSDT", "ADAUSDT"]
    assert lines[1] == (
        "BTCUSDT,SHORT,2024-01-01T01:00:00Z,10,2,2024-01-01T02:00:00Z,11,TP2,0.02,0,1.9"
    )
    assert text.endswith("\n")
    assert "\r" not in text


def _backtest_trades() -> pd.DataFrame:
    """Two trades as the backtest lists them: a TP1 partial + TP2, and one still open."""
    return pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "ETHUSDT"],
            "side": np.array([1, -1]),
            "entry_time_ms": [T0 + H, T0 + 2 * H],
            "entry_price": [100.0, 50.0],
            "quantity": [4.0, 10.0],
            "exit_time_ms": [T0 + 7 * H, T0 + 9 * H],
            "exit_price": [120.0, 49.0],
            "reason": ["TP2", "END"],
            "leg1_price": [110.0, 49.0],
            "leg1_fraction": [0.5, 1.0],
            "leg1_reason": ["TP1", "END"],
            "leg2_bar": pd.array([7, pd.NA], dtype="Int64"),
            "leg2_price": [120.0, np.nan],
            "leg2_fraction": [0.5, np.nan],
            "leg2_reason": ["TP2", "TP2"],
            "fees": [0.5, 0.3],
            "funding": [0.25, 0.0],
            "pnl": [59.5, 9.7],
        }
    )


def test_backtest_trades_become_closed_rows_and_open_ones_are_counted() -> None:
    trades, still_open = closed_trades_of_backtest(_backtest_trades())
    assert still_open == 1
    (t,) = trades
    assert t.exit_price == pytest.approx(115.0)  # 2 @ 110 + 2 @ 120
    assert (t.exit_time_ms, t.exit_reason, t.qty, t.funding) == (T0 + 7 * H, "TP2", 4.0, 0.25)
    with pytest.raises(DataError, match="missing column"):
        closed_trades_of_backtest(_backtest_trades().drop(columns=["leg2_price"]))


def _position(pid: str, status: str, **kw: object) -> PositionRecord:
    base: dict[str, object] = dict(
        position_id=pid, strategy="s", symbol="BTCUSDT", side=1, signal_time_ms=T0,
        quantity=4.0, sl_dist=5.0, tp1_dist=10.0, tp2_dist=20.0, horizon_bars=48, status=status,
    )  # fmt: skip
    base.update(kw)
    return PositionRecord(**base)  # type: ignore[arg-type]


def _journal_records() -> tuple[list[PositionRecord], list[FillRecord]]:
    closed = _position(
        "p1", "closed", entry_time_ms=T0 + H, entry_price=100.0, legs_done=2,
        exit_time_ms=T0 + 7 * H, exit_price=120.0, reason="TP2", pnl=59.5,
    )  # fmt: skip
    still = _position("p2", "open", entry_time_ms=T0 + 2 * H, entry_price=100.0)
    fills = [
        FillRecord("p1", "entry", "BTCUSDT", T0 + H, 100.0, 4.0, 0.2, -0.2, "ENTRY"),
        FillRecord("p1", "leg2", "BTCUSDT", T0 + 7 * H, 120.0, 2.0, 0.2, 39.8, "TP2"),
        FillRecord("p1", "leg1", "BTCUSDT", T0 + 3 * H, 110.0, 2.0, 0.1, 19.9, "TP1"),
        FillRecord("p1", f"funding:{T0 + 4 * H}", "BTCUSDT", T0 + 4 * H, 105.0, 4.0, 0.0, -0.25,
                   "FUNDING"),
        FillRecord("p2", "entry", "BTCUSDT", T0 + 2 * H, 100.0, 4.0, 0.2, -0.2, "ENTRY"),
    ]  # fmt: skip
    return [closed, still], fills


def test_journal_positions_become_the_same_rows_as_the_backtest() -> None:
    positions, fills = _journal_records()
    trades, not_closed = closed_trades_of_journal(positions, fills, "j.sqlite")
    assert not_closed == 1
    (t,) = trades
    assert t.exit_price == pytest.approx(115.0)
    assert t.fees == pytest.approx(0.5)  # entry + both legs
    assert t.funding == pytest.approx(0.25)  # paid: minus the funding fill's pnl
    assert (t.exit_time_ms, t.exit_reason, t.pnl) == (T0 + 7 * H, "TP2", 59.5)
    backtest, _ = closed_trades_of_backtest(_backtest_trades())
    assert trades_csv_text(trades) == trades_csv_text(backtest)


def test_a_journal_position_without_its_exit_fills_is_refused_by_id() -> None:
    positions, fills = _journal_records()
    legs = [f for f in fills if not f.leg.startswith("leg")]
    with pytest.raises(DataError, match=r"journal j\.sqlite position p1: a closed trade without"):
        closed_trades_of_journal(positions, legs, "j.sqlite")


def test_journal_file_to_csv_and_atomic_write(tmp_path: Path) -> None:
    positions, fills = _journal_records()
    path = tmp_path / "j.sqlite"

    async def write() -> None:
        async with Journal.open(path) as j:
            await j.write(JournalBatch(fills=fills, positions=positions))

    asyncio.run(write())
    trades, not_closed = asyncio.run(read_journal_trades(path))
    assert (len(trades), not_closed) == (1, 1)
    out = tmp_path / "trades.csv"
    out.write_text("old")
    assert write_trades_csv(out, trades) == 1
    assert out.read_text() == trades_csv_text(trades)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # no temp file left
    with pytest.raises(DataError, match=r"folder .* does not exist"):
        write_trades_csv(tmp_path / "nope" / "t.csv", trades)
    with pytest.raises(DataError, match=r"journal .* does not exist"):
        asyncio.run(read_journal_trades(tmp_path / "missing.sqlite"))
    assert not (tmp_path / "missing.sqlite").exists()


def test_percentile_counts_values_below_and_half_the_ties() -> None:
    sample = [1.0, 2.0, 3.0, 4.0, None]
    assert percentile_of(0.5, sample) == 0.0
    assert percentile_of(5.0, sample) == 100.0
    assert percentile_of(3.0, sample) == pytest.approx(62.5)  # 2 below + half of 1 tie, of 4
    assert percentile_of(None, sample) is None
    assert percentile_of(1.0, [None]) is None


def test_a_range_overlapping_the_training_window_is_refused_naming_both() -> None:
    day = 24 * H
    check_out_of_sample("m1", T0, T0 + 10 * day, T0 + 11 * day, None, allow_overlap=False)
    check_out_of_sample("m1", T0, T0 + 10 * day, T0 - 5 * day, T0, allow_overlap=False)
    with pytest.raises(Exception, match=r"range 2024-01-06T00:00:00Z \.\. 2024-02-01T00:00:00Z "
                       r"overlaps the training window of model m1 \(2024-01-01T00:00:00Z \.\. "
                       r"2024-01-11T00:00:00Z\)"):  # fmt: skip
        check_out_of_sample(
            "m1", T0, T0 + 10 * day, T0 + 5 * day, T0 + 31 * day, allow_overlap=False
        )
    check_out_of_sample("m1", T0, T0 + 10 * day, T0 + 5 * day, None, allow_overlap=True)
