"""The backtester: hand-computed trades, the workload against the plain-Python reference, the
kernels (jitted and interpreted through ``.py_func``), limits, costs, funding, liquidation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import reference_workload as rw  # tests/ is on sys.path through tests/conftest.py
from atra.core.backtest import engine as bt
from atra.core.backtest import grid_nb, position_nb, workload, workload_nb
from atra.core.backtest import inputs as backtest_inputs
from atra.core.backtest import portfolio_nb as pnb
from atra.core.backtest.engine import (
    TRADE_COLUMNS,
    BacktestConfig,
    BacktestResult,
    WorkloadParams,
    bundle_candles,
    run_backtest,
    run_workload,
)
from atra.core.costs import CostModel
from atra.core.exits.api import ExitSpec
from atra.core.labels import label_events
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig, kelly_from_probability, size_position
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

T0 = 1_577_836_800_000  # 2020-01-01 00:00 UTC
HOUR = 3_600_000
FEE = 0.0004
KERNEL_HOMES = (
    (workload_nb, ("workload_indicators_nb", "pandas_alpha_nb", "workload_symbol_nb")),
    (grid_nb, ("first_bad_series_nb", "grid_index_nb", "portfolio_mean_nb")),
    (
        position_nb,
        (
            "risk_per_unit_nb",
            "size_nb",
            "liquidation_price_nb",
            "first_liquidation_nb",
            "borrow_charge_nb",
        ),
    ),
    (pnb, ("portfolio_nb",)),
)
"""Each kernel with the module that defines it."""
KERNELS = tuple(name for _, names in KERNEL_HOMES for name in names)
JIT = {name: getattr(module, name) for module, names in KERNEL_HOMES for name in names}
"""The dispatchers, before any patching."""
KERNEL_USERS = (pnb, position_nb, grid_nb, workload_nb, backtest_inputs, workload, bt)
"""Modules that call the kernels through their own globals."""


@pytest.fixture(params=["jit", "py"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the compiled kernels and with their interpreted source (``py_func``),
    which is what line coverage sees; both must give the same results."""
    if request.param == "py":
        for name in KERNELS:
            for module in KERNEL_USERS:
                if getattr(module, name, None) is JIT[name]:
                    monkeypatch.setattr(module, name, JIT[name].py_func)
    return str(request.param)


