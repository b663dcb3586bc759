"""Slow, plain-Python reference of the canonical benchmark workload (shared/bench/WORKLOAD.md).

Written for clarity, not speed: one explicit loop per symbol over the bars, no numba and no
vectorisation beyond pandas ``ewm`` for the indicators. The backtester is checked against this
module (trade list and portfolio returns to 1e-9), so every rule of the spec is spelled out here:

- EMA20/EMA50 of close (``ewm(span=n, adjust=False)``), Wilder ATR(14) (``ewm(alpha=1/14,
  adjust=False)`` of the true range, ``TR_0 = high_0 - low_0``).
- Events at ``50 <= t <= n - 50``: LONG when ``d_t > 0 >= d_{t-1}``, SHORT when
  ``d_t < 0 <= d_{t-1}``, ``d = EMA20 - EMA50``.
- Trade: entry at ``open[t+1]``, ``SL = P - side*1.5*ATR_t``, ``TP = P + side*3*ATR_t``, barriers
  on bars ``e .. e+47`` (entry bar included), SL before TP inside a bar, fill at the barrier or at
  the open when the bar opens beyond it; else exit at ``open[e+48]``.
- One position per symbol; an event is taken when the book is flat at its entry open (a barrier
  exit on a bar ``<= t`` or a time exit at the open of ``e`` itself).
- All-in compounding per symbol, book starting at 1, taker fee 0.04% per side; equity marked at
  every close (long ``units * close``, short ``cash - units * close``); portfolio = equal-weight
  mean of the books' equity curves.
- Sharpe = ``mean(r) / std(r, ddof=1) * sqrt(8760)`` over the portfolio's hourly returns.

Use :func:`run_reference` on in-memory frames or :func:`run_reference_folder` on a folder of
Parquet files (file stem = symbol).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FEE: float = 0.0004
"""Taker fee, fraction of traded notional, charged on entry and on exit."""
EMA_FAST: int = 20
EMA_SLOW: int = 50
ATR_N: int = 14
WARMUP: int = 50
HORIZON: int = 48
SL_ATR: float = 1.5
TP_ATR: float = 3.0
BARS_PER_YEAR_1H: int = 365 * 24

LONG: int = 1
SHORT: int = -1


@dataclass(frozen=True, slots=True)
class RefEvent:
    """One crossover event and its triple-barrier label (whether or not a trade took it)."""

    symbol: str
    signal_bar: int
    side: int
    label: int
    """+1 TP first, -1 SL first (a bar holding both counts as SL), 0 time barrier."""


@dataclass(frozen=True, slots=True)
class RefTrade:
    """A closed trade. Bars are row positions in the symbol's frame."""

    symbol: str
    side: int
    signal_bar: int
    entry_bar: int
    exit_bar: int
    """Bar in which the exit happened (barrier) or at whose open it happened (time exit)."""
    entry_time_ms: int
    exit_time_ms: int
    entry_price: float
    exit_price: float
    exit_reason: str
    """``"sl"``, ``"tp"`` or ``"time"``."""
    equity_before: float
    equity_after: float
    net_return: float
    """``equity_after / equity_before - 1``: both fees included."""


@dataclass(frozen=True, slots=True)
class ReferenceResult:
    """Everything the workload defines, plus the curves needed to check a backtester."""

    symbols: tuple[str, ...]
    bars: int
    """Total bars over all symbols."""
    events: tuple[RefEvent, ...]
    trades: tuple[RefTrade, ...]
    open_time_ms: np.ndarray
    """Portfolio bar times (int64 ms, bar open time)."""
    symbol_equity: Mapping[str, np.ndarray]
    """Each book's equity marked at every close of the portfolio's bars."""
    portfolio_equity: np.ndarray
    portfolio_returns: np.ndarray
    """Hourly returns ``equity[k] / equity[k-1] - 1`` for k = 1..N-1 (N-1 values)."""
    total_return: float
    win_rate: float
    sharpe: float

    @property
    def label_counts(self) -> dict[int, int]:
        counts = {-1: 0, 0: 0, 1: 0}
        for ev in self.events:
            counts[ev.label] += 1
        return counts


