"""The primary momentum model: indicators, rules, causality, gaps, Signal validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.core.signals.candles import atr_wilder, candle_arrays, ema, infer_step_ms, segment_starts
from atra.core.signals.events import (
    EVENT_COLUMNS,
    events_to_signals,
    generate_events,
    last_bar_events,
)
from atra.core.signals.spec import BarrierMode, Rule, Signal, SignalSpec
from atra.core.types import Side, Timeframe
from atra.errors import ConfigError, DataError

HOUR = 3_600_000


def make_candles(n: int, seed: int = 0, start_ms: int = 1_600_000_000_000) -> pd.DataFrame:
    """A 1h random walk with trends, so every rule fires."""
    rng = np.random.default_rng(seed)
    drift = np.repeat(rng.normal(0, 0.001, n // 100 + 1), 100)[:n]
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.006, n)))
    op = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(op, close) * (1 + rng.exponential(0.003, n))
    low = np.minimum(op, close) * (1 - rng.exponential(0.003, n))
    return pd.DataFrame(
        {
            "open_time": start_ms + HOUR * np.arange(n, dtype=np.int64),
            "open": op,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.lognormal(3, 1, n),
        }
    )


# ---------------------------------------------------------------------------- indicators


def test_ema_and_atr_follow_the_workload_recursions() -> None:
    c = make_candles(300, seed=1)
    close, high, low = (c[k].to_numpy() for k in ("close", "high", "low"))
    got_ema = ema(close, 20)
    got_atr = atr_wilder(high, low, close, 14)
    e = close[0]
    a = high[0] - low[0]
    alpha = 2 / 21
    for t in range(len(close)):
        if t:
            e = alpha * close[t] + (1 - alpha) * e
            tr = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
            a = tr / 14 + (1 - 1 / 14) * a
        assert got_ema[t] == pytest.approx(e, rel=1e-12)
        assert got_atr[t] == pytest.approx(a, rel=1e-12)


def _crossings(d: np.ndarray, t: int) -> int:
    if d[t] > 0 >= d[t - 1]:
        return 1
    if d[t] < 0 <= d[t - 1]:
        return -1
    return 0


def test_ema_cross_events_and_atr_barriers() -> None:
    c = make_candles(1500, seed=2)
    spec = SignalSpec()
    ev = generate_events(c, spec, symbol="X")
    close = c["close"].to_numpy()
    d = ema(close, 20) - ema(close, 50)
    atr = atr_wilder(c["high"], c["low"], close, 14)
    want = [(t, s) for t in range(50, len(c)) if (s := _crossings(d, t))]
    assert list(zip(ev["t"], ev["side"], strict=True)) == want
    assert len(want) > 10
    assert list(ev.columns) == list(EVENT_COLUMNS)
    row = ev.iloc[3]
    t = int(row["t"])
    assert row["time_ms"] == c["open_time"].iloc[t]
    assert row["entry"] == close[t]
    assert row["sl_dist"] == pytest.approx(1.5 * atr[t])
    assert row["tp1_dist"] == pytest.approx(3.0 * atr[t])
    assert row["tp2_dist"] == pytest.approx(4.5 * atr[t])
    assert row["sl"] == pytest.approx(close[t] - row["side"] * 1.5 * atr[t])
    assert row["horizon_bars"] == 48


def test_donchian_breakout_onsets() -> None:
    c = make_candles(1200, seed=3)
    spec = SignalSpec(rule=Rule.DONCHIAN, donchian_n=24)
    ev = generate_events(c, spec, symbol="X")
    h, lo, close = (c[k].to_numpy() for k in ("high", "low", "close"))

    def state(t: int) -> int:
        if close[t] > h[t - 24 : t].max():
            return 1
        if close[t] < lo[t - 24 : t].min():
            return -1
        return 0

    want = []
    for t in range(spec.warmup, len(c)):
        s = state(t)
        if s and state(t - 1) != s:
            want.append((t, s))
    assert list(zip(ev["t"], ev["side"], strict=True)) == want
    assert {1, -1} <= set(ev["side"])


def test_tsmom_with_trend_filter_and_long_only() -> None:
    c = make_candles(2000, seed=4)
    spec = SignalSpec(rule=Rule.TSMOM, tsmom_lookback=48, trend_ema=200, allow_short=False)
    ev = generate_events(c, spec, symbol="X")
    close = c["close"].to_numpy()
    trend = ema(close, 200)
    mom = np.full(len(close), np.nan)
    mom[48:] = close[48:] / close[:-48] - 1
    want = [
        t for t in range(spec.warmup, len(c)) if mom[t] > 0 >= mom[t - 1] and close[t] > trend[t]
    ]
    assert ev["t"].tolist() == want
    assert set(ev["side"]) == {1}
    assert spec.warmup == 200


def test_short_only() -> None:
    ev = generate_events(make_candles(1500, seed=9), SignalSpec(allow_long=False), symbol="X")
    assert len(ev)
    assert set(ev["side"]) == {-1}


def test_percent_barriers_of_the_seed_spec() -> None:
    c = make_candles(600, seed=5)
    spec = SignalSpec.seed()
    ev = generate_events(c, spec, symbol="X")
    assert len(ev)
    assert (ev["horizon_bars"] == 120).all()
    side = ev["side"].to_numpy()
    np.testing.assert_allclose(ev["sl"], ev["entry"] * (1 - side * 0.01))
    np.testing.assert_allclose(ev["tp1"], ev["entry"] * (1 + side * 0.02))
    np.testing.assert_allclose(ev["tp1_dist"], ev["entry"] * 0.02)
    assert spec.warmup == 50  # no ATR needed with percent barriers


@settings(max_examples=25, deadline=None)
@given(
    cut=st.integers(60, 700),
    rule=st.sampled_from(list(Rule)),
    seed=st.integers(0, 50),
)
def test_events_are_causal(cut: int, rule: Rule, seed: int) -> None:
    """Events up to bar t don't change when the bars after t are removed."""
    c = make_candles(700, seed=seed)
    spec = SignalSpec(rule=rule, donchian_n=10, tsmom_lookback=12)
    full = generate_events(c, spec, symbol="X")
    part = generate_events(c.iloc[:cut], spec, symbol="X")
    pd.testing.assert_frame_equal(part, full[full["t"] < cut].reset_index(drop=True))


