"""The built-in features (:mod:`atra.core.features.registry`): one function per feature and the
table that names them, with family, warm-up, inputs and definition. The sentiment and on-chain
features on external daily series are in :mod:`atra.core.features.external`."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pandas as pd
import talib

from atra.core.features.external import external_specs
from atra.core.features.frame import FeatureFrame, FeatureSpec, roll, shift, to_f64
from atra.core.features.sources import (
    F64,
    FUNDING_MEAN_WINDOWS,
    Family,
    align_by_open_time,
    candle_arrays,
    funding_asof,
)
from atra.core.types import Market

__all__ = ["builtin_specs"]


# array helpers -------------------------------------------------------------------------


def _div(num: F64, den: F64) -> F64:
    """num / den, NaN where den is 0 or NaN (undefined, never +-inf)."""
    ok = np.isfinite(den) & (den != 0)
    out: F64 = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=ok)
    return out


def _windows(y: F64, w: int) -> npt.NDArray[np.float64]:
    """The trailing windows of w values ending at bars w-1 .. n-1 (a view, shape (n-w+1, w))."""
    return np.lib.stride_tricks.sliding_window_view(y, w)


def _centred_time(w: int) -> F64:
    t = np.arange(w, dtype=np.float64)
    return np.asarray(t - t.mean(), dtype=np.float64)


def _window_dot(y: F64, weights: F64) -> F64:
    """sum_k weights[k] * y[t-w+1+k] at every bar t (NaN for t < w-1). Window-local: the
    result does not depend on where the history starts (no running sums)."""
    w = weights.size
    out = np.full(y.shape, np.nan)
    if y.size >= w:
        out[w - 1 :] = (_windows(y, w) * weights).sum(axis=1)
    return out


def _ols_slope(y: F64, w: int) -> F64:
    """Least-squares slope of y on 0..w-1 over each trailing window of w values (per bar)."""
    tc = _centred_time(w)
    return _window_dot(y, tc / float((tc * tc).sum()))


def _cumulative_ols_slope(step: F64, w: int) -> F64:
    """OLS slope of the running sum of ``step`` over w bars, from the last w-1 steps only.

    With S_k = S_0 + sum_{j<=k} step_j and centred times c_k (sum c_k = 0), the slope is
    sum_k c_k S_k / sum c_k^2 = sum_j step_j * (sum_{k>=j} c_k) / sum c_k^2: the offset S_0
    (the whole earlier history) cancels exactly instead of numerically.
    """
    tc = _centred_time(w)
    tail = np.cumsum(tc[::-1])[::-1]  # tail[j] = sum_{k>=j} c_k; tail[0] = 0
    tail[0] = 0.0
    return _window_dot(step, tail / float((tc * tc).sum()))


# feature functions ---------------------------------------------------------------------
def _ret(h: int) -> Callable[[FeatureFrame], F64]:
    return lambda ff: ff.logret(h)


def _rv(w: int) -> Callable[[FeatureFrame], F64]:
    return lambda ff: ff.rv(w)


def _atr_pct(ff: FeatureFrame) -> F64:
    atr = ff.per_segment(lambda s: talib.ATR(ff.high[s], ff.low[s], ff.close[s], timeperiod=14))
    return atr / ff.close


def _roc_12(ff: FeatureFrame) -> F64:
    return ff.mask(ff.close / shift(ff.close, 12) - 1.0, 12)


def _mom_vadj_24(ff: FeatureFrame) -> F64:
    return _div(ff.logret(24), ff.rv(168) * math.sqrt(24.0))


def _rsi_14(ff: FeatureFrame) -> F64:
    return ff.per_segment(lambda s: talib.RSI(ff.close[s], timeperiod=14))


def _ema_dist(n: int) -> Callable[[FeatureFrame], F64]:
    return lambda ff: ff.log_close() - np.log(ff.ema(n))


def _ema_slope_50(ff: FeatureFrame) -> F64:
    le = np.log(ff.ema(50))
    return ff.mask((le - shift(le, 5)) / 5.0, 54)


def _trend_slope_48(ff: FeatureFrame) -> F64:
    return ff.cached("trend_slope_48", lambda: ff.mask(_ols_slope(ff.log_close(), 48), 47))


def _trend_r2_48(ff: FeatureFrame) -> F64:
    slope = _trend_slope_48(ff)
    stt = float((_centred_time(48) ** 2).sum())
    syy = np.full(len(ff), np.nan)
    if len(ff) >= 48:
        windows = _windows(ff.log_close(), 48)
        syy[47:] = ((windows - windows.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return ff.mask(np.minimum(_div(slope * slope * stt, syy), 1.0), 47)


def _er_24(ff: FeatureFrame) -> F64:
    path = to_f64(roll(np.abs(np.diff(ff.close, prepend=np.nan)), 24).sum())
    return ff.mask(_div(np.abs(ff.close - shift(ff.close, 24)), path), 24)


def _vol_ratio_24(ff: FeatureFrame) -> F64:
    return ff.mask(_div(ff.volume, to_f64(roll(ff.volume, 24).mean())), 23)


def _vol_z_168(ff: FeatureFrame) -> F64:
    window = roll(ff.volume, 168)
    return ff.mask(_div(ff.volume - to_f64(window.mean()), to_f64(window.std())), 167)


def _vwap_dist_24(ff: FeatureFrame) -> F64:
    typical = (ff.high + ff.low + ff.close) / 3.0
    vwap = _div(to_f64(roll(typical * ff.volume, 24).sum()), to_f64(roll(ff.volume, 24).sum()))
    return ff.mask(ff.log_close() - np.log(vwap), 23)


def _obv_slope_24(ff: FeatureFrame) -> F64:
    step = np.sign(np.diff(ff.close, prepend=ff.close[:1])) * ff.volume
    slope = _cumulative_ols_slope(step, 24)
    return ff.mask(_div(slope, to_f64(roll(ff.volume, 24).mean())), 23)


def _funding(key: str) -> Callable[[FeatureFrame], F64]:
    def compute(ff: FeatureFrame) -> F64:
        if f"funding:{key}" not in ff._cache:
            assert ff.ctx.funding is not None
            joined = funding_asof(
                ff.ctx.funding,
                ff.close_ms,
                max_interval_ms=ff.ctx.funding_max_interval_ms,
                lag_ms=ff.ctx.funding_lag_ms,
            )
            ff._cache.update({f"funding:{k}": v for k, v in joined.items()})
        return ff._cache[f"funding:{key}"]

    return compute


def _basis(ff: FeatureFrame) -> F64:
    def make() -> F64:
        assert ff.ctx.counterpart is not None
        other_time, other = candle_arrays(ff.ctx.counterpart, "counterpart")
        cp = align_by_open_time(other_time, np.log(other["close"]), ff.open_time)
        if ff.ctx.counterpart_market is Market.PERP:
            return cp - ff.log_close()
        return ff.log_close() - cp

    return ff.cached("basis", make)


def _basis_mean_24(ff: FeatureFrame) -> F64:
    return ff.mask(to_f64(roll(_basis(ff), 24).mean()), 23)


def _btc(fn: Callable[[FeatureFrame], F64]) -> Callable[[FeatureFrame], F64]:
    return lambda ff: ff.btc_aligned(fn(ff.btc_frame()))


def _regime(ff: FeatureFrame) -> F64:
    return np.asarray(np.sign(np.log(ff.ema(50)) - np.log(ff.ema(200))), dtype=np.float64)


def _vol_regime(ff: FeatureFrame) -> F64:
    return _div(ff.rv(24), ff.rv(720))


def _btc_pair(ff: FeatureFrame) -> tuple[pd.Series, pd.Series]:
    mine = ff.logret(1)
    btc = ff.btc_aligned(ff.btc_frame().logret(1))
    both = np.isfinite(mine) & np.isfinite(btc)
    return pd.Series(np.where(both, mine, np.nan)), pd.Series(np.where(both, btc, np.nan))


def _btc_corr_168(ff: FeatureFrame) -> F64:
    a, b = _btc_pair(ff)
    cov = to_f64(a.rolling(168, min_periods=168).cov(b))
    var_a = to_f64(a.rolling(168, min_periods=168).var())
    var_b = to_f64(b.rolling(168, min_periods=168).var())
    return ff.mask(np.clip(_div(cov, np.sqrt(var_a * var_b)), -1.0, 1.0), 168)


def _btc_beta_168(ff: FeatureFrame) -> F64:
    a, b = _btc_pair(ff)
    cov = to_f64(a.rolling(168, min_periods=168).cov(b))
    return ff.mask(_div(cov, to_f64(b.rolling(168, min_periods=168).var())), 168)


def builtin_specs() -> dict[str, FeatureSpec]:
    """The built-in features by name, in output column order."""
    p, v, f, x = Family.PRICE, Family.VOLUME, Family.FUNDAMENTAL, Family.CROSS_ASSET
    rows: list[tuple[str, Family, int, Callable[[FeatureFrame], F64], tuple[str, ...], str]] = []
    # name, family, warm-up bars, function, inputs beside the candles, definition
    for h in (1, 4, 24, 168):
        rows.append((f"ret_{h}", p, h, _ret(h), (), f"log return: ln(close_t / close_t-{h})"))
    for w in (24, 168):
        rows.append(
            (f"rv_{w}", p, w, _rv(w), (), f"std (ddof 1) of the last {w} 1-bar log returns")
        )
    # fmt: off
    rows += [
        ("atr_pct_14", p, 14, _atr_pct, (), "Wilder ATR(14) (TA-Lib, SMA-seeded) / close"),
        ("roc_12", p, 12, _roc_12, (), "rate of change: close_t / close_t-12 - 1"),
        ("mom_vadj_24", p, 168, _mom_vadj_24, (),
         "vol-adjusted momentum: ret_24 / (rv_168 * sqrt(24))"),
        ("rsi_14", p, 14, _rsi_14, (), "Wilder RSI(14) of close (TA-Lib), 0..100"),
    ]
    rows += [
        (f"ema_dist_{n}", p, n - 1, _ema_dist(n), (),
         f"ln(close / EMA{n}); EMA alpha 2/({n}+1), seeded with the SMA of {n} closes")
        for n in (20, 50, 200)
    ]
    rows += [
        ("ema_slope_50", p, 54, _ema_slope_50, (), "(ln EMA50_t - ln EMA50_t-5) / 5 per bar"),
        ("trend_slope_48", p, 47, _trend_slope_48, (),
         "OLS slope of ln close on time over the last 48 bars, per bar"),
        ("trend_r2_48", p, 47, _trend_r2_48, (), "R^2 of that 48-bar regression"),
        ("er_24", p, 24, _er_24, (),
         "Kaufman efficiency ratio: |close_t - close_t-24| / sum of the 24 |1-bar changes|"),
        ("vol_ratio_24", v, 23, _vol_ratio_24, (),
         "volume_t / mean volume of the last 24 bars (t included)"),
        ("vol_z_168", v, 167, _vol_z_168, (),
         "(volume_t - mean) / std (ddof 1) of the last 168 volumes"),
        ("vwap_dist_24", v, 23, _vwap_dist_24, (),
         "ln(close / VWAP_24), VWAP = sum(typical*volume)/sum(volume), typical=(h+l+c)/3"),
        ("obv_slope_24", v, 23, _obv_slope_24, (),
         "OLS slope of OBV over the last 24 bars (per bar) / their mean volume"),
        ("funding_rate", f, 0, _funding("rate"), ("funding",),
         "last funding rate with funding_time + lag < bar close, at most max interval old"),
    ]
    rows += [
        (f"funding_mean_{k}", f, 0, _funding(f"mean_{k}"), ("funding",),
         f"mean of the last {k} usable funding rates (NaN if a gap lies between them)")
        for k in FUNDING_MEAN_WINDOWS
    ]
    rows += [
        ("basis", f, 0, _basis, ("counterpart",),
         "perp-spot basis: ln(perp close / spot close) at the same open_time"),
        ("basis_mean_24", f, 23, _basis_mean_24, ("counterpart",),
         "mean basis over the last 24 bars"),
        ("btc_ret_24", x, 24, _btc(_ret(24)), ("btc",), "BTC ret_24 (BTC bars, same open_time)"),
        ("btc_rv_24", x, 24, _btc(_rv(24)), ("btc",), "BTC rv_24: BTC realised vol, 24 bars"),
        ("btc_trend_200", x, 199, _btc(_ema_dist(200)), ("btc",), "BTC ln(close / EMA200)"),
        ("btc_regime", x, 199, _btc(_regime), ("btc",),
         "sign(BTC EMA50 - BTC EMA200): +1 up-trend, -1 down-trend"),
        ("btc_vol_regime", x, 720, _btc(_vol_regime), ("btc",),
         "BTC rv_24 / rv_720: above 1 when BTC is more volatile than usual"),
        ("btc_corr_168", x, 168, _btc_corr_168, ("btc",),
         "correlation of 1-bar log returns with BTC's over 168 bars (both present)"),
        ("btc_beta_168", x, 168, _btc_beta_168, ("btc",),
         "beta to BTC: cov(r, r_btc) / var(r_btc) over 168 bars"),
    ]
    # fmt: on
    specs = {
        name: FeatureSpec(name, fam, definition, warmup, ("candles", *extra), fn)
        for name, fam, warmup, fn, extra, definition in rows
    }
    return {**specs, **external_specs()}
