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

Binance states the interval too: ``GET /fapi/v1/fundingInfo`` lists the symbols whose interval
was adjusted (weight 0). When the rows would skip a fetch, :class:`FundingIntervals` asks it (at
most once per bar close, shared by every symbol) and the shorter of the two intervals rules, so
a shortened interval is fetched on time from its first row on. A failed request leaves the rows
to decide (logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

from atra.adapters.exchange.wire import DEFAULT_FUNDING_HOURS
from atra.core.validation import DAY_MS
from atra.errors import ExchangeError
from atra.obs import get_logger

__all__ = [
    "FUNDING_GAPS",
    "FUNDING_PROBE_MS",
    "FUNDING_SLACK_MS",
    "FundingIntervals",
    "funding_due",
    "recent_funding_times",
]

log = get_logger("atra.live.funding")

HOUR_MS: Final[int] = 3_600_000
FUNDING_GAPS: Final[int] = 3
"""Spacings of the last rows the interval is read from (their minimum)."""
FUNDING_SLACK_MS: Final[int] = 1_000
"""Settlement times are on the hour plus a few milliseconds: the next row is expected at the
last one plus the interval, taken down to a whole multiple of this (a bar's open at the
settlement hour fetches it; the bar that closes then does not)."""
FUNDING_PROBE_MS: Final[int] = 2 * DAY_MS
"""How far before the oldest position's signal the first funding fetch for positions reaches:
rows enough to read the interval from (charges start after each entry all the same)."""


def funding_due(
    times: npt.NDArray[np.int64] | None, upto_ms: int, stated_ms: int | None = None
) -> bool:
    """Whether a fetch of funding rows up to ``upto_ms`` (inclusive) can bring a row after
    the last of ``times`` (the held funding times, increasing; None: none held).
    ``stated_ms``: the interval the venue states now; the shorter one rules."""
    if times is None or times.size < 2:
        return True
    tail = times[-(FUNDING_GAPS + 1) :]
    interval = int(np.diff(tail).min())
    if interval <= 0:  # not increasing: never trusted to skip a fetch
        return True
    if stated_ms is not None and stated_ms > 0:
        interval = min(interval, stated_ms)
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


class FundingIntervals:
    """The funding interval the venue states per symbol (``fetch``: ``fundingInfo``, hours of
    the symbols it lists; any other settles every
    :data:`~atra.adapters.exchange.wire.DEFAULT_FUNDING_HOURS` hours), asked at most once per
    bar close and shared by that cycle's symbols. ``fetch`` None: no venue statement, the rows
    alone decide."""

    def __init__(self, fetch: Callable[[], Awaitable[Mapping[str, int]]] | None) -> None:
        self._fetch = fetch
        self._bar_ms: int | None = None
        self._hours: Mapping[str, int] | None = None
        self._lock = asyncio.Lock()
        self.requests = 0
        """fundingInfo requests sent."""

    async def stated_ms(self, symbol: str, bar_ms: int) -> int | None:
        """``symbol``'s interval in ms as stated at bar ``bar_ms``'s close; None when unknown
        (no fetch, or the request failed: logged, asked again at the next bar)."""
        if self._fetch is None:
            return None
        async with self._lock:  # the first symbol asks, the others wait for its answer
            if self._bar_ms != bar_ms:
                self._bar_ms, self._hours = bar_ms, None
                self.requests += 1
                try:
                    self._hours = dict(await self._fetch())
                except (ExchangeError, TimeoutError) as exc:
                    log.warning("funding_info_unavailable", open_time=bar_ms,
                                error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        if self._hours is None:
            return None
        return self._hours.get(symbol, DEFAULT_FUNDING_HOURS) * HOUR_MS

    async def skip(
        self, symbol: str, times: npt.NDArray[np.int64] | None, upto_ms: int, bar_ms: int
    ) -> bool:
        """Whether a funding fetch of ``symbol`` up to ``upto_ms`` can be skipped: no new row
        by the rows held (``times``), nor by the interval stated at ``bar_ms``'s close."""
        if funding_due(times, upto_ms):
            return False
        return not funding_due(times, upto_ms, await self.stated_ms(symbol, bar_ms))