def test_no_signal_from_a_window_spanning_a_gap() -> None:
    c = make_candles(900, seed=6)
    cut = 430
    gapped = pd.concat([c.iloc[:cut], c.iloc[cut + 5 :]], ignore_index=True)
    ev = generate_events(gapped, SignalSpec(), symbol="X")
    first = generate_events(gapped.iloc[:cut], SignalSpec(), symbol="X")
    second = generate_events(gapped.iloc[cut:].reset_index(drop=True), SignalSpec(), symbol="X")
    # the two sides of the gap are independent; the bar before the gap cannot signal
    want = pd.concat(
        [first[first["t"] < cut - 1], second.assign(t=second["t"] + cut)], ignore_index=True
    )
    pd.testing.assert_frame_equal(ev, want)
    assert not ((ev["t"] >= cut) & (ev["t"] < cut + 50)).any()  # warm-up again after the gap


def test_signal_on_the_last_bar_before_a_gap_is_dropped() -> None:
    c = make_candles(900, seed=6)
    ev = generate_events(c, SignalSpec(), symbol="X")
    t = int(ev["t"].iloc[5])
    gapped = pd.concat([c.iloc[: t + 1], c.iloc[t + 3 :]], ignore_index=True)
    assert t not in generate_events(gapped, SignalSpec(), symbol="X")["t"].tolist()
    assert t in generate_events(c.iloc[: t + 1], SignalSpec(), symbol="X")["t"].tolist()


def test_explicit_timeframe_and_short_frames() -> None:
    c = make_candles(300, seed=7)
    by_tf = generate_events(c, SignalSpec(), symbol="X", timeframe=Timeframe.H1)
    pd.testing.assert_frame_equal(by_tf, generate_events(c, SignalSpec(), symbol="X"))
    # read as 30m bars, every hourly step is a gap: no segment is long enough to signal
    assert generate_events(c, SignalSpec(), symbol="X", timeframe=Timeframe.M30).empty
    empty = generate_events(c.iloc[:1], SignalSpec(), symbol="X")
    assert list(empty.columns) == list(EVENT_COLUMNS)
    assert empty.empty


