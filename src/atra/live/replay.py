"""Replays: the live loop against the fake exchange serving history, on a simulated clock.

``atra live --replay`` runs exactly the loop of a live run (fetching through the shared
limiter, deciding, journalling, paper fills), only the exchange is
:class:`atra.sim.exchange.FakeExchange` over HTTP on 127.0.0.1 and time is a
:class:`atra.live.loop.SimClock`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.journal.database import Journal
from atra.adapters.ratelimit import RateLimiter, ScaledClock, add_market_limits
from atra.adapters.trading.spot_trader import SpotTrader
from atra.adapters.trading.trader import BinanceTrader
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs, SeriesInput, counterpart_market
from atra.core.types import Market
from atra.errors import ConfigError, ExchangeError
from atra.live.deciders import DecisionFn
from atra.live.execution import ExchangeBroker
from atra.live.guards import RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, SimClock, run_until_signal
from atra.live.paper import Broker
from atra.live.replay_run import ReplayRun, claim_journal, replay_run
from atra.live.retrain import Retrainer
from atra.live.series_feed import replay_series_feed
from atra.live.spot_execution import SpotBroker
from atra.live.stream_feed import BTC_SYMBOL, FeedKind, StreamBars, StreamSettings
from atra.obs import Metrics
from atra.sim.exchange import FakeExchange, Faults
from atra.sim.stream import StreamFaults


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay did: its run (identity and run id), cycles run (0 when a resumed journal
    was complete), requests the fake exchange saw (by status), the most weight it counted in
    one window, and whether it was stopped by a signal."""

    run: ReplayRun
    resumed: bool
    cycles: int
    requests: int
    statuses: Mapping[int, int]
    max_used_weight: int
    weight_limit: int | None
    stopped: bool


@dataclass(frozen=True, slots=True)
class ReplaySetup:
    """The fake exchange and client side of a replay."""

    market: Market = Market.PERP
    speed: float = math.inf
    time_scale: float = 60.0
    """The fake exchange's and the limiter's clock: 60 runs a one-minute weight window in a
    second, so replays at full speed still meet (scaled) rate limits."""
    weight_limit: int | None = 2400
    faults: Faults | None = None
    client_timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_s: float = 0.5
    orders: bool = False
    """Trade through the real order path: :class:`atra.live.execution.ExchangeBroker` over the
    signed :class:`atra.adapters.trading.trader.BinanceTrader`, against the fake exchange's matching
    engine (on the replay's clock) instead of the paper broker; on spot
    :class:`atra.live.spot_execution.SpotBroker` over
    :class:`atra.adapters.trading.spot_trader.SpotTrader` and the fake's spot engine."""
    feed: FeedKind = "rest"
    """``"ws"``: new bars come from the fake exchange's kline stream (REST fills the gaps)."""
    stream_faults: StreamFaults | None = None
    stream_wait_s: float = 1.0
    """Real seconds a cycle waits for a streamed bar before fetching it over REST."""


REPLAY_API_KEY = "replay-api-key"
REPLAY_API_SECRET = "replay-api-secret"  # noqa: S105 (the fake exchange's own)


