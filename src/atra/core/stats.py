"""Performance statistics from an equity curve (or per-bar returns) and a trade list.

Annualisation follows the bar size on a 24/7, 365-day year (never 252 trading days):
``bars_per_year = Timeframe.bars_per_year`` (1h -> 8,760, 1d -> 365) and

- Sharpe  = mean(r) / std(r, ddof=1) x sqrt(bars_per_year), no risk-free rate;
- Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(bars_per_year) (target 0, all bars);
- volatility = std(r, ddof=1) x sqrt(bars_per_year);
- CAGR = (end / start) ^ (bars_per_year / n_returns) - 1;
- Calmar = CAGR / |max drawdown|.

``sqrt(bars_per_year)`` is carried in the result (``annualization_factor``) so reports print it.

Undefined values are NaN, never inf, except the profit factor: a Sharpe or Sortino with zero
(downside) deviation is NaN (a standard deviation under 1e-12 x |mean| counts as zero: it is
the float noise of a constant return rebuilt from an equity curve), a Calmar without drawdown
is NaN, averages over no trades are NaN.
The profit factor of trades that only win is ``inf`` (gross loss 0); with no trades it is NaN.
CAGR (and Calmar) is ``inf`` when the annualised growth overflows a float (a short, very
profitable series: +50% in 2 hours).
``to_dict()`` turns NaN into ``None`` and ``±inf`` into ``"inf"`` / ``"-inf"`` for strict JSON.

Probabilistic Sharpe ratio (Bailey & Lopez de Prado, 2012), per-bar Sharpe ``SR``, ``n``
returns, skewness ``g3`` and (non-excess) kurtosis ``g4`` of the returns::

    PSR(SR*) = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))

Deflated Sharpe ratio (Bailey & Lopez de Prado, 2014): ``PSR(SR0)`` with the expected maximum
Sharpe of ``N`` trials whose Sharpes have variance ``V`` (Euler–Mascheroni ``gamma``)::

    SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))

The public arguments ``benchmark_sharpe`` and ``trials_sharpe_variance`` are annualised (the
units reports print); they are converted to per-bar units inside.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

EULER_MASCHERONI: Final[float] = 0.5772156649015329
_NORMAL: Final[NormalDist] = NormalDist()
_MINUTES_PER_DAY: Final[float] = 1440.0
_MAX_LOG_FLOAT: Final[float] = math.log(np.finfo(np.float64).max)
_ZERO_STD_REL: Final[float] = 1e-12
"""A standard deviation below this share of |mean| is float noise of a constant return."""

FloatArray = npt.NDArray[np.float64]
ArrayLike = Sequence[float] | npt.NDArray[Any] | pd.Series


class TradeLike(Protocol):
    """A closed trade as the statistics need it. ``pnl`` is net of fees, slippage and funding;
    ``fees``/``slippage``/``funding`` are the amounts paid (quote currency)."""

    @property
    def symbol(self) -> str: ...
    @property
    def quantity(self) -> float: ...
    @property
    def entry_price(self) -> float: ...
    @property
    def exit_price(self) -> float: ...
    @property
    def entry_time_ms(self) -> int: ...
    @property
    def exit_time_ms(self) -> int: ...
    @property
    def pnl(self) -> float: ...
    @property
    def fees(self) -> float: ...
    @property
    def slippage(self) -> float: ...
    @property
    def funding(self) -> float: ...


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """A plain closed-trade record satisfying :class:`TradeLike`."""

    symbol: str
    quantity: float
    entry_price: float
    exit_price: float
    entry_time_ms: int
    exit_time_ms: int
    pnl: float
    fees: float = 0.0
    slippage: float = 0.0
    funding: float = 0.0


def trade_records_of(columns: Sequence[Sequence[Any]]) -> list[TradeRecord]:
    """:class:`TradeRecord` rows from ten parallel columns in the record's field order
    (symbol, quantity, entry / exit price, entry / exit time, pnl, fees, slippage, funding)."""
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
        for s, q, pi, po, ti, to, p, f, sl, fu in zip(*columns, strict=True)
    ]


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class ReturnStats:
    """Statistics of a return series. Fractions, not percent (0.05 = 5%)."""

    timeframe: str
    n_returns: int
    bars_per_year: int
    annualization_factor: float
    """sqrt(bars_per_year): per-bar Sharpe x this = annual Sharpe."""
    years: float
    total_return: float
    cagr: float
    volatility: float
    """Annualised standard deviation of the per-bar returns (ddof=1)."""
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    """Deepest fall from a running peak, <= 0 (-0.25 = a quarter of the peak lost)."""
    max_drawdown_bars: int
    """Bars from the peak before the max drawdown to its recovery (or to the last bar)."""
    max_drawdown_days: float
    max_drawdown_recovered: bool
    longest_drawdown_bars: int
    """Longest stretch from any peak to its recovery (or to the last bar), in bars."""
    longest_drawdown_days: float
    skew: float
    kurtosis: float
    """Non-excess (Pearson) kurtosis: 3 for a normal distribution."""
    benchmark_sharpe: float
    psr: float
    """P(true Sharpe > benchmark_sharpe)."""
    n_trials: int
    trials_sharpe_variance: float
    expected_max_sharpe: float
    """Annualised expected maximum Sharpe of ``n_trials`` unskilled trials."""
    dsr: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_value(asdict(self))
        return out


@dataclass(frozen=True, slots=True)
class TradeStats:
    """Statistics of a trade list. P&L amounts in the quote currency."""

    n_trades: int
    wins: int
    losses: int
    """Trades with pnl < 0; a trade with pnl == 0 is neither a win nor a loss."""
    win_rate: float
    avg_win: float
    avg_loss: float
    """Mean size of the losing trades, a positive number."""
    payoff_ratio: float
    """avg_win / avg_loss (the Kelly ``R``)."""
    profit_factor: float
    """Gross profit / gross loss; inf when there is no loss, NaN with no trades."""
    expectancy: float
    """Mean pnl per trade."""
    total_pnl: float
    fees_paid: float
    slippage_paid: float
    funding_paid: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_value(asdict(self))
        return out


@dataclass(frozen=True, slots=True)
class SymbolStats:
    """Per-symbol breakdown of the trades."""

    symbol: str
    n_trades: int
    win_rate: float
    total_pnl: float
    expectancy: float
    profit_factor: float
    fees_paid: float
    slippage_paid: float
    funding_paid: float


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    """Everything :func:`compute_stats` measures."""

    returns: ReturnStats
    trades: TradeStats
    per_symbol: tuple[SymbolStats, ...]
    initial_equity: float
    final_equity: float
    exposure: float
    """Share of bars with an open position (NaN when it cannot be known)."""
    turnover: float
    """Traded notional (entries + exits) / mean equity, over the whole period."""
    turnover_per_year: float
    trades_per_day: float
    costs_fraction_of_initial_equity: float
    """(fees + slippage + funding) / initial equity."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_value(asdict(self))
        return out


