"""Order types and the order API contract (Binance USDT-M futures semantics, one-way mode).

What the live execution broker (:mod:`atra.live.execution`) needs from a venue, whatever serves it:
the signed REST client (:class:`atra.adapters.trading.trader.BinanceTrader`) against Binance or the
fake exchange, or the in-process venue over the fake's matching engine
(:class:`atra.sim.venue.LocalVenue`).

Wire format (``POST /fapi/v1/order``, ``GET /fapi/v1/order``, ``DELETE /fapi/v1/order``,
``GET /fapi/v1/openOrders``, ``GET /fapi/v2/positionRisk``, ``GET /fapi/v2/balance``): every
call is SIGNED: the query string holds the parameters plus ``timestamp`` (ms) and
``recvWindow``, then ``signature`` = hex HMAC-SHA256 of that query string (the exact bytes
sent, parameters in the order sent) with the API secret; the key goes in the ``X-MBX-APIKEY``
header. See :func:`signed_query`.

Idempotency: every order carries a deterministic ``newClientOrderId``
(:func:`atra.live.paper.client_order_id`: run, symbol, bar time, kind). Placing an order whose
client id is already known to the venue is refused with :data:`ERR_DUPLICATE_ORDER`; a client
that lost the answer to a POST therefore looks the order up by ``origClientOrderId`` and
never places it twice.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol
from urllib.parse import urlencode

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
    TAKE_PROFIT_MARKET (mark price = last price in the fake). ``quantity`` is in base units,
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
    :attr:`foreign`: read and reported, never managed."""

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

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def foreign(self) -> bool:
        """An order of a type ATRA never places (so never one of its own)."""
        return self.type not in TRADED_TYPES


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
    and subclasses for everything else."""

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Place ``order``; if the venue already has its client id, return that order's state
        (never a second order)."""
        ...

    async def get_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """The order's state, None when the venue does not know the client id."""
        ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """Cancel; returns the final state (a FILLED order stays FILLED), None if unknown."""
        ...

    async def open_orders(self, symbol: str | None = None) -> Sequence[OrderState]: ...

    async def positions(self) -> Sequence[VenuePosition]:
        """Non-zero positions only."""
        ...

    async def symbol_rules(self, symbol: str) -> SymbolRules: ...
