"""Binance's wire format, as the fake exchange's endpoints write and read it.

An error answer (:class:`Reject`: HTTP status and Binance's ``{"code", "msg"}``), numbers as
Binance writes them (:func:`fmt`, :func:`fixed`, :func:`padded` at a precision), the query
parameters it parses (``-1100 Illegal characters`` for a value that does not parse), and
candle / funding rows serialised once (:class:`Series`) and paged by ``startTime`` /
``endTime`` / ``limit`` (:func:`page`). Used by :mod:`atra.sim.exchange`,
:mod:`atra.sim.market_desk`, :mod:`atra.sim.order_desk` and :mod:`atra.sim.algo_desk`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd

from atra.core.types import Market, Timeframe

CandleKey = tuple[Market, str, Timeframe]
"""``(market, symbol, timeframe)`` of a served candle series."""


class Reject(Exception):
    """An error answer: HTTP ``status`` and Binance's error ``code`` and ``msg``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def fmt(x: float) -> str:
    """A number as the shortest string that reads back to the same float."""
    return repr(float(x))


def _illegal(name: str) -> Reject:
    return Reject(400, -1100, f"Illegal characters found in parameter '{name}'.")


def float_param(params: Mapping[str, str], name: str) -> float | None:
    """Parameter ``name`` as a finite float (None when absent)."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _illegal(name) from None
    if not math.isfinite(value):
        raise _illegal(name)
    return value


def bool_param(params: Mapping[str, str], name: str) -> bool:
    """Parameter ``name`` as ``true`` / ``false`` (case-insensitive; false when absent)."""
    raw = params.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise _illegal(name)
    return raw == "true"


def int_param(params: Mapping[str, str], name: str) -> int | None:
    """Parameter ``name`` as a non-negative integer of at most 20 digits (None when absent)."""
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise _illegal(name)
    return int(raw)


def fixed(x: float) -> str:
    """``x`` in plain decimal notation (``0.000000001``, not ``1e-09``), as Binance sends it."""
    return format(Decimal(repr(float(x))), "f")


def decimals(step: float) -> int:
    """The decimals of a step or tick (``0.001`` -> 3, ``1`` -> 0)."""
    exponent = Decimal(repr(float(step))).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def padded(x: float, places: int) -> str:
    """``x`` as a fixed-decimal string with at least ``places`` decimals (``0.4`` at 2 ->
    ``"0.40"``, ``0`` at 5 -> ``"0.00000"``), never rounded: it reads back to ``x``."""
    text = fixed(x)
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(places, "0")
    return f"{whole}.{frac}" if frac else whole


@dataclass(slots=True)
class Series:
    """A served series: its times and each row as Binance's JSON text."""

    times: np.ndarray  # int64 ms
    rows: list[str] = field(default_factory=list)
    last_close: float = 0.0
    last_rate: float = 0.0


def candle_series(frame: pd.DataFrame, step_ms: int) -> Series:
    """Candle rows as Binance's kline arrays (close time = open time + ``step_ms`` - 1)."""
    t = frame["open_time"].to_numpy(dtype=np.int64)
    cols = [frame[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")]
    rows = [
        f'[{ot},"{fmt(o)}","{fmt(h)}","{fmt(lo)}","{fmt(c)}","{fmt(v)}",{ot + step_ms - 1},'
        f'"0",0,"0","0","0"]'
        for ot, o, h, lo, c, v in zip(t.tolist(), *(col.tolist() for col in cols), strict=True)
    ]
    last = float(cols[3][-1]) if t.size else 0.0
    return Series(t, rows, last_close=last)


def funding_series(symbol: str, frame: pd.DataFrame) -> Series:
    """Funding rows as Binance's ``fundingRate`` objects."""
    t = frame["funding_time"].to_numpy(dtype=np.int64)
    r = frame["funding_rate"].to_numpy(dtype=np.float64)
    rows = [
        f'{{"symbol":"{symbol}","fundingTime":{ft},"fundingRate":"{fmt(fr)}","markPrice":""}}'
        for ft, fr in zip(t.tolist(), r.tolist(), strict=True)
    ]
    return Series(t, rows, last_rate=float(r[-1]) if r.size else 0.0)


def page(series: Series, params: Mapping[str, str], *, default: int, cap: int) -> str:
    """Rows with ``startTime <= t <= endTime``, at most ``limit``, as Binance pages them."""
    start = int_param(params, "startTime")
    end = int_param(params, "endTime")
    limit = min(int_param(params, "limit") or default, cap)
    if start is not None and end is not None and start > end:
        raise Reject(400, -1128, "startTime is after endTime.")
    if not series.rows:
        return "[]"
    lo = int(np.searchsorted(series.times, start, "left")) if start is not None else 0
    hi = int(np.searchsorted(series.times, end, "right")) if end is not None else len(series.rows)
    if start is not None:
        hi = min(hi, lo + limit)
    else:
        lo = max(lo, hi - limit)
    return "[" + ",".join(series.rows[lo:hi]) + "]"