def random_candles(
    seed: int, n: int, *, start_ms: int = T0, drop: int = 0, vol: float = 0.01
) -> pd.DataFrame:
    """A random walk with fat-ish tails, occasional opening gaps and ``drop`` missing rows."""
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, n) * vol / math.sqrt(2.0)
    close = 100.0 * np.exp(np.cumsum(r))
    gap = np.where(rng.random(n) < 0.05, rng.normal(0.0, 3 * vol, n), 0.0)
    open_ = np.concatenate(([100.0], close[:-1])) * np.exp(gap)
    wick = np.abs(rng.normal(0.0, vol / 2, (2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    df = pd.DataFrame(
        {
            "open_time": start_ms + HOUR * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": np.ones(n),
        }
    )
    if drop:
        rows = rng.choice(np.arange(1, n), size=drop, replace=False)
        df = df.drop(index=rows).reset_index(drop=True)
    return df


def candles_from(rows: list[tuple[float, float, float, float]], start_ms: int = T0) -> pd.DataFrame:
    o, h, lo, c = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return pd.DataFrame(
        {
            "open_time": start_ms + HOUR * np.arange(len(rows), dtype=np.int64),
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": np.ones(len(rows)),
        }
    )


def one_event(
    symbol: str, t: int, side: int, sl: float, tp1: float, tp2: float | None = None, h: int = 10
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": [symbol],
            "t": [t],
            "side": [side],
            "sl_dist": [sl],
            "tp1_dist": [tp1],
            "tp2_dist": [tp1 if tp2 is None else tp2],
            "horizon_bars": [h],
        }
    )


def events_for(frames: dict[str, pd.DataFrame], spec: SignalSpec | None = None) -> pd.DataFrame:
    sp = spec if spec is not None else SignalSpec(ema_fast=5, ema_slow=13, horizon_bars=12)
    return pd.concat(
        [generate_events(f, sp, symbol=s) for s, f in frames.items()], ignore_index=True
    )


# ---------------------------------------------------------------------------- indicators


@pytest.mark.parametrize(("fast", "slow", "atr_n"), [(20, 50, 14), (3, 7, 5), (2, 200, 1)])
def test_indicators_are_bit_identical_to_pandas(
    kernels: str, fast: int, slow: int, atr_n: int
) -> None:
    df = random_candles(3, 400)
    d = np.full(402, np.nan)
    atr = np.full(402, np.nan)
    hi = np.concatenate(([1.0], df["high"].to_numpy(), [1.0]))
    lo = np.concatenate(([1.0], df["low"].to_numpy(), [1.0]))
    c = np.concatenate(([1.0], df["close"].to_numpy(), [1.0]))
    workload_nb.workload_indicators_nb(hi, lo, c, 1, 401, fast, slow, atr_n, d, atr)
    workload_nb.workload_indicators_nb(hi, lo, c, 5, 5, fast, slow, atr_n, d, atr)  # empty: no-op
    ema_f, ema_s, ref_atr = (
        rw.indicators(df)
        if (fast, slow, atr_n) == (20, 50, 14)
        else (
            df["close"].ewm(span=fast, adjust=False).mean().tolist(),
            df["close"].ewm(span=slow, adjust=False).mean().tolist(),
            rw.indicators(df)[2] if atr_n == 14 else _pandas_atr(df, atr_n),
        )
    )
    np.testing.assert_array_equal(d[1:401], np.subtract(ema_f, ema_s))
    np.testing.assert_array_equal(atr[1:401], ref_atr)
    assert np.isnan(d[0])
    assert np.isnan(d[401])


def _pandas_atr(df: pd.DataFrame, n: int) -> list[float]:
    h, lo, c = df["high"], df["low"], df["close"]
    pc = c.shift(1)
    tr = pd.concat([h - lo, (h - pc).abs(), (lo - pc).abs()], axis=1).max(axis=1)
    tr.iloc[0] = h.iloc[0] - lo.iloc[0]
    return tr.ewm(alpha=1.0 / n, adjust=False).mean().tolist()


# ---------------------------------------------------------------------------- workload


def _ref_trade_rows(ref: rw.ReferenceResult) -> list[tuple[object, ...]]:
    names = {"sl": "SL", "tp": "TP1", "time": "TIME"}
    return [
        (
            t.symbol,
            t.side,
            t.signal_bar,
            t.entry_bar,
            t.exit_bar,
            t.entry_time_ms,
            t.exit_time_ms,
            t.entry_price,
            t.exit_price,
            names[t.exit_reason],
            t.equity_before,
            t.equity_after,
            t.net_return,
        )
        for t in ref.trades
    ]


def _our_trade_rows(res: bt.WorkloadResult) -> list[tuple[object, ...]]:
    tr = res.trades
    cols = [
        "symbol",
        "side",
        "signal_bar",
        "entry_bar",
        "exit_bar",
        "entry_time_ms",
        "exit_time_ms",
        "entry_price",
        "exit_price",
        "reason",
        "equity_before",
        "equity_after",
        "net_return",
    ]
    return [
        tuple(v.item() if isinstance(v, np.generic) else v for v in row)
        for row in tr[cols].astype({"symbol": str, "reason": str}).itertuples(index=False)
    ]


def test_workload_matches_reference_on_gappy_mixed_calendars(kernels: str) -> None:
    frames = {
        "AAA": random_candles(1, 900, drop=25),
        "BBB": random_candles(2, 700, start_ms=T0 + 150 * HOUR, drop=10),
        "CCC": random_candles(3, 800, vol=0.02),
    }
    res = run_workload(frames)
    ref = rw.run_reference(frames)
    assert res.bars == ref.bars
    assert len(res.trades) == len(ref.trades) > 20
    assert _our_trade_rows(res) == _ref_trade_rows(ref)
    ev = list(
        zip(
            res.events["symbol"].astype(str),
            res.events["t"],
            res.events["side"],
            res.events["label"],
            strict=True,
        )
    )
    assert ev == [(e.symbol, e.signal_bar, e.side, e.label) for e in ref.events]
    assert res.label_counts == ref.label_counts
    np.testing.assert_array_equal(res.open_time_ms, ref.open_time_ms)
    np.testing.assert_allclose(res.portfolio_equity, ref.portfolio_equity, rtol=1e-12, atol=0)
    np.testing.assert_allclose(res.portfolio_returns, ref.portfolio_returns, rtol=0, atol=1e-12)
    assert res.total_return == pytest.approx(ref.total_return, abs=1e-12)
    assert res.win_rate == ref.win_rate
    assert res.sharpe == pytest.approx(ref.sharpe, rel=1e-9)
    assert res.annualization_factor == pytest.approx(math.sqrt(8760))


def test_workload_without_trades_is_flat(kernels: str) -> None:
    rising = candles_from([(100.0 + i, 101.0 + i, 99.5 + i, 100.5 + i) for i in range(120)])
    res = run_workload({"UP": rising})
    assert len(res.events) == 0
    assert len(res.trades) == 0
    assert math.isnan(res.win_rate)
    assert math.isnan(res.sharpe)  # zero variance
    np.testing.assert_array_equal(res.portfolio_equity, np.ones(120))
    one_bar = run_workload({"ONE": rising.iloc[:1]})
    assert math.isnan(one_bar.sharpe)


def test_workload_one_position_per_symbol(kernels: str) -> None:
    frames = {"AAA": random_candles(7, 500), "BBB": random_candles(8, 500)}
    res = run_workload(frames, WorkloadParams(3, 8, 5, 12, 10, 1.5, 3.0, FEE))
    assert len(res.events) > len(res.trades) > 20
    for _, tr in res.trades.groupby("symbol", observed=True):
        prev_exit = tr["exit_bar"].to_numpy()[:-1]
        prev_time = (tr["reason"].astype(str) == "TIME").to_numpy()[:-1]
        flat_from = np.where(prev_time, prev_exit, prev_exit + 1)
        assert (tr["entry_bar"].to_numpy()[1:] >= flat_from).all()
        before = tr["equity_before"].to_numpy()
        np.testing.assert_array_equal(before[1:], tr["equity_after"].to_numpy()[:-1])
        assert before[0] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ema_fast": 50}, "ema_fast < ema_slow"),
        ({"atr_n": 0}, ">= 1"),
        ({"warmup_bars": 10}, "horizon_bars"),
        ({"sl_atr": 0.0}, "must be > 0"),
        ({"fee": 0.5}, "fee"),
    ],
)
def test_workload_params_are_validated(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WorkloadParams(**kwargs)  # type: ignore[arg-type]


def test_bundle_checks_input(kernels: str) -> None:
    with pytest.raises(DataError, match="no symbol"):
        bundle_candles({})
    with pytest.raises(DataError, match="EMPTY: no rows"):
        bundle_candles({"EMPTY": random_candles(1, 5).iloc[:0]})
    bad = random_candles(1, 5)
    bad.loc[2, "low"] = -1.0
    with pytest.raises(DataError, match=r"BAD: low\[2\]"):
        bundle_candles({"BAD": bad})
    inf = random_candles(1, 5)
    inf.loc[4, "close"] = math.inf
    with pytest.raises(DataError, match=r"INF: close\[4\]"):
        bundle_candles({"OK": random_candles(2, 5), "INF": inf})
    dup = random_candles(1, 5)
    dup.loc[3, "open_time"] = dup.loc[2, "open_time"]
    with pytest.raises(DataError, match="DUP: open_time not strictly increasing at row 3"):
        bundle_candles({"DUP": dup})
    with pytest.raises(DataError, match="NOVOL: missing column"):
        bundle_candles({"NOVOL": random_candles(1, 5).drop(columns="volume")})
    floats = random_candles(1, 5).astype({"open_time": "float64"})
    with pytest.raises(DataError, match="FLT: open_time has dtype float64"):
        bundle_candles({"FLT": floats})
    cb = bundle_candles({"B": random_candles(1, 5), "A": random_candles(2, 3, start_ms=T0 + HOUR)})
    assert cb.symbols == ("A", "B")
    assert cb.bars == 8
    assert not cb.one_calendar
    assert cb.rows("B") == slice(3, 8)
    np.testing.assert_array_equal(cb.bar_grid(), [1, 2, 3, 0, 1, 2, 3, 4])
    same = bundle_candles({"A": random_candles(1, 3), "B": random_candles(2, 3)})
    assert same.one_calendar
    np.testing.assert_array_equal(same.bar_grid(), [0, 1, 2, 0, 1, 2])


# ---------------------------------------------------------------------------- portfolio

TP_PATH = [
    (100.0, 101.0, 99.0, 100.0),
    (100.0, 101.0, 99.5, 100.5),  # entry bar
    (100.5, 102.0, 100.0, 101.5),
    (101.5, 104.5, 101.0, 104.0),  # TP at 104
    (104.0, 104.2, 103.8, 104.0),
    (104.0, 104.2, 103.8, 104.0),
]


def test_single_long_take_profit_by_hand(kernels: str) -> None:
    cfg = BacktestConfig(initial_equity=10_000.0)
    res = run_backtest({"X": candles_from(TP_PATH)}, one_event("X", 0, 1, 2.0, 4.0), cfg)
    assert len(res.trades) == 1
    tr = res.trades.iloc[0]
    rpu = 100.0 * (1 + FEE) - 98.0 * (1 - FEE)
    qty = 200.0 / rpu
    fees = qty * 100.0 * FEE + qty * 104.0 * FEE
    pnl = qty * 4.0 - fees
    assert tr["quantity"] == pytest.approx(qty, rel=1e-12)
    assert tr["risk_amount"] == pytest.approx(200.0, rel=1e-12)
    assert tr["notional"] == pytest.approx(qty * 100.0, rel=1e-12)
    assert tr["fees"] == pytest.approx(fees, rel=1e-12)
    assert tr["pnl"] == pytest.approx(pnl, rel=1e-12)
    assert (tr["entry_bar"], tr["exit_bar"], tr["reason"], tr["label"]) == (1, 3, "TP1", 1)
    assert tr["entry_time_ms"] == T0 + HOUR
    assert tr["exit_time_ms"] == T0 + 3 * HOUR
    assert tr["exit_price"] == 104.0
    assert tr["funding"] == 0.0
    assert tr["slippage"] == 0.0
    entry_fee = qty * 100.0 * FEE
    expected = [10_000.0, 10_000.0 - entry_fee + qty * 0.5, 10_000.0 - entry_fee + qty * 1.5]
    expected += [10_000.0 + pnl] * 3
    np.testing.assert_allclose(res.equity, expected, rtol=1e-13)
    np.testing.assert_array_equal(res.n_open, [0, 1, 1, 0, 0, 0])
    assert res.final_equity == pytest.approx(10_000.0 + pnl, rel=1e-13)
    assert list(res.trades.columns) == list(TRADE_COLUMNS)
    assert list(res.events["outcome"]) == ["taken"]


def test_short_stop_with_slippage_and_maker_take_profit(kernels: str) -> None:
    path = [(100.0, 100.5, 99.5, 100.0), (100.0, 100.8, 99.0, 100.6), (100.6, 102.5, 100.5, 102.0)]
    path += [(102.0, 102.1, 101.9, 102.0)] * 3
    cfg = BacktestConfig(costs=CostModel(0.0001, 0.0005, slippage_bps=10.0), tp_maker=True)
    res = run_backtest({"X": candles_from(path)}, one_event("X", 0, -1, 2.0, 4.0), cfg)
    tr = res.trades.iloc[0]
    p = 100.0 * (1 - 0.001)
    stop = p + 2.0
    assert tr["entry_price"] == pytest.approx(p)
    assert tr["reason"] == "SL"
    assert tr["exit_price"] == pytest.approx(stop * 1.001)
    rpu = stop * 1.001 * 1.0005 - p * (1 - 0.0005)
    assert tr["risk_amount"] == pytest.approx(0.02 * 10_000.0, rel=1e-12)
    assert tr["quantity"] == pytest.approx(200.0 / rpu, rel=1e-12)
    q = tr["quantity"]
    assert tr["slippage"] == pytest.approx(q * 100.0 * 0.001 + q * stop * 0.001, rel=1e-12)
    assert tr["pnl"] == pytest.approx(-200.0, rel=1e-9)  # the whole planned risk, no more


def test_trades_exit_exactly_as_labels_say(kernels: str) -> None:
    frames = {s: random_candles(i, 600) for i, s in enumerate(("AAA", "BBB", "CCC"))}
    spec_ev = SignalSpec(ema_fast=5, ema_slow=13, horizon_bars=24, tp1_atr=1.5, tp2_atr=2.5)
    events = events_for(frames, spec_ev)
    costs = CostModel(maker_fee_rate=0.0002, taker_fee_rate=0.0005, slippage_bps=3.0)
    cfg = BacktestConfig(
        costs=costs, tp_maker=True, tp1_fraction=0.5, move_to_be=True, max_positions=3
    )
    res = run_backtest(frames, events, cfg)
    spec = ExitSpec(0.5, True, 0.0005, 0.0002, 0.0005, 3.0)
    labels = label_events(frames, events, spec)
    tr = res.trades
    assert len(tr) > 20
    lab = labels.loc[tr["event_row"]]
    done = lab["complete"].to_numpy()
    assert (~done).sum() <= 3  # only trades at the very end are unresolved
    np.testing.assert_array_equal(tr["exit_bar"].to_numpy()[done], lab["exit_bar"][done])
    np.testing.assert_array_equal(tr["label"].to_numpy()[done], lab["label"][done])
    np.testing.assert_array_equal(tr["label_ret"].to_numpy()[done], lab["ret_net"][done])
    np.testing.assert_array_equal(
        tr["reason"].astype(str).to_numpy()[done], lab["reason"].astype(str)[done]
    )
    assert set(tr["reason"].astype(str)) >= {"SL", "TP2", "BE", "TIME"}
    assert (tr["reason"].astype(str).to_numpy()[~done] == "END").all()
    # the curve ends where the trades say
    final = cfg.initial_equity + tr["pnl"].sum()
    assert res.final_equity == pytest.approx(final, rel=1e-12)
    assert res.n_open[-1] == 0
    # P&L identity of every trade: price moves of the legs - fees
    side = tr["side"].to_numpy()
    q = tr["quantity"].to_numpy()
    legs = tr["leg1_fraction"] * (tr["leg1_price"] - tr["entry_price"])
    legs += (tr["leg2_fraction"] * (tr["leg2_price"] - tr["entry_price"])).fillna(0.0)
    np.testing.assert_allclose(tr["pnl"], side * q * legs - tr["fees"], rtol=1e-9, atol=1e-9)


def test_limits_are_respected(kernels: str) -> None:
    frames = {s: random_candles(10 + i, 500) for i, s in enumerate(("AAA", "BBB", "CCC", "DDD"))}
    events = events_for(frames, SignalSpec(ema_fast=3, ema_slow=8, horizon_bars=30))
    cfg = BacktestConfig(max_positions=2, max_per_symbol=1, max_gross_leverage=1.5)
    res = run_backtest(frames, events, cfg)
    assert res.n_open.max() <= 2
    counts = res.events["outcome"].value_counts()
    assert counts["taken"] == len(res.trades) > 10
    assert counts["max_positions"] > 0
    assert counts["max_per_symbol"] > 0
    for _, tr in res.trades.groupby("symbol", observed=True):
        starts = tr["entry_time_ms"].to_numpy()[1:]
        ends = tr["exit_time_ms"].to_numpy()[:-1]
        assert (starts >= ends).all()
    tight = run_backtest(frames, events, BacktestConfig(max_positions=4, max_gross_leverage=0.5))
    assert tight.events["outcome"].value_counts()["max_gross_leverage"] > 0
    assert (tight.trades["notional"] <= 0.5 * tight.trades["equity_at_entry"] + 1e-9).all()


def test_several_positions_per_symbol(kernels: str) -> None:
    frames = {"AAA": random_candles(5, 400)}
    events = events_for(frames, SignalSpec(ema_fast=3, ema_slow=8, horizon_bars=40))
    cfg = BacktestConfig(max_positions=5, max_per_symbol=3, max_gross_leverage=3.0)
    res = run_backtest(frames, events, cfg)
    assert res.n_open.max() > 1
    assert res.n_open.max() <= 3


def test_kelly_from_a_probability_column(kernels: str) -> None:
    frames = {"X": candles_from(TP_PATH)}
    ev = pd.concat([one_event("X", 0, 1, 2.0, 4.0)] * 3, ignore_index=True)
    ev["p_take"] = [0.35, 0.3, 0.9]
    cfg = BacktestConfig(probability_column="p_take", max_per_symbol=3, max_gross_leverage=3.0)
    res = run_backtest(frames, ev, cfg)
    assert list(res.events["outcome"]) == ["taken", "no_edge", "taken"]
    sizing = SizingConfig(fee_rate=FEE)
    for row, p in ((0, 0.35), (2, 0.9)):
        tr = res.trades.loc[res.trades["event_row"] == row].iloc[0]
        ref = size_position(
            tr["equity_at_entry"],
            100.0,
            98.0,
            config=sizing,
            kelly=kelly_from_probability(p, 4.0 / 2.0),
        )
        assert tr["quantity"] == pytest.approx(ref.quantity, rel=1e-12)
        assert tr["risk_amount"] == pytest.approx(ref.risk_amount, rel=1e-12)
    risk = res.trades["risk_amount"] / res.trades["equity_at_entry"]
    assert risk.iloc[0] == pytest.approx(0.5 * (0.35 - 0.65 / 2.0), rel=1e-12)
    assert risk.iloc[1] == pytest.approx(0.02, rel=1e-12)  # capped


def test_decision_column_filters_events(kernels: str) -> None:
    frames = {"X": candles_from(TP_PATH)}
    ev = pd.concat([one_event("X", 0, 1, 2.0, 4.0), one_event("X", 5, 1, 2.0, 4.0)])
    ev["take"] = [False, True]
    res = run_backtest(frames, ev.reset_index(drop=True))
    assert list(res.events["outcome"]) == ["decision_false", "no_entry_bar"]
    assert len(res.trades) == 0
    np.testing.assert_array_equal(res.equity, 10_000.0)
    primary = run_backtest(frames, ev, BacktestConfig(decision_column=None))
    assert list(primary.events["outcome"]) == ["taken", "no_entry_bar"]


def _flat(n: int, price: float = 100.0) -> pd.DataFrame:
    return candles_from([(price, price * 1.001, price * 0.999, price)] * n)


def _funding(times_h: list[int], rate: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "funding_time": np.array([T0 + h * HOUR for h in times_h], np.int64),
            "funding_rate": np.full(len(times_h), rate),
        }
    )


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize("rate", [0.0001, -0.0003])
def test_funding_sign_and_times(kernels: str, side: int, rate: float) -> None:
    frames = {"P": _flat(40)}
    fund = {"P": _funding([0, 8, 16, 24, 32], rate)}
    # entry at the open of bar 8 (funding at 8h not charged), time exit at the open of bar 24
    res = run_backtest(frames, one_event("P", 7, side, 5.0, 10.0, h=16), funding=fund)
    tr = res.trades.iloc[0]
    assert tr["reason"] == "TIME"
    assert (tr["entry_time_ms"], tr["exit_time_ms"]) == (T0 + 8 * HOUR, T0 + 24 * HOUR)
    expected = 2 * side * tr["quantity"] * 100.0 * rate  # at 16h and 24h
    assert tr["funding"] == pytest.approx(expected, rel=1e-12)
    assert (tr["funding"] > 0) == (side * rate > 0)  # longs pay a positive rate
    assert tr["pnl"] == pytest.approx(-tr["fees"] - tr["funding"], rel=1e-9)
    assert res.final_equity == pytest.approx(10_000.0 + tr["pnl"], rel=1e-12)
    spot = run_backtest(
        frames, one_event("P", 7, side, 5.0, 10.0, h=16), funding=fund, markets={"P": Market.SPOT}
    )
    assert spot.trades["funding"].iloc[0] == 0.0


