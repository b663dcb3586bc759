"""Order types and the order API contract (Binance USDT-M futures semantics, one-way mode).

What the live execution broker (:mod:`atra.live.execution`) needs from a venue, whatever serves it:
the signed REST client (:class:`atra.adapters.trading.trader.BinanceTrader`) against Binance or the
fake exchange, or the in-process venue over the fake's matching engine
(:class:`atra.sim.local_venue.LocalVenue`).

Wire format (``POST /fapi/v1/order``, ``GET /fapi/v1/order``, ``DELETE /fapi/v1/order``,
``GET /fapi/v1/openOrders``, ``GET /fapi/v2/positionRisk``, ``GET /fapi/v2/balance``, and the
Algo Order API: ``POST/GET/DELETE /fapi/v1/algoOrder``, ``GET /fapi/v1/openAlgoOrders``): every
call is SIGNED: the query string holds the parameters plus ``timestamp`` (ms) and
``recvWindow``, then ``signature`` = hex HMAC-SHA256 of that query string (the exact bytes
sent, parameters in the order sent) with the API secret; the key goes in the ``X-MBX-APIKEY``
header. See :func:`signed_query`.

Idempotency: every order carries a deterministic ``newClientOrderId``
(:func:`atra.live.paper.client_order_id`: run, symbol, bar time, kind). Placing an order whose
client id is already known to the venue is refused with :data:`ERR_DUPLICATE_ORDER`; a client
that lost the answer to a POST therefore looks the order up by ``origClientOrderId`` and
never places it twice.

Conditional orders (:data:`CONDITIONAL_TYPES`: the stop-loss and break-even STOP_MARKET orders
ATRA places) live in Binance's Algo Service since 2025-12-09: ``POST /fapi/v1/order`` refuses
them with :data:`ERR_ALGO_ONLY` (-4120, "Order type not supported for this endpoint. Please
use the Algo Order API endpoints instead."). They are placed with ``POST /fapi/v1/algoOrder``
(``algoType=CONDITIONAL``, ``triggerPrice``, ``clientAlgoId`` = the same deterministic id),
looked up and cancelled by ``clientAlgoId``, and listed by ``GET /fapi/v1/openAlgoOrders``,
never by ``openOrders``. The venue reports them as :class:`AlgoState` (``algoStatus``: NEW,
TRIGGERING, TRIGGERED, FINISHED, CANCELED, REJECTED, EXPIRED); once triggered, the order it put
in the matching engine (``actualOrderId``) holds the fill. :func:`conditional_state` gives the
broker one :class:`OrderState` for both, so a stop reads the same whichever service holds it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol
from urllib.parse import urlencode

from atra.errors import ExchangeError

OrderSide = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET"]
"""The order types ATRA places."""
OrderStatus = Literal[
    "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"
]
"""Binance's order statuses (USDT-M futures; ``EXPIRED_IN_MATCH``: expired by self-trade
prevention)."""

TRADED_TYPES: Final[frozenset[str]] = frozenset(
    {"MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET"}
)
"""The types of :data:`OrderType`: an order of any other type is foreign to ATRA."""
VENUE_TYPES: Final[frozenset[str]] = TRADED_TYPES | frozenset(
    {"STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"}  # USDT-M futures
    | {"LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"}  # spot
)
"""Every order type Binance documents for USDT-M futures and spot. An order of another type is
still read (kept with its raw type string), only logged as undocumented."""
FINAL_STATUSES: Final[frozenset[str]] = frozenset(
    {"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"}
)
CONDITIONAL_TYPES: Final[frozenset[str]] = frozenset(
    {"STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"}
)
"""USDT-M order types placed on the Algo Order API only (``algoType=CONDITIONAL``)."""
AlgoStatus = Literal[
    "NEW", "CANCELED", "TRIGGERING", "TRIGGERED", "FINISHED", "REJECTED", "EXPIRED"
]
"""Binance's ``algoStatus``: NEW (resting in the Algo Service), TRIGGERING (condition met, on
its way to the matching engine), TRIGGERED (its order is in the matching engine), FINISHED
(that order filled or was cancelled there), CANCELED, REJECTED (refused by the matching
engine, e.g. margin), EXPIRED (cancelled by the system)."""
ALGO_STATUSES: Final[frozenset[str]] = frozenset(
    {"NEW", "CANCELED", "TRIGGERING", "TRIGGERED", "FINISHED", "REJECTED", "EXPIRED"}
)

# Binance error codes the order path must tell apart
ERR_INVALID_SIGNATURE: Final[int] = -1022
ERR_TIMESTAMP: Final[int] = -1021  # outside recvWindow
ERR_BAD_API_KEY: Final[int] = -2014
ERR_UNAUTHORIZED: Final[int] = -2015
ERR_UNKNOWN_ORDER: Final[int] = -2013  # GET: "Order does not exist."
ERR_CANCEL_UNKNOWN: Final[int] = -2011  # DELETE: "Unknown order sent."
ERR_DUPLICATE_ORDER: Final[int] = -4116  # "ClientOrderId is duplicated."
ERR_REDUCE_ONLY_REJECT: Final[int] = -2022  # "ReduceOnly Order is rejected."
ERR_WOULD_TRIGGER: Final[int] = -2021  # "Order would immediately trigger."
ERR_INSUFFICIENT_MARGIN: Final[int] = -2019
ERR_INVALID_QTY: Final[int] = -4003  # quantity below the minimum / not a step multiple
ERR_ALGO_ONLY: Final[int] = -4120  # STOP_ORDER_SWITCH_ALGO: a conditional type on /fapi/v1/order
ALGO_ONLY_MSG: Final[str] = (
    "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
)


def is_conditional(order_type: str) -> bool:
    """Whether ``order_type`` goes to the Algo Order API (:data:`CONDITIONAL_TYPES`)."""
    return order_type in CONDITIONAL_TYPES


def side_of(position_side: int, *, closing: bool) -> OrderSide:
    """The order side that opens (``closing=False``) or closes a position of ``+1``/``-1``."""
    opening: OrderSide = "BUY" if position_side == 1 else "SELL"
    if not closing:
        return opening
    return "SELL" if opening == "BUY" else "BUY"


def signed_query(params: Mapping[str, str | int | float], secret: str) -> str:
    """``urlencode(params)`` + ``&signature=<hex HMAC-SHA256 of it>``: the exact query string
    to send (Binance signs the bytes as sent, so the caller must send this string as is)."""
    query = urlencode([(k, _wire(v)) for k, v in params.items()])
    sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={sig}"


def verify_signature(query: str, secret: str) -> bool:
    """Whether ``query`` (the raw query string received) ends with a valid ``signature``."""
    body, sep, sig = query.rpartition("&signature=")
    if not sep or not sig:
        return False
    expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig)


def _wire(value: str | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".12g") if value == value else "nan"
    return str(value)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A new order. ``price`` for LIMIT (GTC), ``stop_price`` for STOP_MARKET /
    TAKE_PROFIT_MARKET (the ``triggerPrice`` of the Algo Order API, compared with the contract
    price; mark price = last price in the fake). ``quantity`` is in base units,
    already rounded to the symbol's step; ``close_position`` orders carry no quantity and
    close whatever is open when they trigger."""

    symbol: str
    side: OrderSide
    type: OrderType
    client_order_id: str
    quantity: float | None = None
    price: float | None = None
    stop_price: float | None = None
    reduce_only: bool = False
    close_position: bool = False


