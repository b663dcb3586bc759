"""Binance market-data wire formats: request weights, and the JSON of klines, fundingRate,
premiumIndex and exchangeInfo parsed into frames and the records they carry.

Request weights (Binance docs, 2024): spot klines 2; futures klines 1 / 2 / 5 / 10 for ``limit``
< 100 / < 500 / <= 1000 / > 1000; spot exchangeInfo 20, futures exchangeInfo 1; premiumIndex 1
(with a symbol); fundingRate is charged 1 weight and 1 unit of its own bucket (500 requests per
5 minutes per IP), fundingInfo 0 weight and 1 unit of that bucket. A new order also counts
against the account's ORDERS limits (:func:`order_count`: one per order, two for a spot OCO).

Every parser is strict: JSON of the wrong shape is a one-line :class:`~atra.errors.ExchangeError`
naming ``where`` (the request) and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.ratelimit import RateLimit, parse_rate_limits
from atra.core.types import Market
from atra.errors import ExchangeError


def klines_weight(market: Market, limit: int) -> int:
    """Request weight of one klines call returning up to ``limit`` bars."""
    if market is Market.SPOT:
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


_NEW_ORDERS: Final[dict[tuple[str, str], int]] = {
    ("POST", "/fapi/v1/order"): 1,
    ("POST", "/fapi/v1/algoOrder"): 1,  # a conditional order (New Algo Order)
    ("POST", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/oco"): 2,
    ("POST", "/api/v3/orderList/oco"): 2,
}


def order_count(method: str, path: str) -> int:
    """New orders a request places (counted against the ORDERS limits): 0 for any other."""
    return _NEW_ORDERS.get((method.upper(), path), 0)


def exchange_info_weight(market: Market) -> int:
    """Request weight of exchangeInfo (spot 20, futures 1)."""
    return 20 if market is Market.SPOT else 1


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One symbol of exchangeInfo."""

    symbol: str
    status: str


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """exchangeInfo, reduced to what ATRA uses."""

    server_time_ms: int | None
    rate_limits: tuple[RateLimit, ...]
    symbols: tuple[SymbolInfo, ...]

    def has_symbol(self, symbol: str) -> bool:
        return any(s.symbol == symbol for s in self.symbols)


@dataclass(frozen=True, slots=True)
class PremiumIndex:
    """USDT-M ``premiumIndex``: mark/index price and the funding rate now running."""

    symbol: str
    mark_price: float
    index_price: float
    last_funding_rate: float
    next_funding_time_ms: int
    time_ms: int


def one_line(text: str, width: int = 80) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def shape_error(where: str, what: str) -> ExchangeError:
    """The error for an answer of the wrong shape: ``where: unexpected response shape: what``."""
    return ExchangeError(f"{where}: unexpected response shape: {what}")


@dataclass(frozen=True, slots=True)
class Klines:
    """A klines page as arrays: open and close times (int64 ms) and one row per bar of
    ``values`` (open, high, low, close, volume as float64). What the live feed takes (no pandas
    frame per request); :meth:`frame` is the candle frame."""

    open_time: npt.NDArray[np.int64]
    close_time: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def closed_before(self, now_ms: int) -> Klines:
        """The bars whose close time is before ``now_ms`` (the one still forming left out)."""
        keep = self.close_time < now_ms
        if bool(keep.all()):
            return self
        return Klines(self.open_time[keep], self.close_time[keep], self.values[keep])

    def frame(self) -> pd.DataFrame:
        """The candle frame (``open_time`` and the price and volume columns)."""
        v = self.values
        return pd.DataFrame(
            {
                "open_time": self.open_time,
                "open": v[:, 0],
                "high": v[:, 1],
                "low": v[:, 2],
                "close": v[:, 3],
                "volume": v[:, 4],
            }
        )


def parse_kline_rows(payload: object, *, where: str) -> Klines:
    """Binance klines rows -> :class:`Klines`. A wrong shape is ExchangeError."""
    if not isinstance(payload, list):
        raise shape_error(where, f"expected a list of klines, got {type(payload).__name__}")
    # fast path: C-level comprehensions; the row-by-row check runs only to name a bad row
    shapes_ok = set(map(type, payload)) <= {list} and min(map(len, payload), default=7) >= 7
    open_ms = [r[0] for r in payload] if shapes_ok else []
    close_ms = [r[6] for r in payload] if shapes_ok else []
    if not shapes_ok or not set(map(type, open_ms)) | set(map(type, close_ms)) <= {int}:
        _find_bad_kline(payload, where)
    try:
        times = np.array([open_ms, close_ms], dtype=np.int64).reshape(2, -1)
        values = np.array([r[1:6] for r in payload], dtype=np.float64).reshape(-1, 5)
    except (ValueError, TypeError, OverflowError) as exc:
        raise shape_error(where, f"kline fields are not numbers ({one_line(str(exc))})") from exc
    if not bool(np.isfinite(values).all()):
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise shape_error(where, f"kline {row} fields are not numbers: {payload[row]!r:.60}")
    open_time = times[0]
    if open_time.size > 1 and not bool((np.diff(open_time) > 0).all()):
        raise shape_error(where, "kline open times are not strictly increasing")
    return Klines(open_time, times[1], values)


