"""Shared setup of the order tests over real HTTP against the fake exchange: a settable market
clock, a random hourly price path, a fault seed that loses one chosen request, the fake exchange
with a client on it, and the ``clock``/``stack`` fixtures (assign them in a test module,
``clock = helpers_venue.clock``, to use them there)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import numpy as np
import pandas as pd
import pytest

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.orders import SymbolRules
from atra.adapters.ratelimit import RateLimiter
from atra.core.types import Market, Timeframe
from atra.sim.exchange import FakeExchange, Faults

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
STEP = Timeframe.H1.ms


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def at_ms(self, ms: int) -> None:
        self.t = ms / 1000.0


def random_path(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame(
        {
            "open_time": T0 + STEP * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) * (1.0 + rng.exponential(0.004, n)),
            "low": np.minimum(open_, close) * (1.0 - rng.exponential(0.004, n)),
            "close": close,
            "volume": np.ones(n),
        }
    )


def seed_losing_request(index: int, p: float, n: int = 12) -> int:
    """A fault seed whose ``n`` first draws lose request ``index`` only."""
    for seed in range(100_000):
        rng = random.Random(seed)
        if [rng.random() < p for _ in range(n)] == [i == index for i in range(n)]:
            return seed
    raise AssertionError("no seed")  # pragma: no cover


async def open_fake_and_client(
    stack: AsyncExitStack,
    market: Market,
    df: pd.DataFrame,
    clock: Clock,
    *,
    key: str,
    secret: str,
    rules: SymbolRules,
    faults: Faults | None,
    slippage_bps: float,
) -> tuple[FakeExchange, BinanceClient]:
    """The fake exchange on 127.0.0.1 serving ``df`` as ``rules.symbol``'s hourly candles, and
    an unlimited client on it (short timeout, eight attempts), both closed with ``stack``."""
    fx = FakeExchange(
        {(market, rules.symbol, Timeframe.H1): df},
        weight_limit=None,
        api_key=key,
        api_secret=secret,
        market_clock=clock,
        slippage_bps=slippage_bps,
        symbol_rules={rules.symbol: rules},
        faults=faults,
    )
    await stack.enter_async_context(fx)
    limiter = RateLimiter(1_000_000, name="fake", enabled=False)
    client = BinanceClient(
        market, base_url=fx.url, limiter=limiter, timeout_s=0.5, backoff_s=0.01, max_attempts=8
    )
    await stack.enter_async_context(client)
    return fx, client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as opened:
        yield opened
