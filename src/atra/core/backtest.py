"""Portfolio backtests over many symbols, on the exit kernel; typed API over numba loops.

Two entry points (kernels in :mod:`atra.core.portfolio_nb`):

:func:`run_backtest` — the research / live-replay backtest. Shared equity across symbols.

* Events (one row per primary signal; the frame of :func:`atra.core.signals.generate_events`,
  possibly with a meta-model probability and a ``take`` decision column): ``symbol, t, side,
  sl_dist, tp1_dist, tp2_dist, horizon_bars``; ``t`` is the row of the signal bar in the
  symbol's candles. Rows whose decision column (``take`` by default) is False are not traded,
  so the same frame runs primary-only (no ``take`` column, or ``decision_column=None``) or
  meta-filtered.
* Entry at the next bar's open (``t + 1``, moved adversely by the slippage); the exit legs
  (SL / TP1 partial / TP2 / break-even / time barrier) come from
  :func:`atra.core.exits.simulate_exit_nb`, so a trade exits exactly as its label says. A
  trade whose barriers do not resolve before its symbol's data end is closed at the last close
  (reason ``END``).
* Sizing from what the decision at the signal bar ``t`` knows: the equity marked at ``t``'s
  close and the reference price ``R = close[t]`` moved adversely by the slippage (the fill
  at ``open[t + 1]`` is not known when the order's quantity is set; the live loop sizes the
  same way). Fixed-fractional risk (2% default) or ``kelly_multiplier`` x Kelly from a
  per-event probability column and the TP1/SL payoff, never above the 2% cap
  (:data:`atra.core.sizing.RISK_FRACTION_CAP`), and notional ``quantity x R`` <=
  ``sizing.max_leverage`` x equity. **Planned risk** of a trade (``risk_amount``) =
  ``quantity x risk_per_unit`` with stop ``S = R - side x sl_dist``: long
  ``R(1 + f_entry) - S(1 - slip)(1 - f_stop)``, short ``S(1 + slip)(1 + f_stop) - R(1 -
  f_entry)`` (the loss at the stop with both fees and the stop fill's slippage). The loss a
  stopped trade realises differs from it by the gap between ``close[t]`` and ``open[t + 1]``
  (none on most 24/7 bars, where the next open is the last close).
* Limits, checked in this order: ``max_positions`` open at once, ``max_per_symbol``, and the
  gross notional (open positions at their last close + the new one at ``R``) <=
  ``max_gross_leverage`` x equity. An event that breaks one is not traded; its ``outcome`` says why.
* Costs: ``CostModel`` taker fee on entry, stop, time and liquidation fills, maker fee on
  take-profits when ``tp_maker`` (else taker); slippage on market fills (entry, stops, time
  exit). Funding on perpetual symbols from real funding history: at each funding time ``ft``
  with ``entry_time < ft <= exit_time`` (times = bar open times of the entry / exit bars) a
  position pays ``side x quantity_open x mark x rate``, ``mark`` = the open of the symbol's
  latest bar at or before ``ft`` (positive rate: longs pay, shorts receive).
* Leverage (perps): isolated margin ``notional / leverage``; liquidation price long
  ``P(1 - 1/L)/(1 - mmr)``, short ``P(1 + 1/L)/(1 + mmr)``, checked on each bar's range from
  the entry bar to the kernel's exit bar (see ``first_liquidation_nb``). A liquidation ends the
  trade (or its remainder after a TP1 partial): the leg loses its margin plus a taker fee at the
  liquidation price; reason ``LIQ``.
* Equity marked at every close of the common time grid (the union of the symbols' open
  times): realised P&L plus open positions at their symbol's last close.

:func:`run_workload` — WORKLOAD.md exactly: per symbol an independent all-in book starting at
1, one position at a time, taker fee 0.04%, no leverage; equal-weight portfolio marked at every
close of the grid. Bars are positions in each symbol's own rows, as in the reference: on real
data with gaps the indicators run over the rows as they are (a gap is not a bar) and a
trade's 48 bars are the next 48 rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.costs import CostModel
from atra.core.exits import REASON_NAMES, event_arrays
from atra.core.portfolio_nb import (
    EV_BAD_STOP,
    EV_MAX_GROSS_LEVERAGE,
    EV_MAX_PER_SYMBOL,
    EV_MAX_POSITIONS,
    EV_NO_EDGE,
    EV_NO_ENTRY_BAR,
    EV_NO_EQUITY,
    EV_TAKEN,
    EV_ZERO_SIZE,
    REASON_END,
    REASON_LIQ,
    first_bad_series_nb,
    grid_index_nb,
    portfolio_mean_nb,
    portfolio_nb,
    workload_symbol_nb,
)
from atra.core.signals import CANDLE_COLUMNS, candle_arrays, infer_step_ms
from atra.core.sizing import SizingConfig
from atra.core.stats import PerformanceReport, TradeRecord, compute_stats
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")
_NAMES: Final[list[str]] = [REASON_NAMES[k] for k in sorted(REASON_NAMES)]

ALL_REASON_NAMES: Final[dict[int, str]] = {**REASON_NAMES, REASON_LIQ: "LIQ", REASON_END: "END"}
OUTCOME_NAMES: Final[dict[int, str]] = {
    EV_TAKEN: "taken",
    EV_NO_ENTRY_BAR: "no_entry_bar",
    EV_MAX_POSITIONS: "max_positions",
    EV_MAX_PER_SYMBOL: "max_per_symbol",
    EV_MAX_GROSS_LEVERAGE: "max_gross_leverage",
    EV_NO_EDGE: "no_edge",
    EV_NO_EQUITY: "no_equity",
    EV_BAD_STOP: "stop_not_positive",
    EV_ZERO_SIZE: "zero_size",
}
NOT_TAKEN_DECISION: Final[str] = "decision_false"
"""``outcome`` of an event whose decision column is False."""
EVENT_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "t",
    "side",
    "sl_dist",
    "tp1_dist",
    "tp2_dist",
    "horizon_bars",
)
TRADE_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "side",
    "event_row",
    "signal_time_ms",
    "entry_bar",
    "entry_time_ms",
    "entry_price",
    "exit_bar",
    "exit_time_ms",
    "exit_price",
    "reason",
    "leg1_bar",
    "leg1_price",
    "leg1_fraction",
    "leg1_reason",
    "leg2_bar",
    "leg2_price",
    "leg2_fraction",
    "leg2_reason",
    "quantity",
    "notional",
    "pnl",
    "fees",
    "slippage",
    "funding",
    "risk_amount",
    "equity_at_entry",
    "label",
    "label_ret",
)


# --------------------------------------------------------------------------------------------
# candles -> concatenated arrays


@dataclass(frozen=True, slots=True)
class CandleBundle:
    """Several symbols' candles concatenated (symbol ``k`` owns rows ``start[k]:end[k]``)."""

    symbols: tuple[str, ...]
    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64
    start: I64
    end: I64
    grid_time: I64
    """Union of the symbols' open times, sorted."""
    row_grid: I64 | None
    """Position of each row's open time in ``grid_time``; None with one calendar (then it is
    the row's position in its symbol: see :meth:`bar_grid`)."""
    one_calendar: bool
    """Every symbol has the same open times (then ``grid_time`` is any symbol's times)."""

    @property
    def bars(self) -> int:
        return int(self.open_time.shape[0])

    def bar_grid(self) -> I64:
        """Position of each row's open time in ``grid_time``."""
        if self.row_grid is not None:
            return self.row_grid
        n = self.grid_time.shape[0]
        return np.tile(np.arange(n, dtype=np.int64), len(self.symbols))

    def rows(self, symbol: str) -> slice:
        k = self.symbols.index(symbol)
        return slice(int(self.start[k]), int(self.end[k]))


