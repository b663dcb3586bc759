"""File readers: our Parquet / CSV layout and Binance public-data (data.binance.vision) dumps.

Each reader returns an :class:`ImportRecord` (kind, symbol, market, timeframe, frame) and
never writes anything. Bad input is a one-line :class:`DataError` naming the file and what
was expected. Validation of the rows themselves (order, prices, gaps) happens when the record
is written to the store; the readers check layout, units, checksums and Binance close times.

Supported names (flags override the symbol, market and timeframe taken from the name):

* ``BTCUSDT_spot_1h.parquet`` / ``.csv``: ``open_time`` (ms) + ``open high low close volume``
* ``BTCUSDT_perp_funding.parquet`` / ``.csv``: ``funding_time`` (ms), ``funding_rate``
* ``SOLUSDT.parquet`` (the stem is the symbol) when ``--market`` and ``--timeframe`` are given;
  ``open_time`` may also be a timestamp column (naive ones are taken as UTC)
* ``BTCUSDT-1h-2024-01.zip`` / ``.csv`` (monthly) and ``BTCUSDT-1h-2024-01-15.zip`` (daily):
  Binance klines, 12 columns, header optional, open times in ms or microseconds
* ``BTCUSDT-fundingRate-2024-01.zip`` / ``.csv``: ``calc_time,funding_interval_hours,
  last_funding_rate``

A ``<file>.CHECKSUM`` beside a file (``"<sha256 hex>  <name>"``) is verified when present.

Every record is also checked for plausibility against the clock (:class:`~atra.core.frames.
Limits`): times after the exchange's launch and at most one bar past now, in milliseconds (a
file in seconds, microseconds or nanoseconds is refused with the conversion; only Binance's
own dumps are converted from microseconds, as Binance documents them), bar spacing matching
the timeframe the file name (or ``--timeframe``) gives, prices and funding rates within
bounds, and every CSV row holding every column.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from atra.core.frames import (
    CANDLE_COLUMNS,
    DEFAULT_LIMITS,
    FUNDING_COLUMNS,
    FUNDING_INTERVAL_MS,
    Limits,
    check_bar_spacing,
    check_times_plausible,
    validate_candles,
    validate_funding,
)
from atra.core.types import Market, Timeframe
from atra.errors import AtraError, DataError

BINANCE_KLINE_COLUMNS: Final[tuple[str, ...]] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
BINANCE_FUNDING_COLUMNS: Final[tuple[str, ...]] = (
    "calc_time",
    "funding_interval_hours",
    "last_funding_rate",
)
CHECKSUM_SUFFIX: Final[str] = ".CHECKSUM"
SUPPORTED_SUFFIXES: Final[tuple[str, ...]] = (".parquet", ".csv", ".zip")
_US_THRESHOLD: Final[int] = 10**14
"""Open times at or above this are microseconds (ms values reach it only in the year 5138)."""

_OURS_RE: Final = re.compile(
    r"^(?P<symbol>[A-Za-z0-9]+)_(?P<market>[A-Za-z-]+)_(?P<tf>funding|\d+[A-Za-z]+)"
    r"\.(?:parquet|csv)$"
)
_KLINE_RE: Final = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<tf>\d+[smhdwM])-\d{4}-\d{2}(?:-\d{2})?\.(?:zip|csv)$"
)
_SYMBOL_RE: Final = re.compile(r"[A-Za-z0-9]+")
_FUNDING_RE: Final = re.compile(r"^(?P<symbol>[A-Z0-9]+)-fundingRate-\d{4}-\d{2}\.(?:zip|csv)$")


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """What one file holds: candles of one timeframe, or funding events, of one symbol."""

    kind: str
    """``"candles"`` or ``"funding"``."""
    symbol: str
    market: Market
    timeframe: Timeframe | None
    frame: pd.DataFrame
    source: str
    """The file, for error messages."""
    fmt: str
    """``"parquet"``, ``"csv"``, ``"binance-klines"`` or ``"binance-funding"``."""
    funding_interval_ms: int | None = None
    timeframe_from: str = "the file name"
    """What gave the timeframe, for error messages: the file name or ``--timeframe``."""


def read_file(
    path: Path | str,
    *,
    market: Market | str | None = None,
    symbol: str | None = None,
    timeframe: Timeframe | str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    now_ms: int | None = None,
) -> ImportRecord:
    """Read one file into an :class:`ImportRecord`; the format is told by the file name.

    The rows are checked against ``limits`` with ``now_ms`` (default: this machine's clock)
    as now, so no time later than one bar past now is accepted.
    """
    record = _read_record(path, market=market, symbol=symbol, timeframe=timeframe)
    clock = int(time.time() * 1000) if now_ms is None else now_ms
    check_record(record, dataclasses.replace(limits, now_ms=clock))
    return record


def check_record(record: ImportRecord, limits: Limits) -> None:
    """Plausibility of a record's rows (see :func:`read_file`); a one-line DataError if not."""
    src = record.source
    if record.kind == "funding":
        step = record.funding_interval_ms or FUNDING_INTERVAL_MS
        validate_funding(record.frame, source=src, interval_ms=step, limits=limits)
        return
    if record.timeframe is None:  # pragma: no cover  (readers always set it for candles)
        raise DataError(f"{src}: candle file without a timeframe")
    tf = record.timeframe
    times = record.frame["open_time"].to_numpy(dtype=np.int64)
    check_times_plausible(times, tf.ms, time_name="open_time", source=src, limits=limits)
    check_bar_spacing(times, tf, source=src, named_by=record.timeframe_from)
    validate_candles(record.frame, tf, source=src, limits=limits)


def _read_record(
    path: Path | str,
    *,
    market: Market | str | None,
    symbol: str | None,
    timeframe: Timeframe | str | None,
) -> ImportRecord:
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise DataError(f"{src}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{src}: empty file (expected candle or funding rows)")
    verify_checksum(path)
    name = path.name
    mkt = _parse_market(market, src) if market is not None else None
    tf = _parse_timeframe(timeframe, src) if timeframe is not None else None
    tf_from = f"--timeframe {tf}" if tf is not None else "the file name"
    if m := _KLINE_RE.fullmatch(name):
        tf = tf or _parse_timeframe(m["tf"], src)
        frame = _read_binance_klines(_csv_bytes(path), tf, src)
        return ImportRecord(
            "candles",
            symbol or m["symbol"],
            mkt or Market.SPOT,
            tf,
            frame,
            src,
            "binance-klines",
            timeframe_from=tf_from,
        )
    if m := _FUNDING_RE.fullmatch(name):
        frame, interval_ms = _read_binance_funding(_csv_bytes(path), src)
        return ImportRecord(
            "funding",
            symbol or m["symbol"],
            mkt or Market.PERP,
            None,
            frame,
            src,
            "binance-funding",
            interval_ms,
        )
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise DataError(
            f"{src}: unsupported file (expected SYMBOL_market_tf.parquet/.csv, "
            "Binance SYMBOL-1h-YYYY-MM[.zip|.csv] or SYMBOL-fundingRate-YYYY-MM[.zip|.csv])"
        )
    frame = _read_parquet(path, src) if suffix == ".parquet" else _read_plain_csv(path, src)
    kind = "funding" if "funding_time" in frame.columns else "candles"
    m = _OURS_RE.fullmatch(name)
    if m is not None:
        symbol = symbol or m["symbol"]
        mkt = mkt or _parse_market(m["market"], src)
        if m["tf"] == "funding":
            kind = "funding"
        elif tf is None:
            tf = _parse_timeframe(m["tf"], src)
    elif symbol is None and mkt is not None and _SYMBOL_RE.fullmatch(path.stem):
        symbol = path.stem  # a bare symbol file (SOLUSDT.parquet) with the market given
    if symbol is None or mkt is None or (kind == "candles" and tf is None):
        raise DataError(
            f"{src}: cannot tell symbol, market and timeframe from the file name "
            "(expected e.g. BTCUSDT_spot_1h.parquet or BTCUSDT_perp_funding.parquet; "
            "or pass --market and --timeframe for SYMBOL.parquet, or --symbol too)"
        )
    columns = FUNDING_COLUMNS if kind == "funding" else CANDLE_COLUMNS
    _expect_columns(frame, columns, src)
    frame = _numeric_frame(frame, columns, src)
    return ImportRecord(
        kind,
        symbol,
        mkt,
        tf if kind == "candles" else None,
        frame,
        src,
        suffix[1:],
        timeframe_from=tf_from,
    )


def verify_checksum(path: Path) -> None:
    """Check ``path`` against ``<path>.CHECKSUM`` (sha256, ``"<hex>  <name>"``) if present."""
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    if not sidecar.is_file():
        return
    parts = sidecar.read_text(encoding="utf-8", errors="replace").split()
    if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
        raise DataError(f"{sidecar}: malformed checksum file (expected '<sha256 hex>  <name>')")
    expected, named = parts[0].lower(), parts[1].lstrip("*")
    if named != path.name:
        raise DataError(f"{sidecar}: checksum is for {named!r}, expected {path.name!r}")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise DataError(
            f"{path}: sha256 checksum mismatch (expected {expected} from {sidecar.name}, "
            f"got {digest.hexdigest()})"
        )


def is_importable(path: Path) -> bool:
    """Data files the importer reads (``.CHECKSUM`` sidecars and others are skipped)."""
    return path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES


# ---- helpers ---------------------------------------------------------------------------


def _parse_market(market: Market | str, src: str) -> Market:
    if isinstance(market, Market):
        return market
    try:
        return Market.parse(market)
    except AtraError:
        raise DataError(f"{src}: unknown market {market!r} (expected spot or perp)") from None


def _parse_timeframe(timeframe: Timeframe | str, src: str) -> Timeframe:
    if isinstance(timeframe, Timeframe):
        return timeframe
    try:
        return Timeframe.parse(timeframe)
    except AtraError:
        allowed = ", ".join(t.value for t in Timeframe)
        raise DataError(
            f"{src}: unsupported timeframe {timeframe!r} (expected one of {allowed})"
        ) from None


def _read_parquet(path: Path, src: str) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(
            f"{src}: not a readable Parquet file (truncated or corrupt: {reason})"
        ) from None
    if table.num_rows == 0:
        raise DataError(f"{src}: empty file (no rows)")
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _check_row_widths(data: bytes, width: int, columns: str, src: str, *, header: bool) -> None:
    """Refuse the first row without exactly ``width`` fields, naming it (1-based data row,
    header excluded, blank lines skipped as the CSV reader skips them)."""
    text = data.decode("utf-8", errors="replace")
    row = 0
    for fields in csv.reader(io.StringIO(text, newline="")):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if header:
            header = False
            continue
        row += 1
        if len(fields) != width:
            raise DataError(
                f"{src}: row {row}: {len(fields)} of {width} columns (expected {columns})"
            )


def _read_plain_csv(path: Path, src: str) -> pd.DataFrame:
    data = path.read_bytes()
    first = next(csv.reader(io.StringIO(data.decode("utf-8", errors="replace"))), [])
    if first:
        _check_row_widths(data, len(first), ", ".join(first), src, header=True)
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{src}: not a readable CSV file ({' '.join(str(exc).split())})") from None
    if frame.empty:
        raise DataError(f"{src}: empty file (a header but no rows)")
    return frame


def _expect_columns(frame: pd.DataFrame, columns: tuple[str, ...], src: str) -> None:
    got = [str(c) for c in frame.columns]
    missing = [c for c in columns if c not in got]
    extra = [c for c in got if c not in columns]
    if missing or extra:
        raise DataError(
            f"{src}: expected columns {', '.join(columns)}; "
            f"missing: {', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'}"
        )


def _numeric_frame(frame: pd.DataFrame, columns: tuple[str, ...], src: str) -> pd.DataFrame:
    """Columns in contract order: the time as int64, the rest float64; bad cells name the row."""
    out: dict[str, np.ndarray] = {}
    for i, col in enumerate(columns):
        if i == 0 and pd.api.types.is_datetime64_any_dtype(frame[col].dtype):
            out[col] = _datetimes_to_ms(frame[col], col, src)
            continue
        values = _to_number(frame[col], col, src)
        if i == 0:
            out[col] = _to_int_times(values, col, src)
        else:
            out[col] = values.astype(np.float64, copy=False)
    return pd.DataFrame(out)


def _to_number(series: pd.Series, col: str, src: str) -> np.ndarray:
    if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_float_dtype(series.dtype):
        if pd.api.types.is_integer_dtype(series.dtype):
            return series.to_numpy(dtype=np.int64)
        values = series.to_numpy(dtype=np.float64)
    else:
        coerced = pd.to_numeric(series, errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & series.notna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise DataError(f"{src}: row {row + 1}: {col} {series.iloc[row]!r} is not a number")
        values = coerced.to_numpy(dtype=np.float64)
    missing = np.flatnonzero(np.isnan(values))
    if missing.size:
        raise DataError(f"{src}: row {int(missing[0]) + 1}: {col} is missing")
    return values


def _datetimes_to_ms(series: pd.Series, col: str, src: str) -> np.ndarray:
    """Timestamps (tz-aware, or naive taken as UTC) -> int64 ms since the epoch."""
    missing = np.flatnonzero(series.isna().to_numpy())
    if missing.size:
        raise DataError(f"{src}: row {int(missing[0]) + 1}: {col} is missing")
    stamps = series.dt.tz_convert("UTC") if series.dt.tz is not None else series
    ns = stamps.dt.as_unit("ns").astype("int64").to_numpy()
    if (ns % 1_000_000).any():
        row = int(np.flatnonzero(ns % 1_000_000)[0])
        raise DataError(f"{src}: row {row + 1}: {col} {series.iloc[row]} is not whole milliseconds")
    ms: np.ndarray = ns // 1_000_000
    return ms


def _to_int_times(values: np.ndarray, col: str, src: str) -> np.ndarray:
    if values.dtype == np.int64:
        return values
    frac = np.flatnonzero(values != np.round(values))
    if frac.size:
        row = int(frac[0])
        raise DataError(
            f"{src}: row {row + 1}: {col} {float(values[row])!r} is not whole milliseconds"
        )
    return values.astype(np.int64)


def _csv_bytes(path: Path) -> bytes:
    """The CSV text of a Binance dump: the file itself, or the one CSV inside a zip."""
    src = str(path)
    if path.suffix.lower() != ".zip":
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if len(members) != 1:
                raise DataError(
                    f"{src}: expected exactly one .csv inside the zip, found {len(members)}"
                )
            data = zf.read(members[0])
    except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(f"{src}: not a valid zip archive ({exc})") from None
    if not data.strip():
        raise DataError(f"{src}: empty file (the CSV inside the zip has no rows)")
    return data


def _read_binance_csv(data: bytes, columns: tuple[str, ...], src: str) -> pd.DataFrame:
    """A Binance CSV with or without a header row; exactly ``len(columns)`` columns."""
    first = data.lstrip().split(b"\n", 1)[0].strip()
    if not first:
        raise DataError(f"{src}: empty file (expected {len(columns)} comma-separated columns)")
    has_header = not first.split(b",")[0].strip().lstrip(b"-").isdigit()
    _check_row_widths(data, len(columns), ", ".join(columns), src, header=has_header)
    try:
        frame = pd.read_csv(
            io.BytesIO(data), header=None, skiprows=1 if has_header else 0, dtype=str
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{src}: empty file (a header but no rows)") from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{src}: expected {len(columns)} columns in every row ({' '.join(str(exc).split())})"
        ) from None
    if frame.shape[1] != len(columns):
        raise DataError(
            f"{src}: expected {len(columns)} columns ({', '.join(columns)}), got {frame.shape[1]}"
        )
    if has_header:
        header = [h.strip() for h in first.decode("utf-8", "replace").split(",")]
        if len(header) != len(columns):
            raise DataError(
                f"{src}: header has {len(header)} columns, expected {len(columns)} "
                f"({', '.join(columns)})"
            )
    frame.columns = pd.Index(columns)
    return frame


def _ms_times(values: np.ndarray, col: str, src: str) -> tuple[np.ndarray, bool]:
    """Times in ms; microsecond files (Binance spot from 2025) are detected by magnitude."""
    is_us = values >= _US_THRESHOLD
    if not is_us.any():
        return values, False
    if not is_us.all():
        row = int(np.flatnonzero(~is_us)[0])
        raise DataError(
            f"{src}: row {row + 1}: {col} {int(values[row])} mixes milliseconds with "
            "microseconds (expected one unit per file)"
        )
    return values // 1000, True


def _read_binance_klines(data: bytes, timeframe: Timeframe, src: str) -> pd.DataFrame:
    raw = _read_binance_csv(data, BINANCE_KLINE_COLUMNS, src)
    num = _numeric_frame(raw, BINANCE_KLINE_COLUMNS[:7], src)
    open_raw = num["open_time"].to_numpy()
    close_raw = _to_int_times(num["close_time"].to_numpy(dtype=np.float64), "close_time", src)
    open_ms, is_us = _ms_times(open_raw, "open_time", src)
    unit = 1000 if is_us else 1
    if is_us and (open_raw % 1000).any():
        row = int(np.flatnonzero(open_raw % 1000)[0])
        raise DataError(f"{src}: row {row + 1}: open_time {int(open_raw[row])} us is not whole ms")
    expected_close = open_raw + timeframe.ms * unit - 1
    wrong = np.flatnonzero(close_raw != expected_close)
    if wrong.size:
        row = int(wrong[0])
        span_ms = (int(close_raw[row]) - int(open_raw[row]) + 1) // unit
        raise DataError(
            f"{src}: row {row + 1}: close_time {int(close_raw[row])} implies a {span_ms} ms bar, "
            f"expected {timeframe} ({timeframe.ms} ms) from the file name "
            "(mixed timeframes in one file?)"
        )
    frame = num[list(CANDLE_COLUMNS)].copy()
    frame["open_time"] = open_ms
    return frame


def _read_binance_funding(data: bytes, src: str) -> tuple[pd.DataFrame, int | None]:
    raw = _read_binance_csv(data, BINANCE_FUNDING_COLUMNS, src)
    num = _numeric_frame(raw, BINANCE_FUNDING_COLUMNS, src)
    times, _ = _ms_times(num["calc_time"].to_numpy(), "calc_time", src)
    hours = np.unique(num["funding_interval_hours"].to_numpy())
    interval_ms = int(hours[0] * 3_600_000) if hours.size == 1 and hours[0] > 0 else None
    frame = pd.DataFrame(
        {"funding_time": times, "funding_rate": num["last_funding_rate"].to_numpy()}
    )
    return frame, interval_ms
