"""All of ../shared/data through the import path; the store must agree with its README.

The expected row counts, spans and gap counts are parsed from the README's file table, so
the test follows the documentation rather than numbers copied from our own output.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.store import CandleStore, DatasetKey
from atra.core.frames import Gap, validate_candles, validate_funding
from atra.core.types import Market, Timeframe
from atra.data.ingest import ImportOutcome, import_files, resample_dataset

pytestmark = pytest.mark.shared_data

H = 3_600_000


def ms(text: str) -> int:
    """``"2018-02-08 01:00"`` (UTC) -> epoch ms."""
    stamp = dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


@dataclass(frozen=True)
class Documented:
    file: str
    symbol: str
    market: Market
    kind: str
    timeframe: Timeframe | None
    first_ms: int
    last_ms: int
    rows: int
    gaps: int
    missing: int


def documented(readme: Path) -> list[Documented]:
    """The README's file table."""
    out = []
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or not cells[0].endswith(".parquet"):
            continue
        file, symbol, market, bars, first, last, rows, gaps, _size = cells
        if gaps.startswith("none"):
            n_gaps = n_missing = 0
        else:
            m = re.fullmatch(r"(\d+) \((\d+)\)", gaps)
            assert m is not None, line
            n_gaps, n_missing = int(m[1]), int(m[2])
        out.append(
            Documented(
                file=file,
                symbol=symbol,
                market=Market.SPOT if market == "spot" else Market.PERP,
                kind="funding" if bars == "funding events" else "candles",
                timeframe=None if bars == "funding events" else Timeframe.parse(bars),
                first_ms=ms(first),
                last_ms=ms(last),
                rows=int(rows.replace(",", "")),
                gaps=n_gaps,
                missing=n_missing,
            )
        )
    return out


@pytest.fixture(scope="module")
def imported(
    shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CandleStore, list[ImportOutcome]]:
    store = CandleStore(tmp_path_factory.mktemp("shared") / "data")
    return store, import_files(store, [shared_data_dir])


def test_readme_table_parsed(shared_data_dir: Path) -> None:
    docs = documented(shared_data_dir / "README.md")
    assert len(docs) == 22
    assert len(list(shared_data_dir.glob("*.parquet"))) == 22


def test_every_file_matches_the_readme(
    shared_data_dir: Path, imported: tuple[CandleStore, list[ImportOutcome]]
) -> None:
    store, outcomes = imported
    by_source = {Path(o.source).name: o for o in outcomes}
    docs = documented(shared_data_dir / "README.md")
    assert sorted(by_source) == sorted(d.file for d in docs)
    for d in docs:
        outcome = by_source[d.file]
        assert outcome.merge.rows_added == d.rows, d.file
        if d.kind == "funding":
            frame = store.read_funding("binance", d.symbol)
            report = validate_funding(frame, source=d.file)
            assert outcome.dataset == f"binance/perp/{d.symbol}/funding"
        else:
            assert d.timeframe is not None
            key = DatasetKey("binance", d.market, d.symbol, d.timeframe)
            frame = store.read_candles(key)
            report = validate_candles(frame, d.timeframe, source=d.file)
            assert outcome.dataset == str(key)
            assert store.last_open_time(key) == d.last_ms
        assert (report.rows, report.first_ms, report.last_ms) == (d.rows, d.first_ms, d.last_ms)
        assert (report.gap_count, report.missing_bars) == (d.gaps, d.missing), d.file
        assert (outcome.report.gap_count, outcome.report.missing_bars) == (d.gaps, d.missing)
    infos = {i.name: i for i in store.datasets()}
    assert len(infos) == 22
    assert infos["binance/spot/BTCUSDT/1h"].rows == 61_246


def test_stored_bars_equal_the_source_files(
    shared_data_dir: Path, imported: tuple[CandleStore, list[ImportOutcome]]
) -> None:
    store, _ = imported
    src = pd.read_parquet(shared_data_dir / "ETHUSDT_spot_5m.parquet")
    got = store.read_candles(DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.M5))
    pd.testing.assert_frame_equal(got, src)


@pytest.mark.parametrize(
    ("symbol", "first", "last", "missing"),
    [
        ("BTCUSDT", "2018-01-04 04:00", "2018-01-04 04:00", 1),
        ("ETHUSDT", "2018-02-08 01:00", "2018-02-09 09:00", 33),
        ("LTCUSDT", "2018-06-26 02:00", "2018-06-26 11:00", 10),
        ("XRPUSDT", "2019-05-15 03:00", "2019-05-15 12:00", 10),
        ("SOLUSDT", "2020-12-21 14:00", "2020-12-21 17:00", 4),
        ("AVAXUSDT", "2021-09-29 07:00", "2021-09-29 08:00", 2),
        ("DOTUSDT", "2023-03-24 13:00", "2023-03-24 13:00", 1),
    ],
)
def test_documented_spot_gaps(
    imported: tuple[CandleStore, list[ImportOutcome]],
    symbol: str,
    first: str,
    last: str,
    missing: int,
) -> None:
    store, _ = imported
    frame = store.read_candles(DatasetKey("binance", Market.SPOT, symbol, Timeframe.H1))
    report = validate_candles(frame, Timeframe.H1, source=symbol)
    assert Gap(ms(first), ms(last), missing) in report.gaps
    assert report.gaps[-1].first_missing_ms <= ms("2023-03-24 13:00")  # none later


