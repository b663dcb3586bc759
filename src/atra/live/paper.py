"""The paper broker: simulated fills with exactly the exit kernel's semantics, bar by bar.

A taken decision at bar ``t`` becomes a *pending* position with an entry order whose client
order id is derived from ``(run, symbol, bar time)``. From then on, at every closed bar of its
symbol the broker runs :func:`atra.core.exits.kernel.simulate_exit_nb` over the bars seen so
far (from the entry bar ``t + 1`` to the current bar, ``end_bar`` = the bars seen):

* the entry fills at the entry bar's open (moved adversely by the slippage), as the kernel says;
* a TP1 partial (``leg1`` of an INCOMPLETE result) is booked the bar it happens;
* the trade is closed once the kernel returns DONE: its exit bar is then at most the current
  bar, and fill prices, reasons, fees and the net return are the kernel's own.

Since the kernel is causal (a leg at bar ``j`` depends on bars up to ``j`` only), the trades
closed this way are exactly the ones the backtest's kernel computes on the full history. The
broker keeps no state but the positions, which the journal stores: a restart reloads them and
carries on (fills are unique by ``(client order id, leg)``, so a bar seen twice books nothing
twice).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from atra.adapters.journal.records import FillRecord, OrderRecord, PositionRecord
from atra.core.exits.api import ExitSpec
from atra.core.exits.kernel import REASON_NAMES, STATUS_DONE, simulate_exit_nb
from atra.errors import DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PENDING = "pending"
OPEN = "open"
CLOSED = "closed"
_TP_REASONS = frozenset({"TP1", "TP2"})


def client_order_id(run_id: str, symbol: str, bar_time_ms: int, kind: str = "entry") -> str:
    """A deterministic client order id (34 characters of ``[a-z0-9]``, Binance allows 36):
    the same run, symbol, bar and kind always give the same id, so a retried order is a
    duplicate the exchange refuses instead of a second position."""
    digest = hashlib.sha256(f"{run_id}|{symbol}|{bar_time_ms}|{kind}".encode()).hexdigest()
    return "at" + digest[:32]


@dataclass(frozen=True, slots=True)
class EntryRequest:
    """A taken decision: what to enter, from the signal bar's open time on."""

    symbol: str
    side: int
    signal_time_ms: int
    quantity: float
    sl_dist: float
    tp1_dist: float
    tp2_dist: float
    horizon_bars: int


def pending_position(
    req: EntryRequest,
    position_id: str,
    strategy: str,
    *,
    reference_price: float | None,
    venue: str,
) -> PositionRecord:
    """The pending position of a taken decision (both brokers): ``reference_price`` stands in
    as its entry price until the entry fills. A quantity that is not a positive number is a
    DataError naming the ``venue``'s order."""
    if not (math.isfinite(req.quantity) and req.quantity > 0.0):
        raise DataError(f"{venue} order {req.symbol} at {req.signal_time_ms}: quantity must be > 0")
    return PositionRecord(
        position_id=position_id,
        strategy=strategy,
        symbol=req.symbol,
        side=req.side,
        signal_time_ms=req.signal_time_ms,
        quantity=req.quantity,
        sl_dist=req.sl_dist,
        tp1_dist=req.tp1_dist,
        tp2_dist=req.tp2_dist,
        horizon_bars=req.horizon_bars,
        status=PENDING,
        entry_price=reference_price,
    )


@dataclass(slots=True)
class BrokerUpdate:
    """What one bar changed: records to journal."""

    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    positions: list[PositionRecord] = field(default_factory=list)

    def extend(self, other: BrokerUpdate) -> None:
        self.orders.extend(other.orders)
        self.fills.extend(other.fills)
        self.positions.extend(other.positions)


