"""The exchange broker: real orders on a USDT-M futures venue, managed bar by bar.

:class:`ExchangeBroker` implements :class:`atra.live.paper.Broker` over an
:class:`atra.adapters.orders.OrderApi` (one-way mode, one position per ``(symbol, signal
bar)``). It places the orders that reproduce the exit kernel (:mod:`atra.core.exits`):

* **entry**: a MARKET order at the entry bar's open (``submit`` is called at the signal bar's
  close). Its quantity is rounded DOWN to the symbol's step; below ``min_qty`` nothing is sent
  (order ``rejected``, position ``cancelled``).
* **protection**, placed as soon as the entry is filled, re-anchored at the fill price ``P``:
  ``sl`` a STOP_MARKET ``close_position`` at ``P - side*sl_dist`` (a conditional order: on
  Binance's Algo Order API, ``clientAlgoId`` = its client order id); with ``tp1_fraction < 1``
  ``tp1`` a reduce-only LIMIT for ``round_step(qty * tp1_fraction)`` at ``P + side*tp1_dist``
  and ``tp2`` a reduce-only LIMIT for the rest at ``P + side*tp2_dist``; with
  ``tp1_fraction == 1`` (or when the split would leave a part below ``min_qty``) one ``tp1``
  LIMIT for the whole quantity. Prices are rounded to the tick.
* **break-even**: once TP1 has filled (split mode) with ``move_to_be``, ``sl`` is cancelled
  and ``be``, a STOP_MARKET ``close_position`` at ``P`` (conditional too), replaces it from the
  next bar on. A triggered stop's fill is that of the market order it put in the matching
  engine (``actualOrderId``), read through the order API.
* **stops that would trigger at once** (Binance -2021: the market is already beyond the
  level): the remainder is closed at market right away (reduce-only MARKET, same kind, reason
  SL or BE), which is the kernel's gap-through fill at the bar's open.
* **time barrier**: at the open of bar ``entry + horizon_bars`` every protective order is
  cancelled and a reduce-only MARKET (``time``) closes the remainder.
* **safety**: a protective order that the venue reports CANCELED / EXPIRED / REJECTED while
  the position is open (not cancelled by the broker), or that the venue refuses (whatever the
  code: a -4120 "use the Algo Order API" too), is never re-placed: the refusal is logged
  (``protective_order_rejected``, with Binance's code and message) and journalled, and the
  remainder is closed at market (kind ``close``, reason SL).

Client order ids are :func:`atra.live.paper.client_order_id` of ``(run, symbol, signal bar,
kind)``: every retry, every restart finds the same order instead of placing a second one
(``OrderApi.place_order`` returns the known order for a known id). Every step is a
reconciliation with the venue's state (look the orders up, book what filled, cancel what must
not rest, place what is missing), so running it twice for one bar, or after a restart
(:meth:`ExchangeBroker.load` + :meth:`ExchangeBroker.recover`), books nothing twice. The
venue's resting orders (``openOrders``) and conditional orders (``openAlgoOrders``) are read at
the start for every symbol (weight 40 each) and at every bar for each symbol that holds a
position (weight 1 each): one that is none of the managed positions' (placed by hand, ...) is
reported once (``foreign_order_seen``) and left alone.

The order vocabulary, rounding, the protective plan and the fill accounting are plain
functions in :mod:`atra.live.order_plan`; the positions managed, the records (with the
accounting) and the logs of each step are kept by :class:`atra.live.bookkeeping.Bookkeeper`;
this module holds the steps that talk to the venue. Spot, long only, with the exits as OCO
lists: :class:`atra.live.spot_execution.SpotBroker` (a subclass overriding the exit steps,
the entry checks and the reconciliation).

Known limits: partial fills are booked once the order is final (a TP cancelled after a partial
fill books its executed part); ``close_position`` stops close the symbol's whole net position,
so two simultaneous positions of one symbol share their stops.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import replace

from atra.adapters.journal.records import PositionRecord
from atra.adapters.orders import OrderApi, OrderRequest, OrderState, SymbolRules, side_of
from atra.core.exits.api import ExitSpec
from atra.core.types import Timeframe
from atra.errors import ExchangeError, OrderRejected
from atra.live.bookkeeping import Bookkeeper, error_text, order_event
from atra.live.order_plan import (
    CANCELLED,
    CONDITIONAL,
    ENTRY,
    EXIT_KINDS,
    PROTECTIVE,
    STOPS,
    WOULD_TRIGGER,
    Track,
    close_order,
    desired_kinds,
    is_done,
    plan_orders,
    round_step,
    round_step_nearest,
    round_tick,
)
from atra.live.paper import (
    F64,
    I64,
    PENDING,
    BrokerUpdate,
    EntryRequest,
    client_order_id,
    pending_position,
)
from atra.obs import get_logger

__all__ = ["CANCELLED", "EXIT_KINDS", "ExchangeBroker", "round_step", "round_tick"]

log = get_logger("atra.live.execution")


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
        self.books = Bookkeeper(
            spec, strategy=strategy, run_id=run_id, step_ms=self.step_ms, clock=clock
        )
        """The positions managed, their records and logs."""
        self._rules: dict[str, SymbolRules] = {}
        self._scanned: dict[str, int] = {}  # symbol -> the bar its resting orders were read

    # ---- state -----------------------------------------------------------------------------

    def load(self, positions: Iterable[PositionRecord]) -> None:
        """Take over pending / open positions (from the journal, on a restart); call
        :meth:`recover` next to reconcile them with the venue."""
        self.books.load(positions)

    def positions(self, symbol: str | None = None) -> list[PositionRecord]:
        """Pending and open positions (of ``symbol``), in signal order."""
        return self.books.positions(symbol)

    def open_count(self, symbol: str | None = None) -> int:
        return self.books.open_count(symbol)

    def remaining(self, pos: PositionRecord) -> float:
        """Quantity of ``pos`` still open: its quantity minus the exit legs filled."""
        return self.books.remaining(pos)

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
        if self.books.known(pid):
            return BrokerUpdate()  # the same bar decided twice: one position only
        track = Track(pos)
        self.books.add(track)
        out = BrokerUpdate()
        self.books.emit(out, track)
        now_bar = self.books.bar(self.books.now_ms())
        if now_bar != self.books.entry_bar(pos):
            self.books.miss(track, out, created_ms)
            return out
        try:
            await self._place_entry(track, out, created_ms, now_bar)
        except ExchangeError as exc:
            self.books.sync_failed(track, exc)
        return out

    async def on_bar(
        self, symbol: str, open_time: I64, open_: F64, high: F64, low: F64
    ) -> BrokerUpdate:
        """The bar ending ``open_time`` has closed (now is the next bar's open): reconcile
        every position of ``symbol`` with the venue (fills, break-even, time barrier)."""
        out = BrokerUpdate()
        if open_time.shape[0] == 0:
            return out
        next_open = max(int(open_time[-1]) + self.step_ms, self.books.bar(self.books.now_ms()))
        for pos in self.positions(symbol):
            await self._advance(self.books.track(pos.position_id), out, next_open)
        if self.positions(symbol) and self._scanned.get(symbol) != next_open:
            self._scanned[symbol] = next_open  # once per bar: what else rests on this symbol
            await self._report_resting(symbol)
        return out

    async def recover(self) -> BrokerUpdate:
        """After :meth:`load`: resolve pending entries, book the fills that happened while the
        process was down, put back missing protective orders, apply a passed time barrier;
        then compare the venue's positions with the open ones: a symbol none of them explains
        is logged (``unmanaged_position``, never touched), a net quantity that differs too
        (``position_mismatch``); a resting order (``openOrders``) or conditional order
        (``openAlgoOrders``) that is not one of the managed positions' (placed by hand, of a
        type ATRA never places, ...) is logged (``foreign_order_seen``) and left alone."""
        out = BrokerUpdate()
        now_bar = self.books.bar(self.books.now_ms())
        for pos in self.positions():
            await self._advance(self.books.track(pos.position_id), out, now_bar)
        try:
            venue = await self.api.positions()
        except ExchangeError as exc:
            log.warning("positions_unavailable", error=error_text(exc))
        else:
            self.books.compare(venue)
        await self._report_resting()
        return out

    async def _report_resting(self, symbol: str | None = None) -> None:
        """Read the venue's resting orders and conditional (algo) orders (of ``symbol``, or of
        every symbol); report those of no managed position (``foreign_order_seen``, once
        each). A failed read is logged, never fatal to the cycle."""
        for event, listing in (
            ("open_orders_unavailable", self.api.open_orders),
            ("open_conditional_orders_unavailable", self.api.open_conditional_orders),
        ):
            try:
                resting = await listing(symbol)
            except ExchangeError as exc:  # a report only
                log.warning(event, error=error_text(exc))
            else:
                self.books.report_foreign(resting)

    # ---- steps -----------------------------------------------------------------------------

    async def _advance(self, track: Track, out: BrokerUpdate, next_open: int) -> None:
        try:
            if track.pos.status == PENDING:
                await self._resolve_pending(track, out, next_open)
            else:
                await self._manage_open(track, out, next_open)
        except ExchangeError as exc:  # retried at the next bar: every step is idempotent
            self.books.sync_failed(track, exc)

    async def _resolve_pending(self, track: Track, out: BrokerUpdate, next_open: int) -> None:
        pos = track.pos
        st = await self.api.get_order(pos.symbol, pos.position_id)
        if st is not None:
            await self._on_entry_state(track, st, out, next_open)
            return
        now_ms = self.books.now_ms()
        now_bar = self.books.bar(now_ms)
        if now_bar == self.books.entry_bar(pos):
            await self._place_entry(track, out, now_ms, next_open)
        elif now_bar > self.books.entry_bar(pos):
            self.books.miss(track, out, now_ms)

    async def _place_entry(
        self, track: Track, out: BrokerUpdate, created_ms: int, next_open: int
    ) -> None:
        pos = track.pos
        try:
            rules = await self._rules_of(pos.symbol)
        except OrderRejected as exc:
            self.books.reject_entry(track, out, created_ms, str(exc))
            return
        qty = round_step(pos.quantity, rules.step_size)
        if qty != pos.quantity:
            track.pos = replace(pos, quantity=qty)
            pos = track.pos
        if qty <= 0.0 or qty < rules.min_qty:
            error = f"quantity below the minimum {rules.min_qty}"
            self.books.reject_entry(track, out, created_ms, error, qty=qty)
            return
        side = side_of(pos.side, closing=False)
        order = OrderRequest(pos.symbol, side, "MARKET", pos.position_id, quantity=qty)
        try:
            st = await self._place(order, ENTRY)
        except OrderRejected as exc:
            self.books.reject_entry(track, out, created_ms, str(exc))
            return
        except ExchangeError:  # outcome unknown: the next bar looks the order up
            self.books.order(out, pos, ENTRY, pos.side, qty, PENDING, created_ms)
            raise
        if not st.is_final:
            st = await self.api.get_order(pos.symbol, pos.position_id) or st
        await self._on_entry_state(track, st, out, next_open)

    async def _on_entry_state(
        self, track: Track, st: OrderState, out: BrokerUpdate, next_open: int
    ) -> None:
        self.books.note(out, track, ENTRY, st)
        if st.status != "FILLED" and not (st.is_final and st.executed_qty > 0.0):
            if st.is_final:  # the venue cancelled / expired the entry: nothing to manage
                order_event(log.warning, "entry_cancelled", st.symbol, st.client_order_id, ENTRY,
                            st.status)  # fmt: skip
                self.books.finish(track, out, CANCELLED)
            return
        self.books.book_entry(track, st, out)
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
            cid = self.books.cid(pos, kind)
            st = await self.api.get_order(pos.symbol, cid, conditional=kind in CONDITIONAL)
            if st is not None:
                self.books.note(out, track, kind, st)
        if not track.synced:
            self.books.book_fills(track, out, silent=track.pos.legs_done)
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
                order_event(log.error, "protective_order_lost", pos.symbol, st.client_order_id,
                            kind, st.status)  # fmt: skip
            await self._market_close(track, out, "close")
            return
        # 5) cancel what must not rest (the SL once break-even replaces it), then place
        # what is missing (idempotent: a known client id returns the venue's order)
        await self._cancel_resting(track, out, keep=desired)
        if await self._settled(track, out):
            return
        if await self._place_protective(track, out, plan, desired):
            await self._settled(track, out)

    async def _place_protective(
        self, track: Track, out: BrokerUpdate, plan: dict[str, OrderRequest], desired: list[str]
    ) -> bool:
        """Place the ``desired`` protective orders not resting yet, one by one; False when a
        refusal ended the step (:meth:`_refused` handled it)."""
        for kind in desired:
            if kind in track.states:
                continue
            try:
                st = await self._place(plan[kind], kind)
            except OrderRejected as exc:
                await self._refused(track, out, plan[kind], kind, exc)
                return False
            self.books.note(out, track, kind, st)
        return True

    async def _refused(
        self, track: Track, out: BrokerUpdate, order: OrderRequest, kind: str, exc: OrderRejected
    ) -> None:
        pos = track.pos
        cid = order.client_order_id
        if kind in STOPS and WOULD_TRIGGER.search(str(exc)):
            # the market is already beyond the stop: the kernel's gap fill at this open
            order_event(log.warning, "stop_would_trigger", pos.symbol, cid, kind, "rejected",
                        price=order.stop_price)  # fmt: skip
            await self._market_close(track, out, kind)
            return
        qty = order.quantity if order.quantity is not None else self.remaining(pos)
        self.books.exit_refused(out, pos, "protective_order_rejected", kind, qty, exc)
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
            self.books.exit_refused(out, pos, "exit_rejected", kind, qty, exc, qty=qty)
            return
        self.books.note(out, track, kind, st)
        await self._settled(track, out)

    async def _cancel(self, track: Track, out: BrokerUpdate, kind: str) -> None:
        pos = track.pos
        cid = self.books.cid(pos, kind)
        st = await self.api.cancel_order(pos.symbol, cid, conditional=kind in CONDITIONAL)
        if st is not None:
            self.books.note(out, track, kind, st)

    async def _cancel_resting(
        self, track: Track, out: BrokerUpdate, keep: Collection[str] = ()
    ) -> None:
        """Cancel the protective orders still resting, but those of a kind in ``keep``."""
        for kind, st in list(track.states.items()):
            if kind in PROTECTIVE and kind not in keep and not st.is_final:
                await self._cancel(track, out, kind)

    async def _settled(self, track: Track, out: BrokerUpdate) -> bool:
        """Book the exit fills; close the position when they ended it (True then)."""
        self.books.book_fills(track, out)
        if not is_done(track):
            return False
        await self._close(track, out)
        return True

    async def _close(self, track: Track, out: BrokerUpdate) -> None:
        await self._cancel_resting(track, out)
        self.books.book_fills(track, out)
        self.books.book_close(track, out)

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
            order_event(log.warning, "order_outcome_unknown", order.symbol, order.client_order_id,
                        kind, "unknown", error=error_text(exc))  # fmt: skip
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