def test_documented_five_minute_gaps_and_zero_volume(
    imported: tuple[CandleStore, list[ImportOutcome]],
) -> None:
    store, _ = imported
    for symbol in ("BTCUSDT", "ETHUSDT"):
        frame = store.read_candles(DatasetKey("binance", Market.SPOT, symbol, Timeframe.M5))
        report = validate_candles(frame, Timeframe.M5, source=symbol)
        assert report.gaps == (
            Gap(ms("2023-03-24 12:40"), ms("2023-03-24 13:55"), 16),
            Gap(ms("2023-12-31 00:00"), ms("2023-12-31 23:55"), 288),
        )
        expected_zero = [ms("2023-03-24 11:30") + i * 300_000 for i in range(14)]
        assert list(report.zero_volume_ms) == expected_zero


@pytest.mark.parametrize(
    ("symbol", "market", "bars"),
    [
        ("LINKUSDT", Market.SPOT, ["2019-05-02 05:00", "2019-06-07 21:00", "2021-02-11 03:00"]),
        ("BTCUSDT", Market.SPOT, ["2019-06-07 21:00", "2021-02-11 03:00", "2023-03-24 12:00"]),
        ("BTCUSDT", Market.PERP, ["2019-09-08 18:00", "2019-09-09 00:00", "2019-09-09 01:00"]),
        ("ETHUSDT", Market.PERP, ["2019-11-27 09:00"]),
    ],
)
def test_documented_zero_volume_bars(
    imported: tuple[CandleStore, list[ImportOutcome]],
    symbol: str,
    market: Market,
    bars: list[str],
) -> None:
    store, _ = imported
    frame = store.read_candles(DatasetKey("binance", market, symbol, Timeframe.H1))
    zero = validate_candles(frame, Timeframe.H1, source=symbol).zero_volume_ms
    assert set(map(ms, bars)) <= set(zero)
    if market is Market.PERP:
        assert list(zero) == [ms(b) for b in bars]


def test_reimport_changes_nothing(
    shared_data_dir: Path, imported: tuple[CandleStore, list[ImportOutcome]]
) -> None:
    store, _ = imported
    files = [
        shared_data_dir / "BTCUSDT_perp_funding.parquet",
        shared_data_dir / "SOLUSDT_spot_1h.parquet",
    ]
    paths = [
        store.funding_path("binance", "BTCUSDT"),
        store.candle_path(DatasetKey("binance", Market.SPOT, "SOLUSDT", Timeframe.H1)),
    ]
    before = [p.read_bytes() for p in paths]
    outcomes = import_files(store, files)
    assert [o.merge.rows_added for o in outcomes] == [0, 0]
    assert [p.read_bytes() for p in paths] == before


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_five_minute_resample_equals_the_hourly_file(
    imported: tuple[CandleStore, list[ImportOutcome]], symbol: str
) -> None:
    store, _ = imported
    out = resample_dataset(
        store, symbol=symbol, market=Market.SPOT, src=Timeframe.M5, dst=Timeframe.H1
    )
    # every complete hour equals the stored 1h bar exactly, so the merge adds nothing
    assert out.merge.rows_added == 0
    five = store.read_candles(out.src_key)
    hourly = store.read_candles(out.dst_key)
    span = hourly[
        (hourly.open_time >= five.open_time.iloc[0]) & (hourly.open_time <= five.open_time.iloc[-1])
    ].reset_index(drop=True)
    res = out.result
    only_hourly = sorted(set(span.open_time) - set(res.frame.open_time))
    assert set(res.frame.open_time) <= set(span.open_time)
    # the hours the resample could not build are exactly the documented gap hours:
    # 2023-03-24 12:00 (8 of 12 bars: partial) and all of 2023-12-31 (missing buckets)
    outage = ms("2023-03-24 12:00")
    lost_day = [ms("2023-12-31 00:00") + i * H for i in range(24)]
    assert only_hourly == [outage, *lost_day]
    assert [(p.open_time_ms, p.bars_present, p.bars_expected) for p in res.partial] == [
        (outage, 8, 12)
    ]
    assert Gap(lost_day[0], lost_day[-1], 24) in res.gaps
    assert Gap(outage, ms("2023-03-24 13:00"), 2) in res.gaps
    kept = span[~span.open_time.isin(only_hourly)].reset_index(drop=True)
    pd.testing.assert_frame_equal(res.frame, kept, check_exact=True)
    assert len(res.frame) == 16_774
    assert np.array_equal(res.frame["volume"].to_numpy(), kept["volume"].to_numpy())
