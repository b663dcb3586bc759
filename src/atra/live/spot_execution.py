"""The spot broker: real orders on a Binance spot account, long only, managed bar by bar.

:class:`SpotBroker` is :class:`atra.live.execution.ExchangeBroker` with the exits spot allows.
Spot has no reduce-only orders, no close-position stops and no positions; what it has is the
OCO order list: a LIMIT_MAKER take-profit above the price and a STOP_LOSS below it, one
quantity for both, one cancelling the other. The lists and their quantities are
:mod:`atra.live.spot_plan`'s. So:

* **entry**: a MARKET BUY at the entry bar's open (as on futures: same client id scheme, the
  same look-up of an order whose answer was lost, never a second order). A short decision is
  refused (``order_rejected``: spot is long only here, no margin shorts), and so is an entry
  whose notional at the reference price is below the symbol's NOTIONAL / MIN_NOTIONAL filter.
* **protection**, as soon as the entry has filled, for the quantity bought (never more: a
  balance of the base asset ATRA did not buy is not sold), re-anchored at the fill price ``P``:
  with ``tp1_fraction == 1`` one SELL OCO ``oco`` (``tp1`` a LIMIT_MAKER at ``P + tp1_dist``,
  ``sl`` a STOP_LOSS at ``P - sl_dist``); with ``tp1_fraction < 1`` two: **A** (``oco``: ``tp1``
  + ``sl``) for the TP1 part and **B** (``oco2``: ``tp2`` at ``P + tp2_dist`` + ``sl2`` at the
  same stop) for the rest, A + B = the quantity bought (when a part would be below the minimum
  quantity or notional: one list, logged ``tp_split_fallback``, as futures keeps one
  take-profit). Every list and leg has its own deterministic client id (kind ``oco``, ``oco2``,
  ``ocobe``; legs by their kind).
* **TP1 filled** (A over, its stop expired by the venue): with ``move_to_be`` B is cancelled
  and **B'** (``ocobe``: ``tp2be`` at TP2 + ``be`` a STOP_LOSS at ``P``) placed for what is
  left, at the next bar's open: the kernel's break-even from the next bar on. Without
  ``move_to_be`` B keeps guarding the rest, as the kernel keeps the original stop.
* **a stop filled**: the stops of A and B share one level, the venue triggers both on the same
  trade, so both lists end with their stop filled. Should one stop have filled and the other
  list still rest (the venue's triggers are not one transaction), that list is cancelled
  (a leg that filled meanwhile is booked from the cancel's answer) and what is still held is
  sold at market (``close``, reason SL): nothing is sold twice, nothing is left.
* **time barrier**: at the open of bar ``entry + horizon_bars`` every list is cancelled (one
  cancel per list: ``DELETE /api/v3/orderList``) and a MARKET SELL (``time``) sells the rest.
* **stop already beyond**: a list refused because its stop would trigger at once (-2010 "Stop
  price would trigger immediately.") is the kernel's gap-through fill: the holding is sold at
  market right away (kind ``sl``, or ``be`` for B'). B' refused because TP2 would match at once
  (-2010 "Order would immediately match and take.": the bar opened above TP2) is the kernel's
  TP2 gap fill: sold at market (``tp2be``, reason TP2). Any other refusal, or a leg the venue
  reports cancelled / expired while its list should rest: logged, journalled, and the rest
  sold at market (``close``), never re-placed.
* **restart**: every leg is looked up by its client id (the journal gives the position, the
  venue the lists' states), the fills are booked once, and the step goes on from there:
  lists missing are placed, B replaced, the time barrier applied.
* **reconciliation**: spot's "position" is the base asset's balance (free + locked). At
  :meth:`SpotBroker.recover` it is compared with what the journal says ATRA holds: more at the
  venue is a balance ATRA does not own (``foreign_balance``: reported, never sold, never
  booked), less is a ``position_mismatch``.

Limits, said plainly: the STOP_LOSS legs are market orders once the last price trades at the
stop, so they fill at the stop or worse (slippage, gaps: the backtest charges ``slippage_bps``
there, a thin book can cost more); the LIMIT_MAKER legs never take liquidity (they fill at
their price or better, maker fee). Binance cannot amend an OCO, so the break-even move is a
cancel of B then a new list B': between the two requests (a few hundred milliseconds at the
bar's open) the rest of the holding has no stop; if B' cannot be placed then (the venue
unreachable), the rest stays unprotected until the next bar's step places it or sells it. The
fallback to one list for small positions gives up the TP1/TP2 split (the backtest keeps it).
Fees taken in the base asset make the holding smaller than the quantity bought: pay spot fees
in BNB (Binance's "use BNB for fees"), or the lists for the full quantity are refused for
balance. A partial fill of a take-profit makes Binance expire its stop leg: the broker sees the
expired leg at the next bar close and sells that list's rest at market (the fake exchange fills
whole orders only).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from atra.adapters.orders import AssetBalance, OrderApi, OrderState
from atra.adapters.trading.spot_wire import OcoRequest, OrderList, SpotRules
from atra.core.exits.api import ExitSpec
from atra.core.types import Timeframe
from atra.errors import ExchangeError, OrderRejected
from atra.live.bookkeeping import error_text, order_event
from atra.live.execution import ExchangeBroker
from atra.live.order_plan import (
    ENTRY,
    EXIT_KINDS,
    QTY_TOL,
    SPOT_LIST_KINDS,
    Track,
    round_step_nearest,
)
from atra.live.paper import OPEN, BrokerUpdate
from atra.live.spot_plan import LISTS, SPOT_STOPS, ListPlan, desired_lists, list_state, plan_lists
from atra.obs import get_logger

__all__ = ["OCO", "SpotBroker", "SpotOrderApi"]

OCO = "oco"
"""The kind whose client id names a position's (first) OCO order list."""
SPOT_EXIT_KINDS = (*EXIT_KINDS, *SPOT_LIST_KINDS)
"""Every exit kind a spot position may have at the venue (looked up after a restart)."""
MARKET_EXITS = frozenset({"time", "close"})
"""Market sells of the whole rest: what they did not sell is not sold again."""