# ---------------------------------------------------------------------------- spot borrow

BORROW_BPS_H = 0.5
RATE_H = BORROW_BPS_H / 1e4


def _rising(n: int, step_ms: int = HOUR) -> pd.DataFrame:
    """Opens 100, 101, 102, ... (every bar opens at the last close), ranges of +-0.5."""
    o = 100.0 + np.arange(n, dtype=np.float64)
    return pd.DataFrame(
        {
            "open_time": T0 + step_ms * np.arange(n, dtype=np.int64),
            "open": o,
            "high": o + 1.0,
            "low": o - 0.5,
            "close": o + 1.0,
            "volume": np.ones(n),
        }
    )


def test_spot_short_pays_borrow_every_hour_by_hand(kernels: str) -> None:
    frames = {"X": _rising(20)}
    cfg = BacktestConfig(spot_borrow_rate_per_hour=RATE_H)
    ev = one_event("X", 0, -1, 50.0, 50.0, h=10)  # entry at the open of bar 1, exit at bar 11
    res = run_backtest(frames, ev, cfg)
    tr = res.trades.iloc[0]
    assert (tr["reason"], tr["entry_bar"], tr["exit_bar"]) == ("TIME", 1, 11)
    # held 10 hours: charged at the opens of bars 1..10 (101 + ... + 110 = 1055), not at 11
    marks = 101.0 + np.arange(10)
    borrow = tr["quantity"] * RATE_H * marks.sum()
    assert marks.sum() == 1055.0
    assert tr["borrow"] == pytest.approx(borrow, rel=1e-12)
    assert tr["funding"] == 0.0
    free = run_backtest(frames, ev)  # the same trade without margin interest
    assert free.trades["quantity"].iloc[0] == tr["quantity"]
    assert free.trades["borrow"].iloc[0] == 0.0
    assert tr["pnl"] == pytest.approx(free.trades["pnl"].iloc[0] - borrow, rel=1e-12)
    assert res.final_equity == pytest.approx(free.final_equity - borrow, rel=1e-12)
    # the equity pays each hour's interest at that hour's open
    paid = np.concatenate(([0.0], np.cumsum(tr["quantity"] * RATE_H * marks)))
    paid = np.concatenate((paid, np.full(len(res.equity) - paid.size, paid[-1])))
    np.testing.assert_allclose(res.equity, free.equity - paid, rtol=1e-12)
    report = res.stats()
    assert report.trades.borrow_paid == pytest.approx(borrow, rel=1e-12)
    fees = report.trades.fees_paid + report.trades.slippage_paid
    assert report.costs_fraction_of_initial_equity == pytest.approx((fees + borrow) / 10_000.0)


