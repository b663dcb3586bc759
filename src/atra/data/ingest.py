"""Import files into the candle store, check stored datasets, resample datasets.

Every file is all-or-nothing: it is read, validated (against the store's sane bounds,
``[data.bounds]``) and merged atomically, or the store stays
exactly as it was and a one-line :class:`DataError` names the file. A batch stops at the
first bad file; the files before it stay imported (each one complete). Long work reports
progress through an optional ``progress(done, total, label)`` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from atra.adapters.importers import CHECKSUM_SUFFIX, ImportRecord, is_importable, read_file
from atra.adapters.store import (
    CandleStore,
    DatasetInfo,
    DatasetKey,
    MergeResult,
    listing,
    nearest_names,
)
from atra.core.frames import (
    FUNDING_INTERVAL_MS,
    ResampleResult,
    ValidationReport,
    resample_candles,
    validate_candles,
    validate_funding,
)
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, label)``: called after each unit of work."""


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """One imported file: where it went, what the merge did, what validation found."""

    source: str
    kind: str
    dataset: str
    """Dataset name, e.g. ``binance/spot/BTCUSDT/1h``."""
    merge: MergeResult
    report: ValidationReport


@dataclass(frozen=True, slots=True)
class DatasetCheck:
    """A stored dataset and its validation report (gaps, zero-volume bars)."""

    info: DatasetInfo
    report: ValidationReport


@dataclass(frozen=True, slots=True)
class ResampleOutcome:
    """A resampled dataset: source and target keys, the result, and the merge into the store."""

    src_key: DatasetKey
    dst_key: DatasetKey
    result: ResampleResult
    merge: MergeResult


def collect_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files to import: each file as given, each folder's data files (recursive, sorted).

    ``.CHECKSUM`` sidecars are skipped (they are checked with their file).
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(p for p in sorted(path.rglob("*")) if is_importable(p))
        elif path.is_file():
            if not path.name.endswith(CHECKSUM_SUFFIX):
                out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return out


def import_record(store: CandleStore, record: ImportRecord, *, exchange: str) -> ImportOutcome:
    """Validate a record and merge it into its dataset (atomic; DataError leaves no trace)."""
    if record.kind == "funding":
        if record.market is not Market.PERP:
            raise DataError(
                f"{record.source}: funding events belong to the perp market, got {record.market}"
            )
        interval_ms = record.funding_interval_ms or FUNDING_INTERVAL_MS
        report = validate_funding(
            record.frame, source=record.source, interval_ms=interval_ms, limits=store.limits
        )
        merge = store.write_funding(exchange, record.symbol, record.frame, source=record.source)
        name = f"{exchange}/{Market.PERP}/{record.symbol}/funding"
        return ImportOutcome(record.source, "funding", name, merge, report)
    if record.timeframe is None:  # pragma: no cover  (readers always set it for candles)
        raise DataError(f"{record.source}: candle file without a timeframe")
    key = DatasetKey(exchange, record.market, record.symbol, record.timeframe)
    report = validate_candles(
        record.frame, key.timeframe, source=record.source, limits=store.limits
    )
    merge = store.write_candles(key, record.frame, source=record.source)
    return ImportOutcome(record.source, "candles", str(key), merge, report)


def import_files(
    store: CandleStore,
    paths: Sequence[Path | str],
    *,
    exchange: str = "binance",
    market: Market | str | None = None,
    symbol: str | None = None,
    timeframe: Timeframe | str | None = None,
    progress: ProgressFn | None = None,
) -> list[ImportOutcome]:
    """Import files (folders expanded) one by one; stop at the first bad file."""
    files = collect_paths(paths)
    if not files:
        raise DataError(f"no data files found in {', '.join(str(p) for p in paths) or '(none)'}")
    outcomes: list[ImportOutcome] = []
    for i, path in enumerate(files):
        record = read_file(
            path, market=market, symbol=symbol, timeframe=timeframe, limits=store.limits
        )
        outcomes.append(import_record(store, record, exchange=exchange))
        if progress is not None:
            progress(i + 1, len(files), path.name)
    return outcomes


def select_datasets(
    store: CandleStore,
    *,
    symbols: Sequence[str] = (),
    market: Market | None = None,
    timeframe: Timeframe | None = None,
    exchange: str | None = None,
) -> list[DatasetInfo]:
    """Stored datasets matching the filters. A symbol or filter that matches nothing is a
    :class:`ConfigError` (the selection is wrong, not the data) naming the nearest stored
    symbols and what is stored."""
    infos = store.datasets()
    stored_symbols = sorted({i.symbol for i in infos})
    for sym in symbols:
        if sym not in stored_symbols:
            close = nearest_names(sym, stored_symbols)
            guess = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(
                f"symbol {sym} is not in the store at {store.root}{guess} "
                f"(stored: {listing(stored_symbols) or 'none'})"
            )
    chosen = [
        i
        for i in infos
        if (not symbols or i.symbol in symbols)
        and (market is None or i.market is market)
        and (timeframe is None or i.timeframe is timeframe)
        and (exchange is None or i.exchange == exchange)
    ]
    filtered = bool(symbols) or market is not None or timeframe is not None or exchange
    if filtered and not chosen:
        wanted = ", ".join(
            f"{k}={v}"
            for k, v in (
                ("symbol", ",".join(symbols)),
                ("market", market),
                ("timeframe", timeframe),
                ("exchange", exchange),
            )
            if v
        )
        held = listing(i.name for i in infos) or "nothing"
        raise ConfigError(
            f"no dataset in the store at {store.root} matches {wanted} (stored: {held})"
        )
    return chosen


def check_datasets(
    store: CandleStore,
    *,
    symbols: Sequence[str] = (),
    market: Market | None = None,
    timeframe: Timeframe | None = None,
    exchange: str | None = None,
    progress: ProgressFn | None = None,
) -> list[DatasetCheck]:
    """Re-validate stored datasets (against the store's bounds) and report their gaps and
    zero-volume bars."""
    chosen = select_datasets(
        store, symbols=symbols, market=market, timeframe=timeframe, exchange=exchange
    )
    checks: list[DatasetCheck] = []
    for n, info in enumerate(chosen):
        source = str(info.path)
        key = info.key
        if key is None:
            frame = store.read_funding(info.exchange, info.symbol)
            report = validate_funding(frame, source=source, limits=store.limits)
        else:
            frame = store.read_candles(key)
            report = validate_candles(frame, key.timeframe, source=source, limits=store.limits)
        checks.append(DatasetCheck(info, report))
        if progress is not None:
            progress(n + 1, len(chosen), info.name)
    return checks


def resample_dataset(
    store: CandleStore,
    *,
    symbol: str,
    market: Market,
    src: Timeframe,
    dst: Timeframe,
    exchange: str = "binance",
) -> ResampleOutcome:
    """Resample a stored dataset to ``dst`` and merge the complete bars into the store."""
    if dst.ms <= src.ms or dst.ms % src.ms:
        raise ConfigError(
            f"cannot resample {src} to {dst}: the target must be a whole multiple of the source"
        )
    src_key = DatasetKey(exchange, market, symbol, src)
    dst_key = DatasetKey(exchange, market, symbol, dst)
    if not store.candle_path(src_key).exists():
        raise ConfigError(f"cannot resample: {store.describe_missing(src_key)}")
    frame = store.read_candles(src_key)
    result = resample_candles(frame, src, dst, source=str(src_key))
    merge = store.write_candles(dst_key, result.frame, source=f"resample of {src_key}")
    return ResampleOutcome(src_key, dst_key, result, merge)
