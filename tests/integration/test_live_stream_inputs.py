"""The WebSocket feed beyond the traded symbols' klines: the BTC context and the spot
counterpart come from streams too, the stream's Prometheus metrics are emitted, and the
candle window appends in place.

A model reading BTC and basis features (a decider declaring those inputs and recording the
side data it is handed) is replayed over ``feed="rest"`` and over ``feed="ws"`` with dropped,
delayed and duplicated messages: the same side data reaches every decision, each bar once;
over WebSocket the BTC and spot bars after the first fill come from the streams (the REST
klines requests for them are only the first fill and the fallbacks for dropped messages).
After the ws replay, ``/metrics`` (served on a free port, scraped over HTTP) has non-zero
samples of every ``atra_stream_*`` metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.exchange.stream import ClosedKline, KlineStream
from atra.core.decision import Decision
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.features.registry import FeatureContext
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.errors import DataError
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, SimClock, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.live.settings import Window
from atra.live.stream_feed import BTC_SYMBOL, StreamBars
from atra.obs.metrics import Metrics, start_metrics_server
from atra.sim.exchange import FakeExchange
from atra.sim.stream import StreamFaults
from helpers_live import STEP, T0, synthetic
from helpers_logging import quiet_structlog

TF = Timeframe.H1
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
N_BARS = 40
TRADED = ("AAAUSDT", "BBBUSDT")
CANDLES = {s: synthetic(k + 11, n=N_BARS + 120) for k, s in enumerate(TRADED)}
SIDE = {
    (Market.PERP, BTC_SYMBOL): synthetic(21, n=N_BARS + 120),
    **{(Market.SPOT, s): synthetic(k + 31, n=N_BARS + 120) for k, s in enumerate(TRADED)},
}
FAULTS = StreamFaults(p_drop=0.05, p_duplicate=0.15, p_delay=0.05, delay_s=0.01, close_every=19)
STREAM_METRICS = (
    "atra_stream_messages_total",
    "atra_stream_reconnects_total",
    "atra_stream_backfilled_bars_total",
    "atra_stream_duplicate_bars_total",
    "atra_stream_lag_seconds_count",
)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog(logging.ERROR):
        yield


class SideDataDecider:
    """The strategy's decisions; declares BTC and basis inputs and records, per decision,
    the last BTC and counterpart bar it was given (time and close)."""

    def __init__(self) -> None:
        self.inner = StrategyDecider(SPEC, TF)
        self.spec = SPEC
        self.inputs = ModelInputs(needs_counterpart=True, needs_btc=True, warmup_bars=10)
        self.seen: list[tuple[str, int, int, float, int, float]] = []

    def __call__(
        self,
        symbol: str,
        candles: pd.DataFrame,
        equity: float,
        context: FeatureContext | None = None,
    ) -> Decision:
        assert context is not None
        assert context.btc is not None
        assert context.counterpart is not None
        btc, spot = context.btc, context.counterpart
        self.seen.append(
            (
                symbol,
                int(candles["open_time"].iloc[-1]),
                int(btc["open_time"].iloc[-1]),
                float(btc["close"].iloc[-1]),
                int(spot["open_time"].iloc[-1]),
                float(spot["close"].iloc[-1]),
            )
        )
        return self.inner(symbol, candles, equity, context)


def _replay(path: Path, setup: ReplaySetup, metrics: Metrics) -> tuple[SideDataDecider, list[str]]:
    decider = SideDataDecider()
    streams: list[StreamBars] = []
    fakes: list[FakeExchange] = []  # its request log is read after the run

    def start(loop: LiveLoop, fake: FakeExchange) -> None:
        if loop.feed.stream is not None:
            streams.append(loop.feed.stream)
        fakes.append(fake)

    settings = LoopSettings(
        TRADED,
        TF,
        window_bars=40,
        bar_close_delay_s=0.0,
        start_ms=T0,
        stop_ms=T0 + N_BARS * STEP,
        symbol_timeout_s=2.0,
        cycle_deadline_s=5.0,
    )
    report = asyncio.run(
        run_replay(
            settings,
            CANDLES,
            path,
            decider=decider,
            exit_spec=ExitSpec(slippage_bps=2.0),
            guards=RiskGuards(GuardLimits(max_open_positions=2)),
            setup=setup,
            on_start=start,
            context_candles=SIDE,
            metrics=metrics,
        )
    )
    assert report.cycles == N_BARS
    (fake,) = fakes
    side_requests = [
        f"{r.path}?symbol={r.params.get('symbol')}"
        for r in fake.requests
        if r.path.endswith("klines")
        and (r.params.get("symbol") == BTC_SYMBOL or r.path.startswith("/api/"))
    ]
    if setup.feed == "ws":
        (bars,) = streams
        assert bars.side_stream is not None
        assert bars.carries(BTC_SYMBOL)
        assert bars.carries("AAAUSDT", Market.SPOT)
        # most bars of BTC + the traded symbols, and of the spot pairs, came streamed
        assert bars.stream.stats.bars > 2 * N_BARS
        assert bars.side_stream.stats.bars > N_BARS
    return decider, side_requests


async def _scrape(metrics: Metrics) -> dict[str, float]:
    server = start_metrics_server(metrics, port=0)
    try:
        async with httpx.AsyncClient() as http:
            resp = await http.get(server.url)
        assert resp.status_code == 200
    finally:
        server.stop()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_btc_and_counterpart_stream_like_rest_and_metrics_emitted(tmp_path: Path) -> None:
    rest_decider, rest_side = _replay(
        tmp_path / "rest.sqlite", ReplaySetup(weight_limit=None), Metrics()
    )
    metrics = Metrics()
    setup = ReplaySetup(weight_limit=None, feed="ws", stream_faults=FAULTS, stream_wait_s=0.3)
    ws_decider, ws_side = _replay(tmp_path / "ws.sqlite", setup, metrics)
    # the same side data at every decision, each bar decided once
    assert max(Counter((s, t) for s, t, *_ in ws_decider.seen).values()) == 1
    assert sorted(ws_decider.seen) == sorted(rest_decider.seen)
    assert len(ws_decider.seen) == len(TRADED) * N_BARS
    for sym, t, btc_t, btc_c, spot_t, spot_c in ws_decider.seen:
        assert btc_t == spot_t == t  # nothing after the bar decided, nothing missing
        assert btc_c == SIDE[(Market.PERP, BTC_SYMBOL)].set_index("open_time")["close"][t]
        assert spot_c == SIDE[(Market.SPOT, sym)].set_index("open_time")["close"][t]
    # REST polls BTC and the spot counterparts every cycle; the streams replace that
    assert len(rest_side) >= 3 * N_BARS
    assert len(ws_side) < len(rest_side) // 3
    totals = asyncio.run(_scrape(metrics))
    for name in STREAM_METRICS:
        assert totals.get(name, 0.0) > 0, name


def test_planned_reconnect_counted() -> None:
    """A connection older than ``max_connection_s`` is replaced: counted as planned."""

    async def run() -> tuple[list[ClosedKline], Metrics, KlineStream]:
        clock = SimClock(T0 / 1000)
        frames = {(Market.PERP, "AAAUSDT", TF): CANDLES["AAAUSDT"]}
        got: list[ClosedKline] = []
        metrics = Metrics()
        async with (
            FakeExchange(frames, market_clock=clock.time) as fx,
            BinanceClient(Market.PERP, base_url=fx.url, clock=clock) as client,
        ):
            stream = KlineStream(
                Market.PERP, ("AAAUSDT",), TF, got.append,
                base_url=fx.stream_url(Market.PERP), backfill=client, now_s=clock.time,
                max_connection_s=0.05, backoff_s=0.01, min_interval_s=0.0, seed=2,
                metrics=metrics,
            )  # fmt: skip
            task = asyncio.create_task(stream.run())
            async with asyncio.timeout(5.0):
                await stream.connected.wait()
            stream.seen_through("AAAUSDT", T0 - STEP)
            for k in range(1, 6):
                clock.now_s = (T0 + k * STEP) / 1000
                async with asyncio.timeout(5.0):
                    while len(got) < k:
                        await asyncio.sleep(0.002)
                await asyncio.sleep(0.06)
            await stream.close()
            await task
        return got, metrics, stream

    got, metrics, stream = asyncio.run(run())
    assert [b.open_time for b in got] == [T0 + i * STEP for i in range(5)]
    reg = metrics.registry
    planned = reg.get_sample_value(
        "atra_stream_reconnects_total", {"market": "perp", "reason": "planned"}
    )
    assert planned is not None
    assert planned >= 2
    lag = reg.get_sample_value("atra_stream_lag_seconds_count", {"market": "perp"})
    assert lag == stream.stats.messages > 0  # every message's event time to receipt


def test_window_appends_in_place_and_views_stay_valid() -> None:
    """Appends write after the last bar (no copy of the window until the buffer is full, then
    one move to a buffer twice the size); a frame handed out earlier keeps its values."""
    win = Window(8)
    t = np.arange(6, dtype=np.int64) * STEP
    cols = [np.arange(6, dtype=np.float64) + k for k in range(5)]
    win.append_arrays(t, cols)
    early = win.frame(0, len(win))
    buffer_before = win.open_time.base
    win.append_arrays(t[-1:] + STEP, [c[-1:] + 1 for c in cols])
    assert win.open_time.base is buffer_before  # appended in place
    win.trim(4)
    for k in range(2, 12):  # past the capacity: moved once, then in place again
        win.append_arrays(t[-1:] + k * STEP, [c[-1:] + k for c in cols])
        win.trim(4)
    assert win.open_time.tolist() == [(5 + k) * STEP for k in range(8, 12)]
    assert win.cols["close"].tolist() == [8.0 + k for k in range(8, 12)]
    assert early["open_time"].tolist() == t.tolist()  # the earlier view is intact
    assert early["close"].tolist() == cols[3].tolist()
    with pytest.raises(ValueError, match="read-only"):
        win.cols["close"][0] = 1.0


def test_a_streamed_bar_with_a_zero_price_is_refused() -> None:
    """Streamed bars are checked as they are taken (the REST path's candle contract): a price
    of 0 is a one-line DataError naming the symbol, the column and the bar."""

    async def run() -> None:
        client = BinanceClient(Market.PERP, base_url="http://127.0.0.1:9")
        bars = StreamBars(Market.PERP, ("AAAUSDT",), TF, backfill=client)
        good = ClosedKline("AAAUSDT", T0, T0 + STEP - 1, 10.0, 11.0, 9.0, 10.5, 3.0, T0 + STEP)
        bars.stream.on_bar(good)
        taken = await bars.take("AAAUSDT", T0, T0)
        assert taken is not None
        assert taken.open_time.tolist() == [T0]
        assert taken.cols.tolist() == [[10.0], [11.0], [9.0], [10.5], [3.0]]
        bad = ClosedKline("AAAUSDT", T0 + STEP, T0 + 2 * STEP - 1, 10.0, 11.0, 0.0, 10.5, 3.0)
        bars.stream.on_bar(bad)
        with pytest.raises(DataError, match=r"candles AAAUSDT: low of the bar at \d+ = 0.0"):
            await bars.take("AAAUSDT", T0 + STEP, T0 + STEP)

    asyncio.run(run())