log = get_logger("atra.live.spot_execution")


class SpotOrderApi(OrderApi, Protocol):
    """What a spot venue offers the spot broker: the order API plus OCO lists, balances and
    the spot filters (:class:`atra.adapters.trading.spot_trader.SpotTrader`)."""

    async def place_oco(self, oco: OcoRequest) -> tuple[OrderState, OrderState]: ...

    async def cancel_order_list(
        self, symbol: str, list_client_order_id: str
    ) -> OrderList | None: ...

    async def balances(self) -> Sequence[AssetBalance]: ...

    async def spot_rules(self, symbol: str) -> SpotRules: ...

    async def base_asset(self, symbol: str) -> str: ...


class SpotBroker(ExchangeBroker):
    """Real spot orders for one strategy's long positions (see the module docstring).
    ``symbols``: the symbols traded (their base balances are reconciled at recovery)."""

    def __init__(
        self,
        api: SpotOrderApi,
        spec: ExitSpec,
        *,
        strategy: str,
        run_id: str,
        timeframe: Timeframe,
        clock: Callable[[], float],
        symbols: Sequence[str] = (),
    ) -> None:
        super().__init__(
            api, spec, strategy=strategy, run_id=run_id, timeframe=timeframe, clock=clock
        )
        self.spot: SpotOrderApi = api
        self.symbols = tuple(symbols)
        self._reported: set[tuple[str, float]] = set()
        self._fallbacks: set[str] = set()  # positions whose split fell back (logged once)

    # ---- entry -------------------------------------------------------------------------------

    async def _place_entry(
        self, track: Track, out: BrokerUpdate, created_ms: int, next_open: int
    ) -> None:
        pos = track.pos
        if pos.side < 0:
            self.books.reject_entry(track, out, created_ms, "spot is long only: no margin shorts")
            return
        try:
            rules = await self.spot.spot_rules(pos.symbol)
        except OrderRejected as exc:
            self.books.reject_entry(track, out, created_ms, str(exc))
            return
        price = pos.entry_price or 0.0
        if price > 0.0 and pos.quantity * price < rules.min_notional:
            error = f"notional {pos.quantity * price:.8g} below the minimum {rules.min_notional}"
            self.books.reject_entry(track, out, created_ms, error)
            return
        await super()._place_entry(track, out, created_ms, next_open)

    # ---- exits -------------------------------------------------------------------------------

    async def _plan(self, track: Track) -> ListPlan:
        pos = track.pos
        plan = plan_lists(
            pos,
            await self.spot.spot_rules(pos.symbol),
            run_id=self.run_id,
            tp1_fraction=self.spec.tp1_fraction,
        )
        if plan.fallback is not None and pos.position_id not in self._fallbacks:
            self._fallbacks.add(pos.position_id)
            list_cid = plan.requests[OCO].list_client_order_id
            order_event(log.warning, "tp_split_fallback", pos.symbol, list_cid, OCO, OPEN,
                        qty=pos.quantity,
                        error=f"one OCO for the whole quantity: {plan.fallback}")  # fmt: skip
        return plan

    async def _manage_open(self, track: Track, out: BrokerUpdate, next_open: int) -> None:
        pos = track.pos
        plan = await self._plan(track)
        # 1) look up what may have changed (every leg, the first time after a restart)
        kinds = (
            SPOT_EXIT_KINDS
            if not track.synced
            else tuple(k for k, s in track.states.items() if k != ENTRY and not s.is_final)
        )
        for kind in kinds:
            st = await self.api.get_order(pos.symbol, self.books.cid(pos, kind))
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
        # 4) a stop filled while something is still held: end every list, sell the rest
        fired = [k for k in SPOT_STOPS if k in track.states and track.states[k].executed_qty > 0]
        if fired:
            order_event(log.warning, "stop_filled_rest_held", pos.symbol,
                        self.books.cid(pos, fired[0]), fired[0], OPEN,
                        qty=self.remaining(pos))  # fmt: skip
            await self._market_close(track, out, "close")
            return
        # 5) a list that should rest but ended without a fill: close
        desired = desired_lists(track.states, plan, move_to_be=self.spec.move_to_be)
        lost = [n for n in desired if list_state(track.states, n) in ("ended", "broken")]
        if lost:
            for name in lost:
                for kind in LISTS[name]:
                    st = track.states[kind]
                    if st.is_final:
                        order_event(log.error, "protective_order_lost", pos.symbol,
                                    st.client_order_id, kind, st.status)  # fmt: skip
            await self._market_close(track, out, "close")
            return
        # 6) cancel the lists that must not rest (B once B' replaces it), then place the
        # missing ones (idempotent: a known list is returned by its legs' client ids)
        await self._cancel_resting(track, out, keep=desired)
        if await self._settled(track, out):
            return
        for name in desired:
            placed = list_state(track.states, name) != "unplaced"
            if not placed and not await self._place_list(track, out, name, plan.requests[name]):
                return
        await self._settled(track, out)

    async def _place_list(
        self, track: Track, out: BrokerUpdate, name: str, planned: OcoRequest
    ) -> bool:
        """Place the list ``name`` for at most what is still held; False when a refusal
        ended the step (the rest sold at market)."""
        pos = track.pos
        rules = await self.spot.spot_rules(pos.symbol)
        held = self.remaining(pos) - sum(
            self._rest_qty(track, other) for other in LISTS if other != name
        )
        qty = round_step_nearest(min(planned.quantity, held), rules.step_size)
        oco = OcoRequest(
            pos.symbol,
            quantity=qty,
            take_price=planned.take_price,
            stop_price=planned.stop_price,
            take_client_order_id=planned.take_client_order_id,
            stop_client_order_id=planned.stop_client_order_id,
            list_client_order_id=planned.list_client_order_id,
        )
        take_kind, stop_kind = LISTS[name]
        try:
            legs = await self._place_oco(oco)
        except OrderRejected as exc:
            text = str(exc).lower()
            if "would trigger immediately" in text:
                order_event(log.warning, "stop_would_trigger", pos.symbol,
                            oco.stop_client_order_id, stop_kind, "rejected",
                            price=oco.stop_price)  # fmt: skip
                await self._market_close(track, out, stop_kind)
            elif name == "ocobe" and "would immediately match" in text:
                order_event(log.warning, "take_profit_would_match", pos.symbol,
                            oco.take_client_order_id, take_kind, "rejected",
                            price=oco.take_price)  # fmt: skip
                await self._market_close(track, out, take_kind)
            else:
                self.books.exit_refused(out, pos, "protective_order_rejected", stop_kind, qty, exc)
                await self._market_close(track, out, "close")
            return False
        for kind, st in zip(LISTS[name], legs, strict=True):
            self.books.note(out, track, kind, st)
        return True

    @staticmethod
    def _rest_qty(track: Track, name: str) -> float:
        """The quantity the list ``name`` still locks (0 unless a leg of it is open)."""
        if list_state(track.states, name) not in ("resting", "broken"):
            return 0.0
        return max(
            st.orig_qty - st.executed_qty
            for k in LISTS[name]
            if (st := track.states.get(k)) is not None and not st.is_final
        )

    async def _place_oco(self, oco: OcoRequest) -> tuple[OrderState, OrderState]:
        """Place ``oco``; a lost answer is retried once (the venue's list is found by its
        legs' client ids instead of a second list)."""
        try:
            return await self.spot.place_oco(oco)
        except OrderRejected:
            raise
        except ExchangeError as exc:
            order_event(log.warning, "order_outcome_unknown", oco.symbol,
                        oco.list_client_order_id, OCO, "unknown",
                        error=error_text(exc))  # fmt: skip
            return await self.spot.place_oco(oco)

    async def _cancel_resting(
        self, track: Track, out: BrokerUpdate, keep: Collection[str] = ()
    ) -> None:
        """Cancel the lists with an open leg, but those named in ``keep``: one
        ``DELETE /api/v3/orderList`` per list; its legs' final states (a leg that filled
        meanwhile included) are noted from the answer, or looked up when the answer has no
        time or the list was already done; a leg still open then (its list over: the other
        leg expired) is cancelled by itself."""
        pos = track.pos
        for name, legs in LISTS.items():
            if name in keep or list_state(track.states, name) not in ("resting", "broken"):
                continue
            listed = await self.spot.cancel_order_list(pos.symbol, self.books.cid(pos, name))
            reports = {} if listed is None else {r.client_order_id: r for r in listed.reports}
            for kind in legs:
                cid = self.books.cid(pos, kind)
                st = reports.get(cid)
                if st is None or st.update_time_ms == 0:
                    st = await self.api.get_order(pos.symbol, cid) or st
                if st is not None and not st.is_final:
                    st = await self.api.cancel_order(pos.symbol, cid) or st
                if st is not None:
                    self.books.note(out, track, kind, st)

    async def _settled(self, track: Track, out: BrokerUpdate) -> bool:
        """Book the exit fills; close the position once nothing is held any more (or a
        market sell of the rest is over): True then."""
        self.books.book_fills(track, out)
        pos = track.pos
        rest = pos.quantity - track.exit_qty
        if not track.booked or (
            rest > QTY_TOL * max(1.0, pos.quantity) and not MARKET_EXITS & set(track.booked)
        ):
            return False
        await self._close(track, out)
        return True

    # ---- reconciliation ----------------------------------------------------------------------

    async def recover(self) -> BrokerUpdate:
        """As on futures (pending entries, fills while down, lists put back, B replaced, the
        time barrier), then the base-asset balances against the journal
        (:meth:`reconcile_balances`) instead of a position endpoint."""
        out = BrokerUpdate()
        now_bar = self.books.bar(self.books.now_ms())
        for pos in self.positions():
            await self._advance(self.books.track(pos.position_id), out, now_bar)
        await self.reconcile_balances()
        await self._report_resting()
        return out

    async def _report_resting(self, symbol: str | None = None) -> None:
        """Report the venue's resting orders that are none of the managed positions' (the
        legs of the spot-only kinds are ours too)."""
        try:
            resting = await self.api.open_orders(symbol)
        except ExchangeError as exc:  # a report only
            log.warning("open_orders_unavailable", error=error_text(exc))
            return
        ours = {self.books.cid(p, k) for p in self.positions() for k in SPOT_LIST_KINDS}
        self.books.report_foreign([st for st in resting if st.client_order_id not in ours])

    async def reconcile_balances(self) -> dict[str, float]:
        """Compare each traded symbol's base balance (free + locked) with the quantity the
        journal says ATRA holds; return ``{symbol: foreign quantity}`` (the excess, left
        alone). A shortfall is logged ``position_mismatch``; a failed read is logged only."""
        held: dict[str, float] = {}
        for pos in self.positions():
            if pos.status == OPEN:
                held[pos.symbol] = held.get(pos.symbol, 0.0) + self.remaining(pos)
        symbols = sorted(set(self.symbols) | set(held))
        try:
            balances = {b.asset: b.balance for b in await self.spot.balances()}
            bases = {s: await self.spot.base_asset(s) for s in symbols}
        except ExchangeError as exc:
            log.warning("balances_unavailable", error=error_text(exc))
            return {}
        foreign: dict[str, float] = {}
        for symbol in symbols:
            ours, at_venue = held.get(symbol, 0.0), balances.get(bases[symbol], 0.0)
            tol = QTY_TOL * max(1.0, ours)
            if at_venue < ours - tol:
                order_event(log.warning, "position_mismatch", symbol, None, None, OPEN,
                            qty=at_venue,
                            error=f"journal holds {ours}, the account {at_venue}")  # fmt: skip
            elif at_venue > ours + tol:
                excess = at_venue - ours
                foreign[symbol] = excess
                if (symbol, excess) not in self._reported:
                    self._reported.add((symbol, excess))
                    order_event(log.warning, "foreign_balance", symbol, None, None, "unmanaged",
                                qty=excess, asset=bases[symbol])  # fmt: skip
        return foreign
