"""WORKLOAD.md's benchmark backtest: :func:`run_workload` over numba loops.

WORKLOAD.md exactly: per symbol an independent all-in book starting at 1, one position at a
time, taker fee 0.04%, no leverage; equal-weight portfolio marked at every close of the grid.
Bars are positions in each symbol's own rows, as in the reference: on real data with gaps the
indicators run over the rows as they are (a gap is not a bar) and a trade's 48 bars are the
next 48 rows. Kernels in :mod:`atra.core.backtest.workload_nb`; every trade exits through the exit
kernel :func:`atra.core.exits.kernel.simulate_exit_nb`, as its triple-barrier label says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.backtest.grid_nb import grid_index_nb, portfolio_mean_nb
from atra.core.backtest.inputs import checked_columns
from atra.core.backtest.results import categorical
from atra.core.backtest.workload_nb import workload_symbol_nb
from atra.core.exits.kernel import REASON_NAMES
from atra.core.types import Timeframe
from atra.errors import ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_NAMES: Final[list[str]] = [REASON_NAMES[k] for k in sorted(REASON_NAMES)]


def _sharpe(returns: F64, timeframe: Timeframe) -> float:
    if returns.shape[0] < 2:
        return math.nan
    std = float(returns.std(ddof=1))
    if std == 0.0:
        return math.nan
    return float(returns.mean()) / std * timeframe.annualization_factor


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    """WORKLOAD.md's parameters (the defaults are the workload; change them for variants)."""

    ema_fast: int = 20
    ema_slow: int = 50
    atr_n: int = 14
    warmup_bars: int = 50
    """Events at ``warmup <= t <= n - warmup``."""
    horizon_bars: int = 48
    sl_atr: float = 1.5
    tp_atr: float = 3.0
    fee: float = 0.0004
    timeframe: Timeframe = Timeframe.H1
    """Annualises the Sharpe (``sqrt(bars_per_year)``; 1h -> sqrt(8760))."""

    def __post_init__(self) -> None:
        if not 1 <= self.ema_fast < self.ema_slow:
            raise ConfigError(
                f"need 1 <= ema_fast < ema_slow, got {self.ema_fast}, {self.ema_slow}"
            )
        if self.atr_n < 1 or self.warmup_bars < 1 or self.horizon_bars < 1:
            raise ConfigError("atr_n, warmup_bars and horizon_bars must be >= 1")
        if self.warmup_bars < self.horizon_bars + 1:
            raise ConfigError(
                f"warmup_bars ({self.warmup_bars}) must be >= horizon_bars + 1 "
                f"({self.horizon_bars + 1}): the tail keeps every time exit inside the data"
            )
        if not (self.sl_atr > 0.0 and self.tp_atr > 0.0):
            raise ConfigError(f"sl_atr and tp_atr must be > 0, got {self.sl_atr}, {self.tp_atr}")
        if not (math.isfinite(self.fee) and 0.0 <= self.fee < 0.01):
            raise ConfigError(f"fee must be a fraction in [0, 0.01), got {self.fee}")


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    """WORKLOAD.md's outputs plus the curves that check them."""

    symbols: tuple[str, ...]
    bars: int
    events: pd.DataFrame
    """``symbol, t, side, label`` for every event (taken or not); ``t`` a row of the symbol."""
    trades: pd.DataFrame
    """``symbol, side, signal_bar, entry_bar, exit_bar, entry_time_ms, exit_time_ms,
    entry_price, exit_price, reason (SL/TP1/TIME), equity_before, equity_after, net_return``."""
    open_time_ms: I64
    portfolio_equity: F64
    portfolio_returns: F64
    total_return: float
    win_rate: float
    sharpe: float
    timeframe: Timeframe

    @property
    def label_counts(self) -> dict[int, int]:
        lab = self.events["label"].to_numpy()
        return {k: int(np.count_nonzero(lab == k)) for k in (-1, 0, 1)}

    @property
    def annualization_factor(self) -> float:
        return self.timeframe.annualization_factor


