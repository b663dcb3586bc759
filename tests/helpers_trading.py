"""Shared setup of the signed order client tests over real HTTP against the fake exchange: a
day of hourly perp candles, the client (rate limited on a scaled clock) on the fake, and the
signed order client over that."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import pandas as pd

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.orders import SymbolRules
from atra.adapters.ratelimit import RateLimiter, ScaledClock
from atra.adapters.trading.trader import BinanceTrader
from atra.core.types import Market, Timeframe
from atra.sim.exchange import FakeExchange, Faults

STEP = Timeframe.H1.ms
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def sine_candles(n: int = 24) -> pd.DataFrame:
    """``n`` hourly candles from ``T0``, closes on a sine around 40,000, wicks of 50."""
    close = 40_000.0 + 100.0 * np.sin(np.arange(n) / 3.0)
    open_ = np.concatenate(([40_000.0], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": T0 + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": np.maximum(open_, close) + 50.0,
            "low": np.minimum(open_, close) - 50.0,
            "close": close,
            "volume": np.ones(n),
        }
    )


def perp_client(
    base_url: str, *, weight_limit: int, time_scale: float, timeout_s: float, max_attempts: int
) -> BinanceClient:
    """A perp client on ``base_url``, its limiter at ``weight_limit`` on a clock running
    ``time_scale`` times fast, with short backoffs."""
    limiter = RateLimiter(weight_limit, clock=ScaledClock(time_scale), name="fake perp")
    return BinanceClient(
        Market.PERP,
        base_url=base_url,
        limiter=limiter,
        timeout_s=timeout_s,
        backoff_s=0.01,
        max_backoff_s=0.05,
        max_attempts=max_attempts,
    )


@asynccontextmanager
async def perp_venue(
    candles: pd.DataFrame,
    market_clock: Callable[[], float],
    *,
    key: str,
    secret: str,
    rules: dict[str, SymbolRules],
    faults: Faults | None,
    weight_limit: int,
    time_scale: float,
    timeout_s: float,
    max_attempts: int,
    trader_key: str | None = None,
    trader_secret: str | None = None,
) -> AsyncIterator[tuple[FakeExchange, BinanceTrader]]:
    """The fake exchange on 127.0.0.1 serving ``candles`` as BTCUSDT's hourly perp candles
    (accepting ``key``/``secret``), and a signed order client on it signing with
    ``trader_key``/``trader_secret`` (``key``/``secret`` when None)."""
    fake = FakeExchange(
        {(Market.PERP, "BTCUSDT", Timeframe.H1): candles},
        api_key=key,
        api_secret=secret,
        market_clock=market_clock,
        symbol_rules=rules,
        faults=faults,
        weight_limit=weight_limit,
        time_scale=time_scale,
    )
    async with fake:
        client = perp_client(
            fake.url,
            weight_limit=weight_limit,
            time_scale=time_scale,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
        )
        async with client:
            yield (
                fake,
                BinanceTrader(
                    client,
                    api_key=key if trader_key is None else trader_key,
                    api_secret=secret if trader_secret is None else trader_secret,
                ),
            )
