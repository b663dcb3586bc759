"""Times as typed by people (ISO dates / times or epoch ms) -> epoch milliseconds, UTC."""

from __future__ import annotations

import datetime as dt
from typing import Final

from atra.errors import ConfigError

__all__ = ["parse_time_ms"]

_EPOCH: Final[dt.datetime] = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_time_ms(text: str) -> int:
    """``"2024-01-01"`` / ``"2024-01-01T12:00"`` / ``"2024-01-01 12:00:00Z"`` or epoch ms ->
    epoch ms; a time without a zone is UTC."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        stamp = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"time {text!r}: expected an ISO date/time (2024-01-01[T12:00]) or epoch ms"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (stamp - _EPOCH) // dt.timedelta(milliseconds=1)  # exact: no float seconds
