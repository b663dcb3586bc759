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

:class:`LiveLoop` runs the cycles, recovers and stops; it composes the candle windows and
fetches (:class:`~atra.live.feed.CandleFeed`; with ``stream``, ``live.feed = "ws"``, new bars
come from the kline WebSocket stream, :class:`~atra.live.stream_feed.StreamBars`), the books
(:class:`~atra.live.portfolio.Portfolio`: broker, realised ledger, funding, the equity mark)
and the per-bar decisions and journal batches (:class:`~atra.live.trader.BarTrader`). With
retraining (``live.retrain_days``), a :class:`~atra.live.retrain.Retrainer` swaps the trader's
model at bar boundaries; stopping or cancelling the loop terminates a retrain still running.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from atra.adapters.exchange.client import ExchangeClient
from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import JournalBatch
from atra.adapters.ratelimit import Clock
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.signals.spec import SignalSpec
from atra.errors import ConfigError
from atra.live.deciders import DecisionFn, StrategyDecider
from atra.live.feed import CandleFeed
from atra.live.guards import RiskGuards
from atra.live.ledger import FundingBook, Ledger
from atra.live.paper import Broker, PaperBroker
from atra.live.portfolio import Portfolio
from atra.live.retrain import Retrainer
from atra.live.series_feed import SeriesFeed
from atra.live.settings import CycleResult, LoopSettings, SimClock, next_bar_close_ms, race
from atra.live.stream_feed import StreamBars
from atra.live.trader import BarTrader, cycle_status
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

