"""External series files: read (CSV or Parquet), validated, turned into the configured inputs.

A series file has one time column (int64 epoch milliseconds, or ISO-8601 text / a timestamp;
text without a zone is UTC) and numeric value columns. :func:`read_series` reads any such file
into a :class:`PointInTimeSeries` (rows strictly increasing; nothing sorted, dropped or filled).

The configured series (``[[features.series]]``) are daily: :func:`validate_series_frame` holds
a frame to the rules ``atra data import-series`` and the research / replay readers share, as
candles are held to theirs: times plausible and on the day grid (00:00 UTC), strictly
increasing (a duplicate day is refused), every value finite (a missing value is a missing row,
never a NaN that looks like data). Missing days are gaps: REPORTED (counted and listed in the
:class:`SeriesReport`), never filled. :func:`configured_series` reads every configured series
from its file or the store (:class:`~atra.adapters.series_store.SeriesStore`) as
:class:`~atra.core.features.context.SeriesInput` for the one decision context.

Every problem is one :class:`DataError` line naming the file (or series), the row and the
column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from atra.adapters.series_store import SeriesStore
from atra.config import SeriesConfig
from atra.core.features.context import SeriesInput
from atra.core.features.sources import Family, PointInTimeSeries
from atra.core.frames import Gap, find_gaps
from atra.core.plausibility import Limits, check_times_plausible, ms_to_iso
from atra.errors import ConfigError, DataError

__all__ = [
    "SERIES_EARLIEST_MS",
    "SeriesReport",
    "configured_frame",
    "configured_series",
    "read_series",
    "read_series_frame",
    "validate_series_frame",
]

DAY_MS: Final[int] = 86_400_000
HOUR_MS: Final[int] = 3_600_000
SERIES_EARLIEST_MS: Final[int] = 1_230_940_800_000
"""2009-01-03, Bitcoin's first block: no crypto series is older."""


def _read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".parquet"}:
        raise ConfigError(f"{path}: external series must be .csv or .parquet")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable {suffix[1:]} file ({first})") from None


def _time_column_ms(values: pd.Series, path: Path | str, time_col: str) -> pd.Series:
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_datetime64_any_dtype(
        values.dtype
    ):
        return values
    try:
        stamps = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        stamps = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise DataError(
            f"{path}: row {row + 1} of column {time_col!r} is not an ISO-8601 time "
            f"({values.iloc[row]!r})"
        ) from None
    return pd.Series(stamps.dt.as_unit("ms").astype("int64").to_numpy(), index=values.index)


def read_series_frame(path: str | Path, *, time_col: str = "time") -> pd.DataFrame:
    """The frame of a series file with ``time_col`` as int64 ms or datetimes (no other check
    than a time on every row)."""
    path = Path(path)
    frame = _read_frame(path)
    if time_col not in frame.columns:
        raise DataError(f"{path}: missing time column {time_col!r}")
    if frame[time_col].isna().any():
        row = int(np.flatnonzero(frame[time_col].isna().to_numpy())[0])
        raise DataError(f"{path}: row {row + 1} of column {time_col!r} has no time")
    frame[time_col] = _time_column_ms(frame[time_col], path, time_col)
    return frame


def read_series(
    path: str | Path,
    *,
    lag_ms: int,
    max_age_ms: int,
    name: str | None = None,
    time_col: str = "time",
    family: Family = Family.ALTERNATIVE,
    change_bars: int = 24,
) -> PointInTimeSeries:
    """The series in ``path``; ``name`` defaults to the file stem.

    ``lag_ms``: publication delay (a value is usable from ``time + lag_ms`` on);
    ``max_age_ms``: how long after that it may still be used.
    """
    path = Path(path)
    frame = read_series_frame(path, time_col=time_col)
    try:
        return PointInTimeSeries(
            name=name or path.stem,
            frame=frame,
            lag_ms=lag_ms,
            max_age_ms=max_age_ms,
            time_col=time_col,
            family=family,
            change_bars=change_bars,
        )
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


# ---- daily series: validation -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesReport:
    """A valid daily series: size, span, value columns and its gaps (missing days, reported
    only)."""

    name: str
    source: str
    rows: int
    first_ms: int | None
    last_ms: int | None
    columns: tuple[str, ...]
    gaps: tuple[Gap, ...]

    @property
    def gap_count(self) -> int:
        return len(self.gaps)

    @property
    def missing_days(self) -> int:
        return sum(g.missing for g in self.gaps)


