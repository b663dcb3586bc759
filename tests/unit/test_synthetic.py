from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from atra.core.synthetic.market import (
    EXCHANGE,
    FUNDING_INTERVAL_MS,
    REGIME_DOWN,
    REGIME_RANGE,
    REGIME_UP,
    ModelParams,
    SyntheticConfig,
    SyntheticMarket,
    generate_market,
    symbol_profile,
)
from atra.core.types import Timeframe
from atra.errors import ConfigError

HOUR_MS = 3_600_000
CANDLE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume"]
ALTS = ("ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT")


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market()


def frame_digest(m: SyntheticMarket) -> str:
    h = hashlib.sha256()
    for kind in (m.spot, m.perp, m.funding):
        for sym in sorted(kind):
            frame = kind[sym]
            h.update(sym.encode())
            for col in frame.columns:
                h.update(col.encode())
                h.update(np.ascontiguousarray(frame[col].to_numpy()).tobytes())
    for sym in sorted(m.regimes):
        h.update(m.regimes[sym].tobytes())
    return h.hexdigest()


def log_returns(frame: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(frame["close"].to_numpy()))


# ------------------------------------------------------------------------------------------
# determinism, shape, grid


def test_exchange_name() -> None:
    assert EXCHANGE == "synthetic"


def test_same_seed_same_bytes_different_seed_different(market: SyntheticMarket) -> None:
    again = generate_market(SyntheticConfig())
    assert frame_digest(again) == frame_digest(market)
    other = generate_market(SyntheticConfig(seed=7))
    assert frame_digest(other) != frame_digest(market)
    for sym in market.spot:
        assert not np.array_equal(
            other.spot[sym]["close"].to_numpy(), market.spot[sym]["close"].to_numpy()
        )


def test_symbol_streams_do_not_depend_on_the_symbol_list(market: SyntheticMarket) -> None:
    small = generate_market(SyntheticConfig(symbols=("ADAUSDT", "BTCUSDT")))
    for sym in ("ADAUSDT", "BTCUSDT"):
        pd.testing.assert_frame_equal(small.spot[sym], market.spot[sym])
        pd.testing.assert_frame_equal(small.perp[sym], market.perp[sym])
        pd.testing.assert_frame_equal(small.funding[sym], market.funding[sym])
    assert list(small.spot) == ["ADAUSDT", "BTCUSDT"]  # the caller's order