@dataclass(frozen=True, slots=True)
class OrderState:
    """An order as the venue reports it. ``avg_price`` is 0.0 until something fills;
    ``update_time_ms`` is the venue time of the last change (the fill time once FILLED).

    ``type`` is the venue's type string as reported: one of :data:`TRADED_TYPES` for the orders
    ATRA places; any other type (a TRAILING_STOP_MARKET placed by hand, ...) makes the order
    :attr:`foreign`: read and reported, never managed.

    A conditional order (:attr:`conditional`) is an algo order seen through
    :func:`conditional_state`: ``order_id`` is its ``algoId``, ``algo_status`` its
    ``algoStatus`` and ``actual_order_id`` the matching-engine order it triggered (None before)."""

    symbol: str
    client_order_id: str
    order_id: int
    side: OrderSide
    type: str
    status: OrderStatus
    orig_qty: float
    executed_qty: float
    avg_price: float
    price: float
    stop_price: float
    reduce_only: bool
    close_position: bool
    update_time_ms: int
    algo_status: str | None = None
    actual_order_id: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def conditional(self) -> bool:
        """An algo (conditional) order: placed, listed and cancelled on the Algo Order API."""
        return self.algo_status is not None

    @property
    def foreign(self) -> bool:
        """An order of a type ATRA never places (so never one of its own)."""
        return self.type not in TRADED_TYPES


@dataclass(frozen=True, slots=True)
class AlgoState:
    """A conditional order as the Algo Service reports it (``GET /fapi/v1/algoOrder``).

    ``quantity`` is 0.0 for a ``close_position`` order; ``actual_order_id`` is the order it put
    in the matching engine once triggered (None before: Binance sends ``""``);
    ``actual_qty`` / ``actual_price`` are the executed quantity and average price Binance adds
    once that order (partly) filled (None when the answer does not carry them)."""

    symbol: str
    client_algo_id: str
    algo_id: int
    side: OrderSide
    order_type: str
    algo_status: AlgoStatus
    quantity: float
    trigger_price: float
    price: float
    reduce_only: bool
    close_position: bool
    update_time_ms: int
    actual_order_id: int | None = None
    actual_qty: float | None = None
    actual_price: float | None = None
    create_time_ms: int = 0

    @property
    def needs_order(self) -> bool:
        """Triggered into the matching engine: the fill is that order's (``actual_order_id``)."""
        return self.algo_status in ("TRIGGERED", "FINISHED") and self.actual_order_id is not None


