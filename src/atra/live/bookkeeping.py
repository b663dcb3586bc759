"""The exchange broker's bookkeeping (:class:`~atra.live.execution.ExchangeBroker`).

:class:`Bookkeeper` holds the positions the broker manages (one
:class:`~atra.live.order_plan.Track` per pending or open position, and the ids of those it
finished), the status last journalled per client order id, and writes the records of every
step into a :class:`~atra.live.paper.BrokerUpdate`: an order's record when its status changed,
a position's latest record once per update, the exit fills booked
(:func:`~atra.live.order_plan.book_exit_fills`). Every event of the order path is logged with
its symbol, client order id, order kind and status (:func:`order_event`), under the
``atra.live.execution`` logger.

Accounting is the :class:`atra.live.paper.Broker` contract: the entry fill's ``pnl`` is minus its
fee (``fee_entry``); an exit leg's ``pnl`` is ``side x qty x (price - entry)`` minus its fee
(``fee_tp`` for take-profits, ``fee_stop`` for SL / BE / TIME / forced closes); a fill's
``time_ms`` is the open time of the bar holding the venue's update time. A closed position
carries its last leg's time, price and reason, ``pnl`` = the sum of its fills' ``pnl`` and
``ret_net = pnl / (quantity x entry x (1 + fee_entry))``: with the venue filling as the
kernel does, exactly the kernel's net return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from atra.adapters.journal.records import FillRecord, OrderRecord, PositionRecord
from atra.adapters.orders import OrderState, VenuePosition
from atra.core.exits.api import ExitSpec
from atra.errors import ExchangeError, OrderRejected
from atra.live.order_plan import (
    CANCELLED,
    ENTRY,
    EXIT_KINDS,
    ORDER_STATUS,
    QTY_TOL,
    Track,
    book_exit_fills,
    closed_position,
)
from atra.live.paper import CLOSED, OPEN, PENDING, BrokerUpdate, client_order_id
from atra.obs import get_logger

__all__ = ["Bookkeeper", "error_text", "order_event"]

log = get_logger("atra.live.execution")  # the broker's events keep one logger name


def order_event(
    emit: Callable[..., object],
    event: str,
    symbol: str,
    cid: str | None,
    kind: str | None,
    status: str,
    **fields: object,
) -> None:
    """One structured event of the order path: always its symbol, client order id, order kind
    and status, then the event's own ``fields``."""
    emit(event, symbol=symbol, client_order_id=cid, kind=kind, status=status, **fields)


def error_text(exc: Exception) -> str:
    """``exc`` as one log field: its type and message."""
    return f"{type(exc).__name__}: {exc}"


