"""The live loop's candle feed: each symbol's recent candles and the cycle's fetches.

:class:`CandleFeed` keeps one :class:`~atra.live.settings.Window` of recent candles per symbol
and fetches, for a cycle, the new closed candles of every symbol at once
(:meth:`CandleFeed.fetch_all`): each fetch under ``symbol_timeout_s`` and all of them under
``cycle_deadline_s``; a symbol whose fetch fails, times out or returns bad data is reported as
failed. A symbol with open positions (``funding`` on) gets its funding rates fetched with its
candles. Without a backlog, a symbol's decision starts in the executor as soon as its candle
arrives, overlapping the other symbols' requests (``early_decisions``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.exchange.client import ExchangeClient
from atra.core.decision import Decision
from atra.core.signals.candles import candle_arrays
from atra.errors import ConfigError, DataError
from atra.live.deciders import DecisionFn, decide_one
from atra.live.ledger import FundingBook
from atra.live.paper import Broker
from atra.live.settings import CANDLE_COLS, LoopSettings, Window
from atra.obs import span

__all__ = ["CandleFeed", "Fetched"]

Fetched = tuple[dict[str, pd.DataFrame], dict[str, str], dict[str, tuple[Decision, float]]]
"""A cycle's fetch: the new candles per symbol, the failed symbols with their error, and the
early decisions with the equity they were sized with."""


class CandleFeed:
    """The candle windows of ``settings.symbols`` over one exchange client.

    ``broker`` and ``funding``: the positions whose funding rates are fetched, and where they
    go. ``decider`` runs in ``executor`` for early decisions.
    """

    def __init__(
        self,
        settings: LoopSettings,
        *,
        client: ExchangeClient,
        broker: Broker,
        funding: FundingBook,
        decider: DecisionFn,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.broker = broker
        self.funding = funding
        self.decider = decider
        self.step_ms = settings.timeframe.ms
        self.windows: dict[str, Window] = {s: Window() for s in settings.symbols}
        self._executor = executor

    # ---- fetch -----------------------------------------------------------------------------

    async def fetch_all(
        self, bar_ms: int, done_ms: Mapping[str, int], equity: float | None
    ) -> Fetched:
        """Every symbol's closed bars up to ``bar_ms`` not in its window yet (a fresh window:
        from ``window_bars`` before its first bar after ``done_ms``). With ``equity`` (no
        backlog, every fill before ``bar_ms`` known), a symbol whose only new bar is
        ``bar_ms`` is decided at once, sized with it."""
        s = self.settings
        tasks = {
            sym: asyncio.create_task(
                self._fetch_and_decide(sym, bar_ms, done_ms[sym], equity), name=sym
            )
            for sym in s.symbols
        }
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=s.cycle_deadline_s)
        except asyncio.CancelledError:  # stopped: cancel every outstanding request
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        frames: dict[str, pd.DataFrame] = {}
        failed: dict[str, str] = {}
        pre: dict[str, tuple[Decision, float]] = {}
        for sym, task in tasks.items():
            if task in pending:
                failed[sym] = f"cycle deadline {s.cycle_deadline_s:g} s passed"
                continue
            exc = task.exception() if not task.cancelled() else None
            if task.cancelled():  # pragma: no cover  (only pending tasks are cancelled)
                failed[sym] = "cancelled"
            elif exc is not None:
                failed[sym] = f"{type(exc).__name__}: {exc}"
            else:
                frame, decision = task.result()
                frames[sym] = frame
                if decision is not None and equity is not None:
                    pre[sym] = (decision, equity)
        return frames, failed, pre

    async def _fetch_and_decide(
        self, sym: str, bar_ms: int, done_ms: int, equity: float | None
    ) -> tuple[pd.DataFrame, Decision | None]:
        """Fetch ``sym``; when its only new bar is ``bar_ms`` and ``equity`` is known, decide
        it right away in the executor (the same call the bar step would make)."""
        frame = await self._fetch_symbol(sym, bar_ms, done_ms)
        win = self.windows[sym]
        last = win.last_ms
        if equity is None or last is None or len(frame) == 0:
            return frame, None
        new = frame[frame["open_time"] > last]
        if len(new) != 1 or int(new["open_time"].iloc[0]) != bar_ms:
            return frame, None
        n = int(win.open_time.shape[0])
        lo = max(0, n - (self.settings.window_bars - 1))
        candles = pd.concat([win.frame(lo, n), new], ignore_index=True)
        loop = asyncio.get_running_loop()
        decision = await loop.run_in_executor(
            self._executor, decide_one, self.decider, sym, candles, equity
        )
        return frame, decision

    async def _fetch_symbol(self, sym: str, bar_ms: int, done_ms: int) -> pd.DataFrame:
        """Closed bars of ``sym`` after its window's last bar up to ``bar_ms`` (the whole
        window on the first call), validated."""
        s = self.settings
        win = self.windows[sym]
        last = win.last_ms
        if last is None:
            first_todo = done_ms + self.step_ms
            start = min(first_todo, bar_ms) - (s.window_bars - 1) * self.step_ms
        else:
            start = last + self.step_ms
        if start > bar_ms:
            return self._empty()
        with span("live.fetch", symbol=sym, open_time=bar_ms):
            async with asyncio.timeout(s.symbol_timeout_s):
                n = (bar_ms - start) // self.step_ms + 1
                if n > self.client.max_klines:
                    frame = await self.client_range(sym, start, bar_ms + self.step_ms)
                else:
                    frame = await self.client.fetch_klines(
                        sym,
                        s.timeframe,
                        start_ms=start,
                        end_ms=bar_ms,
                        limit=max(1, min(int(n), self.client.max_klines)),
                        closed_only=True,  # a bar still forming is never decided
                    )
        arrays = candle_arrays(frame, sym)  # DataError on a bad price or order
        t = arrays.open_time
        if t.size and (int(t[0]) < start or int(t[-1]) > bar_ms):
            raise DataError(f"candles {sym}: bars outside {start}..{bar_ms}")
        if s.funding and self.broker.open_count(sym):
            async with asyncio.timeout(s.symbol_timeout_s):
                await self.fetch_funding(sym, bar_ms)
        return frame

    async def fetch_funding(self, sym: str, upto_ms: int) -> None:
        """Funding rates of ``sym`` up to ``upto_ms`` not fetched yet (from the oldest
        position's signal on)."""
        known = self.funding.known_until(sym)
        if known is not None and known >= upto_ms:
            return
        if known is None:
            known = min((p.signal_time_ms for p in self.broker.positions(sym)), default=upto_ms)
        with span("live.fetch_funding", symbol=sym, open_time=upto_ms):
            frame = await self.client.fetch_funding(sym, start_ms=known + 1, end_ms=upto_ms)
        self.funding.extend(sym, frame, start_ms=known + 1, upto_ms=upto_ms)

    async def client_range(self, sym: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Several pages of candles (the first fill of a window)."""
        fetch_range = getattr(self.client, "fetch_klines_range", None)
        if fetch_range is None:
            raise ConfigError(f"{type(self.client).__name__} cannot fetch candle ranges")
        frame: pd.DataFrame = await fetch_range(sym, self.settings.timeframe, start_ms, end_ms)
        return frame

    @staticmethod
    def _empty() -> pd.DataFrame:
        data: dict[str, npt.NDArray[np.generic]] = {"open_time": np.empty(0, np.int64)}
        data.update({c: np.empty(0, np.float64) for c in CANDLE_COLS})
        return pd.DataFrame(data)

    # ---- windows ---------------------------------------------------------------------------

    def append(self, sym: str, frame: pd.DataFrame) -> None:
        """Add the bars of ``frame`` after ``sym``'s window's last bar to its window."""
        win = self.windows[sym]
        if win.last_ms is not None:
            frame = frame[frame["open_time"] > win.last_ms]
        if len(frame):
            win.append(frame)

    def bars_after(self, sym: str, done_ms: int) -> list[int]:
        """Open times of ``sym``'s window's bars after ``done_ms``, oldest first."""
        win = self.windows[sym]
        times: list[int] = win.open_time[win.index(done_ms + 1) :].tolist()
        return [int(t) for t in times if t > done_ms]

    def last_close(self, sym: str, t_ms: int) -> float:
        """``sym``'s close of the latest bar at or before ``t_ms`` (NaN if none)."""
        win = self.windows[sym]
        i = win.index(t_ms + 1) - 1
        return float(win.cols["close"][i]) if i >= 0 else math.nan

    def trim(self) -> None:
        """Keep the last ``window_bars`` bars of every window."""
        for win in self.windows.values():
            win.trim(self.settings.window_bars)
