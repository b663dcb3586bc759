"""The frames people have -> the frame contract: exact conversion, or one line naming the row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atra.core.frame_input import candles_from_frame, funding_from_frame
from atra.core.types import Timeframe
from atra.errors import DataError

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000


def atra_frame(n: int = 48, step_ms: int = H, seed: int = 3) -> pd.DataFrame:
    """A valid ATRA candle frame (int64 open_time)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame(
        {
            "open_time": T0 + np.arange(n, dtype=np.int64) * step_ms,
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.uniform(1, 50, n),
        }
    )


def pandas_style(frame: pd.DataFrame, tz: str | None = "UTC") -> pd.DataFrame:
    """The same bars as a DatetimeIndex frame with capitalised columns (yfinance's shape)."""
    index = pd.to_datetime(frame["open_time"].to_numpy(), unit="ms", utc=True)
    out = frame.drop(columns="open_time").rename(columns=str.title)
    out.index = index if tz == "UTC" else (index.tz_convert(tz) if tz else index.tz_localize(None))
    return out


def one_line_error(frame: pd.DataFrame, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        candles_from_frame(frame, source="t.parquet", **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("t.parquet")
    return message


def test_atra_frame_passes_unchanged() -> None:
    frame = atra_frame()
    got = candles_from_frame(frame, source="x")
    pd.testing.assert_frame_equal(got.frame, frame)
    assert got.timeframe is Timeframe.H1
    assert got.report.rows == len(frame)
    assert got.ignored_columns == ()


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo", "America/New_York"])
def test_datetime_index_frame_converts_exactly_to_utc_ms(tz: str) -> None:
    frame = atra_frame()
    got = candles_from_frame(pandas_style(frame, tz), source="x")
    pd.testing.assert_frame_equal(got.frame, frame)


def test_adj_close_and_extra_columns_are_ignored_and_listed() -> None:
    frame = atra_frame()
    theirs = pandas_style(frame)
    theirs["Adj Close"] = theirs["Close"] * 0.5  # never used as the close
    theirs["Dividends"] = 0.0
    got = candles_from_frame(theirs, source="x")
    pd.testing.assert_frame_equal(got.frame, frame)
    assert got.ignored_columns == ("Adj Close", "Dividends")


def test_adj_close_is_not_taken_for_a_missing_close() -> None:
    theirs = pandas_style(atra_frame()).rename(columns={"Close": "Adj Close"})
    message = one_line_error(theirs)
    assert "missing column(s) close" in message
    assert "'Adj Close' is not used as the close" in message


def test_naive_index_is_refused_never_assumed_utc() -> None:
    message = one_line_error(pandas_style(atra_frame(), tz=None))
    assert "no time zone (naive)" in message
    assert "tz_localize('UTC')" in message


def test_naive_index_beside_open_time_is_refused_too() -> None:
    frame = atra_frame()
    frame.index = pd.to_datetime(frame["open_time"], unit="ms")
    assert "has no time zone" in one_line_error(frame)


def test_index_and_open_time_must_agree() -> None:
    frame = atra_frame()
    frame.index = pd.to_datetime(frame["open_time"] + H * (frame.index >= 5), unit="ms", utc=True)
    assert "row 6: the DatetimeIndex says" in one_line_error(frame)
    frame.index = pd.to_datetime(frame["open_time"], unit="ms", utc=True)
    assert len(candles_from_frame(frame, source="x").frame) == len(frame)


def test_tz_aware_open_time_column_is_accepted() -> None:
    frame = atra_frame()
    theirs = frame.assign(open_time=pd.to_datetime(frame["open_time"], unit="ms", utc=True))
    pd.testing.assert_frame_equal(candles_from_frame(theirs, source="x").frame, frame)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda f: f.set_index(pd.RangeIndex(len(f))), "expected a tz-aware DatetimeIndex"),
        (lambda f: f.assign(Volume=f["Volume"].astype(str)), "column 'Volume' has dtype"),
        (lambda f: f.assign(close=f["Close"]), "columns 'Close' and 'close' are both 'close'"),
        (lambda f: f.drop(columns="Volume"), "missing column(s) volume"),
        (lambda f: f.iloc[:0], "no rows"),
        (lambda f: pd.concat({"BTC-USD": f}, axis=1).swaplevel(axis=1), "MultiIndex"),
    ],
)
def test_layout_problems_are_refused(change: object, says: str) -> None:
    theirs = change(pandas_style(atra_frame()))  # type: ignore[operator]
    assert says in one_line_error(theirs)


def test_float_open_time_is_refused() -> None:
    frame = atra_frame().astype({"open_time": np.float64})
    assert "column 'open_time' has dtype float64" in one_line_error(frame)


def test_sub_millisecond_index_is_refused() -> None:
    theirs = pandas_style(atra_frame())
    theirs.index = theirs.index + pd.to_timedelta((theirs.index.hour == 3) * 500, unit="us")
    assert "row 4: the DatetimeIndex" in one_line_error(theirs)
    assert "not a whole millisecond" in one_line_error(theirs)


