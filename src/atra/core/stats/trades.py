"""Trade records and the statistics of a trade list.

:class:`TradeLike` is what the statistics need of a closed trade (:class:`TradeRecord` a plain
one, :func:`trade_records_of` builds them from columns); :func:`trade_stats` measures win rate,
average win / loss, profit factor, expectancy and costs, :func:`per_symbol_stats` the same per
symbol.

Averages over no trades are NaN. The profit factor of trades that only win is ``inf`` (gross
loss 0); with no trades it is NaN.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from atra.core.costs import CostBearing
from atra.core.stats.returns import _json_value
from atra.errors import DataError


class TradeLike(CostBearing, Protocol):
    """A closed trade as the statistics need it: its costs paid (``fees``, ``slippage``,
    ``funding``, ``borrow``: :class:`~atra.core.costs.CostBearing`) and ``pnl``, net of them."""

    @property
    def symbol(self) -> str: ...
    @property
    def quantity(self) -> float: ...
    @property
    def entry_price(self) -> float: ...
    @property
    def exit_price(self) -> float: ...
    @property
    def entry_time_ms(self) -> int: ...
    @property
    def exit_time_ms(self) -> int: ...
    @property
    def pnl(self) -> float: ...


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """A plain closed-trade record satisfying :class:`TradeLike`."""

    symbol: str
    quantity: float
    entry_price: float
    exit_price: float
    entry_time_ms: int
    exit_time_ms: int
    pnl: float
    fees: float = 0.0
    slippage: float = 0.0
    funding: float = 0.0
    borrow: float = 0.0


def trade_records_of(columns: Sequence[Sequence[Any]]) -> list[TradeRecord]:
    """:class:`TradeRecord` rows from ten or eleven parallel columns in the record's field
    order (symbol, quantity, entry / exit price, entry / exit time, pnl, fees, slippage,
    funding, optionally borrow: 0 when absent)."""
    if len(columns) not in (10, 11):
        raise DataError(f"trade records: {len(columns)} columns, expected 10 or 11")
    borrow = columns[10] if len(columns) == 11 else [0.0] * len(columns[0])
    return [
        TradeRecord(
            str(s),
            float(q),
            float(pi),
            float(po),
            int(ti),
            int(to),
            float(p),
            float(f),
            float(sl),
            float(fu),
            float(b),
        )
        for s, q, pi, po, ti, to, p, f, sl, fu, b in zip(*columns[:10], borrow, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class TradeStats:
    """Statistics of a trade list. P&L amounts in the quote currency."""

    n_trades: int
    wins: int
    losses: int
    """Trades with pnl < 0; a trade with pnl == 0 is neither a win nor a loss."""
    win_rate: float
    avg_win: float
    avg_loss: float
    """Mean size of the losing trades, a positive number."""
    payoff_ratio: float
    """avg_win / avg_loss (the Kelly ``R``)."""
    profit_factor: float
    """Gross profit / gross loss; inf when there is no loss, NaN with no trades."""
    expectancy: float
    """Mean pnl per trade."""
    total_pnl: float
    fees_paid: float
    slippage_paid: float
    funding_paid: float
    borrow_paid: float
    """Margin interest of spot shorts."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_value(asdict(self))
        return out


@dataclass(frozen=True, slots=True)
class SymbolStats:
    """Per-symbol breakdown of the trades."""

    symbol: str
    n_trades: int
    win_rate: float
    total_pnl: float
    expectancy: float
    profit_factor: float
    fees_paid: float
    slippage_paid: float
    funding_paid: float
    borrow_paid: float


def _profit_factor(pnls: Sequence[float]) -> float:
    gross_win = math.fsum(p for p in pnls if p > 0.0)
    gross_loss = -math.fsum(p for p in pnls if p < 0.0)
    if gross_loss > 0.0:
        return gross_win / gross_loss
    return math.inf if gross_win > 0.0 else math.nan


def trade_stats(trades: Sequence[TradeLike]) -> TradeStats:
    """Win rate, average win/loss, profit factor, expectancy and costs of a trade list."""
    pnls = [float(t.pnl) for t in trades]
    n = len(pnls)
    win_p = [p for p in pnls if p > 0.0]
    loss_p = [-p for p in pnls if p < 0.0]
    avg_win = math.fsum(win_p) / len(win_p) if win_p else math.nan
    avg_loss = math.fsum(loss_p) / len(loss_p) if loss_p else math.nan
    return TradeStats(
        n_trades=n,
        wins=len(win_p),
        losses=len(loss_p),
        win_rate=len(win_p) / n if n else math.nan,
        avg_win=avg_win,
        avg_loss=avg_loss,
        payoff_ratio=avg_win / avg_loss if win_p and loss_p else math.nan,
        profit_factor=_profit_factor(pnls),
        expectancy=math.fsum(pnls) / n if n else math.nan,
        total_pnl=math.fsum(pnls),
        fees_paid=math.fsum(t.fees for t in trades),
        slippage_paid=math.fsum(t.slippage for t in trades),
        funding_paid=math.fsum(t.funding for t in trades),
        borrow_paid=math.fsum(t.borrow for t in trades),
    )


def per_symbol_stats(trades: Sequence[TradeLike]) -> tuple[SymbolStats, ...]:
    """One :class:`SymbolStats` per symbol, sorted by symbol."""
    groups: dict[str, list[TradeLike]] = defaultdict(list)
    for t in trades:
        groups[t.symbol].append(t)
    out: list[SymbolStats] = []
    for sym in sorted(groups):
        ts = trade_stats(groups[sym])
        out.append(
            SymbolStats(
                symbol=sym,
                n_trades=ts.n_trades,
                win_rate=ts.win_rate,
                total_pnl=ts.total_pnl,
                expectancy=ts.expectancy,
                profit_factor=ts.profit_factor,
                fees_paid=ts.fees_paid,
                slippage_paid=ts.slippage_paid,
                funding_paid=ts.funding_paid,
                borrow_paid=ts.borrow_paid,
            )
        )
    return tuple(out)
