"""The store's external series: one Parquet file per daily series under ``{root}/series/``.

Layout::

    {root}/series/{name}.parquet      time (int64 ms, a day's 00:00 UTC), value columns (float64)

Writes go through the candle store's merge (:data:`atra.adapters.store.merge_write`): under
the dataset's inter-process lock (``series/.{name}.parquet.lock``), idempotent (the same rows
again change nothing, not even the file; a different value for a day already stored is a
:class:`DataError` naming the day and the column) and atomic (temp file, then ``os.replace``).
The caller validates first (:func:`atra.adapters.series.validate_series_frame`); a series keeps
the value columns of its first import. Listing reads the Parquet footers only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.parquet as pq

from atra.adapters.filelocks import DEFAULT_LOCK_TIMEOUT_S
from atra.adapters.store import MergeResult, merge_write
from atra.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SERIES_DIR", "SeriesInfo", "SeriesStore", "series_schema"]

SERIES_DIR: Final[str] = "series"
_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def series_schema(columns: tuple[str, ...]) -> pa.Schema:
    """``time`` int64 ms, then one float64 column per value column."""
    return pa.schema([pa.field("time", pa.int64())] + [pa.field(c, pa.float64()) for c in columns])


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """One stored series as listed (from its file footer)."""

    name: str
    rows: int
    first_ms: int | None
    last_ms: int | None
    columns: tuple[str, ...]
    path: Path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class SeriesStore:
    """The ``series/`` area of the store rooted at ``root``."""

    def __init__(
        self, root: Path | str = "data", *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    ) -> None:
        if not (math.isfinite(lock_timeout_s) and lock_timeout_s >= 0):
            raise DataError(f"store lock timeout must be >= 0 s, got {lock_timeout_s}")
        self.root = Path(root)
        self.lock_timeout_s = float(lock_timeout_s)

    def path(self, name: str) -> Path:
        """Where series ``name`` lives."""
        if not _NAME.fullmatch(name):
            raise DataError(
                f"invalid series name {name!r}: expected lower-case letters, digits and _, "
                "starting with a letter (e.g. fear_greed)"
            )
        return self.root / SERIES_DIR / f"{name}.parquet"

    def write(self, name: str, frame: pd.DataFrame, *, source: str = "") -> MergeResult:
        """Merge a validated frame (``time`` then float64 value columns) into series ``name``."""
        columns = tuple(str(c) for c in frame.columns[1:])
        if frame.columns[0] != "time" or not columns:
            raise DataError(f"series {name}: expected time then value columns, got {list(frame)}")
        path = self.path(name)
        if path.exists():
            stored = self.info(name).columns
            if stored != columns:
                raise DataError(
                    f"{source or name}: series {name} is stored with columns "
                    f"{', '.join(stored)}; this file has {', '.join(columns)} (import it under "
                    "another --name, or choose the same columns with --columns)"
                )
        return merge_write(
            path,
            frame,
            "time",
            series_schema(columns),
            f"series/{name}",
            source,
            self.lock_timeout_s,
        )

    def read(self, name: str) -> pd.DataFrame:
        """Every stored row of series ``name`` (time ascending)."""
        path = self.path(name)
        if not path.exists():
            raise DataError(f"no series {name} in the store at {self.root} (expected {path})")
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"series {name}: cannot read {path}: {_one_line(exc)}") from None
        columns = tuple(table.schema.names[1:])
        if not table.schema.equals(series_schema(columns), check_metadata=False):
            raise DataError(
                f"series {name}: {path} is not time (int64) + float64 columns: {table.schema}"
            )
        frame: pd.DataFrame = table.to_pandas()
        return frame

    def info(self, name: str) -> SeriesInfo:
        """Rows, span and columns of series ``name`` from its footer."""
        path = self.path(name)
        try:
            with pq.ParquetFile(path) as pf:
                meta = pf.metadata
                rows = int(meta.num_rows)
                columns = tuple(pf.schema_arrow.names[1:])
                first = last = None
                if rows:
                    col = pf.read(columns=["time"]).column(0)
                    first, last = int(col[0].as_py()), int(col[-1].as_py())
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"series {name}: cannot read {path}: {_one_line(exc)}") from None
        return SeriesInfo(name, rows, first, last, columns, path)

    def names(self) -> list[str]:
        """The stored series, sorted."""
        folder = self.root / SERIES_DIR
        if not folder.is_dir():
            return []
        return sorted(
            p.stem for p in folder.glob("*.parquet") if _NAME.fullmatch(p.stem) is not None
        )

    def infos(self) -> list[SeriesInfo]:
        """Every stored series as :class:`SeriesInfo`."""
        return [self.info(n) for n in self.names()]