@pytest.mark.parametrize(
    ("row", "column", "value", "says"),
    [
        (7, "close", np.nan, "row 8 (open_time 2024-01-01T07:00:00Z): NaN or infinite value"),
        (3, "low", 5e8, "row 4 (open_time 2024-01-01T03:00:00Z): low > high"),
        (5, "volume", -1.0, "row 6 (open_time 2024-01-01T05:00:00Z): negative volume"),
        (2, "open", 0.0, "row 3 (open_time 2024-01-01T02:00:00Z): price <= 0"),
    ],
)
def test_bad_rows_are_named_never_filled_or_clipped(
    row: int, column: str, value: float, says: str
) -> None:
    frame = atra_frame()
    frame.loc[row, column] = value
    assert says in one_line_error(frame)
    theirs = pandas_style(frame)
    assert says in one_line_error(theirs)


def test_unsorted_rows_are_refused_not_sorted() -> None:
    frame = atra_frame()
    swapped = frame.iloc[[0, 1, 3, 2, *range(4, len(frame))]].reset_index(drop=True)
    assert "row 4 (open_time 2024-01-01T02:00:00Z): time goes backwards" in one_line_error(swapped)
    duplicated = pd.concat([frame.iloc[:5], frame.iloc[4:]], ignore_index=True)
    assert "row 6" in one_line_error(duplicated)
    assert "duplicate time" in one_line_error(duplicated)


def test_gaps_are_reported_and_not_filled() -> None:
    frame = atra_frame().drop(index=[10, 11, 30]).reset_index(drop=True)
    got = candles_from_frame(pandas_style(frame), source="x")
    assert len(got.frame) == len(frame)
    assert got.report.gap_count == 2
    assert got.report.missing_bars == 3


@pytest.mark.parametrize(
    ("step_ms", "timeframe"), [(5 * 60_000, Timeframe.M5), (4 * H, Timeframe.H4), (24 * H, None)]
)
def test_bar_size_is_the_most_common_spacing(step_ms: int, timeframe: Timeframe | None) -> None:
    frame = atra_frame(step_ms=step_ms)
    expected = timeframe or Timeframe.D1
    assert candles_from_frame(frame, source="x").timeframe is expected


def test_a_given_timeframe_must_match_the_bars() -> None:
    frame = atra_frame(step_ms=4 * H)
    assert "timeframe 1h given, but the bars are mostly 240 minutes apart" in one_line_error(
        frame, timeframe=Timeframe.H1
    )
    assert candles_from_frame(frame, source="x", timeframe=Timeframe.H4).timeframe is Timeframe.H4


def test_unsupported_or_unknowable_bar_size_is_refused() -> None:
    assert "no supported bar size" in one_line_error(atra_frame(step_ms=7 * 60_000))
    assert "cannot infer the bar size from 1 bar(s)" in one_line_error(atra_frame(n=1))
    single = candles_from_frame(atra_frame(n=1), source="x", timeframe=Timeframe.H1)
    assert single.report.rows == 1


def test_funding_frames() -> None:
    times = T0 + np.arange(6, dtype=np.int64) * 8 * H
    rates = np.array([1e-4, -2e-4, 3e-4, 1e-4, 0.0, 5e-5])
    ours = pd.DataFrame({"funding_time": times, "funding_rate": rates})
    got = funding_from_frame(ours, source="f")
    pd.testing.assert_frame_equal(got.frame, ours)
    theirs = pd.DataFrame(
        {"fundingRate": rates, "markPrice": 1.0},
        index=pd.to_datetime(times, unit="ms", utc=True),
    ).rename(columns={"fundingRate": "Funding_Rate"})
    pd.testing.assert_frame_equal(funding_from_frame(theirs, source="f").frame, ours)
    assert funding_from_frame(theirs, source="f").ignored_columns == ("markPrice",)
    with pytest.raises(DataError, match="missing column funding_rate"):
        funding_from_frame(ours.drop(columns="funding_rate"), source="f")
    with pytest.raises(DataError, match=r"f: row 3 .*NaN or infinite funding_rate"):
        funding_from_frame(ours.assign(funding_rate=[1e-4, 0, np.nan, 0, 0, 0]), source="f")
    with pytest.raises(DataError, match="naive"):
        funding_from_frame(theirs.tz_localize(None), source="f")


def test_missing_times_and_odd_inputs() -> None:
    theirs = pandas_style(atra_frame())
    theirs.index = theirs.index.where(theirs.index.hour != 5, pd.NaT)
    assert "row 6: the DatetimeIndex is missing (NaT)" in one_line_error(theirs)
    frame = atra_frame().astype({"open_time": "Int64"})
    frame.loc[4, "open_time"] = pd.NA
    assert "row 5: open_time is missing" in one_line_error(frame)
    numbered = atra_frame()
    numbered[0] = 1.0  # a non-text column label: not OHLCV, ignored and listed
    assert candles_from_frame(numbered, source="x").ignored_columns == ("0",)
    with pytest.raises(DataError, match="expected a pandas DataFrame, got dict"):
        candles_from_frame({"open": [1.0]}, source="x")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="expected a pandas DataFrame, got list"):
        funding_from_frame([], source="x")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no rows"):
        funding_from_frame(pd.DataFrame({"funding_time": [], "funding_rate": []}), source="x")
