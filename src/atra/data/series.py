"""Import external daily series into the store (``atra data import-series``) and check them.

A file is all-or-nothing: read, validated as a daily series
(:func:`atra.adapters.series.validate_series_frame`: day grid, no duplicate day, finite
values) and merged atomically under the series' lock, or the store stays as it was and one
:class:`DataError` line names the file, row and column. Missing days are reported (each gap
listed with the days it lacks), never filled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atra.adapters.series import SeriesReport, read_series_frame, validate_series_frame
from atra.adapters.series_store import SeriesStore
from atra.adapters.store import MergeResult
from atra.errors import DataError

__all__ = ["SeriesImport", "check_series", "import_series", "series_name_of"]


@dataclass(frozen=True, slots=True)
class SeriesImport:
    """One imported series file: what validation found and what the merge did."""

    report: SeriesReport
    merge: MergeResult


def series_name_of(path: Path) -> str:
    """The default series name of a file: its stem without a ``_daily`` suffix
    (``fear_greed_daily.parquet`` -> ``fear_greed``)."""
    stem = re.sub(r"_daily$", "", path.stem.lower())
    return re.sub(r"[^a-z0-9_]", "_", stem)


def import_series(
    store: SeriesStore,
    path: Path,
    *,
    name: str | None = None,
    time_col: str = "time",
    columns: Sequence[str] = (),
    now_ms: int | None = None,
) -> SeriesImport:
    """Validate the series file ``path`` and merge it into the store as ``name`` (default:
    :func:`series_name_of`)."""
    series = name or series_name_of(path)
    store.path(series)  # the name is checked before the file is read
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = read_series_frame(path, time_col=time_col)
    frame, report = validate_series_frame(
        raw, name=series, source=str(path), time_col=time_col, columns=columns, now_ms=now_ms
    )
    if report.rows == 0:
        raise DataError(f"{path}: no rows")
    merge = store.write(series, frame, source=str(path))
    return SeriesImport(report, merge)


def check_series(store: SeriesStore, names: Sequence[str] = ()) -> list[SeriesReport]:
    """Validate stored series (all when ``names`` is empty): span, columns, gaps."""
    stored = store.names()
    unknown = [n for n in names if n not in stored]
    if unknown:
        raise DataError(
            f"no series {', '.join(unknown)} in the store at {store.root} "
            f"(stored: {', '.join(stored) or 'none'})"
        )
    out = []
    for name in names or stored:
        frame = store.read(name)
        _, report = validate_series_frame(frame, name=name, source=str(store.path(name)))
        out.append(report)
    return out