def load_folder(folder: Path) -> dict[str, pd.DataFrame]:
    """Read ``<folder>/*.parquet`` into frames with int64-ms ``open_time``, sorted, unique."""
    frames: dict[str, pd.DataFrame] = {}
    for path in sorted(Path(folder).glob("*.parquet")):
        df = pd.read_parquet(path)
        ot = df["open_time"]
        if pd.api.types.is_datetime64_any_dtype(ot):
            ms = (ot - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
            df = df.assign(open_time=ms.astype("int64"))
        else:
            df = df.assign(open_time=ot.astype("int64"))
        df = df.sort_values("open_time", kind="stable").drop_duplicates("open_time", keep="first")
        frames[path.stem] = df.reset_index(drop=True)
    if not frames:
        raise FileNotFoundError(f"no .parquet files in {folder}")
    return frames


def indicators(df: pd.DataFrame) -> tuple[list[float], list[float], list[float]]:
    """EMA20, EMA50 of close and Wilder ATR(14), as plain lists."""
    close = df["close"].astype("float64")
    high = df["high"].astype("float64").tolist()
    low = df["low"].astype("float64").tolist()
    closes = close.tolist()
    tr: list[float] = []
    for i in range(len(closes)):
        if i == 0:
            tr.append(high[0] - low[0])
        else:
            pc = closes[i - 1]
            tr.append(max(high[i] - low[i], abs(high[i] - pc), abs(low[i] - pc)))
    ema_fast = close.ewm(span=EMA_FAST, adjust=False).mean().tolist()
    ema_slow = close.ewm(span=EMA_SLOW, adjust=False).mean().tolist()
    atr = pd.Series(tr).ewm(alpha=1.0 / ATR_N, adjust=False).mean().tolist()
    return ema_fast, ema_slow, atr


def find_events(ema_fast: list[float], ema_slow: list[float]) -> list[tuple[int, int]]:
    """(bar, side) of every crossover at ``WARMUP <= t <= n - WARMUP``."""
    n = len(ema_fast)
    out: list[tuple[int, int]] = []
    for t in range(WARMUP, n - WARMUP + 1):
        d = ema_fast[t] - ema_slow[t]
        d_prev = ema_fast[t - 1] - ema_slow[t - 1]
        if d > 0 and d_prev <= 0:
            out.append((t, LONG))
        elif d < 0 and d_prev >= 0:
            out.append((t, SHORT))
    return out


def barrier_exit(
    side: int,
    entry_bar: int,
    entry_price: float,
    atr: float,
    open_: list[float],
    high: list[float],
    low: list[float],
) -> tuple[int, float, str]:
    """(exit bar, exit price, reason) of a trade entered at the open of ``entry_bar``."""
    sl = entry_price - side * SL_ATR * atr
    tp = entry_price + side * TP_ATR * atr
    for k in range(entry_bar, entry_bar + HORIZON):
        o = open_[k]
        if side == LONG:
            if low[k] <= sl:
                return k, (o if o <= sl else sl), "sl"
            if high[k] >= tp:
                return k, (o if o >= tp else tp), "tp"
        else:
            if high[k] >= sl:
                return k, (o if o >= sl else sl), "sl"
            if low[k] <= tp:
                return k, (o if o <= tp else tp), "tp"
    k = entry_bar + HORIZON
    return k, open_[k], "time"


def _simulate_symbol(
    symbol: str, df: pd.DataFrame
) -> tuple[list[RefEvent], list[RefTrade], list[float]]:
    ema_fast, ema_slow, atr = indicators(df)
    open_ = df["open"].astype("float64").tolist()
    high = df["high"].astype("float64").tolist()
    low = df["low"].astype("float64").tolist()
    close = df["close"].astype("float64").tolist()
    times = df["open_time"].astype("int64").tolist()
    n = len(close)

    events: list[RefEvent] = []
    trades: list[RefTrade] = []
    next_entry_min = 0  # first bar at whose open a new position may be opened
    equity = 1.0
    for t, side in find_events(ema_fast, ema_slow):
        e = t + 1
        price = open_[e]
        xbar, xprice, reason = barrier_exit(side, e, price, atr[t], open_, high, low)
        label = {"tp": 1, "sl": -1, "time": 0}[reason]
        events.append(RefEvent(symbol, t, side, label))
        if e < next_entry_min:
            continue
        x = xprice / price
        if side == LONG:
            net = x * (1.0 - FEE) / (1.0 + FEE) - 1.0
        else:
            net = ((1.0 - FEE) - x * (1.0 + FEE)) / (1.0 + FEE)
        after = equity * (1.0 + net)
        trades.append(
            RefTrade(
                symbol=symbol,
                side=side,
                signal_bar=t,
                entry_bar=e,
                exit_bar=xbar,
                entry_time_ms=times[e],
                exit_time_ms=times[xbar],
                entry_price=price,
                exit_price=xprice,
                exit_reason=reason,
                equity_before=equity,
                equity_after=after,
                net_return=net,
            )
        )
        equity = after
        # barrier exit inside bar xbar: flat from the next open; time exit at open of xbar
        next_entry_min = xbar if reason == "time" else xbar + 1

    # mark the book at every close
    curve = [1.0] * n
    flat_equity = 1.0
    k = 0
    for tr in trades:
        while k < tr.entry_bar:
            curve[k] = flat_equity
            k += 1
        units = tr.equity_before / (tr.entry_price * (1.0 + FEE))
        if tr.side == LONG:
            cash = tr.equity_before - units * tr.entry_price * (1.0 + FEE)
            while k < tr.exit_bar:
                curve[k] = cash + units * close[k]
                k += 1
        else:
            cash = tr.equity_before + units * tr.entry_price * (1.0 - FEE)
            while k < tr.exit_bar:
                curve[k] = cash - units * close[k]
                k += 1
        flat_equity = tr.equity_after
    while k < n:
        curve[k] = flat_equity
        k += 1
    return events, trades, curve


def run_reference(frames: Mapping[str, pd.DataFrame]) -> ReferenceResult:
    """Run the workload on ``{symbol: frame}`` (int64-ms ``open_time``, sorted, unique).

    When the symbols' bar times differ, the portfolio is marked on the union of the times:
    a book is worth 1 before its first bar and keeps its last mark where it has no bar.
    """
    symbols = tuple(sorted(frames))
    all_events: list[RefEvent] = []
    all_trades: list[RefTrade] = []
    curves: dict[str, pd.Series] = {}
    bars = 0
    for sym in symbols:
        df = frames[sym]
        bars += len(df)
        events, trades, curve = _simulate_symbol(sym, df)
        all_events.extend(events)
        all_trades.extend(trades)
        curves[sym] = pd.Series(curve, index=df["open_time"].astype("int64").to_numpy())

    times = sorted(set().union(*(set(c.index.tolist()) for c in curves.values())))
    symbol_equity: dict[str, np.ndarray] = {}
    for sym in symbols:
        c = curves[sym]
        if len(c) == len(times) and c.index.tolist() == times:
            symbol_equity[sym] = c.to_numpy(dtype="float64")
            continue
        marks: dict[int, float] = dict(zip(c.index.tolist(), c.tolist(), strict=True))
        aligned: list[float] = []
        last = 1.0
        for ts in times:
            last = marks.get(ts, last)
            aligned.append(last)
        symbol_equity[sym] = np.asarray(aligned, dtype="float64")

    n = len(times)
    portfolio = [0.0] * n
    for k in range(n):
        portfolio[k] = sum(float(symbol_equity[s][k]) for s in symbols) / len(symbols)
    returns = [portfolio[k] / portfolio[k - 1] - 1.0 for k in range(1, n)]
    wins = sum(1 for tr in all_trades if tr.equity_after > tr.equity_before)
    return ReferenceResult(
        symbols=symbols,
        bars=bars,
        events=tuple(all_events),
        trades=tuple(all_trades),
        open_time_ms=np.asarray(times, dtype="int64"),
        symbol_equity=symbol_equity,
        portfolio_equity=np.asarray(portfolio, dtype="float64"),
        portfolio_returns=np.asarray(returns, dtype="float64"),
        total_return=portfolio[-1] - 1.0,
        win_rate=wins / len(all_trades) if all_trades else math.nan,
        sharpe=_sharpe(returns),
    )


def run_reference_folder(folder: Path) -> ReferenceResult:
    """:func:`run_reference` on ``<folder>/*.parquet``."""
    return run_reference(load_folder(folder))


def _sharpe(returns: list[float]) -> float:
    m = len(returns)
    if m < 2:
        return math.nan
    mean = sum(returns) / m
    var = sum((r - mean) ** 2 for r in returns) / (m - 1)
    if var == 0.0:
        return math.nan
    return mean / math.sqrt(var) * math.sqrt(BARS_PER_YEAR_1H)
