"""Live cycle benchmark: one cycle for N symbols against the fake exchange on 127.0.0.1.

    .venv/bin/python bench/bench_live_cycle.py --symbols 100 --cycles 50

Each cycle is measured from the bar close (the loop wakes with no delay) until every symbol's
decision is journalled (one SQLite transaction, WAL): concurrent fetch through the shared rate
limiter, exits, decisions (EMA 20/50 primary model on the default 1,500-bar window, sizing)
in a worker thread, guards, journal write. The first cycle (window fill) is a warm-up and not
counted.

Baseline, measured in the same run on the same bars: the naive loop, one symbol after the
other (await its request, decide on the event loop, one journal transaction per symbol).
Its decisions must equal ours. Last line: one JSON object.

The same cycles again with ``live.feed = "ws"`` (skip with ``--no-ws``): the fake exchange's
market clock is moved to each bar close (``POST /sim/clock``; the latency clock starts before
that request), its kline stream pushes the closed bars, the cycle ends when every decision is
journalled; decisions must equal the REST run's. Both runs print a profile: the fetch phase (REST
requests, or waiting for the pushed bars) and the rest of the cycle (exits, decisions, journal).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import multiprocessing
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import structlog

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import JournalBatch, SignalRecord
from atra.adapters.ratelimit import RateLimiter, ScaledClock
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import HISTORY_BARS
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, SimClock, StrategyDecider
from atra.live.stream_feed import StreamBars, StreamSettings
from atra.obs import Metrics

TF = Timeframe.H1
STEP = TF.ms
T0 = 1_704_067_200_000
WINDOW = HISTORY_BARS  # the live default: the research features' warm-up
TARGET_REST_P99_MS = 300
TARGET_WS_P99_MS = 100


def synthetic(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": T0 - (WINDOW + 5) * STEP + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.004, n))),
            "low": np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.004, n))),
            "close": close,
            "volume": rng.uniform(1.0, 10.0, n),
        }
    )


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class InlineExecutor(Executor):
    """Runs each job at once in the calling thread: with ``--profile`` the decisions are
    profiled with the rest of the cycle (cProfile sees one thread only)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting cycle, as a pool would
            fut.set_exception(exc)
        return fut