log = get_logger("atra.live.loop")


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
        side_client: ExchangeClient | None = None,
        series: SeriesFeed | None = None,
        retrainer: Retrainer | None = None,
        stream: StreamBars | None = None,
    ) -> None:
        inputs = getattr(decider, "inputs", None)  # the model's side data (StrategyDecider)
        if isinstance(inputs, ModelInputs) and settings.window_bars <= inputs.warmup_bars:
            raise ConfigError(
                f"window_bars ({settings.window_bars}) must exceed the model's feature warm-up "
                f"({inputs.warmup_bars} bars)"
            )
        spec = getattr(decider, "spec", None)
        if isinstance(spec, SignalSpec):
            horizon = spec.horizon_bars
            if settings.window_bars <= horizon + 2:
                raise ConfigError(
                    f"window_bars ({settings.window_bars}) must exceed the signal horizon "
                    f"({horizon}) + 2 so open positions stay inside the candle window"
                )
        if retrainer is not None and retrainer.decider is not decider:
            raise ConfigError("the retrainer must start from the loop's own decider")
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
        self.ledger = Ledger()
        self.funding = FundingBook()
        self.feed = CandleFeed(
            settings,
            client=client,
            broker=self.broker,
            funding=self.funding,
            decider=decider,
            executor=executor,
            inputs=inputs if isinstance(inputs, ModelInputs) else None,
            side_client=side_client,
            series=series,
            stream=stream,
        )
        if stream is not None and stream.metrics is None:
            stream.attach_metrics(self.metrics)  # atra_stream_*: on the loop's registry
        self.portfolio = Portfolio(
            settings, broker=self.broker, ledger=self.ledger, funding=self.funding, feed=self.feed
        )
        self.trader = BarTrader(
            settings,
            feed=self.feed,
            portfolio=self.portfolio,
            journal=journal,
            decider=decider,
            guards=guards,
            metrics=self.metrics,
            clock=clock,
            executor=executor,
            retrainer=retrainer,
        )
        self.retrainer = retrainer
        """Retraining while live (``live.retrain_days``): swaps the trader's decider."""
        self._recovered = False
        self._heap_settled = False

    # ---- recovery --------------------------------------------------------------------------

    async def recover(self) -> None:
        """Reload positions, realised P&L and the last processed bars from the journal."""
        self.broker.load(await self.journal.positions(("pending", "open")))
        self.trader.done_ms = await self.journal.symbol_state()
        self.portfolio.restore(await self.journal.realized_fills())
        upd = await self.broker.recover()  # the venue's view (real orders): fills while down
        if upd.orders or upd.fills or upd.positions:
            batch = JournalBatch()
            self.portfolio.book(batch, upd)
            await self.journal.write(batch)
        if self.retrainer is not None:  # the retrained model the journal says decides
            restored = await self.retrainer.attach(
                self.journal, self.settings.run_id, self.settings, self.feed, self.stop_event
            )
            if restored is not None:
                self.decider = self.trader.decider = self.feed.decider = restored
        self._recovered = True
        log.info(
            "recovery_completed",
            run_id=self.settings.run_id,
            open_positions=self.broker.open_count(),
            symbols_done=len(self.trader.done_ms),
        )

    def resume_ms(self) -> int | None:
        """Open time of the oldest bar not yet processed by every symbol (None: fresh)."""
        done_ms = self.trader.done_ms
        if not done_ms:
            return None
        pending = [done_ms.get(s) for s in self.settings.symbols]
        known = [t for t in pending if t is not None]
        return min(known) + self.step_ms if known else None

    def realized_before(self, time_ms: int) -> float:
        """Realised cash (fees, exit legs, funding) of every fill before ``time_ms``."""
        return self.portfolio.realized_before(time_ms)

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
            self.trader.done_ms.setdefault(sym, first - 2 * self.step_ms)
        try:
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
                latest = next_bar_close_ms(int(self.clock.time() * 1000), self.step_ms)
                close_ms = max(close_ms + self.step_ms, latest - self.step_ms)
        finally:  # stopped, done or cancelled: a retrain still running is terminated
            if self.retrainer is not None:
                self.retrainer.close()
        log.info("loop_stopped", run_id=s.run_id, cycles=self.cycles_done)
        return self.cycles_done

    async def run_cycle(self, close_ms: int) -> CycleResult | None:
        """One cycle for the bar closing at ``close_ms``; None when stopped while fetching."""
        if not self._recovered:
            await self.recover()
        s = self.settings
        bar_ms = close_ms - self.step_ms
        for sym in s.symbols:
            self.trader.done_ms.setdefault(sym, bar_ms - self.step_ms)
        started = time.perf_counter()
        started_wall_ms = int(time.time() * 1000)
        with span("live.cycle", bar_time_ms=bar_ms, symbols=len(s.symbols)):
            fetch = self.feed.fetch_all(
                bar_ms, self.trader.done_ms, self.trader.early_equity(bar_ms)
            )
            ok, fetched = await race(fetch, self.stop_event)
            if not ok or fetched is None:
                log.info("cycle_interrupted", open_time=bar_ms)
                return None
            frames, failed, pre = fetched
            for sym, err in sorted(failed.items()):
                kind = err.split(":", 1)[0] if ": " in err else "TimeoutError"
                self.metrics.errors_total.labels(type=kind).inc()
                log.warning("symbol_skipped", symbol=sym, open_time=bar_ms, error=err)
            decisions, signals = await self.trader.process(
                frames, pre, bar_ms, failed, started, started_wall_ms
            )
            latency_ms = (time.perf_counter() - started) * 1000
            status = cycle_status(frames, failed)
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
        if s.settle_heap and not self._heap_settled:
            self.settle_heap()
        return CycleResult(
            bar_ms, decisions, signals, tuple(sorted(frames)), failed, latency_ms, status
        )

    def settle_heap(self) -> None:
        """A full garbage collection, then every survivor (imported modules, windows,
        models) moved out of the collector's reach (:func:`gc.freeze`); with
        ``settle_heap``, once after the first cycle (the windows' fill). A full collection
        scans the whole heap (150-400 ms with the research stack loaded); left to chance,
        one lands in a cycle every few bars. Frozen objects are still freed by reference
        counting; a cycle among them is not (bounded: what was live after the first cycle)."""
        self._heap_settled = True
        gc.collect()
        gc.freeze()


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
