"""The live loop's books: realised cash by bar time, and funding of perpetual positions.

Both follow the backtest's accounting (:mod:`atra.core.backtest.portfolio_nb`), so the live equity
mark at a bar close equals the backtest's:

* :class:`Ledger`: every fill's own cash (:class:`atra.live.paper.Broker`'s contract: minus the
  entry fee at the entry bar, each exit leg net of its fee at its bar, minus funding at the
  funding bar), summed by bar time. A late fill (a symbol that missed cycles, a funding rate
  published late) is inserted at its time.
* :class:`FundingBook`: the funding rates fetched per symbol and which ``(position, funding
  time)`` pairs were charged. At a funding time ``ft`` with ``entry_time < ft <= bar``, an open
  position pays ``side x remaining x mark x rate``, ``mark`` = the open of the latest bar at or
  before ``ft``, booked at the first bar opening at or after ``ft``.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.journal.records import FillRecord, PositionRecord
from atra.errors import DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

FUNDING_LEG: Final[str] = "funding:"
"""Fill ``leg`` prefix of a funding payment (``funding:<funding time ms>``)."""
FUNDING_PAGE: Final[int] = 1000
"""Binance's largest fundingRate page."""


class Ledger:
    """Realised cash by bar time: :meth:`before` is the sum of fills strictly before a time.

    Fills are kept in the order ``(time, client order id, leg)`` whatever order they arrive in,
    and summed in that order, so a run restarted from its journal adds up to the same bits as
    one that never stopped."""

    def __init__(self) -> None:
        self._keys: list[tuple[int, str, str]] = []
        self._pnls: list[float] = []
        self._cum: list[float] = [0.0]

    def add(self, time_ms: int, pnl: float, client_order_id: str = "", leg: str = "") -> None:
        key = (time_ms, client_order_id, leg)
        i = bisect.bisect_right(self._keys, key)
        self._keys.insert(i, key)
        self._pnls.insert(i, pnl)
        if i == len(self._keys) - 1:
            self._cum.append(self._cum[-1] + pnl)
        else:  # a late fill: rebuild the running sums
            self._cum = [0.0, *itertools.accumulate(self._pnls)]

    def before(self, time_ms: int) -> float:
        """Realised cash of every fill at a bar strictly before ``time_ms``."""
        return self._cum[bisect.bisect_left(self._keys, (time_ms, "", ""))]


class FundingBook:
    """Funding rates per symbol and the payments already charged."""

    def __init__(self) -> None:
        self._rates: dict[str, tuple[I64, F64]] = {}
        self._until: dict[str, int] = {}
        self._charged: set[tuple[str, int]] = set()
        self._paid: dict[str, float] = {}

    def restore(self, fills: Iterable[tuple[int, float, str, str]]) -> None:
        """Take the funding payments already journalled (``(time, pnl, cid, leg)`` rows)."""
        for _time, pnl, cid, leg in fills:
            if leg.startswith(FUNDING_LEG):
                self._charged.add((cid, int(leg[len(FUNDING_LEG) :])))
                self._paid[cid] = self._paid.get(cid, 0.0) - pnl

    def paid(self, position_id: str) -> float:
        """Funding ``position_id`` paid so far (negative: received)."""
        return self._paid.get(position_id, 0.0)

    def known_until(self, symbol: str) -> int | None:
        """Rates of ``symbol`` are known up to this time (inclusive); None: never fetched."""
        return self._until.get(symbol)

    def extend(self, symbol: str, frame: pd.DataFrame, *, start_ms: int, upto_ms: int) -> None:
        """Add a fetched page (``funding_time``, ``funding_rate``) of times in
        ``[start_ms, upto_ms]``. A full page may stop short of ``upto_ms``: then only what it
        holds counts as known."""
        ft = frame["funding_time"].to_numpy(np.int64)
        rate = frame["funding_rate"].to_numpy(np.float64)
        if ft.size and not bool(np.all(np.diff(ft) > 0)):
            raise DataError(f"funding {symbol}: funding_time not strictly increasing")
        if ft.size and (int(ft[0]) < start_ms or int(ft[-1]) > upto_ms):
            raise DataError(f"funding {symbol}: times outside {start_ms}..{upto_ms}")
        if not bool(np.all(np.isfinite(rate))):
            raise DataError(f"funding {symbol}: a funding_rate is not a finite number")
        old_t, old_r = self._rates.get(symbol, (np.empty(0, np.int64), np.empty(0, np.float64)))
        keep = ft > (int(old_t[-1]) if old_t.size else start_ms - 1)
        self._rates[symbol] = (
            np.concatenate([old_t, ft[keep]]),
            np.concatenate([old_r, rate[keep]]),
        )
        self._until[symbol] = int(ft[-1]) if len(frame) >= FUNDING_PAGE else upto_ms

    def charges(
        self,
        symbol: str,
        t_ms: int,
        positions: Iterable[PositionRecord],
        remaining: Callable[[PositionRecord], float],
        open_time: I64,
        open_: F64,
    ) -> list[FillRecord]:
        """Funding fills due at bar ``t_ms`` for ``symbol``'s open ``positions`` (marked on
        the candles ``open_time`` / ``open_``), each at most once; recorded as charged."""
        times, rates = self._rates.get(symbol, (np.empty(0, np.int64), np.empty(0, np.float64)))
        out: list[FillRecord] = []
        if not times.size:
            return out
        hi = int(np.searchsorted(times, t_ms, side="right"))
        for pos in positions:
            if pos.status != "open" or pos.entry_time_ms is None:
                continue
            for k in range(int(np.searchsorted(times, pos.entry_time_ms, side="right")), hi):
                ft = int(times[k])
                if (pos.position_id, ft) in self._charged:
                    continue
                i = int(np.searchsorted(open_time, ft, side="right")) - 1
                j = int(np.searchsorted(open_time, ft))
                if i < 0 or j >= open_time.size:
                    raise DataError(f"funding {symbol} at {ft}: no candle in the window to mark it")
                mark = float(open_[i])
                qty = remaining(pos)
                amount = pos.side * qty * mark * float(rates[k])
                out.append(
                    FillRecord(
                        pos.position_id,
                        f"{FUNDING_LEG}{ft}",
                        symbol,
                        int(open_time[j]),
                        mark,
                        qty,
                        0.0,
                        -amount,
                        "FUNDING",
                    )
                )
                self._charged.add((pos.position_id, ft))
                self._paid[pos.position_id] = self._paid.get(pos.position_id, 0.0) + amount
        return out
