"""The OHLCV / funding contract: validation rules, gap reports, exact resampling."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.core.frames import (
    CANDLE_COLUMNS,
    EXCHANGE_LAUNCH_MS,
    LATEST_MS,
    Gap,
    Limits,
    PartialBucket,
    check_bar_spacing,
    empty_candles,
    find_gaps,
    implausible_time,
    ms_to_iso,
    normalize_candles,
    normalize_funding,
    resample_candles,
    validate_candles,
    validate_funding,
)
from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000


def make_candles(
    n: int, tf: Timeframe = Timeframe.H1, start: int = T0, seed: int = 7
) -> pd.DataFrame:
    """A valid random-walk candle frame of ``n`` bars."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]][:n]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    return pd.DataFrame(
        {
            "open_time": start + np.arange(n, dtype=np.int64) * tf.ms,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": np.round(rng.uniform(0, 50, n), 5),
        }
    )


# ---- validate_candles --------------------------------------------------------------------


def test_valid_frame_report_lists_gaps_and_zero_volume() -> None:
    frame = make_candles(20)
    frame.loc[5, "volume"] = 0.0
    frame = frame.drop(index=[8, 9, 10, 15]).reset_index(drop=True)
    report = validate_candles(frame, Timeframe.H1, source="x.parquet")
    assert report.rows == 16
    assert report.kind == "candles"
    assert report.first_ms == T0
    assert report.last_ms == T0 + 19 * H
    assert report.gaps == (Gap(T0 + 8 * H, T0 + 10 * H, 3), Gap(T0 + 15 * H, T0 + 15 * H, 1))
    assert report.gap_count == 2
    assert report.missing_bars == 4
    assert report.zero_volume_ms == (T0 + 5 * H,)
    assert str(report.gaps[0]) == "2024-01-01T08:00:00Z..2024-01-01T10:00:00Z (3 missing)"


def test_empty_frame_is_valid_and_empty() -> None:
    report = validate_candles(empty_candles(), Timeframe.M5, source="e")
    assert (report.rows, report.first_ms, report.last_ms, report.gaps) == (0, None, None, ())


def _set(col: str, row: int, value: float) -> Callable[[pd.DataFrame], None]:
    def apply(f: pd.DataFrame) -> None:
        f.loc[row, col] = value

    return apply


def _time(row: int, value: int) -> Callable[[pd.DataFrame], None]:
    def apply(f: pd.DataFrame) -> None:
        f.loc[row, "open_time"] = value

    return apply


@pytest.mark.parametrize(
    ("mutate", "row", "rule"),
    [
        (_set("close", 3, np.nan), 3, "NaN or infinite"),
        (_set("volume", 4, np.inf), 4, "NaN or infinite"),
        (_set("open", 2, -1.0), 2, "price <= 0"),
        (_set("low", 6, 0.0), 6, "price <= 0"),
        (_set("low", 5, 5e8), 5, "low > high"),
        (_set("high", 5, 1e9), 5, "price >= 1e+09"),
        (_set("close", 2, 1e300), 2, "price >= 1e+09"),
        (_set("high", 1, 1e-3), 1, "low > high"),
        (_set("volume", 7, -0.5), 7, "negative volume"),
        (_time(4, T0 + 3 * H), 4, "duplicate time"),
        (_time(4, T0 + 2 * H), 4, "backwards"),
        (_time(6, T0 + 6 * H + 60_000), 6, "not aligned"),
    ],
)
def test_broken_rule_is_one_line_error_naming_source_row_time_rule(
    mutate: Callable[[pd.DataFrame], None], row: int, rule: str
) -> None:
    frame = make_candles(10)
    mutate(frame)
    with pytest.raises(DataError) as info:
        validate_candles(frame, Timeframe.H1, source="BTCUSDT_spot_1h.parquet")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("BTCUSDT_spot_1h.parquet: ")
    assert f"row {row + 1} " in msg
    assert ms_to_iso(int(frame.loc[row, "open_time"])) in msg
    assert rule in msg