# --------------------------------------------------------------------------------------------
# Sharpe inference


def probabilistic_sharpe_ratio(
    sharpe: float, benchmark_sharpe: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """PSR: probability that the true Sharpe exceeds ``benchmark_sharpe``.

    ``sharpe`` and ``benchmark_sharpe`` in per-observation (non-annualised) units; ``kurtosis``
    non-excess. NaN when undefined (fewer than 2 observations, non-finite inputs, or a
    non-positive variance term).
    """
    if n_obs < 2 or not all(map(math.isfinite, (sharpe, benchmark_sharpe, skew, kurtosis))):
        return math.nan
    var_term = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if var_term <= 0.0:
        return math.nan
    z = (sharpe - benchmark_sharpe) * math.sqrt(n_obs - 1) / math.sqrt(var_term)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum Sharpe of ``n_trials`` unskilled trials with Sharpe variance ``V``.

    Same units as ``sqrt(sharpe_variance)``; 0 for a single trial.
    """
    if n_trials < 1:
        raise ConfigError(f"n_trials={n_trials}: expected at least 1 configuration tried")
    if not math.isfinite(sharpe_variance) or sharpe_variance < 0.0:
        raise ConfigError(f"trials_sharpe_variance={sharpe_variance!r}: expected >= 0")
    if n_trials == 1:
        return 0.0
    g = EULER_MASCHERONI
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sharpe_variance) * ((1.0 - g) * z1 + g * z2)


def deflated_sharpe_ratio(
    sharpe: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    n_trials: int,
    trials_sharpe_variance: float,
) -> float:
    """DSR = PSR against the expected maximum Sharpe of the trials (per-observation units)."""
    sr0 = expected_max_sharpe(n_trials, trials_sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, sr0, n_obs, skew, kurtosis)


# --------------------------------------------------------------------------------------------
# returns


def _as_float_array(values: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values, dtype=float)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D series, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataError(f"{name}: non-finite value {arr[bad[0]]!r} at row {int(bad[0])}")
    return arr


def _drawdown_spells(equity: FloatArray) -> tuple[float, int, bool, int]:
    """(max drawdown <= 0, its duration in bars, recovered?, longest drawdown in bars).

    A drawdown spell is a run of bars below the running peak; its duration counts the bars from
    the peak bar before it to the recovery bar (back at or above the peak), or to the last bar
    when it has not recovered.
    """
    peak = np.maximum.accumulate(equity)
    dd = equity / peak - 1.0
    n = len(equity)
    under = np.concatenate(([0], (dd < 0.0).astype(np.int8), [0]))
    edges = np.diff(under)
    starts = np.flatnonzero(edges == 1)  # first bar under water
    stops = np.flatnonzero(edges == -1)  # one past the last bar under water
    if starts.size == 0:
        return 0.0, 0, True, 0
    recovered = stops < n
    durations = np.where(recovered, stops + 1, n) - starts
    trough = int(np.argmin(dd))
    spell = int(np.searchsorted(starts, trough, side="right")) - 1
    return (
        float(dd[trough]),
        int(durations[spell]),
        bool(recovered[spell]),
        int(durations.max()),
    )


def _moments(r: FloatArray) -> tuple[float, float]:
    """Population skewness and non-excess kurtosis (NaN when the variance is 0)."""
    c = r - r.mean()
    m2 = float(np.mean(c * c))
    if m2 <= 0.0:
        return math.nan, math.nan
    return float(np.mean(c**3)) / m2**1.5, float(np.mean(c**4)) / (m2 * m2)


def _return_stats_from_equity(
    equity: FloatArray,
    timeframe: Timeframe,
    benchmark_sharpe: float,
    n_trials: int,
    trials_sharpe_variance: float,
) -> ReturnStats:
    bpy = timeframe.bars_per_year
    ann = math.sqrt(bpy)
    r = equity[1:] / equity[:-1] - 1.0
    n = len(r)
    years = n / bpy
    total = float(equity[-1] / equity[0] - 1.0)
    log_growth = math.log1p(total) / years
    cagr = math.expm1(log_growth) if log_growth < _MAX_LOG_FLOAT else math.inf
    mean = float(r.mean())
    std = float(r.std(ddof=1)) if n > 1 else math.nan
    # zero variance (up to float noise of a constant return) leaves the Sharpe undefined
    sharpe_bar = mean / std if n > 1 and std > _ZERO_STD_REL * abs(mean) else math.nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    sortino = mean / downside * ann if downside > 0.0 else math.nan
    max_dd, dd_bars, recovered, longest = _drawdown_spells(equity)
    calmar = cagr / abs(max_dd) if max_dd < 0.0 else math.nan
    skew, kurt = _moments(r)
    days_per_bar = timeframe.minutes / _MINUTES_PER_DAY
    sr0_bar = expected_max_sharpe(n_trials, trials_sharpe_variance / bpy)
    return ReturnStats(
        timeframe=timeframe.value,
        n_returns=n,
        bars_per_year=bpy,
        annualization_factor=ann,
        years=years,
        total_return=total,
        cagr=cagr,
        volatility=std * ann,
        sharpe=sharpe_bar * ann,
        sortino=sortino,
        calmar=calmar,
        max_drawdown=max_dd,
        max_drawdown_bars=dd_bars,
        max_drawdown_days=dd_bars * days_per_bar,
        max_drawdown_recovered=recovered,
        longest_drawdown_bars=longest,
        longest_drawdown_days=longest * days_per_bar,
        skew=skew,
        kurtosis=kurt,
        benchmark_sharpe=benchmark_sharpe,
        psr=probabilistic_sharpe_ratio(sharpe_bar, benchmark_sharpe / ann, n, skew, kurt),
        n_trials=n_trials,
        trials_sharpe_variance=trials_sharpe_variance,
        expected_max_sharpe=sr0_bar * ann,
        dsr=probabilistic_sharpe_ratio(sharpe_bar, sr0_bar, n, skew, kurt),
    )


def _checked_equity(equity: ArrayLike) -> FloatArray:
    eq = _as_float_array(equity, "equity")
    if len(eq) < 2:
        raise DataError(f"equity: expected at least 2 points, got {len(eq)}")
    bad = np.flatnonzero(eq <= 0.0)
    if bad.size:
        raise DataError(f"equity: value {eq[bad[0]]!r} at row {int(bad[0])}: expected > 0")
    return eq


def return_stats(
    returns: ArrayLike,
    timeframe: Timeframe,
    *,
    benchmark_sharpe: float = 0.0,
    n_trials: int = 1,
    trials_sharpe_variance: float = 0.0,
) -> ReturnStats:
    """Statistics of per-bar simple returns (equity compounds from 1 before the first return)."""
    r = _as_float_array(returns, "returns")
    if len(r) < 1:
        raise DataError("returns: expected at least 1 return, got none")
    bad = np.flatnonzero(r <= -1.0)
    if bad.size:
        raise DataError(f"returns: value {r[bad[0]]!r} at row {int(bad[0])}: expected > -1")
    equity = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    return _return_stats_from_equity(
        equity, timeframe, benchmark_sharpe, n_trials, trials_sharpe_variance
    )


def equity_stats(
    equity: ArrayLike,
    timeframe: Timeframe,
    *,
    benchmark_sharpe: float = 0.0,
    n_trials: int = 1,
    trials_sharpe_variance: float = 0.0,
) -> ReturnStats:
    """Statistics of an equity curve marked at every bar close (N points -> N-1 returns)."""
    return _return_stats_from_equity(
        _checked_equity(equity), timeframe, benchmark_sharpe, n_trials, trials_sharpe_variance
    )


# --------------------------------------------------------------------------------------------
# trades


def _profit_factor(pnls: Sequence[float]) -> float:
    gross_win = math.fsum(p for p in pnls if p > 0.0)
    gross_loss = -math.fsum(p for p in pnls if p < 0.0)
    if gross_loss > 0.0:
        return gross_win / gross_loss
    return math.inf if gross_win > 0.0 else math.nan


def trade_stats(trades: Sequence[TradeLike]) -> TradeStats:
    """Win rate, average win/loss, profit factor, expectancy and costs of a trade list."""
    pnls = [float(t.pnl) for t in trades]
    n = len(pnls)
    win_p = [p for p in pnls if p > 0.0]
    loss_p = [-p for p in pnls if p < 0.0]
    avg_win = math.fsum(win_p) / len(win_p) if win_p else math.nan
    avg_loss = math.fsum(loss_p) / len(loss_p) if loss_p else math.nan
    return TradeStats(
        n_trades=n,
        wins=len(win_p),
        losses=len(loss_p),
        win_rate=len(win_p) / n if n else math.nan,
        avg_win=avg_win,
        avg_loss=avg_loss,
        payoff_ratio=avg_win / avg_loss if win_p and loss_p else math.nan,
        profit_factor=_profit_factor(pnls),
        expectancy=math.fsum(pnls) / n if n else math.nan,
        total_pnl=math.fsum(pnls),
        fees_paid=math.fsum(t.fees for t in trades),
        slippage_paid=math.fsum(t.slippage for t in trades),
        funding_paid=math.fsum(t.funding for t in trades),
    )


def per_symbol_stats(trades: Sequence[TradeLike]) -> tuple[SymbolStats, ...]:
    """One :class:`SymbolStats` per symbol, sorted by symbol."""
    groups: dict[str, list[TradeLike]] = defaultdict(list)
    for t in trades:
        groups[t.symbol].append(t)
    out: list[SymbolStats] = []
    for sym in sorted(groups):
        ts = trade_stats(groups[sym])
        out.append(
            SymbolStats(
                symbol=sym,
                n_trades=ts.n_trades,
                win_rate=ts.win_rate,
                total_pnl=ts.total_pnl,
                expectancy=ts.expectancy,
                profit_factor=ts.profit_factor,
                fees_paid=ts.fees_paid,
                slippage_paid=ts.slippage_paid,
                funding_paid=ts.funding_paid,
            )
        )
    return tuple(out)


def exposure_from_trades(
    trades: Sequence[TradeLike], open_time_ms: ArrayLike, timeframe: Timeframe
) -> float:
    """Share of bars during which a position was open.

    Bar k covers ``[open_time_ms[k], open_time_ms[k] + bar)``; it counts when a trade's holding
    interval ``[entry_time_ms, exit_time_ms)`` overlaps it with positive length. So a time exit
    at a bar's open does not count that bar; stamp an exit inside a bar after its open time.
    """
    times = np.asarray(open_time_ms, dtype=np.int64)
    if times.ndim != 1 or len(times) == 0:
        raise DataError("open_time_ms: expected a non-empty 1-D array of bar open times")
    if np.any(np.diff(times) <= 0):
        raise DataError("open_time_ms: expected strictly increasing bar open times")
    held = np.zeros(len(times), dtype=bool)
    ends = times + timeframe.ms
    for t in trades:
        # bars with open < exit and end > entry
        lo = int(np.searchsorted(ends, t.entry_time_ms, side="right"))
        hi = int(np.searchsorted(times, t.exit_time_ms, side="left"))
        if hi > lo:
            held[lo:hi] = True
    return float(held.mean())


def compute_stats(
    equity: ArrayLike,
    timeframe: Timeframe,
    trades: Sequence[TradeLike] = (),
    *,
    open_time_ms: ArrayLike | None = None,
    in_position: ArrayLike | None = None,
    benchmark_sharpe: float = 0.0,
    n_trials: int = 1,
    trials_sharpe_variance: float = 0.0,
) -> PerformanceReport:
    """Full report from an equity curve marked at every close and the closed trades.

    Exposure comes from ``in_position`` (one flag per equity point) when given, else from the
    trades and ``open_time_ms``; 0 with no trades; NaN when trades exist but neither is given.
    """
    eq = _checked_equity(equity)
    rs = _return_stats_from_equity(
        eq, timeframe, benchmark_sharpe, n_trials, trials_sharpe_variance
    )
    ts = trade_stats(trades)
    if in_position is not None:
        flags = np.asarray(in_position)
        if flags.shape != eq.shape:
            raise DataError(
                f"in_position: {flags.shape[0] if flags.ndim else 0} flags for {len(eq)} bars"
            )
        exposure = float(np.mean(flags != 0))
    elif not trades:
        exposure = 0.0
    elif open_time_ms is not None:
        if len(open_time_ms) != len(eq):
            raise DataError(f"open_time_ms: {len(open_time_ms)} times for {len(eq)} bars")
        exposure = exposure_from_trades(trades, open_time_ms, timeframe)
    else:
        exposure = math.nan
    traded = math.fsum(abs(t.quantity) * (abs(t.entry_price) + abs(t.exit_price)) for t in trades)
    turnover = traded / float(eq.mean())
    days = rs.n_returns * timeframe.minutes / _MINUTES_PER_DAY
    costs = ts.fees_paid + ts.slippage_paid + ts.funding_paid
    return PerformanceReport(
        returns=rs,
        trades=ts,
        per_symbol=per_symbol_stats(trades),
        initial_equity=float(eq[0]),
        final_equity=float(eq[-1]),
        exposure=exposure,
        turnover=turnover,
        turnover_per_year=turnover / rs.years,
        trades_per_day=ts.n_trades / days,
        costs_fraction_of_initial_equity=costs / float(eq[0]),
    )
