"""File importers and the import path into the store: good files, and every kind of bad one.

Every bad input must give a one-line DataError naming the file, and leave the store's files
byte-identical.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.importers import ImportRecord, read_file, verify_checksum
from atra.adapters.store import CandleStore, DatasetKey
from atra.core.types import Market, Timeframe
from atra.data.ingest import (
    check_datasets,
    collect_paths,
    import_files,
    import_record,
    resample_dataset,
    select_datasets,
)
from atra.errors import ConfigError, DataError
from helpers_failures import KLINE_HEADER, T0, H
from helpers_failures import candles as make_candles

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binance"
SPOT_1H = DatasetKey("binance", Market.SPOT, "BTCUSDT", Timeframe.H1)


def kline_text(frame: pd.DataFrame, *, header: bool, unit: int = 1, step: int = H) -> str:
    lines = [KLINE_HEADER] if header else []
    for r in frame.itertuples(index=False):
        ot = int(r.open_time) * unit
        lines.append(
            f"{ot},{r.open},{r.high},{r.low},{r.close},{r.volume},{ot + step * unit - 1},"
            f"{r.volume * r.close},10,1.0,{r.close},0"
        )
    return "\n".join(lines) + "\n"


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> CandleStore:
    """A store that already holds some data, so 'untouched' means something."""
    s = CandleStore(tmp_path / "store")
    s.write_candles(SPOT_1H, make_candles(48, start=T0 - 48 * H))
    s.write_funding(
        "binance", "BTCUSDT", pd.DataFrame({"funding_time": [T0 - 8 * H], "funding_rate": [1e-4]})
    )
    return s


@pytest.fixture
def files(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return d


# ---- the committed Binance fixtures ----------------------------------------------------------


def test_binance_monthly_zip_without_header_and_checksum() -> None:
    rec = read_file(FIXTURES / "BTCUSDT-1h-2024-01.zip")
    assert (rec.kind, rec.symbol, rec.market, rec.timeframe, rec.fmt) == (
        "candles",
        "BTCUSDT",
        Market.SPOT,
        Timeframe.H1,
        "binance-klines",
    )
    assert len(rec.frame) == 24
    assert rec.frame["open_time"].iloc[0] == T0
    assert list(rec.frame.columns) == ["open_time", "open", "high", "low", "close", "volume"]
    assert rec.frame.dtypes.tolist() == [np.int64] + [np.float64] * 5


def test_binance_fixture_equals_shared_data(shared_data_dir: Path) -> None:
    rec = read_file(FIXTURES / "BTCUSDT-1h-2024-01.zip")
    ref = pd.read_parquet(shared_data_dir / "BTCUSDT_spot_1h.parquet")
    ref = ref[ref.open_time.between(T0, T0 + 23 * H)].reset_index(drop=True)
    pd.testing.assert_frame_equal(rec.frame, ref)


def test_binance_daily_csv_with_header() -> None:
    rec = read_file(FIXTURES / "BTCUSDT-1h-2024-01-02.csv", market="perp")
    assert rec.market is Market.PERP
    assert rec.frame["open_time"].iloc[0] == T0 + 24 * H
    assert len(rec.frame) == 24


def test_binance_microsecond_file_is_converted_to_ms() -> None:
    rec = read_file(FIXTURES / "BTCUSDT-1h-2025-01-01.zip")
    assert rec.frame["open_time"].tolist() == [1_735_689_600_000 + i * H for i in range(6)]
    assert rec.frame["open"].iloc[0] == 94_000.0


def test_binance_funding_csv() -> None:
    rec = read_file(FIXTURES / "BTCUSDT-fundingRate-2024-01.csv")
    assert (rec.kind, rec.market, rec.timeframe, rec.funding_interval_ms) == (
        "funding",
        Market.PERP,
        None,
        8 * H,
    )
    assert rec.frame["funding_time"].iloc[0] == T0
    assert len(rec.frame) == 9
    assert rec.frame.dtypes.tolist() == [np.int64, np.float64]


def test_import_fixture_folder_into_store(store: CandleStore) -> None:
    outcomes = import_files(store, [FIXTURES])
    assert [Path(o.source).name for o in outcomes] == [
        "BTCUSDT-1h-2024-01-02.csv",
        "BTCUSDT-1h-2024-01.zip",
        "BTCUSDT-1h-2025-01-01.zip",
        "BTCUSDT-fundingRate-2024-01.csv",
    ]
    assert [o.merge.rows_added for o in outcomes] == [24, 24, 6, 9]
    stored = store.read_candles(SPOT_1H)
    assert len(stored) == 48 + 48 + 6
    report = check_datasets(store, symbols=["BTCUSDT"], timeframe=Timeframe.H1)[0].report
    # 2024-01-03 00:00 .. 2024-12-31 23:00 missing between the fixtures
    assert report.gap_count == 1
    assert report.gaps[0].first_missing_ms == T0 + 48 * H
    assert report.gaps[0].last_missing_ms == 1_735_689_600_000 - H
    # again: nothing changes
    before = snapshot(store.root)
    assert all(o.merge.rows_added == 0 for o in import_files(store, [FIXTURES]))
    assert snapshot(store.root) == before


def test_checksum_ok_passes_silently() -> None:
    verify_checksum(FIXTURES / "BTCUSDT-1h-2024-01.zip")
    verify_checksum(FIXTURES / "BTCUSDT-1h-2024-01-02.csv")  # no sidecar: nothing to check


# ---- our own layout --------------------------------------------------------------------------


def test_own_parquet_and_csv(files: Path) -> None:
    frame = make_candles(5)
    frame.to_parquet(files / "ETHUSDT_perp_1h.parquet", index=False)
    frame.to_csv(files / "ETHUSDT_spot_5m.csv", index=False)
    rec = read_file(files / "ETHUSDT_perp_1h.parquet")
    assert (rec.symbol, rec.market, rec.timeframe, rec.fmt) == (
        "ETHUSDT",
        Market.PERP,
        Timeframe.H1,
        "parquet",
    )
    pd.testing.assert_frame_equal(rec.frame, frame)
    rec = read_file(files / "ETHUSDT_spot_5m.csv", timeframe="1h", symbol="ETHBTC")
    assert (rec.symbol, rec.timeframe, rec.fmt) == ("ETHBTC", Timeframe.H1, "csv")
    pd.testing.assert_frame_equal(rec.frame, frame)


def test_own_funding_parquet(files: Path) -> None:
    fund = pd.DataFrame({"funding_time": [T0, T0 + 8 * H], "funding_rate": [1e-4, -2e-4]})
    fund.to_parquet(files / "SOLUSDT_perp_funding.parquet", index=False)
    rec = read_file(files / "SOLUSDT_perp_funding.parquet")
    assert (rec.kind, rec.symbol, rec.timeframe) == ("funding", "SOLUSDT", None)


def test_unnamed_file_needs_flags(files: Path, store: CandleStore) -> None:
    path = files / "export.csv"
    make_candles(3).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"cannot tell symbol, market and timeframe"):
        read_file(path)
    with pytest.raises(DataError, match=r"cannot tell symbol, market and timeframe"):
        read_file(path, market="spot")  # no timeframe
    assert read_file(path, market="spot", timeframe="1h").symbol == "export"
    odd = files / "my-export.csv"
    make_candles(3).to_csv(odd, index=False)
    with pytest.raises(DataError, match=r"cannot tell symbol"):
        read_file(odd, market="spot", timeframe="1h")
    rec = read_file(path, symbol="XRPUSDT", market=Market.SPOT, timeframe=Timeframe.H1)
    assert rec.symbol == "XRPUSDT"
    fund = files / "rates.parquet"
    pd.DataFrame({"funding_time": [T0], "funding_rate": [0.0]}).to_parquet(fund, index=False)
    rec = read_file(fund, symbol="XRPUSDT", market="perp")
    assert rec.kind == "funding"


@pytest.mark.parametrize("tz", ["UTC", None, "Asia/Tokyo"])
def test_timestamp_open_times_become_ms(files: Path, tz: str | None) -> None:
    frame = make_candles(4)
    stamps = pd.to_datetime(frame.open_time, unit="ms", utc=True).dt.as_unit("ms")
    stamps = stamps.dt.tz_convert(tz) if tz else stamps.dt.tz_localize(None)
    path = files / "SYM_spot_1h.parquet"
    frame.assign(open_time=stamps).to_parquet(path, index=False)
    pd.testing.assert_frame_equal(read_file(path).frame, frame)


@pytest.mark.parametrize(
    ("stamps_ns", "expected"),
    [
        ([T0 * 10**6, None], "row 2: open_time is missing"),
        ([T0 * 10**6, (T0 + H) * 10**6 + 1500], "row 2: open_time .* is not whole milliseconds"),
    ],
)
def test_bad_timestamps(files: Path, stamps_ns: list[int | None], expected: str) -> None:
    path = files / "SYM_spot_1h.parquet"
    stamps = pd.to_datetime(stamps_ns, unit="ns", utc=True)
    make_candles(2).assign(open_time=stamps).to_parquet(path, index=False)
    with pytest.raises(DataError, match=expected):
        read_file(path)


def test_integer_prices_in_csv_become_float(files: Path) -> None:
    path = files / "BTCUSDT_spot_1h.csv"
    path.write_text(f"open_time,open,high,low,close,volume\n{T0},1,2,1,2,0\n")
    rec = read_file(path)
    assert rec.frame.dtypes.tolist() == [np.int64] + [np.float64] * 5


def test_float_open_times_that_are_whole_are_accepted(files: Path) -> None:
    path = files / "BTCUSDT_spot_1h.csv"
    path.write_text(f"open_time,open,high,low,close,volume\n{T0}.0,1,2,1,2,0\n")
    assert read_file(path).frame["open_time"].tolist() == [T0]


# ---- bad input: one line naming the file, store byte-identical --------------------------------


def _write_kline_zip(path: Path, text: str, member: str | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member or path.with_suffix(".csv").name, text)


def _checksum(path: Path, digest: str | None = None, name: str | None = None) -> None:
    digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {name or path.name}\n")


def _good_parquet(files: Path) -> Path:
    path = files / "BTCUSDT_spot_1h.parquet"
    make_candles(30).to_parquet(path, index=False)
    return path


def bad_truncated_parquet(files: Path) -> tuple[Path, str]:
    path = _good_parquet(files)
    path.write_bytes(path.read_bytes()[:-100])
    return path, "not a readable Parquet file"


def bad_corrupt_parquet(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.parquet"
    path.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    return path, "not a readable Parquet file"


def bad_csv_missing_column(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    make_candles(5).drop(columns=["low"]).to_csv(path, index=False)
    return path, "missing: low; extra: none"


def bad_csv_extra_column(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    make_candles(5).assign(trades=3).to_csv(path, index=False)
    return path, "missing: none; extra: trades"


def bad_parquet_extra_column(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.parquet"
    make_candles(5).assign(quote_volume=1.0).to_parquet(path, index=False)
    return path, "extra: quote_volume"


def bad_duplicate_times(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    frame = make_candles(6)
    frame.loc[4, "open_time"] = frame.loc[3, "open_time"]
    frame.to_csv(path, index=False)
    return path, r"row 5 \(open_time 2024-01-01T03:00:00Z\): duplicate time"


def bad_unsorted_times(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    frame = make_candles(6)
    frame.loc[[2, 3]] = frame.loc[[3, 2]].to_numpy()
    path.write_text(kline_text(frame.astype({"open_time": np.int64}), header=False))
    return path, r"row 4 \(open_time 2024-01-01T02:00:00Z\): time goes backwards"


def bad_mixed_timeframes_binance(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    text = kline_text(make_candles(3), header=False)
    text += kline_text(make_candles(2, start=T0 + 3 * H, step=300_000), header=False, step=300_000)
    path.write_text(text)
    return path, "row 4: close_time .* implies a 300000 ms bar, expected 1h"


def bad_mixed_timeframes_parquet(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.parquet"
    frame = pd.concat([make_candles(3), make_candles(3, start=T0 + 3 * H, step=300_000)])
    frame.reset_index(drop=True).to_parquet(path, index=False)
    return path, "row 5: bars 5m apart, but the file name says 1h"


def bad_checksum_mismatch(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.zip"
    shutil.copy(FIXTURES / "BTCUSDT-1h-2024-01.zip", path)
    _checksum(path, digest="0" * 64)
    return path, "sha256 checksum mismatch"


def bad_checksum_malformed(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.zip"
    shutil.copy(FIXTURES / "BTCUSDT-1h-2024-01.zip", path)
    path.with_name(path.name + ".CHECKSUM").write_text("not a checksum\n")
    return path, "malformed checksum file"


def bad_checksum_other_name(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.zip"
    shutil.copy(FIXTURES / "BTCUSDT-1h-2024-01.zip", path)
    _checksum(path, name="BTCUSDT-1h-2024-02.zip")
    return path, "checksum is for 'BTCUSDT-1h-2024-02.zip'"


def bad_unknown_market(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_margin_1h.parquet"
    make_candles(3).to_parquet(path, index=False)
    return path, "unknown market 'margin' \\(expected spot or perp\\)"


def bad_unknown_timeframe(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1w-2024-01.zip"
    _write_kline_zip(path, kline_text(make_candles(2), header=False))
    return path, "unsupported timeframe '1w'"


def bad_empty_file(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    path.write_bytes(b"")
    return path, "empty file"


def bad_header_only_csv(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    path.write_text("open_time,open,high,low,close,volume\n")
    return path, "empty file \\(a header but no rows\\)"


def bad_empty_parquet(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.parquet"
    make_candles(0).to_parquet(path, index=False)
    return path, "empty file \\(no rows\\)"


def bad_empty_zip_member(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.zip"
    _write_kline_zip(path, "\n")
    return path, "empty file"


def bad_header_only_binance(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    path.write_text(KLINE_HEADER + "\n")
    return path, "empty file \\(a header but no rows\\)"


def bad_blank_binance_csv(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    path.write_text("\n\n")
    return path, "empty file \\(expected 12"


def bad_not_a_zip(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.zip"
    path.write_bytes(b"PK\x03\x04 truncated")
    return path, "not a valid zip archive"


def bad_zip_two_members(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "1,2\n")
        zf.writestr("b.csv", "1,2\n")
    return path, "expected exactly one .csv inside the zip, found 2"


def bad_binance_eleven_columns(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    lines = [
        ",".join(line.split(",")[:11]) for line in kline_text(make_candles(3), header=False).split()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path, "row 1: 11 of 12 columns \\(expected open_time, .*\\)"


def bad_binance_extra_field(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    lines = kline_text(make_candles(3), header=False).split()
    lines[1] += ",99"
    path.write_text("\n".join(lines) + "\n")
    return path, "row 2: 13 of 12 columns"


def bad_binance_header_width(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    body = kline_text(make_candles(3), header=False)
    path.write_text("open_time,open,high\n" + body)
    return path, "header has 3 columns, expected 12"


def bad_non_numeric_cell(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    lines = kline_text(make_candles(3), header=False).split()
    parts = lines[2].split(",")
    parts[4] = "abc"
    lines[2] = ",".join(parts)
    path.write_text("\n".join(lines) + "\n")
    return path, "row 3: close 'abc' is not a number"


def bad_missing_cell(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    path.write_text(f"open_time,open,high,low,close,volume\n{T0},1,2,1,,0\n")
    return path, "row 1: close is missing"


def bad_fractional_open_time(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    path.write_text(f"open_time,open,high,low,close,volume\n{T0}.5,1,2,1,2,0\n")
    return path, "row 1: open_time .* is not whole milliseconds"


def bad_mixed_units(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2025-01.csv"
    text = kline_text(make_candles(2, start=1_735_689_600_000), header=False, unit=1000)
    text += kline_text(make_candles(1, start=1_735_689_600_000 + 2 * H), header=False)
    path.write_text(text)
    return path, "row 3: open_time .* mixes milliseconds with microseconds"


def bad_microseconds_not_whole_ms(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2025-01.csv"
    t = 1_735_689_600_000_123
    path.write_text(f"{t},1,2,1,2,0,{t + H * 1000 - 1},0,0,0,0,0\n")
    return path, "row 1: open_time .* us is not whole ms"


def bad_unsupported_suffix(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.json"
    path.write_text("{}")
    return path, "unsupported file"


def bad_binary_csv(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.csv"
    path.write_bytes(b"open_time,open\n\xff\xfe\x00\x81,\x90\n")
    return path, "not a readable CSV file"


def bad_price_rule(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-1h-2024-01.csv"
    frame = make_candles(4)
    frame.loc[2, "high"] = 50.0
    path.write_text(kline_text(frame, header=True))
    return path, "row 3 \\(open_time 2024-01-01T02:00:00Z\\): low > high"


def bad_conflict_with_store(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_1h.parquet"
    frame = make_candles(3, start=T0 - 3 * H)
    frame["volume"] = 9.0
    frame.to_parquet(path, index=False)
    return path, "open_time 2023-12-31T21:00:00Z conflicts with dataset binance/spot/BTCUSDT/1h"


def bad_funding_rate_nan(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT-fundingRate-2024-01.csv"
    path.write_text(
        f"calc_time,funding_interval_hours,last_funding_rate\n{T0},8,0.0001\n{T0 + 8 * H},8,\n"
    )
    return path, "row 2: last_funding_rate is missing"


def bad_funding_spot(files: Path) -> tuple[Path, str]:
    path = files / "BTCUSDT_spot_funding.parquet"
    pd.DataFrame({"funding_time": [T0], "funding_rate": [0.0]}).to_parquet(path, index=False)
    return path, "funding events belong to the perp market"


BAD_CASES = [
    bad_truncated_parquet,
    bad_corrupt_parquet,
    bad_csv_missing_column,
    bad_csv_extra_column,
    bad_parquet_extra_column,
    bad_duplicate_times,
    bad_unsorted_times,
    bad_mixed_timeframes_binance,
    bad_mixed_timeframes_parquet,
    bad_checksum_mismatch,
    bad_checksum_malformed,
    bad_checksum_other_name,
    bad_unknown_market,
    bad_unknown_timeframe,
    bad_empty_file,
    bad_header_only_csv,
    bad_empty_parquet,
    bad_empty_zip_member,
    bad_header_only_binance,
    bad_blank_binance_csv,
    bad_not_a_zip,
    bad_zip_two_members,
    bad_binance_eleven_columns,
    bad_binance_extra_field,
    bad_binance_header_width,
    bad_non_numeric_cell,
    bad_missing_cell,
    bad_fractional_open_time,
    bad_mixed_units,
    bad_microseconds_not_whole_ms,
    bad_unsupported_suffix,
    bad_binary_csv,
    bad_price_rule,
    bad_conflict_with_store,
    bad_funding_rate_nan,
    bad_funding_spot,
]


@pytest.mark.parametrize("make_bad", BAD_CASES, ids=[f.__name__[4:] for f in BAD_CASES])
def test_bad_input_is_one_line_error_and_store_untouched(
    make_bad: Callable[[Path], tuple[Path, str]], files: Path, store: CandleStore
) -> None:
    path, expected = make_bad(files)
    before = snapshot(store.root)
    with pytest.raises(DataError) as info:
        import_files(store, [path])
    msg = str(info.value)
    assert "\n" not in msg
    assert path.name in msg
    assert re.search(expected, msg), msg
    assert snapshot(store.root) == before


def test_unknown_market_flag(files: Path, store: CandleStore) -> None:
    path = _good_parquet(files)
    before = snapshot(store.root)
    with pytest.raises(DataError, match=r"BTCUSDT_spot_1h.parquet: unknown market 'options'"):
        import_files(store, [path], market="options")
    assert snapshot(store.root) == before


def test_batch_stops_at_first_bad_file_earlier_files_stay(files: Path, store: CandleStore) -> None:
    good = files / "ETHUSDT_spot_1h.parquet"
    make_candles(5).to_parquet(good, index=False)
    bad = files / "XRPUSDT_spot_1h.csv"
    bad.write_bytes(b"")
    with pytest.raises(DataError, match=r"XRPUSDT_spot_1h.csv: empty file"):
        import_files(store, [good, bad])
    assert len(store.read_candles(DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.H1))) == 5
    assert "XRPUSDT" not in {i.symbol for i in store.datasets()}


def test_missing_path_and_empty_folder(tmp_path: Path, store: CandleStore) -> None:
    with pytest.raises(DataError, match=r"nope.csv: no such file or folder"):
        import_files(store, [tmp_path / "nope.csv"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no data files found in"):
        import_files(store, [empty])
    with pytest.raises(DataError, match=r"no such file"):
        read_file(tmp_path / "nope.csv")


def test_collect_paths_skips_checksums_and_other_files(tmp_path: Path) -> None:
    d = tmp_path / "dump"
    (d / "sub").mkdir(parents=True)
    for name in ("b.zip", "b.zip.CHECKSUM", "a.csv", "notes.txt", "sub/c.parquet"):
        (d / name).write_text("x")
    assert [p.relative_to(d).as_posix() for p in collect_paths([d])] == [
        "a.csv",
        "b.zip",
        "sub/c.parquet",
    ]
    assert collect_paths([d / "b.zip.CHECKSUM", d / "a.csv"]) == [d / "a.csv"]


def test_progress_callback(store: CandleStore) -> None:
    seen: list[tuple[int, int, str]] = []
    import_files(store, [FIXTURES], progress=lambda d, t, label: seen.append((d, t, label)))
    assert [(d, t) for d, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    checks: list[int] = []
    check_datasets(store, progress=lambda d, t, label: checks.append(d))
    assert checks == [1, 2]


def test_check_and_select_errors(store: CandleStore) -> None:
    # a selection that matches nothing is a ConfigError (fix the arguments), naming what is stored
    with pytest.raises(
        ConfigError, match=r"symbol DOGEUSDT is not in the store at \S+ \(stored: BTCUSDT\)$"
    ):
        check_datasets(store, symbols=["DOGEUSDT"])
    with pytest.raises(
        ConfigError, match=r"symbol BTCUSTD is not in the store at \S+; did you mean BTCUSDT\?"
    ):
        check_datasets(store, symbols=["BTCUSTD"])
    with pytest.raises(
        ConfigError,
        match=r"no dataset .* matches symbol=BTCUSDT, timeframe=5m \(stored: "
        r"binance/perp/BTCUSDT/funding, binance/spot/BTCUSDT/1h\)",
    ):
        select_datasets(store, symbols=["BTCUSDT"], timeframe=Timeframe.M5)
    assert [i.name for i in select_datasets(store, market=Market.PERP)] == [
        "binance/perp/BTCUSDT/funding"
    ]
    assert select_datasets(store, exchange="binance", market=Market.SPOT)[0].key == SPOT_1H
    with pytest.raises(ConfigError, match=r"matches exchange=bybit"):
        select_datasets(store, exchange="bybit")


def test_check_reports_corruption_in_store(store: CandleStore) -> None:
    # a stored file edited behind the store's back is caught by check, naming the file
    path = store.candle_path(SPOT_1H)
    frame = store.read_candles(SPOT_1H)
    frame.loc[10, "low"] = frame.loc[10, "high"] + 1
    frame.to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"1h.parquet: row 11 .*low > high"):
        check_datasets(store)


def test_resample_dataset_stores_complete_buckets(store: CandleStore) -> None:
    key5 = DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.M5)
    five = make_candles(30, step=300_000)
    store.write_candles(key5, five)
    out = resample_dataset(
        store, symbol="ETHUSDT", market=Market.SPOT, src=Timeframe.M5, dst=Timeframe.H1
    )
    assert out.merge.rows_added == 2
    assert [(p.open_time_ms, p.bars_present) for p in out.result.partial] == [(T0 + 2 * H, 6)]
    hour = store.read_candles(out.dst_key)
    assert hour["open"].tolist() == [five.open[0], five.open[12]]
    assert hour["close"].tolist() == [five.close[11], five.close[23]]
    with pytest.raises(ConfigError, match=r"whole multiple"):
        resample_dataset(
            store, symbol="ETHUSDT", market=Market.SPOT, src=Timeframe.H1, dst=Timeframe.M5
        )
    with pytest.raises(
        ConfigError,
        match=r"cannot resample: no candles for ETHUSDT perp 5m on binance in \S+; ETHUSDT is "
        r"stored as binance/spot/ETHUSDT/5m, binance/spot/ETHUSDT/1h",
    ):
        resample_dataset(
            store, symbol="ETHUSDT", market=Market.PERP, src=Timeframe.M5, dst=Timeframe.H1
        )


def test_import_record_rejects_spot_funding(store: CandleStore) -> None:
    rec = ImportRecord(
        "funding",
        "BTCUSDT",
        Market.SPOT,
        None,
        pd.DataFrame({"funding_time": [T0], "funding_rate": [0.0]}),
        "x",
        "csv",
    )
    with pytest.raises(DataError, match=r"x: funding events belong to the perp market"):
        import_record(store, rec, exchange="binance")


# ---- plausibility of what files hold ---------------------------------------------------


def test_microseconds_converted_only_for_binance_dumps(files: Path) -> None:
    dump = read_file(FIXTURES / "BTCUSDT-1h-2025-01-01.zip")
    assert int(dump.frame["open_time"].iloc[0]) == 1_735_689_600_000
    ours = files / "BTCUSDT_spot_1h.parquet"
    make_candles(3).assign(open_time=lambda f: f.open_time * 1000).to_parquet(ours, index=False)
    with pytest.raises(DataError) as info:
        read_file(ours)
    assert str(info.value) == (
        f"{ours}: open_time looks like microseconds (1.7e+15 at row 1); "
        "divide by 1,000 to get milliseconds"
    )


def test_clock_bounds_the_last_bar(files: Path) -> None:
    path = files / "BTCUSDT_spot_1h.parquet"
    make_candles(4).to_parquet(path, index=False)
    last = T0 + 3 * H
    assert len(read_file(path, now_ms=last - H).frame) == 4
    with pytest.raises(DataError, match=r"open_time 2024-01-01T03:00:00Z at row 4 is after"):
        read_file(path, now_ms=last - H - 1)


def test_binance_funding_dump_checked_against_its_interval(files: Path) -> None:
    path = files / "BTCUSDT-fundingRate-2024-01.csv"
    path.write_text(
        "calc_time,funding_interval_hours,last_funding_rate\n"
        f"{T0},8,0.0001\n{T0 + 8 * H},8,0.0002\n"
    )
    assert len(read_file(path, now_ms=T0).frame) == 2  # the next event is one interval ahead
    with pytest.raises(DataError, match=r"funding_time .* at row 2 is after"):
        read_file(path, now_ms=T0 - 1)


def test_timeframe_flag_named_when_spacing_disagrees(files: Path) -> None:
    path = files / "BTCUSDT_spot_1h.parquet"
    make_candles(6).to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"bars are at least 1h apart .* but --timeframe 5m says"):
        read_file(path, timeframe="5m")


def test_plain_csv_short_row_named(files: Path) -> None:
    path = files / "BTCUSDT_spot_1h.csv"
    lines = make_candles(4).to_csv(index=False).splitlines()
    lines[3] = ",".join(lines[3].split(",")[:4])
    path.write_text("\n".join(lines) + "\n\n")
    with pytest.raises(DataError) as info:
        read_file(path)
    assert str(info.value) == (
        f"{path}: row 3: 4 of 6 columns (expected open_time, open, high, low, close, volume)"
    )