@pytest.mark.parametrize(
    ("col", "low_factor", "rule"),
    [("open", 0.5, "open outside"), ("close", 0.5, "close outside")],
)
def test_open_close_outside_range(col: str, low_factor: float, rule: str) -> None:
    frame = make_candles(5)
    frame.loc[2, col] = frame.loc[2, "low"] * low_factor
    with pytest.raises(DataError, match=rule):
        validate_candles(frame, Timeframe.H1, source="f")
    frame = make_candles(5)
    frame.loc[3, col] = frame.loc[3, "high"] * 2
    with pytest.raises(DataError, match=rf"row 4 .*{rule}"):
        validate_candles(frame, Timeframe.H1, source="f")


def test_earliest_row_is_reported_when_several_rules_break() -> None:
    frame = make_candles(10)
    frame.loc[8, "volume"] = -1.0
    frame.loc[2, "close"] = np.nan
    with pytest.raises(DataError, match=r"row 3 .*NaN"):
        validate_candles(frame, Timeframe.H1, source="f")


def test_unnamed_source_still_says_frame() -> None:
    frame = make_candles(3)
    frame.loc[1, "volume"] = -1.0
    with pytest.raises(DataError, match=r"^<frame>: row 2"):
        validate_candles(frame, Timeframe.H1, source="")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.drop(columns=["volume"]), "missing: volume; extra: none"),
        (lambda f: f.assign(trades=1), "missing: none; extra: trades"),
        (lambda f: f.assign(open_time=f.open_time.astype(float)), "open_time must be int64"),
        (lambda f: f.assign(close=f.close.astype(str)), "close must be numeric"),
    ],
)
def test_columns_and_dtypes_are_checked(
    change: Callable[[pd.DataFrame], pd.DataFrame], expected: str
) -> None:
    with pytest.raises(DataError, match=expected):
        validate_candles(change(make_candles(4)), Timeframe.H1, source="f.csv")


def test_integer_prices_are_accepted() -> None:
    frame = pd.DataFrame(
        {"open_time": [T0, T0 + H], "open": [1, 2], "high": [3, 3], "low": [1, 1], "close": [2, 2]}
    ).assign(volume=[0, 5])
    assert validate_candles(frame, Timeframe.H1, source="ints").rows == 2


# ---- funding ---------------------------------------------------------------------------------


def make_funding(n: int, step_ms: int = 8 * H) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "funding_time": T0 + np.arange(n, dtype=np.int64) * step_ms,
            "funding_rate": rng.normal(1e-4, 1e-4, n),
        }
    )


def test_funding_report_and_gaps() -> None:
    frame = make_funding(10).drop(index=[4, 5]).reset_index(drop=True)
    report = validate_funding(frame, source="f")
    assert report.kind == "funding"
    assert report.rows == 8
    assert report.gaps == (Gap(T0 + 32 * H, T0 + 40 * H, 2),)
    assert report.zero_volume_ms == ()


def test_funding_with_finer_interval_has_no_gaps() -> None:
    assert validate_funding(make_funding(10, 4 * H), source="f").gaps == ()
    assert validate_funding(make_funding(10, 4 * H), source="f", interval_ms=4 * H).gaps == ()


@pytest.mark.parametrize(
    ("col", "row", "value", "rule"),
    [
        ("funding_rate", 2, np.nan, "NaN or infinite funding_rate"),
        ("funding_time", 3, T0 + 16 * H, "duplicate time"),
        ("funding_time", 3, T0, "backwards"),
        ("funding_rate", 4, 1e9, r"\|funding_rate\| > 0.05 per interval"),
        ("funding_rate", 1, -0.0501, r"\|funding_rate\| > 0.05 per interval"),
    ],
)
def test_funding_rules(col: str, row: int, value: float, rule: str) -> None:
    frame = make_funding(6)
    frame.loc[row, col] = value
    with pytest.raises(DataError, match=rf"^fund.csv: row {row + 1} .*funding_time.*{rule}"):
        validate_funding(frame, source="fund.csv")


