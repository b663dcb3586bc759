"""Point-in-time joins (funding, counterpart bars, external series) and the series file reader."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.adapters.series import read_series
from atra.core.features.sources import (
    Family,
    PointInTimeSeries,
    align_by_open_time,
    asof_index,
    event_means,
    funding_asof,
    series_asof,
    take_or_nan,
    validate_funding_frame,
)
from atra.errors import ConfigError, DataError

H = 3_600_000
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a multiple of 8 h


def _funding(times_h: list[int], rates: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "funding_time": np.array([T0 + h * H for h in times_h], dtype=np.int64),
            "funding_rate": np.array(rates, dtype=np.float64),
        }
    )


# asof_index / take_or_nan / align_by_open_time ------------------------------------------
def test_asof_index_is_strictly_before_the_decision() -> None:
    available = np.array([10, 20, 30], dtype=np.int64)
    decision = np.array([5, 10, 11, 20, 29, 30, 31, 100], dtype=np.int64)
    assert asof_index(available, decision).tolist() == [-1, -1, 0, 0, 1, 1, 2, 2]


def test_asof_index_max_age_drops_stale_records() -> None:
    available = np.array([10, 20], dtype=np.int64)
    decision = np.array([15, 25, 30, 31], dtype=np.int64)
    assert asof_index(available, decision, max_age_ms=10).tolist() == [0, 1, 1, -1]
    empty = np.array([], dtype=np.int64)
    assert asof_index(empty, decision, max_age_ms=10).tolist() == [-1] * 4


def test_take_or_nan() -> None:
    vals = np.array([1.0, 2.0])
    out = take_or_nan(vals, np.array([-1, 0, 1], dtype=np.intp))
    assert np.isnan(out[0])
    assert out[1:].tolist() == [1.0, 2.0]
    assert np.isnan(take_or_nan(np.array([]), np.array([-1, -1], dtype=np.intp))).all()


def test_align_by_open_time_exact_match_only() -> None:
    src_t = np.array([0, 10, 20, 40], dtype=np.int64)
    src_v = np.array([1.0, 2.0, 3.0, 5.0])
    dst_t = np.array([-10, 0, 10, 30, 40, 50], dtype=np.int64)
    out = align_by_open_time(src_t, src_v, dst_t)
    np.testing.assert_array_equal(out, [np.nan, 1.0, 2.0, np.nan, 5.0, np.nan])


# funding ------------------------------------------------------------------------------------
def test_funding_event_at_the_close_is_used_from_the_next_bar() -> None:
    funding = _funding([0, 8, 16], [0.1, 0.2, 0.3])
    open_h = np.arange(-1, 20)
    close_ms = (T0 + (open_h + 1) * H).astype(np.int64)
    got = funding_asof(funding, close_ms)["rate"]
    by_open = dict(zip(open_h.tolist(), got.tolist(), strict=True))
    assert math.isnan(by_open[-1])  # closes at 00:00 exactly: the 00:00 event is not yet usable
    assert by_open[0] == 0.1
    assert by_open[7] == 0.1  # closes at 08:00: still the 00:00 rate
    assert by_open[8] == 0.2
    assert by_open[16] == 0.3
    assert by_open[19] == 0.3


def test_funding_lag_and_staleness() -> None:
    funding = _funding([0, 8], [0.1, 0.2])
    close_ms = np.array([T0 + h * H for h in (1, 2, 3, 9, 10, 16, 17)], dtype=np.int64)
    lagged = funding_asof(funding, close_ms, lag_ms=2 * H)["rate"]
    np.testing.assert_array_equal(lagged, [np.nan, np.nan, 0.1, 0.1, 0.1, 0.2, 0.2])
    fresh = funding_asof(funding, close_ms)["rate"]
    # 16:00 is 8 h after the 08:00 event: still usable; at 17:00 it is 9 h old -> NaN (gap)
    np.testing.assert_array_equal(fresh, [0.1, 0.1, 0.1, 0.2, 0.2, 0.2, np.nan])


def test_funding_means_do_not_bridge_a_gap() -> None:
    # events every 8 h, the one at 24 h missing
    funding = _funding([0, 8, 16, 32, 40, 48], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    close_ms = np.array([T0 + h * H for h in (17, 33, 41, 49)], dtype=np.int64)
    got = funding_asof(funding, close_ms, windows=(3,))
    np.testing.assert_array_equal(got["rate"], [3.0, 4.0, 5.0, 6.0])
    np.testing.assert_array_equal(got["mean_3"], [2.0, np.nan, np.nan, 5.0])


def _event_means_reference(times: np.ndarray, rates: np.ndarray, k: int, gap: int) -> list[float]:
    out = []
    for i in range(len(rates)):
        if i < k - 1:
            out.append(math.nan)
            continue
        window_t = times[i - k + 1 : i + 1]
        if any(b - a > gap for a, b in itertools.pairwise(window_t)):
            out.append(math.nan)
        else:
            out.append(sum(rates[i - k + 1 : i + 1]) / k)
    return out


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.sampled_from([4, 8, 8, 8, 16]), min_size=0, max_size=30),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_event_means_match_a_slow_reference(steps: list[int], k: int, seed: int) -> None:
    times = np.cumsum([0, *steps]).astype(np.int64) * H
    rates = np.random.default_rng(seed).normal(0, 1e-4, times.size)
    got = event_means(times, rates, k, 8 * H)
    np.testing.assert_allclose(got, _event_means_reference(times, rates, k, 8 * H), rtol=1e-12)


def test_validate_funding_frame_errors() -> None:
    with pytest.raises(DataError, match="missing column 'funding_rate'"):
        validate_funding_frame(pd.DataFrame({"funding_time": [1]}))
    with pytest.raises(DataError, match="strictly increasing; position 1"):
        validate_funding_frame(_funding([8, 0], [0.1, 0.1]))
    with pytest.raises(DataError, match="not finite at position 1"):
        validate_funding_frame(_funding([0, 8], [0.1, math.nan]))
    with pytest.raises(DataError, match="int64 ms or a datetime"):
        validate_funding_frame(pd.DataFrame({"funding_time": ["x"], "funding_rate": [0.1]}))
    with pytest.raises(ConfigError, match="max_interval_ms > 0"):
        funding_asof(_funding([0], [0.1]), np.array([T0], dtype=np.int64), max_interval_ms=0)
    with pytest.raises(ConfigError, match="window must be >= 1"):
        funding_asof(_funding([0], [0.1]), np.array([T0], dtype=np.int64), windows=(0,))


def test_funding_accepts_datetime_times() -> None:
    frame = _funding([0, 8], [0.1, 0.2])
    as_dt = frame.assign(funding_time=pd.to_datetime(frame.funding_time, unit="ms", utc=True))
    times, _ = validate_funding_frame(as_dt)
    np.testing.assert_array_equal(times, frame.funding_time.to_numpy())


# PointInTimeSeries ------------------------------------------------------------------------
def _series_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"time": np.array([T0, T0 + 24 * H], dtype=np.int64), "index": [10.0, 20.0]}
    )


def test_series_asof_respects_lag_and_max_age() -> None:
    series = PointInTimeSeries("fg", _series_frame(), lag_ms=2 * H, max_age_ms=30 * H)
    decision = np.array([T0 + h * H for h in (1, 2, 3, 26, 27, 56, 57)], dtype=np.int64)
    got = series_asof(series, decision)["index"]
    # usable strictly after time + 2 h, for at most 30 h after that
    np.testing.assert_array_equal(got, [np.nan, np.nan, 10.0, 10.0, 20.0, 20.0, np.nan])
    assert series.value_columns == ("index",)
    assert series.family is Family.ALTERNATIVE


def test_series_with_tz_datetime_time_column() -> None:
    frame = _series_frame()
    frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
    series = PointInTimeSeries("fg", frame, lag_ms=0, max_age_ms=H)
    np.testing.assert_array_equal(series.times_ms(), _series_frame()["time"].to_numpy())
    frame.loc[1, "time"] = pd.NaT
    with pytest.raises(DataError, match="missing values"):
        PointInTimeSeries("fg", frame, lag_ms=0, max_age_ms=H)


@pytest.mark.parametrize(
    ("kwargs", "frame", "error", "match"),
    [
        ({"name": "bad name"}, None, ConfigError, "identifier"),
        ({"lag_ms": -1}, None, ConfigError, "lag_ms >= 0"),
        ({"max_age_ms": 0}, None, ConfigError, "max_age_ms > 0"),
        ({"change_bars": 0}, None, ConfigError, "change_bars >= 1"),
        ({"family": Family.PRICE}, None, ConfigError, "alternative or fundamental"),
        ({"time_col": "ts"}, None, DataError, "missing time column 'ts'"),
        ({}, pd.DataFrame({"time": [T0]}), DataError, "no value columns"),
        ({}, pd.DataFrame({"time": [T0], "v": ["a"]}), DataError, "'v' must be numeric"),
        ({}, pd.DataFrame({"time": [T0], "v": [True]}), DataError, "'v' must be numeric"),
        ({}, pd.DataFrame({"time": [T0, T0], "v": [1.0, 2.0]}), DataError, "increasing"),
    ],
)
def test_series_validation(
    kwargs: dict[str, object],
    frame: pd.DataFrame | None,
    error: type[Exception],
    match: str,
) -> None:
    args: dict[str, object] = {
        "name": "fg",
        "frame": _series_frame() if frame is None else frame,
        "lag_ms": 0,
        "max_age_ms": H,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        PointInTimeSeries(**args)  # type: ignore[arg-type]


# read_series (adapter) ----------------------------------------------------------------------
def test_read_series_csv_with_iso_times(tmp_path: Path) -> None:
    path = tmp_path / "fear_greed.csv"
    path.write_text("time,value,count\n2023-11-15T00:00:00Z,40,3\n2023-11-16 00:00,55,1\n")
    series = read_series(path, lag_ms=H, max_age_ms=48 * H)
    assert series.name == "fear_greed"
    assert series.value_columns == ("value", "count")
    np.testing.assert_array_equal(series.times_ms(), [T0, T0 + 24 * H])
    got = series_asof(series, np.array([T0 + 2 * H, T0 + 26 * H], dtype=np.int64))
    np.testing.assert_array_equal(got["value"], [40.0, 55.0])


def test_read_series_csv_int_ms_and_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"ts": np.array([T0, T0 + H], dtype=np.int64), "oi": [1.0, 2.0]})
    frame.to_csv(tmp_path / "oi.csv", index=False)
    a = read_series(
        tmp_path / "oi.csv", lag_ms=0, max_age_ms=H, time_col="ts", family=Family.FUNDAMENTAL
    )
    assert a.family is Family.FUNDAMENTAL
    frame.assign(ts=pd.to_datetime(frame.ts, unit="ms", utc=True)).to_parquet(
        tmp_path / "oi.parquet"
    )
    b = read_series(tmp_path / "oi.parquet", lag_ms=0, max_age_ms=H, time_col="ts", name="oi2")
    assert b.name == "oi2"
    np.testing.assert_array_equal(a.times_ms(), b.times_ms())


@pytest.mark.parametrize(
    ("name", "text", "error", "match"),
    [
        ("s.json", "{}", ConfigError, "must be .csv or .parquet"),
        ("s.csv", None, DataError, "file not found"),
        ("s.parquet", "not parquet", DataError, "unreadable parquet"),
        ("s.csv", "t,v\n1,2\n", DataError, "missing time column 'time'"),
        ("s.csv", "time,v\n1,2\n,3\n", DataError, "row 2 of column 'time' has no time"),
        ("s.csv", "time,v\n2023-01-01,2\nsoon,3\n", DataError, r"row 2 .* not an ISO-8601"),
        ("s.csv", "time,v\n2,1\n1,2\n", DataError, r"s\.csv: .*strictly increasing"),
    ],
)
def test_read_series_errors(
    tmp_path: Path, name: str, text: str | None, error: type[Exception], match: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(error, match=match):
        read_series(path, lag_ms=0, max_age_ms=H)