def test_shapes_grid_and_dtypes(market: SyntheticMarket) -> None:
    cfg = market.config
    start_ms = int(pd.Timestamp("2022-01-01T00:00:00Z").value // 1_000_000)
    assert cfg.bars == 21_900
    assert set(market.spot) == set(cfg.symbols) == set(market.perp) == set(market.funding)
    for sym in cfg.symbols:
        for frame in (market.spot[sym], market.perp[sym]):
            assert list(frame.columns) == CANDLE_COLUMNS
            assert isinstance(frame.index, pd.RangeIndex)
            assert len(frame) == cfg.bars
            assert frame["open_time"].dtype == np.int64
            assert all(frame[c].dtype == np.float64 for c in CANDLE_COLUMNS[1:])
            t = frame["open_time"].to_numpy()
            assert t[0] == start_ms
            assert np.all(np.diff(t) == HOUR_MS)  # hourly, sorted, unique, no gaps
        np.testing.assert_array_equal(
            market.spot[sym]["open_time"].to_numpy(), market.perp[sym]["open_time"].to_numpy()
        )
        reg = market.regimes[sym]
        assert reg.shape == (cfg.bars,)
        assert set(np.unique(reg).tolist()) == {REGIME_DOWN, REGIME_RANGE, REGIME_UP}


def check_candles(frame: pd.DataFrame) -> None:
    o, h, lo, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert np.all(np.isfinite(frame[CANDLE_COLUMNS[1:]].to_numpy()))
    assert np.all(lo > 0.0)
    assert np.all(v > 0.0)
    assert np.all(lo <= np.minimum(o, c))
    assert np.all(h >= np.maximum(o, c))
    assert np.all(h > lo)
    np.testing.assert_array_equal(o[1:], c[:-1])  # open_t = close_{t-1}


@pytest.mark.parametrize("kind", ["spot", "perp"])
@pytest.mark.parametrize("symbol", SyntheticConfig().symbols)
def test_ohlc_invariants(market: SyntheticMarket, kind: str, symbol: str) -> None:
    check_candles(getattr(market, kind)[symbol])


def test_funding_times_every_8h_within_the_perp_grid(market: SyntheticMarket) -> None:
    for sym, fr in market.funding.items():
        assert list(fr.columns) == ["funding_time", "funding_rate"]
        assert fr["funding_time"].dtype == np.int64
        assert fr["funding_rate"].dtype == np.float64
        ft = fr["funding_time"].to_numpy()
        grid = market.perp[sym]["open_time"].to_numpy()
        assert np.all(ft % FUNDING_INTERVAL_MS == 0)  # 00:00 / 08:00 / 16:00 UTC
        hours = pd.to_datetime(ft, unit="ms", utc=True).hour
        assert set(hours) == {0, 8, 16}
        assert np.all(np.diff(ft) == 8 * HOUR_MS)
        assert ft[0] > grid[0]
        assert ft[-1] <= grid[-1]
        assert grid[-1] - ft[-1] < 8 * HOUR_MS  # none missing at the end
        assert ft[0] - grid[0] <= 8 * HOUR_MS  # none missing at the start
        assert np.all(np.isin(ft, grid))
        assert np.all(np.isfinite(fr["funding_rate"].to_numpy()))


def test_price_levels_are_plausible(market: SyntheticMarket) -> None:
    btc = market.spot["BTCUSDT"]
    assert btc["low"].min() > 12_000
    assert btc["high"].max() < 120_000
    eth = market.spot["ETHUSDT"]
    assert eth["low"].min() > 500
    assert eth["high"].max() < 10_000
    for sym, frame in market.spot.items():
        p0 = symbol_profile(sym).price0
        assert frame["open"].iloc[0] == pytest.approx(p0)
        assert frame["low"].min() > p0 / 40
        assert frame["high"].max() < p0 * 4


# ------------------------------------------------------------------------------------------
# stylised facts


def excess_kurtosis(r: np.ndarray) -> float:
    z = (r - r.mean()) / r.std()
    return float((z**4).mean()) - 3.0


def regime_age(reg: np.ndarray) -> np.ndarray:
    """Bars since the current regime began."""
    age = np.zeros(len(reg), dtype=np.int64)
    for t in range(1, len(reg)):
        age[t] = age[t - 1] + 1 if reg[t] == reg[t - 1] else 0
    return age


@pytest.mark.parametrize("symbol", SyntheticConfig().symbols)
def test_fat_tails_and_volatility_clustering(market: SyntheticMarket, symbol: str) -> None:
    r = log_returns(market.spot[symbol])
    assert excess_kurtosis(r) > 1.0
    a = pd.Series(np.abs(r))
    assert a.autocorr(1) > 0.1
    assert a.autocorr(24) > 0.03  # clustering lasts beyond a few hours
    assert abs(pd.Series(r).autocorr(1)) < 0.06  # little linear predictability bar to bar
    # not only a mixture of regimes: inside ranges the shocks are fat-tailed and clustered too
    in_range = market.regimes[symbol][1:] == REGIME_RANGE
    assert excess_kurtosis(r[in_range]) > 1.0
    both = in_range[1:] & in_range[:-1]
    assert np.corrcoef(np.abs(r[1:][both]), np.abs(r[:-1][both]))[0, 1] > 0.03


@pytest.mark.parametrize("symbol", SyntheticConfig().symbols)
def test_volume_tracks_absolute_return_and_breakouts(market: SyntheticMarket, symbol: str) -> None:
    frame = market.spot[symbol]
    r = log_returns(frame)
    assert np.corrcoef(frame["volume"].to_numpy()[1:], np.abs(r))[0, 1] > 0.2
    quote = frame["volume"].to_numpy() * frame["close"].to_numpy()
    reg = market.regimes[symbol]
    age = regime_age(reg)
    trend = reg != REGIME_RANGE
    first_day = np.median(quote[trend & (age < 24)])
    later = np.median(quote[trend & (age >= 48)])
    assert first_day > 1.25 * later  # breakouts draw volume
    assert later > np.median(quote[~trend])  # and trends more than ranges


@pytest.mark.parametrize("alt", ALTS)
def test_alts_follow_btc(market: SyntheticMarket, alt: str) -> None:
    btc = log_returns(market.spot["BTCUSDT"])
    rho = np.corrcoef(btc, log_returns(market.spot[alt]))[0, 1]
    assert 0.4 < rho < 0.9
    agree = np.mean(market.regimes[alt] == market.regimes["BTCUSDT"])
    assert agree > 0.45  # shared market regime, but not a copy
    assert agree < 0.95


@pytest.mark.parametrize("symbol", SyntheticConfig().symbols)
def test_basis_small_and_mean_reverting(market: SyntheticMarket, symbol: str) -> None:
    basis = market.perp[symbol]["close"].to_numpy() / market.spot[symbol]["close"].to_numpy() - 1
    assert np.median(np.abs(basis)) < 1e-3
    assert np.max(np.abs(basis)) < 1e-2
    phi = np.polyfit(basis[:-1], basis[1:], 1)[0]
    assert 0.5 < phi < 0.995  # persistent, yet reverts: half-life of hours to a few days
    assert math.log(0.5) / math.log(phi) < 100


def test_funding_sign_follows_the_trend_regime(market: SyntheticMarket) -> None:
    rates: list[np.ndarray] = []
    regs: list[np.ndarray] = []
    for sym, fr in market.funding.items():
        t = market.spot[sym]["open_time"].to_numpy()
        last_bar = np.searchsorted(t, fr["funding_time"].to_numpy()) - 1  # bar ending at T
        rate = fr["funding_rate"].to_numpy()
        reg = market.regimes[sym][last_bar]
        assert np.mean(rate[reg == REGIME_UP] > 0) > 0.6, sym
        assert np.mean(rate[reg == REGIME_DOWN] < 0) > 0.6, sym
        rates.append(rate)
        regs.append(reg)
    rate, reg = np.concatenate(rates), np.concatenate(regs)
    assert 2e-5 < np.median(np.abs(rate)) < 5e-4  # typical magnitude 1e-4
    assert np.max(np.abs(rate)) > 1e-3  # occasional spikes
    assert rate[reg == REGIME_UP].mean() > rate[reg == REGIME_RANGE].mean()
    assert rate[reg == REGIME_RANGE].mean() > rate[reg == REGIME_DOWN].mean()


def run_lengths(reg: np.ndarray, value: int) -> np.ndarray:
    edges = np.flatnonzero(np.diff(reg) != 0) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(reg)]))
    keep = reg[starts] == value
    lengths: np.ndarray = (ends - starts)[keep]
    return lengths