def test_funding_columns_checked() -> None:
    with pytest.raises(DataError, match=r"missing: funding_rate"):
        validate_funding(make_funding(3).drop(columns=["funding_rate"]), source="f")


# ---- gaps ------------------------------------------------------------------------------------


def test_find_gaps_edges() -> None:
    assert find_gaps([], H) == ()
    assert find_gaps([T0], H) == ()
    assert find_gaps([T0, T0 + H, T0 + 4 * H], H) == (Gap(T0 + 2 * H, T0 + 3 * H, 2),)
    # a step a few ms longer than the interval (funding time jitter) is not a gap
    assert find_gaps([T0, T0 + 8 * H + 3], 8 * H) == ()
    with pytest.raises(ConfigError):
        find_gaps([T0], 0)


def test_ms_to_iso() -> None:
    assert ms_to_iso(T0) == "2024-01-01T00:00:00Z"
    assert ms_to_iso(T0 + 1_234) == "2024-01-01T00:00:01.234Z"


# ---- resample --------------------------------------------------------------------------------


def test_resample_is_exact_and_reports_partial_buckets() -> None:
    five = make_candles(36, Timeframe.M5, start=T0 + 30 * 60_000)  # 00:30 .. 03:25
    five = five.drop(index=[20]).reset_index(drop=True)  # one 5m bar of the 02:00 hour
    res = resample_candles(five, Timeframe.M5, Timeframe.H1)
    # hours: 00 (6/12 present), 01 complete, 02 (11/12), 03 (6/12)
    assert res.partial == (
        PartialBucket(T0, 6, 12),
        PartialBucket(T0 + 2 * H, 11, 12),
        PartialBucket(T0 + 3 * H, 6, 12),
    )
    assert str(res.partial[0]) == "2024-01-01T00:00:00Z (6/12 bars)"
    out = res.frame
    assert out["open_time"].tolist() == [T0 + H]
    hour = five[(five.open_time >= T0 + H) & (five.open_time < T0 + 2 * H)]
    assert out.loc[0, "open"] == hour["open"].iloc[0]
    assert out.loc[0, "high"] == hour["high"].max()
    assert out.loc[0, "low"] == hour["low"].min()
    assert out.loc[0, "close"] == hour["close"].iloc[-1]
    assert out.loc[0, "volume"] == pytest.approx(hour["volume"].sum(), rel=1e-15)
    assert res.gaps == ()
    assert list(out.columns) == list(CANDLE_COLUMNS)
    assert out["open_time"].dtype == np.int64


def test_resample_decimal_volume_sum_is_exact() -> None:
    frame = make_candles(12, Timeframe.M5)
    vols = [3590.06669 / 12] * 11
    frame["volume"] = [round(v, 5) for v in vols] + [round(3590.06669 - 11 * round(vols[0], 5), 5)]
    out = resample_candles(frame, Timeframe.M5, Timeframe.H1).frame
    assert out.loc[0, "volume"] == 3590.06669
    # a plain float sum of the same values drifts by an ulp
    assert sum(frame["volume"].tolist()) != 3590.06669


def test_resample_decimal_sum_beyond_float_integers_is_still_exact() -> None:
    frame = make_candles(12, Timeframe.M5)
    frame["volume"] = 50_000_000.12345678  # 12 x 5e15 units of 1e-8: past 2**53 in total
    out = resample_candles(frame, Timeframe.M5, Timeframe.H1).frame
    assert out.loc[0, "volume"] == float(Decimal("50000000.12345678") * 12)


def test_resample_non_decimal_volumes_fall_back_to_float_sum() -> None:
    frame = make_candles(24, Timeframe.M5)
    frame["volume"] = np.linspace(0.1, 2.0, 24) / 3.0
    out = resample_candles(frame, Timeframe.M5, Timeframe.H1).frame
    assert out["volume"].tolist() == [frame.volume[:12].sum(), frame.volume[12:].sum()]


