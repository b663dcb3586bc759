"""The live loop's bar trader: each new bar time of a cycle becomes one journal batch.

:class:`BarTrader` takes a cycle's fetched candles and processes every new bar time, oldest
first (a restart's backlog too), each symbol in sorted order: funding and exits of the open
positions, the equity mark (:class:`~atra.live.portfolio.Portfolio`), the decision function
(:func:`atra.core.decision.decide`, run off the event loop in a worker thread) over the last
``window_bars`` bars ending at that bar, the risk guards on a taken decision, the entry order,
and the signal record. Everything of one bar time is journalled in ONE transaction, the
cycle's record with the last one. It keeps the last processed bar per symbol
(:attr:`BarTrader.done_ms`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Final

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import CycleRecord, GuardEvent, JournalBatch, SignalRecord
from atra.adapters.ratelimit import Clock
from atra.core.decision import Decision
from atra.errors import DataError, ExchangeError
from atra.live.deciders import DecisionFn, Job, decide_many
from atra.live.feed import CandleFeed
from atra.live.guards import GuardBreach, RiskGuards, day_start_ms
from atra.live.paper import EntryRequest
from atra.live.portfolio import Leaving, Portfolio, leaving_after
from atra.live.retrain import Retrainer, RetrainStopped
from atra.live.settings import Bars, LoopSettings
from atra.obs import Metrics, get_logger, span

__all__ = ["STATUS_FAILED", "STATUS_OK", "STATUS_PARTIAL", "BarTrader", "cycle_status"]

STATUS_OK: Final[str] = "ok"
STATUS_PARTIAL: Final[str] = "partial"
STATUS_FAILED: Final[str] = "failed"

log = get_logger("atra.live.loop")  # the loop's events keep one logger name


def cycle_status(frames: Mapping[str, object], failed: Mapping[str, str]) -> str:
    """A cycle's status: every symbol fetched, some, or none."""
    return STATUS_OK if not failed else STATUS_PARTIAL if frames else STATUS_FAILED


