"""Causal features of OHLCV bars in five families, behind a registry.

Every feature is a named float64 column with a definition in :func:`feature_registry`. All of
them are **causal**: the value at bar t (open time t) uses only bars with open time <= t and
side data known before t's close (rule in :mod:`atra.core.feature_sources`).

**Gaps.** Bars are split into contiguous segments: a new segment starts wherever the
``open_time`` step is longer than one bar. A window never spans a gap: every candle feature
needs ``warmup_bars`` bars of the *same* segment before it (its warm-up restarts after each
gap) and is NaN until then. Recursive indicators (EMA, Wilder ATR / RSI) restart from their
seed in each segment; rolling windows are computed on the whole array and NaN-ed where the
window reaches into the previous segment (identical values, no per-segment Python loop).
Missing side data (a counterpart or BTC bar, an old funding rate) gives NaN, never a
neighbour's value.

Library vs hand-written: EMA, Wilder ATR and RSI are TA-Lib (its SMA-seeded recursions, run
per segment). Rolling statistics use pandas ``rolling`` (min_periods = window); regression
slopes, VWAP, OBV, efficiency ratio and the as-of joins are plain numpy, written here because
TA-Lib has no gap/NaN-aware or point-in-time versions of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import talib

from atra.core.feature_sources import (
    F64,
    FUNDING_MAX_INTERVAL_MS,
    FUNDING_MEAN_WINDOWS,
    I64,
    Family,
    PointInTimeSeries,
    align_by_open_time,
    bar_size_ms,
    candle_arrays,
    funding_asof,
    series_asof,
)
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError

if TYPE_CHECKING:
    from pandas.core.window.rolling import Rolling

__all__ = [
    "HISTORY_BARS",
    "Family",
    "FeatureContext",
    "FeatureFrame",
    "FeatureSpec",
    "PointInTimeSeries",
    "compute_features",
    "feature_registry",
    "feature_specs",
    "features_by_family",
    "series_feature_specs",
]

HISTORY_BARS: Final[int] = 1500
"""Contiguous bars after which no built-in feature depends on where the history starts, to
~1e-6 (the EMA200 / Wilder seeds have decayed; windowed features are exact). A live caller
passes at least this many bars so that its features match a backtest started earlier."""


@dataclass(frozen=True, slots=True, eq=False)
class FeatureContext:
    """Side data for :func:`compute_features`; every field is optional.

    - ``timeframe``: the bar size; inferred from the smallest ``open_time`` step when None
      (pass it for short histories: two bars across a gap would be taken for a longer bar).
    - ``funding``: perp funding history (``funding_time``, ``funding_rate``) of the symbol;
      ``funding_lag_ms`` delays it, ``funding_max_interval_ms`` is the longest regular
      spacing of events (a longer silence is a gap -> NaN).
    - ``counterpart``: candles of the same symbol on the other market, for the basis;
      ``counterpart_market`` is *its* market (default PERP: the main candles are spot).
    - ``btc``: BTCUSDT candles of the same bar size (cross-asset context).
    - ``series``: timestamped external series (open interest, market cap, sentiment, ...).
    """

    timeframe: Timeframe | None = None
    funding: pd.DataFrame | None = None
    funding_lag_ms: int = 0
    funding_max_interval_ms: int = FUNDING_MAX_INTERVAL_MS
    counterpart: pd.DataFrame | None = None
    counterpart_market: Market = Market.PERP
    btc: pd.DataFrame | None = None
    series: tuple[PointInTimeSeries, ...] = ()


class FeatureFrame:
    """One symbol's bars prepared for feature functions (arrays, segments, shared results).

    Public attributes: ``open_time`` (int64 ms), ``open high low close volume`` (float64),
    ``bar_ms``, ``close_ms`` (each bar's close instant = decision time), ``bars_since_gap``
    (0 on the first bar of each contiguous segment), ``ctx``.
    """

    def __init__(self, candles: pd.DataFrame, ctx: FeatureContext, *, what: str = "candles"):
        open_time, arrays = candle_arrays(candles, what)
        self.ctx = ctx
        self.open_time: I64 = open_time
        self.open: F64 = arrays["open"]
        self.high: F64 = arrays["high"]
        self.low: F64 = arrays["low"]
        self.close: F64 = arrays["close"]
        self.volume: F64 = arrays["volume"]
        n = self.close.size
        self.bar_ms = bar_size_ms(self.open_time, ctx.timeframe, what) if n else 0
        self.close_ms: I64 = self.open_time + self.bar_ms
        new_segment = np.ones(n, dtype=bool)
        new_segment[1:] = np.diff(self.open_time) != self.bar_ms
        starts = np.flatnonzero(new_segment)
        self.segment_starts: npt.NDArray[np.intp] = starts
        seg_id = np.cumsum(new_segment) - 1
        self.bars_since_gap: I64 = (np.arange(n) - starts[seg_id]).astype(np.int64)
        self._cache: dict[str, F64] = {}
        self._btc: FeatureFrame | None = None

    def __len__(self) -> int:
        return int(self.close.size)

    def segments(self) -> Iterator[slice]:
        """The contiguous runs of bars, as slices."""
        bounds = [*self.segment_starts.tolist(), len(self)]
        for a, b in itertools.pairwise(bounds):
            yield slice(a, b)

    def mask(self, values: F64, need: int) -> F64:
        """``values`` with NaN where fewer than ``need`` earlier bars of the segment exist."""
        return np.where(self.bars_since_gap >= need, values, np.nan)

    def cached(self, key: str, make: Callable[[], F64]) -> F64:
        """Compute ``make()`` once per frame (EMAs and returns are shared by many features)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def per_segment(self, fn: Callable[[slice], F64]) -> F64:
        """Concatenate ``fn(segment)`` over the segments: recursions restart after gaps."""
        out = np.full(len(self), np.nan)
        for seg in self.segments():
            out[seg] = fn(seg)
        return out

    # shared building blocks ------------------------------------------------------------
    def log_close(self) -> F64:
        return self.cached("log_close", lambda: np.log(self.close))

    def logret(self, h: int) -> F64:
        """ln(close_t / close_{t-h}) inside a segment, else NaN."""

        def make() -> F64:
            lc = self.log_close()
            return self.mask(lc - _shift(lc, h), h)

        return self.cached(f"ret_{h}", make)

    def rv(self, w: int) -> F64:
        """Sample std (ddof 1) of the last w one-bar log returns."""
        return self.cached(f"rv_{w}", lambda: self.mask(_np(_roll(self.logret(1), w).std()), w))

    def ema(self, n: int) -> F64:
        """TA-Lib EMA(n) of close (seed: SMA of a segment's first n closes), per segment."""
        return self.cached(
            f"ema_{n}", lambda: self.per_segment(lambda s: talib.EMA(self.close[s], timeperiod=n))
        )

    def btc_frame(self) -> FeatureFrame:
        """The BTC candles of the context as their own frame (their own gaps and warm-ups)."""
        if self._btc is None:
            assert self.ctx.btc is not None  # guaranteed by the inputs check
            self._btc = FeatureFrame(
                self.ctx.btc, FeatureContext(timeframe=Timeframe.from_ms(self.bar_ms)), what="btc"
            )
        return self._btc

    def btc_aligned(self, values: F64) -> F64:
        """A BTC-frame array on this frame's bars (exact open_time; missing BTC bar -> NaN)."""
        return align_by_open_time(self.btc_frame().open_time, values, self.open_time)


# array helpers -------------------------------------------------------------------------
def _shift(x: F64, h: int) -> F64:
    out = np.full(x.shape, np.nan)
    if h < x.size:
        out[h:] = x[: x.size - h]
    return out


def _roll(x: F64, w: int) -> Rolling[pd.Series]:
    return pd.Series(x).rolling(w, min_periods=w)


def _np(s: pd.Series) -> F64:
    return np.asarray(s.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


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
    return ff.mask(ff.close / _shift(ff.close, 12) - 1.0, 12)


def _mom_vadj_24(ff: FeatureFrame) -> F64:
    return _div(ff.logret(24), ff.rv(168) * math.sqrt(24.0))


def _rsi_14(ff: FeatureFrame) -> F64:
    return ff.per_segment(lambda s: talib.RSI(ff.close[s], timeperiod=14))


def _ema_dist(n: int) -> Callable[[FeatureFrame], F64]:
    return lambda ff: ff.log_close() - np.log(ff.ema(n))


def _ema_slope_50(ff: FeatureFrame) -> F64:
    le = np.log(ff.ema(50))
    return ff.mask((le - _shift(le, 5)) / 5.0, 54)


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
    path = _np(_roll(np.abs(np.diff(ff.close, prepend=np.nan)), 24).sum())
    return ff.mask(_div(np.abs(ff.close - _shift(ff.close, 24)), path), 24)


def _vol_ratio_24(ff: FeatureFrame) -> F64:
    return ff.mask(_div(ff.volume, _np(_roll(ff.volume, 24).mean())), 23)


def _vol_z_168(ff: FeatureFrame) -> F64:
    roll = _roll(ff.volume, 168)
    return ff.mask(_div(ff.volume - _np(roll.mean()), _np(roll.std())), 167)


def _vwap_dist_24(ff: FeatureFrame) -> F64:
    typical = (ff.high + ff.low + ff.close) / 3.0
    vwap = _div(_np(_roll(typical * ff.volume, 24).sum()), _np(_roll(ff.volume, 24).sum()))
    return ff.mask(ff.log_close() - np.log(vwap), 23)


def _obv_slope_24(ff: FeatureFrame) -> F64:
    step = np.sign(np.diff(ff.close, prepend=ff.close[:1])) * ff.volume
    slope = _cumulative_ols_slope(step, 24)
    return ff.mask(_div(slope, _np(_roll(ff.volume, 24).mean())), 23)


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
    return ff.mask(_np(_roll(_basis(ff), 24).mean()), 23)


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
    cov = _np(a.rolling(168, min_periods=168).cov(b))
    var_a = _np(a.rolling(168, min_periods=168).var())
    var_b = _np(b.rolling(168, min_periods=168).var())
    return ff.mask(np.clip(_div(cov, np.sqrt(var_a * var_b)), -1.0, 1.0), 168)


def _btc_beta_168(ff: FeatureFrame) -> F64:
    a, b = _btc_pair(ff)
    cov = _np(a.rolling(168, min_periods=168).cov(b))
    return ff.mask(_div(cov, _np(b.rolling(168, min_periods=168).var())), 168)


# registry ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A registered feature: its column name, family, definition, warm-up and inputs.

    ``warmup_bars``: contiguous earlier bars the value needs (NaN before; restarts after a
    gap). For cross-asset features they are BTC bars. ``inputs`` name the data it reads:
    ``candles``, ``funding``, ``counterpart``, ``btc`` or ``series:<name>``.
    """

    name: str
    family: Family
    definition: str
    warmup_bars: int
    inputs: tuple[str, ...]
    compute: Callable[[FeatureFrame], F64]


def _build_registry() -> dict[str, FeatureSpec]:
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
    return {
        name: FeatureSpec(name, fam, definition, warmup, ("candles", *extra), fn)
        for name, fam, warmup, fn, extra, definition in rows
    }


_REGISTRY: Final[dict[str, FeatureSpec]] = _build_registry()


def feature_registry() -> Mapping[str, FeatureSpec]:
    """The built-in features by name (read-only), in output column order."""
    return MappingProxyType(_REGISTRY)


def features_by_family(
    family: Family | str, registry: Mapping[str, FeatureSpec] | None = None
) -> list[FeatureSpec]:
    """The features of one family, in registry order."""
    fam = Family(family)
    return [s for s in (_REGISTRY if registry is None else registry).values() if s.family is fam]


def _series_value(name: str, column: str) -> Callable[[FeatureFrame], F64]:
    def compute(ff: FeatureFrame) -> F64:
        series = next(s for s in ff.ctx.series if s.name == name)
        return ff.cached(
            f"series:{name}:{column}", lambda: series_asof(series, ff.close_ms)[column]
        )

    return compute


def _series_change(name: str, column: str, k: int) -> Callable[[FeatureFrame], F64]:
    value = _series_value(name, column)

    def compute(ff: FeatureFrame) -> F64:
        x = value(ff)
        return ff.mask(x - _shift(x, k), k)

    return compute


def series_feature_specs(series: PointInTimeSeries) -> list[FeatureSpec]:
    """The features of one external series: its usable value and its change, per column."""
    specs = []
    src = f"series:{series.name}"
    lag_h = series.lag_ms / 3_600_000
    for col in series.value_columns:
        base = f"{series.name}_{col}"
        specs.append(
            FeatureSpec(
                base,
                series.family,
                f"{col} of series {series.name}: last value with time + {lag_h:g} h < bar close",
                0,
                ("candles", src),
                _series_value(series.name, col),
            )
        )
        k = series.change_bars
        specs.append(
            FeatureSpec(
                f"{base}_chg{k}",
                series.family,
                f"{base}_t - {base}_t-{k} (change over {k} bars)",
                k,
                ("candles", src),
                _series_change(series.name, col, k),
            )
        )
    return specs


def feature_specs(
    ctx: FeatureContext | None = None, registry: Mapping[str, FeatureSpec] | None = None
) -> dict[str, FeatureSpec]:
    """The registry plus the features of the context's external series, by name."""
    out = dict(_REGISTRY if registry is None else registry)
    for series in (ctx or FeatureContext()).series:
        for spec in series_feature_specs(series):
            if spec.name in out:
                raise ConfigError(f"series {series.name!r}: feature {spec.name!r} already exists")
            out[spec.name] = spec
    return out


def _available_inputs(ctx: FeatureContext) -> set[str]:
    have = {"candles"}
    for key, value in (
        ("funding", ctx.funding),
        ("counterpart", ctx.counterpart),
        ("btc", ctx.btc),
    ):
        if value is not None:
            have.add(key)
    have.update(f"series:{s.name}" for s in ctx.series)
    return have


def compute_features(
    candles: pd.DataFrame,
    ctx: FeatureContext | None = None,
    names: Sequence[str] | None = None,
    *,
    registry: Mapping[str, FeatureSpec] | None = None,
) -> pd.DataFrame:
    """Features of one symbol's candles: ``open_time`` then one float64 column per feature.

    Indexed like ``candles``. ``names=None`` computes every feature whose inputs the context
    provides (candle features always); a named feature whose input is missing is a
    :class:`ConfigError`. ``registry`` replaces the built-in one (extensions, tests).
    """
    ctx = ctx or FeatureContext()
    specs = feature_specs(ctx, registry)
    have = _available_inputs(ctx)
    if names is None:
        chosen = [s for s in specs.values() if set(s.inputs) <= have]
    else:
        if len(set(names)) != len(names):
            raise ConfigError("compute_features: feature names must be unique")
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise ConfigError(f"unknown feature(s) {', '.join(unknown)}; see feature_registry()")
        chosen = [specs[n] for n in names]
        for spec in chosen:
            lacking = sorted(set(spec.inputs) - have)
            if lacking:
                raise ConfigError(
                    f"feature {spec.name!r} needs {', '.join(lacking)} in the context"
                )
    ff = FeatureFrame(candles, ctx)
    columns: dict[str, npt.NDArray[np.generic]] = {"open_time": ff.open_time}
    for spec in chosen:
        if not len(ff):
            columns[spec.name] = np.empty(0)
            continue
        values = np.asarray(spec.compute(ff), dtype=np.float64)
        if values.shape != (len(ff),):
            raise ConfigError(f"feature {spec.name!r} returned shape {values.shape}")
        columns[spec.name] = values
    return pd.DataFrame(columns, index=candles.index)