def test_borrow_runs_to_the_close_of_a_stop_bar(kernels: str) -> None:
    frames = {"X": _rising(20)}
    cfg = BacktestConfig(spot_borrow_rate_per_hour=RATE_H)
    # the stop 2.5 above the fill at 101 (103.5) is reached inside bar 3 (open 103, high 104)
    res = run_backtest(frames, one_event("X", 0, -1, 2.5, 50.0, h=10), cfg)
    tr = res.trades.iloc[0]
    assert (tr["reason"], tr["exit_bar"]) == ("SL", 3)
    # open during hours 1, 2 and 3 (the stop fills inside bar 3): three charges
    assert tr["borrow"] == pytest.approx(tr["quantity"] * RATE_H * (101 + 102 + 103), rel=1e-12)


def test_borrow_on_four_hour_bars_and_after_a_partial(kernels: str) -> None:
    frames = {"X": _rising(12, 4 * HOUR)}
    cfg = BacktestConfig(spot_borrow_rate_per_hour=RATE_H)
    res = run_backtest(frames, one_event("X", 0, -1, 50.0, 50.0, h=2), cfg)
    tr = res.trades.iloc[0]
    assert (tr["reason"], tr["exit_bar"]) == ("TIME", 3)
    # hours 4..11 after T0: four at bar 1's open (101), four at bar 2's (102)
    assert tr["borrow"] == pytest.approx(tr["quantity"] * RATE_H * 4 * (101 + 102), rel=1e-12)
    # TP1 (half) inside bar 2, the rest at the time exit: bar 3's hours on half the quantity
    path = [(100.0, 100.5, 99.5, 100.0), (100.0, 100.5, 99.5, 100.0)]
    path += [(100.0, 100.5, 97.5, 99.0), (99.0, 99.5, 98.5, 99.0), (99.0, 99.5, 98.5, 99.0)]
    path += [(99.0, 99.5, 98.5, 99.0)] * 3
    half = BacktestConfig(spot_borrow_rate_per_hour=RATE_H, tp1_fraction=0.5)
    res = run_backtest({"X": candles_from(path)}, one_event("X", 0, -1, 5.0, 2.0, 8.0, h=3), half)
    tr = res.trades.iloc[0]
    assert (tr["leg1_reason"], tr["leg1_bar"], tr["reason"], tr["exit_bar"]) == (
        "TP1", 2, "TIME", 4,
    )  # fmt: skip
    expected = tr["quantity"] * RATE_H * (100.0 + 100.0 + 0.5 * 99.0)
    assert tr["borrow"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("side", "market"), [(1, Market.SPOT), (-1, Market.PERP), (1, Market.PERP)]
)
def test_longs_and_perps_pay_no_borrow(kernels: str, side: int, market: Market) -> None:
    frames = {"X": _rising(20)}
    cfg = BacktestConfig(spot_borrow_rate_per_hour=RATE_H)
    fund = {"X": _funding([], 0.0)} if market is Market.PERP else None
    ev = one_event("X", 0, side, 50.0, 50.0, h=10)
    res = run_backtest(frames, ev, cfg, funding=fund, markets={"X": market})
    assert res.trades["borrow"].iloc[0] == 0.0
    assert res.final_equity == run_backtest(frames, ev, funding=fund).final_equity


