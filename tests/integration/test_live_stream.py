"""The WebSocket bar feed against the fake exchange's kline streams: closed bars once each
through drops, duplicates, delays and disconnects (REST backfill after every reconnect), and
replays over ``feed="ws"`` that journal exactly what ``feed="rest"`` journals."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.exchange.stream import ClosedKline, KlineStream
from atra.adapters.journal.database import Journal
from atra.core.exits.api import ExitSpec
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, SimClock, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.live.stream_feed import StreamBars
from atra.sim.exchange import FakeExchange
from atra.sim.stream import StreamFaults
from helpers_live import STEP, T0, CountingDecider, synthetic
from helpers_logging import quiet_structlog

TF = Timeframe.H1
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
N_BARS = 60
CANDLES = {s: synthetic(k, n=N_BARS + 120) for k, s in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT"))}
FAULTS = StreamFaults(p_drop=0.05, p_duplicate=0.1, p_delay=0.05, delay_s=0.01, close_every=23)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog(logging.ERROR):
        yield


async def _until(cond: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.002)


def test_stream_dedups_reconnects_and_backfills() -> None:
    """Every bar closed while the stream runs reaches ``on_bar`` once, in order per symbol,
    although the fake duplicates messages and closes the connection every 5 messages (the
    bars it never sent come by REST backfill after the reconnect)."""

    async def run() -> tuple[list[ClosedKline], KlineStream, FakeExchange]:
        clock = SimClock(T0 / 1000)
        frames = {(Market.PERP, s, TF): f for s, f in CANDLES.items()}
        faults = StreamFaults(p_duplicate=0.3, close_every=5, seed=3)
        got: list[ClosedKline] = []
        async with FakeExchange(frames, market_clock=clock.time, stream_faults=faults) as fx:
            async with BinanceClient(Market.PERP, base_url=fx.url, clock=clock) as client:
                stream = KlineStream(
                    Market.PERP,
                    tuple(CANDLES),
                    TF,
                    got.append,
                    base_url=fx.stream_url(Market.PERP),
                    backfill=client,
                    now_s=clock.time,
                    backoff_s=0.01,
                    min_interval_s=0.0,
                    seed=1,
                )
                task = asyncio.create_task(stream.run())
                await _until(stream.connected.is_set)
                for sym in CANDLES:  # the loop's REST window ends at the start bar
                    stream.seen_through(sym, T0 - STEP)
                for k in range(1, 31):
                    clock.now_s = (T0 + k * STEP) / 1000
                    await _until(lambda k=k: len(got) >= 3 * k)
                await stream.close()
                await task
            assert fx.streams.sent["duplicate"] > 0
            assert fx.streams.sent["closed"] >= 5
        return got, stream, fx

    got, stream, _ = asyncio.run(run())
    keys = [(b.symbol, b.open_time) for b in got]
    assert len(keys) == len(set(keys)) == 90
    for sym, frame in CANDLES.items():
        mine = [b for b in got if b.symbol == sym]
        assert [b.open_time for b in mine] == [T0 + i * STEP for i in range(30)]
        row = frame[frame["open_time"] == T0 + 7 * STEP].iloc[0]
        bar = mine[7]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["volume"],
        )
    assert stream.stats.duplicates > 0
    assert stream.stats.connects >= 6
    assert stream.stats.backfilled > 0


def test_planned_reconnect() -> None:
    """A connection older than ``max_connection_s`` is replaced without losing a bar."""

    async def run() -> tuple[list[ClosedKline], KlineStream]:
        clock = SimClock(T0 / 1000)
        frames = {(Market.PERP, "AAAUSDT", TF): CANDLES["AAAUSDT"]}
        got: list[ClosedKline] = []
        async with (
            FakeExchange(frames, market_clock=clock.time) as fx,
            BinanceClient(Market.PERP, base_url=fx.url, clock=clock) as client,
        ):
            stream = KlineStream(
                Market.PERP,
                ("AAAUSDT",),
                TF,
                got.append,
                base_url=fx.stream_url(Market.PERP),
                backfill=client,
                now_s=clock.time,
                max_connection_s=0.05,
                backoff_s=0.01,
                min_interval_s=0.0,
                seed=2,
            )
            task = asyncio.create_task(stream.run())
            await _until(stream.connected.is_set)
            stream.seen_through("AAAUSDT", T0 - STEP)
            for k in range(1, 11):
                clock.now_s = (T0 + k * STEP) / 1000
                await _until(lambda k=k: len(got) >= k)
                await asyncio.sleep(0.02)
            await stream.close()
            await task
        return got, stream

    got, stream = asyncio.run(run())
    assert [b.open_time for b in got] == [T0 + i * STEP for i in range(10)]
    assert stream.stats.planned_reconnects >= 2
    assert stream.stats.failures == 0


def _replay(path: Path, setup: ReplaySetup) -> tuple[CountingDecider, list[StreamBars]]:
    decider = CountingDecider(StrategyDecider(SPEC, TF))
    streams: list[StreamBars] = []

    def start(loop: LiveLoop, fake: FakeExchange) -> None:
        if loop.feed.stream is not None:
            streams.append(loop.feed.stream)

    settings = LoopSettings(
        tuple(CANDLES),
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
        )
    )
    assert report.cycles == N_BARS
    return decider, streams


def _snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    async def read() -> dict[str, list[tuple[Any, ...]]]:
        async with Journal.open(path) as j:
            return await j.snapshot()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def rest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CountingDecider]:
    path = tmp_path_factory.mktemp("rest") / "rest.sqlite"
    decider, streams = _replay(path, ReplaySetup(weight_limit=None))
    assert streams == []
    return path, decider


def test_ws_replay_with_faults_equals_rest_replay(
    rest_run: tuple[Path, CountingDecider], tmp_path: Path
) -> None:
    rest_path, rest_decider = rest_run
    ws_path = tmp_path / "ws.sqlite"
    setup = ReplaySetup(weight_limit=None, feed="ws", stream_faults=FAULTS, stream_wait_s=0.3)
    decider, streams = _replay(ws_path, setup)
    (bars,) = streams
    # the faults happened, the stream recovered from them
    stats = bars.stream.stats
    assert stats.duplicates > 0
    assert stats.connects > 1
    assert bars.rest_fallbacks > 0  # dropped messages: fetched over REST at the wait
    assert bars.taken > N_BARS  # most bars did come over the stream
    # exactly one decision per bar and symbol, the same as over REST
    counts = Counter(decider.calls)
    assert max(counts.values()) == 1
    assert sorted(decider.calls) == sorted(rest_decider.calls)
    ws_snap, rest_snap = _snapshot(ws_path), _snapshot(rest_path)
    assert sum(len(rows) for rows in rest_snap.values()) > N_BARS
    assert ws_snap == rest_snap


def test_disconnects_mid_run_backfill_without_duplicate_decisions(
    rest_run: tuple[Path, CountingDecider], tmp_path: Path
) -> None:
    """The fake closes the stream every 7 messages (mid-bar): each reconnect backfills the
    bars the symbols missed over REST; no bar is decided twice, none is lost."""
    rest_path, _ = rest_run
    ws_path = tmp_path / "ws.sqlite"
    faults = StreamFaults(close_every=7, seed=5)
    setup = ReplaySetup(weight_limit=None, feed="ws", stream_faults=faults, stream_wait_s=2.0)
    decider, streams = _replay(ws_path, setup)
    (bars,) = streams
    stats = bars.stream.stats
    assert stats.connects >= 1 + stats.messages // 7 >= 10  # the fake closed it every 7
    assert stats.backfilled > 0
    assert 3 * N_BARS - 3 <= stats.bars <= 3 * N_BARS  # the first bars may come by REST
    assert bars.rest_fallbacks == 0  # every missed bar came back by the reconnect's backfill
    assert max(Counter(decider.calls).values()) == 1
    assert _snapshot(ws_path) == _snapshot(rest_path)


def test_fake_raw_stream_spot_and_refusals() -> None:
    """``/spot/ws/<name>`` sends raw events of spot candles once the settable market clock
    (``POST /sim/clock``) passes a close; unknown streams and a clock going back are 400."""
    import aiohttp

    from atra.adapters.exchange.stream import parse_kline_event
    from atra.sim.stream import SettableClock

    async def run() -> tuple[list[ClosedKline | None], int, int, int]:
        frames = {(Market.SPOT, "AAAUSDT", TF): CANDLES["AAAUSDT"]}
        clock = SettableClock(T0 / 1000)
        async with (
            FakeExchange(frames, settable_clock=clock) as fx,
            aiohttp.ClientSession() as http,
        ):
            base = fx.stream_url(Market.SPOT)
            async with http.ws_connect(f"{base}/ws/aaausdt@kline_1h") as ws:
                got = []
                for k in (1, 3):
                    async with http.post(f"{fx.url}/sim/clock", params={"ms": T0 + k * STEP}) as r:
                        assert r.status == 200
                    for _ in range(1 if k == 1 else 2):
                        msg = await ws.receive(timeout=5.0)
                        got.append(parse_kline_event(msg.json(), TF))
            async with http.post(f"{fx.url}/sim/clock", params={"ms": T0}) as r:
                back = r.status
            with pytest.raises(aiohttp.WSServerHandshakeError) as unknown:
                await http.ws_connect(f"{base}/ws/bbbusdt@kline_1h")
            with pytest.raises(aiohttp.WSServerHandshakeError) as perp:  # spot-only candles
                await http.ws_connect(
                    f"{fx.stream_url(Market.PERP)}/stream?streams=aaausdt@kline_1h"
                )
        return got, back, unknown.value.status, perp.value.status

    got, back, unknown, perp = asyncio.run(run())
    assert [b.open_time for b in got if b is not None] == [T0, T0 + STEP, T0 + 2 * STEP]
    assert (back, unknown, perp) == (400, 400, 400)


def test_cli_replay_with_feed_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``atra live --replay`` with ``live.feed = "ws"`` (from the environment) journals what
    the REST feed journals."""
    from atra.cli import main
    from atra.obs import reset_logging

    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.upper().startswith("ATRA__"):
            monkeypatch.delenv(name)
    (tmp_path / "flat").mkdir()
    for sym in ("AAAUSDT", "BBBUSDT"):
        CANDLES[sym].to_parquet(tmp_path / "flat" / f"{sym}_perp_1h.parquet")
    (tmp_path / "atra.toml").write_text(
        '[live]\nmarket = "perp"\ntimeframe = "1h"\nbar_close_delay_s = 0.0\n'
        "[strategy]\nparams = { fast = 3.0, slow = 8.0 }\nhorizon_bars = 6\n"
        '[obs]\nlog_format = "json"\nlog_level = "ERROR"\n'
    )
    level = logging.getLogger().level
    try:
        for feed in ("rest", "ws"):
            monkeypatch.setenv("ATRA__LIVE__FEED", feed)
            args = ["live", "--config", "atra.toml", "--replay", "--from", "2024-01-01",
                    "--to", "2024-01-03", "--data", "flat", "--symbols", "AAAUSDT,BBBUSDT",
                    "--journal", f"{feed}.sqlite", "--window-bars", "40",
                    "--no-metrics"]  # fmt: skip
            assert main(args) == 0
    finally:
        reset_logging()
        logging.getLogger().setLevel(level)
    rest, ws = _snapshot(tmp_path / "rest.sqlite"), _snapshot(tmp_path / "ws.sqlite")
    assert len(rest["equity"]) == 48
    assert len(rest["signals"]) > 3
    assert ws == rest