class Bookkeeper:
    """The positions of one strategy's run at the venue and their records (see the module
    docstring). ``clock()`` is the loop's clock in seconds (UTC epoch)."""

    def __init__(
        self,
        spec: ExitSpec,
        *,
        strategy: str,
        run_id: str,
        step_ms: int,
        clock: Callable[[], float],
    ) -> None:
        self.spec = spec
        self.strategy = strategy
        self.run_id = run_id
        self.step_ms = step_ms
        self.clock = clock
        self._live: dict[str, Track] = {}
        self._done: set[str] = set()
        self._journalled: dict[str, str] = {}  # client order id -> status last journalled
        self._foreign: set[tuple[str, int, bool]] = set()  # (symbol, id, algo?) reported

    # ---- positions -------------------------------------------------------------------------

    def load(self, positions: Iterable[PositionRecord]) -> None:
        """Take over pending / open positions (from the journal, on a restart)."""
        for pos in positions:
            if pos.status in (PENDING, OPEN):
                self._live[pos.position_id] = Track(pos, synced=False)

    def positions(self, symbol: str | None = None) -> list[PositionRecord]:
        """Pending and open positions (of ``symbol``), in signal order."""
        found = [t.pos for t in self._live.values() if symbol is None or t.pos.symbol == symbol]
        return sorted(found, key=lambda p: (p.signal_time_ms, p.symbol))

    def open_count(self, symbol: str | None = None) -> int:
        return len(self.positions(symbol))

    def remaining(self, pos: PositionRecord) -> float:
        """Quantity of ``pos`` still open: its quantity minus the exit legs filled."""
        track = self._live.get(pos.position_id)
        if track is not None and track.synced:
            return max(0.0, track.pos.quantity - track.exit_qty)
        if pos.legs_done == 0:
            return pos.quantity
        return pos.quantity * (1.0 - self.spec.tp1_fraction)

    def known(self, position_id: str) -> bool:
        """``position_id`` is managed now or was finished in this process."""
        return position_id in self._live or position_id in self._done

    def add(self, track: Track) -> None:
        """Manage a new position."""
        self._live[track.pos.position_id] = track

    def track(self, position_id: str) -> Track:
        """The state of a pending or open position."""
        return self._live[position_id]

    def compare(self, venue: Sequence[VenuePosition]) -> None:
        """Log the venue's positions that no open position explains (``unmanaged_position``,
        never touched) and the symbols whose net quantity differs (``position_mismatch``)."""
        net: dict[str, float] = {}  # the journal's net quantity per symbol
        for t in self._live.values():
            if t.pos.status == OPEN:
                net[t.pos.symbol] = net.get(t.pos.symbol, 0.0) + t.pos.side * self.remaining(t.pos)
        at_venue = {vp.symbol: vp.quantity for vp in venue}
        for vp in venue:
            if vp.symbol not in net:  # not ours: reported, never touched
                order_event(log.warning, "unmanaged_position", vp.symbol, None, None, "unmanaged",
                            qty=vp.quantity, price=vp.entry_price)  # fmt: skip
        for symbol, qty in sorted(net.items()):
            venue_qty = at_venue.get(symbol, 0.0)
            if abs(venue_qty - qty) > QTY_TOL * max(1.0, abs(qty)):
                order_event(log.warning, "position_mismatch", symbol, None, None, OPEN,
                            qty=venue_qty,
                            error=f"journal holds {qty}, the venue {venue_qty}")  # fmt: skip

    def report_foreign(self, resting: Iterable[OrderState]) -> None:
        """Log, once each, the resting orders that are none of the managed positions' orders
        (``foreign_order_seen``: placed by hand or by another program, or of a type ATRA never
        places), regular or conditional (algo ids and order ids are apart). They are reported
        only: never cancelled, never booked."""
        ours = {self.cid(t.pos, kind) for t in self._live.values() for kind in (ENTRY, *EXIT_KINDS)}
        for st in resting:
            key = (st.symbol, st.order_id, st.conditional)
            if (st.client_order_id in ours and not st.foreign) or key in self._foreign:
                continue
            self._foreign.add(key)
            order_event(log.warning, "foreign_order_seen", st.symbol, st.client_order_id, None,
                        st.status, order_id=st.order_id, type=st.type, side=st.side,
                        qty=st.orig_qty, price=st.price or st.stop_price,
                        algo=st.conditional)  # fmt: skip

    # ---- booking ---------------------------------------------------------------------------

    def book_fills(self, track: Track, out: BrokerUpdate, silent: int = 0) -> None:
        """Book exit orders that are final with an executed quantity, in fill order; the
        first ``silent`` are legs journalled before a restart (counted, not emitted)."""
        pos = track.pos
        # the loop logs booked fills (order_filled)
        out.fills.extend(book_exit_fills(track, self.spec, self.step_ms, silent))
        if track.booked and len(track.booked) != pos.legs_done:
            track.pos = replace(pos, legs_done=len(track.booked))
            if len(track.booked) > silent:
                self.emit(out, track)
        if silent > len(track.booked):
            error = f"{silent} legs journalled, {len(track.booked)} found at the venue"
            order_event(log.warning, "journal_legs_unmatched", pos.symbol, pos.position_id, None,
                        pos.status, error=error)  # fmt: skip

    def book_entry(self, track: Track, st: OrderState, out: BrokerUpdate) -> None:
        """The entry filled (``st``): the position opens at the fill's bar, price and quantity;
        the entry fill's ``pnl`` is minus its fee."""
        pos = track.pos
        t = self.bar(st.update_time_ms)
        qty, price = st.executed_qty, st.avg_price
        fee = qty * price * self.spec.fee_entry
        track.pos = replace(pos, status=OPEN, entry_time_ms=t, entry_price=price, quantity=qty)
        out.fills.append(
            FillRecord(pos.position_id, ENTRY, pos.symbol, t, price, qty, fee, -fee, "ENTRY")
        )
        self.emit(out, track)
        order_event(log.info, "position_opened", pos.symbol, pos.position_id, ENTRY, OPEN,
                    price=price, qty=qty)  # fmt: skip

    def book_close(self, track: Track, out: BrokerUpdate) -> None:
        """The booked exit fills ended the position: it closes
        (:func:`~atra.live.order_plan.closed_position`) and is no longer managed."""
        track.pos = closed_position(track, self.spec.fee_entry)
        pos = track.pos
        order_event(log.info, "position_closed", pos.symbol, pos.position_id, pos.reason, CLOSED,
                    price=pos.exit_price)  # fmt: skip
        self.finish(track, out, CLOSED)

    # ---- records ---------------------------------------------------------------------------

    def note(self, out: BrokerUpdate, track: Track, kind: str, st: OrderState) -> None:
        """Remember an order's state; journal it when its status changed."""
        track.states[kind] = st
        status = ORDER_STATUS[st.status]
        if self._journalled.get(st.client_order_id) == status:
            return
        qty = st.orig_qty if st.orig_qty > 0.0 else self.remaining(track.pos)
        order_side = 1 if st.side == "BUY" else -1
        self.order(out, track.pos, kind, order_side, qty, status, self.now_ms(), st)

    def order(
        self,
        out: BrokerUpdate,
        pos: PositionRecord,
        kind: str,
        side: int,
        qty: float,
        status: str,
        created_ms: int,
        st: OrderState | None = None,
    ) -> None:
        """Journal the order of ``kind`` of ``pos`` with ``status`` (and log it)."""
        cid = self.cid(pos, kind)
        self._journalled[cid] = status
        out.orders.append(
            OrderRecord(
                cid, self.strategy, pos.symbol, pos.signal_time_ms, side, kind, qty, status,
                self.run_id, created_ms,
            )
        )  # fmt: skip
        price = None if st is None else (st.avg_price or st.price or st.stop_price)
        order_event(log.info, "order_updated", pos.symbol, cid, kind, status, price=price, qty=qty)

    def exit_refused(
        self,
        out: BrokerUpdate,
        pos: PositionRecord,
        event: str,
        kind: str,
        quantity: float,
        exc: OrderRejected,
        **fields: object,
    ) -> None:
        """The venue refused an exit order of ``kind``: logged loudly and journalled."""
        order_event(log.error, event, pos.symbol, self.cid(pos, kind), kind, "rejected",
                    **fields, error=str(exc))  # fmt: skip
        self.order(out, pos, kind, -pos.side, quantity, "rejected", self.now_ms())

    def reject_entry(
        self, track: Track, out: BrokerUpdate, created_ms: int, error: str, **fields: object
    ) -> None:
        """The entry was not sent or was refused: journalled rejected, position cancelled."""
        pos = track.pos
        order_event(log.warning, "order_rejected", pos.symbol, pos.position_id, ENTRY, "rejected",
                    **fields, error=error)  # fmt: skip
        self.order(out, pos, ENTRY, pos.side, pos.quantity, "rejected", created_ms)
        self.finish(track, out, CANCELLED)

    def miss(self, track: Track, out: BrokerUpdate, created_ms: int) -> None:
        """The entry bar passed before the entry was sent: position cancelled."""
        pos = track.pos
        order_event(log.warning, "entry_missed", pos.symbol, pos.position_id, ENTRY, CANCELLED,
                    open_time=self.entry_bar(pos))  # fmt: skip
        self.order(out, pos, ENTRY, pos.side, pos.quantity, CANCELLED, created_ms)
        self.finish(track, out, CANCELLED)

    def finish(self, track: Track, out: BrokerUpdate, status: str) -> None:
        """The position is over (``status``): no longer managed, its record emitted."""
        if track.pos.status != status:
            track.pos = replace(track.pos, status=status)
        self._live.pop(track.pos.position_id, None)
        self._done.add(track.pos.position_id)
        self.emit(out, track)

    def sync_failed(self, track: Track, exc: ExchangeError) -> None:
        pos = track.pos
        order_event(log.warning, "position_sync_failed", pos.symbol, pos.position_id, None,
                    pos.status, error=error_text(exc))  # fmt: skip

    @staticmethod
    def emit(out: BrokerUpdate, track: Track) -> None:
        """Put the position's latest record in ``out`` (one record per position)."""
        pid = track.pos.position_id
        for i, p in enumerate(out.positions):
            if p.position_id == pid:
                out.positions[i] = track.pos
                return
        out.positions.append(track.pos)

    # ---- ids and bars -----------------------------------------------------------------------

    def cid(self, pos: PositionRecord, kind: str) -> str:
        """Client order id of the order of ``kind`` of ``pos``."""
        return client_order_id(self.run_id, pos.symbol, pos.signal_time_ms, kind)

    def now_ms(self) -> int:
        return round(self.clock() * 1000.0)

    def bar(self, t_ms: int) -> int:
        """Open time of the bar holding ``t_ms``."""
        return t_ms - t_ms % self.step_ms

    def entry_bar(self, pos: PositionRecord) -> int:
        """Open time of ``pos``'s entry bar (the bar after its signal bar)."""
        return pos.signal_time_ms + self.step_ms
