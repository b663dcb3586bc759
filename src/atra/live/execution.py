"""The exchange broker: real orders on a USDT-M futures venue, managed bar by bar.

:class:`ExchangeBroker` implements :class:`atra.live.paper.Broker` over an
:class:`atra.adapters.orders.OrderApi` (one-way mode, one position per ``(symbol, signal
bar)``). It places the orders that reproduce the exit kernel (:mod:`atra.core.exits`):

* **entry**: a MARKET order at the entry bar's open (``submit`` is called at the signal bar's
  close). Its quantity is rounded DOWN to the symbol's step; below ``min_qty`` nothing is sent
  (order ``rejected``, position ``cancelled``).
* **protection**, placed as soon as the entry is filled, re-anchored at the fill price ``P``:
  ``sl`` a STOP_MARKET ``close_position`` at ``P - side*sl_dist``; with ``tp1_fraction < 1``
  ``tp1`` a reduce-only LIMIT for ``round_step(qty * tp1_fraction)`` at ``P + side*tp1_dist``
  and ``tp2`` a reduce-only LIMIT for the rest at ``P + side*tp2_dist``; with
  ``tp1_fraction == 1`` (or when the split would leave a part below ``min_qty``) one ``tp1``
  LIMIT for the whole quantity. Prices are rounded to the tick.
* **break-even**: once TP1 has filled (split mode) with ``move_to_be``, ``sl`` is cancelled
  and ``be``, a STOP_MARKET ``close_position`` at ``P``, replaces it from the next bar on.
* **stops that would trigger at once** (Binance -2021: the market is already beyond the
  level): the remainder is closed at market right away (reduce-only MARKET, same kind, reason
  SL or BE), which is the kernel's gap-through fill at the bar's open.
* **time barrier**: at the open of bar ``entry + horizon_bars`` every protective order is
  cancelled and a reduce-only MARKET (``time``) closes the remainder.
* **safety**: a protective order that the venue reports CANCELED / EXPIRED / REJECTED while
  the position is open (not cancelled by the broker), or that the venue refuses, is never
  re-placed: the remainder is closed at market (kind ``close``, reason SL).

Client order ids are :func:`atra.live.paper.client_order_id` of ``(run, symbol, signal bar,
kind)``: every retry, every restart finds the same order instead of placing a second one
(``OrderApi.place_order`` returns the known order for a known id). Every step is a
reconciliation with the venue's state (look the orders up, book what filled, cancel what must
not rest, place what is missing), so running it twice for one bar, or after a restart
(:meth:`ExchangeBroker.load` + :meth:`ExchangeBroker.recover`), books nothing twice.

Accounting is the :class:`atra.live.paper.Broker` contract: the entry fill's ``pnl`` is minus its
fee (``fee_entry``); an exit leg's ``pnl`` is ``side x qty x (price - entry)`` minus its fee
(``fee_tp`` for take-profits, ``fee_stop`` for SL / BE / TIME / forced closes); a fill's
``time_ms`` is the open time of the bar holding the venue's update time. A closed position
carries its last leg's time, price and reason, ``pnl`` = the sum of its fills' ``pnl`` and
``ret_net = pnl / (quantity x entry x (1 + fee_entry))``: with the venue filling as the
kernel does, exactly the kernel's net return.

The order vocabulary, rounding, the protective plan and the fill accounting are plain
functions in :mod:`atra.live.order_plan`; this module holds the steps that talk to the venue,
and their logs.

Known limits: partial fills are booked once the order is final (a TP cancelled after a partial
fill books its executed part); ``close_position`` stops close the symbol's whole net position,
so two simultaneous positions of one symbol share their stops.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import replace

from atra.adapters.journal import FillRecord, OrderRecord, PositionRecord
from atra.adapters.orders import OrderApi, OrderRequest, OrderState, SymbolRules, side_of
from atra.core.exits import ExitSpec
from atra.core.types import Timeframe
from atra.errors import ExchangeError, OrderRejected
from atra.live.order_plan import (
    CANCELLED,
    ENTRY,
    EXIT_KINDS,
    ORDER_STATUS,
    PROTECTIVE,
    QTY_TOL,
    STOPS,
    WOULD_TRIGGER,
    Track,
    book_exit_fills,
    close_order,
    closed_position,
    desired_kinds,
    is_done,
    plan_orders,
    round_step,
    round_step_nearest,
    round_tick,
)
from atra.live.paper import (
    CLOSED,
    F64,
    I64,
    OPEN,
    PENDING,
    BrokerUpdate,
    EntryRequest,
    client_order_id,
    pending_position,
)
from atra.obs import get_logger

__all__ = [
    "CANCELLED",
    "EXIT_KINDS",
    "ExchangeBroker",
    "round_step",
    "round_tick",
]

log = get_logger("atra.live.execution")


def _event(
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


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


class ExchangeBroker:
    """Real orders for one strategy's positions (see the module docstring).

    ``clock()`` is the loop's clock in seconds (UTC epoch); it decides which bar "now" is:
    an entry is only ever sent in its entry bar (signal bar + 1), never later.
    """

    def __init__(
        self,
        api: OrderApi,
        spec: ExitSpec,
        *,
        strategy: str,
        run_id: str,
        timeframe: Timeframe,
        clock: Callable[[], float],
    ) -> None:
        self.api = api
        self.spec = spec
        self.strategy = strategy
        self.run_id = run_id
        self.timeframe = timeframe
        self.step_ms = timeframe.ms
        self.clock = clock
        self._live: dict[str, Track] = {}
        self._done: set[str] = set()
        self._rules: dict[str, SymbolRules] = {}
        self._journalled: dict[str, str] = {}  # client order id -> status last journalled

    # ---- state -----------------------------------------------------------------------------

    def load(self, positions: Iterable[PositionRecord]) -> None:
        """Take over pending / open positions (from the journal, on a restart); call
        :meth:`recover` next to reconcile them with the venue."""
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

    # ---- entry points ----------------------------------------------------------------------

    async def submit(
        self, req: EntryRequest, *, reference_price: float | None = None, created_ms: int = 0
    ) -> BrokerUpdate:
        """Enter a taken decision now (the entry bar's open) with a MARKET order and protect
        it at once. ``reference_price`` stands in as the pending position's entry price."""
        pid = client_order_id(self.run_id, req.symbol, req.signal_time_ms, ENTRY)
        pos = pending_position(
            req, pid, self.strategy, reference_price=reference_price, venue="exchange"
        )
        if pid in self._live or pid in self._done:
            return BrokerUpdate()  # the same bar decided twice: one position only
        track = Track(pos)
        self._live[pid] = track
        out = BrokerUpdate()
        self._emit(out, track)
        now_bar = self._bar(self._now_ms())
        if now_bar != self._entry_bar(pos):
            self._miss(track, out, created_ms)
            return out
        try:
            await self._place_entry(track, out, created_ms, now_bar)
        except ExchangeError as exc:
            self._sync_failed(track, exc)
        return out

    async def on_bar(
        self, symbol: str, open_time: I64, open_: F64, high: F64, low: F64
    ) -> BrokerUpdate:
        """The bar ending ``open_time`` has closed (now is the next bar's open): reconcile
        every position of ``symbol`` with the venue (fills, break-even, time barrier)."""
        out = BrokerUpdate()
        if open_time.shape[0] == 0:
            return out
        next_open = max(int(open_time[-1]) + self.step_ms, self._bar(self._now_ms()))
        for pos in self.positions(symbol):
            await self._advance(self._live[pos.position_id], out, next_open)
        return out

    async def recover(self) -> BrokerUpdate:
        """After :meth:`load`: resolve pending entries, book the fills that happened while the
        process was down, put back missing protective orders, apply a passed time barrier;
        then compare the venue's positions with the open ones: a symbol none of them explains
        is logged (``unmanaged_position``, never touched), a net quantity that differs too
        (``position_mismatch``)."""
        out = BrokerUpdate()
        now_bar = self._bar(self._now_ms())
        for pos in self.positions():
            await self._advance(self._live[pos.position_id], out, now_bar)
        try:
            venue = await self.api.positions()
        except ExchangeError as exc:
            log.warning("positions_unavailable", error=_describe(exc))
            return out
        net: dict[str, float] = {}  # the journal's net quantity per symbol
        for t in self._live.values():
            if t.pos.status == OPEN:
                net[t.pos.symbol] = net.get(t.pos.symbol, 0.0) + t.pos.side * self.remaining(t.pos)
        at_venue = {vp.symbol: vp.quantity for vp in venue}
        for vp in venue:
            if vp.symbol not in net:  # not ours: reported, never touched
                _event(log.warning, "unmanaged_position", vp.symbol, None, None, "unmanaged",
                       qty=vp.quantity, price=vp.entry_price)  # fmt: skip
        for symbol, qty in sorted(net.items()):
            venue_qty = at_venue.get(symbol, 0.0)
            if abs(venue_qty - qty) > QTY_TOL * max(1.0, abs(qty)):
                _event(log.warning, "position_mismatch", symbol, None, None, OPEN, qty=venue_qty,
                       error=f"journal holds {qty}, the venue {venue_qty}")  # fmt: skip
        return out

    # ---- steps -----------------------------------------------------------------------------

    async def _advance(self, track: Track, out: BrokerUpdate, next_open: int) -> None:
        try:
            if track.pos.status == PENDING:
                await self._resolve_pending(track, out, next_open)
            else:
                await self._manage_open(track, out, next_open)
        except ExchangeError as exc:  # retried at the next bar: every step is idempotent
            self._sync_failed(track, exc)

    async def _resolve_pending(self, track: Track, out: BrokerUpdate, next_open: int) -> None:
        pos = track.pos
        st = await self.api.get_order(pos.symbol, pos.position_id)
        if st is not None:
            await self._on_entry_state(track, st, out, next_open)
            return
        now_ms = self._now_ms()
        now_bar = self._bar(now_ms)
        if now_bar == self._entry_bar(pos):
            await self._place_entry(track, out, now_ms, next_open)
        elif now_bar > self._entry_bar(pos):
            self._miss(track, out, now_ms)

    async def _place_entry(
        self, track: Track, out: BrokerUpdate, created_ms: int, next_open: int
    ) -> None:
        pos = track.pos
        try:
            rules = await self._rules_of(pos.symbol)
        except OrderRejected as exc:
            self._reject_entry(track, out, created_ms, str(exc))
            return
        qty = round_step(pos.quantity, rules.step_size)
        if qty != pos.quantity:
            track.pos = replace(pos, quantity=qty)
            pos = track.pos
        if qty <= 0.0 or qty < rules.min_qty:
            error = f"quantity below the minimum {rules.min_qty}"
            self._reject_entry(track, out, created_ms, error, qty=qty)
            return
        side = side_of(pos.side, closing=False)
        order = OrderRequest(pos.symbol, side, "MARKET", pos.position_id, quantity=qty)
        try:
            st = await self._place(order, ENTRY)
        except OrderRejected as exc:
            self._reject_entry(track, out, created_ms, str(exc))
            return
        except ExchangeError:  # outcome unknown: the next bar looks the order up
            self._order(out, pos, ENTRY, pos.side, qty, PENDING, created_ms)
            raise
        if not st.is_final:
            st = await self.api.get_order(pos.symbol, pos.position_id) or st
        await self._on_entry_state(track, st, out, next_open)

    async def _on_entry_state(
        self, track: Track, st: OrderState, out: BrokerUpdate, next_open: int
    ) -> None:
        self._note(out, track, ENTRY, st)
        if st.status != "FILLED" and not (st.is_final and st.executed_qty > 0.0):
            if st.is_final:  # the venue cancelled / expired the entry: nothing to manage
                _event(log.warning, "entry_cancelled", st.symbol, st.client_order_id, ENTRY,
                       st.status)  # fmt: skip
                self._finish(track, out, CANCELLED)
            return
        pos = track.pos
        t = self._bar(st.update_time_ms)
        qty, price = st.executed_qty, st.avg_price
        fee = qty * price * self.spec.fee_entry
        track.pos = replace(pos, status=OPEN, entry_time_ms=t, entry_price=price, quantity=qty)
        out.fills.append(
            FillRecord(pos.position_id, ENTRY, pos.symbol, t, price, qty, fee, -fee, "ENTRY")
        )
        self._emit(out, track)
        _event(log.info, "position_opened", pos.symbol, pos.position_id, ENTRY, OPEN,
               price=price, qty=qty)  # fmt: skip
        await self._manage_open(track, out, next_open)

    async def _manage_open(self, track: Track, out: BrokerUpdate, next_open: int) -> None:
        pos = track.pos
        rules = await self._rules_of(pos.symbol)
        plan = plan_orders(pos, rules, run_id=self.run_id, tp1_fraction=self.spec.tp1_fraction)
        # 1) look up what may have changed (everything, the first time after a restart)
        kinds = (
            EXIT_KINDS
            if not track.synced
            else tuple(k for k, s in track.states.items() if k != ENTRY and not s.is_final)
        )
        for kind in kinds:
            st = await self.api.get_order(pos.symbol, self._cid(pos, kind))
            if st is not None:
                self._note(out, track, kind, st)
        if not track.synced:
            self._book_fills(track, out, silent=track.pos.legs_done)
            track.synced = True
        # 2) book the fills
        if await self._settled(track, out):
            return
        # 3) the time barrier
        if track.pos.entry_time_ms is not None and (
            track.pos.entry_time_ms + track.pos.horizon_bars * self.step_ms <= next_open
        ):
            await self._market_close(track, out, "time")
            return
        # 4) protective orders lost while the position is open: close it
        desired = desired_kinds(track.states, plan, move_to_be=self.spec.move_to_be)
        lost = [k for k in desired if k in track.states and track.states[k].is_final]
        if lost:
            for kind in lost:
                st = track.states[kind]
                _event(log.error, "protective_order_lost", pos.symbol, st.client_order_id, kind,
                       st.status)  # fmt: skip
            await self._market_close(track, out, "close")
            return
        # 5) cancel what must not rest (the SL once break-even replaces it), then place
        # what is missing (idempotent: a known client id returns the venue's order)
        await self._cancel_resting(track, out, keep=desired)
        if await self._settled(track, out):
            return
        for kind in desired:
            if kind in track.states:
                continue
            try:
                st = await self._place(plan[kind], kind)
            except OrderRejected as exc:
                await self._refused(track, out, plan[kind], kind, exc)
                return
            self._note(out, track, kind, st)
        await self._settled(track, out)

    async def _refused(
        self, track: Track, out: BrokerUpdate, order: OrderRequest, kind: str, exc: OrderRejected
    ) -> None:
        pos = track.pos
        cid = order.client_order_id
        if kind in STOPS and WOULD_TRIGGER.search(str(exc)):
            # the market is already beyond the stop: the kernel's gap fill at this open
            _event(log.warning, "stop_would_trigger", pos.symbol, cid, kind, "rejected",
                   price=order.stop_price)  # fmt: skip
            await self._market_close(track, out, kind)
            return
        qty = order.quantity if order.quantity is not None else self.remaining(pos)
        self._exit_refused(out, pos, "protective_order_rejected", kind, qty, exc)
        await self._market_close(track, out, "close")

    async def _market_close(self, track: Track, out: BrokerUpdate, kind: str) -> None:
        """Cancel whatever rests, then close the remainder with a reduce-only MARKET order of
        ``kind`` (``time``, ``close``, or a stop that would have triggered at once)."""
        pos = track.pos
        await self._cancel_resting(track, out)
        if await self._settled(track, out):
            return
        rules = await self._rules_of(pos.symbol)
        qty = round_step_nearest(self.remaining(pos), rules.step_size)
        try:
            st = await self._place(close_order(pos, kind, qty, run_id=self.run_id), kind)
        except OrderRejected as exc:  # retried at the next bar (same trigger, same id)
            self._exit_refused(out, pos, "exit_rejected", kind, qty, exc, qty=qty)
            return
        self._note(out, track, kind, st)
        await self._settled(track, out)

    async def _cancel(self, track: Track, out: BrokerUpdate, kind: str) -> None:
        pos = track.pos
        st = await self.api.cancel_order(pos.symbol, self._cid(pos, kind))
        if st is not None:
            self._note(out, track, kind, st)

    async def _cancel_resting(
        self, track: Track, out: BrokerUpdate, keep: Collection[str] = ()
    ) -> None:
        """Cancel the protective orders still resting, but those of a kind in ``keep``."""
        for kind, st in list(track.states.items()):
            if kind in PROTECTIVE and kind not in keep and not st.is_final:
                await self._cancel(track, out, kind)

    async def _settled(self, track: Track, out: BrokerUpdate) -> bool:
        """Book the exit fills; close the position when they ended it (True then)."""
        self._book_fills(track, out)
        if not is_done(track):
            return False
        await self._close(track, out)
        return True

    async def _close(self, track: Track, out: BrokerUpdate) -> None:
        await self._cancel_resting(track, out)
        self._book_fills(track, out)
        track.pos = closed_position(track, self.spec.fee_entry)
        pos = track.pos
        _event(log.info, "position_closed", pos.symbol, pos.position_id, pos.reason, CLOSED,
               price=pos.exit_price)  # fmt: skip
        self._finish(track, out, CLOSED)

    # ---- booking ---------------------------------------------------------------------------

    def _book_fills(self, track: Track, out: BrokerUpdate, silent: int = 0) -> None:
        """Book exit orders that are final with an executed quantity, in fill order; the
        first ``silent`` are legs journalled before a restart (counted, not emitted)."""
        pos = track.pos
        # the loop logs booked fills (order_filled)
        out.fills.extend(book_exit_fills(track, self.spec, self.step_ms, silent))
        if track.booked and len(track.booked) != pos.legs_done:
            track.pos = replace(pos, legs_done=len(track.booked))
            if len(track.booked) > silent:
                self._emit(out, track)
        if silent > len(track.booked):
            error = f"{silent} legs journalled, {len(track.booked)} found at the venue"
            _event(log.warning, "journal_legs_unmatched", pos.symbol, pos.position_id, None,
                   pos.status, error=error)  # fmt: skip

    # ---- records ---------------------------------------------------------------------------

    def _note(self, out: BrokerUpdate, track: Track, kind: str, st: OrderState) -> None:
        """Remember an order's state; journal it when its status changed."""
        track.states[kind] = st
        status = ORDER_STATUS[st.status]
        if self._journalled.get(st.client_order_id) == status:
            return
        qty = st.orig_qty if st.orig_qty > 0.0 else self.remaining(track.pos)
        order_side = 1 if st.side == "BUY" else -1
        self._order(out, track.pos, kind, order_side, qty, status, self._now_ms(), st)

    def _order(
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
        cid = self._cid(pos, kind)
        self._journalled[cid] = status
        out.orders.append(
            OrderRecord(
                cid, self.strategy, pos.symbol, pos.signal_time_ms, side, kind, qty, status,
                self.run_id, created_ms,
            )
        )  # fmt: skip
        price = None if st is None else (st.avg_price or st.price or st.stop_price)
        _event(log.info, "order_updated", pos.symbol, cid, kind, status, price=price, qty=qty)

    def _exit_refused(
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
        _event(log.error, event, pos.symbol, self._cid(pos, kind), kind, "rejected",
               **fields, error=str(exc))  # fmt: skip
        self._order(out, pos, kind, -pos.side, quantity, "rejected", self._now_ms())

    def _reject_entry(
        self, track: Track, out: BrokerUpdate, created_ms: int, error: str, **fields: object
    ) -> None:
        pos = track.pos
        _event(log.warning, "order_rejected", pos.symbol, pos.position_id, ENTRY, "rejected",
               **fields, error=error)  # fmt: skip
        self._order(out, pos, ENTRY, pos.side, pos.quantity, "rejected", created_ms)
        self._finish(track, out, CANCELLED)

    def _miss(self, track: Track, out: BrokerUpdate, created_ms: int) -> None:
        pos = track.pos
        _event(log.warning, "entry_missed", pos.symbol, pos.position_id, ENTRY, CANCELLED,
               open_time=self._entry_bar(pos))  # fmt: skip
        self._order(out, pos, ENTRY, pos.side, pos.quantity, CANCELLED, created_ms)
        self._finish(track, out, CANCELLED)

    def _finish(self, track: Track, out: BrokerUpdate, status: str) -> None:
        if track.pos.status != status:
            track.pos = replace(track.pos, status=status)
        self._live.pop(track.pos.position_id, None)
        self._done.add(track.pos.position_id)
        self._emit(out, track)

    def _sync_failed(self, track: Track, exc: ExchangeError) -> None:
        pos = track.pos
        _event(log.warning, "position_sync_failed", pos.symbol, pos.position_id, None,
               pos.status, error=_describe(exc))  # fmt: skip

    @staticmethod
    def _emit(out: BrokerUpdate, track: Track) -> None:
        """Put the position's latest record in ``out`` (one record per position)."""
        pid = track.pos.position_id
        for i, p in enumerate(out.positions):
            if p.position_id == pid:
                out.positions[i] = track.pos
                return
        out.positions.append(track.pos)

    # ---- venue -----------------------------------------------------------------------------

    async def _place(self, order: OrderRequest, kind: str) -> OrderState:
        """Place ``order``; when the answer is lost (a transient error: the order may or may
        not be at the venue) place it once more: its client id makes the retry return the
        order that reached the venue instead of a second one."""
        try:
            return await self.api.place_order(order)
        except OrderRejected:
            raise
        except ExchangeError as exc:
            _event(log.warning, "order_outcome_unknown", order.symbol, order.client_order_id,
                   kind, "unknown", error=_describe(exc))  # fmt: skip
            return await self.api.place_order(order)

    async def _rules_of(self, symbol: str) -> SymbolRules:
        rules = self._rules.get(symbol)
        if rules is None:
            try:
                rules = await self.api.symbol_rules(symbol)
            except OrderRejected:
                raise
            except ExchangeError:  # once more: an entry has one bar to be sent in
                rules = await self.api.symbol_rules(symbol)
            self._rules[symbol] = rules
        return rules

    def _cid(self, pos: PositionRecord, kind: str) -> str:
        return client_order_id(self.run_id, pos.symbol, pos.signal_time_ms, kind)

    def _now_ms(self) -> int:
        return round(self.clock() * 1000.0)

    def _bar(self, t_ms: int) -> int:
        return t_ms - t_ms % self.step_ms

    def _entry_bar(self, pos: PositionRecord) -> int:
        return pos.signal_time_ms + self.step_ms
