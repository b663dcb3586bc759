"""Signed Binance USDT-M futures orders: :class:`BinanceTrader` serves
:class:`atra.adapters.orders.OrderApi` over an open
:class:`atra.adapters.exchange.client.BinanceClient`; :func:`credentials_from_env` reads its
API key and secret (:mod:`atra.adapters.trading.signed` signs and sends).

The trader shares the client's HTTP connection pool, its weight-aware rate limiter (order
calls are charged their Binance weight in the same bucket as market data: order 1,
openOrders 1 with a symbol / 40 without, positionRisk 5; on the Algo Order API a new algo
order 0 (it counts against the ORDERS limits only), a query or a cancel 1, openAlgoOrders 1 /
40) and its backoff settings. The order parameters and the parsing of the answers are in
:mod:`atra.adapters.trading.wire` and :mod:`atra.adapters.trading.algo_wire`.

Two routes (Binance, since 2025-12-09): MARKET and LIMIT orders go to ``/fapi/v1/order``
(:meth:`BinanceTrader.place_regular`); the conditional types (STOP_MARKET, TAKE_PROFIT_MARKET,
...) to the Algo Order API, ``POST /fapi/v1/algoOrder`` with ``clientAlgoId`` = the order's
client id (:meth:`BinanceTrader.place_conditional`); ``/fapi/v1/order`` refuses them with
-4120, which surfaces as an :class:`~atra.errors.OrderRejected` naming the code. A conditional
order is looked up and cancelled by ``clientAlgoId`` (``conditional=True``); once triggered,
its fill is read from the order it put in the matching engine (``actualOrderId``) and reported
through :func:`atra.adapters.orders.conditional_state`.

A POST is never blindly retried. When its answer is lost (timeout, dropped connection, 5xx,
a garbled body, a 429) the outcome is unknown: the order is looked up by its client id and
returned when the venue has it; only when the venue does not know the id is the POST sent
again, with the same id. An HTTP 200 whose JSON is not a readable order means the venue took
the order: it is looked up by client id and never POSTed again (the id is remembered, so a
later ``place_order`` of it only looks it up). A ``-4116`` (client id already used), or any
refusal of a conditional order after an unknown outcome, is answered by the lookup too, so a
retried placement never makes a second order. Reads and cancels are idempotent and are simply
retried.

The API secret only reaches the HMAC. Requests are described in errors as
``binance perp POST /fapi/v1/order symbol=BTCUSDT ... newClientOrderId=...``: plain
parameters, never the signature, the timestamp or the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Unpack

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.orders import (
    ERR_CANCEL_UNKNOWN,
    ERR_DUPLICATE_ORDER,
    ERR_UNKNOWN_ORDER,
    AlgoState,
    AssetBalance,
    OrderRequest,
    OrderState,
    SymbolRules,
    VenuePosition,
    conditional_state,
    is_conditional,
)
from atra.adapters.trading.algo_wire import (
    algo_params,
    parse_algo_cancel,
    parse_algo_order,
    parse_algo_orders,
)
from atra.adapters.trading.signed import (
    API_KEY_ENV,
    API_SECRET_ENV,
    SessionArgs,
    SignedSession,
    credentials_from_env,
    msg,
    unlisted,
)
from atra.adapters.trading.wire import (
    describe,
    order_params,
    parse_balances,
    parse_filters,
    parse_order,
    parse_orders,
    parse_positions,
)
from atra.errors import ExchangeError, OrderRejected

__all__ = [
    "ALGO_ORDER_PATH",
    "API_KEY_ENV",
    "API_SECRET_ENV",
    "OPEN_ALGO_ORDERS_PATH",
    "ORDER_PATH",
    "BinanceTrader",
    "credentials_from_env",
]

ORDER_PATH: Final[str] = "/fapi/v1/order"
OPEN_ORDERS_PATH: Final[str] = "/fapi/v1/openOrders"
ALGO_ORDER_PATH: Final[str] = "/fapi/v1/algoOrder"
OPEN_ALGO_ORDERS_PATH: Final[str] = "/fapi/v1/openAlgoOrders"
POSITION_RISK_PATH: Final[str] = "/fapi/v2/positionRisk"
BALANCE_PATH: Final[str] = "/fapi/v2/balance"
EXCHANGE_INFO_PATH: Final[str] = "/fapi/v1/exchangeInfo"
ALGO_POST_WEIGHT: Final[int] = 0  # New Algo Order: 0 on the IP weight, 1 on the ORDERS counts

Reader = Callable[[object, str], Awaitable[OrderState]]


class BinanceTrader(SignedSession):
    """The order API of one Binance USDT-M futures account (one-way mode), over an open
    :class:`BinanceClient` (its HTTP pool, limiter, clock, timeout and backoff).

    ``wall_clock`` stamps the signed requests (``timestamp`` in ms); ``max_attempts`` (default
    the client's) bounds the sends of one call.
    """

    def __init__(self, client: BinanceClient, **session: Unpack[SessionArgs]) -> None:
        super().__init__(client, **session)
        self._rules: dict[str, SymbolRules] = {}

    # ---- placing ---------------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Place ``order`` on its route: a conditional type on the Algo Order API
        (:meth:`place_conditional`), MARKET / LIMIT on ``/fapi/v1/order``."""
        if is_conditional(order.type):
            return await self.place_conditional(order)
        return await self.place_regular(order)

    async def place_regular(self, order: OrderRequest) -> OrderState:
        """``POST /fapi/v1/order``. The venue refuses a conditional type there (-4120): an
        :class:`OrderRejected` naming the code and Binance's message."""
        params = order_params(order, self._rules.get(order.symbol))

        async def read(body: object, where: str) -> OrderState:
            return parse_order(body, where)

        return await self._place_on(order, ORDER_PATH, params, 1, read, conditional=False)

    async def place_conditional(self, order: OrderRequest) -> OrderState:
        """``POST /fapi/v1/algoOrder`` (``algoType=CONDITIONAL``, ``clientAlgoId`` = the
        order's client id); the answer read through :func:`conditional_state`."""
        params = algo_params(order, self._rules.get(order.symbol))

        async def read(body: object, where: str) -> OrderState:
            return await self._algo_view(parse_algo_order(body, where), where)

        return await self._place_on(
            order, ALGO_ORDER_PATH, params, ALGO_POST_WEIGHT, read, conditional=True
        )

    async def _place_on(
        self,
        order: OrderRequest,
        path: str,
        params: Mapping[str, str | int],
        weight: int,
        read: Reader,
        *,
        conditional: bool,
    ) -> OrderState:
        """:meth:`SignedSession._place` on one route, the order looked up on the same route;
        after a lost answer any refusal of a conditional order is answered by the lookup."""
        cid = order.client_order_id

        async def lookup() -> OrderState | None:
            return await self.get_order(order.symbol, cid, conditional=conditional)

        head = f"{order.symbol} {order.type} {cid}"
        return await self._place(
            head,
            cid,
            path,
            params,
            weight,
            read,
            lookup,
            symbol=order.symbol,
            lookup_any_refusal=conditional,
        )

    def _is_duplicate(self, code: int, body: object) -> bool:
        return code == ERR_DUPLICATE_ORDER

    # ---- looking up and cancelling ---------------------------------------------------------

    async def get_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        """The order's state by client id (``GET /fapi/v1/order``, or ``GET
        /fapi/v1/algoOrder`` by ``clientAlgoId`` when ``conditional``); None when unknown."""
        if conditional:
            return await self._get_algo(symbol, client_order_id)
        params: dict[str, str | int] = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._read("GET", ORDER_PATH, params, 1)
        if code == ERR_UNKNOWN_ORDER:
            return None
        ok = self._ok(code, body, "GET", ORDER_PATH, params)
        return parse_order(ok, describe("GET", ORDER_PATH, params))

    async def _get_algo(self, symbol: str, client_algo_id: str) -> OrderState | None:
        params: dict[str, str | int] = {"clientAlgoId": client_algo_id}
        code, body = await self._read("GET", ALGO_ORDER_PATH, params, 1)
        if code == ERR_UNKNOWN_ORDER:
            return None
        where = describe("GET", ALGO_ORDER_PATH, params)
        algo = parse_algo_order(self._ok(code, body, "GET", ALGO_ORDER_PATH, params), where)
        if algo.symbol != symbol:
            raise ExchangeError(f"{where}: the algo order is on {algo.symbol}, not {symbol}")
        return await self._algo_view(algo, where)

    async def _algo_view(self, algo: AlgoState, where: str) -> OrderState:
        """``algo`` as an :class:`OrderState`; once triggered, with the fill of the order it
        put in the matching engine (``GET /fapi/v1/order`` by ``actualOrderId``)."""
        order: OrderState | None = None
        if algo.needs_order:
            assert algo.actual_order_id is not None  # needs_order says so
            params: dict[str, str | int] = {"symbol": algo.symbol, "orderId": algo.actual_order_id}
            code, body = await self._read("GET", ORDER_PATH, params, 1)
            if code != ERR_UNKNOWN_ORDER:  # unknown: Binance's actualQty / actualPrice tell
                ok = self._ok(code, body, "GET", ORDER_PATH, params)
                order = parse_order(ok, describe("GET", ORDER_PATH, params))
        return conditional_state(algo, order, where)

    async def cancel_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        """Cancel; ``-2011`` (unknown or already final) is answered by the order's state (None
        if the venue never saw it); another Binance refusal is OrderRejected, as in process.
        A conditional order is cancelled on the Algo Order API, whose answer holds no state: it
        is looked up after the cancel, and after any refusal (a final or unknown order is
        answered by its state, one still open is OrderRejected)."""
        if conditional:
            return await self._cancel_algo(symbol, client_order_id)
        params: dict[str, str | int] = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._read("DELETE", ORDER_PATH, params, 1)
        if code == ERR_CANCEL_UNKNOWN:  # unknown, or already final: its state tells which
            return await self.get_order(symbol, client_order_id)
        ok = self._ok(code, body, "DELETE", ORDER_PATH, params, refusal=OrderRejected)
        return parse_order(ok, describe("DELETE", ORDER_PATH, params))

    async def _cancel_algo(self, symbol: str, client_algo_id: str) -> OrderState | None:
        params: dict[str, str | int] = {"clientAlgoId": client_algo_id}
        where = describe("DELETE", ALGO_ORDER_PATH, params)
        code, body = await self._read("DELETE", ALGO_ORDER_PATH, params, 1)
        if code is None:
            parse_algo_cancel(body, where)
            state = await self._get_algo(symbol, client_algo_id)
            if state is None:
                raise ExchangeError(f"{where}: cancelled, then not found by a query")
            return state
        known = await self._get_algo(symbol, client_algo_id)  # unknown, final, or still open
        if known is None or known.is_final:
            return known
        raise OrderRejected(f"{where}: Binance error {code}: {msg(body)}")

    # ---- listing -------------------------------------------------------------------------

    async def open_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        """Resting orders; a refusal (``-1121`` for a symbol not listed) is OrderRejected."""
        params: dict[str, str | int] = {"symbol": symbol} if symbol else {}
        code, body = await self._read("GET", OPEN_ORDERS_PATH, params, 1 if symbol else 40)
        ok = self._ok(code, body, "GET", OPEN_ORDERS_PATH, params, refusal=OrderRejected)
        return parse_orders(ok, describe("GET", OPEN_ORDERS_PATH, params))

    async def open_conditional_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        """Algo orders not final yet (``GET /fapi/v1/openAlgoOrders``, weight 1 with a symbol,
        40 without); a refusal is OrderRejected."""
        params: dict[str, str | int] = {"symbol": symbol} if symbol else {}
        path = OPEN_ALGO_ORDERS_PATH
        code, body = await self._read("GET", path, params, 1 if symbol else 40)
        where = describe("GET", path, params)
        ok = self._ok(code, body, "GET", path, params, refusal=OrderRejected)
        return [await self._algo_view(algo, where) for algo in parse_algo_orders(ok, where)]

    async def positions(self) -> Sequence[VenuePosition]:
        code, body = await self._read("GET", POSITION_RISK_PATH, {}, 5)
        ok = self._ok(code, body, "GET", POSITION_RISK_PATH, {})
        return parse_positions(ok, describe("GET", POSITION_RISK_PATH, {}))

    async def balances(self) -> Sequence[AssetBalance]:
        """The futures wallet, one row per asset (``GET /fapi/v2/balance``, weight 5)."""
        code, body = await self._read("GET", BALANCE_PATH, {}, 5)
        ok = self._ok(code, body, "GET", BALANCE_PATH, {})
        return parse_balances(ok, describe("GET", BALANCE_PATH, {}))

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        """PRICE_FILTER / LOT_SIZE of ``symbol`` (exchangeInfo fetched once, then cached). A
        symbol the venue does not list is OrderRejected (nothing can be traded there); a listed
        symbol lacking a filter is an ExchangeError naming it."""
        rules = self._rules.get(symbol)
        if rules is not None:
            return rules
        payload, where = await self._exchange_info(EXCHANGE_INFO_PATH)
        found, missing = parse_filters(payload, where)
        self._rules.update(found)
        rules = self._rules.get(symbol)
        if rules is None:
            raise unlisted(symbol, missing, where)
        return rules
