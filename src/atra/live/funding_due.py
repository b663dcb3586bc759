"""When a symbol's next settled funding rate can exist, so the live feed fetches funding
only then instead of at every bar close.

A perpetual's settled rate (``GET /fapi/v1/fundingRate``) appears once per funding interval:
every 8 h for most USDT-M symbols, 4 h or 1 h for some, and Binance changes a symbol's
interval at times. The interval is read from the rows already fetched, never assumed: the
shortest spacing of the last :data:`FUNDING_GAPS` gaps (a shortened interval shows up as soon
as two rows at the new spacing are held; until then a row at the shorter spacing is fetched
at the time the old spacing expected it). Fewer than two rows held, or an unfinished page:
due every time. A fetch that does not bring the expected row yet (a settlement published a
few seconds late) leaves the gate open, so the next bar close fetches again.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from atra.core.validation import DAY_MS

__all__ = [
    "FUNDING_GAPS",
    "FUNDING_PROBE_MS",
    "FUNDING_SLACK_MS",
    "funding_due",
    "recent_funding_times",
]

FUNDING_GAPS: Final[int] = 3
"""Spacings of the last rows the interval is read from (their minimum)."""
FUNDING_SLACK_MS: Final[int] = 1_000
"""Settlement times are on the hour plus a few milliseconds: the next row is expected at the
last one plus the interval, taken down to a whole multiple of this (a bar's open at the
settlement hour fetches it; the bar that closes then does not)."""
FUNDING_PROBE_MS: Final[int] = 2 * DAY_MS
"""How far before the oldest position's signal the first funding fetch for positions reaches:
rows enough to read the interval from (charges start after each entry all the same)."""


def funding_due(times: npt.NDArray[np.int64] | None, upto_ms: int) -> bool:
    """Whether a fetch of funding rows up to ``upto_ms`` (inclusive) can bring a row after
    the last of ``times`` (the held funding times, increasing; None: none held)."""
    if times is None or times.size < 2:
        return True
    tail = times[-(FUNDING_GAPS + 1) :]
    interval = int(np.diff(tail).min())
    if interval <= 0:  # not increasing: never trusted to skip a fetch
        return True
    expected = (int(tail[-1]) + interval) // FUNDING_SLACK_MS * FUNDING_SLACK_MS
    return upto_ms >= expected


def recent_funding_times(
    held: npt.NDArray[np.int64] | None, fetched: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The last funding times to keep for :func:`funding_due`: ``held`` then the ``fetched``
    ones after it."""
    if held is None or not held.size:
        out = fetched
    else:
        out = np.concatenate([held, fetched[fetched > held[-1]]])
    return out[-(FUNDING_GAPS + 1) :].copy()
