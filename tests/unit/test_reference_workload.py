"""The plain-Python workload reference reproduces WORKLOAD.md's figures for the small set."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reference_workload as rw  # tests/ is on sys.path through tests/conftest.py
from atra.core.stats.returns import return_stats
from atra.core.types import Timeframe
from helpers_workload import generate_small_set


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_small_set(tmp_path_factory)


@pytest.fixture(scope="module")
def small(small_dir: Path) -> rw.ReferenceResult:
    return rw.run_reference_folder(small_dir)


def test_small_set_reference_figures(small: rw.ReferenceResult) -> None:
    assert len(small.symbols) == 10
    assert small.bars == 87_600
    assert len(small.events) == 1_698
    assert small.label_counts == {-1: 1_088, 0: 28, 1: 582}
    assert len(small.trades) == 1_630
    assert round(small.total_return, 6) == -0.048254
    assert round(small.win_rate, 4) == 0.3497
    assert round(small.sharpe, 4) == -0.4469


def test_sharpe_agrees_with_stats_module(small: rw.ReferenceResult) -> None:
    s = return_stats(small.portfolio_returns, Timeframe.H1)
    assert s.annualization_factor == pytest.approx(math.sqrt(8760))
    assert s.sharpe == pytest.approx(small.sharpe, rel=1e-9)
    assert s.total_return == pytest.approx(small.total_return, rel=1e-9)


def test_curves_are_consistent_with_trades(small: rw.ReferenceResult) -> None:
    n = len(small.open_time_ms)
    assert n == 8_760
    assert len(small.portfolio_returns) == n - 1
    books = np.vstack([small.symbol_equity[s] for s in small.symbols])
    np.testing.assert_allclose(books.mean(axis=0), small.portfolio_equity, rtol=0, atol=1e-15)
    for sym in small.symbols:
        trades = [t for t in small.trades if t.symbol == sym]
        final = math.prod(1.0 + t.net_return for t in trades)
        assert small.symbol_equity[sym][-1] == pytest.approx(final, rel=1e-12)
        # the book is flat at its trades' equity between trades, and the chain links up
        for prev, nxt in itertools.pairwise(trades):
            assert nxt.equity_before == prev.equity_after
            min_entry = prev.exit_bar if prev.exit_reason == "time" else prev.exit_bar + 1
            assert nxt.entry_bar >= min_entry
    wins = sum(t.net_return > 0 for t in small.trades)
    assert small.win_rate == wins / len(small.trades)


def test_flat_rule_edge_cases_occur(small: rw.ReferenceResult) -> None:
    """The spec's two subtle cases both happen on the small set and are taken."""
    by_symbol: dict[str, list[rw.RefTrade]] = {}
    for t in small.trades:
        by_symbol.setdefault(t.symbol, []).append(t)
    stop_then_signal = 0
    time_then_entry = 0
    for trades in by_symbol.values():
        for prev, nxt in itertools.pairwise(trades):
            if prev.exit_reason != "time" and nxt.signal_bar == prev.exit_bar:
                stop_then_signal += 1
            if prev.exit_reason == "time" and nxt.entry_bar == prev.exit_bar:
                time_then_entry += 1
    assert stop_then_signal > 0
    entry_bar_stops = sum(1 for t in small.trades if t.exit_bar == t.entry_bar)
    assert entry_bar_stops > 0
    assert time_then_entry > 0


# ------------------------------------------------------------------------------------------
# the barrier rule on hand-made bars


