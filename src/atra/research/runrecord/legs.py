"""The legs of a run: one equity curve (and trade list) per strategy variant, and when a leg or
one of its holdings was liquidated.

A leg whose equity reaches zero is **liquidated**: from the bar where that happens its equity
is 0 and stays 0 (the account is gone; nothing is clipped before that bar). A backtest's curve
that reaches zero or below becomes such a leg in :func:`leg_from_backtest`; buy-and-hold
(:mod:`atra.research.evaluation.buy_hold`) liquidates each symbol's holding on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.types import Timeframe
from atra.errors import DataError
from atra.research.runrecord.blocked import BlockedCounts, blocked_counts

__all__ = [
    "LEG_NAMES",
    "BacktestLike",
    "Liquidation",
    "RunLeg",
    "leg_from_backtest",
    "liquidation_row",
    "ordered_legs",
]

LEG_NAMES: Final[tuple[str, ...]] = ("primary", "filtered", "buy_hold")
"""The usual legs, in display order; other names are allowed and shown after these."""


@dataclass(frozen=True, slots=True)
class Liquidation:
    """A leg (``symbol`` None) or one symbol's holding of a leg whose equity reached zero."""

    leg: str
    symbol: str | None
    time_ms: int
    """Open time of the bar in which the equity reached zero; it is 0 from that bar on."""
    trades_not_counted: int = 0
    """Trades the backtest entered after the liquidation bar: not part of the leg."""


@dataclass(frozen=True, slots=True)
class RunLeg:
    """One strategy variant of a run: ``"primary"``, ``"filtered"`` or ``"buy_hold"``."""

    name: str
    equity: pd.Series
    """Equity by bar; index = bar open time in ms (int64); the first value is the initial
    equity. Positive, except from a leg liquidation on, where it is 0 to the end."""
    trades: pd.DataFrame | None
    """The backtest's trade list (``None`` for buy-and-hold); needs
    :data:`~atra.research.runrecord.hashes.TRADE_COLUMNS` (``entry_time_ms`` / ``exit_time_ms``
    accepted for ``entry_ms`` / ``exit_ms``); other columns are kept in the CSV. ``quantity``,
    when present, feeds the turnover."""
    liquidations: tuple[Liquidation, ...] = ()
    """The leg's liquidation (``symbol`` None; its equity is 0 from ``time_ms`` on) and those
    of its symbols' holdings (buy-and-hold)."""
    blocked: BlockedCounts | None = None
    """The leg's signals, those taken and the rest by what blocked them (None: the leg has no
    signals, as buy-and-hold, or they were not recorded)."""

    @property
    def liquidated_ms(self) -> int | None:
        """When the whole leg was liquidated, or None."""
        return next((liq.time_ms for liq in self.liquidations if liq.symbol is None), None)


class BacktestLike(Protocol):
    """What :func:`leg_from_backtest` reads (``atra.core.backtest.engine.BacktestResult``)."""

    @property
    def trades(self) -> pd.DataFrame: ...
    @property
    def events(self) -> pd.DataFrame: ...
    @property
    def open_time_ms(self) -> npt.NDArray[np.int64]: ...
    @property
    def equity(self) -> npt.NDArray[np.float64]: ...
    @property
    def initial_equity(self) -> float: ...
    @property
    def timeframe(self) -> Timeframe: ...


def liquidation_row(values: npt.NDArray[np.float64]) -> int | None:
    """Row of the first value at or below zero (the liquidation bar), or None."""
    hit = np.flatnonzero(~(values > 0.0))
    return int(hit[0]) if hit.size else None


def leg_from_backtest(name: str, result: BacktestLike) -> RunLeg:
    """A :class:`RunLeg` from a backtest result: its equity (marked at each bar's close,
    indexed by the bar's open time) with the initial equity prepended one bar earlier (the
    close before the first bar), its trade list and its signals counted by what blocked them
    (:func:`~atra.research.runrecord.blocked.blocked_counts` of its events).

    When the equity reaches zero or below, the leg is liquidated at that bar: its equity is 0
    from there on, and trades entered after that bar (possible only if open positions pulled
    the marked equity back above zero) are left out of the leg and counted in its
    :class:`Liquidation` (the blocked counts stay the backtest's decisions: such a trade is
    counted taken). A non-finite equity is a :class:`DataError`."""
    times = np.asarray(result.open_time_ms, dtype=np.int64)
    if times.size == 0:
        raise DataError(f"leg {name}: the backtest has no bars")
    index = np.concatenate(([times[0] - result.timeframe.ms], times))
    values = np.concatenate(([float(result.initial_equity)], np.asarray(result.equity, float)))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"leg {name}: equity at row {int(bad[0])} is {values[bad[0]]!r}")
    trades = result.trades
    blocked = blocked_counts(result.events, f"leg {name}: events")
    row = liquidation_row(values)
    if row is None:
        return RunLeg(name, pd.Series(values, index=index), trades, (), blocked)
    at = int(index[row])
    values[row:] = 0.0
    entry = "entry_time_ms" if "entry_time_ms" in trades.columns else "entry_ms"
    later = trades[entry].to_numpy(dtype=np.int64) > at
    liq = Liquidation(name, None, at, int(later.sum()))
    kept = trades.loc[~later].reset_index(drop=True)
    return RunLeg(name, pd.Series(values, index=index), kept, (liq,), blocked)


def ordered_legs(names: Iterable[str]) -> list[str]:
    """``names`` with the usual legs first, in :data:`LEG_NAMES` order, then the rest."""
    given = list(names)
    known = [n for n in LEG_NAMES if n in given]
    return known + [n for n in given if n not in LEG_NAMES]