Columns = tuple[I64, F64, F64, F64, F64]
"""``open_time, open, high, low, close`` of one symbol."""


def checked_columns(candles: Mapping[str, pd.DataFrame]) -> tuple[tuple[str, ...], list[Columns]]:
    """Symbols in sorted order and each frame's columns as arrays (views where the dtypes
    already match), checked against the candle contract.

    One compiled pass per symbol checks the rows (``open_time`` strictly increasing, prices
    finite and > 0); a frame that fails is handed to :func:`atra.core.signals.candle_arrays`,
    whose one-line :class:`DataError` names the symbol, column and row.
    """
    if not candles:
        raise DataError("candles: no symbol given")
    symbols = tuple(sorted(candles))
    out: list[Columns] = []
    start = np.zeros(1, np.int64)
    for sym in symbols:
        df = candles[sym]
        if len(df) == 0:
            raise DataError(f"candles {sym}: no rows")
        if any(c not in df.columns for c in CANDLE_COLUMNS) or not (
            pd.api.types.is_integer_dtype(df["open_time"].dtype)
        ):
            candle_arrays(df, sym)  # raises the one-line error
        times = df["open_time"].to_numpy(dtype=np.int64)
        o, h, lo, c = (df[col].to_numpy(dtype=np.float64) for col in _PRICE_COLUMNS)
        end = np.array([times.shape[0]], np.int64)
        if first_bad_series_nb(times, o, h, lo, c, start, end) >= 0:
            candle_arrays(df, sym)  # raises the one-line error naming the row
            raise DataError(f"candles {sym}: invalid rows")
        out.append((times, o, h, lo, c))
    return symbols, out


