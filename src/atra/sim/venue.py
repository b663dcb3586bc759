"""A bar-driven USDT-M futures matching engine (one-way mode) and an in-process venue over it.

:class:`MatchingEngine` fills orders against OHLC candles with the exit kernel's rules
(:mod:`atra.core.exits`), so a broker that places the kernel's orders (MARKET entry, SL stop,
TP limits, time-barrier MARKET exit) gets exactly the kernel's fills:

* Market time is passed in (``now_ms``); every public method first calls :meth:`advance`.
  Bar ``b`` of a symbol is *closed* once ``now_ms >= open_time[b] + step_ms``; ``advance``
  evaluates every bar closed since the previous call, in time order, against the orders
  resting on it.
* An action at time ``tau`` belongs to the bar containing ``tau`` and counts as happening at
  that bar's open: an order placed in bar ``b`` is evaluated on ``b`` and later bars, an
  order cancelled in bar ``c`` is not evaluated on ``c``. No bar contains ``tau`` (a gap in
  the data, before the first or after the last bar): the placement is rejected.
* MARKET orders fill at once, whole, at the open of the bar containing ``tau`` moved
  adversely by ``slippage_bps``.
* Per bar: first the stops (STOP_MARKET; fill at the open when the bar opens beyond the stop,
  else at the stop; slippage), then the take-profits (LIMIT, no slippage; TAKE_PROFIT_MARKET,
  slippage) nearest to the open first along the price path; a LIMIT fills at the open when
  the bar opens beyond its price (the better price), else at its price. Resting fills carry the
  bar's open time.
* Positions are net per symbol with an average entry price. Reduce-only orders never grow
  ``|position|``: one larger than the position fills for the position only (its ``orig_qty``
  is reduced to that, as Binance does); with no position to reduce it is EXPIRED.
  ``close_position`` orders close the whole position (EXPIRED when flat).
* A marketable LIMIT is not filled at placement: it fills when the bar closes, at the open.
* Two services, as on Binance since 2025-12-09: :meth:`MatchingEngine.place` takes MARKET and
  LIMIT orders and refuses the conditional types with -4120 ("Please use the Algo Order API
  endpoints instead."); :meth:`MatchingEngine.place_algo` takes STOP_MARKET and
  TAKE_PROFIT_MARKET algo orders (``algoStatus`` NEW). An algo order rests and is evaluated
  exactly as a stop order was: when it triggers it puts a MARKET order with its client id and
  flags (reduce-only, close-position) in the matching engine, filled at the trigger price of
  the rules above, and becomes FINISHED with that order as ``actualOrderId``. Algo orders are
  queried, cancelled and listed apart (:meth:`MatchingEngine.get_algo`,
  :meth:`MatchingEngine.cancel_algo`, :meth:`MatchingEngine.open_algo_orders`); ``algoId`` and
  order ids come from one counter.

:class:`~atra.sim.local_venue.LocalVenue` serves the :class:`~atra.adapters.orders.OrderApi`
protocol over an engine and a clock, in process (broker tests). The engine's records (books,
orders, fills, refusals) and its placement checks are in :mod:`atra.sim.book`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from atra.adapters.orders import (
    ALGO_ONLY_MSG,
    ERR_ALGO_ONLY,
    ERR_CANCEL_UNKNOWN,
    ERR_DUPLICATE_ORDER,
    ERR_REDUCE_ONLY_REJECT,
    ERR_WOULD_TRIGGER,
    FINAL_STATUSES,
    AlgoState,
    OrderRequest,
    OrderState,
    SymbolRules,
    VenuePosition,
    is_conditional,
)
from atra.errors import DataError
from atra.sim.book import (
    ERR_INVALID_SYMBOL,
    REL_TOL,
    STOP_TYPES,
    BarMarket,
    Fill,
    VenueOrder,
    VenueReject,
    check_order,
    side_sign,
    trigger_distance,
)

__all__ = ["ERR_INVALID_ORDER_TYPE", "ERR_INVALID_SYMBOL", "ERR_NO_MARKET", "MatchingEngine"]

ERR_NO_MARKET: Final[int] = -1
ERR_INVALID_ORDER_TYPE: Final[int] = -1116


class MatchingEngine(BarMarket[VenueOrder]):
    """Bar-driven matching over ``candles`` (symbol -> OHLCV frame of bars ``step_ms`` long).

    ``rules`` default to ``SymbolRules(symbol, step_size=1e-9, min_qty=0.0, tick_size=1e-9)``.
    Quantities must be multiples of the step and prices of the tick (within 1e-9 relative).
    """

    def __init__(
        self,
        candles: Mapping[str, pd.DataFrame],
        step_ms: int,
        *,
        slippage_bps: float = 0.0,
        rules: Mapping[str, SymbolRules] | None = None,
    ) -> None:
        super().__init__(candles, step_ms, slippage_bps)
        self._rules = self._loose_rules()
        for symbol, rule in (rules or {}).items():
            if symbol not in self._books:
                raise DataError(f"matching engine: rules for {symbol}, which has no candles")
            self._rules[symbol] = rule
        self._orders: dict[str, VenueOrder] = {}  # every order ever placed, by client id
        self._by_id: dict[int, VenueOrder] = {}  # the same, by order id
        self._algos: dict[str, VenueOrder] = {}  # every algo order ever placed, by client id
        self.fills: list[Fill] = []

    # ---- time ----------------------------------------------------------------------------

    def last_price(self, symbol: str, now_ms: int | None = None) -> float:
        """The open of the bar containing now, else the close of the last closed bar, else 0."""
        book = self._book_of(symbol)
        if now_ms is not None:
            self.advance(now_ms)
        b = self._bar_at(symbol, self._now_ms)
        if b is not None:
            return float(book.open[b])
        closed = int(np.searchsorted(book.times, self._now_ms - self.step_ms, side="right"))
        return float(book.close[closed - 1]) if closed > 0 else 0.0

    # ---- orders ----------------------------------------------------------------------------

    def place(self, order: OrderRequest, now_ms: int) -> OrderState:
        """Place a MARKET or LIMIT ``order`` at ``now_ms``; a refusal raises
        :class:`VenueReject` (a conditional type: -4120, it belongs to :meth:`place_algo`)."""
        if is_conditional(order.type):
            raise VenueReject(400, ERR_ALGO_ONLY, ALGO_ONLY_MSG)
        return self._place(order, now_ms, algo=False).state()

    def place_algo(self, order: OrderRequest, now_ms: int) -> AlgoState:
        """Place a STOP_MARKET / TAKE_PROFIT_MARKET algo order (``algoStatus`` NEW) at
        ``now_ms``; a refusal raises :class:`VenueReject` (the other conditional types are not
        modelled: -1116)."""
        if order.type not in STOP_TYPES:
            raise VenueReject(400, ERR_INVALID_ORDER_TYPE, "Invalid orderType.")
        return self._place(order, now_ms, algo=True).algo_state()

    def _place(self, order: OrderRequest, now_ms: int, *, algo: bool) -> VenueOrder:
        self.advance(now_ms)
        tau = self._now_ms
        symbol = order.symbol
        book = self._book_of(symbol)
        rules = self._rules[symbol]
        cid = order.client_order_id
        if cid in self._orders or cid in self._algos:
            raise VenueReject(400, ERR_DUPLICATE_ORDER, "ClientOrderId is duplicated.")
        check_order(order, rules, "triggerPrice" if algo else "stopPrice")
        bar = self._bar_at(symbol, tau)
        if bar is None:
            raise VenueReject(400, ERR_NO_MARKET, f"no market for {symbol} at {tau}")
        current = float(book.open[bar])
        sign = side_sign(order.side)
        if order.type == "MARKET" and order.reduce_only and book.position * sign >= 0.0:
            raise VenueReject(400, ERR_REDUCE_ONLY_REJECT, "ReduceOnly Order is rejected.")
        if order.type in STOP_TYPES:
            stop = float(order.stop_price or 0.0)
            # a stop triggers when price moves against the order's side through it, a
            # take-profit when price moves with it
            up = (order.side == "BUY") == (order.type == "STOP_MARKET")
            if (up and stop <= current) or (not up and stop >= current):
                raise VenueReject(400, ERR_WOULD_TRIGGER, "Order would immediately trigger.")
        o = VenueOrder(
            symbol=symbol,
            cid=cid,
            order_id=self._take_id(),
            side=order.side,
            type=order.type,
            qty=float(order.quantity or 0.0),
            price=float(order.price or 0.0) if order.type == "LIMIT" else 0.0,
            stop_price=float(order.stop_price or 0.0) if order.type in STOP_TYPES else 0.0,
            reduce_only=bool(order.reduce_only),
            close_position=bool(order.close_position),
            status="NEW",
            executed=0.0,
            avg_price=0.0,
            update_ms=tau,
            algo_status="NEW" if algo else None,
            create_ms=tau,
        )
        if algo:
            self._algos[cid] = o
        else:
            self._register(o)
        if order.type == "MARKET":
            self._fill(o, current * (1.0 + sign * self.slippage), tau)
        else:
            self._resting[symbol].append(o)
        return o

    def _take_id(self) -> int:
        """The next order id (algo ids and order ids share the counter)."""
        self._next_id += 1
        return self._next_id - 1

    def _register(self, o: VenueOrder) -> None:
        self._orders[o.cid] = o
        self._by_id[o.order_id] = o

    def cancel(self, symbol: str, client_order_id: str, now_ms: int) -> OrderState:
        """Cancel an open order; unknown or already final -> ``VenueReject(-2011)``."""
        self.advance(now_ms)
        self._book_of(symbol)
        o = self._orders.get(client_order_id)
        if o is None or o.symbol != symbol or o.status in FINAL_STATUSES:
            raise VenueReject(400, ERR_CANCEL_UNKNOWN, "Unknown order sent.")
        o.status = "CANCELED"
        o.update_ms = self._now_ms
        self._resting[symbol].remove(o)
        return o.state()

    def get(
        self, symbol: str, client_order_id: str, now_ms: int | None = None
    ) -> OrderState | None:
        """The order's state (open or final), None when unknown. A triggered algo order's
        MARKET order carries its client id: it is found here too."""
        if now_ms is not None:
            self.advance(now_ms)
        o = self._orders.get(client_order_id)
        return o.state() if o is not None and o.symbol == symbol else None

    def get_by_id(self, symbol: str, order_id: int, now_ms: int | None = None) -> OrderState | None:
        """The state of the order with ``order_id`` (``GET /fapi/v1/order?orderId=``)."""
        if now_ms is not None:
            self.advance(now_ms)
        o = self._by_id.get(order_id)
        return o.state() if o is not None and o.symbol == symbol else None

    def get_algo(self, client_algo_id: str, now_ms: int | None = None) -> AlgoState | None:
        """The algo order's state (by ``clientAlgoId``, of any symbol), None when unknown."""
        if now_ms is not None:
            self.advance(now_ms)
        o = self._algos.get(client_algo_id)
        return o.algo_state() if o is not None else None

    def algo_client_id(self, algo_id: int) -> str | None:
        """The ``clientAlgoId`` of the algo order ``algo_id`` (None when unknown)."""
        return next((o.cid for o in self._algos.values() if o.order_id == algo_id), None)

    def cancel_algo(self, client_algo_id: str, now_ms: int) -> AlgoState:
        """Cancel an algo order not triggered yet; unknown or no longer NEW ->
        ``VenueReject(-2011)``."""
        self.advance(now_ms)
        o = self._algos.get(client_algo_id)
        if o is None or o.algo_status != "NEW":
            raise VenueReject(400, ERR_CANCEL_UNKNOWN, "Unknown order sent.")
        o.algo_status = "CANCELED"
        o.update_ms = self._now_ms
        self._resting[o.symbol].remove(o)
        return o.algo_state()

    def open_algo_orders(
        self, symbol: str | None = None, now_ms: int | None = None
    ) -> list[AlgoState]:
        """Algo orders not triggered yet, of ``symbol`` or of every symbol, oldest first."""
        if now_ms is not None:
            self.advance(now_ms)
        if symbol is not None:
            self._book_of(symbol)
        found = [
            o.algo_state()
            for o in self._algos.values()
            if o.algo_status == "NEW" and (symbol is None or o.symbol == symbol)
        ]
        return sorted(found, key=lambda a: a.algo_id)

    def open_orders(self, symbol: str | None = None, now_ms: int | None = None) -> list[OrderState]:
        """Matching-engine orders still resting (never an algo order), of ``symbol`` or of
        every symbol, oldest first."""
        if now_ms is not None:
            self.advance(now_ms)
        if symbol is not None:
            self._book_of(symbol)
        found = [
            o.state()
            for s, orders in self._resting.items()
            if symbol is None or s == symbol
            for o in orders
            if o.algo_status is None
        ]
        return sorted(found, key=lambda st: st.order_id)

    def positions(self, now_ms: int | None = None) -> list[VenuePosition]:
        """Non-zero net positions, by symbol."""
        if now_ms is not None:
            self.advance(now_ms)
        return [self.position(s) for s in sorted(self._books) if self._books[s].position != 0.0]

    def position(self, symbol: str) -> VenuePosition:
        """The net position of ``symbol`` (quantity 0.0 when flat)."""
        book = self._book_of(symbol)
        return VenuePosition(symbol, book.position, book.entry_price)

    def rules(self, symbol: str) -> SymbolRules:
        self._book_of(symbol)
        return self._rules[symbol]

    # ---- matching --------------------------------------------------------------------------

    def _evaluate(self, symbol: str, b: int) -> None:
        book = self._books[symbol]
        o_, h, lo = float(book.open[b]), float(book.high[b]), float(book.low[b])
        t = int(book.times[b])
        resting = self._resting[symbol]
        stops = [o for o in resting if o.type == "STOP_MARKET"]
        takes = [o for o in resting if o.type != "STOP_MARKET"]
        # nearest first along the price path; orders the open already passed first (distance
        # 0), ties in placement order
        for group in (stops, takes):
            group.sort(key=lambda o: (max(0.0, trigger_distance(o, o_)), o.order_id))
        for o in stops:
            level = o.stop_price
            if o.side == "SELL":
                price = o_ if o_ <= level else level if lo <= level else math.nan
            else:
                price = o_ if o_ >= level else level if h >= level else math.nan
            if not math.isnan(price):
                self._trigger(o, price * (1.0 + side_sign(o.side) * self.slippage), t)
        for o in takes:
            level = o.price if o.type == "LIMIT" else o.stop_price
            if o.side == "SELL":
                price = o_ if o_ >= level else level if h >= level else math.nan
            else:
                price = o_ if o_ <= level else level if lo <= level else math.nan
            if math.isnan(price):
                continue
            if o.type == "TAKE_PROFIT_MARKET":
                price = price * (1.0 + side_sign(o.side) * self.slippage)
            self._trigger(o, price, t)

    def _trigger(self, o: VenueOrder, price: float, t_ms: int) -> None:
        self._resting[o.symbol].remove(o)
        if o.algo_status is None:
            self._fill(o, price, t_ms)
            return
        # an algo order puts its MARKET order in the matching engine, filled at ``price``
        child = VenueOrder(
            symbol=o.symbol,
            cid=o.cid,
            order_id=self._take_id(),
            side=o.side,
            type="MARKET",
            qty=o.qty,
            price=0.0,
            stop_price=0.0,
            reduce_only=o.reduce_only,
            close_position=o.close_position,
            status="NEW",
            executed=0.0,
            avg_price=0.0,
            update_ms=t_ms,
        )
        self._register(child)
        self._fill(child, price, t_ms)
        o.child = child
        o.algo_status = "FINISHED"
        o.update_ms = t_ms

    def _fill(self, o: VenueOrder, price: float, t_ms: int) -> None:
        book = self._books[o.symbol]
        pos = book.position
        sign = side_sign(o.side)
        qty = o.qty
        if o.reduce_only or o.close_position:
            if pos * sign >= 0.0:  # flat, or the order would grow the position
                o.status = "EXPIRED"
                o.update_ms = t_ms
                return
            qty = abs(pos) if o.close_position else min(qty, abs(pos))
            if not o.close_position:
                o.qty = qty
        new = pos + sign * qty
        if abs(new) <= REL_TOL * max(abs(pos), qty):
            new = 0.0
        if new == 0.0:
            book.entry_price = 0.0
        elif pos == 0.0 or (pos > 0.0) == (sign > 0):
            book.entry_price = (abs(pos) * book.entry_price + qty * price) / abs(new)
        elif (new > 0.0) != (pos > 0.0):  # flipped through zero: the rest opened at price
            book.entry_price = price
        book.position = new
        o.executed = qty
        o.avg_price = price
        o.status = "FILLED"
        o.update_ms = t_ms
        self.fills.append(Fill(o.cid, t_ms, price, qty))
