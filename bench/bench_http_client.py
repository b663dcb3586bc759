"""HTTP client cost per kline request: ATRA's exchange client against plain httpx and plain
aiohttp, on the same fake exchange on 127.0.0.1 (another process, no simulated latency).

    .venv/bin/python bench/bench_http_client.py --symbols 100 --rounds 20

Each round fetches one closed bar for every symbol at once over ``--connections`` connections
(what the live loop's REST feed does at a bar close). Printed per request: this process's CPU
time and the fake exchange's, and the wall time per round. ``atra`` is
:class:`~atra.adapters.exchange.client.BinanceClient` (rate limiter, retries, metrics, the
kline parser to arrays); ``httpx`` and ``aiohttp`` are a bare GET and ``json.loads`` behind a
semaphore of the same size: the baseline is httpx, the client ATRA used before. Last line: one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pandas as pd
import structlog

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.ratelimit import RateLimiter, ScaledClock
from atra.core.types import Market, Timeframe

TF = Timeframe.H1
T0 = 1_704_067_200_000
PATH = "/fapi/v1/klines"


def candles(seed: int, n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    return pd.DataFrame(
        {
            "open_time": T0 + np.arange(n, dtype=np.int64) * TF.ms,
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.uniform(1.0, 10.0, n),
        }
    )


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


async def measure(
    name: str, one: Callable[[str], Awaitable[object]], symbols: list[str], rounds: int, pid: int
) -> dict[str, float]:
    await asyncio.gather(*(one(s) for s in symbols))  # connections open, code warm
    s0, c0, w0 = cpu_s(pid), time.process_time(), time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one(s) for s in symbols))
    s1, c1, w1 = cpu_s(pid), time.process_time(), time.perf_counter()
    n = len(symbols) * rounds
    row = {
        "client_cpu_us": round(1e6 * (c1 - c0) / n, 1),
        "server_cpu_us": round(1e6 * (s1 - s0) / n, 1),
        "round_ms": round(1000 * (w1 - w0) / rounds, 2),
    }
    print(
        f"{name:8s} client CPU {row['client_cpu_us']:7.1f} us/request, exchange CPU "
        f"{row['server_cpu_us']:6.1f} us/request, {row['round_ms']:7.2f} ms per round"
    )
    return row


async def run(n_symbols: int, rounds: int, conns: int, folder: Path) -> dict[str, object]:
    symbols = [f"S{k:03d}USDT" for k in range(n_symbols)]
    data = folder / "data"
    data.mkdir()
    for k, sym in enumerate(symbols):
        candles(k).to_parquet(data / f"{sym}_perp_1h.parquet")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "atra.sim.exchange", "--data", str(data), "--weight-limit",
        "1000000", "--latency-ms", "0", "--sim-clock-ms", str(T0 + 10 * TF.ms),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    url = (await server.stdout.readline()).decode().strip().rsplit(" ", 1)[-1]
    params = {"interval": TF.value, "startTime": T0, "endTime": T0, "limit": 1}
    rows: dict[str, dict[str, float]] = {}
    try:
        sem = asyncio.Semaphore(conns)
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        async with httpx.AsyncClient(base_url=url, limits=limits) as hx:

            async def with_httpx(sym: str) -> object:
                async with sem:
                    resp = await hx.get(PATH, params={"symbol": sym, **params})
                    return json.loads(resp.content)

            rows["httpx"] = await measure("httpx", with_httpx, symbols, rounds, server.pid)
        connector = aiohttp.TCPConnector(limit=conns)
        async with aiohttp.ClientSession(url, connector=connector) as ah:

            async def with_aiohttp(sym: str) -> object:
                query = {k: str(v) for k, v in {"symbol": sym, **params}.items()}
                async with sem, ah.get(PATH, params=query) as resp:
                    return json.loads(await resp.read())

            rows["aiohttp"] = await measure("aiohttp", with_aiohttp, symbols, rounds, server.pid)
        clock = ScaledClock(1.0)
        limiter = RateLimiter(1_000_000, clock=clock, name="fake", max_connections=conns)
        client = BinanceClient(
            Market.PERP, base_url=url, limiter=limiter, clock=clock, max_connections=conns
        )
        async with client:

            async def with_atra(sym: str) -> object:
                got = await client.fetch_kline_rows(
                    sym, TF, start_ms=T0, end_ms=T0, limit=1, closed_only=False
                )
                assert len(got) == 1
                return got

            rows["atra"] = await measure("atra", with_atra, symbols, rounds, server.pid)
    finally:
        server.terminate()
        await server.wait()
    ratio = rows["httpx"]["client_cpu_us"] / rows["atra"]["client_cpu_us"]
    print(f"client CPU per request, httpx / atra: {ratio:.2f}x")
    return {
        "tool": "atra",
        "bench": "http_client",
        "symbols": n_symbols,
        "rounds": rounds,
        "connections": conns,
        "baseline": "httpx",
        "ratio": round(ratio, 2),
        **{f"{name}_{key}": value for name, row in rows.items() for key, value in row.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=10)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.symbols, args.rounds, args.connections, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
