"""Synthetic 1h candles shared by the live-loop tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from atra.core.decision import Decision
from atra.core.features.registry import FeatureContext
from atra.live.deciders import StrategyDecider

STEP = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def synthetic(seed: int, n: int = 400, start_ms: int = T0 - 100 * STEP) -> pd.DataFrame:
    """A seeded random walk of ``n`` hourly bars from ``start_ms`` (valid OHLCV)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.004, n)))
    return pd.DataFrame(
        {
            "open_time": start_ms + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(1.0, 10.0, n),
        }
    )


class CountingDecider:
    """The strategy's decision function, counting the bars it was asked about."""

    def __init__(self, inner: StrategyDecider) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.calls: list[tuple[str, int]] = []

    def __call__(
        self,
        symbol: str,
        candles: pd.DataFrame,
        equity: float,
        context: FeatureContext | None = None,
    ) -> Decision:
        self.calls.append((symbol, int(candles["open_time"].iloc[-1])))
        return self.inner(symbol, candles, equity, context)
