"""What the matching engine (:class:`~atra.sim.venue.MatchingEngine`) keeps and checks.

A symbol's book (:class:`SymbolBook`: its candles, the next bar to evaluate, the net position
with its average entry price), an order as the venue holds it (:class:`VenueOrder`: a
matching-engine order, or an algo (conditional) order of the Algo Service with the order it put
in the matching engine once triggered), a fill (:class:`Fill`), a refusal (:class:`VenueReject`:
HTTP status, Binance code and message), and the checks an order passes at placement
(:func:`check_order`, Binance's error codes), and what the futures and the spot matching
engines share (:class:`BarMarket`: the books, market time, bar-by-bar evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Generic, NamedTuple, TypeVar

import numpy as np
import pandas as pd

from atra.adapters.orders import (
    ERR_INVALID_QTY,
    AlgoState,
    AlgoStatus,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
    SymbolRules,
)
from atra.errors import DataError

__all__ = [
    "ERR_INVALID_SYMBOL",
    "ERR_MANDATORY_PARAM",
    "ORDER_TYPES",
    "REL_TOL",
    "STOP_TYPES",
    "BarMarket",
    "Fill",
    "SymbolBook",
    "VenueOrder",
    "VenueReject",
    "check_order",
    "is_multiple",
    "load_book",
    "side_sign",
    "trigger_distance",
]

ERR_MANDATORY_PARAM: Final[int] = -1102
ERR_INVALID_SYMBOL: Final[int] = -1121
REL_TOL: Final[float] = 1e-9
STOP_TYPES: Final[frozenset[str]] = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
ORDER_TYPES: Final[frozenset[str]] = frozenset(
    {"MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET"}
)


class VenueReject(Exception):
    """The venue refused a request: HTTP ``status``, Binance ``code`` and ``msg``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg


class Fill(NamedTuple):
    """One fill: which order, when (venue ms), at what price, how much (base units)."""

    client_order_id: str
    time_ms: int
    price: float
    qty: float


@dataclass(slots=True)
class VenueOrder:
    """An order as the venue holds it, from placement to its final status.

    An algo order has an ``algo_status`` (None for a matching-engine order; ``order_id`` is then
    its ``algoId``) and, once triggered, ``child``: the MARKET order it put in the matching
    engine (same client id, its own order id), which holds the fill."""

    symbol: str
    cid: str
    order_id: int
    side: OrderSide
    type: OrderType
    qty: float
    price: float
    stop_price: float
    reduce_only: bool
    close_position: bool
    status: OrderStatus
    executed: float
    avg_price: float
    update_ms: int
    algo_status: AlgoStatus | None = None
    child: VenueOrder | None = None
    create_ms: int = 0

    def algo_state(self) -> AlgoState:
        """The algo order as the Algo Service reports it."""
        assert self.algo_status is not None  # an algo order
        child = self.child
        return AlgoState(
            symbol=self.symbol,
            client_algo_id=self.cid,
            algo_id=self.order_id,
            side=self.side,
            order_type=self.type,
            algo_status=self.algo_status,
            quantity=self.qty,
            trigger_price=self.stop_price,
            price=self.price,
            reduce_only=self.reduce_only,
            close_position=self.close_position,
            update_time_ms=self.update_ms,
            actual_order_id=None if child is None else child.order_id,
            actual_qty=None if child is None else child.executed,
            actual_price=None if child is None else child.avg_price,
            create_time_ms=self.create_ms,
        )

    def state(self) -> OrderState:
        return OrderState(
            symbol=self.symbol,
            client_order_id=self.cid,
            order_id=self.order_id,
            side=self.side,
            type=self.type,
            status=self.status,
            orig_qty=self.qty,
            executed_qty=self.executed,
            avg_price=self.avg_price,
            price=self.price,
            stop_price=self.stop_price,
            reduce_only=self.reduce_only,
            close_position=self.close_position,
            update_time_ms=self.update_ms,
        )


