"""Look-ahead detection for every registered feature.

All features are computed once on the full history (candles with gaps, funding, a perp
counterpart, BTC and external series in the context). Then, at many cut bars, every input is
truncated to what was known at the cut's close and the features are recomputed: each row up to
the cut must equal the full-history row (NaN equals NaN). The features come from the registry,
so a new feature is checked without touching this file; deliberately leaky features prove the
check can fail.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.adapters.series import read_series
from atra.core import lookahead
from atra.core.features.external import DAY_MS, SERIES
from atra.core.features.registry import (
    Family,
    FeatureContext,
    FeatureFrame,
    FeatureSpec,
    PointInTimeSeries,
    compute_features,
    feature_registry,
)
from atra.core.lookahead import checkable_features, feature_lookahead
from atra.core.types import Timeframe

H = 3_600_000
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a funding time


def candles(n: int, seed: int, drop: Sequence[int] = (), start: int = T0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([50.0], close[:-1]))
    wiggle = np.exp(np.abs(rng.normal(0, 0.004, (2, n))))
    frame = pd.DataFrame(
        {
            "open_time": start + np.arange(n, dtype=np.int64) * H,
            "open": open_,
            "high": np.maximum(open_, close) * wiggle[0],
            "low": np.minimum(open_, close) / wiggle[1],
            "close": close,
            "volume": rng.lognormal(2.0, 0.7, n),
        }
    )
    keep = np.ones(n, dtype=bool)
    keep[list(drop)] = False
    return frame[keep].reset_index(drop=True)


def synthetic_context(main: pd.DataFrame, seed: int) -> FeatureContext:
    """Funding (8 h, one event missing), a perp twin, BTC and two series, all partly missing."""
    rng = np.random.default_rng(seed)
    n_slots = int((main.open_time.iloc[-1] - T0) // H) + 1
    start = int(main.open_time.iloc[0])
    perp = main.assign(close=main.close * np.exp(rng.normal(0, 5e-4, len(main)))).drop(index=[9])
    btc = candles(n_slots + 10, seed + 1, drop=(40, 41, 42, n_slots // 2), start=start - 10 * H)
    f_times = np.arange(start - 16 * H, start + n_slots * H + 1, 8 * H, dtype=np.int64)
    f_times = np.delete(f_times, len(f_times) // 3)
    funding = pd.DataFrame(
        {"funding_time": f_times, "funding_rate": rng.normal(1e-4, 2e-4, f_times.size)}
    )
    # sentiment: irregular half-hour times, published 90 min later, a few NaN values
    s_times = np.cumsum(rng.integers(4, 60, 400)) * (H // 2) + start
    sentiment = pd.DataFrame(
        {
            "time": pd.to_datetime(s_times, unit="ms", utc=True),
            "index": rng.uniform(0, 100, s_times.size),
            "news": rng.poisson(3, s_times.size).astype(float),
        }
    )
    sentiment.loc[5, "index"] = math.nan
    oi_times = start + np.arange(n_slots, dtype=np.int64) * H  # on bar closes: tests "<"
    open_interest = pd.DataFrame({"time": oi_times, "oi": np.cumsum(rng.normal(0, 1, n_slots))})
    return FeatureContext(
        timeframe=Timeframe.H1,
        funding=funding,
        counterpart=perp,
        btc=btc,
        series=(
            PointInTimeSeries("sent", sentiment, lag_ms=90 * 60_000, max_age_ms=30 * H),
            PointInTimeSeries(
                "oi", open_interest, lag_ms=0, max_age_ms=2 * H, family=Family.FUNDAMENTAL
            ),
            *builtin_series(start, start + n_slots * H, seed + 2),
        ),
    )


def builtin_series(start: int, end: int, seed: int) -> tuple[PointInTimeSeries, ...]:
    """The four built-in daily series (random values, with the real rules' lags and ages),
    from 400 days before ``start`` (the 365-day z-scores have values) to ``end``, each with
    a few missing days (gaps are never bridged) and one NaN value."""
    rng = np.random.default_rng(seed)
    first = (start // DAY_MS - 400) * DAY_MS
    days = np.arange(first, end + DAY_MS, DAY_MS, dtype=np.int64)
    out = []
    for k, rule in enumerate(SERIES.values()):
        keep = np.ones(days.size, dtype=bool)
        keep[rng.choice(np.arange(days.size - 60, days.size - 5), 3 + k, replace=False)] = False
        frame = pd.DataFrame({"time": days[keep]})
        for col in rule.columns:
            scale = 100.0 if col == "fear_greed" else float(rng.uniform(1.0, 1e6))
            frame[col] = scale * rng.uniform(0.05, 1.0, keep.sum())
        frame.loc[7, rule.columns[0]] = math.nan
        out.append(
            PointInTimeSeries(
                rule.name, frame, lag_ms=rule.lag_ms, max_age_ms=rule.max_age_ms,
                family=rule.family,
            )
        )  # fmt: skip
    return tuple(out)


def lookahead_mismatches(
    main: pd.DataFrame,
    ctx: FeatureContext,
    cuts: Sequence[int],
    registry: Mapping[str, FeatureSpec] | None = None,
) -> dict[str, list[int]]:
    """Feature name -> the cut bars at which a truncated recomputation disagrees (the library's
    truncation test, :func:`atra.core.lookahead.feature_lookahead`, bit for bit)."""
    names, uncheckable = checkable_features(ctx, registry)
    assert uncheckable == []  # the context feeds every registered feature
    times = main.open_time.to_numpy()
    bad: dict[str, list[int]] = {}
    for f in feature_lookahead(main, ctx, cuts, names=names, registry=registry):
        bad.setdefault(f.name, []).append(int(np.searchsorted(times, f.cut_ms)))
    return bad


def pick_cuts(main: pd.DataFrame, n: int, seed: int) -> list[int]:
    """Random cuts plus the bars around every gap, on funding times and publication hours."""
    return lookahead.pick_cuts(main.open_time.to_numpy(), H, n, seed)


# synthetic ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, FeatureContext]:
    main = candles(1600, seed=11, drop=(*range(300, 305), 1000))
    return main, synthetic_context(main, seed=12)


def test_every_feature_is_causal_on_synthetic_data(
    synthetic: tuple[pd.DataFrame, FeatureContext],
) -> None:
    main, ctx = synthetic
    full = compute_features(main, ctx)
    # the inputs are rich enough for every feature to have values to compare
    assert full.drop(columns="open_time").notna().any().all()
    assert lookahead_mismatches(main, ctx, pick_cuts(main, 50, seed=1)) == {}


def _next_return(ff: FeatureFrame) -> npt.NDArray[np.float64]:
    lc = np.log(ff.close)
    return np.append(lc[1:] - lc[:-1], np.nan)


def _centered_mean(ff: FeatureFrame) -> npt.NDArray[np.float64]:
    roll = pd.Series(ff.close).rolling(5, center=True, min_periods=5).mean()
    return np.asarray(roll.to_numpy(), dtype=np.float64)


def _full_sample_scaled(ff: FeatureFrame) -> npt.NDArray[np.float64]:
    """Close over its whole-history mean: normalising with future data."""
    return np.asarray(ff.close / ff.close.mean(), dtype=np.float64)


def _funding_at_close(ff: FeatureFrame) -> npt.NDArray[np.float64]:
    """Funding joined with ``funding_time <= close``: uses the event stamped at the close."""
    assert ff.ctx.funding is not None
    times = ff.ctx.funding.funding_time.to_numpy()
    idx = np.searchsorted(times, ff.close_ms, side="right") - 1
    rates = ff.ctx.funding.funding_rate.to_numpy()
    return np.where(idx >= 0, rates[np.maximum(idx, 0)], np.nan)


def _onchain_same_day(ff: FeatureFrame) -> npt.NDArray[np.float64]:
    """BTC MVRV used from its own day's 00:00: the day is not over yet."""
    series = next(s for s in ff.ctx.series if s.name == "onchain_btc")
    times = series.times_ms()
    idx = np.searchsorted(times, ff.close_ms, side="left") - 1
    return np.where(idx >= 0, series.values("mvrv")[np.maximum(idx, 0)], np.nan)


@pytest.mark.parametrize(
    ("fn", "inputs"),
    [
        (_onchain_same_day, ("candles", "series:onchain_btc")),
        (_next_return, ("candles",)),
        (_centered_mean, ("candles",)),
        (_full_sample_scaled, ("candles",)),
        (_funding_at_close, ("candles", "funding")),
    ],
    ids=[
        "onchain_same_day",
        "next_return",
        "centered_mean",
        "full_sample_scaled",
        "funding_at_close",
    ],
)
def test_a_leaky_feature_is_caught(
    synthetic: tuple[pd.DataFrame, FeatureContext], fn: object, inputs: tuple[str, ...]
) -> None:
    main, ctx = synthetic
    leaky = FeatureSpec("leaky", Family.PRICE, "uses the future (test only)", 0, inputs, fn)  # type: ignore[arg-type]
    registry = {**feature_registry(), "leaky": leaky}
    bad = lookahead_mismatches(main, ctx, pick_cuts(main, 10, seed=2), registry)
    assert set(bad) == {"leaky"}


@settings(max_examples=15, deadline=None)
@given(
    drops=st.lists(st.integers(0, 599), max_size=6),
    cut_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_random_gaps_and_cuts(drops: list[int], cut_frac: float, seed: int) -> None:
    main = candles(600, seed, drop=drops)
    ctx = synthetic_context(main, seed + 1)
    ctx = dataclasses.replace(ctx, series=(ctx.series[0], *ctx.series[2:]))
    cut = min(int(cut_frac * len(main)), len(main) - 1)
    assert lookahead_mismatches(main, ctx, [cut]) == {}


# real data ------------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_every_feature_is_causal_on_real_binance_data(shared_data_dir: Path) -> None:
    """ETHUSDT spot 2019-12-20 .. 2020-04-23 (3,000 bar slots; spot gaps 2020-02-09 02:00,
    2020-02-19 12:00..16:00 and 2020-03-04 10:00), its perp, its funding, BTCUSDT spot, a
    synthetic daily sentiment series published 6 h late and the four real external series of
    ``../shared/series`` (Fear & Greed, BTC and ETH valuation, BTC activity)."""
    series_dir = shared_data_dir.parent / "series"
    if not (series_dir / "README.md").exists():
        pytest.skip("../shared/series is not beside the project")
    lo = pd.Timestamp("2019-12-20", tz="UTC").value // 1_000_000
    hi = lo + 3000 * H

    def load(name: str, col: str = "open_time") -> pd.DataFrame:
        frame = pd.read_parquet(shared_data_dir / f"{name}.parquet")
        return frame[(frame[col] >= lo - 800 * H) & (frame[col] < hi)].reset_index(drop=True)

    spot = load("ETHUSDT_spot_1h")
    main = spot[spot.open_time >= lo].reset_index(drop=True)
    assert len(main) == 3000 - 7  # the three documented gaps: 1 + 5 + 1 missing bars
    days = np.arange(lo - 10 * 24 * H, hi, 24 * H, dtype=np.int64)
    sentiment = pd.DataFrame(
        {"time": days, "fg": np.random.default_rng(5).uniform(0, 100, days.size)}
    )
    ctx = FeatureContext(
        timeframe=Timeframe.H1,
        funding=load("ETHUSDT_perp_funding", "funding_time"),
        counterpart=load("ETHUSDT_perp_1h"),
        btc=load("BTCUSDT_spot_1h"),
        series=(
            PointInTimeSeries("fg", sentiment, lag_ms=6 * H, max_age_ms=30 * H),
            *(
                read_series(
                    series_dir / f"{name}_daily.parquet",
                    name=name,
                    lag_ms=rule.lag_ms,
                    max_age_ms=rule.max_age_ms,
                    family=rule.family,
                )
                for name, rule in SERIES.items()
            ),
        ),
    )
    full = compute_features(main, ctx)
    assert full.drop(columns="open_time").notna().any().all()
    assert lookahead_mismatches(main, ctx, pick_cuts(main, 30, seed=3)) == {}