@pytest.mark.parametrize("symbol", SyntheticConfig().symbols)
def test_regimes_are_persistent(market: SyntheticMarket, symbol: str) -> None:
    reg = market.regimes[symbol]
    assert reg.dtype == np.int8
    assert 24 <= run_lengths(reg, REGIME_RANGE).mean() <= 24 * 21
    for trend in (REGIME_UP, REGIME_DOWN):
        assert 12 <= run_lengths(reg, trend).mean() <= 24 * 14
        assert np.mean(reg == trend) > 0.05


# ------------------------------------------------------------------------------------------
# momentum has something to learn


def ema(x: np.ndarray, span: int) -> np.ndarray:
    return pd.Series(x).ewm(span=span, adjust=False).mean().to_numpy()


def atr(frame: pd.DataFrame, n: int = 14) -> np.ndarray:
    h, lo, c = (frame[k].to_numpy() for k in ("high", "low", "close"))
    prev = np.concatenate(([c[0]], c[:-1]))
    tr = np.maximum(h - lo, np.maximum(np.abs(h - prev), np.abs(lo - prev)))
    return pd.Series(tr).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()


def crossover_trades(
    frame: pd.DataFrame,
    sl_atr: float = 1.5,
    tp_atr: float = 3.0,
    horizon: int = 48,
    fee: float = 0.0004,
) -> tuple[np.ndarray, np.ndarray]:
    """EMA(20/50) crossover, long and short; signal at t's close, fill at t+1's open; SL/TP
    from ATR(14) at t, stop first when both are inside a bar; exit at the close of bar t+horizon
    otherwise. Returns (signal bars, net returns)."""
    o, h, lo, c = (frame[k].to_numpy() for k in ("open", "high", "low", "close"))
    side_of = np.sign(ema(c, 20) - ema(c, 50))
    a = atr(frame)
    bars: list[int] = []
    rets: list[float] = []
    for t in range(50, len(c) - horizon - 1):
        side = side_of[t]
        if side == 0 or side_of[t - 1] != -side:
            continue
        entry = o[t + 1]
        stop, take = entry - side * sl_atr * a[t], entry + side * tp_atr * a[t]
        exit_px = c[t + horizon]
        for k in range(t + 1, t + horizon + 1):
            hit_stop = lo[k] <= stop if side > 0 else h[k] >= stop
            hit_take = h[k] >= take if side > 0 else lo[k] <= take
            if hit_stop:
                exit_px = min(stop, o[k]) if side > 0 else max(stop, o[k])
                break
            if hit_take:
                exit_px = max(take, o[k]) if side > 0 else min(take, o[k])
                break
        bars.append(t)
        rets.append(side * (exit_px / entry - 1.0) - 2.0 * fee)
    return np.asarray(bars), np.asarray(rets)