def test_resample_to_day_aligns_to_utc_midnight_and_lists_gap_days() -> None:
    frame = make_candles(24 * 4, Timeframe.H1).drop(index=range(30, 60)).reset_index(drop=True)
    res = resample_candles(frame, Timeframe.H1, Timeframe.D1)
    assert res.frame["open_time"].tolist() == [T0, T0 + 72 * H]
    assert [p.open_time_ms for p in res.partial] == [T0 + 24 * H, T0 + 48 * H]
    assert res.gaps == (Gap(T0 + 24 * H, T0 + 48 * H, 2),)


def test_resample_empty_frame() -> None:
    res = resample_candles(empty_candles(), Timeframe.M5, Timeframe.H1)
    assert res.frame.empty
    assert res.partial == ()


@pytest.mark.parametrize(("src", "dst"), [("1h", "5m"), ("1h", "1h"), ("3m", "5m")])
def test_resample_rejects_targets_not_a_multiple(src: str, dst: str) -> None:
    with pytest.raises(ConfigError, match=r"whole multiple"):
        resample_candles(make_candles(3), Timeframe.parse(src), Timeframe.parse(dst))


def test_resample_validates_its_input() -> None:
    frame = make_candles(12, Timeframe.M5)
    frame.loc[3, "high"] = 0.001
    with pytest.raises(DataError, match=r"^resample input: row 4"):
        resample_candles(frame, Timeframe.M5, Timeframe.H1)


def test_normalize_gives_contract_dtypes() -> None:
    frame = make_candles(3)[list(reversed(CANDLE_COLUMNS))].astype({"volume": "float32"})
    frame.index = pd.Index([10, 11, 12])
    out = normalize_candles(frame)
    assert list(out.columns) == list(CANDLE_COLUMNS)
    assert isinstance(out.index, pd.RangeIndex)
    assert out.dtypes.tolist() == [np.int64] + [np.float64] * 5
    fund = normalize_funding(make_funding(2).astype({"funding_rate": "float32"}))
    assert fund.dtypes.tolist() == [np.int64, np.float64]


# ---- properties ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=120),
    offset=st.integers(min_value=0, max_value=23),
    ratio=st.sampled_from([("5m", "15m"), ("5m", "1h"), ("15m", "4h"), ("1h", "1d")]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_resample_gap_free_equals_groupby_reference(
    n: int, offset: int, ratio: tuple[str, str], seed: int
) -> None:
    src, dst = Timeframe.parse(ratio[0]), Timeframe.parse(ratio[1])
    frame = make_candles(n, src, start=T0 + offset * src.ms, seed=seed)
    res = resample_candles(frame, src, dst)
    bucket = frame.open_time - frame.open_time % dst.ms
    ref = frame.groupby(bucket).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        n=("open", "size"),
    )
    expected = dst.ms // src.ms
    full = ref[ref.n == expected]
    assert res.frame["open_time"].tolist() == full.index.tolist()
    for col in ("open", "high", "low", "close"):
        assert res.frame[col].tolist() == full[col].tolist()
    np.testing.assert_allclose(res.frame["volume"], full["volume"], rtol=1e-12)
    part = ref[ref.n != expected]
    assert [(p.open_time_ms, p.bars_present) for p in res.partial] == list(
        zip(part.index.tolist(), part.n.tolist(), strict=True)
    )
    assert all(p.bars_expected == expected for p in res.partial)