_ALGO_FINAL: Final[dict[str, OrderStatus]] = {
    "CANCELED": "CANCELED",
    "EXPIRED": "EXPIRED",
    "REJECTED": "REJECTED",
}


def conditional_state(algo: AlgoState, order: OrderState | None, where: str) -> OrderState:
    """The :class:`OrderState` of a conditional order: its ids, type, side and trigger price
    with the status and fill of what it became.

    * NEW / TRIGGERING: NEW, nothing executed (a TRIGGERING order has no order yet).
    * TRIGGERED / FINISHED: the status, quantities, average price and update time of ``order``
      (the order it put in the matching engine, ``actualOrderId``). Without it, Binance's
      ``actualQty`` / ``actualPrice`` at the algo order's update time: FINISHED is FILLED
      (something executed) or EXPIRED (nothing did), TRIGGERED is PARTIALLY_FILLED or NEW.
      Neither known: an :class:`~atra.errors.ExchangeError` naming ``where`` (a fill is never
      guessed).
    * CANCELED / EXPIRED / REJECTED: that status, nothing executed."""
    status: OrderStatus
    orig, executed, avg, updated = algo.quantity, 0.0, 0.0, algo.update_time_ms
    if order is not None and algo.algo_status in ("TRIGGERED", "FINISHED"):
        status, orig = order.status, order.orig_qty
        executed, avg, updated = order.executed_qty, order.avg_price, order.update_time_ms
    elif algo.algo_status in ("TRIGGERED", "FINISHED"):
        if algo.actual_qty is None or algo.actual_price is None:
            raise ExchangeError(
                f"{where}: algo order {algo.client_algo_id} is {algo.algo_status} but neither its "
                f"order (actualOrderId {algo.actual_order_id}) nor actualQty/actualPrice is known"
            )
        executed, avg = algo.actual_qty, algo.actual_price if algo.actual_qty > 0.0 else 0.0
        if algo.algo_status == "FINISHED":
            status = "FILLED" if executed > 0.0 else "EXPIRED"
        else:
            status = "PARTIALLY_FILLED" if executed > 0.0 else "NEW"
    else:
        status = _ALGO_FINAL.get(algo.algo_status, "NEW")
    return OrderState(
        symbol=algo.symbol,
        client_order_id=algo.client_algo_id,
        order_id=algo.algo_id,
        side=algo.side,
        type=algo.order_type,
        status=status,
        orig_qty=orig,
        executed_qty=executed,
        avg_price=avg,
        price=algo.price,
        stop_price=algo.trigger_price,
        reduce_only=algo.reduce_only,
        close_position=algo.close_position,
        update_time_ms=updated,
        algo_status=algo.algo_status,
        actual_order_id=algo.actual_order_id,
    )


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """The net position of one symbol (one-way mode): ``quantity`` signed (+long / -short)."""

    symbol: str
    quantity: float
    entry_price: float


@dataclass(frozen=True, slots=True)
class AssetBalance:
    """One asset of the futures wallet (``GET /fapi/v2/balance``): ``balance`` is the wallet
    balance, ``available`` what new orders may use."""

    asset: str
    balance: float
    available: float


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """Order filters of one symbol: quantity step and minimum, price tick."""

    symbol: str
    step_size: float
    min_qty: float
    tick_size: float


class OrderApi(Protocol):
    """What a venue offers the execution broker. Errors: :class:`atra.errors.OrderRejected`
    for a refused order (its message names the Binance code), :class:`atra.errors.ExchangeError`
    and subclasses for everything else.

    Conditional orders (:func:`is_conditional`) are placed on the Algo Order API by
    :meth:`place_order`; ``conditional=True`` looks them up and cancels them there (by their
    client id, ``clientAlgoId``), :meth:`open_conditional_orders` lists them. Their states are
    :func:`conditional_state`'s."""

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Place ``order`` (a conditional type on the Algo Order API); if the venue already has
        its client id, return that order's state (never a second order)."""
        ...

    async def get_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        """The order's state, None when the venue does not know the client id."""
        ...

    async def cancel_order(
        self, symbol: str, client_order_id: str, *, conditional: bool = False
    ) -> OrderState | None:
        """Cancel; returns the final state (a FILLED order stays FILLED), None if unknown."""
        ...

    async def open_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        """Resting orders of the matching engine (``openOrders``): never a conditional one."""
        ...

    async def open_conditional_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        """Conditional orders not final yet (``openAlgoOrders``)."""
        ...

    async def positions(self) -> Sequence[VenuePosition]:
        """Non-zero positions only."""
        ...

    async def symbol_rules(self, symbol: str) -> SymbolRules: ...
