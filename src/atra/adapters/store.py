"""Parquet candle and funding store: one file per exchange / market / symbol / timeframe.

Layout under ``root``::

    {root}/{exchange}/{market}/{symbol}/{timeframe}.parquet     candles
    {root}/{exchange}/perp/{symbol}/funding.parquet             funding events

Writes validate first, against the store's :class:`~atra.core.bounds.Limits` (the config's
``[data.bounds]``; a :class:`DataError` leaves the store untouched), merge idempotently
(writing the same rows again changes nothing, not even the file; a different value for a time
already stored is a DataError naming that time) and are atomic (temp file in the same folder,
then ``os.replace``).

One writer per dataset: every read -> merge -> replace runs under an inter-process lock
(``.{file}.lock`` next to the dataset), so concurrent writers of one dataset queue up and each
reports the rows it really added; a writer that waits longer than ``lock_timeout_s`` fails with
a one-line DataError. Temp files a killed writer left are removed by the next writer of that
dataset, under the lock. New files get the mode the umask gives (``0o666 & ~umask``).

Reads are lean: a schema check, no re-validation. Listing the store
(:meth:`CandleStore.datasets`) reads the Parquet footers only and does not load pandas, so
``atra data list`` stays fast on a large store.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atra.adapters.filelocks import (
    DEFAULT_LOCK_TIMEOUT_S,
    create_temp,
    dataset_lock,
    remove_stale_temps,
)
from atra.core.bounds import DEFAULT_LIMITS, Limits
from atra.core.types import Market, Timeframe
from atra.errors import DataError

if TYPE_CHECKING:  # pandas and the frame rules load on first read / write, not to list the store
    import pandas as pd

FUNDING_SCHEMA: Final = pa.schema(
    [pa.field("funding_time", pa.int64()), pa.field("funding_rate", pa.float64())]
)
FUNDING_FILE: Final[str] = "funding"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LISTED: Final[int] = 20
_CLOSE_CUTOFF: Final[float] = 0.8


@functools.cache
def candle_schema() -> pa.Schema:
    """The stored candle schema: ``open_time`` int64 ms, then float64 OHLCV columns."""
    from atra.core.frames import CANDLE_COLUMNS

    return pa.schema(
        [pa.field("open_time", pa.int64())]
        + [pa.field(c, pa.float64()) for c in CANDLE_COLUMNS[1:]]
    )


def _check_name(what: str, value: str) -> str:
    if not _NAME_RE.fullmatch(value) or ".." in value:
        raise DataError(f"invalid {what} {value!r}: expected letters, digits, '_', '-' or '.'")
    return value


@dataclass(frozen=True, slots=True)
class DatasetKey:
    """Which candle dataset: exchange, market, symbol and bar size."""

    exchange: str
    market: Market
    symbol: str
    timeframe: Timeframe

    def __str__(self) -> str:
        return f"{self.exchange}/{self.market}/{self.symbol}/{self.timeframe}"


@dataclass(frozen=True, slots=True)
class MergeResult:
    """Rows in the dataset before the write, rows the write added, rows after."""

    rows_before: int
    rows_added: int
    rows_after: int


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One stored dataset as listed by :meth:`CandleStore.datasets`."""

    kind: str
    """``"candles"`` or ``"funding"``."""
    exchange: str
    market: Market
    symbol: str
    timeframe: Timeframe | None
    rows: int
    first_ms: int | None
    last_ms: int | None
    path: Path

    @property
    def key(self) -> DatasetKey | None:
        """The candle key (``None`` for funding)."""
        if self.timeframe is None:
            return None
        return DatasetKey(self.exchange, self.market, self.symbol, self.timeframe)

    @property
    def name(self) -> str:
        """``binance/spot/BTCUSDT/1h`` or ``binance/perp/BTCUSDT/funding``."""
        last = str(self.timeframe) if self.timeframe is not None else FUNDING_FILE
        return f"{self.exchange}/{self.market}/{self.symbol}/{last}"