def test_events_to_signals() -> None:
    ev = generate_events(make_candles(800, seed=8), SignalSpec(), symbol="BTCUSDT")
    signals = events_to_signals(ev)
    assert len(signals) == len(ev)
    s = signals[0]
    row = ev.iloc[0]
    assert (s.symbol, s.time_ms, int(s.side), s.entry) == (
        "BTCUSDT",
        row["time_ms"],
        row["side"],
        row["entry"],
    )
    assert s.sl_dist == pytest.approx(row["sl_dist"])
    assert s.tp1_dist == pytest.approx(row["tp1_dist"])
    assert s.tp2_dist == pytest.approx(row["tp2_dist"])
    with pytest.raises(DataError, match="missing column"):
        events_to_signals(ev.drop(columns=["tp2"]))
    with pytest.raises(DataError, match="events row 1: side 0"):
        events_to_signals(ev.assign(side=[1, 0, *ev["side"].iloc[2:]]))


# ---------------------------------------------------------------------------- Signal


def _signal(**kw: object) -> Signal:
    args: dict[str, object] = {
        "symbol": "BTCUSDT",
        "time_ms": 0,
        "side": Side.LONG,
        "entry": 50_000.0,
        "sl": 49_000.0,
        "tp1": 51_000.0,
        "tp2": 52_000.0,
        "horizon_bars": 120,
    }
    args.update(kw)
    return Signal(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("price", "pnl"),
    [
        (51_000.0, 89.9),  # 0.1 * 1,000 - 0.001 * 0.1 * (50,000 + 51,000)
        (52_000.0, 189.8),  # 0.1 * 2,000 - 0.001 * 0.1 * 102,000
        (49_000.0, -109.9),  # -0.1 * 1,000 - 0.001 * 0.1 * 99,000
    ],
)
def test_seed_long_signal_pnl(price: float, pnl: float) -> None:
    assert _signal().pnl(price, 0.1, 0.001) == pytest.approx(pnl, abs=1e-9)


def test_short_signal_pnl_and_int_side() -> None:
    s = _signal(side=-1, sl=51_000.0, tp1=49_000.0, tp2=48_000.0)
    assert s.side is Side.SHORT
    assert s.pnl(49_000.0, 0.1, 0.001) == pytest.approx(100 - 9.9)


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"side": 0}, DataError, "side 0"),
        ({"sl": 51_000.0}, DataError, "SL 51000.0 is not on the losing side"),
        ({"tp1": 52_500.0}, DataError, "TP1 52500.0 is not strictly between"),
        ({"tp1": 49_500.0}, DataError, "TP1 49500.0 is not strictly between"),
        ({"tp2": 51_000.0}, DataError, "not strictly between"),
        ({"entry": math.nan}, DataError, "entry = nan"),
        ({"sl": -1.0}, DataError, "sl = -1.0"),
        ({"horizon_bars": 0}, ConfigError, "horizon_bars = 0"),
    ],
)
def test_signal_rejects_bad_levels(kw: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _signal(**kw)


@pytest.mark.parametrize(
    ("args", "message"),
    [((0.0, 0.1, 0.001), "exit price"), ((1.0, -1.0, 0.001), "quantity"), ((1.0, 1.0, 1.0), "fee")],
)
def test_pnl_rejects_bad_arguments(args: tuple[float, float, float], message: str) -> None:
    with pytest.raises((DataError, ConfigError), match=message):
        _signal().pnl(*args)


# ---------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"ema_fast": 0}, "ema_fast must be >= 1"),
        ({"ema_fast": 50}, "ema_fast .50. must be < ema_slow"),
        ({"trend_ema": 0}, "trend_ema"),
        ({"allow_long": False, "allow_short": False}, "no signal possible"),
        ({"horizon_bars": 0}, "horizon_bars"),
        ({"warmup_bars": 0}, "warmup_bars"),
        ({"sl_atr": 0.0}, "sl_atr"),
        ({"tp1_pct": 0.05}, "tp1_pct < tp2_pct"),
        ({"tp2_pct": 1.5, "tp1_pct": 0.5}, "tp2_pct must be < 1"),
    ],
)
def test_signal_spec_rejects_bad_values(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SignalSpec(**kw)  # type: ignore[arg-type]


def test_warmup_defaults() -> None:
    assert SignalSpec().warmup == 50
    assert SignalSpec(rule=Rule.DONCHIAN, donchian_n=55).warmup == 56
    assert SignalSpec(rule=Rule.TSMOM, tsmom_lookback=5).warmup == 14  # ATR(14)
    assert SignalSpec(warmup_bars=7).warmup == 7
    assert (
        SignalSpec(barrier_mode=BarrierMode.PERCENT, rule=Rule.TSMOM, tsmom_lookback=5).warmup == 6
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.drop(columns=["low"]), "missing column.s. low"),
        (lambda c: c.assign(open_time=c["open_time"].astype(float)), "open_time has dtype"),
        (
            lambda c: c.assign(open_time=c["open_time"].iloc[::-1].to_numpy()),
            "open_time not strictly increasing at row 1",
        ),
        (lambda c: c.assign(close=c["close"].where(c.index != 7, np.nan)), r"close\[7\] = nan"),
        (lambda c: c.assign(high=c["high"].where(c.index != 3, -2.0)), r"high\[3\] = -2.0"),
    ],
)
def test_bad_candles_are_one_line_data_errors(change: object, message: str) -> None:
    bad = change(make_candles(20))  # type: ignore[operator]
    with pytest.raises(DataError, match=f"candles SYM: {message}"):
        generate_events(bad, SignalSpec(), symbol="SYM")