def bundle_candles(candles: Mapping[str, pd.DataFrame]) -> CandleBundle:
    """:func:`checked_columns`, concatenated in sorted symbol order, with the union grid."""
    symbols, cols = checked_columns(candles)
    lengths = np.array([c[0].shape[0] for c in cols], np.int64)
    end = np.cumsum(lengths)
    start = end - lengths
    times, o, h, lo, c = (np.concatenate([col[k] for col in cols]) for k in range(5))
    first = cols[0][0]
    one_calendar = all(np.array_equal(col[0], first) for col in cols[1:])
    if one_calendar:
        grid = first.copy()  # one calendar: the grid is any symbol's times
        bar_grid = None
    else:
        grid = np.unique(times)
        bar_grid = grid_index_nb(times, start, end, grid)
    return CandleBundle(
        symbols=symbols,
        open_time=times,
        open=o,
        high=h,
        low=lo,
        close=c,
        start=start,
        end=end,
        grid_time=grid,
        row_grid=bar_grid,
        one_calendar=one_calendar,
    )


def _categorical(codes: npt.NDArray[np.integer[Any]], names: Sequence[str]) -> pd.Categorical:
    categories: pd.Index[Any] = pd.Index(list(names))
    return pd.Categorical.from_codes(codes.astype(np.int64), categories=categories)


def _sharpe(returns: F64, timeframe: Timeframe) -> float:
    if returns.shape[0] < 2:
        return math.nan
    std = float(returns.std(ddof=1))
    if std == 0.0:
        return math.nan
    return float(returns.mean()) / std * timeframe.annualization_factor