def print_profile(prof: cProfile.Profile, cycles: int, title: str, top: int) -> None:
    """The ``top`` functions by cumulative time, in ms per cycle."""
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, name), (_, calls, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({name})" if line else name
        rows.append((ct, tt, calls, where))
    rows.sort(reverse=True)
    print(f"profile {title} (cProfile, ms per cycle: cumulative / own, calls per cycle):")
    for ct, tt, calls, where in rows[:top]:
        per = (ct / cycles * 1000, tt / cycles * 1000, calls / cycles)
        print(f"  {per[0]:8.1f} {per[1]:8.1f} {per[2]:9.1f}  {where}")


async def run(
    n_symbols: int,
    n_cycles: int,
    folder: Path,
    workers: int,
    latency_ms: float,
    conns: int,
    with_ws: bool = True,
    profile: int = 0,
) -> dict[str, object]:
    symbols = tuple(f"S{k:03d}USDT" for k in range(n_symbols))
    n_bars = WINDOW + 5 + n_cycles + 10
    candles = {s: synthetic(k, n_bars) for k, s in enumerate(symbols)}
    data = folder / "data"
    data.mkdir()
    for sym, frame in candles.items():
        frame.to_parquet(data / f"{sym}_perp_1h.parquet")
    spec = SignalSpec()
    decider = StrategyDecider(spec, TF)
    scaled = ScaledClock(60.0)
    # the exchange is another process, as a real one would be
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "atra.sim.exchange", "--data", str(data),
        "--weight-limit", "2400", "--time-scale", "60", "--latency-ms", str(latency_ms),
        "--sim-clock-ms", str(T0 + STEP), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    line = (await server.stdout.readline()).decode()
    url = line.strip().rsplit(" ", 1)[-1]
    executor: Executor | None = None
    if workers > 0:  # decisions in worker processes (the decider is a plain frozen dataclass)
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    elif profile:
        executor = InlineExecutor()
    try:
        limiter = RateLimiter(2400, clock=scaled, name="fake", max_connections=conns)
        client = BinanceClient(
            Market.PERP, base_url=url, limiter=limiter, clock=scaled, max_connections=conns
        )
        settings = LoopSettings(
            symbols,
            TF,
            window_bars=WINDOW,
            bar_close_delay_s=0.0,
            early_decisions=workers > 0,
            settle_heap=True,  # as `atra live` runs
        )
        async with client, Journal.open(folder / "bench.sqlite") as journal:
            loop = LiveLoop(
                settings,
                client=client,
                journal=journal,
                decider=decider,
                exit_spec=ExitSpec(),
                guards=RiskGuards(GuardLimits(max_open_positions=20)),
                clock=SimClock(T0 / 1000),
                metrics=Metrics(),
                executor=executor,
            )
            fetch_ms = _time_fetches(loop)
            warm = await loop.run_cycle(T0 + STEP)
            assert warm is not None
            lat: list[float] = []
            prof = cProfile.Profile() if profile else None
            for k in range(1, n_cycles + 1):
                t = time.perf_counter()
                if prof is not None:
                    prof.enable()
                res = await loop.run_cycle(T0 + (k + 1) * STEP)
                if prof is not None:
                    prof.disable()
                lat.append((time.perf_counter() - t) * 1000)
                assert res is not None
                assert res.status == "ok"
                assert res.decisions == n_symbols
            ours = [(s.symbol, s.bar_time_ms, s.side) for s in await journal.signals()]
            ours = [o for o in ours if o[1] > T0]  # the warm-up bar is not timed
            if prof is not None:
                print_profile(prof, n_cycles, "REST feed", profile)
        rest_fetch = fetch_ms[1:]
        ws = None
        if with_ws:
            ws = await _run_ws(
                url, symbols, n_cycles, folder, executor, workers, conns, decider, profile
            )
            if sorted(ws.pop("signals")) != sorted(ours):  # type: ignore[arg-type]
                raise SystemExit("the WebSocket feed decided differently: benchmark invalid")

        # the naive baseline on the same bars: one symbol after the other
        base_lat: list[float] = []
        base_sig: list[tuple[str, int, int]] = []
        async with client, Journal.open(folder / "naive.sqlite") as naive:
            windows = {}
            for s in symbols:  # the same warm-up: fill the windows
                windows[s] = await client.fetch_klines(
                    s, TF, start_ms=T0 - (WINDOW - 1) * STEP, end_ms=T0, limit=WINDOW,
                    closed_only=False,
                )  # fmt: skip
            for k in range(1, n_cycles + 1):
                bar = T0 + k * STEP
                t = time.perf_counter()
                for s in symbols:
                    new = await client.fetch_klines(
                        s, TF, start_ms=bar, end_ms=bar, limit=1, closed_only=False
                    )
                    win = pd.concat([windows[s], new], ignore_index=True).iloc[-WINDOW:]
                    windows[s] = win.reset_index(drop=True)
                    dec = decider(s, windows[s], 10_000.0)
                    batch = JournalBatch()
                    if dec.signal is not None:
                        sig = dec.signal
                        base_sig.append((s, bar, int(sig.side)))
                        batch.signals.append(
                            SignalRecord(
                                "naive",
                                s,
                                bar,
                                int(sig.side),
                                sig.entry,
                                sig.sl,
                                sig.tp1,
                                sig.tp2,
                                sig.horizon_bars,
                                dec.p_take,
                                dec.threshold,
                                dec.take,
                                (),
                                "primary",
                                0.0,
                            )
                        )
                    batch.symbol_state[s] = bar
                    await naive.write(batch)
                base_lat.append((time.perf_counter() - t) * 1000)
        stats = limiter.stats
    finally:
        if executor is not None:
            executor.shutdown()
        server.terminate()
        await server.wait()
    if sorted(ours) != sorted(base_sig):
        raise SystemExit("the naive loop decided differently: benchmark invalid")
    p50, p99 = pct(lat, 50), pct(lat, 99)
    b50 = pct(base_lat, 50)
    f50 = pct(rest_fetch, 50)
    print(f"symbols {n_symbols}, cycles {n_cycles}, window {WINDOW} bars, signals {len(ours)}")
    print(f"exchange round trip {latency_ms:g} ms (simulated), {conns} connections")
    mean = statistics.fmean(lat)
    print("cycle latency (bar close -> all decisions journalled):")
    print(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat):.1f} ms, mean {mean:.1f} ms")
    print(f"  profile (p50): fetch {f50:.1f} ms, exits + decisions + journal {p50 - f50:.1f} ms")
    if ws is not None:
        print("WebSocket feed (bar close pushed -> all decisions journalled):")
        print(f"  p50 {ws['p50_ms']} ms, p99 {ws['p99_ms']} ms, max {ws['max_ms']} ms")
        print(f"  profile (p50): bars arrive {ws['fetch_p50_ms']} ms, rest {ws['rest_p50_ms']} ms")
    print(f"naive sequential loop: p50 {b50:.1f} ms, p99 {pct(base_lat, 99):.1f} ms")
    met = "met" if p99 < TARGET_REST_P99_MS else "MISSED"
    print(f"speed-up vs naive (p50): {b50 / p50:.2f}x")
    print(f"target p99 < {TARGET_REST_P99_MS} ms with REST: {met}")
    if ws is not None:
        ws_met = "met" if float(ws["p99_ms"]) < TARGET_WS_P99_MS else "MISSED"  # type: ignore[arg-type]
        print(f"target p99 < {TARGET_WS_P99_MS} ms with WebSocket: {ws_met}")
    print(f"limiter: {stats.requests} requests, {stats.waits} waits, {stats.rate_limited} 429s")
    return {
        "tool": "atra",
        "bench": "live_cycle",
        "symbols": n_symbols,
        "cycles": n_cycles,
        "window_bars": WINDOW,
        "decision_workers": workers,
        "exchange_latency_ms": latency_ms,
        "connections": conns,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(lat), 2),
        "target_p99_ms": TARGET_REST_P99_MS,
        "target_ws_p99_ms": TARGET_WS_P99_MS,
        "baseline": "naive_sequential_loop",
        "baseline_p50_ms": round(b50, 2),
        "ratio": round(b50 / p50, 2),
        "fetch_p50_ms": round(f50, 2),
        "ws": ws,
    }


