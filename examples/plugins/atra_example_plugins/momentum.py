"""An RSI-confirmed breakout rule and two features, registered with ``@atra.rule`` and
``@atra.feature`` when this module is imported.

Everything here is causal: the value at bar ``t`` uses bars up to ``t`` only (pandas
``rolling`` and ``ewm`` look back, never forward). ``atra features lookahead`` checks it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

import atra

F64 = npt.NDArray[np.float64]


class BreakoutParams(BaseModel):
    """The rule's parameters: ``[strategy] params = { n = 48, rsi_n = 14, rsi_min = 55 }``."""

    model_config = ConfigDict(frozen=True)

    n: int = Field(48, ge=2, le=2000, description="bars of the breakout channel")
    rsi_n: int = Field(14, ge=2, le=500, description="RSI lookback (Wilder)")
    rsi_min: float = Field(55.0, gt=50.0, lt=100.0, description="RSI of a long (short: 100 - it)")

    @model_validator(mode="after")
    def _channel_longer_than_rsi(self) -> BreakoutParams:
        if self.n < self.rsi_n:
            raise ValueError(f"n ({self.n}) must be >= rsi_n ({self.rsi_n})")
        return self


def _rsi(close: pd.Series, n: int) -> pd.Series:
    """Wilder's RSI (alpha = 1/n), NaN for the first n bars."""
    delta = close.diff()
    gain = delta.clip(lower=0.0).ewm(alpha=1.0 / n, adjust=False).mean()
    loss = (-delta.clip(upper=0.0)).ewm(alpha=1.0 / n, adjust=False).mean()
    rsi = 100.0 - 100.0 / (1.0 + gain / loss)
    rsi[loss == 0.0] = 100.0
    rsi.iloc[:n] = np.nan
    return rsi


@atra.rule("rsi_breakout", params=BreakoutParams, warmup=lambda p: p.n + 1)
def rsi_breakout(bars: pd.DataFrame, p: BreakoutParams) -> npt.NDArray[np.int8]:
    """Long on the first close above the previous n bars' high with RSI >= rsi_min; short on
    the first close below their low with RSI <= 100 - rsi_min."""
    close = bars["close"]
    upper = bars["high"].rolling(p.n).max().shift(1)
    lower = bars["low"].rolling(p.n).min().shift(1)
    rsi = _rsi(close, p.rsi_n)
    up = ((close > upper) & (rsi >= p.rsi_min)).to_numpy()
    down = ((close < lower) & (rsi <= 100.0 - p.rsi_min)).to_numpy()
    first_up = up & ~np.concatenate(([False], up[:-1]))
    first_down = down & ~np.concatenate(([False], down[:-1]))
    return (first_up.astype(np.int8) - first_down.astype(np.int8)).astype(np.int8)


@atra.feature("range_pos_48", family="price", warmup=47)
def range_pos_48(ff: atra.FeatureFrame) -> F64:
    """Where the close sits in the last 48 bars' high-low range: 0 at the low, 1 at the high."""
    hi = pd.Series(ff.high).rolling(48).max().to_numpy()
    lo = pd.Series(ff.low).rolling(48).min().to_numpy()
    width = hi - lo
    out = np.full(len(ff), np.nan)
    np.divide(ff.close - lo, width, out=out, where=width > 0)
    return out


@atra.feature("up_volume_share_24", family="volume", warmup=24)
def up_volume_share_24(ff: atra.FeatureFrame) -> F64:
    """Share of the last 24 bars' volume traded on bars that closed above the previous close."""
    up = np.concatenate(([False], ff.close[1:] > ff.close[:-1]))
    vol_up = pd.Series(np.where(up, ff.volume, 0.0)).rolling(24).sum().to_numpy()
    vol = pd.Series(ff.volume).rolling(24).sum().to_numpy()
    out = np.full(len(ff), np.nan)
    np.divide(vol_up, vol, out=out, where=vol > 0)
    return out