# --------------------------------------------------------------------------------------------
# WORKLOAD.md


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
            "symbol": _categorical(ev_sym, symbols),
            "t": cat([pp[0] for pp in parts]),
            "side": cat([pp[1] for pp in parts]),
            "label": cat([pp[2] for pp in parts]),
        }
    )
    before = cat([pp[9] for pp in parts])
    after = cat([pp[10] for pp in parts])
    trades = pd.DataFrame(
        {
            "symbol": _categorical(tr_sym, symbols),
            "side": cat([pp[1][pp[3]] for pp in parts]),
            "signal_bar": cat([pp[0][pp[3]] for pp in parts]),
            "entry_bar": cat([pp[4] for pp in parts]),
            "exit_bar": cat([pp[5] for pp in parts]),
            "entry_time_ms": cat([col[0][pp[4]] for col, pp in zip(cols, parts, strict=True)]),
            "exit_time_ms": cat([col[0][pp[5]] for col, pp in zip(cols, parts, strict=True)]),
            "entry_price": cat([pp[6] for pp in parts]),
            "exit_price": cat([pp[7] for pp in parts]),
            "reason": _categorical(cat([pp[8] for pp in parts]), _NAMES),
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


# --------------------------------------------------------------------------------------------
# the shared-equity portfolio backtest


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """Parameters of :func:`run_backtest`, validated on construction (:class:`ConfigError`)."""

    initial_equity: float = 10_000.0
    sizing: SizingConfig = field(default_factory=SizingConfig)
    """Risk fraction (2%), cap (<= 2%), Kelly multiplier, per-position notional cap
    (``max_leverage``). Its ``fee_rate`` is not used: the risk counts the actual fees."""
    costs: CostModel = field(default_factory=CostModel)
    tp_maker: bool = False
    """Take-profit fills pay the maker fee (resting limit orders) instead of the taker fee."""
    tp1_fraction: float = 1.0
    move_to_be: bool = False
    max_positions: int = 10
    max_per_symbol: int = 1
    max_gross_leverage: float = 1.0
    leverage: float = 1.0
    """Margin leverage of perpetual positions (isolated margin = notional / leverage)."""
    maintenance_margin_rate: float = 0.005
    probability_column: str | None = None
    """Per-event probability column (e.g. the meta model's ``p_take``): Kelly sizing when set."""
    decision_column: str | None = "take"
    """Bool column; rows with False are not traded. Ignored when absent or None."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_equity) and self.initial_equity > 0.0):
            raise ConfigError(f"initial_equity must be > 0, got {self.initial_equity}")
        if not 0.0 < self.tp1_fraction <= 1.0:
            raise ConfigError(f"tp1_fraction must be in (0, 1], got {self.tp1_fraction}")
        if self.max_positions < 1 or self.max_per_symbol < 1:
            raise ConfigError(
                f"max_positions ({self.max_positions}) and max_per_symbol "
                f"({self.max_per_symbol}) must be >= 1"
            )
        gross = self.max_gross_leverage
        if not (math.isfinite(gross) and gross > 0.0):
            raise ConfigError(f"max_gross_leverage must be a finite number > 0, got {gross}")
        if not (math.isfinite(self.leverage) and self.leverage >= 1.0):
            raise ConfigError(f"leverage must be a finite number >= 1, got {self.leverage}")
        mmr = self.maintenance_margin_rate
        if not (math.isfinite(mmr) and 0.0 <= mmr < 0.5):
            raise ConfigError(f"maintenance_margin_rate must be in [0, 0.5), got {mmr}")


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Trades, the events' outcomes and the equity curve of one backtest."""

    trades: pd.DataFrame
    """One row per trade (``TRADE_COLUMNS``), in entry order; bars are rows of the symbol's
    candles, ``exit_*`` the final leg, ``label`` / ``label_ret`` what the triple-barrier label
    of the event says (exit kernel, no leverage or liquidation)."""
    events: pd.DataFrame
    """The input events with an ``outcome`` column (``taken``, a limit's name, ...)."""
    open_time_ms: I64
    equity: F64
    """Equity marked at every close of the grid."""
    gross_leverage: F64
    """Open notional at the close / equity."""
    n_open: I64
    initial_equity: float
    timeframe: Timeframe

    @property
    def returns(self) -> F64:
        """Per-bar returns of the equity, starting from the initial equity (N values)."""
        prev = np.concatenate(([self.initial_equity], self.equity[:-1]))
        return np.asarray(self.equity / prev - 1.0, dtype=np.float64)

    @property
    def final_equity(self) -> float:
        return float(self.equity[-1])

    def equity_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "open_time": self.open_time_ms,
                "equity": self.equity,
                "returns": self.returns,
                "gross_leverage": self.gross_leverage,
                "n_open": self.n_open,
            }
        )

    def trade_records(self) -> list[TradeRecord]:
        tr = self.trades
        return [
            TradeRecord(
                str(s),
                float(q),
                float(pi),
                float(po),
                int(ti),
                int(to),
                float(p),
                float(f),
                float(sl),
                float(fu),
            )
            for s, q, pi, po, ti, to, p, f, sl, fu in zip(
                tr["symbol"],
                tr["quantity"],
                tr["entry_price"],
                tr["exit_price"],
                tr["entry_time_ms"],
                tr["exit_time_ms"],
                tr["pnl"],
                tr["fees"],
                tr["slippage"],
                tr["funding"],
                strict=True,
            )
        ]

    def stats(
        self,
        timeframe: Timeframe | None = None,
        *,
        n_trials: int = 1,
        benchmark_sharpe: float = 0.0,
        trials_sharpe_variance: float = 0.0,
    ) -> PerformanceReport:
        """:func:`atra.core.stats.compute_stats` on the curve (the initial equity prepended)
        and the trades. Annualised with ``sqrt(timeframe.bars_per_year)`` (365-day year; 1h ->
        sqrt(8760) = 93.59), carried in ``report.returns.annualization_factor``."""
        tf = timeframe if timeframe is not None else self.timeframe
        equity = np.concatenate(([self.initial_equity], self.equity))
        held = np.concatenate(([False], self.n_open > 0))
        return compute_stats(
            equity,
            tf,
            self.trade_records(),
            in_position=held,
            benchmark_sharpe=benchmark_sharpe,
            n_trials=n_trials,
            trials_sharpe_variance=trials_sharpe_variance,
        )

    def trades_sha256(self) -> str:
        """SHA-256 of the trade list (values, in order): a run's fingerprint."""
        digest = hashlib.sha256()
        for col in TRADE_COLUMNS:
            values = self.trades[col]
            digest.update(col.encode())
            digest.update(values.astype(str).str.cat(sep="|").encode())
        return digest.hexdigest()


