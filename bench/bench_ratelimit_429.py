"""429 hold-back check: a client configured with the wrong weight limit, 30 connections.

The fake exchange enforces ``--true-limit`` weight per (scaled) minute (default 40: the first 30
requests pass, and the limit is met while requests stream through the 30 connections; the
requests on the wire by then are answered 429, the others wait out the pause); the client's
limiter is configured with ``--configured-limit`` (Binance's USDT-M default 2,400, far too many)
and 30 connections, and fetches ``--symbols`` x ``--pages`` one-weight kline pages at once. A
minute lasts ``60 / --time-scale`` real seconds (one second by default). The client runs into
429s; the exchange bans the IP (418) when more than 20 requests come on connections that had
already been answered 429 (the client did not back off). A run passes when it met the limit (a
429), no request got 418, no request was sent on a connection after its 429, and every page
arrived with the data served.

Prints one line per run (429s, 418s, requests, requests sent after their connection's 429,
requests held back at the wire, the limit the client ends with, wall time), then one JSON
object; exits 1 when any run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.ratelimit import RateLimiter, ScaledClock
from atra.core.types import Market, Timeframe
from atra.sim.exchange import FakeExchange

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
TF = Timeframe.H1
PAGE = 50  # bars per page: a USDT-M klines request of limit < 100 weighs 1


@dataclass(frozen=True, slots=True)
class RunFigures:
    """What one run did."""

    requests: int
    ok: int
    rate_limited: int
    banned: int
    sent_after_429: int
    held_back: int
    final_limit: int
    wall_s: float
    failures: tuple[str, ...]
    data_equal: bool

    @property
    def passed(self) -> bool:
        met = self.rate_limited > 0  # no 429: the wrong limit was never met, nothing shown
        clean = self.banned == 0 and self.sent_after_429 == 0
        return met and clean and not self.failures and self.data_equal


def candles(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame(
        {
            "open_time": T0 + TF.ms * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.uniform(1.0, 100.0, n),
        }
    )


async def run_once(
    *,
    true_limit: int = 40,
    configured_limit: int = 2400,
    connections: int = 30,
    symbols: int = 10,
    pages: int = 10,
    time_scale: float = 60.0,
) -> RunFigures:
    """One run against a fresh fake exchange on 127.0.0.1."""
    names = [f"S{i:02d}USDT" for i in range(symbols)]
    data = {name: candles(pages * PAGE, k) for k, name in enumerate(names)}
    served = {(Market.PERP, name, TF): frame for name, frame in data.items()}
    clock = ScaledClock(time_scale)
    async with FakeExchange(served, weight_limit=true_limit, time_scale=time_scale) as fx:
        limiter = RateLimiter(configured_limit, clock=clock, max_connections=connections)
        client = BinanceClient(
            Market.PERP,
            base_url=fx.url,
            limiter=limiter,
            clock=clock,
            page_limit=PAGE,
            max_attempts=10,
            backoff_s=0.5,
        )
        end = T0 + pages * PAGE * TF.ms
        started = time.perf_counter()
        async with client:
            got = await asyncio.gather(
                *(client.fetch_klines_range(n, TF, T0, end) for n in names),
                return_exceptions=True,
            )
        wall_s = time.perf_counter() - started
        statuses = Counter(r.status for r in fx.requests)
        failures = tuple(
            f"{n}: {type(g).__name__}: {g}"
            for n, g in zip(names, got, strict=True)
            if isinstance(g, BaseException)
        )
        equal = not failures and all(
            g.equals(data[n])
            for n, g in zip(names, got, strict=True)
            if isinstance(g, pd.DataFrame)
        )
        return RunFigures(
            requests=len(fx.requests),
            ok=statuses[200],
            rate_limited=statuses[429],
            banned=statuses[418],
            sent_after_429=fx.limits.sent_after_429,
            held_back=limiter.held,
            final_limit=limiter.limit()[0],
            wall_s=round(wall_s, 3),
            failures=failures,
            data_equal=equal,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--true-limit", type=int, default=40)
    parser.add_argument("--configured-limit", type=int, default=2400)
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--time-scale", type=float, default=60.0)
    args = parser.parse_args(argv)
    runs = []
    for k in range(args.runs):
        fig = asyncio.run(
            run_once(
                true_limit=args.true_limit,
                configured_limit=args.configured_limit,
                connections=args.connections,
                symbols=args.symbols,
                pages=args.pages,
                time_scale=args.time_scale,
            )
        )
        runs.append(fig)
        print(
            f"run {k + 1:2d}: {fig.requests} requests, {fig.ok} x 200, {fig.rate_limited} x 429, "
            f"{fig.banned} x 418, {fig.sent_after_429} sent after their 429, "
            f"{fig.held_back} held back, limit {fig.final_limit}, {fig.wall_s:.2f} s, "
            f"{'ok' if fig.passed else 'FAILED ' + '; '.join(fig.failures[:2])}",
            flush=True,
        )
    summary = {
        "bench": "ratelimit_429",
        "runs": len(runs),
        "passed": sum(f.passed for f in runs),
        "total_418": sum(f.banned for f in runs),
        "total_429": sum(f.rate_limited for f in runs),
        "total_requests": sum(f.requests for f in runs),
        "per_run": [asdict(f) | {"failures": list(f.failures)} for f in runs],
    }
    print(json.dumps(summary))
    return 0 if summary["passed"] == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
