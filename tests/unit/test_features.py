"""Feature registry and definitions: each feature against a slow plain-Python reference,
gap handling (windows never span a gap), side-data alignment and one-line errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from atra.core.features.external import SERIES
from atra.core.features.registry import (
    HISTORY_BARS,
    Family,
    FeatureContext,
    FeatureFrame,
    FeatureSpec,
    PointInTimeSeries,
    compute_features,
    feature_registry,
    feature_specs,
    features_by_family,
)
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

H = 3_600_000
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC


def make_candles(n: int, seed: int, drop: tuple[int, ...] = (), start: int = T0) -> pd.DataFrame:
    """A random-walk hourly OHLCV frame of ``n`` bar slots, without the slots in ``drop``."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.004, n)))
    volume = rng.lognormal(3.0, 0.6, n)
    frame = pd.DataFrame(
        {
            "open_time": start + np.arange(n, dtype=np.int64) * H,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
    keep = np.ones(n, dtype=bool)
    keep[list(drop)] = False
    return frame[keep].reset_index(drop=True)


# slow references ----------------------------------------------------------------------------
def ref_ema(x: list[float], n: int) -> list[float]:
    out = [math.nan] * len(x)
    if len(x) < n:
        return out
    out[n - 1] = sum(x[:n]) / n
    a = 2.0 / (n + 1)
    for t in range(n, len(x)):
        out[t] = a * x[t] + (1 - a) * out[t - 1]
    return out


def ref_atr(h: list[float], lo: list[float], c: list[float], n: int) -> list[float]:
    tr = [math.nan] + [
        max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, len(c))
    ]
    out = [math.nan] * len(c)
    out[n] = sum(tr[1 : n + 1]) / n
    for t in range(n + 1, len(c)):
        out[t] = (out[t - 1] * (n - 1) + tr[t]) / n
    return out


def ref_rsi(c: list[float], n: int) -> list[float]:
    d = [c[t] - c[t - 1] for t in range(1, len(c))]
    gain = [max(x, 0.0) for x in d]
    loss = [max(-x, 0.0) for x in d]
    out = [math.nan] * len(c)
    ag, al = sum(gain[:n]) / n, sum(loss[:n]) / n
    out[n] = 100 - 100 / (1 + ag / al)
    for t in range(n + 1, len(c)):
        ag = (ag * (n - 1) + gain[t - 1]) / n
        al = (al * (n - 1) + loss[t - 1]) / n
        out[t] = 100 - 100 / (1 + ag / al)
    return out


def ref_window(x: list[float], w: int, fn: Callable[[list[float]], float]) -> list[float]:
    return [fn(x[t - w + 1 : t + 1]) if t >= w - 1 else math.nan for t in range(len(x))]


def slope(y: list[float]) -> float:
    return float(np.polyfit(np.arange(len(y)), y, 1)[0])


def r2(y: list[float]) -> float:
    return float(np.corrcoef(np.arange(len(y)), y)[0, 1] ** 2)


def std(v: list[float]) -> float:
    return float(np.std(v, ddof=1))


def mean(v: list[float]) -> float:
    return sum(v) / len(v)


def references(c: pd.DataFrame) -> dict[str, list[float]]:
    """Every candle feature of a gap-free frame, written as loops over the definitions."""
    cl, hi, lo, vo = (c[k].tolist() for k in ("close", "high", "low", "volume"))
    n = len(cl)
    lc = [math.log(x) for x in cl]
    ret = {
        h: [lc[t] - lc[t - h] if t >= h else math.nan for t in range(n)] for h in (1, 4, 24, 168)
    }
    rv = {w: [math.nan, *ref_window(ret[1][1:], w, std)] for w in (24, 168)}
    ema = {k: ref_ema(cl, k) for k in (20, 50, 200)}
    le50 = [math.log(x) for x in ema[50]]
    obv = [0.0]
    for t in range(1, n):
        obv.append(obv[-1] + float(np.sign(cl[t] - cl[t - 1])) * vo[t])
    tpv = [(hi[t] + lo[t] + cl[t]) / 3 * vo[t] for t in range(n)]
    out: dict[str, list[float]] = {f"ret_{h}": v for h, v in ret.items()}
    out |= {f"rv_{w}": v for w, v in rv.items()}
    out["atr_pct_14"] = [a / x for a, x in zip(ref_atr(hi, lo, cl, 14), cl, strict=True)]
    out["roc_12"] = [cl[t] / cl[t - 12] - 1 if t >= 12 else math.nan for t in range(n)]
    out["mom_vadj_24"] = [ret[24][t] / (rv[168][t] * math.sqrt(24)) for t in range(n)]
    out["rsi_14"] = ref_rsi(cl, 14)
    out |= {f"ema_dist_{k}": [lc[t] - math.log(ema[k][t]) for t in range(n)] for k in ema}
    out["ema_slope_50"] = [(le50[t] - le50[t - 5]) / 5 if t >= 5 else math.nan for t in range(n)]
    out["trend_slope_48"] = ref_window(lc, 48, slope)
    out["trend_r2_48"] = ref_window(lc, 48, r2)
    out["er_24"] = [
        abs(cl[t] - cl[t - 24]) / sum(abs(cl[i] - cl[i - 1]) for i in range(t - 23, t + 1))
        if t >= 24
        else math.nan
        for t in range(n)
    ]
    out["vol_ratio_24"] = [v / m for v, m in zip(vo, ref_window(vo, 24, mean), strict=True)]
    out["vol_z_168"] = [
        (vo[t] - mean(vo[t - 167 : t + 1])) / std(vo[t - 167 : t + 1]) if t >= 167 else math.nan
        for t in range(n)
    ]
    out["vwap_dist_24"] = [
        lc[t] - math.log(sum(tpv[t - 23 : t + 1]) / sum(vo[t - 23 : t + 1]))
        if t >= 23
        else math.nan
        for t in range(n)
    ]
    out["obv_slope_24"] = [
        s / m for s, m in zip(ref_window(obv, 24, slope), ref_window(vo, 24, mean), strict=True)
    ]
    return out


CANDLE_ONLY = [s.name for s in feature_registry().values() if s.inputs == ("candles",)]


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return make_candles(400, seed=1)


@pytest.fixture(scope="module")
def computed(candles: pd.DataFrame) -> pd.DataFrame:
    return compute_features(candles)


@pytest.fixture(scope="module")
def expected(candles: pd.DataFrame) -> dict[str, list[float]]:
    return references(candles)


# registry -----------------------------------------------------------------------------------
def test_registry_entries_are_complete() -> None:
    reg = feature_registry()
    known_inputs = {"candles", "funding", "counterpart", "btc"}
    known_inputs |= {f"series:{name}" for name in SERIES}
    for name, spec in reg.items():
        assert spec.name == name
        assert spec.definition
        assert spec.warmup_bars >= 0
        assert "candles" in spec.inputs
        assert set(spec.inputs) <= known_inputs
    assert {s.family for s in reg.values()} == set(Family)
    assert {s.name for s in features_by_family("alternative")} == {
        "fg_level",
        "fg_chg_1d",
        "fg_chg_7d",
        "fg_z_30d",
        "fg_extreme_fear",
        "fg_extreme_greed",
    }
    assert sum(len(features_by_family(f)) for f in Family) == len(reg)
    assert [s.name for s in features_by_family("volume")] == [
        "vol_ratio_24",
        "vol_z_168",
        "vwap_dist_24",
        "obv_slope_24",
    ]
    with pytest.raises(TypeError):
        reg["x"] = reg["ret_1"]  # type: ignore[index]


def test_candle_features_are_covered_by_the_references(expected: dict[str, list[float]]) -> None:
    assert sorted(expected) == sorted(CANDLE_ONLY)


@pytest.mark.parametrize("name", CANDLE_ONLY)
def test_feature_matches_reference(
    name: str, computed: pd.DataFrame, expected: dict[str, list[float]]
) -> None:
    got = computed[name].to_numpy()
    want = np.array(expected[name])
    warmup = feature_registry()[name].warmup_bars
    assert np.isnan(got[:warmup]).all()
    assert np.isfinite(got[warmup:]).all()
    np.testing.assert_allclose(got[warmup:], want[warmup:], rtol=1e-8, atol=1e-12)


def test_output_frame_shape(candles: pd.DataFrame, computed: pd.DataFrame) -> None:
    assert list(computed.columns) == ["open_time", *CANDLE_ONLY]
    assert computed.index.equals(candles.index)
    assert computed["open_time"].dtype == np.int64
    assert (computed[CANDLE_ONLY].dtypes == np.float64).all()
    shifted = candles.set_axis(candles.index + 1000)
    assert compute_features(shifted, names=["ret_1"]).index.equals(shifted.index)


def test_names_select_and_order(candles: pd.DataFrame, computed: pd.DataFrame) -> None:
    out = compute_features(candles, names=["rsi_14", "ret_4"])
    assert list(out.columns) == ["open_time", "rsi_14", "ret_4"]
    pd.testing.assert_series_equal(out["rsi_14"], computed["rsi_14"])


def test_empty_frame() -> None:
    empty = make_candles(3, seed=0).iloc[:0]
    out = compute_features(empty, FeatureContext(timeframe=Timeframe.H1))
    assert len(out) == 0
    assert list(out.columns) == ["open_time", *CANDLE_ONLY]


# gaps ---------------------------------------------------------------------------------------
GAPPED_DROP = (*range(420, 423), 800)


@pytest.fixture(scope="module")
def gapped() -> pd.DataFrame:
    return make_candles(1300, seed=7, drop=GAPPED_DROP)


def test_segments_and_bars_since_gap(gapped: pd.DataFrame) -> None:
    ff = FeatureFrame(gapped, FeatureContext())
    assert ff.bar_ms == H
    assert [(s.start, s.stop) for s in ff.segments()] == [(0, 420), (420, 797), (797, 1296)]
    assert ff.bars_since_gap[[0, 419, 420, 421, 797]].tolist() == [0, 419, 0, 1, 0]


def test_windows_never_span_a_gap(gapped: pd.DataFrame) -> None:
    """A gapped frame gives exactly the features of its segments computed one by one."""
    full = compute_features(gapped)
    ff = FeatureFrame(gapped, FeatureContext())
    parts = [
        compute_features(gapped.iloc[s], FeatureContext(timeframe=Timeframe.H1))
        for s in ff.segments()
    ]
    pd.testing.assert_frame_equal(full, pd.concat(parts), rtol=1e-9, atol=1e-12)
    for name in CANDLE_ONLY:
        warm = ff.bars_since_gap >= feature_registry()[name].warmup_bars
        np.testing.assert_array_equal(np.isfinite(full[name].to_numpy()), warm, err_msg=name)


def test_features_do_not_depend_on_the_history_start() -> None:
    """Live parity: after HISTORY_BARS bars a shorter history gives the backtest's values."""
    long = make_candles(400 + HISTORY_BARS + 300, seed=9)
    full = compute_features(long).iloc[400 + HISTORY_BARS :]
    short = compute_features(long.iloc[400:]).iloc[HISTORY_BARS:]
    pd.testing.assert_frame_equal(short, full, rtol=1e-6, atol=1e-7)
    exact = [n for n in CANDLE_ONLY if not n.startswith(("ema_", "rsi", "atr"))]
    pd.testing.assert_frame_equal(short[exact], full[exact], rtol=1e-9, atol=1e-12)


# side data ----------------------------------------------------------------------------------
def test_basis_and_its_sign(candles: pd.DataFrame) -> None:
    perp = candles.copy()
    perp["close"] = candles["close"] * 1.001
    perp = perp.drop(index=[100])
    out = compute_features(
        candles, FeatureContext(counterpart=perp), names=["basis", "basis_mean_24"]
    )
    basis = out["basis"].to_numpy()
    assert np.isnan(basis[100])
    np.testing.assert_allclose(np.delete(basis, 100), math.log(1.001), rtol=1e-9)
    mean24 = out["basis_mean_24"].to_numpy()
    assert np.isnan(mean24[:23]).all()
    assert np.isnan(mean24[100:124]).all()  # every window holding the missing bar
    assert np.isfinite(mean24[124:]).all()
    ctx = FeatureContext(counterpart=candles, counterpart_market=Market.SPOT)
    flipped = compute_features(perp.reset_index(drop=True), ctx, names=["basis"])
    np.testing.assert_allclose(flipped["basis"].dropna(), math.log(1.001), rtol=1e-9)


def test_funding_features_use_bar_close_times(candles: pd.DataFrame) -> None:
    times = T0 + np.arange(0, 400, 8, dtype=np.int64) * H
    funding = pd.DataFrame({"funding_time": times, "funding_rate": np.arange(times.size) * 1e-5})
    out = compute_features(candles, FeatureContext(funding=funding))
    rate = out["funding_rate"].to_numpy()
    # bar t (open T0 + t h) closes at T0 + (t+1) h and sees events strictly before that
    want = np.floor(np.arange(400) / 8) * 1e-5
    np.testing.assert_allclose(rate, want, rtol=1e-12, atol=1e-15)
    mean3 = out["funding_mean_3"].to_numpy()
    assert np.isnan(mean3[:16]).all()
    np.testing.assert_allclose(mean3[16:], want[16:] - 1e-5, rtol=1e-9)
    assert out.columns.tolist()[-3:] == ["funding_rate", "funding_mean_3", "funding_mean_21"]


def test_btc_features_align_by_open_time_and_missing_bars_are_nan() -> None:
    main = make_candles(1000, seed=3, drop=(500,))
    btc = make_candles(1000, seed=4, drop=(100, 101))
    out = compute_features(main, FeatureContext(btc=btc))
    assert [c for c in out.columns if c.startswith("btc_")] == [
        s.name for s in features_by_family(Family.CROSS_ASSET)
    ]
    m_t, b_t = main.open_time.to_numpy(), btc.open_time.to_numpy()
    b_lc = dict(zip(b_t.tolist(), np.log(btc.close).tolist(), strict=True))
    m_lc = dict(zip(m_t.tolist(), np.log(main.close).tolist(), strict=True))
    btc_set = set(b_t.tolist())

    def btc_ret(t: int, h: int) -> float:
        if all(t - k * H in btc_set for k in range(h + 1)):
            return float(b_lc[t] - b_lc[t - h * H])
        return math.nan

    want = np.array([btc_ret(t, 24) for t in m_t.tolist()])
    np.testing.assert_allclose(out["btc_ret_24"].to_numpy(), want, rtol=1e-9)
    assert np.isnan(out["btc_ret_24"].to_numpy()[m_t == T0 + 100 * H]).all()

    def pair_corr(i: int) -> tuple[float, float]:
        ts = m_t[i - 167 : i + 1]
        if i < 168 or ts[0] - m_t[i - 168] != H or ts[-1] - ts[0] != 167 * H:
            return math.nan, math.nan
        if not all(t in btc_set and t - H in btc_set for t in ts.tolist()):
            return math.nan, math.nan
        a = [m_lc[t] - m_lc[t - H] for t in ts.tolist()]
        b = [b_lc[t] - b_lc[t - H] for t in ts.tolist()]
        cov = float(np.cov(a, b)[0, 1])
        return float(np.corrcoef(a, b)[0, 1]), cov / float(np.var(b, ddof=1))

    ref = np.array([pair_corr(i) for i in range(len(main))])
    np.testing.assert_allclose(out["btc_corr_168"].to_numpy(), ref[:, 0], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(out["btc_beta_168"].to_numpy(), ref[:, 1], rtol=1e-7, atol=1e-10)
    regime = out["btc_regime"].dropna()
    assert set(regime.unique()) <= {-1.0, 0.0, 1.0}
    # BTC's second segment starts at slot 102: 720 bars of warm-up -> first value at slot 822
    vol_regime = out["btc_vol_regime"].to_numpy()
    np.testing.assert_array_equal(np.isfinite(vol_regime), m_t >= T0 + 822 * H)


def test_external_series_features(candles: pd.DataFrame) -> None:
    frame = pd.DataFrame(
        {"time": T0 + np.arange(0, 400, 24, dtype=np.int64) * H, "fg": np.arange(17.0)}
    )
    series = PointInTimeSeries("sent", frame, lag_ms=2 * H, max_age_ms=24 * H, change_bars=24)
    ctx = FeatureContext(series=(series,))
    specs = feature_specs(ctx)
    assert specs["sent_fg"].family is Family.ALTERNATIVE
    assert specs["sent_fg_chg24"].inputs == ("candles", "series:sent")
    out = compute_features(candles, ctx, names=["sent_fg", "sent_fg_chg24"])
    value = out["sent_fg"].to_numpy()
    # day d's value (time 24d h) is available at 24d + 2 h: bar t (closing at t + 1 h) uses
    # it iff 24d + 2 < t + 1, i.e. from bar 24d + 2 on (bar 24d + 1 closes exactly at 24d + 2)
    want = np.array([(t - 2) // 24 if t >= 2 else math.nan for t in range(400)])
    np.testing.assert_array_equal(value, want)
    chg = out["sent_fg_chg24"].to_numpy()
    np.testing.assert_array_equal(chg[26:], 1.0)
    assert np.isnan(chg[:26]).all()
    with pytest.raises(ConfigError, match="already exists"):
        feature_specs(FeatureContext(series=(series, series)))


# errors -------------------------------------------------------------------------------------
def test_input_errors(candles: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="missing column"):
        compute_features(candles.drop(columns=["volume"]))
    with pytest.raises(DataError, match="open_time must be int64"):
        compute_features(candles.assign(open_time=candles.open_time.astype(float)))
    with pytest.raises(DataError, match="strictly increasing; position 3"):
        compute_features(candles.assign(open_time=candles.open_time.where(candles.index != 3, T0)))
    bad = candles.copy()
    bad.loc[5, "low"] = -1.0
    with pytest.raises(DataError, match=r"position 5 .* finite prices > 0"):
        compute_features(bad)
    with pytest.raises(DataError, match=r"position 2 is 5400000 ms after .* not a multiple"):
        compute_features(candles.iloc[:3].assign(open_time=[T0, T0 + H, T0 + H + 90 * 60_000]))
    with pytest.raises(DataError, match="7 ms is no bar size"):
        compute_features(candles.iloc[:2].assign(open_time=[T0, T0 + 7]))
    with pytest.raises(DataError, match="fewer than 2 rows"):
        compute_features(candles.iloc[:1])
    shifted_time = candles.open_time.to_numpy().copy()
    shifted_time[3] += 60_000
    btc = candles.assign(open_time=shifted_time)
    with pytest.raises(DataError, match="btc: position 3 is 3660000 ms after"):
        compute_features(candles, FeatureContext(btc=btc), names=["btc_ret_24"])
    one = compute_features(candles.iloc[:1], FeatureContext(timeframe=Timeframe.H1))
    assert one[CANDLE_ONLY].isna().all().all()


def test_name_errors(candles: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="unknown feature"):
        compute_features(candles, names=["nope"])
    with pytest.raises(ConfigError, match="unique"):
        compute_features(candles, names=["ret_1", "ret_1"])
    with pytest.raises(ConfigError, match="'funding_rate' needs funding"):
        compute_features(candles, names=["funding_rate"])


def test_custom_registry_and_shape_check(candles: pd.DataFrame) -> None:
    def twice(ff: FeatureFrame) -> np.ndarray:
        return np.concatenate([ff.close, ff.close])

    spec = FeatureSpec("bad", Family.PRICE, "wrong length", 0, ("candles",), twice)
    with pytest.raises(ConfigError, match="'bad' returned shape"):
        compute_features(candles, registry={"bad": spec})
