"""Signed Binance spot orders: :class:`SpotTrader` serves
:class:`atra.adapters.orders.OrderApi` over an open spot
:class:`~atra.adapters.exchange.client.BinanceClient`, plus what only spot has: the OCO order
list (:meth:`SpotTrader.place_oco`) and the account's asset balances.

Endpoints (weights in the client's shared bucket): ``POST /api/v3/order`` (1),
``GET /api/v3/order`` (4), ``DELETE /api/v3/order`` (1), ``GET /api/v3/openOrders`` (6 with a
symbol, 80 without), ``POST /api/v3/orderList/oco`` (1), ``GET /api/v3/orderList`` (4),
``DELETE /api/v3/orderList`` (1), ``GET /api/v3/account`` (20), ``GET /api/v3/exchangeInfo``
(20, once).

Idempotence is the futures trader's (:mod:`atra.adapters.trading.trader`): a POST is never
blindly retried. When its answer is lost the order is looked up by its client id (an OCO by
its legs' client ids) and returned when the venue has it; only when the venue does not know
the id is the POST sent again, with the same id. An HTTP 200 whose body is not a readable
order (or order list) means the venue took it: it is looked up, never POSTed again.
``-2010`` with "Duplicate order sent." or a duplicate ``listClientOrderId`` is answered by
the lookup too.

Spot has no position endpoint: :meth:`SpotTrader.positions` is empty (a spot broker
reconciles the base-asset balances of :meth:`SpotTrader.balances` with its journal instead),
and there are no conditional orders apart from the matching engine's
(:meth:`SpotTrader.open_conditional_orders` is empty: a STOP_LOSS leg is an ordinary open
order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Unpack

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.orders import (
    ERR_CANCEL_UNKNOWN,
    ERR_UNKNOWN_ORDER,
    AssetBalance,
    OrderRequest,
    OrderState,
    SymbolRules,
    VenuePosition,
)
from atra.adapters.trading.signed import SessionArgs, SignedSession, msg, unlisted
from atra.adapters.trading.spot_wire import (
    OcoRequest,
    OrderList,
    SpotRules,
    oco_params,
    parse_account,
    parse_order_list,
    parse_spot_filters,
    parse_spot_order,
    parse_spot_orders,
    spot_order_params,
)
from atra.adapters.trading.wire import describe
from atra.core.types import Market
from atra.errors import ExchangeError, OrderRejected
from atra.obs import get_logger

__all__ = [
    "OCO_PATH",
    "SPOT_ACCOUNT_PATH",
    "SPOT_ORDER_PATH",
    "SpotTrader",
]

SPOT_ORDER_PATH: Final[str] = "/api/v3/order"
SPOT_OPEN_ORDERS_PATH: Final[str] = "/api/v3/openOrders"
OCO_PATH: Final[str] = "/api/v3/orderList/oco"
ORDER_LIST_PATH: Final[str] = "/api/v3/orderList"
SPOT_ACCOUNT_PATH: Final[str] = "/api/v3/account"
SPOT_EXCHANGE_INFO_PATH: Final[str] = "/api/v3/exchangeInfo"
ERR_SPOT_REJECTED: Final[int] = -2010
"""Spot's "new order rejected" (duplicate client id, would trigger / match at once, balance)."""
_DUPLICATE: Final[str] = "duplicate"