def test_liquidation_ends_the_trade(kernels: str) -> None:
    path = [(100.0, 100.5, 99.5, 100.0), (100.0, 100.5, 95.0, 96.0), (96.0, 96.5, 90.0, 91.0)]
    path += [(91.0, 91.5, 90.5, 91.0)] * 3
    cfg = BacktestConfig(leverage=10.0, maintenance_margin_rate=0.005)
    fund = {"X": _funding([], 0.0)}
    res = run_backtest(
        {"X": candles_from(path)}, one_event("X", 0, 1, 15.0, 30.0), cfg, funding=fund
    )
    tr = res.trades.iloc[0]
    liq = 100.0 * (1 - 0.1) / (1 - 0.005)
    assert tr["reason"] == "LIQ"
    assert tr["exit_bar"] == 2
    assert tr["exit_price"] == pytest.approx(liq)
    assert tr["label"] == 0  # the label (no leverage) would still be running
    q = tr["quantity"]
    fees = q * 100.0 * FEE + q * liq * FEE
    assert tr["pnl"] == pytest.approx(-q * 100.0 / 10.0 - fees, rel=1e-12)
    assert res.final_equity == pytest.approx(10_000.0 + tr["pnl"], rel=1e-12)
    # with leverage 1 the same long is not liquidated: the trade runs to the end of the data
    safe = run_backtest({"X": candles_from(path)}, one_event("X", 0, 1, 15.0, 30.0), funding=fund)
    assert safe.trades["reason"].iloc[0] == "END"