class CandleStore:
    """Parquet candle and funding store rooted at ``root``; every write is validated against
    ``limits`` (the sane bounds of ``[data.bounds]``)."""

    def __init__(
        self,
        root: Path | str = "data",
        *,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not (math.isfinite(lock_timeout_s) and lock_timeout_s >= 0):
            raise DataError(
                f"store lock timeout must be a finite number >= 0 s, got {lock_timeout_s}"
            )
        self.root = Path(root)
        self.lock_timeout_s = float(lock_timeout_s)
        self.limits = limits

    # ---- paths -------------------------------------------------------------------------

    def candle_path(self, key: DatasetKey) -> Path:
        """Where the dataset of ``key`` lives."""
        return self._inside(
            Path(
                _check_name("exchange", key.exchange),
                key.market.value,
                _check_name("symbol", key.symbol),
                f"{key.timeframe.value}.parquet",
            )
        )

    def funding_path(self, exchange: str, symbol: str) -> Path:
        """Where the funding events of ``symbol`` live."""
        return self._inside(
            Path(
                _check_name("exchange", exchange),
                Market.PERP.value,
                _check_name("symbol", symbol),
                f"{FUNDING_FILE}.parquet",
            )
        )

    def _inside(self, relative: Path) -> Path:
        """``root / relative``, refused unless it stays inside the root (no ``..``, no
        absolute part: a user-given name never reaches outside the store)."""
        root = os.path.normpath(os.path.abspath(self.root))
        full = os.path.normpath(os.path.join(root, relative))
        if relative.is_absolute() or os.path.commonpath([root, full]) != root:
            raise DataError(f"store path {relative} leaves the store at {self.root}")
        return self.root / relative

    # ---- candles -----------------------------------------------------------------------

    def write_candles(
        self, key: DatasetKey, frame: pd.DataFrame, *, source: str = ""
    ) -> MergeResult:
        """Validate ``frame`` and merge it into the dataset of ``key`` (atomic, idempotent)."""
        from atra.core.frames import normalize_candles, validate_candles

        validate_candles(frame, key.timeframe, source=source or str(key), limits=self.limits)
        new = normalize_candles(frame)
        path = self.candle_path(key)
        return _merge_write(
            path, new, "open_time", candle_schema(), str(key), source, self.lock_timeout_s
        )

    def read_candles(
        self, key: DatasetKey, start_ms: int | None = None, end_ms: int | None = None
    ) -> pd.DataFrame:
        """Candles of ``key`` with ``start_ms <= open_time < end_ms`` (bounds optional)."""
        path = self.candle_path(key)
        return _read(path, "open_time", candle_schema(), str(key), self.root, start_ms, end_ms)

    def last_open_time(self, key: DatasetKey) -> int | None:
        """Open time of the newest stored bar, ``None`` if the dataset does not exist."""
        path = self.candle_path(key)
        return _time_range(path, str(key))[2] if path.exists() else None

    def count_candles(
        self, key: DatasetKey, start_ms: int | None = None, end_ms: int | None = None
    ) -> int:
        """Stored bars of ``key`` with ``start_ms <= open_time < end_ms`` (bounds optional);
        reads the time column only."""
        path = self.candle_path(key)
        if not path.exists():
            raise DataError(f"no dataset {key} in the store at {self.root} (expected {path})")
        filters = _range_filters("open_time", start_ms, end_ms)
        try:
            table = pq.read_table(path, columns=["open_time"], filters=filters or None)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"dataset {key}: cannot read {path}: {_one_line(exc)}") from None
        return int(table.num_rows)

    # ---- funding -----------------------------------------------------------------------

    def write_funding(
        self, exchange: str, symbol: str, frame: pd.DataFrame, *, source: str = ""
    ) -> MergeResult:
        """Validate and merge funding events of ``symbol`` (atomic, idempotent)."""
        from atra.core.frames import normalize_funding, validate_funding

        name = f"{exchange}/perp/{symbol}/funding"
        validate_funding(frame, source=source or name, limits=self.limits)
        new = normalize_funding(frame)
        path = self.funding_path(exchange, symbol)
        return _merge_write(
            path, new, "funding_time", FUNDING_SCHEMA, name, source, self.lock_timeout_s
        )

    def read_funding(
        self, exchange: str, symbol: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> pd.DataFrame:
        """Funding events with ``start_ms <= funding_time < end_ms`` (bounds optional)."""
        path = self.funding_path(exchange, symbol)
        name = f"{exchange}/perp/{symbol}/funding"
        return _read(path, "funding_time", FUNDING_SCHEMA, name, self.root, start_ms, end_ms)

    def last_funding_time(self, exchange: str, symbol: str) -> int | None:
        """Time of the newest stored funding event, ``None`` if there is none."""
        path = self.funding_path(exchange, symbol)
        name = f"{exchange}/perp/{symbol}/funding"
        return _time_range(path, name)[2] if path.exists() else None

    # ---- listing -----------------------------------------------------------------------

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset in the store, sorted by exchange, market, symbol, timeframe."""
        infos: list[DatasetInfo] = []
        if not self.root.is_dir():
            return infos
        for path in sorted(self.root.glob("*/*/*/*.parquet")):
            if path.name.startswith("."):
                continue
            symbol_dir = path.parent
            exchange = symbol_dir.parent.parent.name
            try:
                market = Market(symbol_dir.parent.name)
            except ValueError:
                continue
            stem = path.stem
            timeframe: Timeframe | None
            if stem == FUNDING_FILE:
                kind, timeframe = "funding", None
            else:
                try:
                    kind, timeframe = "candles", Timeframe(stem)
                except ValueError:
                    continue
            rows, first, last = _time_range(path, str(path))
            infos.append(
                DatasetInfo(
                    kind, exchange, market, symbol_dir.name, timeframe, rows, first, last, path
                )
            )
        infos.sort(key=lambda i: (i.exchange, i.market.value, i.symbol, i.kind, _tf_order(i)))
        return infos

    def describe_missing(self, key: DatasetKey) -> str:
        """Why ``key`` is not stored, for a one-line error: the nearest stored symbols of its
        exchange, market and bar size, where else the symbol is stored, and what is stored::

            no candles for BTCUSTD spot 1h on binance in data; did you mean BTCUSDT?
            (stored: BTCUSDT, ETHUSDT)
        """
        candles = [i for i in self.datasets() if i.kind == "candles"]
        same = sorted(
            {
                i.symbol
                for i in candles
                if i.exchange == key.exchange
                and i.market is key.market
                and i.timeframe is key.timeframe
            }
        )
        text = (
            f"no candles for {key.symbol} {key.market} {key.timeframe} on {key.exchange} "
            f"in {self.root}"
        )
        close = nearest_names(key.symbol, same)
        if close:
            text += f"; did you mean {' or '.join(close)}?"
        elsewhere = [i.name for i in candles if i.symbol == key.symbol and i.key != key]
        if elsewhere:
            text += f"; {key.symbol} is stored as {listing(elsewhere)}"
        if same:
            return f"{text} (stored: {listing(same)})"
        combos = sorted({f"{i.exchange}/{i.market}/*/{i.timeframe}" for i in candles})
        held = listing(combos) if combos else "nothing"
        none = f"no {key.exchange} {key.market} {key.timeframe} candles stored"
        return f"{text} ({none}; the store holds {held})"


def nearest_names(name: str, stored: Iterable[str]) -> list[str]:
    """Up to three stored names closest to ``name`` (case-insensitive), best first: those it
    begins (``BTC`` -> ``BTCUSDT``), then near spellings (``BTCUSTD`` -> ``BTCUSDT``).

    The cutoff is high because symbols share their quote asset: at difflib's default every
    ``...USDT`` pair looks close to every other one.
    """
    by_upper = {s.upper(): s for s in stored}
    wanted = name.strip().upper()
    if not wanted:
        return []
    starts = sorted(u for u in by_upper if u.startswith(wanted) and u != wanted)
    close = difflib.get_close_matches(wanted, list(by_upper), n=3, cutoff=_CLOSE_CUTOFF)
    return [by_upper[u] for u in dict.fromkeys([*starts, *close])][:3]


def listing(names: Iterable[str], limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` for an error message; past ``limit`` names, ``... (N more)``."""
    items = list(names)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _tf_order(info: DatasetInfo) -> int:
    return info.timeframe.ms if info.timeframe is not None else 0


def _open_table(path: Path, name: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"dataset {name}: cannot read {path}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _time_range(path: Path, name: str) -> tuple[int, int | None, int | None]:
    """Rows, first and last time of a stored (sorted) dataset, from the footer when possible
    (else from the time column alone)."""
    with _open_table(path, name) as pf:
        meta = pf.metadata
        rows = int(meta.num_rows)
        if rows == 0:
            return 0, None, None
        first_stats = meta.row_group(0).column(0).statistics
        last_stats = meta.row_group(meta.num_row_groups - 1).column(0).statistics
        if (
            first_stats is not None
            and last_stats is not None
            and first_stats.has_min_max
            and last_stats.has_min_max
        ):
            return rows, int(first_stats.min), int(last_stats.max)
        col = pf.read(columns=[pf.schema_arrow.names[0]]).column(0).to_numpy()
        return rows, int(col[0]), int(col[-1])


def _range_filters(
    time_col: str, start_ms: int | None, end_ms: int | None
) -> list[tuple[str, str, int]]:
    filters: list[tuple[str, str, int]] = []
    if start_ms is not None:
        filters.append((time_col, ">=", int(start_ms)))
    if end_ms is not None:
        filters.append((time_col, "<", int(end_ms)))
    return filters


def _read(
    path: Path,
    time_col: str,
    schema: pa.Schema,
    name: str,
    root: Path,
    start_ms: int | None,
    end_ms: int | None,
) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"no dataset {name} in the store at {root} (expected {path})")
    filters = _range_filters(time_col, start_ms, end_ms)
    try:
        table = pq.read_table(path, filters=filters or None)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"dataset {name}: cannot read {path}: {_one_line(exc)}") from None
    if not table.schema.equals(schema, check_metadata=False):
        raise DataError(
            f"dataset {name}: {path} has schema ({_schema_text(table.schema)}), "
            f"expected ({_schema_text(schema)})"
        )
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _merge_write(
    path: Path,
    new: pd.DataFrame,
    time_col: str,
    schema: pa.Schema,
    name: str,
    source: str,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> MergeResult:
    """Merge ``new`` into the dataset at ``path`` under the dataset's writer lock: the rows
    read, the rows counted as added and the file replaced are one consistent step."""
    if new.empty and not path.exists():
        return MergeResult(0, 0, 0)  # nothing to add: create no folder, no lock file
    with dataset_lock(path, name, lock_timeout_s):
        remove_stale_temps(path)
        return _merge_locked(path, new, time_col, schema, name, source)


merge_write = _merge_write
"""The locked, atomic, idempotent merge, for the store's other datasets (external series)."""


def _merge_locked(
    path: Path,
    new: pd.DataFrame,
    time_col: str,
    schema: pa.Schema,
    name: str,
    source: str,
) -> MergeResult:
    import pandas as pd

    from atra.core.frames import ms_to_iso

    if path.exists():
        old = _read(path, time_col, schema, name, path.parent, None, None)
    else:
        old = new.iloc[0:0]
    rows_before = len(old)
    old_t = old[time_col].to_numpy(dtype=np.int64)
    new_t = new[time_col].to_numpy(dtype=np.int64)
    common, old_idx, new_idx = np.intersect1d(old_t, new_t, assume_unique=True, return_indices=True)
    if common.size:
        value_cols = [c for c in new.columns if c != time_col]
        old_vals = old[value_cols].to_numpy(dtype=np.float64)[old_idx]
        new_vals = new[value_cols].to_numpy(dtype=np.float64)[new_idx]
        differs = np.flatnonzero((old_vals != new_vals).any(axis=1))
        if differs.size:
            i = int(differs[0])
            j = int(np.flatnonzero(old_vals[i] != new_vals[i])[0])
            col = value_cols[j]
            raise DataError(
                f"{source or name}: {time_col} {ms_to_iso(int(common[i]))} conflicts with "
                f"dataset {name}: {col} stored {float(old_vals[i][j])!r}, "
                f"new {float(new_vals[i][j])!r} (stored data is never overwritten)"
            )
    added_mask = np.ones(new_t.size, dtype=bool)
    added_mask[new_idx] = False
    rows_added = int(added_mask.sum())
    if rows_added == 0:
        return MergeResult(rows_before, 0, rows_before)
    merged = pd.concat([old, new[added_mask]], ignore_index=True)
    order = np.argsort(merged[time_col].to_numpy(dtype=np.int64), kind="stable")
    merged = merged.iloc[order].reset_index(drop=True)
    _atomic_write(path, pa.Table.from_pandas(merged, schema=schema, preserve_index=False))
    return MergeResult(rows_before, rows_added, len(merged))


def _atomic_write(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(path)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=65_536)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