def validate_series_frame(
    frame: pd.DataFrame,
    *,
    name: str,
    source: str,
    time_col: str = "time",
    columns: Sequence[str] = (),
    now_ms: int | None = None,
) -> tuple[pd.DataFrame, SeriesReport]:
    """``(normalized frame, report)`` of a daily series, or the first broken rule as one
    :class:`DataError` line (module doc). The normalized frame has ``time`` (int64 ms) then
    ``columns`` (every column but the time when empty) as float64, rows as given."""
    where = source or f"series {name}"
    if time_col not in frame.columns:
        raise DataError(f"{where}: missing time column {time_col!r}")
    values = frame[time_col]
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        values = pd.to_datetime(values, utc=True).dt.as_unit("ms").astype("int64")
    elif values.dtype == object:
        values = _time_column_ms(values, where, time_col)
    if not pd.api.types.is_integer_dtype(values.dtype):
        raise DataError(f"{where}: {time_col} must be int64 ms or a time, got {values.dtype}")
    times = values.to_numpy(dtype=np.int64)
    cols = [str(c) for c in columns] or [str(c) for c in frame.columns if c != time_col]
    missing = [c for c in cols if c not in frame.columns]
    if missing or not cols:
        have = ", ".join(str(c) for c in frame.columns if c != time_col) or "none"
        raise DataError(f"{where}: missing value column(s) {', '.join(missing)} (has {have})")
    out = {"time": times}
    for col in cols:
        dtype = frame[col].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise DataError(f"{where}: column {col!r} must be numeric, got {dtype}")
        arr = frame[col].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{where}: row {row + 1} ({time_col} {ms_to_iso(int(times[row]))}): {col} is "
                f"{arr[row]} (values must be finite; leave a missing day out: it is a gap)"
            )
        out[col] = arr
    limits = Limits(earliest_ms=SERIES_EARLIEST_MS, now_ms=now_ms)
    check_times_plausible(times, DAY_MS, time_name=time_col, source=where, limits=limits)
    rules = (
        (times % DAY_MS != 0, "time is not a day's 00:00 UTC (a daily series is on the day grid)"),
        (np.r_[False, np.diff(times) == 0], "duplicate day (each day appears once)"),
        (np.r_[False, np.diff(times) < 0], "time goes backwards (days must be increasing)"),
    )
    firsts = [(int(np.flatnonzero(m)[0]), why) for m, why in rules if m.any()]
    if firsts:
        row, why = min(firsts)
        raise DataError(f"{where}: row {row + 1} ({time_col} {ms_to_iso(int(times[row]))}): {why}")
    report = SeriesReport(
        name=name,
        source=where,
        rows=int(times.size),
        first_ms=int(times[0]) if times.size else None,
        last_ms=int(times[-1]) if times.size else None,
        columns=tuple(cols),
        gaps=find_gaps(times, DAY_MS),
    )
    return pd.DataFrame(out), report


# ---- configured series ----------------------------------------------------------------------


def configured_frame(cfg: SeriesConfig, data_dir: Path) -> tuple[pd.DataFrame, SeriesReport]:
    """The validated daily frame of a configured series: its ``path``, else the store's."""
    if cfg.path is not None:
        raw = read_series_frame(cfg.path, time_col=cfg.time_col)
        where = str(cfg.path)
    else:
        store = SeriesStore(data_dir)
        if not store.path(cfg.name).exists():
            raise DataError(
                f"features.series {cfg.name}: no path configured and no series {cfg.name} in "
                f"the store at {data_dir} (import it: atra data import-series FILE --name "
                f"{cfg.name})"
            )
        raw = store.read(cfg.name)
        where = str(store.path(cfg.name))
    time_col = cfg.time_col if cfg.path is not None else "time"
    return validate_series_frame(
        raw, name=cfg.name, source=where, time_col=time_col, columns=cfg.columns
    )


def configured_series(
    configs: Sequence[SeriesConfig], data_dir: Path, *, names: Sequence[str] | None = None
) -> tuple[SeriesInput, ...]:
    """Every configured series (or those in ``names``) read from its file or the store,
    validated, with its lag, maximum age, family and scope."""
    out = []
    for cfg in configs:
        if names is not None and cfg.name not in names:
            continue
        frame, _ = configured_frame(cfg, data_dir)
        series = PointInTimeSeries(
            cfg.name,
            frame,
            lag_ms=round(cfg.lag_hours * HOUR_MS),
            max_age_ms=round(cfg.max_age_hours * HOUR_MS),
            family=Family(cfg.family),
        )
        out.append(SeriesInput(series, cfg.applies_to))
    return tuple(out)