def _funding_arrays(
    cb: CandleBundle,
    perp: npt.NDArray[np.bool_],
    funding: Mapping[str, pd.DataFrame],
) -> tuple[I64, F64, I64, I64, I64]:
    times: list[I64] = []
    rates: list[F64] = []
    bars: list[I64] = []
    lengths: list[int] = []
    for k, sym in enumerate(cb.symbols):
        if not perp[k]:
            lengths.append(0)
            continue
        if sym not in funding:
            raise DataError(f"funding: perpetual symbol {sym} has no funding history")
        fr = funding[sym]
        for col in ("funding_time", "funding_rate"):
            if col not in fr.columns:
                raise DataError(f"funding {sym}: missing column {col}")
        if not pd.api.types.is_integer_dtype(fr["funding_time"].dtype):
            raise DataError(f"funding {sym}: funding_time must be int64 epoch milliseconds")
        ft = fr["funding_time"].to_numpy(dtype=np.int64)
        rate = fr["funding_rate"].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.diff(ft) <= 0)
        if bad.size:
            raise DataError(
                f"funding {sym}: funding_time not strictly increasing at row {bad[0] + 1}"
            )
        nonfinite = np.flatnonzero(~np.isfinite(rate))
        if nonfinite.size:
            row = int(nonfinite[0])
            raise DataError(f"funding {sym}: funding_rate[{row}] = {rate[row]}, expected finite")
        rows = cb.rows(sym)
        local = np.searchsorted(cb.open_time[rows], ft, side="right") - 1
        bars.append(rows.start + np.maximum(local, 0))
        times.append(ft)
        rates.append(rate)
        lengths.append(int(ft.shape[0]))
    fend = np.cumsum(np.asarray(lengths, np.int64))
    fstart = fend - np.asarray(lengths, np.int64)
    if times:
        return (np.concatenate(times), np.concatenate(rates), np.concatenate(bars), fstart, fend)
    return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), fstart, fend