class SpotTrader(SignedSession):
    """The order API of one Binance spot account over an open spot :class:`BinanceClient`."""

    MARKET = Market.SPOT

    LOG = get_logger("atra.adapters.trading.spot")

    def __init__(self, client: BinanceClient, **session: Unpack[SessionArgs]) -> None:
        super().__init__(client, **session)
        self._rules: dict[str, SpotRules] = {}
        self._bases: dict[str, str] = {}

    # ---- placing ---------------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderState:
        """``POST /api/v3/order`` (MARKET or LIMIT); a known client id returns that order."""
        params = spot_order_params(order, self._rules.get(order.symbol))

        async def lookup() -> OrderState | None:
            return await self.get_order(order.symbol, order.client_order_id)

        async def read(body: object, where: str) -> OrderState:
            return parse_spot_order(body, where)

        head = f"{order.symbol} {order.type} {order.client_order_id}"
        cid = order.client_order_id
        return await self._place(
            head, cid, SPOT_ORDER_PATH, params, 1, read, lookup, symbol=order.symbol
        )

    async def place_oco(self, oco: OcoRequest) -> tuple[OrderState, OrderState]:
        """``POST /api/v3/orderList/oco``: ``(take-profit leg, stop leg)`` states. A list the
        venue already has (by its legs' client ids) is returned, never placed twice."""
        params = oco_params(oco, self._rules.get(oco.symbol))

        async def lookup() -> tuple[OrderState, OrderState] | None:
            take = await self.get_order(oco.symbol, oco.take_client_order_id)
            stop = await self.get_order(oco.symbol, oco.stop_client_order_id)
            return None if take is None or stop is None else (take, stop)

        async def read(body: object, where: str) -> tuple[OrderState, OrderState]:
            listed = parse_order_list(body, where)
            return _legs(listed, oco, where)

        head = f"{oco.symbol} OCO {oco.list_client_order_id}"
        cid = oco.list_client_order_id
        return await self._place(head, cid, OCO_PATH, params, 1, read, lookup, symbol=oco.symbol)

    def _is_duplicate(self, code: int, body: object) -> bool:
        return code == ERR_SPOT_REJECTED and _DUPLICATE in msg(body).lower()

    # ---- looking up and cancelling ---------------------------------------------------------

    async def get_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        """``GET /api/v3/order`` by client id (``conditional`` is ignored: spot has no
        separate conditional service); None when the venue does not know it (-2013)."""
        params: dict[str, str | int] = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._read("GET", SPOT_ORDER_PATH, params, 4)
        if code == ERR_UNKNOWN_ORDER:
            return None
        ok = self._ok(code, body, "GET", SPOT_ORDER_PATH, params)
        return parse_spot_order(ok, describe("GET", SPOT_ORDER_PATH, params))

    async def cancel_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        """``DELETE /api/v3/order``. Cancelling one leg of an OCO cancels the whole list (as
        Binance does). ``-2011`` (unknown or already final) is answered by the order's state."""
        params: dict[str, str | int] = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._read("DELETE", SPOT_ORDER_PATH, params, 1)
        if code == ERR_CANCEL_UNKNOWN:
            return await self.get_order(symbol, client_order_id)
        ok = self._ok(code, body, "DELETE", SPOT_ORDER_PATH, params, refusal=OrderRejected)
        state = parse_spot_order(ok, describe("DELETE", SPOT_ORDER_PATH, params))
        if state.update_time_ms == 0:  # an answer without its time: the query has it
            return await self.get_order(symbol, client_order_id) or state
        return state

    async def cancel_order_list(self, symbol: str, list_client_order_id: str) -> OrderList | None:
        """``DELETE /api/v3/orderList`` by ``listClientOrderId``; None when it is unknown or
        already done (-2011)."""
        params: dict[str, str | int] = {"symbol": symbol, "listClientOrderId": list_client_order_id}
        code, body = await self._read("DELETE", ORDER_LIST_PATH, params, 1)
        if code == ERR_CANCEL_UNKNOWN:
            return None
        ok = self._ok(code, body, "DELETE", ORDER_LIST_PATH, params, refusal=OrderRejected)
        return parse_order_list(ok, describe("DELETE", ORDER_LIST_PATH, params))

    async def get_order_list(self, list_client_order_id: str) -> OrderList | None:
        """``GET /api/v3/orderList`` by ``listClientOrderId`` (its status and legs' ids, no
        leg states: :meth:`get_order` has them); None when the venue does not know it."""
        params: dict[str, str | int] = {"origClientOrderId": list_client_order_id}
        code, body = await self._read("GET", ORDER_LIST_PATH, params, 4)
        if code == ERR_UNKNOWN_ORDER:
            return None
        ok = self._ok(code, body, "GET", ORDER_LIST_PATH, params)
        return parse_order_list(ok, describe("GET", ORDER_LIST_PATH, params))

    # ---- listing ---------------------------------------------------------------------------

    async def open_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        params: dict[str, str | int] = {"symbol": symbol} if symbol else {}
        weight = 6 if symbol else 80
        code, body = await self._read("GET", SPOT_OPEN_ORDERS_PATH, params, weight)
        ok = self._ok(code, body, "GET", SPOT_OPEN_ORDERS_PATH, params, refusal=OrderRejected)
        return parse_spot_orders(ok, describe("GET", SPOT_OPEN_ORDERS_PATH, params))

    async def open_conditional_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        """Empty: spot stop orders rest in the matching engine (:meth:`open_orders`)."""
        return []

    async def positions(self) -> Sequence[VenuePosition]:
        """Empty: spot has no positions (see :meth:`balances`)."""
        return []

    async def balances(self) -> Sequence[AssetBalance]:
        """``GET /api/v3/account``: every asset, ``balance`` = free + locked."""
        code, body = await self._read("GET", SPOT_ACCOUNT_PATH, {}, 20)
        ok = self._ok(code, body, "GET", SPOT_ACCOUNT_PATH, {})
        return parse_account(ok, describe("GET", SPOT_ACCOUNT_PATH, {}))

    async def spot_rules(self, symbol: str) -> SpotRules:
        """LOT_SIZE / PRICE_FILTER / NOTIONAL of ``symbol`` (exchangeInfo read once, cached).
        A symbol the venue does not list is OrderRejected; one lacking a filter ExchangeError."""
        rules = self._rules.get(symbol)
        if rules is not None:
            return rules
        payload, where = await self._exchange_info(SPOT_EXCHANGE_INFO_PATH)
        found, missing, bases = parse_spot_filters(payload, where)
        self._rules.update(found)
        self._bases.update(bases)
        rules = self._rules.get(symbol)
        if rules is None:
            raise unlisted(symbol, missing, where)
        return rules

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        r = await self.spot_rules(symbol)
        return SymbolRules(symbol, step_size=r.step_size, min_qty=r.min_qty, tick_size=r.tick_size)

    async def base_asset(self, symbol: str) -> str:
        """The base asset of ``symbol`` (``BTC`` for ``BTCUSDT``), from exchangeInfo."""
        await self.spot_rules(symbol)
        return self._bases[symbol]


def _legs(listed: OrderList, oco: OcoRequest, where: str) -> tuple[OrderState, OrderState]:
    by_cid = {r.client_order_id: r for r in listed.reports}
    take = by_cid.get(oco.take_client_order_id)
    stop = by_cid.get(oco.stop_client_order_id)
    if take is None or stop is None:
        raise ExchangeError(
            f"{where}: orderReports lack the legs {oco.take_client_order_id} /"
            f" {oco.stop_client_order_id}"
        )
    return take, stop