def _find_bad_kline(payload: list[Any], where: str) -> None:
    for i, row in enumerate(payload):
        if not isinstance(row, list) or len(row) < 7:
            raise shape_error(where, f"kline {i} is not a list of >= 7 fields: {row!r:.60}")
        if not all(type(row[j]) is int for j in (0, 6)):
            raise shape_error(where, f"kline {i} has non-integer times: {row!r:.60}")
    raise AssertionError("unreachable")  # pragma: no cover


def parse_funding(payload: object, *, where: str) -> pd.DataFrame:
    """Binance fundingRate rows -> funding frame. A wrong shape is ExchangeError."""
    if not isinstance(payload, list):
        raise shape_error(where, f"expected a list of funding rows, got {type(payload).__name__}")
    times: list[int] = []
    rates: list[float] = []
    for i, row in enumerate(payload):
        try:
            t = row["fundingTime"]
            if not isinstance(t, int) or isinstance(t, bool):
                raise TypeError("fundingTime")
            times.append(t)
            rates.append(float(row["fundingRate"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise shape_error(where, f"funding row {i} unusable: {row!r:.60}") from exc
    t_arr = np.array(times, dtype=np.int64)
    if t_arr.size > 1 and not bool((np.diff(t_arr) > 0).all()):
        raise shape_error(where, "funding times are not strictly increasing")
    return pd.DataFrame({"funding_time": t_arr, "funding_rate": np.array(rates, dtype=np.float64)})


DEFAULT_FUNDING_HOURS: Final[int] = 8
"""A USDT-M perpetual's funding interval unless ``fundingInfo`` lists another."""


def parse_funding_info(payload: object, *, where: str) -> dict[str, int]:
    """Binance ``fundingInfo`` (the symbols whose funding interval or rate cap was adjusted)
    -> funding interval hours per symbol. A wrong shape is ExchangeError."""
    if not isinstance(payload, list):
        raise shape_error(
            where, f"expected a list of fundingInfo rows, got {type(payload).__name__}"
        )
    hours: dict[str, int] = {}
    for i, row in enumerate(payload):
        sym = row.get("symbol") if isinstance(row, dict) else None
        h = row.get("fundingIntervalHours") if isinstance(row, dict) else None
        if not isinstance(sym, str) or not isinstance(h, int) or isinstance(h, bool) or h < 1:
            raise shape_error(where, f"fundingInfo row {i} unusable: {row!r:.80}")
        hours[sym] = h
    return hours


def parse_premium_index(payload: object, *, where: str) -> PremiumIndex:
    """Binance premiumIndex object -> :class:`PremiumIndex`."""
    try:
        if not isinstance(payload, dict):
            raise TypeError(type(payload).__name__)
        return PremiumIndex(
            symbol=str(payload["symbol"]),
            mark_price=float(payload["markPrice"]),
            index_price=float(payload["indexPrice"]),
            last_funding_rate=float(payload["lastFundingRate"]),
            next_funding_time_ms=int(payload["nextFundingTime"]),
            time_ms=int(payload["time"]),
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise shape_error(where, f"premiumIndex unusable: {payload!r:.60}") from exc


def parse_exchange_info(payload: object, *, where: str) -> ExchangeInfo:
    """Binance exchangeInfo -> :class:`ExchangeInfo`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("symbols"), list):
        raise shape_error(where, f"exchangeInfo without a symbols list: {payload!r:.60}")
    try:
        symbols = tuple(
            SymbolInfo(str(s["symbol"]), str(s.get("status", "TRADING")))
            for s in payload["symbols"]
        )
    except (TypeError, KeyError, AttributeError) as exc:
        raise shape_error(where, "exchangeInfo symbols entries lack 'symbol'") from exc
    limits = parse_rate_limits(payload.get("rateLimits", []))
    server_time = payload.get("serverTime")
    return ExchangeInfo(server_time if isinstance(server_time, int) else None, limits, symbols)