@dataclass(slots=True)
class SymbolBook:
    """A symbol's candles, the next bar to evaluate and its net position."""

    times: np.ndarray  # int64 ms, bar open times
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    next_bar: int = 0
    position: float = 0.0
    entry_price: float = 0.0


def load_book(symbol: str, frame: pd.DataFrame) -> SymbolBook:
    """``symbol``'s book over its candle ``frame`` (open times strictly increasing)."""
    missing = [c for c in ("open_time", "open", "high", "low", "close") if c not in frame.columns]
    if missing:
        raise DataError(f"matching engine: {symbol} candles lack columns {missing}")
    times = frame["open_time"].to_numpy(dtype=np.int64)
    if times.size > 1 and not bool(np.all(np.diff(times) > 0)):
        row = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
        raise DataError(f"matching engine: {symbol} open_time not increasing at row {row}")
    o, h, lo, c = (frame[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
    return SymbolBook(times, o, h, lo, c)


OrderT = TypeVar("OrderT")


class BarMarket(Generic[OrderT]):
    """Candles of several symbols (``candles``: symbol -> OHLCV frame of ``step_ms`` bars)
    matched bar by bar as market time advances; ``OrderT`` is the kind of order that rests.

    Market time never runs backwards; each bar that closed is evaluated once, in time order
    across the symbols, by the subclass's :meth:`_evaluate`, and only while the symbol has
    resting orders. ``slippage_bps`` (>= 0) is kept as a fraction in :attr:`slippage`."""

    NAME: ClassVar[str] = "matching engine"
    """How errors about the engine's arguments name it."""

    def __init__(self, candles: Mapping[str, pd.DataFrame], step_ms: int, slippage_bps: float):
        if step_ms <= 0:
            raise DataError(f"{self.NAME}: step_ms must be > 0, got {step_ms}")
        if not (math.isfinite(slippage_bps) and slippage_bps >= 0.0):
            raise DataError(f"{self.NAME}: slippage_bps must be >= 0, got {slippage_bps}")
        self.step_ms = int(step_ms)
        self.slippage = float(slippage_bps) / 1e4
        self._books: dict[str, SymbolBook] = {}
        for symbol, frame in candles.items():
            self._books[symbol] = self._load(symbol, frame)
        self._resting: dict[str, list[OrderT]] = {s: [] for s in self._books}
        self._next_id = 1
        self._now_ms = -(2**62)

    def _load(self, symbol: str, frame: pd.DataFrame) -> SymbolBook:
        """``symbol``'s book (a subclass may check the symbol first)."""
        return load_book(symbol, frame)

    def _loose_rules(self) -> dict[str, SymbolRules]:
        """Rules that let any finite quantity and price through, for every symbol."""
        return {s: SymbolRules(s, step_size=1e-9, min_qty=0.0, tick_size=1e-9) for s in self._books}

    @property
    def now_ms(self) -> int:
        """The latest market time seen (time never runs backwards)."""
        return self._now_ms

    def advance(self, now_ms: int) -> None:
        """Evaluate, in time order, every bar that closed by ``now_ms`` since the last call."""
        now = max(int(now_ms), self._now_ms)
        self._now_ms = now
        pending: list[tuple[int, str, int]] = []
        for symbol, book in self._books.items():
            hi = int(np.searchsorted(book.times, now - self.step_ms, side="right"))
            if hi <= book.next_bar:
                continue
            if self._resting[symbol]:
                pending.extend((int(book.times[b]), symbol, b) for b in range(book.next_bar, hi))
            book.next_bar = hi
        pending.sort()
        for _, symbol, b in pending:
            if self._resting[symbol]:
                self._evaluate(symbol, b)

    def _evaluate(self, symbol: str, b: int) -> None:
        """Match ``symbol``'s resting orders against its bar ``b``."""
        raise NotImplementedError

    def _bar_at(self, symbol: str, t_ms: int) -> int | None:
        """The bar of ``symbol`` that contains ``t_ms``; None outside the candles."""
        book = self._books[symbol]
        b = int(np.searchsorted(book.times, t_ms, side="right")) - 1
        if b < 0 or t_ms >= int(book.times[b]) + self.step_ms:
            return None
        return b

    def _book_of(self, symbol: str) -> SymbolBook:
        """``symbol``'s book; a symbol without candles is refused (-1121 Invalid symbol)."""
        book = self._books.get(symbol)
        if book is None:
            raise VenueReject(400, ERR_INVALID_SYMBOL, "Invalid symbol.")
        return book

    @property
    def symbols(self) -> list[str]:
        return sorted(self._books)


def is_multiple(x: float, step: float) -> bool:
    """``x`` is a whole multiple of ``step`` (within :data:`REL_TOL` relative)."""
    r = x / step
    return abs(r - round(r)) <= REL_TOL * max(1.0, abs(r))


def side_sign(side: OrderSide) -> int:
    """+1 for BUY, -1 for SELL."""
    return 1 if side == "BUY" else -1


def trigger_distance(o: VenueOrder, open_: float) -> float:
    """How far the price must travel from ``open_`` to trigger ``o`` (negative: already past)."""
    if o.type == "STOP_MARKET":
        return open_ - o.stop_price if o.side == "SELL" else o.stop_price - open_
    level = o.price if o.type == "LIMIT" else o.stop_price
    return level - open_ if o.side == "SELL" else open_ - level


def check_order(order: OrderRequest, rules: SymbolRules, trigger_name: str = "stopPrice") -> None:
    """The parameter checks of a placement: side, type, the prices and the quantity its type
    needs, quantity on the step and above the minimum, prices on the tick. A failed check
    raises :class:`VenueReject` with Binance's code. ``trigger_name`` is the name of the
    trigger price's parameter (``triggerPrice`` on the Algo Order API)."""
    if order.side not in ("BUY", "SELL"):
        raise VenueReject(400, -1117, "Invalid side.")
    if order.type not in ORDER_TYPES:
        raise VenueReject(400, -1116, "Invalid orderType.")
    if order.type == "LIMIT" and order.price is None:
        raise VenueReject(400, ERR_MANDATORY_PARAM, "Mandatory parameter 'price' was not sent.")
    if order.type in STOP_TYPES and order.stop_price is None:
        msg = f"Mandatory parameter '{trigger_name}' was not sent."
        raise VenueReject(400, ERR_MANDATORY_PARAM, msg)
    if order.close_position:
        if order.type not in STOP_TYPES:
            raise VenueReject(400, ERR_MANDATORY_PARAM, "closePosition is only for stop orders.")
        if order.quantity is not None:
            raise VenueReject(
                400, ERR_MANDATORY_PARAM, "quantity cannot be sent with closePosition."
            )
    else:
        qty = order.quantity
        if qty is None:
            raise VenueReject(
                400, ERR_MANDATORY_PARAM, "Mandatory parameter 'quantity' was not sent."
            )
        if not (math.isfinite(qty) and qty > 0.0):
            raise VenueReject(400, ERR_INVALID_QTY, f"Quantity {qty} must be positive.")
        if not is_multiple(qty, rules.step_size):
            raise VenueReject(
                400, ERR_INVALID_QTY, f"Quantity {qty} is not a multiple of {rules.step_size}."
            )
        if qty < rules.min_qty:
            raise VenueReject(
                400, ERR_INVALID_QTY, f"Quantity {qty} less than min_qty {rules.min_qty}."
            )
    for name, value in (("price", order.price), (trigger_name, order.stop_price)):
        if value is None:
            continue
        if not (math.isfinite(value) and value > 0.0):
            raise VenueReject(400, -4014, f"{name} {value} must be positive.")
        if not is_multiple(value, rules.tick_size):
            raise VenueReject(
                400, -4014, f"{name} {value} is not a multiple of tick {rules.tick_size}."
            )
