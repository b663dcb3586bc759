"""The live loop's candle feed: each symbol's recent candles and the cycle's fetches.

:class:`CandleFeed` keeps one :class:`~atra.live.settings.Window` of recent candles per symbol
and fetches, for a cycle, the new closed candles of every symbol at once
(:meth:`CandleFeed.fetch_all`, as :class:`~atra.live.settings.Bars`): each fetch under
``symbol_timeout_s`` and all of them under ``cycle_deadline_s``; a symbol whose fetch fails,
times out or returns bad data is reported as failed. A symbol with open positions
(``funding`` on) gets its funding rates fetched with its candles. Without a backlog, a
symbol's decision starts in the executor as soon as its candle arrives (``early_decisions``).

A model's side data (:class:`~atra.core.features.context.ModelInputs`) is fetched in the same
cycle, through the same rate limiter: BTCUSDT candles once per cycle, each symbol's candles on
its counterpart market (``side_client``, sharing the limiter) and its funding rates,
concurrently with its own candles; a symbol whose side data cannot be fetched fails for the
cycle (decided later, never with a missing input). Funding rates, for positions and features
alike, are fetched only when a new settled rate can exist (:mod:`atra.live.funding_due`). The
external series (:class:`~atra.live.series_feed.SeriesFeed`) are refreshed once per cycle and
every decision waits for that. :meth:`CandleFeed.context` assembles a decision's
:class:`~atra.core.features.registry.FeatureContext` with
:func:`~atra.core.features.context.assemble_context`, the function research uses.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.exchange.client import ExchangeClient
from atra.core.decision import Decision
from atra.core.features.context import ModelInputs, assemble_context, counterpart_market
from atra.core.features.registry import FeatureContext
from atra.core.signals.candles import candle_arrays, checked_arrays
from atra.core.types import Market
from atra.core.validation import DAY_MS
from atra.errors import ConfigError, DataError
from atra.live.deciders import DecisionFn, decide_one
from atra.live.funding_due import FUNDING_PROBE_MS, FundingIntervals, recent_funding_times
from atra.live.ledger import FUNDING_PAGE, FundingBook
from atra.live.paper import Broker
from atra.live.series_feed import SeriesFeed
from atra.live.settings import Bars, LoopSettings, Window, append_after
from atra.live.stream_feed import BTC_SYMBOL, StreamBars
from atra.obs import span

__all__ = [
    "BTC_SYMBOL",
    "FUNDING_LOOKBACK_MS",
    "CandleFeed",
    "Fetched",
    "append_after",
    "check_servable",
]

FUNDING_LOOKBACK_MS = 31 * DAY_MS
"""Funding history kept before a window's first bar (research reads a month before its bars)."""


def check_servable(inputs: ModelInputs | None, client: ExchangeClient,
                   side_client: ExchangeClient | None,
                   series: Collection[str] = ()) -> None:  # fmt: skip
    """Refuse (one-line :class:`ConfigError`) a model whose inputs this venue cannot serve;
    ``series``: the external series the loop is given (:class:`SeriesFeed`)."""
    if inputs is None:
        return
    lacking = [name for name in inputs.series if name not in series]
    if lacking:
        raise ConfigError(
            f"the model reads the external series {', '.join(lacking)}, which the live loop "
            "is not given (configure it: [[features.series]] name = ...)"
        )
    if inputs.needs_funding and not callable(getattr(client, "fetch_funding", None)):
        raise ConfigError(f"the model needs funding rates; {client.market} serves none")
    if inputs.needs_funding and client.market is not Market.PERP:
        raise ConfigError(
            f"the model needs funding rates, which a {client.market} venue does not serve "
            "(train it on perp data or without funding features)"
        )
    if inputs.needs_counterpart:
        other = counterpart_market(client.market)
        if side_client is None or side_client.market is not other:
            raise ConfigError(
                f"the model needs {other} candles of every symbol (basis features) and no "
                f"{other} client is configured"
            )


