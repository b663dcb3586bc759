"""Built-in features of the alternative (sentiment) and fundamental (on-chain) families, on the
daily external series described in ``../shared/series/README.md``.

**The series.** Each built-in feature reads one named series of the context
(:class:`~atra.core.features.sources.PointInTimeSeries`, input ``series:<name>``):

===================== ============ =============================================== ============
series name           family       columns used                                    applies to
===================== ============ =============================================== ============
fear_greed            alternative  fear_greed                                      every symbol
onchain_btc           fundamental  market_cap_usd, mvrv, realized_price_usd        every symbol
onchain_btc_activity  fundamental  txcnt, adractcnt, hashrate, flowinexusd, ...    every symbol
onchain_eth           fundamental  market_cap_usd, mvrv, realized_price_usd        ETH only
===================== ============ =============================================== ============

A feature is computed only when its series is in the context (and named ones fail loudly when
it is not), so the ETH features exist for ETH symbols alone.

**When a value is known.** Every built-in series has a point-in-time rule (:data:`SERIES`):

- Fear & Greed: the value stamped day D is published at about D 00:00 UTC; usable from
  D 00:00 + 1 h, stale 2 days after that.
- Coin Metrics daily metrics: the row stamped D summarises the whole of day D; usable from
  D + 1 day + 6 h, stale 2 days after that.

The feature applies the *stricter* of that rule and the series' own (``lag = max``,
``max_age = min``), so a series configured with a shorter lag can never make a built-in feature
peek. Stale or missing -> NaN, never an older value.

**Daily windows.** Changes, z-scores and growth rates are computed on the daily records
themselves (record i uses records <= i only), then joined to the bars with the record's
availability time. A window needs every one of its days: a missing day (a gap in the series)
makes every window that spans it NaN; nothing is filled or interpolated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.features.frame import FeatureFrame, FeatureSpec
from atra.core.features.sources import F64, I64, Family, PointInTimeSeries, asof_index, take_or_nan
from atra.errors import DataError

__all__ = ["DAY_MS", "SERIES", "SeriesRule", "external_specs", "series_rule"]

DAY_MS: Final[int] = 86_400_000
HOUR_MS: Final[int] = 3_600_000


@dataclass(frozen=True, slots=True)
class SeriesRule:
    """The point-in-time rule and scope of one built-in external series."""

    name: str
    family: Family
    columns: tuple[str, ...]
    lag_ms: int
    """A record stamped ``time`` is usable from ``time + lag_ms`` (strictly after it)."""
    max_age_ms: int
    """... and for at most this long after that; older -> NaN."""
    base_asset: str | None
    """``None``: market-wide (every symbol); else only symbols with this base asset."""
    source: str
    """Where the live numbers come from (``alternative.me`` or ``coinmetrics``)."""


_FG_LAG: Final[int] = 1 * HOUR_MS
_CM_LAG: Final[int] = DAY_MS + 6 * HOUR_MS
_MAX_AGE: Final[int] = 2 * DAY_MS
_VALUATION: Final[tuple[str, ...]] = (
    "price_usd",
    "market_cap_usd",
    "mvrv",
    "supply",
    "realized_price_usd",
)
_ACTIVITY: Final[tuple[str, ...]] = (
    "txcnt",
    "adractcnt",
    "hashrate",
    "flowinexusd",
    "flowoutexusd",
    "isstotusd",
    "feetotntv",
)

SERIES: Final[dict[str, SeriesRule]] = {
    r.name: r
    for r in (
        SeriesRule(
            "fear_greed",
            Family.ALTERNATIVE,
            ("fear_greed",),
            _FG_LAG,
            _MAX_AGE,
            None,
            "alternative.me",
        ),
        SeriesRule(
            "onchain_btc", Family.FUNDAMENTAL, _VALUATION, _CM_LAG, _MAX_AGE, None, "coinmetrics"
        ),
        SeriesRule(
            "onchain_btc_activity",
            Family.FUNDAMENTAL,
            _ACTIVITY,
            _CM_LAG,
            _MAX_AGE,
            None,
            "coinmetrics",
        ),
        SeriesRule(
            "onchain_eth", Family.FUNDAMENTAL, _VALUATION, _CM_LAG, _MAX_AGE, "ETH", "coinmetrics"
        ),
    )
}
"""The built-in external series by name (file ``../shared/series/<file>``: ``fear_greed_daily``,
``onchain_btc_daily``, ``onchain_btc_activity_daily``, ``onchain_eth_daily``)."""


def series_rule(name: str) -> SeriesRule:
    """The rule of a built-in series, or a one-line :class:`DataError`."""
    try:
        return SERIES[name]
    except KeyError:
        raise DataError(
            f"no built-in series {name!r}; expected one of {', '.join(SERIES)}"
        ) from None


# daily windows on the records ----------------------------------------------------------------
def _spans_days(times: I64, n: int) -> npt.NDArray[np.bool_]:
    """Per record i: records i-n+1 .. i exist and are exactly n consecutive days."""
    out = np.zeros(times.shape, dtype=bool)
    if n <= times.size:
        out[n - 1 :] = times[n - 1 :] - times[: times.size - n + 1] == (n - 1) * DAY_MS
    return out


def _lagged(times: I64, x: F64, days: int) -> F64:
    """x at the record exactly ``days`` days earlier (NaN where that day is missing)."""
    pos = np.searchsorted(times, times - days * DAY_MS)
    hit = pos < times.size
    hit[hit] = times[pos[hit]] == times[hit] - days * DAY_MS
    out = np.full(x.shape, np.nan)
    out[hit] = x[pos[hit]]
    return out


def _mean(times: I64, x: F64, n: int) -> F64:
    """Mean of the last n daily records (all n days present), else NaN."""
    m = pd.Series(x).rolling(n, min_periods=n).mean().to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(_spans_days(times, n), m, np.nan)


def _zscore(times: I64, x: F64, n: int) -> F64:
    """(x - mean) / std (ddof 1) over the last n daily records (all present), else NaN."""
    roll = pd.Series(x).rolling(n, min_periods=n)
    mean = roll.mean().to_numpy(dtype=np.float64, na_value=np.nan)
    std = roll.std().to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(_spans_days(times, n), _div(x - mean, std), np.nan)


def _div(num: F64, den: F64) -> F64:
    ok = np.isfinite(den) & (den != 0)
    out: F64 = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=ok)
    return out


def _log_ratio(num: F64, den: F64) -> F64:
    ok = (num > 0) & (den > 0)
    out: F64 = np.full(num.shape, np.nan)
    np.log(_div(num, den), out=out, where=ok)
    return out


Daily = Callable[[I64, Callable[[str], F64]], F64]
"""A daily transform: (record times, column getter) -> one value per record."""


# the join ------------------------------------------------------------------------------------
def _find(ff: FeatureFrame, name: str) -> PointInTimeSeries:
    for series in ff.ctx.series:
        if series.name == name:
            return series
    raise DataError(f"series {name!r} is not in the feature context")  # pragma: no cover


def _column(series: PointInTimeSeries, col: str) -> F64:
    if col not in series.value_columns:
        have = ", ".join(series.value_columns)
        raise DataError(f"series {series.name!r}: missing column {col!r} (has {have})")
    return series.values(col)


def _daily_feature(rule: SeriesRule, key: str, daily: Daily) -> Callable[[FeatureFrame], F64]:
    def compute(ff: FeatureFrame) -> F64:
        def make() -> F64:
            series = _find(ff, rule.name)
            times = series.times_ms()
            per_record = daily(times, lambda c: _column(series, c))
            lag = max(rule.lag_ms, series.lag_ms)
            max_age = min(rule.max_age_ms, series.max_age_ms)
            idx = asof_index(times + lag, ff.close_ms, max_age_ms=max_age)
            return take_or_nan(np.asarray(per_record, dtype=np.float64), idx)

        return ff.cached(f"external:{rule.name}:{key}", make)

    return compute


# the daily definitions -----------------------------------------------------------------------
def _value(col: str) -> Daily:
    return lambda t, get: get(col)


def _change(col: str, days: int) -> Daily:
    return lambda t, get: get(col) - _lagged(t, get(col), days)


def _z(col: str, days: int) -> Daily:
    return lambda t, get: _zscore(t, get(col), days)


def _flag(col: str, lo: float, hi: float) -> Daily:
    def f(t: I64, get: Callable[[str], F64]) -> F64:
        x = get(col)
        return np.where(np.isnan(x), np.nan, ((x >= lo) & (x <= hi)).astype(np.float64))

    return f


def _momentum(col: str, days: int) -> Daily:
    return lambda t, get: _log_ratio(get(col), _lagged(t, get(col), days))


def _weekly_growth(col: str) -> Daily:
    """ln(mean of the last 7 days / mean of the 7 days before them)."""

    def f(t: I64, get: Callable[[str], F64]) -> F64:
        m7 = _mean(t, get(col), 7)
        return _log_ratio(m7, _lagged(t, m7, 7))

    return f


def _smoothed_change(col: str, days: int) -> Daily:
    """ln(7-day mean now / 7-day mean ``days`` days earlier)."""

    def f(t: I64, get: Callable[[str], F64]) -> F64:
        m7 = _mean(t, get(col), 7)
        return _log_ratio(m7, _lagged(t, m7, days))

    return f


def _netflow(days: int) -> Daily:
    """sum(in - out) / sum(in + out) over the last ``days`` days (in [-1, 1])."""

    def f(t: I64, get: Callable[[str], F64]) -> F64:
        inflow, outflow = get("flowinexusd"), get("flowoutexusd")
        net = _mean(t, inflow - outflow, days)
        gross = _mean(t, inflow + outflow, days)
        return _div(net, gross)

    return f


def _realized_dist(rule: SeriesRule, use_btc: bool) -> Callable[[FeatureFrame], F64]:
    """ln(the asset's bar close / its last usable realised price)."""
    realized = _daily_feature(rule, "realized_price_usd", _value("realized_price_usd"))

    def compute(ff: FeatureFrame) -> F64:
        close = ff.btc_aligned(ff.btc_frame().close) if use_btc else ff.close
        return _log_ratio(close, realized(ff))

    return compute


# the table -----------------------------------------------------------------------------------
_Row = tuple[str, str, Callable[[FeatureFrame], F64], tuple[str, ...], str, int]
# name, series, function, extra inputs, definition, series warm-up in days


def _rows() -> list[_Row]:
    fg, btc, act, eth = (SERIES[n] for n in SERIES)
    rows: list[_Row] = [
        ("fg_level", fg.name, _daily_feature(fg, "level", _value("fear_greed")), (),
         "Fear & Greed index (0 extreme fear .. 100 extreme greed), last usable day", 1),
        ("fg_chg_1d", fg.name, _daily_feature(fg, "chg1", _change("fear_greed", 1)), (),
         "Fear & Greed day D minus day D-1 (both present)", 2),
        ("fg_chg_7d", fg.name, _daily_feature(fg, "chg7", _change("fear_greed", 7)), (),
         "Fear & Greed day D minus day D-7 (both present)", 8),
        ("fg_z_30d", fg.name, _daily_feature(fg, "z30", _z("fear_greed", 30)), (),
         "z-score of Fear & Greed over its last 30 days (all present; std ddof 1)", 30),
        ("fg_extreme_fear", fg.name, _daily_feature(fg, "xfear", _flag("fear_greed", 0, 25)),
         (), "1 if Fear & Greed <= 25 (extreme fear), else 0", 1),
        ("fg_extreme_greed", fg.name,
         _daily_feature(fg, "xgreed", _flag("fear_greed", 75, 100)), (),
         "1 if Fear & Greed >= 75 (extreme greed), else 0", 1),
    ]  # fmt: skip
    for rule, asset in ((btc, "btc"), (eth, "eth")):
        extra = ("btc",) if asset == "btc" else ()
        whose = "BTC's (BTC bars, same open_time)" if asset == "btc" else "the symbol's"
        rows += [
            (f"mvrv_{asset}", rule.name, _daily_feature(rule, "mvrv", _value("mvrv")), (),
             f"{asset.upper()} MVRV: market cap / realised cap (Coin Metrics), last usable day",
             1),
            (f"mvrv_z_{asset}", rule.name, _daily_feature(rule, "mvrv_z", _z("mvrv", 365)), (),
             f"z-score of {asset.upper()} MVRV over its last 365 days (all present)", 365),
            (f"realized_dist_{asset}", rule.name, _realized_dist(rule, asset == "btc"), extra,
             f"ln({whose} bar close / {asset.upper()} realised price of the last usable day)",
             1),
            (f"mcap_mom_30d_{asset}", rule.name,
             _daily_feature(rule, "mcap_mom30", _momentum("market_cap_usd", 30)), (),
             f"ln({asset.upper()} market cap day D / day D-30)", 31),
        ]  # fmt: skip
    rows += [
        ("adractcnt_growth_7d", act.name,
         _daily_feature(act, "adr_g7", _weekly_growth("adractcnt")), (),
         "BTC active addresses: ln(mean of the last 7 days / mean of the 7 before)", 14),
        ("txcnt_growth_7d", act.name, _daily_feature(act, "tx_g7", _weekly_growth("txcnt")), (),
         "BTC transaction count: ln(mean of the last 7 days / mean of the 7 before)", 14),
        ("hashrate_chg_30d", act.name,
         _daily_feature(act, "hr_c30", _smoothed_change("hashrate", 30)), (),
         "BTC hash rate: ln(7-day mean now / 7-day mean 30 days earlier)", 37),
        ("exch_netflow_1d", act.name, _daily_feature(act, "nf1", _netflow(1)), (),
         "BTC exchange net flow of the day: (in - out) / (in + out), USD", 1),
        ("exch_netflow_7d", act.name, _daily_feature(act, "nf7", _netflow(7)), (),
         "BTC exchange net flow over 7 days: sum(in - out) / sum(in + out), USD", 7),
    ]  # fmt: skip
    return rows


def external_specs() -> dict[str, FeatureSpec]:
    """The built-in sentiment and on-chain features by name, in output column order.

    Warm-up in bars is 0 (they need no earlier candles); the history they need is in days of
    their series and is stated in the definition with the point-in-time rule."""
    out: dict[str, FeatureSpec] = {}
    for name, series_name, fn, extra, definition, days in _rows():
        rule = SERIES[series_name]
        pit = (
            f"; series {series_name}: usable from time + {rule.lag_ms / HOUR_MS:g} h, "
            f"stale after {rule.max_age_ms / HOUR_MS:g} h; needs {days} day(s) of it"
        )
        out[name] = FeatureSpec(
            name,
            rule.family,
            definition + pit,
            0,
            ("candles", *extra, f"series:{series_name}"),
            fn,
        )
    return out