def _time_fetches(loop: LiveLoop) -> list[float]:
    """Time each cycle's fetch phase (:meth:`CandleFeed.fetch_all`): the profile's first part."""
    times: list[float] = []
    inner = loop.feed.fetch_all

    async def timed(*args: Any) -> Any:
        t = time.perf_counter()
        try:
            return await inner(*args)
        finally:
            times.append((time.perf_counter() - t) * 1000)

    loop.feed.fetch_all = timed  # type: ignore[method-assign]
    return times


async def _run_ws(
    url: str,
    symbols: tuple[str, ...],
    n_cycles: int,
    folder: Path,
    executor: Executor | None,
    workers: int,
    conns: int,
    decider: StrategyDecider,
    profile: int = 0,
) -> dict[str, object]:
    """The same cycles with ``live.feed = "ws"``: the fake's market clock is moved to each bar
    close (``POST /sim/clock``), the clock starts at that request; the kline stream pushes the
    closed bars; the cycle ends when every decision is journalled."""
    scaled = ScaledClock(60.0)
    limiter = RateLimiter(2400, clock=scaled, name="fake", max_connections=conns)
    client = BinanceClient(
        Market.PERP, base_url=url, limiter=limiter, clock=scaled, max_connections=conns
    )
    sim = SimClock(T0 / 1000)
    settings = LoopSettings(
        symbols,
        TF,
        window_bars=WINDOW,
        bar_close_delay_s=0.0,
        early_decisions=workers > 0,
        settle_heap=True,
    )
    stream = StreamBars(
        Market.PERP,
        symbols,
        TF,
        backfill=client,
        settings=StreamSettings(url=url.replace("http://", "ws://"), wait_s=5.0),
        now_s=sim.time,
    )
    async with (
        client,
        httpx.AsyncClient(base_url=url) as control,
        Journal.open(folder / "ws.sqlite") as journal,
        stream,
    ):
        assert await stream.wait_connected(10.0)
        loop = LiveLoop(
            settings,
            client=client,
            journal=journal,
            decider=decider,
            exit_spec=ExitSpec(),
            guards=RiskGuards(GuardLimits(max_open_positions=20)),
            clock=sim,
            metrics=Metrics(),
            executor=executor,
            stream=stream,
        )
        fetch_ms = _time_fetches(loop)
        warm = await loop.run_cycle(T0 + STEP)  # the window fill, over REST
        assert warm is not None
        lat: list[float] = []
        prof = cProfile.Profile() if profile else None
        for k in range(1, n_cycles + 1):
            close = T0 + (k + 1) * STEP
            sim.now_s = close / 1000
            t = time.perf_counter()
            if prof is not None:
                prof.enable()
            (await control.post("/sim/clock", params={"ms": close})).raise_for_status()
            res = await loop.run_cycle(close)
            if prof is not None:
                prof.disable()
            lat.append((time.perf_counter() - t) * 1000)
            assert res is not None
            assert res.status == "ok"
            assert res.decisions == len(symbols)
        signals = [(s.symbol, s.bar_time_ms, s.side) for s in await journal.signals()]
        if prof is not None:
            print_profile(prof, n_cycles, "WebSocket feed", profile)
        if stream.rest_fallbacks:
            raise SystemExit(f"{stream.rest_fallbacks} bars came over REST: stream too slow")
    fetch = fetch_ms[1:]
    f50 = pct(fetch, 50)
    return {
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "max_ms": round(max(lat), 2),
        "fetch_p50_ms": round(f50, 2),
        "rest_p50_ms": round(pct(lat, 50) - f50, 2),
        "bars_streamed": stream.taken,
        "signals": [o for o in signals if o[1] > T0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument(
        "--latency-ms", type=float, default=10.0, help="simulated exchange round trip"
    )
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--no-ws", action="store_true", help="skip the WebSocket feed run")
    parser.add_argument(
        "--workers", type=int, default=0, help="decision processes (0: a thread of this process)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="TOP",
        help="print the TOP functions of a cProfile of the timed cycles (decisions run inline; "
        "latencies then include the profiler's overhead)",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(
            run(
                args.symbols,
                args.cycles,
                Path(tmp),
                args.workers,
                args.latency_ms,
                args.connections,
                not args.no_ws,
                args.profile,
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