class Broker(Protocol):
    """What the live loop needs from an execution venue: :class:`PaperBroker` (simulated, the
    default) or :class:`atra.live.execution.ExchangeBroker` (real orders, ``--live``).

    Accounting contract (both brokers, and the backtest): an ``entry`` fill's ``pnl`` is minus
    its fee (booked at the entry bar); an exit leg's ``pnl`` is ``side x qty x (price - entry)``
    minus the leg's exit fee (booked at its bar); funding is booked by the loop. So the sum of
    fill ``pnl`` up to a bar is the realised P&L the backtest has at that bar, and a closed
    position's ``pnl`` is the sum of its fills.
    """

    spec: ExitSpec

    def load(self, positions: Iterable[PositionRecord]) -> None:
        """Take over pending / open positions from the journal (a restart)."""
        ...

    def positions(self, symbol: str | None = None) -> list[PositionRecord]:
        """Pending and open positions (of ``symbol``), in signal order."""
        ...

    def open_count(self, symbol: str | None = None) -> int: ...

    def remaining(self, pos: PositionRecord) -> float:
        """Quantity of ``pos`` still open (after a TP1 partial)."""
        ...

    async def recover(self) -> BrokerUpdate:
        """After :meth:`load`: reconcile with the venue (nothing to do on paper)."""
        ...

    async def submit(
        self, req: EntryRequest, *, reference_price: float | None = None, created_ms: int = 0
    ) -> BrokerUpdate:
        """Enter a taken decision at the next bar's open."""
        ...

    async def on_bar(
        self, symbol: str, open_time: I64, open_: F64, high: F64, low: F64
    ) -> BrokerUpdate:
        """The bar ending the arrays has closed: book what happened to ``symbol``'s
        positions up to it (fills, exits), and act at the next open (time barrier)."""
        ...