_FLOATS = st.sampled_from([np.nan, np.inf, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0])


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 5]),  # hour offset steps
            st.booleans(),  # misaligned time
            _FLOATS,
            _FLOATS,
            _FLOATS,
            _FLOATS,
            st.sampled_from([-1.0, 0.0, 1.0, np.nan]),
        ),
        max_size=8,
    )
)
def test_validation_never_passes_a_frame_that_breaks_a_rule(
    rows: list[tuple[int, bool, float, float, float, float, float]],
) -> None:
    t = T0
    times: list[int] = []
    for step, misaligned, *_ in rows:
        t += step * H
        times.append(t + (60_000 if misaligned else 0))
    frame = pd.DataFrame(
        {
            "open_time": np.array(times, dtype=np.int64),
            "open": [r[2] for r in rows],
            "high": [r[3] for r in rows],
            "low": [r[4] for r in rows],
            "close": [r[5] for r in rows],
            "volume": [r[6] for r in rows],
        },
        columns=list(CANDLE_COLUMNS),
    ).astype({"open_time": np.int64, "open": float, "volume": float})
    ok_rows = all(
        all(np.isfinite(v) for v in r[2:])
        and min(r[2:6]) > 0
        and r[4] <= r[2] <= r[3]
        and r[4] <= r[5] <= r[3]
        and r[6] >= 0
        for r in rows
    )
    ok_times = all(x % H == 0 for x in times) and all(b > a for a, b in itertools.pairwise(times))
    if ok_rows and ok_times:
        assert validate_candles(frame, Timeframe.H1, source="p").rows == len(rows)
    else:
        with pytest.raises(DataError, match=r"^p: row "):
            validate_candles(frame, Timeframe.H1, source="p")


# ---- plausibility --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0 * 1000, "looks like microseconds (1.7e+15); divide by 1,000 to get milliseconds"),
        (T0 * 10**6, "looks like nanoseconds (1.7e+18); divide by 1,000,000 to get"),
        (T0 // 1000, "looks like seconds (1.7e+09); multiply by 1,000 to get milliseconds"),
        (-H, "is negative (-3.6e+06): times before 1970"),
        (EXCHANGE_LAUNCH_MS - H, "2017-07-13T23:00:00Z is before the earliest plausible time"),
        (LATEST_MS + H, "2100-01-01T01:00:00Z is after the latest plausible time 2100-01-01"),
        (10**17, "100000000000000000 ms is after the latest plausible time"),
    ],
)
def test_implausible_time_names_the_unit(value: int, expected: str) -> None:
    reason = implausible_time(value, H)
    assert reason is not None
    assert expected in reason


def test_plausible_range_edges_are_inclusive() -> None:
    now = T0 + 30 * 60_000  # half-way through a bar
    limits = Limits(now_ms=now)
    assert implausible_time(EXCHANGE_LAUNCH_MS, H, limits) is None
    assert implausible_time(now + H, H, limits) is None
    assert "after the latest plausible time" in str(implausible_time(now + H + 1, H, limits))
    assert implausible_time(EXCHANGE_LAUNCH_MS - 1, H, limits) is not None
    assert implausible_time(T0, H, Limits(earliest_ms=T0)) is None
    assert implausible_time(T0 - H, H, Limits(earliest_ms=T0)) is not None


def test_future_bar_refused_against_the_clock() -> None:
    frame = make_candles(5)
    last = int(frame.open_time.iloc[-1])
    validate_candles(frame, Timeframe.H1, source="f", limits=Limits(now_ms=last - H))
    with pytest.raises(DataError, match=r"^f: open_time 2024-01-01T04:00:00Z at row 5 is after"):
        validate_candles(frame, Timeframe.H1, source="f", limits=Limits(now_ms=last - H - 1))


