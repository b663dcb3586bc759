"""The live signal loop: every symbol at each bar close, the backtest's own decision code,
an SQLite journal, paper fills, crash-only restarts.

One cycle (at bar close + ``bar_close_delay_s``):

1. fetch the new closed candles of every symbol at once (through the shared rate limiter),
   each fetch under ``symbol_timeout_s`` and all of them under ``cycle_deadline_s``; a symbol
   whose fetch fails, times out or returns bad data is skipped this cycle and reported;
2. for each new bar time, oldest first (a restart's backlog too), for each symbol in sorted
   order: the paper broker advances its positions with the exit kernel, the decision
   function (:func:`atra.core.decision.decide`, run off the event loop in a worker thread)
   looks at the last ``window_bars`` bars ending at that bar, the risk guards check a taken
   decision, and everything (signal, orders, fills, positions, guard breaches, the symbol's
   last processed bar, the equity mark) is journalled in ONE transaction per bar time;
3. the cycle (symbols ok / failed, latency) is journalled with the last step.

Crash-only: every start is a recovery. Pending and open positions, the realised P&L and the
last processed bar per symbol come back from the journal; bars after that are fetched again
and processed in the same order, so a run killed anywhere ends with the journal of a run that
was never killed (decisions are deterministic functions of the bars and the journal).

Sizing uses the equity realised strictly before the bar being decided (fills at earlier bars),
so the order in which symbols of one bar time are processed does not change any size.

Time comes from an injected :class:`~atra.adapters.ratelimit.Clock`: the system clock live,
:class:`SimClock` for replays (``speed=inf`` runs as fast as the exchange answers).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.exchange import ExchangeClient
from atra.adapters.journal import (
    CycleRecord,
    EquityRecord,
    GuardEvent,
    Journal,
    JournalBatch,
    SignalRecord,
)
from atra.adapters.ratelimit import Clock
from atra.core.decision import Decision
from atra.core.exits import ExitSpec
from atra.core.signals import SignalSpec, candle_arrays
from atra.errors import ConfigError, DataError, ExchangeError
from atra.live.deciders import DecisionFn, StrategyDecider, decide_many, decide_one
from atra.live.guards import GuardBreach, PortfolioView, RiskGuards, day_start_ms
from atra.live.ledger import FundingBook, Ledger
from atra.live.paper import Broker, BrokerUpdate, EntryRequest, PaperBroker, unrealized
from atra.live.settings import (
    CANDLE_COLS,
    CycleResult,
    LoopSettings,
    SimClock,
    Window,
    next_bar_close_ms,
    race,
)
from atra.obs import Metrics, get_logger, span

__all__ = [
    "CycleResult",
    "DecisionFn",
    "LiveLoop",
    "LoopSettings",
    "SimClock",
    "StrategyDecider",
    "next_bar_close_ms",
    "run_until_signal",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
T = TypeVar("T")

STATUS_OK: Final[str] = "ok"
STATUS_PARTIAL: Final[str] = "partial"
STATUS_FAILED: Final[str] = "failed"

log = get_logger("atra.live.loop")


_Fetched = tuple[dict[str, pd.DataFrame], dict[str, str], dict[str, tuple[Decision, float]]]


# ---- the loop ------------------------------------------------------------------------------


class LiveLoop:
    """The signal loop over one exchange client, one journal, one paper broker."""

    def __init__(
        self,
        settings: LoopSettings,
        *,
        client: ExchangeClient,
        journal: Journal,
        decider: DecisionFn,
        exit_spec: ExitSpec,
        guards: RiskGuards,
        clock: Clock,
        metrics: Metrics | None = None,
        executor: Executor | None = None,
        broker: Broker | None = None,
    ) -> None:
        spec = getattr(decider, "spec", None)
        if isinstance(spec, SignalSpec):
            horizon = spec.horizon_bars
            if settings.window_bars <= horizon + 2:
                raise ConfigError(
                    f"window_bars ({settings.window_bars}) must exceed the signal horizon "
                    f"({horizon}) + 2 so open positions stay inside the candle window"
                )
        self.settings = settings
        self.client = client
        self.journal = journal
        self.decider = decider
        self.guards = guards
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.step_ms = settings.timeframe.ms
        self.broker: Broker = broker or PaperBroker(
            exit_spec, strategy=settings.strategy, run_id=settings.run_id
        )
        self.stop_event = asyncio.Event()
        self.cycles_done = 0
        self._executor = executor
        self._windows: dict[str, Window] = {s: Window() for s in settings.symbols}
        self._done_ms: dict[str, int] = {}
        self.ledger = Ledger()
        self.funding = FundingBook()
        self._recovered = False

    # ---- recovery --------------------------------------------------------------------------

    async def recover(self) -> None:
        """Reload positions, realised P&L and the last processed bars from the journal."""
        self.broker.load(await self.journal.positions(("pending", "open")))
        self._done_ms = await self.journal.symbol_state()
        fills = await self.journal.realized_fills()
        for time_ms, pnl, cid, leg in fills:
            self.ledger.add(time_ms, pnl, cid, leg)
        self.funding.restore(fills)
        upd = await self.broker.recover()  # the venue's view (real orders): fills while down
        if upd.orders or upd.fills or upd.positions:
            batch = JournalBatch()
            self._book(batch, upd)
            await self.journal.write(batch)
        self._recovered = True
        log.info(
            "recovery_completed",
            run_id=self.settings.run_id,
            open_positions=self.broker.open_count(),
            symbols_done=len(self._done_ms),
        )

    def resume_ms(self) -> int | None:
        """Open time of the oldest bar not yet processed by every symbol (None: fresh)."""
        if not self._done_ms:
            return None
        pending = [self._done_ms.get(s) for s in self.settings.symbols]
        known = [t for t in pending if t is not None]
        return min(known) + self.step_ms if known else None

    def realized_before(self, time_ms: int) -> float:
        """Realised cash (fees, exit legs, funding) of every fill before ``time_ms``."""
        return self.ledger.before(time_ms)

    # ---- run -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop: outstanding requests are cancelled, journal writes finish."""
        self.stop_event.set()

    async def run(self) -> int:
        """Run cycles until stopped, ``stop_ms`` or ``max_cycles``; returns cycles run."""
        if not self._recovered:
            await self.recover()
        s = self.settings
        resume = self.resume_ms()
        latest = next_bar_close_ms(int(self.clock.time() * 1000), self.step_ms) - self.step_ms
        if resume is not None:
            first = resume + self.step_ms
        elif s.start_ms is not None:
            first = s.start_ms + self.step_ms
        else:
            first = latest
        close_ms = max(first, latest)
        for sym in s.symbols:  # a fresh symbol decides from the first bar of this run on
            self._done_ms.setdefault(sym, first - 2 * self.step_ms)
        while not self.stop_event.is_set():
            if s.stop_ms is not None and close_ms - self.step_ms >= s.stop_ms:
                break
            if s.max_cycles is not None and self.cycles_done >= s.max_cycles:
                break
            wait_s = close_ms / 1000 + s.bar_close_delay_s - self.clock.time()
            ok, _ = await race(self.clock.sleep(wait_s), self.stop_event)
            if not ok:
                break
            result = await self.run_cycle(close_ms)
            if result is None:
                break
            self.cycles_done += 1
            latest = next_bar_close_ms(int(self.clock.time() * 1000), self.step_ms) - self.step_ms
            close_ms = max(close_ms + self.step_ms, latest)
        log.info("loop_stopped", run_id=s.run_id, cycles=self.cycles_done)
        return self.cycles_done

    async def run_cycle(self, close_ms: int) -> CycleResult | None:
        """One cycle for the bar closing at ``close_ms``; None when stopped while fetching."""
        if not self._recovered:
            await self.recover()
        s = self.settings
        bar_ms = close_ms - self.step_ms
        for sym in s.symbols:
            self._done_ms.setdefault(sym, bar_ms - self.step_ms)
        started = time.perf_counter()
        started_wall_ms = int(time.time() * 1000)
        with span("live.cycle", bar_time_ms=bar_ms, symbols=len(s.symbols)):
            ok, fetched = await race(self._fetch_all(bar_ms), self.stop_event)
            if not ok or fetched is None:
                log.info("cycle_interrupted", open_time=bar_ms)
                return None
            frames, failed, pre = fetched
            for sym, err in sorted(failed.items()):
                kind = err.split(":", 1)[0] if ": " in err else "TimeoutError"
                self.metrics.errors_total.labels(type=kind).inc()
                log.warning("symbol_skipped", symbol=sym, open_time=bar_ms, error=err)
            decisions, signals = await self._process(
                frames, pre, bar_ms, failed, started, started_wall_ms
            )
            latency_ms = (time.perf_counter() - started) * 1000
            status = STATUS_OK if not failed else STATUS_PARTIAL if frames else STATUS_FAILED
            self.metrics.cycles_total.labels(status=status).inc()
            self.metrics.cycle_duration_seconds.observe(latency_ms / 1000)
            log.info(  # inside the span: the line carries the cycle's trace id
                "cycle_completed",
                open_time=bar_ms,
                status=status,
                latency_ms=round(latency_ms, 3),
                symbols_ok=len(frames),
                symbols_failed=len(failed),
                decisions=decisions,
            )
        return CycleResult(
            bar_ms, decisions, signals, tuple(sorted(frames)), failed, latency_ms, status
        )

    # ---- fetch -----------------------------------------------------------------------------

    async def _fetch_all(self, bar_ms: int) -> _Fetched:
        s = self.settings
        step = self.step_ms
        # without a backlog every fill before this bar is known: a symbol's decision can start
        # as soon as its candle arrives, overlapping the other symbols' requests
        # (and with no position, the equity to size with is the realised one)
        equity: float | None = None
        if (
            s.early_decisions
            and self.broker.open_count() == 0
            and all(self._done_ms[sym] == bar_ms - step for sym in s.symbols)
        ):
            equity = s.initial_equity + self.realized_before(bar_ms)
        tasks = {
            sym: asyncio.create_task(self._fetch_and_decide(sym, bar_ms, equity), name=sym)
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
        self, sym: str, bar_ms: int, equity: float | None
    ) -> tuple[pd.DataFrame, Decision | None]:
        """Fetch ``sym``; when its only new bar is ``bar_ms`` and ``equity`` is known, decide
        it right away in the executor (the same call :meth:`_step` would make)."""
        frame = await self._fetch_symbol(sym, bar_ms)
        win = self._windows[sym]
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

    async def _fetch_symbol(self, sym: str, bar_ms: int) -> pd.DataFrame:
        """Closed bars of ``sym`` after its window's last bar up to ``bar_ms`` (the whole
        window on the first call), validated."""
        s = self.settings
        win = self._windows[sym]
        last = win.last_ms
        if last is None:
            first_todo = self._done_ms[sym] + self.step_ms
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
                await self._fetch_funding(sym, bar_ms)
        return frame

    async def _fetch_funding(self, sym: str, upto_ms: int) -> None:
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

    # ---- process ---------------------------------------------------------------------------

    async def _process(
        self,
        frames: Mapping[str, pd.DataFrame],
        pre: Mapping[str, tuple[Decision, float]],
        bar_ms: int,
        failed: Mapping[str, str],
        started: float,
        started_wall_ms: int,
    ) -> tuple[int, int]:
        """Append the fetched bars and process every new bar time, oldest first."""
        todo: dict[int, list[str]] = {}
        for sym in sorted(frames):
            win = self._windows[sym]
            frame = frames[sym]
            if win.last_ms is not None:
                frame = frame[frame["open_time"] > win.last_ms]
            if len(frame):
                win.append(frame)
            done = self._done_ms[sym]
            for t_ms in win.open_time[win.index(done + 1) :].tolist():
                if t_ms > done:
                    todo.setdefault(int(t_ms), []).append(sym)
                    self.metrics.candle_age_seconds.labels(symbol=sym).set(
                        max(0.0, self.clock.time() - (t_ms + self.step_ms) / 1000)
                    )
        times = sorted(todo)
        decisions = signals = 0
        for k, t_ms in enumerate(times):
            early = pre if t_ms == bar_ms else {}
            batch, n_sig = await self._step(t_ms, sorted(todo[t_ms]), early)
            decisions += len(todo[t_ms])
            signals += n_sig
            if k == len(times) - 1:
                batch.cycle = self._cycle_record(bar_ms, frames, failed, started, started_wall_ms)
            with span("live.journal_write", open_time=t_ms, signals=len(batch.signals)):
                await self.journal.write(batch)
        if not times:
            batch = JournalBatch(
                cycle=self._cycle_record(bar_ms, frames, failed, started, started_wall_ms)
            )
            with span("live.journal_write", open_time=bar_ms, signals=0):
                await self.journal.write(batch)
        for win in self._windows.values():
            win.trim(self.settings.window_bars)
        return decisions, signals

    def _cycle_record(
        self,
        bar_ms: int,
        frames: Mapping[str, pd.DataFrame],
        failed: Mapping[str, str],
        started: float,
        started_wall_ms: int,
    ) -> CycleRecord:
        status = STATUS_OK if not failed else STATUS_PARTIAL if frames else STATUS_FAILED
        latency_ms = (time.perf_counter() - started) * 1000
        return CycleRecord(
            bar_time_ms=bar_ms,
            run_id=self.settings.run_id,
            started_ms=started_wall_ms,
            ended_ms=int(time.time() * 1000),
            symbols_ok=len(frames),
            symbols_failed=dict(failed),
            latency_ms=latency_ms,
            status=status,
        )

    async def _step(
        self,
        t_ms: int,
        symbols: Sequence[str],
        pre: Mapping[str, tuple[Decision, float]],
    ) -> tuple[JournalBatch, int]:
        """Process bar ``t_ms`` of ``symbols``: funding, exits, the equity mark, decisions,
        guards; one journal batch. Sizing uses the equity marked at this bar's close after
        its exits (what the backtest sizes the next open's entries with)."""
        s = self.settings
        batch = JournalBatch()
        leaving: list[tuple[str, int, float, float]] = []
        for sym in symbols:
            win = self._windows[sym]
            hi = win.index(t_ms) + 1
            lo = max(0, hi - s.window_bars)
            if s.funding and self.broker.open_count(sym):
                if (self.funding.known_until(sym) or -1) < t_ms:
                    try:  # a backlog bar: funding of positions opened since the fetch
                        await self._fetch_funding(sym, t_ms)
                    except (ExchangeError, DataError, TimeoutError) as exc:
                        log.warning("funding_unavailable", symbol=sym, open_time=t_ms,
                                    error=f"{type(exc).__name__}: {exc}")  # fmt: skip
                charged = self.funding.charges(
                    sym, t_ms, self.broker.positions(sym), self.broker.remaining,
                    win.open_time, win.cols["open"],
                )  # fmt: skip
                for fill in charged:
                    batch.fills.append(fill)
                    self.ledger.add(fill.time_ms, fill.pnl, fill.client_order_id, fill.leg)
                    log.info("funding_charged", symbol=sym, open_time=fill.time_ms,
                             amount=-fill.pnl, client_order_id=fill.client_order_id)  # fmt: skip
            upd = await self.broker.on_bar(
                sym,
                win.open_time[lo:hi],
                win.cols["open"][lo:hi],
                win.cols["high"][lo:hi],
                win.cols["low"][lo:hi],
            )
            self._book(batch, upd)
            leaving.extend(_leaving_after(upd, t_ms))
        batch.equity = self._mark(t_ms, leaving)
        equity = batch.equity.equity
        jobs: list[tuple[str, pd.DataFrame, float]] = []
        ready: dict[str, Decision] = {}
        for sym in symbols:
            early = pre.get(sym)
            if early is not None and early[1] == equity:
                ready[sym] = early[0]
            else:
                win = self._windows[sym]
                hi = win.index(t_ms) + 1
                jobs.append((sym, win.frame(max(0, hi - s.window_bars), hi), equity))
        if jobs:
            loop = asyncio.get_running_loop()
            # features and meta prediction of every symbol of this bar, off the event loop
            with span("live.decide", open_time=t_ms, symbols=len(jobs)):
                decided = await loop.run_in_executor(
                    self._executor, decide_many, self.decider, jobs
                )
            ready.update((job[0], dec) for job, dec in zip(jobs, decided, strict=True))
        n_signals = 0
        day_equity = s.initial_equity + self.realized_before(day_start_ms(t_ms))
        for sym in symbols:
            dec = ready[sym]
            batch.symbol_state[sym] = t_ms
            if dec.signal is None:
                continue
            n_signals += 1
            await self._apply(batch, sym, t_ms, dec, equity, day_equity)
        self.metrics.open_positions.set(self.broker.open_count())
        self.metrics.equity_usdt.set(equity)
        self.metrics.daily_pnl_usdt.set(equity - day_equity)
        self._done_ms.update(batch.symbol_state)
        return batch, n_signals

    def _book(self, batch: JournalBatch, upd: BrokerUpdate) -> None:
        """Journal a broker update; fills go to the realised ledger, a closed position's
        P&L gets its funding."""
        batch.orders.extend(upd.orders)
        batch.fills.extend(upd.fills)
        for pos in upd.positions:
            paid = self.funding.paid(pos.position_id)
            if pos.status == "closed" and paid and pos.pnl is not None:
                pos = replace(pos, pnl=pos.pnl - paid)
            batch.positions.append(pos)
        for fill in upd.fills:
            self.ledger.add(fill.time_ms, fill.pnl, fill.client_order_id, fill.leg)
            if fill.leg != "entry":
                log.info("order_filled", symbol=fill.symbol, price=fill.price,
                         qty=fill.quantity, reasons=[fill.reason])  # fmt: skip

    async def _apply(
        self,
        batch: JournalBatch,
        sym: str,
        t_ms: int,
        dec: Decision,
        equity: float,
        day_equity: float,
    ) -> None:
        s = self.settings
        sig = dec.signal
        assert sig is not None  # checked by the caller
        take = dec.take
        blocked_by = dec.blocked_by
        qty = dec.sizing.quantity if dec.sizing is not None else 0.0
        breach: GuardBreach | None = None
        if take:
            # a position whose time barrier is the next bar's open leaves before this entry
            # fills (the backtest frees its slot first too)
            next_open = t_ms + self.step_ms
            positions = [
                p
                for p in self.broker.positions()
                if p.entry_time_ms is None
                or p.entry_time_ms + p.horizon_bars * self.step_ms != next_open
            ]
            by_symbol: dict[str, int] = {}
            gross = 0.0
            for pos in positions:  # the backtest's gross: open quantity at the last close
                by_symbol[pos.symbol] = by_symbol.get(pos.symbol, 0) + 1
                gross += self.broker.remaining(pos) * self._last_close(pos.symbol, t_ms)
            view = PortfolioView(equity, day_equity, len(positions), by_symbol, gross)
            notional = dec.sizing.notional if dec.sizing is not None else qty * sig.entry
            breach = self.guards.check_entry(view, sym, notional)
            if breach is not None:
                take = False
                blocked_by = breach.guard
                batch.guard_events.append(GuardEvent(t_ms, breach.guard, sym, breach.detail))
                self.metrics.risk_guard_breaches_total.labels(guard=breach.guard).inc()
                log.warning("guard_breached", symbol=sym, guard=breach.guard, error=breach.detail)
        if take and qty > 0.0:
            upd = await self.broker.submit(
                EntryRequest(
                    sym,
                    int(sig.side),
                    t_ms,
                    qty,
                    sig.sl_dist,
                    sig.tp1_dist,
                    sig.tp2_dist,
                    sig.horizon_bars,
                ),
                reference_price=sig.entry,
                created_ms=int(time.time() * 1000),
            )
            self._book(batch, upd)
        reasons = tuple(f"{r.feature}={r.value:.4g} ({r.contribution:+.3f})" for r in dec.reasons)
        batch.signals.append(
            SignalRecord(
                strategy=s.strategy,
                symbol=sym,
                bar_time_ms=t_ms,
                side=int(sig.side),
                entry=sig.entry,
                sl=sig.sl,
                tp1=sig.tp1,
                tp2=sig.tp2,
                horizon_bars=sig.horizon_bars,
                p_take=dec.p_take,
                threshold=dec.threshold,
                take=take,
                reasons=reasons,
                model_id=dec.model_id or "primary",
                quantity=qty,
                blocked_by=blocked_by,
                run_id=s.run_id,
                created_ms=int(time.time() * 1000),
            )
        )
        side = "long" if int(sig.side) == 1 else "short"
        self.metrics.signals_total.labels(
            symbol=sym, side=side, decision="taken" if take else "blocked"
        ).inc()
        if dec.p_take is not None and math.isfinite(dec.p_take):
            self.metrics.meta_probability.observe(dec.p_take)
        log.info(
            "signal_generated" if take else "signal_blocked",
            symbol=sym,
            side=side,
            open_time=t_ms,
            price=sig.entry,
            qty=qty,
            ml_probability=dec.p_take,
            threshold=dec.threshold,
            reasons=list(reasons) or ([blocked_by] if blocked_by else []),
            model_id=dec.model_id,
        )

    def _last_close(self, sym: str, t_ms: int) -> float:
        """``sym``'s close of the latest bar at or before ``t_ms`` (NaN if none)."""
        win = self._windows[sym]
        i = win.index(t_ms + 1) - 1
        return float(win.cols["close"][i]) if i >= 0 else math.nan

    def _mark(
        self, t_ms: int, leaving: Sequence[tuple[str, int, float, float]] = ()
    ) -> EquityRecord:
        """Equity at bar ``t_ms``'s close: realised cash (fees, legs, funding) plus open
        positions at their symbol's last close (the backtest's mark). ``leaving``: ``(symbol,
        side, quantity, entry)`` still open at this close but already closed at the next open
        (a time exit sent at this close)."""
        realized = self.realized_before(t_ms + 1)
        open_pnl = 0.0
        for sym in sorted({p.symbol for p in self.broker.positions()}):
            close = self._last_close(sym, t_ms)
            if math.isfinite(close):
                open_pnl += unrealized(self.broker, sym, close)
        for sym, side, qty, entry in leaving:
            open_pnl += side * qty * (self._last_close(sym, t_ms) - entry)
        return EquityRecord(
            bar_time_ms=t_ms,
            equity=self.settings.initial_equity + realized + open_pnl,
            realized_pnl=realized,
            open_positions=self.broker.open_count(),
        )


def _leaving_after(upd: BrokerUpdate, t_ms: int) -> list[tuple[str, int, float, float]]:
    """Positions ``upd`` closed with exit fills after bar ``t_ms`` (a time exit at the next
    open): ``(symbol, side, quantity those fills closed, entry)``."""
    out = []
    for pos in upd.positions:
        if pos.status != "closed" or pos.entry_price is None:
            continue
        qty = sum(
            f.quantity
            for f in upd.fills
            if f.client_order_id == pos.position_id and f.leg.startswith("leg") and f.time_ms > t_ms
        )
        if qty > 0.0:
            out.append((pos.symbol, pos.side, qty, pos.entry_price))
    return out


async def run_until_signal(loop: LiveLoop, signals: Sequence[int]) -> int:
    """Run ``loop`` with SIGINT/SIGTERM handlers that stop it gracefully; returns cycles."""
    ev_loop = asyncio.get_running_loop()
    for sig in signals:
        ev_loop.add_signal_handler(sig, loop.stop)
    try:
        return await loop.run()
    finally:
        for sig in signals:
            ev_loop.remove_signal_handler(sig)
