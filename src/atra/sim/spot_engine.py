"""A bar-driven spot matching engine: MARKET and LIMIT orders and SELL OCO lists (a
LIMIT_MAKER take-profit above, a STOP_LOSS below), over the account's asset balances.

The matching rules are the USDT-M engine's (:mod:`atra.sim.venue`), so a spot broker that
places the exit kernel's orders gets exactly the kernel's fills:

* Market time is passed in; bar ``b`` is closed once ``now_ms >= open_time[b] + step_ms``;
  every call first evaluates the bars closed since the previous one, in time order. An
  action at time ``tau`` happens at the open of the bar containing it (no bar: rejected).
* MARKET orders fill whole at that open moved adversely by ``slippage_bps``.
* Per bar: first the stops (STOP_LOSS: a SELL triggers when the low reaches the stop; it
  fills at the open when the bar opens below it, else at the stop; slippage, as a market
  order), then the take-profits (LIMIT / LIMIT_MAKER: at the open when the bar opens beyond
  the price, else at the price; no slippage). Resting fills carry the bar's open time.
* When one leg of an OCO fills, the other is EXPIRED and the list is ALL_DONE; cancelling one
  leg cancels the list. A LIMIT_MAKER that would match at once, or a STOP_LOSS that would
  trigger at once, is refused (-2010), as Binance does.
* Balances: ``free`` and ``locked`` per asset. A BUY spends the quote asset, a SELL the base
  asset; a resting SELL (a LIMIT, or an OCO: one lock for both legs) locks its base quantity.
  A BUY or SELL the free balance cannot pay is refused (-2010 "Account has insufficient
  balance for requested action."). No fee is taken from the balances (the fees are the
  strategy's bookkeeping, as if paid in BNB).

Symbols are ``{BASE}{QUOTE}`` with ``quote_asset`` (default USDT) as the quote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import pandas as pd

from atra.adapters.orders import ERR_CANCEL_UNKNOWN, FINAL_STATUSES, SymbolRules
from atra.errors import DataError
from atra.sim.book import BarMarket, SymbolBook, VenueReject, is_multiple

__all__ = ["ERR_SPOT_REJECTED", "SpotEngine", "SpotList", "SpotOrder"]

ERR_SPOT_REJECTED: Final[int] = -2010
ERR_FILTER: Final[int] = -1013
INSUFFICIENT: Final[str] = "Account has insufficient balance for requested action."
DUPLICATE: Final[str] = "Duplicate order sent."


@dataclass(slots=True)
class SpotOrder:
    """A spot order as the venue holds it (``type`` as Binance writes it)."""

    symbol: str
    cid: str
    order_id: int
    side: str
    type: str
    qty: float
    price: float
    stop_price: float
    status: str = "NEW"
    executed: float = 0.0
    quote: float = 0.0  # cummulativeQuoteQty
    update_ms: int = 0
    create_ms: int = 0
    list_cid: str | None = None
    list_id: int = -1


@dataclass(slots=True)
class SpotList:
    """An OCO order list: its legs (take-profit first) and status."""

    symbol: str
    cid: str
    list_id: int
    legs: list[SpotOrder] = field(default_factory=list)
    status: str = "EXECUTING"  # listOrderStatus; ALL_DONE once a leg filled or cancelled
    update_ms: int = 0


class SpotEngine(BarMarket[SpotOrder]):
    """Bar-driven spot matching over ``candles`` (symbol -> OHLCV frame), ``balances`` the
    starting ``{asset: free}`` (default: 10^9 of the quote asset)."""

    NAME = "spot engine"

    def __init__(
        self,
        candles: Mapping[str, pd.DataFrame],
        step_ms: int,
        *,
        slippage_bps: float = 0.0,
        rules: Mapping[str, SymbolRules] | None = None,
        balances: Mapping[str, float] | None = None,
        quote_asset: str = "USDT",
    ) -> None:
        self.quote_asset = quote_asset
        super().__init__(candles, step_ms, slippage_bps)
        self.rules = self._loose_rules()
        self.rules.update({s: r for s, r in (rules or {}).items() if s in self._books})
        start = {quote_asset: 1e9} if balances is None else dict(balances)
        self.free: dict[str, float] = dict(start)
        self.locked: dict[str, float] = dict.fromkeys(start, 0.0)
        self.orders: dict[str, SpotOrder] = {}
        self.lists: dict[str, SpotList] = {}

    def _load(self, symbol: str, frame: pd.DataFrame) -> SymbolBook:
        if not symbol.endswith(self.quote_asset) or symbol == self.quote_asset:
            raise DataError(f"spot engine: symbol {symbol} is not quoted in {self.quote_asset}")
        return super()._load(symbol, frame)

    # ---- time and prices -------------------------------------------------------------------

    def _open_now(self, symbol: str) -> float:
        book = self.book(symbol)
        b = self._bar_at(symbol, self._now_ms)
        if b is None:
            raise VenueReject(400, -1, f"no market for {symbol} at {self._now_ms}")
        return float(book.open[b])

    def book(self, symbol: str) -> SymbolBook:
        """``symbol``'s book; a symbol without candles is refused (-1121 Invalid symbol)."""
        return self._book_of(symbol)

    def base_of(self, symbol: str) -> str:
        self.book(symbol)
        return symbol[: -len(self.quote_asset)]

    # ---- balances --------------------------------------------------------------------------

    def _move(self, asset: str, free: float = 0.0, locked: float = 0.0) -> None:
        self.free[asset] = self.free.get(asset, 0.0) + free
        self.locked[asset] = self.locked.get(asset, 0.0) + locked
        for book in (self.free, self.locked):
            if abs(book[asset]) < 1e-12:
                book[asset] = 0.0

    def _need(self, asset: str, amount: float) -> None:
        if self.free.get(asset, 0.0) < amount * (1.0 - 1e-12):
            raise VenueReject(400, ERR_SPOT_REJECTED, INSUFFICIENT)

    # ---- orders ----------------------------------------------------------------------------

    def _check(self, symbol: str, cid: str, qty: float, prices: tuple[float, ...]) -> None:
        rules = self.rules[symbol]
        if cid in self.orders or cid in self.lists:
            raise VenueReject(400, ERR_SPOT_REJECTED, DUPLICATE)
        if not (math.isfinite(qty) and qty > 0.0) or not is_multiple(qty, rules.step_size):
            raise VenueReject(400, ERR_FILTER, "Filter failure: LOT_SIZE")
        if qty < rules.min_qty:
            raise VenueReject(400, ERR_FILTER, "Filter failure: LOT_SIZE")
        for p in prices:
            if not (math.isfinite(p) and p > 0.0) or not is_multiple(p, rules.tick_size):
                raise VenueReject(400, ERR_FILTER, "Filter failure: PRICE_FILTER")

    def _new(self, symbol: str, cid: str, side: str, type_: str, qty: float, price: float = 0.0,
             stop: float = 0.0) -> SpotOrder:  # fmt: skip
        o = SpotOrder(symbol, cid, self._next_id, side, type_, qty, price, stop,
                      update_ms=self._now_ms, create_ms=self._now_ms)  # fmt: skip
        self._next_id += 1
        return o

    def place(
        self, symbol: str, side: str, type_: str, cid: str, qty: float, price: float | None,
        now_ms: int,
    ) -> SpotOrder:  # fmt: skip
        """A MARKET or LIMIT (GTC) order; a refusal raises :class:`VenueReject`."""
        self.advance(now_ms)
        if side not in ("BUY", "SELL"):
            raise VenueReject(400, -1117, "Invalid side.")
        if type_ not in ("MARKET", "LIMIT"):
            raise VenueReject(400, -1116, "Invalid orderType.")
        if type_ == "LIMIT" and price is None:
            raise VenueReject(400, -1102, "Mandatory parameter 'price' was not sent.")
        self.book(symbol)
        self._check(symbol, cid, qty, () if price is None else (price,))
        current = self._open_now(symbol)
        base = self.base_of(symbol)
        sign = 1.0 if side == "BUY" else -1.0
        fill = current * (1.0 + sign * self.slippage)
        limit = float(price or 0.0)
        if side == "BUY":
            self._need(self.quote_asset, qty * (fill if type_ == "MARKET" else limit))
        else:
            self._need(base, qty)
        o = self._new(symbol, cid, side, type_, qty, limit)
        self.orders[cid] = o
        if type_ == "MARKET":
            self._fill(o, fill, self._now_ms)
        else:
            self._lock(o)
            self._resting[symbol].append(o)
        return o

    def place_oco(
        self, symbol: str, list_cid: str, qty: float, take_cid: str, take_price: float,
        stop_cid: str, stop_price: float, now_ms: int,
    ) -> SpotList:  # fmt: skip
        """A SELL OCO: LIMIT_MAKER at ``take_price`` above, STOP_LOSS at ``stop_price``
        below, both for ``qty`` (one lock)."""
        self.advance(now_ms)
        self.book(symbol)
        for cid in (take_cid, stop_cid):
            self._check(symbol, cid, qty, (take_price, stop_price))
        if take_cid == stop_cid:
            raise VenueReject(400, ERR_SPOT_REJECTED, DUPLICATE)
        current = self._open_now(symbol)
        if take_price <= current:
            raise VenueReject(400, ERR_SPOT_REJECTED, "Order would immediately match and take.")
        if stop_price >= current:
            raise VenueReject(400, ERR_SPOT_REJECTED, "Stop price would trigger immediately.")
        self._need(self.base_of(symbol), qty)
        listed = SpotList(symbol, list_cid, self._next_id, update_ms=self._now_ms)
        self._next_id += 1
        take = self._new(symbol, take_cid, "SELL", "LIMIT_MAKER", qty, take_price)
        stop = self._new(symbol, stop_cid, "SELL", "STOP_LOSS", qty, 0.0, stop_price)
        for leg in (take, stop):
            leg.list_cid, leg.list_id = list_cid, listed.list_id
            self.orders[leg.cid] = leg
            self._resting[symbol].append(leg)
            listed.legs.append(leg)
        self.lists[list_cid] = listed
        self._move(self.base_of(symbol), free=-qty, locked=qty)
        return listed

    def _lock(self, o: SpotOrder) -> None:
        if o.side == "SELL":
            self._move(self.base_of(o.symbol), free=-o.qty, locked=o.qty)
        else:
            self._move(self.quote_asset, free=-o.qty * o.price, locked=o.qty * o.price)

    def _unlock(self, o: SpotOrder) -> None:
        """Release what a resting order (or its whole list) locked."""
        if o.side == "SELL":
            self._move(self.base_of(o.symbol), free=o.qty, locked=-o.qty)
        else:
            self._move(self.quote_asset, free=o.qty * o.price, locked=-o.qty * o.price)

    def cancel(self, symbol: str, cid: str, now_ms: int) -> SpotOrder:
        """Cancel an open order (one leg of an OCO: the whole list); unknown or final: -2011."""
        self.advance(now_ms)
        self.book(symbol)
        o = self.orders.get(cid)
        if o is None or o.symbol != symbol or o.status in FINAL_STATUSES:
            raise VenueReject(400, ERR_CANCEL_UNKNOWN, "Unknown order sent.")
        if o.list_cid is not None:
            self.cancel_list(symbol, o.list_cid, now_ms)
            return o
        self._end(o, "CANCELED")
        self._unlock(o)
        return o

    def cancel_list(self, symbol: str, list_cid: str, now_ms: int) -> SpotList:
        """Cancel an executing OCO (both legs CANCELED); unknown or done: -2011."""
        self.advance(now_ms)
        listed = self.lists.get(list_cid)
        if listed is None or listed.symbol != symbol or listed.status != "EXECUTING":
            raise VenueReject(400, ERR_CANCEL_UNKNOWN, "Unknown order sent.")
        for leg in listed.legs:
            self._end(leg, "CANCELED")
        self._unlock(listed.legs[0])
        listed.status, listed.update_ms = "ALL_DONE", self._now_ms
        return listed

    def _end(self, o: SpotOrder, status: str) -> None:
        o.status, o.update_ms = status, self._now_ms
        if o in self._resting[o.symbol]:
            self._resting[o.symbol].remove(o)

    def get(self, symbol: str, cid: str, now_ms: int | None = None) -> SpotOrder | None:
        if now_ms is not None:
            self.advance(now_ms)
        o = self.orders.get(cid)
        return o if o is not None and o.symbol == symbol else None

    def get_list(self, list_cid: str, now_ms: int | None = None) -> SpotList | None:
        """The order list ``list_cid`` (None: unknown)."""
        if now_ms is not None:
            self.advance(now_ms)
        return self.lists.get(list_cid)

    def open_orders(self, symbol: str | None = None, now_ms: int | None = None) -> list[SpotOrder]:
        if now_ms is not None:
            self.advance(now_ms)
        if symbol is not None:
            self.book(symbol)
        found = [o for s, rest in self._resting.items() if symbol in (None, s) for o in rest]
        return sorted(found, key=lambda o: o.order_id)

    # ---- matching --------------------------------------------------------------------------

    def _evaluate(self, symbol: str, b: int) -> None:
        book = self._books[symbol]
        o_, h, lo = float(book.open[b]), float(book.high[b]), float(book.low[b])
        t = int(book.times[b])
        resting = self._resting[symbol]
        stops = sorted((o for o in resting if o.type == "STOP_LOSS"),
                       key=lambda o: (max(0.0, o_ - o.stop_price), o.order_id))  # fmt: skip
        for o in stops:
            if o.status != "NEW":
                continue  # its list ended on this bar
            if o_ <= o.stop_price or lo <= o.stop_price:
                price = o_ if o_ <= o.stop_price else o.stop_price
                self._fill(o, price * (1.0 - self.slippage), t)
        takes = sorted((o for o in self._resting[symbol] if o.type != "STOP_LOSS"),
                       key=lambda o: (max(0.0, (o.price - o_) if o.side == "SELL"
                                          else (o_ - o.price)), o.order_id))  # fmt: skip
        for o in takes:
            if o.status != "NEW":
                continue
            if o.side == "SELL":
                price = o_ if o_ >= o.price else o.price if h >= o.price else math.nan
            else:
                price = o_ if o_ <= o.price else o.price if lo <= o.price else math.nan
            if not math.isnan(price):
                self._fill(o, price, t)

    def _fill(self, o: SpotOrder, price: float, t_ms: int) -> None:
        base = self.base_of(o.symbol)
        resting = o in self._resting[o.symbol]
        if resting:
            self._resting[o.symbol].remove(o)
        if o.side == "BUY":
            locked = o.qty * o.price if resting else 0.0
            self._move(self.quote_asset, free=locked - o.qty * price, locked=-locked)
            self._move(base, free=o.qty)
        else:
            self._move(base, free=0.0 if resting else -o.qty, locked=-o.qty if resting else 0.0)
            self._move(self.quote_asset, free=o.qty * price)
        o.executed, o.quote, o.status, o.update_ms = o.qty, o.qty * price, "FILLED", t_ms
        if o.list_cid is not None:
            listed = self.lists[o.list_cid]
            for leg in listed.legs:
                if leg is not o and leg.status == "NEW":
                    leg.status, leg.update_ms = "EXPIRED", t_ms
                    self._resting[o.symbol].remove(leg)
            listed.status, listed.update_ms = "ALL_DONE", t_ms