Fetched = tuple[dict[str, Bars], dict[str, str], dict[str, tuple[Decision, float]]]
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
        inputs: ModelInputs | None = None,
        side_client: ExchangeClient | None = None,
        series: SeriesFeed | None = None,
        stream: StreamBars | None = None,
    ) -> None:
        check_servable(inputs, client, side_client, series.names if series is not None else ())
        self.settings = settings
        self.series = series
        self.client = client
        self.side_client = side_client
        self.broker = broker
        self.funding = funding
        self.decider = decider
        self.inputs = inputs
        self.step_ms = settings.timeframe.ms
        cap = 2 * settings.window_bars  # an append copies a bar O(1) times on average
        self.windows: dict[str, Window] = {s: Window(cap) for s in settings.symbols}
        need = inputs or ModelInputs()
        self.counterparts: dict[str, Window] = (
            {s: Window(cap) for s in settings.symbols} if need.needs_counterpart else {}
        )
        self.btc: Window | None = Window(cap) if need.needs_btc else None
        self.context_funding: dict[str, pd.DataFrame] = {}
        self._paid_funding: dict[str, npt.NDArray[np.int64] | None] = {}
        """The last funding times fetched for open positions (None: a page was full)."""
        self.intervals = FundingIntervals(getattr(client, "fetch_funding_info", None))
        self._more_funding: set[str] = set()
        """Symbols whose last context funding fetch was a full page (fetched on at once)."""
        self._executor = executor
        self.stream = stream
        """``live.feed = "ws"``: new bars come from the kline stream, REST fills the gaps."""

    # ---- fetch -----------------------------------------------------------------------------

    async def fetch_all(
        self, bar_ms: int, done_ms: Mapping[str, int], equity: float | None
    ) -> Fetched:
        """Every symbol's closed bars up to ``bar_ms`` not in its window yet (a fresh window:
        from ``window_bars`` before its first bar after ``done_ms``). With ``equity`` (no
        backlog, every fill before ``bar_ms`` known), a symbol whose only new bar is
        ``bar_ms`` is decided at once, sized with it."""
        s = self.settings
        btc_task = (
            None
            if self.btc is None
            else asyncio.create_task(
                self._fetch_btc(bar_ms, min(done_ms[sym] for sym in s.symbols)), name="btc"
            )
        )
        series_task = (  # bounded by its own timeout; symbols decide once it is done
            None if self.series is None else asyncio.create_task(self.series.refresh())
        )
        shared = [t for t in (btc_task, series_task) if t is not None]
        tasks = {
            sym: asyncio.create_task(
                self._fetch_and_decide(sym, bar_ms, done_ms[sym], equity, shared), name=sym
            )
            for sym in s.symbols
        }
        everything = [*tasks.values(), *shared]
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=s.cycle_deadline_s)
        except asyncio.CancelledError:  # stopped: cancel every outstanding request
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            raise
        stragglers: list[asyncio.Future[Any]] = [*pending]
        if btc_task is not None and not btc_task.done():
            stragglers.append(btc_task)
        for straggler in stragglers:
            straggler.cancel()
        if stragglers:
            await asyncio.wait(stragglers)
        if series_task is not None:
            await series_task  # the bar step's decisions use the refreshed series too
        frames: dict[str, Bars] = {}
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
        self,
        sym: str,
        bar_ms: int,
        done_ms: int,
        equity: float | None,
        shared: Sequence[asyncio.Task[None]] = (),
    ) -> tuple[Bars, Decision | None]:
        """Fetch ``sym`` and its side data; when its only new bar is ``bar_ms`` and ``equity``
        is known, decide it right away in the executor (the same call the bar step would
        make). ``shared``: the cycle's BTC fetch and series refresh, awaited first."""
        if self.inputs is None:  # no side data: no second task per symbol
            frame = await self._fetch_symbol(sym, bar_ms, done_ms)
        else:
            frame, _ = await asyncio.gather(
                self._fetch_symbol(sym, bar_ms, done_ms), self._fetch_side(sym, bar_ms, done_ms)
            )
        for task in shared:
            await asyncio.shield(task)  # shared by every symbol: never cancelled by one
        win = self.windows[sym]
        last = win.last_ms
        if equity is None or last is None or len(frame) == 0:
            return frame, None
        new = frame.after(last)
        if len(new) != 1 or int(new.open_time[0]) != bar_ms:
            return frame, None
        n = len(win)
        candles = win.frame(max(0, n - (self.settings.window_bars - 1)), n, then=new)
        loop = asyncio.get_running_loop()
        decision = await loop.run_in_executor(
            self._executor,
            decide_one,
            self.decider,
            sym,
            candles,
            equity,
            self.context(sym, candles),
        )
        return frame, decision

    def _first_start(self, bar_ms: int, done_ms: int) -> int:
        """The first bar a fresh window fetches: ``window_bars`` before the first to decide."""
        first_todo = done_ms + self.step_ms
        return min(first_todo, bar_ms) - (self.settings.window_bars - 1) * self.step_ms

    async def _fetch_btc(self, bar_ms: int, done_ms: int) -> None:
        """BTCUSDT's new closed bars up to ``bar_ms`` into the BTC window (once per cycle)."""
        assert self.btc is not None
        frame = await self._fetch_window(
            self.client, BTC_SYMBOL, self.btc, bar_ms, done_ms, f"BTC context {BTC_SYMBOL}"
        )
        append_after(self.btc, frame)

    async def _fetch_side(self, sym: str, bar_ms: int, done_ms: int) -> None:
        """``sym``'s counterpart candles and funding rates up to ``bar_ms``, as the model
        needs them."""
        need = self.inputs
        if need is None:
            return
        jobs = []
        if need.needs_counterpart:
            jobs.append(self._fetch_counterpart(sym, bar_ms, done_ms))
        if need.needs_funding:
            jobs.append(self._fetch_context_funding(sym, bar_ms, done_ms))
        await asyncio.gather(*jobs)

    async def _fetch_counterpart(self, sym: str, bar_ms: int, done_ms: int) -> None:
        assert self.side_client is not None
        win = self.counterparts[sym]
        what = f"counterpart {self.side_client.market} {sym}"
        frame = await self._fetch_window(self.side_client, sym, win, bar_ms, done_ms, what)
        append_after(win, frame)

    async def _fetch_context_funding(self, sym: str, bar_ms: int, done_ms: int) -> None:
        """Funding events of ``sym`` after the last one held, up to the close of ``bar_ms``
        (exclusive); the first call reaches :data:`FUNDING_LOOKBACK_MS` before the window."""
        held = self.context_funding.get(sym)
        if held is not None and len(held):
            start = int(held["funding_time"].iloc[-1]) + 1
        else:
            start = self._first_start(bar_ms, done_ms) - FUNDING_LOOKBACK_MS
        end = bar_ms + self.step_ms - 1  # an event at the close instant is not usable yet
        if start > end:
            return
        times = None if held is None else held["funding_time"].to_numpy(np.int64)
        if sym not in self._more_funding and await self.intervals.skip(sym, times, end, bar_ms):
            return  # no settled rate can have appeared since the last fetch
        with span("live.fetch_funding", symbol=sym, open_time=bar_ms, purpose="features"):
            async with asyncio.timeout(self.settings.symbol_timeout_s):
                fetch_range = getattr(self.client, "fetch_funding_range", None)
                if fetch_range is not None:
                    frame: pd.DataFrame = await fetch_range(sym, start, end + 1)
                else:
                    frame = await self.client.fetch_funding(sym, start_ms=start, end_ms=end)
        if fetch_range is None and len(frame) >= FUNDING_PAGE:  # a full page: more may follow
            self._more_funding.add(sym)
        else:
            self._more_funding.discard(sym)
        times = frame["funding_time"].to_numpy(np.int64)
        if times.size and (int(times[0]) < start or int(times[-1]) > end):
            raise DataError(f"funding {sym}: events outside {start}..{end}")
        if times.size and (np.diff(times) <= 0).any():
            raise DataError(f"funding {sym}: funding_time must be strictly increasing")
        if held is None or held.empty:
            self.context_funding[sym] = frame.reset_index(drop=True)
        elif len(frame):
            self.context_funding[sym] = pd.concat([held, frame], ignore_index=True)

    async def _fetch_window(
        self,
        client: ExchangeClient,
        sym: str,
        win: Window,
        bar_ms: int,
        done_ms: int,
        what: str,
    ) -> Bars:
        """Closed bars of ``sym`` on ``client`` after ``win``'s last bar up to ``bar_ms``
        (a fresh window: from :meth:`_first_start`), validated."""
        last = win.last_ms
        start = self._first_start(bar_ms, done_ms) if last is None else last + self.step_ms
        if start > bar_ms:
            return Bars.empty()
        market = client.market
        streamed = None
        if self.stream is not None and last is not None and self.stream.carries(sym, market):
            with span("live.stream_wait", symbol=sym, open_time=bar_ms, purpose=what):
                streamed = await self.stream.take(sym, start, bar_ms, market)
        if streamed is not None:
            return streamed  # checked bar by bar as they were taken
        with span("live.fetch", symbol=sym, open_time=bar_ms, purpose=what):
            async with asyncio.timeout(self.settings.symbol_timeout_s):
                bars = await self._klines(client, sym, start, bar_ms, what)
        if self.stream is not None and len(bars) and self.stream.carries(sym, market):
            self.stream.note(sym, int(bars.open_time[-1]), market, bars=len(bars))
        return bars

    async def _klines(
        self, client: ExchangeClient, sym: str, start: int, bar_ms: int, what: str
    ) -> Bars:
        """Closed bars of ``sym`` in ``[start, bar_ms]``, checked (:func:`checked_arrays`:
        DataError on a bad price or order, or a bar outside the range): one page as arrays, or
        several (a first window fill) as a frame."""
        n = (bar_ms - start) // self.step_ms + 1
        if n > client.max_klines:
            frame = await self.client_range(sym, start, bar_ms + self.step_ms, client)
            t, volume = frame["open_time"].to_numpy(np.int64), frame["volume"].to_numpy(np.float64)
            arrays = candle_arrays(frame, what)
        else:
            rows = await client.fetch_kline_rows(
                sym,
                self.settings.timeframe,
                start_ms=start,
                end_ms=bar_ms,
                limit=max(1, int(n)),
                closed_only=True,  # a bar still forming is never decided
            )
            t, v, volume = rows.open_time, rows.values, rows.values[:, 4]
            arrays = checked_arrays(what, t, v[:, 0], v[:, 1], v[:, 2], v[:, 3])
        if t.size and (int(t[0]) < start or int(t[-1]) > bar_ms):
            raise DataError(f"candles {what}: bars outside {start}..{bar_ms}")
        return Bars.checked(arrays, volume)

    def context(self, sym: str, candles: pd.DataFrame) -> FeatureContext | None:
        """The feature context of ``sym``'s decision on ``candles`` (its window up to the bar
        decided): the side data over the same bars, nothing after the last one. None when the
        decider needs no side data."""
        if self.inputs is None:
            return None
        t = candles["open_time"].to_numpy(np.int64)
        lo, hi = (int(t[0]), int(t[-1])) if t.size else (0, -1)

        def over(win: Window | None) -> pd.DataFrame | None:
            if win is None:
                return None
            return win.frame(win.index(lo), win.index(hi + 1))

        funding = self.context_funding.get(sym)
        if funding is not None:
            close_ms = hi + self.step_ms
            funding = funding[funding["funding_time"].to_numpy(np.int64) < close_ms]
        return assemble_context(
            self.settings.timeframe,
            self.client.market,
            funding=funding,
            counterpart=over(self.counterparts.get(sym)),
            btc=over(self.btc),
            series=() if self.series is None else self.series.for_symbol(sym, hi + self.step_ms),
            symbol=sym,
        )

    async def _fetch_symbol(self, sym: str, bar_ms: int, done_ms: int) -> Bars:
        """Closed bars of ``sym`` after its window's last bar up to ``bar_ms`` (the whole
        window on the first call), validated."""
        s = self.settings
        win = self.windows[sym]
        last = win.last_ms
        start = self._first_start(bar_ms, done_ms) if last is None else last + self.step_ms
        if start > bar_ms:
            return Bars.empty()
        streamed = None
        if self.stream is not None and last is not None:  # the first fill comes over REST
            with span("live.stream_wait", symbol=sym, open_time=bar_ms):
                streamed = await self.stream.take(sym, start, bar_ms)
        if streamed is not None:
            bars = streamed  # checked bar by bar as they were taken
        else:
            with span("live.fetch", symbol=sym, open_time=bar_ms):
                async with asyncio.timeout(s.symbol_timeout_s):
                    bars = await self._klines(self.client, sym, start, bar_ms, sym)
            if self.stream is not None and len(bars):
                n = len(bars) if last is not None else 0  # the first fill is not a backfill
                self.stream.note(sym, int(bars.open_time[-1]), bars=n)
        if s.funding and self.broker.open_count(sym):
            async with asyncio.timeout(s.symbol_timeout_s):
                await self.fetch_funding(sym, bar_ms)
        return bars

    async def fetch_funding(self, sym: str, upto_ms: int) -> None:
        """Funding rates of ``sym`` up to ``upto_ms`` not fetched yet, when a new settled
        rate can exist (:func:`funding_due`); the first fetch reaches
        :data:`FUNDING_PROBE_MS` before the oldest position's signal (the interval's rows)."""
        known = self.funding.known_until(sym)
        if known is not None and known >= upto_ms:
            return
        if known is not None and await self.intervals.skip(
            sym, self._paid_funding.get(sym), upto_ms, upto_ms
        ):
            return  # no settled rate can have appeared since the last fetch
        if known is None:
            first = min((p.signal_time_ms for p in self.broker.positions(sym)), default=upto_ms)
            known = first - FUNDING_PROBE_MS
        with span("live.fetch_funding", symbol=sym, open_time=upto_ms):
            frame = await self.client.fetch_funding(sym, start_ms=known + 1, end_ms=upto_ms)
        self.funding.extend(sym, frame, start_ms=known + 1, upto_ms=upto_ms)
        times = frame["funding_time"].to_numpy(np.int64)
        self._paid_funding[sym] = (
            None  # more rows than one page: fetch on at once
            if len(frame) >= FUNDING_PAGE
            else recent_funding_times(self._paid_funding.get(sym), times)
        )

    async def client_range(
        self, sym: str, start_ms: int, end_ms: int, client: ExchangeClient | None = None
    ) -> pd.DataFrame:
        """Several pages of candles (the first fill of a window) from ``client`` (default:
        the feed's own)."""
        client = client or self.client
        fetch_range = getattr(client, "fetch_klines_range", None)
        if fetch_range is None:
            raise ConfigError(f"{type(client).__name__} cannot fetch candle ranges")
        frame: pd.DataFrame = await fetch_range(sym, self.settings.timeframe, start_ms, end_ms)
        return frame

    # ---- windows ---------------------------------------------------------------------------

    def append(self, sym: str, frame: Bars | pd.DataFrame) -> None:
        """Add the bars of ``frame`` after ``sym``'s window's last bar to its window."""
        append_after(self.windows[sym], frame)

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
        """Keep the last ``window_bars`` bars of every window; side data back to the oldest
        window's first bar (funding: :data:`FUNDING_LOOKBACK_MS` before it)."""
        for win in self.windows.values():
            win.trim(self.settings.window_bars)
        firsts = [int(w.open_time[0]) for w in self.windows.values() if w.open_time.size]
        if not firsts:
            return
        oldest = min(firsts)
        for side in [*self.counterparts.values(), *([] if self.btc is None else [self.btc])]:
            side.drop_first(side.index(oldest))
        for sym, frame in self.context_funding.items():
            times = frame["funding_time"].to_numpy(np.int64)
            k = int(np.searchsorted(times, oldest - FUNDING_LOOKBACK_MS))
            if k:
                self.context_funding[sym] = frame.iloc[k:].reset_index(drop=True)
