"""alternative.me's Crypto Fear & Greed index: ``GET /fng/?limit=N&format=json``.

Answer: ``{"data": [{"value": "40", "value_classification": "Fear", "timestamp": "1551157200",
...}, ...]}``, newest first, timestamps in seconds (as strings) at the day's 00:00 UTC. Parsed
strictly into the frame of the ``fear_greed`` series (``time`` int64 ms ascending,
``fear_greed`` float64); any bad record is a one-line :class:`~atra.errors.DataError` naming
its position and field.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import pandas as pd

from atra.adapters.sources.http import SourceHttp
from atra.errors import DataError

__all__ = ["FNG_URL", "FearGreedSource", "parse_fng"]

FNG_URL: Final[str] = "https://api.alternative.me"
DAY_MS: Final[int] = 86_400_000


def _number(rec: dict[str, object], key: str, where: str) -> float:
    raw = rec.get(key)
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise DataError(f"{where}: field {key!r} must be a number string, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{where}: field {key!r} is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: field {key!r} is not finite: {raw!r}")
    return value


def parse_fng(payload: object, *, where: str = "alternative.me /fng/") -> pd.DataFrame:
    """``time`` (ms, ascending) and ``fear_greed`` (0..100) of an ``fng`` answer."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise DataError(f"{where}: expected an object with a 'data' list")
    times, values = [], []
    for i, rec in enumerate(payload["data"]):
        at = f"{where}: data[{i}]"
        if not isinstance(rec, dict):
            raise DataError(f"{at}: expected an object, got {type(rec).__name__}")
        seconds = _number(rec, "timestamp", at)
        if seconds != int(seconds) or (int(seconds) * 1000) % DAY_MS:
            raise DataError(f"{at}: field 'timestamp' {rec['timestamp']!r} is not a day's 00:00")
        value = _number(rec, "value", at)
        if not 0 <= value <= 100:
            raise DataError(f"{at}: field 'value' {value:g} is outside 0..100")
        times.append(int(seconds) * 1000)
        values.append(value)
    order = np.argsort(times, kind="stable")
    t = np.asarray(times, dtype=np.int64)[order]
    dup = np.flatnonzero(np.diff(t) == 0)
    if dup.size:
        raise DataError(f"{where}: day {int(t[dup[0]])} appears twice")
    return pd.DataFrame({"time": t, "fear_greed": np.asarray(values, dtype=np.float64)[order]})


class FearGreedSource:
    """The ``fear_greed`` series from alternative.me (or a fake at ``http.base_url``)."""

    def __init__(self, http: SourceHttp, name: str = "fear_greed") -> None:
        self.http = http
        self.name = name

    async def fetch(self, since_ms: int) -> pd.DataFrame:
        """Every daily value stamped at or after ``since_ms`` that the API has now."""
        # The API counts days back from today; ask for enough of them and cut at since_ms.
        now_ms = int(self.http.clock.time() * 1000)
        limit = max(1, (now_ms - since_ms) // DAY_MS + 2)
        payload = await self.http.get_json("/fng/", {"limit": limit, "format": "json"})
        frame = parse_fng(payload)
        return frame[frame.time >= since_ms].reset_index(drop=True)