class PaperBroker:
    """Pending and open positions of one strategy, managed by the exit kernel."""

    def __init__(self, spec: ExitSpec, *, strategy: str, run_id: str) -> None:
        self.spec = spec
        self.strategy = strategy
        self.run_id = run_id
        self._args = spec.kernel_args()
        self._live: dict[str, PositionRecord] = {}

    # ---- state -----------------------------------------------------------------------------

    def load(self, positions: Iterable[PositionRecord]) -> None:
        """Take over pending / open positions (from the journal, on a restart)."""
        for pos in positions:
            if pos.status in (PENDING, OPEN):
                self._live[pos.position_id] = pos

    def positions(self, symbol: str | None = None) -> list[PositionRecord]:
        """Pending and open positions (of ``symbol``), in signal order."""
        found = [p for p in self._live.values() if symbol is None or p.symbol == symbol]
        return sorted(found, key=lambda p: (p.signal_time_ms, p.symbol))

    def open_count(self, symbol: str | None = None) -> int:
        return len(self.positions(symbol))

    # ---- orders ----------------------------------------------------------------------------

    def remaining(self, pos: PositionRecord) -> float:
        return pos.quantity * (1.0 - (self.spec.tp1_fraction if pos.legs_done else 0.0))

    async def recover(self) -> BrokerUpdate:
        """Nothing to reconcile: the journal is the paper venue."""
        return BrokerUpdate()

    async def submit(
        self, req: EntryRequest, *, reference_price: float | None = None, created_ms: int = 0
    ) -> BrokerUpdate:
        """Register the entry of a taken decision; it fills at the next bar's open.

        ``reference_price`` (the signal's close) is kept as the pending position's
        ``entry_price`` until the fill replaces it (the guards value pending notional with it).
        """
        cid = client_order_id(self.run_id, req.symbol, req.signal_time_ms)
        pos = pending_position(
            req, cid, self.strategy, reference_price=reference_price, venue="paper"
        )
        if cid in self._live:
            return BrokerUpdate()  # the same bar decided twice: one position only
        self._live[cid] = pos
        order = OrderRecord(
            client_order_id=cid,
            strategy=self.strategy,
            symbol=req.symbol,
            bar_time_ms=req.signal_time_ms,
            side=req.side,
            kind="entry",
            quantity=req.quantity,
            status=PENDING,
            run_id=self.run_id,
            created_ms=created_ms,
        )
        return BrokerUpdate(orders=[order], positions=[pos])

    # ---- bars ------------------------------------------------------------------------------

    async def on_bar(
        self, symbol: str, open_time: I64, open_: F64, high: F64, low: F64
    ) -> BrokerUpdate:
        """Advance every position of ``symbol`` through the bars seen so far (the arrays end
        at the bar that just closed)."""
        out = BrokerUpdate()
        n = int(open_time.shape[0])
        for pos in self.positions(symbol):
            e = int(np.searchsorted(open_time, pos.signal_time_ms, side="right"))
            if e >= n:
                continue  # the entry bar has not closed yet
            if e == 0 or int(open_time[e - 1]) != pos.signal_time_ms:
                raise DataError(
                    f"paper position {symbol} from {pos.signal_time_ms}: its signal bar is not "
                    "in the candle window (window too short for the position's horizon?)"
                )
            out.extend(self._advance(pos, e, n, open_time, open_, high, low))
        return out

    def _advance(
        self, pos: PositionRecord, e: int, n: int, t: I64, o: F64, h: F64, lo: F64
    ) -> BrokerUpdate:
        r = simulate_exit_nb(
            o, h, lo, e, n, pos.side, pos.sl_dist, pos.tp1_dist, pos.tp2_dist,
            pos.horizon_bars, *self._args,
        )  # fmt: skip
        status, _label, entry = int(r[0]), int(r[1]), float(r[2])
        legs = [(int(r[3]), float(r[4]), int(r[5]), float(r[6]))]
        if int(r[7]) >= 0:
            legs.append((int(r[7]), float(r[8]), int(r[9]), float(r[10])))
        out = BrokerUpdate()
        cid = pos.position_id
        fee_entry = self.spec.fee_entry
        new = pos
        if pos.status == PENDING:
            new = replace(new, status=OPEN, entry_time_ms=int(t[e]), entry_price=entry)
            out.orders.append(
                OrderRecord(
                    cid,
                    pos.strategy,
                    pos.symbol,
                    pos.signal_time_ms,
                    pos.side,
                    "entry",
                    pos.quantity,
                    "filled",
                    self.run_id,
                )
            )
            fee = pos.quantity * entry * fee_entry
            out.fills.append(
                FillRecord(cid, "entry", pos.symbol, int(t[e]), entry, pos.quantity, fee, -fee,
                           "ENTRY")
            )  # fmt: skip
        done = status == STATUS_DONE
        # legs the kernel has filled: a still running trade has one only after a TP1 partial
        booked = [leg for leg in legs if leg[0] >= 0]
        pnl_total = -pos.quantity * entry * fee_entry
        for k, (bar, price, reason_code, frac) in enumerate(booked):
            reason = REASON_NAMES[reason_code]
            fee_exit = self.spec.fee_tp if reason in _TP_REASONS else self.spec.fee_stop
            qty = pos.quantity * frac
            fee = qty * price * fee_exit
            pnl = pos.side * qty * (price - entry) - fee
            pnl_total += pnl
            if k < new.legs_done:
                continue  # booked on an earlier bar
            out.fills.append(
                FillRecord(cid, f"leg{k + 1}", pos.symbol, int(t[bar]), price, qty, fee, pnl,
                           reason)
            )  # fmt: skip
            new = replace(new, legs_done=k + 1)
        if done:
            bar, price, reason_code, _ = booked[-1]
            new = replace(
                new,
                status=CLOSED,
                exit_time_ms=int(t[bar]),
                exit_price=price,
                reason=REASON_NAMES[reason_code],
                pnl=pnl_total,
                ret_net=float(r[12]),
            )
            del self._live[cid]
        else:
            self._live[cid] = new
        if new != pos:
            out.positions.append(new)
        return out

    # ---- marks -----------------------------------------------------------------------------

    def unrealized(self, symbol: str, close: float) -> float:
        """Open P&L of ``symbol``'s positions at ``close``: ``side x remaining x (close -
        entry)`` (fees are booked with the fills)."""
        return unrealized(self, symbol, close)


def unrealized(broker: Broker, symbol: str, close: float) -> float:
    """Open P&L of ``symbol``'s open positions at ``close`` (the backtest's mark)."""
    total = 0.0
    for pos in broker.positions(symbol):
        if pos.status != OPEN or pos.entry_price is None:
            continue
        total += pos.side * broker.remaining(pos) * (close - pos.entry_price)
    return total