def volume_ratio(frame: pd.DataFrame, fast: int = 12, slow: int = 168) -> np.ndarray:
    qv = pd.Series(frame["volume"].to_numpy() * frame["close"].to_numpy())
    return (qv.rolling(fast).mean() / qv.rolling(slow).mean()).to_numpy()


def efficiency_ratio(close: np.ndarray, window: int = 48) -> np.ndarray:
    s = pd.Series(close)
    return (s.diff(window).abs() / s.diff().abs().rolling(window).sum()).to_numpy()


@pytest.fixture(scope="module")
def trades(market: SyntheticMarket) -> pd.DataFrame:
    parts = []
    for sym, frame in market.spot.items():
        bars, rets = crossover_trades(frame)
        parts.append(
            pd.DataFrame(
                {
                    "symbol": sym,
                    "ret": rets,
                    "regime": market.regimes[sym][bars],
                    "volume_ratio": volume_ratio(frame)[bars],
                    "er48": efficiency_ratio(frame["close"].to_numpy())[bars],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_momentum_wins_in_trends_and_loses_in_ranges(trades: pd.DataFrame) -> None:
    assert len(trades) > 1000
    trend = trades.loc[trades["regime"] != REGIME_RANGE, "ret"]
    rng = trades.loc[trades["regime"] == REGIME_RANGE, "ret"]
    assert len(trend) > 300
    assert len(rng) > 300
    assert trend.mean() > 0.002
    assert rng.mean() < -0.002
    assert trend.mean() - rng.mean() > 0.008  # a clear margin
    assert -0.003 < trades["ret"].mean() < 0.001  # about break-even overall, after fees
    assert (trend > 0).mean() > (rng > 0).mean() + 0.1


def test_a_causal_feature_separates_winners(trades: pd.DataFrame) -> None:
    ok = trades["volume_ratio"].notna()
    win = trades.loc[ok, "ret"] > 0
    assert roc_auc_score(win, trades.loc[ok, "volume_ratio"]) > 0.55


@pytest.mark.parametrize("symbol", SyntheticConfig().symbols)
def test_regime_is_partly_observable(market: SyntheticMarket, symbol: str) -> None:
    frame = market.spot[symbol]
    close = frame["close"].to_numpy()
    r = pd.Series(np.log(close)).diff()
    realised = (r.rolling(24).std() / r.rolling(336).std()).to_numpy()
    features = {"er48": efficiency_ratio(close), "realised_vol_ratio": realised}
    is_trend = market.regimes[symbol] != REGIME_RANGE
    ok = ~np.isnan(realised)
    for name, values in features.items():
        auc = roc_auc_score(is_trend[ok], values[ok])
        assert 0.6 < auc < 0.95, name  # informative, never a perfect tell


def test_generation_takes_under_3s() -> None:
    generate_market()  # numba compile / cache load
    t0 = time.perf_counter()
    generate_market()
    assert time.perf_counter() - t0 < 3.0


# ------------------------------------------------------------------------------------------
# other grids, other symbols, bad config


@pytest.mark.parametrize(
    ("tf", "bars"), [(Timeframe.M15, 400), (Timeframe.H4, 300), (Timeframe.D1, 60)]
)
def test_other_timeframes(tf: Timeframe, bars: int) -> None:
    m = generate_market(SyntheticConfig(bars=bars, timeframe=tf, symbols=("BTCUSDT", "ETHUSDT")))
    for sym in m.spot:
        frame = m.spot[sym]
        assert np.all(np.diff(frame["open_time"].to_numpy()) == tf.ms)
        check_candles(frame)
        check_candles(m.perp[sym])
        ft = m.funding[sym]["funding_time"].to_numpy()
        grid = frame["open_time"].to_numpy()
        span_h = (grid[-1] - grid[0]) / HOUR_MS
        assert len(ft) == pytest.approx(span_h / 8, abs=1)
        assert np.all(ft % FUNDING_INTERVAL_MS == 0)
        assert np.all((ft > grid[0]) & (ft <= grid[-1]))
        assert np.all(np.isfinite(m.funding[sym]["funding_rate"].to_numpy()))


def test_short_run_has_no_funding_yet() -> None:
    m = generate_market(SyntheticConfig(bars=8, symbols=("BTCUSDT",)))
    assert len(m.funding["BTCUSDT"]) == 0
    assert m.funding["BTCUSDT"]["funding_time"].dtype == np.int64
    m = generate_market(SyntheticConfig(bars=9, symbols=("BTCUSDT",)))
    assert m.funding["BTCUSDT"]["funding_time"].tolist() == [
        int(pd.Timestamp("2022-01-01T08:00:00Z").value // 1_000_000)
    ]


def test_unknown_symbols_get_a_deterministic_profile() -> None:
    prof = symbol_profile("FOOUSDT")
    assert prof == symbol_profile("FOOUSDT")
    assert prof != symbol_profile("BARUSDT")
    assert 0.1 <= prof.price0 <= 1000
    assert 0 < prof.centre < prof.price0
    m = generate_market(SyntheticConfig(symbols=("FOOUSDT", "BARUSDT"), bars=500))
    for sym in m.spot:
        check_candles(m.spot[sym])
    # without BTCUSDT the first symbol leads: BARUSDT loads on FOOUSDT
    r_foo, r_bar = log_returns(m.spot["FOOUSDT"]), log_returns(m.spot["BARUSDT"])
    assert np.corrcoef(r_foo, r_bar)[0, 1] > 0.3


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"bars": 1}, "bars 1"),
    ({"symbols": ()}, "at least one symbol"),
    ({"symbols": ("BTCUSDT", "BTCUSDT")}, "listed twice"),
    ({"symbols": ("btc-usdt",)}, "'btc-usdt'"),
    ({"seed": -1}, "seed -1"),
    ({"start": "yesterday"}, "'yesterday'"),
    ({"start": "2022-01-01T00:00:00"}, "ending in 'Z'"),
    ({"start": "2022-01-01T00:30:00Z"}, "not aligned"),
    ({"timeframe": "1h"}, "expected a Timeframe"),
    ({"params": ModelParams(follow_prob=1.5)}, "params.follow_prob"),
    ({"params": ModelParams(trend_duration_h=0.5)}, "params.trend_duration_h"),
    ({"params": ModelParams(garch_alpha=0.2, garch_beta=0.85)}, "garch_alpha + garch_beta"),
    ({"params": ModelParams(student_df=2.0)}, "student_df"),
    ({"params": ModelParams(vol_mult=(0.5, 0.0, 1.0))}, "vol_mult"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_CONFIGS)
def test_bad_config_is_a_one_line_config_error(changes: dict[str, Any], message: str) -> None:
    cfg = dataclasses.replace(SyntheticConfig(bars=10), **changes)
    with pytest.raises(ConfigError) as err:
        generate_market(cfg)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    bars=st.integers(2, 300),
    tf=st.sampled_from([Timeframe.M5, Timeframe.H1, Timeframe.H8, Timeframe.D1]),
)
def test_property_invariants_hold_for_any_small_config(seed: int, bars: int, tf: Timeframe) -> None:
    cfg = SyntheticConfig(seed=seed, bars=bars, timeframe=tf, symbols=("BTCUSDT", "SOLUSDT"))
    m = generate_market(cfg)
    for sym in cfg.symbols:
        check_candles(m.spot[sym])
        check_candles(m.perp[sym])
        assert np.all(np.diff(m.spot[sym]["open_time"].to_numpy()) == tf.ms)
        assert np.isin(m.regimes[sym], [REGIME_DOWN, REGIME_RANGE, REGIME_UP]).all()