def run_backtest(
    candles: Mapping[str, pd.DataFrame],
    events: pd.DataFrame,
    config: BacktestConfig | None = None,
    *,
    funding: Mapping[str, pd.DataFrame] | None = None,
    markets: Mapping[str, Market] | None = None,
    timeframe: Timeframe | None = None,
) -> BacktestResult:
    """Backtest ``events`` on ``candles`` (``{symbol: frame}``) with shared equity.

    ``markets``: the market of each symbol (default: PERP for the symbols in ``funding``, SPOT
    for the others); a perpetual needs its funding frame (``funding_time`` int64 ms,
    ``funding_rate``). ``timeframe`` (default: inferred from the bar spacing) annualises the
    statistics. See the module docstring for the rules.
    """
    cfg = config if config is not None else BacktestConfig()
    fund = dict(funding) if funding is not None else {}
    cb = bundle_candles(candles)
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise DataError(f"events: missing column(s) {', '.join(missing)}")
    perp = np.array(
        [
            (
                markets[s]
                if markets is not None and s in markets
                else (Market.PERP if s in fund else Market.SPOT)
            )
            is Market.PERP
            for s in cb.symbols
        ],
        dtype=np.bool_,
    )
    n_ev = len(events)
    ev_sym_names = events["symbol"].astype(str).to_numpy()
    unknown = sorted(set(ev_sym_names.tolist()) - set(cb.symbols))
    if unknown:
        raise DataError(f"events: symbol {unknown[0]!r} has no candles")
    sym_index = {s: k for k, s in enumerate(cb.symbols)}
    ev_sym = np.fromiter((sym_index[s] for s in ev_sym_names), np.int64, n_ev)
    t = events["t"].to_numpy()
    if n_ev and not np.issubdtype(t.dtype, np.integer):
        raise DataError(f"events: column t has dtype {t.dtype}, expected integer bar indices")
    t = t.astype(np.int64)
    arrays = event_arrays(
        t + 1,
        events["side"].to_numpy(),
        events["sl_dist"].to_numpy(),
        events["tp1_dist"].to_numpy(),
        events["tp2_dist"].to_numpy(),
        events["horizon_bars"].to_numpy(),
    )
    n_bars = cb.end[ev_sym] - cb.start[ev_sym]
    bad = np.flatnonzero((t < 0) | (t >= n_bars))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"events row {row}: t = {t[row]} is not a bar of {ev_sym_names[row]} "
            f"(0..{n_bars[row] - 1})"
        )
    prob = np.full(n_ev, np.nan)
    if cfg.probability_column is not None:
        if cfg.probability_column not in events.columns:
            raise DataError(f"events: missing probability column {cfg.probability_column}")
        prob = events[cfg.probability_column].to_numpy(dtype=np.float64)
        badp = np.flatnonzero(~((prob >= 0.0) & (prob <= 1.0)))
        if badp.size:
            row = int(badp[0])
            raise DataError(
                f"events row {row}: {cfg.probability_column} = {prob[row]}, "
                "expected a probability in [0, 1]"
            )
    decide = np.ones(n_ev, np.bool_)
    if cfg.decision_column is not None and cfg.decision_column in events.columns:
        col = events[cfg.decision_column]
        if not pd.api.types.is_bool_dtype(col.dtype):
            raise DataError(
                f"events: column {cfg.decision_column} has dtype {col.dtype}, expected bool"
            )
        decide = col.to_numpy(dtype=np.bool_)
    has_entry = t + 1 < n_bars
    use = np.flatnonzero(decide & has_entry)
    entry_row = cb.start[ev_sym] + t + 1
    bar_grid = cb.bar_grid()
    order = use[np.argsort(bar_grid[entry_row[use]], kind="stable")]
    ft, fr, fb, fs, fe = _funding_arrays(cb, perp, fund)
    sz = cfg.sizing
    costs = cfg.costs
    out = portfolio_nb(
        cb.open,
        cb.high,
        cb.low,
        cb.close,
        cb.open_time,
        bar_grid,
        cb.start,
        cb.end,
        perp,
        cb.grid_time,
        ft,
        fr,
        fb,
        fs,
        fe,
        ev_sym[order],
        entry_row[order],
        arrays.side[order],
        arrays.sl_dist[order],
        arrays.tp1_dist[order],
        arrays.tp2_dist[order],
        arrays.horizon_bars[order],
        prob[order],
        float(cfg.initial_equity),
        float(sz.risk_fraction),
        float(sz.risk_fraction_cap),
        float(sz.kelly_multiplier),
        float(sz.max_leverage),
        float(cfg.max_gross_leverage),
        float(cfg.leverage),
        float(cfg.maintenance_margin_rate),
        int(cfg.max_positions),
        int(cfg.max_per_symbol),
        float(cfg.tp1_fraction),
        bool(cfg.move_to_be),
        float(costs.taker_fee_rate),
        float(costs.maker_fee_rate if cfg.tp_maker else costs.taker_fee_rate),
        float(costs.taker_fee_rate),
        float(costs.slippage_bps) / 1e4,
    )
    (
        outcome,
        qty,
        eq_entry,
        risk,
        entry_px,
        lret,
        b1,
        p1,
        f1,
        c1,
        b2,
        p2,
        f2,
        c2,
        fees,
        slip,
        fund_paid,
        pnl,
        label,
        equity,
        gross,
        n_open,
    ) = out

    outcome_all = np.full(n_ev, NOT_TAKEN_DECISION, dtype=object)
    outcome_all[~has_entry] = OUTCOME_NAMES[EV_NO_ENTRY_BAR]
    outcome_all[order] = [OUTCOME_NAMES[int(c)] for c in outcome]
    events_out = events.copy()
    events_out["outcome"] = pd.Categorical(
        outcome_all, categories=[*OUTCOME_NAMES.values(), NOT_TAKEN_DECISION]
    )

    taken = np.flatnonzero(outcome == EV_TAKEN)
    rows = order[taken]
    sym = ev_sym[rows]
    base = cb.start[sym]
    has2 = b2[taken] >= 0
    fb1 = b1[taken]
    fb2 = np.where(has2, b2[taken], fb1)
    exit_price = np.where(has2, p2[taken], p1[taken])
    final_code = np.where(has2, c2[taken], c1[taken])
    names = list(ALL_REASON_NAMES.values())

    def reasons(codes: npt.NDArray[np.int8]) -> pd.Categorical:
        return _categorical(codes, names)

    leg2_bar = pd.array(np.where(has2, b2[taken] - base, 0), dtype="Int64")
    leg2_bar[~has2] = pd.NA
    q = qty[taken]
    trades = pd.DataFrame(
        {
            "symbol": pd.Series(np.asarray(cb.symbols, dtype=object)[sym], dtype=object),
            "side": arrays.side[rows],
            "event_row": events.index.to_numpy()[rows],
            "signal_time_ms": cb.open_time[base + t[rows]],
            "entry_bar": t[rows] + 1,
            "entry_time_ms": cb.open_time[base + t[rows] + 1],
            "entry_price": entry_px[taken],
            "exit_bar": fb2 - base,
            "exit_time_ms": cb.open_time[fb2],
            "exit_price": exit_price,
            "reason": reasons(final_code),
            "leg1_bar": fb1 - base,
            "leg1_price": p1[taken],
            "leg1_fraction": f1[taken],
            "leg1_reason": reasons(c1[taken]),
            "leg2_bar": leg2_bar,
            "leg2_price": p2[taken],
            "leg2_fraction": f2[taken],
            "leg2_reason": reasons(c2[taken]),
            "quantity": q,
            "notional": q * entry_px[taken],
            "pnl": pnl[taken],
            "fees": fees[taken],
            "slippage": slip[taken],
            "funding": fund_paid[taken],
            "risk_amount": risk[taken],
            "equity_at_entry": eq_entry[taken],
            "label": label[taken],
            "label_ret": lret[taken],
        }
    )
    if timeframe is not None:
        tf = timeframe
    elif cb.grid_time.shape[0] > 1:
        tf = Timeframe.from_ms(infer_step_ms(cb.grid_time))
    else:
        tf = Timeframe.H1
    return BacktestResult(
        trades=trades,
        events=events_out,
        open_time_ms=cb.grid_time,
        equity=equity,
        gross_leverage=gross,
        n_open=n_open,
        initial_equity=float(cfg.initial_equity),
        timeframe=tf,
    )
