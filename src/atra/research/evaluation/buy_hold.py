"""The buy-and-hold leg of an evaluation: equal weight of the same symbols over the same span.

Each symbol gets ``initial_equity / n`` at the span start, bought at the open of its first bar
in the span paying the taker fee and the slippage on entry, then held (no exit fee, marked at
each close); a perpetual position pays funding as the backtest does. A symbol listed later
holds its share in cash until its first bar.

A holding is **liquidated** at the first bar where its value at the bar's low, less the funding
paid so far, is zero or below (a long perpetual held through a rally and a crash can pay more
funding than it is worth): from that bar on it is worth 0 and pays no more funding. When every
holding is liquidated the leg's equity is 0 to the end. Nothing is clipped before that bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.costs import CostModel
from atra.errors import DataError
from atra.research.runrecord.legs import Liquidation, RunLeg

__all__ = ["BUY_HOLD_RULE", "BuyHold", "buy_and_hold"]

I64 = npt.NDArray[np.int64]

BUY_HOLD_RULE: Final[str] = (
    "equal weight of the same symbols over the same OOS span; each bought at the open of its "
    "first bar in the span paying the taker fee and slippage on entry, held to the end (no exit "
    "fee), marked at each close; perpetuals pay funding; a holding whose value at a bar's low, "
    "less the funding paid, reaches zero is liquidated and worth 0 from that bar on"
)


@dataclass(frozen=True, slots=True, eq=False)
class BuyHold:
    """Equal-weight buy-and-hold equity on a grid, what it paid and what was liquidated."""

    equity: pd.Series
    """Index = the grid (bar open times, ms), values marked at each bar's close."""
    fees: float
    slippage: float
    funding: float
    """Funding paid (received when negative) up to the end, or to each holding's liquidation."""
    liquidations: dict[str, int] = field(default_factory=dict)
    """Symbol -> open time of the bar in which its holding was liquidated."""
    liquidated_ms: int | None = None
    """Open time of the bar from which the whole leg is 0 (every holding liquidated)."""

    def leg(self, name: str, start_ms: int, initial_equity: float) -> RunLeg:
        """The run leg: ``initial_equity`` at ``start_ms`` (one bar before the grid), then the
        equity on the grid, with the liquidations of the leg and of its holdings."""
        values = np.concatenate(([initial_equity], self.equity.to_numpy(dtype=np.float64)))
        index = np.concatenate(([start_ms], self.equity.index.to_numpy(dtype=np.int64)))
        liqs = [Liquidation(name, sym, t) for sym, t in sorted(self.liquidations.items())]
        if self.liquidated_ms is not None:
            liqs.append(Liquidation(name, None, self.liquidated_ms))
        return RunLeg(name, pd.Series(values, index=index), None, tuple(liqs))


def buy_and_hold(
    candles: Mapping[str, pd.DataFrame],
    grid_ms: I64,
    initial_equity: float,
    costs: CostModel,
    *,
    funding: Mapping[str, pd.DataFrame] | None = None,
) -> BuyHold:
    """Equal-weight buy-and-hold of ``candles`` on ``grid_ms`` (see :data:`BUY_HOLD_RULE`).

    Each symbol gets ``initial_equity / n``: cash until its first bar, then ``quantity``
    bought at that bar's open moved up by the slippage, the taker fee taken from the share;
    marked at the latest close at or before each grid time. Symbols in ``funding`` pay
    ``quantity x open x rate`` at each funding time after the entry bar's open, ``open`` of the
    latest bar at or before it (positive rates: longs pay). A holding is liquidated as the
    module docstring says."""
    grid = np.asarray(grid_ms, dtype=np.int64)
    if grid.size == 0 or not candles:
        raise DataError("buy-and-hold: no bars")
    share = initial_equity / len(candles)
    slip = costs.slippage_bps / 1e4
    total = np.zeros(grid.size)
    fees = slippage = paid = 0.0
    liquidations: dict[str, int] = {}
    for sym in sorted(candles):
        frame = candles[sym]
        times = frame["open_time"].to_numpy(dtype=np.int64)
        close = frame["close"].to_numpy(dtype=np.float64)
        low = frame["low"].to_numpy(dtype=np.float64)
        opens = frame["open"].to_numpy(dtype=np.float64)
        fill = float(opens[0]) * (1.0 + slip)
        notional = share / (1.0 + costs.taker_fee_rate)
        qty = notional / fill
        fees += notional * costs.taker_fee_rate
        slippage += qty * (fill - float(opens[0]))
        at = np.searchsorted(times, grid, side="right") - 1
        held = at >= 0
        value = np.where(held, qty * close[np.maximum(at, 0)], share)
        worst = np.where(held, qty * low[np.maximum(at, 0)], share)
        owed = np.zeros(grid.size)  # funding paid up to each grid time
        fund = (funding or {}).get(sym)
        if fund is not None and len(fund):
            ft = fund["funding_time"].to_numpy(dtype=np.int64)
            rate = fund["funding_rate"].to_numpy(dtype=np.float64)
            keep = (ft > times[0]) & (ft <= grid[-1])
            ft, rate = ft[keep], rate[keep]
            mark = opens[np.searchsorted(times, ft, side="right") - 1]
            cum = np.concatenate(([0.0], np.cumsum(qty * mark * rate)))
            owed = cum[np.searchsorted(ft, grid, side="right")]
        value, worst = value - owed, worst - owed
        bad = np.flatnonzero(~(np.isfinite(value) & np.isfinite(worst)))
        if bad.size:
            raise DataError(
                f"buy-and-hold: {sym} value at grid row {int(bad[0])} is {value[bad[0]]!r}, "
                "expected a finite number (check its candles and funding)"
            )
        gone = np.flatnonzero(held & ~(worst > 0.0))
        if gone.size:
            k = int(gone[0])
            value[k:] = 0.0
            liquidations[sym] = int(grid[k])
            paid += float(owed[k])
        else:
            paid += float(owed[-1])
        total += value
    zero = np.flatnonzero(~(total > 0.0))
    liquidated_ms = int(grid[zero[0]]) if zero.size else None
    return BuyHold(pd.Series(total, index=grid), fees, slippage, paid, liquidations, liquidated_ms)
