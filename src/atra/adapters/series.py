"""Read a timestamped external series (CSV or Parquet) into a :class:`PointInTimeSeries`.

The file has one time column (int64 epoch milliseconds, or ISO-8601 text / a timestamp; text
without a zone is UTC) and numeric value columns. Rows must be strictly increasing in time:
nothing is sorted, dropped or filled here. Every problem is one :class:`DataError` line
naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from atra.core.features.sources import Family, PointInTimeSeries
from atra.errors import ConfigError, DataError


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


def _time_column_ms(values: pd.Series, path: Path, time_col: str) -> pd.Series:
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
    frame = _read_frame(path)
    if time_col not in frame.columns:
        raise DataError(f"{path}: missing time column {time_col!r}")
    if frame[time_col].isna().any():
        row = int(np.flatnonzero(frame[time_col].isna().to_numpy())[0])
        raise DataError(f"{path}: row {row + 1} of column {time_col!r} has no time")
    frame[time_col] = _time_column_ms(frame[time_col], path, time_col)
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