def test_candle_arrays_step_and_segments() -> None:
    c = make_candles(10)
    arr = candle_arrays(c, "X")
    assert len(arr) == 10
    assert arr.close.dtype == np.float64
    times = np.array([0, 1, 2, 5, 6, 10], dtype=np.int64) * HOUR
    assert infer_step_ms(times) == HOUR
    assert infer_step_ms(np.array([0, 5, 6, 7, 12, 13]) * HOUR) == HOUR  # mode, not first
    assert segment_starts(times, HOUR).tolist() == [0, 3, 5]
    assert segment_starts(np.zeros(0, np.int64), HOUR).tolist() == []
    with pytest.raises(DataError, match="fewer than 2"):
        infer_step_ms([0])


@pytest.mark.shared_data
def test_real_data_gaps_never_inside_a_signal_window(shared_data_dir: Path) -> None:
    c = pd.read_parquet(shared_data_dir / "BTCUSDT_spot_1h.parquet")
    ev = generate_events(c, SignalSpec(), symbol="BTCUSDT")
    ev = ev[ev["t"] < len(c) - 1]
    starts = segment_starts(c["open_time"].to_numpy(), HOUR)
    assert len(starts) == 28  # 27 gaps (README)
    seg = np.searchsorted(starts, ev["t"].to_numpy(), side="right") - 1
    assert (ev["t"].to_numpy() - starts[seg] >= 50).all()
    nxt = ev["t"].to_numpy() + 1
    assert (c["open_time"].to_numpy()[nxt] - ev["time_ms"].to_numpy() == HOUR).all()
    assert len(ev) > 1000


@pytest.mark.parametrize("rule", list(Rule))
def test_last_bar_events_is_generate_events_at_the_last_bar(rule: Rule) -> None:
    """The live loop's shortcut builds only the last bar's row: the same row, or none."""
    candles = make_candles(400, seed=3)
    spec = SignalSpec(rule=rule, ema_fast=5, ema_slow=13, donchian_n=10, tsmom_lookback=24)
    hits = 0
    for n in range(30, 400, 7):
        cut = candles.iloc[:n].reset_index(drop=True)
        full = generate_events(cut, spec, symbol="X")
        want = full[full["t"] == n - 1].reset_index(drop=True)
        got = last_bar_events(cut, spec, symbol="X")
        pd.testing.assert_frame_equal(got, want)
        hits += len(got)
    assert hits > 0
    assert last_bar_events(candles.iloc[:1], spec, symbol="X").empty