def test_connection_attempts_are_spaced() -> None:
    """A server that closes at once is not hammered: attempts stay ``min_interval_s`` apart
    (Binance allows 300 per 5 minutes per IP), although each connection delivered a bar."""

    async def run() -> tuple[KlineStream, int]:
        clock = SimClock((T0 + 5 * STEP) / 1000)
        frames = {(Market.PERP, "AAAUSDT", TF): CANDLES["AAAUSDT"]}
        faults = StreamFaults(close_every=1)
        async with FakeExchange(frames, market_clock=clock.time, stream_faults=faults) as fx:
            stream = KlineStream(
                Market.PERP,
                ("AAAUSDT",),
                TF,
                lambda bar: None,
                base_url=fx.stream_url(Market.PERP),
                now_s=clock.time,
                backoff_s=0.001,
                min_interval_s=0.1,
                seed=4,
            )
            task = asyncio.create_task(stream.run())
            for _ in range(100):  # a bar closes every 10 ms: each connection sends one
                clock.now_s += STEP / 1000
                await asyncio.sleep(0.01)
            await stream.close()
            await task
            return stream, fx.streams.sent["connection"]

    stream, connections = asyncio.run(run())
    assert 5 <= stream.stats.connects == connections <= 12  # ~1 s at one per 0.1 s