def test_unit_is_named_before_grid_alignment() -> None:
    frame = make_candles(5).assign(open_time=lambda f: f.open_time // 1000)
    with pytest.raises(DataError, match=r"^f.parquet: open_time looks like seconds \(1.7e\+09 at"):
        validate_candles(frame, Timeframe.H1, source="f.parquet")


def test_funding_time_plausibility_and_configurable_cap() -> None:
    frame = make_funding(4)
    frame.loc[2, "funding_time"] = int(frame.loc[2, "funding_time"]) * 1000
    with pytest.raises(DataError, match=r"^fund: funding_time looks like microseconds .* row 3"):
        validate_funding(frame, source="fund")
    negative = make_funding(4)
    negative.loc[0, "funding_time"] = -5
    with pytest.raises(DataError, match=r"^fund: funding_time is negative \(-5 at row 1\)"):
        validate_funding(negative, source="fund")
    high = make_funding(4).assign(funding_rate=0.02)
    validate_funding(high, source="fund")
    with pytest.raises(DataError, match=r"row 1 .*\|funding_rate\| > 0.01 per interval"):
        validate_funding(high, source="fund", limits=Limits(max_abs_funding_rate=0.01))


def test_price_cap_is_configurable() -> None:
    frame = make_candles(4)
    with pytest.raises(DataError, match=r"row 1 .*price >= 50"):
        validate_candles(frame, Timeframe.H1, source="f", limits=Limits(max_price=50.0))
    frame["high"] = 2e9
    validate_candles(frame, Timeframe.H1, source="f", limits=Limits(max_price=1e12))


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"earliest_ms": -1}, "earliest plausible time"),
        ({"earliest_ms": LATEST_MS}, "earliest plausible time"),
        ({"now_ms": EXCHANGE_LAUNCH_MS - 1}, "before the earliest"),
        ({"max_price": float("inf")}, "max_price"),
        ({"max_price": 0.0}, "max_price"),
        ({"max_abs_funding_rate": float("nan")}, "max_abs_funding_rate"),
        ({"max_abs_funding_rate": -0.1}, "max_abs_funding_rate"),
    ],
)
def test_limits_refuse_nonsense(kwargs: dict[str, float], rule: str) -> None:
    with pytest.raises(ConfigError, match=rule):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_bar_spacing_against_the_name() -> None:
    hourly = make_candles(6).open_time.to_numpy()
    five = Timeframe.M5
    with pytest.raises(DataError, match=r"^f: bars are at least 1h apart .* file name says 5m$"):
        check_bar_spacing(hourly, five, source="f", named_by="the file name")
    with pytest.raises(DataError, match=r"^f: row 2: bars 5m apart, but --timeframe 1h says 1h"):
        check_bar_spacing(
            T0 + np.arange(3) * 300_000, Timeframe.H1, source="f", named_by="--timeframe 1h"
        )
    # gaps alone are fine; so are one or two rows, and one exact step among gaps
    check_bar_spacing(hourly[:2], five, source="f", named_by="x")
    check_bar_spacing(np.array([T0, T0 + 300_000, T0 + H]), five, source="f", named_by="x")
    check_bar_spacing(
        np.array([T0, T0 + 3 * H, T0 + 4 * H]), Timeframe.H1, source="f", named_by="x"
    )


def test_ms_to_iso_never_raises() -> None:
    assert ms_to_iso(T0 * 1000) == f"{T0 * 1000} ms"
    assert ms_to_iso(-H) == "1969-12-31T23:00:00Z"


def test_price_floor_is_configurable_and_named() -> None:
    frame = make_candles(4)
    low = float(frame["low"].min())
    validate_candles(frame, Timeframe.H1, source="f", limits=Limits(min_price=low))
    with pytest.raises(DataError, match=r"price < .* data\.bounds\.min_price = "):
        validate_candles(frame, Timeframe.H1, source="f", limits=Limits(min_price=low * 1.001))
    tiny = make_candles(4).assign(low=5e-9)  # below what Binance can quote
    with pytest.raises(DataError, match=r"row 1 .*price < 1e-08 \(implausible"):
        validate_candles(tiny, Timeframe.H1, source="f")


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"min_price": 0.0}, r"data\.bounds\.min_price must be a positive finite number"),
        ({"min_price": float("nan")}, r"data\.bounds\.min_price must be a positive finite"),
        ({"min_price": 10.0, "max_price": 10.0}, r"min_price \(10\) must be below .*max_price"),
        ({"max_price": True}, r"data\.bounds\.max_price must be a number"),
    ],
)
def test_bounds_refuse_nonsense_naming_the_key(kwargs: dict[str, float], rule: str) -> None:
    with pytest.raises(ConfigError, match=rule):
        Limits(**kwargs)  # type: ignore[arg-type]
