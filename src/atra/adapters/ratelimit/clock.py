"""Where the rate limiter reads time and how it waits: the :class:`Clock` protocol, the real
:class:`SystemClock`, :class:`ScaledClock` (a minute in a second, for replays and tests) and
:class:`ManualClock` (moved by hand, for unit tests)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Where the limiter reads time and how it waits (seconds, exchange time)."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (UTC)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (of this clock)."""


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Real time running ``scale`` times faster: with ``scale=60`` a minute lasts one second.

    ``monotonic`` and ``sleep`` are scaled; ``time`` (the wall clock, used to tell closed from
    open candles) is not.
    """

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale

    def monotonic(self) -> float:
        return time.monotonic() * self.scale

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)


class ManualClock:
    """A clock that moves only when :meth:`advance` is called; sleepers wake in time order."""

    def __init__(self, start_s: float = 0.0, wall_s: float = 1.7e9) -> None:
        self.now = start_s
        self.wall_offset = wall_s - start_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.wall_offset

    @property
    def sleepers(self) -> int:
        """Tasks currently sleeping on this clock."""
        return sum(1 for *_, fut in self._sleepers if not fut.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
