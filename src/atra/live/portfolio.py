"""The live loop's portfolio: the broker's positions, realised cash and funding, marked to the
candle windows the way the backtest marks them.

:class:`Portfolio` books what the broker reports into a journal batch (orders, fills,
positions; fills go to the realised :class:`~atra.live.ledger.Ledger`, a closed position's P&L
gets its funding), charges the funding of open positions bar by bar
(:class:`~atra.live.ledger.FundingBook`), marks the equity at a bar's close (:meth:`Portfolio.mark`)
and shows the risk guards the portfolio an entry would join (:meth:`Portfolio.view`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from atra.adapters.journal.records import EquityRecord, JournalBatch, PositionMark
from atra.live.feed import CandleFeed
from atra.live.guards import PortfolioView
from atra.live.ledger import FundingBook, Ledger
from atra.live.paper import OPEN, Broker, BrokerUpdate
from atra.live.settings import LoopSettings
from atra.obs import get_logger

__all__ = ["Leaving", "Portfolio", "leaving_after"]

log = get_logger("atra.live.loop")  # the loop's events keep one logger name

Leaving = tuple[str, str, int, float, float]
"""``(position_id, symbol, side, quantity, entry)`` of a position closed at the next open."""


class Portfolio:
    """The positions of ``broker``, the realised cash of ``ledger`` and the funding of
    ``funding``, marked to the closes of ``feed``'s windows."""

    def __init__(
        self,
        settings: LoopSettings,
        *,
        broker: Broker,
        ledger: Ledger,
        funding: FundingBook,
        feed: CandleFeed,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.ledger = ledger
        self.funding = funding
        self.feed = feed
        self.step_ms = settings.timeframe.ms

    def restore(self, fills: Sequence[tuple[int, float, str, str]]) -> None:
        """Reload the realised cash and the funding paid from the journal's realised fills
        (``(time_ms, pnl, client order id, leg)``)."""
        for time_ms, pnl, cid, leg in fills:
            self.ledger.add(time_ms, pnl, cid, leg)
        self.funding.restore(fills)

    def realized_before(self, time_ms: int) -> float:
        """Realised cash (fees, exit legs, funding) of every fill before ``time_ms``."""
        return self.ledger.before(time_ms)

    def book(self, batch: JournalBatch, upd: BrokerUpdate) -> None:
        """Journal a broker update; fills go to the realised ledger, a closed position's
        P&L gets its funding."""
        batch.orders.extend(upd.orders)
        batch.fills.extend(upd.fills)
        for pos in upd.positions:
            paid = self.funding.paid(pos.position_id)
            if pos.status == "closed" and paid and pos.pnl is not None:
                pos = replace(pos, pnl=pos.pnl - paid)
            batch.positions.append(pos)
        for fill in upd.fills:
            self.ledger.add(fill.time_ms, fill.pnl, fill.client_order_id, fill.leg)
            if fill.leg != "entry":
                log.info("order_filled", symbol=fill.symbol, price=fill.price,
                         qty=fill.quantity, reasons=[fill.reason])  # fmt: skip

    def charge_funding(self, batch: JournalBatch, sym: str, t_ms: int) -> None:
        """Journal and realise the funding of ``sym``'s open positions due at bar ``t_ms``."""
        win = self.feed.windows[sym]
        charged = self.funding.charges(
            sym, t_ms, self.broker.positions(sym), self.broker.remaining,
            win.open_time, win.cols["open"],
        )  # fmt: skip
        for fill in charged:
            batch.fills.append(fill)
            self.ledger.add(fill.time_ms, fill.pnl, fill.client_order_id, fill.leg)
            log.info("funding_charged", symbol=sym, open_time=fill.time_ms,
                     amount=-fill.pnl, client_order_id=fill.client_order_id)  # fmt: skip

    def view(self, t_ms: int, equity: float, day_equity: float) -> PortfolioView:
        """What the guards see of an entry decided at bar ``t_ms``'s close."""
        # a position whose time barrier is the next bar's open leaves before this entry
        # fills (the backtest frees its slot first too)
        next_open = t_ms + self.step_ms
        positions = [
            p
            for p in self.broker.positions()
            if p.entry_time_ms is None
            or p.entry_time_ms + p.horizon_bars * self.step_ms != next_open
        ]
        by_symbol: dict[str, int] = {}
        gross = 0.0
        for pos in positions:  # the backtest's gross: open quantity at the last close
            by_symbol[pos.symbol] = by_symbol.get(pos.symbol, 0) + 1
            gross += self.broker.remaining(pos) * self.feed.last_close(pos.symbol, t_ms)
        return PortfolioView(equity, day_equity, len(positions), by_symbol, gross)

    def mark(self, t_ms: int, leaving: Sequence[Leaving] = ()) -> EquityRecord:
        """Equity at bar ``t_ms``'s close: realised cash (fees, legs, funding) plus open
        positions at their symbol's last close (the backtest's mark), with each position's mark
        (:class:`PositionMark`; a symbol without a finite close is not marked). ``leaving``:
        positions still open at this close but already closed at the next open (a time exit
        sent at this close)."""
        realized = self.realized_before(t_ms + 1)
        open_pnl = 0.0
        marks: list[PositionMark] = []
        for sym in sorted({p.symbol for p in self.broker.positions()}):
            close = self.feed.last_close(sym, t_ms)
            if not math.isfinite(close):
                continue
            subtotal = 0.0  # summed per symbol, then added: the order the backtest sums in
            for pos in self.broker.positions(sym):
                if pos.status != OPEN or pos.entry_price is None:
                    continue
                qty = self.broker.remaining(pos)
                pnl = pos.side * qty * (close - pos.entry_price)
                subtotal += pnl
                marks.append(
                    PositionMark(t_ms, pos.position_id, sym, pos.side, qty, pos.entry_price,
                                 close, pnl)
                )  # fmt: skip
            open_pnl += subtotal
        for pid, sym, side, qty, entry in leaving:
            close = self.feed.last_close(sym, t_ms)
            pnl = side * qty * (close - entry)
            open_pnl += pnl
            marks.append(PositionMark(t_ms, pid, sym, side, qty, entry, close, pnl))
        return EquityRecord(
            bar_time_ms=t_ms,
            equity=self.settings.initial_equity + realized + open_pnl,
            realized_pnl=realized,
            open_positions=self.broker.open_count(),
            positions=tuple(marks),
        )


def leaving_after(upd: BrokerUpdate, t_ms: int) -> list[Leaving]:
    """Positions ``upd`` closed with exit fills after bar ``t_ms`` (a time exit at the next
    open): ``(position id, symbol, side, quantity those fills closed, entry)``."""
    out = []
    for pos in upd.positions:
        if pos.status != "closed" or pos.entry_price is None:
            continue
        qty = sum(
            f.quantity
            for f in upd.fills
            if f.client_order_id == pos.position_id and f.leg.startswith("leg") and f.time_ms > t_ms
        )
        if qty > 0.0:
            out.append((pos.position_id, pos.symbol, pos.side, qty, pos.entry_price))
    return out