async def run_replay(
    settings: LoopSettings,
    candles: Mapping[str, pd.DataFrame],
    journal_path: Path,
    *,
    decider: DecisionFn,
    exit_spec: ExitSpec,
    guards: RiskGuards,
    setup: ReplaySetup | None = None,
    metrics: Metrics | None = None,
    stop_signals: Sequence[int] = (),
    on_start: Callable[[LiveLoop, FakeExchange], None] | None = None,
    funding: Mapping[str, pd.DataFrame] | None = None,
    context_candles: Mapping[tuple[Market, str], pd.DataFrame] | None = None,
    series: Sequence[SeriesInput] = (),
    series_sources: Collection[str] = (),
    retrainer: Retrainer | None = None,
) -> ReplayReport:
    """Run the live loop against a fake exchange serving ``candles`` (and ``funding`` rates of
    perpetuals) with a simulated clock starting at ``settings.start_ms`` (required), until
    ``settings.stop_ms`` (required) or a signal.

    The journal must be new or hold this very run (:mod:`atra.live.replay_run`): the run id is
    derived from the range, symbols, market, timeframe, settings and model, with
    ``settings.run_id`` as its first part; anything else is refused before a bar is run.

    ``context_candles``: the model's side candles by (market, symbol), served too: each
    symbol's counterpart market (fetched through a second client of that market sharing the
    rate limiter) and BTCUSDT when it is not replayed itself.

    ``series``: the configured external series (:func:`atra.adapters.series.configured_series`),
    given to each decision point in time (:func:`atra.live.series_feed.replay_series_feed`);
    ``series_sources``: those of these names that are built-in come through their live sources
    against the fake series server on the replay's clock instead.

    ``retrainer``: retraining while live (``live.retrain_days``); a replay waits for each
    retrain, so the new model takes over exactly at its scheduled bar (``wait=True``)."""
    if settings.start_ms is None:
        raise ConfigError("replay needs a start time (--from)")
    if settings.stop_ms is None:
        raise ConfigError("replay needs an end time (--to)")
    rs = setup or ReplaySetup()
    run = replay_run(
        settings,
        decider=decider,
        exit_spec=exit_spec,
        limits=guards.limits,
        market=rs.market,
        orders=rs.orders,
        retrain=None if retrainer is None else retrainer.identity(),
    )
    clock = SimClock(settings.start_ms / 1000, rs.speed)
    frames = {(rs.market, sym, settings.timeframe): frame for sym, frame in candles.items()}
    for (mkt, sym), frame in (context_candles or {}).items():
        frames.setdefault((mkt, sym, settings.timeframe), frame)
    inputs = getattr(decider, "inputs", None)
    other = counterpart_market(rs.market)
    needs_side = isinstance(inputs, ModelInputs) and inputs.needs_counterpart
    fake = FakeExchange(
        frames,
        funding,
        weight_limit=rs.weight_limit,
        time_scale=rs.time_scale,
        faults=rs.faults,
        api_key=REPLAY_API_KEY if rs.orders else None,
        api_secret=REPLAY_API_SECRET if rs.orders else None,
        market_clock=clock.time,
        slippage_bps=exit_spec.slippage_bps,
        stream_faults=rs.stream_faults,
    )
    scaled = ScaledClock(rs.time_scale)
    limiter = RateLimiter(
        rs.weight_limit or 1_000_000,
        clock=scaled,
        name="fake exchange",
        enabled=rs.weight_limit is not None,
    )
    add_market_limits(limiter, rs.market)
    async with fake:
        client = BinanceClient(
            rs.market,
            base_url=fake.url,
            limiter=limiter,
            clock=scaled,
            timeout_s=rs.client_timeout_s,
            max_attempts=rs.max_attempts,
            backoff_s=rs.backoff_s,
            metrics=metrics,
        )
        side_client = (
            BinanceClient(
                other,
                base_url=fake.url,
                limiter=limiter,  # one budget for both markets: the fake counts them together
                clock=scaled,
                timeout_s=rs.client_timeout_s,
                max_attempts=rs.max_attempts,
                backoff_s=rs.backoff_s,
                metrics=metrics,
            )
            if needs_side
            else None
        )
        async with (
            client,
            side_client or contextlib.nullcontext(),
            Journal.open(journal_path, exclusive=True) as journal,
            replay_series_feed(series, clock, via_sources=series_sources) as series_feed,
            _stream(rs, settings, fake, client, clock, inputs, side_client) as stream,
        ):
            resumed = not await claim_journal(journal, run)
            run_id = await journal.meta("run_id", run.run_id)  # kept across restarts
            broker: Broker | None = None
            if rs.orders and rs.market is Market.SPOT:  # long only, OCO exits
                spot = SpotTrader(client, api_key=REPLAY_API_KEY, api_secret=REPLAY_API_SECRET)
                broker = SpotBroker(
                    spot,
                    exit_spec,
                    strategy=settings.strategy,
                    run_id=run_id,
                    timeframe=settings.timeframe,
                    clock=clock.time,
                    symbols=settings.symbols,
                )
            elif rs.orders:
                trader = BinanceTrader(client, api_key=REPLAY_API_KEY, api_secret=REPLAY_API_SECRET)
                broker = ExchangeBroker(
                    trader,
                    exit_spec,
                    strategy=settings.strategy,
                    run_id=run_id,
                    timeframe=settings.timeframe,
                    clock=clock.time,
                )
            loop = LiveLoop(
                replace(settings, run_id=run_id),
                client=client,
                journal=journal,
                decider=decider,
                exit_spec=exit_spec,
                guards=guards,
                clock=clock,
                metrics=metrics,
                broker=broker,
                side_client=side_client,
                series=series_feed,
                retrainer=retrainer,
                stream=stream,
            )
            if on_start is not None:
                on_start(loop, fake)
            cycles = await run_until_signal(loop, stop_signals)
        statuses: dict[int, int] = {}
        for rec in fake.requests:
            statuses[rec.status] = statuses.get(rec.status, 0) + 1
        return ReplayReport(
            run=run,
            resumed=resumed,
            cycles=cycles,
            requests=len(fake.requests),
            statuses=statuses,
            max_used_weight=max((r.used_weight for r in fake.requests), default=0),
            weight_limit=rs.weight_limit,
            stopped=loop.stop_event.is_set(),
        )


@contextlib.asynccontextmanager
async def _stream(
    rs: ReplaySetup,
    settings: LoopSettings,
    fake: FakeExchange,
    client: BinanceClient,
    clock: SimClock,
    inputs: object = None,
    side_client: BinanceClient | None = None,
) -> AsyncIterator[StreamBars | None]:
    """The kline streams of a ``feed="ws"`` replay (with the BTC context and the counterpart
    market's stream when the model's ``inputs`` read them), connected before the first
    cycle."""
    if rs.feed == "rest":
        yield None
        return
    need = inputs if isinstance(inputs, ModelInputs) else ModelInputs()
    side = side_client if need.needs_counterpart else None
    stream_settings = StreamSettings(
        url=fake.stream_url(rs.market),
        side_url=None if side is None else fake.stream_url(side.market),
        wait_s=rs.stream_wait_s,
        backoff_s=0.02,
        max_backoff_s=0.5,
        min_interval_s=0.0,  # the fake on loopback has no connection limit
        seed=0,
    )
    bars = StreamBars(
        rs.market,
        settings.symbols,
        settings.timeframe,
        backfill=client,
        settings=stream_settings,
        now_s=clock.time,
        btc=BTC_SYMBOL if need.needs_btc else None,
        side=side,
    )
    async with bars:
        if not await bars.wait_connected(rs.client_timeout_s):
            raise ExchangeError("replay: the fake exchange's kline stream did not connect")
        yield bars