def run_workload(
    candles: Mapping[str, pd.DataFrame], params: WorkloadParams | None = None
) -> WorkloadResult:
    """Run WORKLOAD.md on ``{symbol: candle frame}`` (int64 ms ``open_time``, sorted, unique).

    Win rate: share of trades with ``equity_after > equity_before``; Sharpe: ``mean / std
    (ddof=1) x sqrt(bars_per_year)`` of the portfolio's per-bar returns (flat bars included).
    """
    p = params if params is not None else WorkloadParams()
    symbols, cols = checked_columns(candles)
    n_sym = len(symbols)
    lengths = np.array([col[0].shape[0] for col in cols], np.int64)
    first = cols[0][0]
    one_calendar = all(np.array_equal(col[0], first) for col in cols[1:])
    end = np.cumsum(lengths)
    start = end - lengths
    # with one calendar the books are summed in place (symbol order), else marked per row
    marks = np.zeros(first.shape[0]) if one_calendar else np.empty(int(end[-1]))
    scratch_d = np.empty(int(lengths.max()))
    scratch_atr = np.empty(int(lengths.max()))
    parts = []
    for k, (_, o, h, lo, c) in enumerate(cols):
        target = marks if one_calendar else marks[int(start[k]) : int(end[k])]
        parts.append(
            workload_symbol_nb(
                o, h, lo, c, p.ema_fast, p.ema_slow, p.atr_n, p.warmup_bars, p.horizon_bars,
                p.sl_atr, p.tp_atr, p.fee, target, one_calendar, scratch_d, scratch_atr,
            )
        )  # fmt: skip
    codes = np.arange(n_sym, dtype=np.int64)

    def cat(values: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
        return np.concatenate(values)

    ev_sym = np.repeat(codes, [len(pp[0]) for pp in parts])
    tr_sym = np.repeat(codes, [len(pp[3]) for pp in parts])
    events = pd.DataFrame(
        {
            "symbol": categorical(ev_sym, symbols),
            "t": cat([pp[0] for pp in parts]),
            "side": cat([pp[1] for pp in parts]),
            "label": cat([pp[2] for pp in parts]),
        }
    )
    before = cat([pp[9] for pp in parts])
    after = cat([pp[10] for pp in parts])
    trades = pd.DataFrame(
        {
            "symbol": categorical(tr_sym, symbols),
            "side": cat([pp[1][pp[3]] for pp in parts]),
            "signal_bar": cat([pp[0][pp[3]] for pp in parts]),
            "entry_bar": cat([pp[4] for pp in parts]),
            "exit_bar": cat([pp[5] for pp in parts]),
            "entry_time_ms": cat([col[0][pp[4]] for col, pp in zip(cols, parts, strict=True)]),
            "exit_time_ms": cat([col[0][pp[5]] for col, pp in zip(cols, parts, strict=True)]),
            "entry_price": cat([pp[6] for pp in parts]),
            "exit_price": cat([pp[7] for pp in parts]),
            "reason": categorical(cat([pp[8] for pp in parts]), _NAMES),
            "equity_before": before,
            "equity_after": after,
            "net_return": cat([pp[11] for pp in parts]),
        }
    )
    if one_calendar:
        grid = first
        equity = marks / n_sym
    else:
        times = cat([col[0] for col in cols])
        grid = np.unique(times)
        bar_grid = grid_index_nb(times, start, end, grid)
        equity = portfolio_mean_nb(marks, bar_grid, start, end, int(grid.shape[0]), 1.0)
    returns = equity[1:] / equity[:-1] - 1.0
    n_tr = int(before.shape[0])
    return WorkloadResult(
        symbols=symbols,
        bars=int(end[-1]),
        events=events,
        trades=trades,
        open_time_ms=grid,
        portfolio_equity=equity,
        portfolio_returns=returns,
        total_return=float(equity[-1] - 1.0),
        win_rate=float(np.count_nonzero(after > before)) / n_tr if n_tr else math.nan,
        sharpe=_sharpe(returns, p.timeframe),
        timeframe=p.timeframe,
    )
