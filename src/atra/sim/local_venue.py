"""The :class:`~atra.adapters.orders.OrderApi` in process: :class:`LocalVenue` over a
:class:`~atra.sim.venue.MatchingEngine` and a market clock (broker tests).

It routes like the signed client (:class:`atra.adapters.trading.trader.BinanceTrader`): a
conditional order to the engine's algo service, MARKET / LIMIT to its matching engine, and
reports algo orders through :func:`atra.adapters.orders.conditional_state` with the fill of the
order they triggered. A refusal raises :class:`atra.errors.OrderRejected` naming the Binance
code, as over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from atra.adapters.orders import (
    ERR_CANCEL_UNKNOWN,
    ERR_DUPLICATE_ORDER,
    AlgoState,
    OrderRequest,
    OrderState,
    SymbolRules,
    VenuePosition,
    conditional_state,
    is_conditional,
)
from atra.errors import ExchangeError, OrderRejected
from atra.sim.book import VenueReject
from atra.sim.venue import MatchingEngine

__all__ = ["LocalVenue"]


class LocalVenue:
    """The :class:`~atra.adapters.orders.OrderApi` in process: ``engine`` at ``clock()``
    seconds (market time). A refused order raises :class:`atra.errors.OrderRejected`."""

    def __init__(self, engine: MatchingEngine, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _view(self, algo: AlgoState) -> OrderState:
        order = None
        if algo.needs_order:
            assert algo.actual_order_id is not None  # needs_order says so
            order = self.engine.get_by_id(algo.symbol, algo.actual_order_id)
        return conditional_state(algo, order, f"local algo order {algo.client_algo_id}")

    async def place_order(self, order: OrderRequest) -> OrderState:
        now = self._now_ms()
        conditional = is_conditional(order.type)
        try:
            if conditional:
                return self._view(self.engine.place_algo(order, now))
            return self.engine.place(order, now)
        except VenueReject as rej:
            if rej.code == ERR_DUPLICATE_ORDER:
                known = await self.get_order(
                    order.symbol, order.client_order_id, conditional=conditional
                )
                if known is not None:
                    return known
            raise OrderRejected(
                f"{order.symbol} {order.type} {order.client_order_id}: "
                f"Binance error {rej.code}: {rej.msg}"
            ) from None

    async def get_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        if not conditional:
            return self.engine.get(symbol, client_order_id, self._now_ms())
        algo = self.engine.get_algo(client_order_id, self._now_ms())
        if algo is None:
            return None
        if algo.symbol != symbol:
            raise ExchangeError(f"algo order {client_order_id} is on {algo.symbol}, not {symbol}")
        return self._view(algo)

    async def cancel_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        now = self._now_ms()
        try:
            if conditional:
                self.engine.cancel_algo(client_order_id, now)
                return await self.get_order(symbol, client_order_id, conditional=True)
            return self.engine.cancel(symbol, client_order_id, now)
        except VenueReject as rej:
            if rej.code != ERR_CANCEL_UNKNOWN:
                raise OrderRejected(
                    f"{symbol} cancel {client_order_id}: Binance error {rej.code}: {rej.msg}"
                ) from None
            return await self.get_order(symbol, client_order_id, conditional=conditional)

    async def open_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        try:
            return self.engine.open_orders(symbol, self._now_ms())
        except VenueReject as rej:
            raise OrderRejected(
                f"open orders {symbol}: Binance error {rej.code}: {rej.msg}"
            ) from None

    async def open_conditional_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        try:
            return [self._view(a) for a in self.engine.open_algo_orders(symbol, self._now_ms())]
        except VenueReject as rej:
            raise OrderRejected(
                f"open algo orders {symbol}: Binance error {rej.code}: {rej.msg}"
            ) from None

    async def positions(self) -> Sequence[VenuePosition]:
        return self.engine.positions(self._now_ms())

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        try:
            return self.engine.rules(symbol)
        except VenueReject as rej:
            raise OrderRejected(f"rules {symbol}: Binance error {rej.code}: {rej.msg}") from None