def test_liquidation_after_a_partial_take_profit(kernels: str) -> None:
    path = [(100.0, 100.5, 99.5, 100.0), (100.0, 102.5, 99.8, 102.0), (102.0, 102.2, 80.0, 85.0)]
    path += [(85.0, 85.5, 84.5, 85.0)] * 3
    cfg = BacktestConfig(leverage=5.0, tp1_fraction=0.5, max_gross_leverage=5.0)
    res = run_backtest(
        {"X": candles_from(path)},
        one_event("X", 0, 1, 30.0, 2.0, 8.0, h=3),
        cfg,
        funding={"X": _funding([], 0.0)},
    )
    tr = res.trades.iloc[0]
    assert (tr["leg1_reason"], tr["leg1_bar"], tr["leg1_fraction"]) == ("TP1", 1, 0.5)
    assert (tr["leg2_reason"], tr["leg2_bar"], tr["leg2_fraction"]) == ("LIQ", 2, 0.5)
    assert tr["reason"] == "LIQ"
    assert tr["label"] == 1


@pytest.mark.parametrize(
    ("reason", "stop", "bars", "expected"),
    [
        (4, 80.0, [(100, 101, 95, 96), (89, 90, 88, 89)], 1),  # time exit: open beyond liq
        (4, 80.0, [(100, 101, 95, 96), (92, 93, 80, 81)], -1),  # time exit: only the open
        (1, 80.0, [(100, 101, 95, 96), (92, 93, 79, 81)], 1),  # liq before a far stop
        (1, 91.0, [(100, 101, 95, 96), (92, 93, 85, 88)], -1),  # the stop fills first
        (2, 80.0, [(100, 101, 95, 96), (92, 120, 89, 100)], 1),  # TP bar reaching liq: liq
    ],
)
def test_first_liquidation_rules(
    reason: int, stop: float, bars: list[tuple[float, ...]], expected: int
) -> None:
    o, h, lo, _ = (np.array(c, dtype=np.float64) for c in zip(*bars, strict=True))
    liq = 90.0
    for fn in (JIT["first_liquidation_nb"], JIT["first_liquidation_nb"].py_func):
        assert fn(o, h, lo, 1, liq, 0, 1, reason, stop) == expected
        # the mirror image for a short
        assert fn(200 - o, 200 - lo, 200 - h, -1, 110.0, 0, 1, reason, 200 - stop) == expected