@pytest.mark.parametrize(
    ("side", "bars", "expected"),
    [
        # entry bar holds both SL and TP: SL first
        (rw.LONG, [(100, 131, 84, 100)], (0, 85.0, "sl")),
        # TP in the second bar
        (rw.LONG, [(100, 105, 95, 102), (102, 131, 101, 120)], (1, 130.0, "tp")),
        # a gap below the stop fills at the open
        (rw.LONG, [(100, 101, 99, 100), (80, 81, 79, 80)], (1, 80.0, "sl")),
        # a gap above the take-profit fills at the open
        (rw.LONG, [(100, 101, 99, 100), (140, 141, 139, 140)], (1, 140.0, "tp")),
        # short: stop above, take-profit below, gap fills at the open
        (rw.SHORT, [(100, 116, 99, 100)], (0, 115.0, "sl")),
        (rw.SHORT, [(100, 101, 69, 80)], (0, 70.0, "tp")),
        (rw.SHORT, [(100, 101, 99, 100), (120, 121, 119, 120)], (1, 120.0, "sl")),
        (rw.SHORT, [(100, 101, 99, 100), (60, 61, 59, 60)], (1, 60.0, "tp")),
    ],
)
def test_barrier_exit_hand_made(
    side: int, bars: list[tuple[float, float, float, float]], expected: tuple[int, float, str]
) -> None:
    # ATR 10 at entry 100: SL 85 / TP 130 for a long, SL 115 / TP 70 for a short
    filler = [(100.0, 101.0, 99.0, 100.0)] * (rw.HORIZON + 1 - len(bars))
    rows = [tuple(map(float, b)) for b in bars] + filler
    o, h, lo = ([r[i] for r in rows] for i in range(3))
    assert rw.barrier_exit(side, 0, 100.0, 10.0, o, h, lo) == expected


def test_barrier_time_exit_at_open_after_horizon() -> None:
    rows = [(100.0, 101.0, 99.0, 100.0)] * rw.HORIZON + [(97.0, 200.0, 1.0, 100.0)]
    o, h, lo = ([r[i] for r in rows] for i in range(3))
    assert rw.barrier_exit(rw.LONG, 0, 100.0, 10.0, o, h, lo) == (rw.HORIZON, 97.0, "time")


def test_net_returns_match_units_and_cash(small: rw.ReferenceResult) -> None:
    """Each trade's return equals buying/selling ``E / (P (1 + f))`` units, fees on both legs."""
    f = rw.FEE
    for t in small.trades[:200]:
        units = t.equity_before / (t.entry_price * (1 + f))
        if t.side == rw.LONG:
            cash = t.equity_before - units * t.entry_price * (1 + f)
            after = cash + units * t.exit_price * (1 - f)
        else:
            cash = t.equity_before + units * t.entry_price * (1 - f)
            after = cash - units * t.exit_price * (1 + f)
        assert t.equity_after == pytest.approx(after, rel=1e-12)


def test_unaligned_symbols_use_the_union_of_times(small_dir: Path) -> None:
    frames = rw.load_folder(small_dir)
    a = frames["SYN00USDT"]
    b = frames["SYN01USDT"].iloc[1_000:4_000].reset_index(drop=True)
    res = rw.run_reference({"A": a, "B": b})
    assert len(res.open_time_ms) == len(a)
    eq_b = res.symbol_equity["B"]
    assert np.all(eq_b[:1_000] == 1.0)
    assert np.all(eq_b[4_000:] == eq_b[3_999])
    alone = rw.run_reference({"B": b})
    assert eq_b[3_999] == alone.symbol_equity["B"][-1]
    assert res.trades == rw.run_reference({"A": a}).trades + alone.trades


def test_load_folder_int_ms_and_duplicates(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "open_time": [7_200_000, 0, 3_600_000, 3_600_000],
            "open": [3.0, 1.0, 2.0, 9.0],
            "high": [3.0, 1.0, 2.0, 9.0],
            "low": [3.0, 1.0, 2.0, 9.0],
            "close": [3.0, 1.0, 2.0, 9.0],
            "volume": [1.0, 1.0, 1.0, 1.0],
        }
    )
    df.to_parquet(tmp_path / "XUSDT.parquet", index=False)
    frames = rw.load_folder(tmp_path)
    got = frames["XUSDT"]
    assert got["open_time"].tolist() == [0, 3_600_000, 7_200_000]
    assert got["open"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(FileNotFoundError):
        rw.load_folder(tmp_path / "empty")
