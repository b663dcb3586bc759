"""The built-in sentiment and on-chain features: point-in-time lags checked by hand, gaps,
staleness, the stricter-of-two rule, daily windows, and the real series of ../shared/series."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.series import read_series
from atra.core.features.external import DAY_MS, SERIES, series_rule
from atra.core.features.registry import (
    Family,
    FeatureContext,
    PointInTimeSeries,
    compute_features,
    feature_registry,
)
from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

H = 3_600_000
D0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def bars(first_ms: int, n: int, close: float = 100.0) -> pd.DataFrame:
    t = first_ms + np.arange(n, dtype=np.int64) * H
    c = np.full(n, close)
    return pd.DataFrame(
        {"open_time": t, "open": c, "high": c, "low": c, "close": c, "volume": np.ones(n)}
    )


def daily(
    name: str, values: dict[str, list[float]], first_day: int = 0, **kw: int
) -> PointInTimeSeries:
    rule = SERIES[name]
    n = len(next(iter(values.values())))
    frame = pd.DataFrame({"time": D0 + (first_day + np.arange(n, dtype=np.int64)) * DAY_MS})
    for col in rule.columns:
        frame[col] = values.get(col, [1.0] * n)
    return PointInTimeSeries(
        name,
        frame,
        lag_ms=kw.get("lag_ms", rule.lag_ms),
        max_age_ms=kw.get("max_age_ms", rule.max_age_ms),
        family=rule.family,
    )


def at(out: pd.DataFrame, col: str, open_ms: int) -> float:
    return float(out.loc[out.open_time == open_ms, col].iloc[0])


def test_coin_metrics_value_of_day_d_is_usable_only_after_d_plus_30_hours() -> None:
    series = daily("onchain_btc", {"mvrv": [1.0, 2.0, 3.0]})
    candles = bars(D0, 24 * 4)
    ctx = FeatureContext(timeframe=Timeframe.H1, series=(series,))
    out = compute_features(candles, ctx, ["mvrv_btc"])
    # day 0 (2024-01-01) closes at 01-02 00:00 and is usable from 01-02 06:00
    assert math.isnan(at(out, "mvrv_btc", D0 + 23 * H))  # D 23:00: the day is not over
    assert math.isnan(at(out, "mvrv_btc", D0 + 29 * H))  # closes at D+1 06:00 exactly
    assert at(out, "mvrv_btc", D0 + 30 * H) == 1.0  # closes at D+1 07:00
    assert at(out, "mvrv_btc", D0 + 53 * H) == 1.0  # closes at D+2 06:00: day 1 not yet
    assert at(out, "mvrv_btc", D0 + 54 * H) == 2.0


def test_fear_greed_is_usable_one_hour_after_its_stamp() -> None:
    series = daily("fear_greed", {"fear_greed": [10.0, 80.0]})
    out = compute_features(
        bars(D0, 30), FeatureContext(timeframe=Timeframe.H1, series=(series,)), None
    )
    assert math.isnan(at(out, "fg_level", D0))  # closes at 01:00 exactly
    assert at(out, "fg_level", D0 + H) == 10.0
    assert at(out, "fg_extreme_fear", D0 + H) == 1.0
    assert at(out, "fg_extreme_greed", D0 + H) == 0.0
    assert at(out, "fg_level", D0 + 24 * H) == 10.0  # day 1's value closes at 01:00 too
    assert at(out, "fg_level", D0 + 25 * H) == 80.0
    assert at(out, "fg_extreme_greed", D0 + 25 * H) == 1.0
    assert at(out, "fg_chg_1d", D0 + 25 * H) == 70.0


def test_a_shorter_configured_lag_cannot_make_a_builtin_peek() -> None:
    series = daily("onchain_btc", {"mvrv": [1.0, 2.0]}, lag_ms=0)
    out = compute_features(
        bars(D0, 48), FeatureContext(timeframe=Timeframe.H1, series=(series,)), ["mvrv_btc"]
    )
    assert out.mvrv_btc.iloc[:30].isna().all()
    assert out.mvrv_btc.iloc[30:].eq(1.0).all()


def test_stale_values_become_nan_never_forward_filled() -> None:
    series = daily("fear_greed", {"fear_greed": [40.0]})
    out = compute_features(
        bars(D0, 24 * 4), FeatureContext(timeframe=Timeframe.H1, series=(series,)), ["fg_level"]
    )
    # usable from 01:00, for 48 h after that: the last bar using it closes at D+2 01:00
    assert at(out, "fg_level", D0 + 48 * H) == 40.0
    assert math.isnan(at(out, "fg_level", D0 + 49 * H))
    assert out.fg_level.iloc[49:].isna().all()
    # a tighter configured max age wins
    tight = daily("fear_greed", {"fear_greed": [40.0]}, max_age_ms=3 * H)
    out = compute_features(
        bars(D0, 10), FeatureContext(timeframe=Timeframe.H1, series=(tight,)), ["fg_level"]
    )
    assert out.fg_level.notna().tolist() == [False, True, True, True, False, *[False] * 5]


def test_daily_windows_never_span_a_missing_day() -> None:
    values = [float(v) for v in range(40)]
    frame = daily("fear_greed", {"fear_greed": values}).frame.drop(index=[35])
    rule = SERIES["fear_greed"]
    series = PointInTimeSeries("fear_greed", frame, rule.lag_ms, rule.max_age_ms)
    ctx = FeatureContext(timeframe=Timeframe.H1, series=(series,))
    out = compute_features(bars(D0, 24 * 40), ctx, ["fg_chg_1d", "fg_chg_7d", "fg_z_30d"])
    day = lambda d: D0 + d * DAY_MS + 2 * H  # noqa: E731 - a bar seeing day d's value
    assert at(out, "fg_chg_1d", day(34)) == 1.0
    assert math.isnan(at(out, "fg_chg_1d", day(36)))  # day 35 missing
    assert at(out, "fg_chg_1d", day(37)) == 1.0
    assert math.isnan(at(out, "fg_chg_7d", day(6)))  # no day -1
    assert at(out, "fg_chg_7d", day(7)) == 7.0
    assert at(out, "fg_chg_7d", day(37)) == 7.0  # needs days 37 and 30 only
    x = np.arange(30.0)
    want = (29.0 - x.mean()) / x.std(ddof=1)
    assert at(out, "fg_z_30d", day(29)) == pytest.approx(want, rel=1e-12)
    assert math.isnan(at(out, "fg_z_30d", day(28)))  # only 29 days
    assert math.isnan(at(out, "fg_z_30d", day(39)))  # the window holds the gap


def test_onchain_definitions_by_hand() -> None:
    n = 400
    rng = np.random.default_rng(3)
    mvrv = rng.uniform(0.5, 3.0, n)
    cap = np.exp(np.cumsum(rng.normal(0, 0.02, n))) * 1e12
    realized = rng.uniform(10_000, 30_000, n)
    valuation = daily(
        "onchain_btc",
        {
            "mvrv": mvrv.tolist(),
            "market_cap_usd": cap.tolist(),
            "realized_price_usd": realized.tolist(),
        },
    )
    act = {c: rng.uniform(1e3, 1e6, n).tolist() for c in SERIES["onchain_btc_activity"].columns}
    activity = daily("onchain_btc_activity", act)
    last = n - 1
    open_ms = D0 + (last + 1) * DAY_MS + 6 * H  # first bar seeing day `last`
    candles = bars(open_ms - 10 * H, 12, close=50_000.0)
    btc = bars(open_ms - 10 * H, 12, close=60_000.0)
    ctx = FeatureContext(timeframe=Timeframe.H1, btc=btc, series=(valuation, activity))
    out = compute_features(candles, ctx)
    w = mvrv[last - 364 :]
    assert at(out, "mvrv_btc", open_ms) == mvrv[last]
    assert at(out, "mvrv_z_btc", open_ms) == pytest.approx((mvrv[last] - w.mean()) / w.std(ddof=1))
    assert at(out, "realized_dist_btc", open_ms) == pytest.approx(math.log(60_000 / realized[last]))
    assert at(out, "mcap_mom_30d_btc", open_ms) == pytest.approx(
        math.log(cap[last] / cap[last - 30])
    )
    adr = np.array(act["adractcnt"])
    assert at(out, "adractcnt_growth_7d", open_ms) == pytest.approx(
        math.log(adr[last - 6 :].mean() / adr[last - 13 : last - 6].mean())
    )
    hr = np.array(act["hashrate"])
    assert at(out, "hashrate_chg_30d", open_ms) == pytest.approx(
        math.log(hr[last - 6 :].mean() / hr[last - 36 : last - 29].mean())
    )
    fin, fout = np.array(act["flowinexusd"]), np.array(act["flowoutexusd"])
    assert at(out, "exch_netflow_1d", open_ms) == pytest.approx(
        (fin[last] - fout[last]) / (fin[last] + fout[last])
    )
    s = slice(last - 6, None)
    assert at(out, "exch_netflow_7d", open_ms) == pytest.approx(
        (fin[s] - fout[s]).sum() / (fin[s] + fout[s]).sum()
    )
    # the ETH features need the ETH series: absent from this context, so not computed
    assert "mvrv_eth" not in out.columns
    with pytest.raises(ConfigError, match=r"mvrv_eth.*series:onchain_eth"):
        compute_features(candles, ctx, ["mvrv_eth"])


def test_families_and_definitions_name_the_rule() -> None:
    reg = feature_registry()
    assert reg["fg_z_30d"].family is Family.ALTERNATIVE
    assert reg["mvrv_z_eth"].family is Family.FUNDAMENTAL
    assert reg["mvrv_z_eth"].inputs == ("candles", "series:onchain_eth")
    assert reg["realized_dist_btc"].inputs == ("candles", "btc", "series:onchain_btc")
    assert "usable from time + 30 h, stale after 48 h" in reg["mvrv_btc"].definition
    assert "usable from time + 1 h" in reg["fg_level"].definition
    assert series_rule("onchain_eth").base_asset == "ETH"
    with pytest.raises(DataError, match="no built-in series 'x'"):
        series_rule("x")


def test_a_series_without_a_needed_column_is_a_one_line_error() -> None:
    frame = pd.DataFrame({"time": [D0], "value": [1.0]})
    series = PointInTimeSeries("fear_greed", frame, lag_ms=H, max_age_ms=DAY_MS)
    ctx = FeatureContext(timeframe=Timeframe.H1, series=(series,))
    with pytest.raises(DataError, match="'fear_greed': missing column 'fear_greed'"):
        compute_features(bars(D0, 3), ctx, ["fg_level"])


@pytest.mark.shared_data
def test_real_series_values_reach_the_bars(shared_data_dir: Path) -> None:
    series_dir = shared_data_dir.parent / "series"
    if not (series_dir / "README.md").exists():
        pytest.skip("../shared/series is not beside the project")
    loaded = tuple(
        read_series(
            series_dir / f"{name}_daily.parquet",
            name=name,
            lag_ms=rule.lag_ms,
            max_age_ms=rule.max_age_ms,
            family=rule.family,
        )
        for name, rule in SERIES.items()
    )
    day = pd.Timestamp("2024-03-10", tz="UTC").value // 1_000_000
    candles = pd.read_parquet(shared_data_dir / "ETHUSDT_spot_1h.parquet")
    candles = candles[
        (candles.open_time >= day - 5 * DAY_MS) & (candles.open_time < day + 3 * DAY_MS)
    ]
    btc = pd.read_parquet(shared_data_dir / "BTCUSDT_spot_1h.parquet")
    ctx = FeatureContext(timeframe=Timeframe.H1, btc=btc, series=loaded)
    out = compute_features(candles.reset_index(drop=True), ctx)
    fg = pd.read_parquet(series_dir / "fear_greed_daily.parquet").set_index("time").fear_greed
    eth = pd.read_parquet(series_dir / "onchain_eth_daily.parquet").set_index("time")
    assert at(out, "fg_level", day + H) == fg[day]
    assert at(out, "fg_level", day) == fg[day - DAY_MS]
    assert at(out, "mvrv_eth", day + DAY_MS + 6 * H) == eth.mvrv[day]
    assert at(out, "mvrv_eth", day + DAY_MS + 5 * H) == eth.mvrv[day - DAY_MS]
    close = float(candles.loc[candles.open_time == day + DAY_MS + 6 * H, "close"].iloc[0])
    assert at(out, "realized_dist_eth", day + DAY_MS + 6 * H) == pytest.approx(
        math.log(close / eth.realized_price_usd[day])
    )
    families = {feature_registry()[c].family for c in out.columns if c in feature_registry()}
    assert {Family.ALTERNATIVE, Family.FUNDAMENTAL} <= families
    every_new = [
        c
        for c in out.columns
        if c in feature_registry() and feature_registry()[c].inputs[-1].startswith("series:")
    ]
    assert len(every_new) == 19
    assert out[every_new].notna().all().all()