def test_break_even_exit_of_a_leveraged_perp(kernels: str) -> None:
    path = [(100.0, 100.5, 99.5, 100.0), (100.0, 102.5, 99.8, 102.0), (102.0, 102.2, 99.0, 99.5)]
    path += [(99.5, 99.6, 99.4, 99.5)] * 3
    cfg = BacktestConfig(leverage=3.0, tp1_fraction=0.5, move_to_be=True, max_gross_leverage=3.0)
    ev = one_event("X", 0, 1, 5.0, 2.0, 8.0, h=3)
    res = run_backtest({"X": candles_from(path)}, ev, cfg, funding={"X": _funding([], 0.0)})
    tr = res.trades.iloc[0]
    assert (tr["leg1_reason"], tr["leg2_reason"], tr["reason"]) == ("TP1", "BE", "BE")
    assert tr["exit_price"] == 100.0
    q = tr["quantity"]
    assert tr["pnl"] == pytest.approx(0.5 * q * 2.0 - q * FEE * (100.0 + 0.5 * 102.0 + 0.5 * 100.0))


def test_short_liquidation_price() -> None:
    for fn in (JIT["liquidation_price_nb"], JIT["liquidation_price_nb"].py_func):
        assert fn(-1, 100.0, 4.0, 0.01) == pytest.approx(100.0 * 1.25 / 1.01)
        assert fn(1, 100.0, 1.0, 0.01) == 0.0


def test_unresolved_partial_is_closed_at_the_end(kernels: str) -> None:
    path = [(100.0, 100.5, 99.5, 100.0), (100.0, 102.5, 99.8, 102.0)]
    path += [(102.0, 102.5, 101.5, 102.3)] * 3
    cfg = BacktestConfig(tp1_fraction=0.5, max_gross_leverage=2.0)
    res = run_backtest({"X": candles_from(path)}, one_event("X", 0, 1, 5.0, 2.0, 8.0, h=30), cfg)
    tr = res.trades.iloc[0]
    assert (tr["leg1_reason"], tr["leg2_reason"], tr["reason"]) == ("TP1", "END", "END")
    assert tr["exit_price"] == 102.3
    assert tr["exit_bar"] == 4
    assert tr["label"] == 0  # incomplete label


def test_sizing_edge_outcomes(kernels: str) -> None:
    frames = {"X": candles_from(TP_PATH)}
    ev = one_event("X", 0, 1, 150.0, 4.0)  # stop below zero
    assert list(run_backtest(frames, ev).events["outcome"]) == ["stop_not_positive"]
    for fn in (JIT["size_nb"], JIT["size_nb"].py_func):
        assert fn(0.0, 1, 100.0, 2.0, 4.0, math.nan, 0.02, 0.02, 0.5, 1.0, 0, 0, 0)[0] == (
            position_nb.EV_NO_EQUITY
        )
        assert fn(1.0, 1, 100.0, 2.0, 4.0, math.nan, 0.02, 0.02, 0.5, 0.0, 0, 0, 0)[0] == (
            position_nb.EV_ZERO_SIZE
        )
        assert fn(1.0, -1, 100.0, 2.0, 4.0, 0.9, 0.02, 0.02, 0.5, 1.0, 0, 0, 0)[0] == (
            position_nb.EV_TAKEN
        )


