"""Return statistics of an equity curve (or per-bar returns): :func:`equity_stats`,
:func:`return_stats`, and the Sharpe inference they use (PSR, DSR, expected maximum Sharpe).

Annualisation follows the bar size on a 24/7, 365-day year (never 252 trading days):
``bars_per_year = Timeframe.bars_per_year`` (1h -> 8,760, 1d -> 365) and

- Sharpe  = mean(r) / std(r, ddof=1) x sqrt(bars_per_year), no risk-free rate;
- Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(bars_per_year) (target 0, all bars);
- volatility = std(r, ddof=1) x sqrt(bars_per_year);
- CAGR = (end / start) ^ (bars_per_year / n_returns) - 1;
- Calmar = CAGR / |max drawdown|.

``sqrt(bars_per_year)`` is carried in the result (``annualization_factor``) so reports print it.

Undefined values are NaN, never inf: a Sharpe or Sortino with zero (downside) deviation is NaN
(a standard deviation under 1e-12 x |mean| counts as zero: it is the float noise of a constant
return rebuilt from an equity curve), a Calmar without drawdown is NaN.
CAGR (and Calmar) is ``inf`` when the annualised growth overflows a float (a short, very
profitable series: +50% in 2 hours).
``to_dict()`` turns NaN into ``None`` and ``±inf`` into ``"inf"`` / ``"-inf"`` for strict JSON
(every result of :mod:`atra.core.stats` does).

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Final

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
    prev = equity[:-1]
    # after a liquidation (equity 0 to the end) the account holds nothing: returns 0
    r = np.divide(equity[1:], prev, out=np.ones_like(prev), where=prev > 0.0) - 1.0
    n = len(r)
    years = n / bpy
    total = float(equity[-1] / equity[0] - 1.0)
    if total <= -1.0:
        cagr = -1.0
    else:
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
    """A curve > 0 at every point, or > 0 up to a liquidation and exactly 0 from it to the end
    (a liquidated account holds nothing afterwards); anything else is a :class:`DataError`."""
    eq = _as_float_array(equity, "equity")
    if len(eq) < 2:
        raise DataError(f"equity: expected at least 2 points, got {len(eq)}")
    bad = np.flatnonzero(eq <= 0.0)
    if bad.size:
        row = int(bad[0])
        if row == 0 or eq[row] < 0.0 or np.any(eq[row:] != 0.0):
            raise DataError(
                f"equity: value {eq[row]!r} at row {row}: expected > 0 (or 0 from a "
                "liquidation to the end)"
            )
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