class BarTrader:
    """The decisions and journal batches of the loop's new bars (see the module docstring)."""

    def __init__(
        self,
        settings: LoopSettings,
        *,
        feed: CandleFeed,
        portfolio: Portfolio,
        journal: Journal,
        decider: DecisionFn,
        guards: RiskGuards,
        metrics: Metrics,
        clock: Clock,
        executor: Executor | None = None,
        retrainer: Retrainer | None = None,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.portfolio = portfolio
        self.broker = portfolio.broker
        self.journal = journal
        self.decider = decider
        self.guards = guards
        self.metrics = metrics
        self.clock = clock
        self.step_ms = settings.timeframe.ms
        self.done_ms: dict[str, int] = {}
        """Open time of the last bar processed, per symbol."""
        self._executor = executor
        self.retrainer = retrainer
        self.committed: list[Callable[[JournalBatch], Awaitable[None]]] = []
        """Called with each batch after it is committed (notifications); must not raise."""

    def early_equity(self, bar_ms: int) -> float | None:
        """The equity to size bar ``bar_ms``'s decisions with before the cycle's fetch ends,
        when it is known then; else None."""
        s = self.settings
        # without a backlog every fill before this bar is known: a symbol's decision can start
        # as soon as its candle arrives, overlapping the other symbols' requests
        # (and with no position, the equity to size with is the realised one)
        if (
            s.early_decisions
            and self.broker.open_count() == 0
            and all(self.done_ms[sym] == bar_ms - self.step_ms for sym in s.symbols)
        ):
            return s.initial_equity + self.portfolio.realized_before(bar_ms)
        return None

    async def process(
        self,
        frames: Mapping[str, Bars],
        pre: Mapping[str, tuple[Decision, float]],
        bar_ms: int,
        failed: Mapping[str, str],
        started: float,
        started_wall_ms: int,
    ) -> tuple[int, int]:
        """Append the fetched bars and process every new bar time, oldest first."""
        todo: dict[int, list[str]] = {}
        for sym in sorted(frames):
            self.feed.append(sym, frames[sym])
            for t_ms in self.feed.bars_after(sym, self.done_ms[sym]):
                todo.setdefault(t_ms, []).append(sym)
                self.metrics.candle_age_seconds.labels(symbol=sym).set(
                    max(0.0, self.clock.time() - (t_ms + self.step_ms) / 1000)
                )
        times = sorted(todo)
        decisions = signals = 0
        if self.retrainer is not None:
            self.retrainer.fetched(bar_ms, frames)
        for k, t_ms in enumerate(times):
            early = pre if t_ms == bar_ms else {}
            if self.retrainer is not None:  # a retrained model takes over at a bar boundary
                try:
                    swapped = await self.retrainer.before_bar(t_ms, self.done_ms)
                except RetrainStopped:  # stopped while a replay waited: not decided
                    break
                if swapped is not None:
                    self.decider = self.feed.decider = swapped
                    early = {}  # decided early by the previous model
            batch, n_sig = await self._step(t_ms, sorted(todo[t_ms]), early)
            decisions += len(todo[t_ms])
            signals += n_sig
            if k == len(times) - 1:
                batch.cycle = self._cycle_record(bar_ms, frames, failed, started, started_wall_ms)
            with span("live.journal_write", open_time=t_ms, signals=len(batch.signals)):
                await self.journal.write(batch)
            for hook in self.committed:
                await hook(batch)
            if self.retrainer is not None:
                self.retrainer.after_bar(t_ms, self.done_ms)
        if not times:
            batch = JournalBatch(
                cycle=self._cycle_record(bar_ms, frames, failed, started, started_wall_ms)
            )
            with span("live.journal_write", open_time=bar_ms, signals=0):
                await self.journal.write(batch)
            for hook in self.committed:
                await hook(batch)
        self.feed.trim()
        return decisions, signals

    def _cycle_record(
        self,
        bar_ms: int,
        frames: Mapping[str, Bars],
        failed: Mapping[str, str],
        started: float,
        started_wall_ms: int,
    ) -> CycleRecord:
        latency_ms = (time.perf_counter() - started) * 1000
        return CycleRecord(
            bar_time_ms=bar_ms,
            run_id=self.settings.run_id,
            started_ms=started_wall_ms,
            ended_ms=int(time.time() * 1000),
            symbols_ok=len(frames),
            symbols_failed=dict(failed),
            latency_ms=latency_ms,
            status=cycle_status(frames, failed),
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
        leaving: list[Leaving] = []
        for sym in symbols:
            win = self.feed.windows[sym]
            hi = win.index(t_ms) + 1
            lo = max(0, hi - s.window_bars)
            if s.funding and self.broker.open_count(sym):
                if (self.portfolio.funding.known_until(sym) or -1) < t_ms:
                    try:  # a backlog bar: funding of positions opened since the fetch
                        await self.feed.fetch_funding(sym, t_ms)
                    except (ExchangeError, DataError, TimeoutError) as exc:
                        log.warning("funding_unavailable", symbol=sym, open_time=t_ms,
                                    error=f"{type(exc).__name__}: {exc}")  # fmt: skip
                self.portfolio.charge_funding(batch, sym, t_ms)
            cols = win.cols
            upd = await self.broker.on_bar(
                sym, win.open_time[lo:hi], cols["open"][lo:hi], cols["high"][lo:hi],
                cols["low"][lo:hi],
            )  # fmt: skip
            self.portfolio.book(batch, upd)
            leaving.extend(leaving_after(upd, t_ms))
        batch.equity = self.portfolio.mark(t_ms, leaving)
        equity = batch.equity.equity
        jobs: list[Job] = []
        ready: dict[str, Decision] = {}
        for sym in symbols:
            early = pre.get(sym)
            if early is not None and early[1] == equity:
                ready[sym] = early[0]
            else:
                win = self.feed.windows[sym]
                hi = win.index(t_ms) + 1
                candles = win.frame(max(0, hi - s.window_bars), hi)
                jobs.append((sym, candles, equity, self.feed.context(sym, candles)))
        if jobs:
            loop = asyncio.get_running_loop()
            # features and meta prediction of every symbol of this bar, off the event loop
            with span("live.decide", open_time=t_ms, symbols=len(jobs)):
                decided = await loop.run_in_executor(
                    self._executor, decide_many, self.decider, jobs
                )
            ready.update((job[0], dec) for job, dec in zip(jobs, decided, strict=True))
        n_signals = 0
        day_equity = s.initial_equity + self.portfolio.realized_before(day_start_ms(t_ms))
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
        self.done_ms.update(batch.symbol_state)
        return batch, n_signals

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
            view = self.portfolio.view(t_ms, equity, day_equity)
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
            self.portfolio.book(batch, upd)
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