def test_stats_and_records(kernels: str) -> None:
    frames = {s: random_candles(20 + i, 400) for i, s in enumerate(("AAA", "BBB"))}
    res = run_backtest(frames, events_for(frames))
    report = res.stats(n_trials=10)
    assert report.returns.annualization_factor == pytest.approx(math.sqrt(8760))
    assert report.returns.n_returns == len(res.equity)
    assert report.returns.n_trials == 10
    assert report.trades.n_trades == len(res.trades)
    assert report.trades.total_pnl == pytest.approx(res.trades["pnl"].sum(), rel=1e-12)
    assert report.final_equity == res.final_equity
    assert 0.0 < report.exposure <= 1.0
    daily = res.stats(Timeframe.D1)
    assert daily.returns.annualization_factor == pytest.approx(math.sqrt(365))
    recs = res.trade_records()
    assert len(recs) == len(res.trades)
    assert isinstance(recs[0].entry_time_ms, int)
    frame = res.equity_frame()
    assert list(frame.columns) == ["open_time", "equity", "returns", "gross_leverage", "n_open"]
    np.testing.assert_allclose(np.cumprod(1 + res.returns) * 10_000.0, res.equity, rtol=1e-10)


def test_timeframe_is_inferred() -> None:
    frames = {"X": candles_from(TP_PATH)}
    frames4h = {"X": frames["X"].assign(open_time=T0 + 4 * HOUR * np.arange(6))}
    ev = one_event("X", 0, 1, 2.0, 4.0)
    assert run_backtest(frames, ev).timeframe is Timeframe.H1
    assert run_backtest(frames4h, ev).timeframe is Timeframe.H4
    assert run_backtest({"X": frames["X"].iloc[:1]}, ev).timeframe is Timeframe.H1
    assert run_backtest(frames, ev, timeframe=Timeframe.D1).timeframe is Timeframe.D1


def test_trades_hash_is_deterministic_and_sensitive() -> None:
    frames = {s: random_candles(30 + i, 300) for i, s in enumerate(("AAA", "BBB"))}
    ev = events_for(frames)
    a = run_backtest(frames, ev).trades_sha256()
    assert a == run_backtest(frames, ev).trades_sha256()
    cheaper = BacktestConfig(costs=CostModel(taker_fee_rate=0.0001))
    assert a != run_backtest(frames, ev, cheaper).trades_sha256()


def _ev(**cols: object) -> pd.DataFrame:
    ev = one_event("X", 0, 1, 2.0, 4.0)
    for k, v in cols.items():
        ev[k] = v
    return ev


@pytest.mark.parametrize(
    ("events", "kwargs", "match"),
    [
        (_ev().drop(columns="sl_dist"), {}, "missing column"),
        (_ev(symbol="Y"), {}, "'Y' has no candles"),
        (_ev(t=9), {}, r"t = 9 is not a bar of X \(0..5\)"),
        (_ev(t=0.5), {}, "expected integer"),
        (_ev(side=2), {}, "side"),
        (_ev(p=1.5), {"config": BacktestConfig(probability_column="p")}, "probability"),
        (_ev(), {"config": BacktestConfig(probability_column="p")}, "missing probability"),
        (_ev(take=1), {}, "expected bool"),
        (_ev(), {"markets": {"X": Market.PERP}}, "no funding history"),
        (_ev(), {"funding": {"X": pd.DataFrame({"funding_time": [T0]})}}, "funding_rate"),
        (
            _ev(),
            {"funding": {"X": pd.DataFrame({"funding_time": [1.0], "funding_rate": [0.0]})}},
            "int64",
        ),
        (_ev(), {"funding": {"X": _funding([8, 0], 0.0)}}, "not strictly increasing at row 1"),
        (_ev(), {"funding": {"X": _funding([0, 8], math.nan)}}, r"funding_rate\[0\]"),
    ],
)
def test_bad_input_is_one_line_error(
    events: pd.DataFrame, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(DataError, match=match) as err:
        run_backtest({"X": candles_from(TP_PATH)}, events, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial_equity": 0.0}, "initial_equity"),
        ({"tp1_fraction": 0.0}, "tp1_fraction"),
        ({"max_positions": 0}, "max_positions"),
        ({"max_gross_leverage": 0.0}, "max_gross_leverage"),
        ({"max_gross_leverage": math.inf}, "max_gross_leverage"),
        ({"leverage": 0.5}, "leverage"),
        ({"maintenance_margin_rate": 0.5}, "maintenance_margin_rate"),
        ({"spot_borrow_rate_per_hour": -1e-6}, r"spot_borrow_rate_per_hour must be in \[0, 0.01\)"),
        ({"spot_borrow_rate_per_hour": math.nan}, "spot_borrow_rate_per_hour"),
        ({"spot_borrow_rate_per_hour": 0.01}, "spot_borrow_rate_per_hour"),
    ],
)
def test_config_is_validated(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BacktestConfig(**kwargs)  # type: ignore[arg-type]


def test_result_type() -> None:
    res = run_backtest({"X": candles_from(TP_PATH)}, one_event("X", 0, 1, 2.0, 4.0))
    assert isinstance(res, BacktestResult)
    assert res.trades["leg2_bar"].isna().all()
    assert str(res.trades["leg2_bar"].dtype) == "Int64"
