"""What the best of many backtests is worth: the deflated Sharpe ratio and the probability of
backtest overfitting.

- :func:`deflated_sharpe` (Bailey & López de Prado, "The Deflated Sharpe Ratio", 2014): the
  probability that the chosen trial's true Sharpe exceeds the Sharpe the best of ``N``
  unskilled trials would show by luck, ``E[max SR] = sqrt(V) ((1 - g) Z(1 - 1/N) + g Z(1 -
  1/(N e)))`` with ``V`` the variance of the trials' Sharpe ratios and ``g`` the
  Euler-Mascheroni constant; the PSR of the chosen trial against it, with the skewness,
  kurtosis and length of its returns. Built on
  :func:`atra.core.stats.returns.probabilistic_sharpe_ratio` and
  :func:`~atra.core.stats.returns.expected_max_sharpe`, the run records' own.
- :func:`probability_of_backtest_overfitting` (Bailey, Borwein, López de Prado & Zhu, "The
  Probability of Backtest Overfitting", 2015): combinatorially symmetric cross-validation
  (CSCV) over the ``T x N`` matrix of the trials' returns: ``S`` contiguous blocks of rows,
  every one of the ``C(S, S/2)`` halves as in-sample and the rest as out-of-sample; the trial
  best in sample is ranked out of sample, ``logit = ln(w / (1 - w))`` of its relative rank
  ``w``; PBO = the share of combinations with ``logit <= 0`` (the in-sample winner at or
  below the out-of-sample median).

Pure: arrays in, frozen results out.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from atra.core.stats.returns import expected_max_sharpe, probabilistic_sharpe_ratio
from atra.errors import ConfigError, DataError

__all__ = [
    "DeflatedSharpe",
    "Overfitting",
    "deflated_sharpe",
    "probability_of_backtest_overfitting",
]

_MAX_COMBINATIONS: Final[int] = 1_000_000


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    """The chosen trial's Sharpe deflated for the trials behind it (Sharpe ratios annualised
    with ``periods_per_year``; the variance in annualised units squared)."""

    sharpe: float
    n_trials: int
    trials_sharpe_variance: float
    expected_max_sharpe: float
    """Annualised Sharpe the best of ``n_trials`` unskilled trials shows by luck."""
    n_obs: int
    skew: float
    kurtosis: float
    """Non-excess: 3 for normal returns."""
    psr: float
    """P(true Sharpe > 0)."""
    dsr: float
    """P(true Sharpe > expected_max_sharpe)."""


def deflated_sharpe(
    sharpe: float,
    *,
    n_obs: int,
    skew: float,
    kurtosis: float,
    trial_sharpes: npt.ArrayLike,
    periods_per_year: float,
) -> DeflatedSharpe:
    """DSR of a trial with annualised ``sharpe`` measured on ``n_obs`` returns of that
    ``skew`` and (non-excess) ``kurtosis``, chosen among ``trial_sharpes`` (the annualised
    Sharpe of every trial, the chosen one included; their variance with ``ddof=1``).
    Per-period Sharpe = annual / sqrt(``periods_per_year``)."""
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    if trials.ndim != 1 or trials.size < 1:
        raise DataError(f"trial_sharpes: expected a 1-d array of >= 1 Sharpe, got {trials.shape}")
    bad = np.flatnonzero(~np.isfinite(trials))
    if bad.size:
        raise DataError(f"trial_sharpes: value {trials[bad[0]]!r} at row {int(bad[0])}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ConfigError(f"periods_per_year must be > 0, got {periods_per_year!r}")
    if not math.isfinite(sharpe):
        raise DataError(f"sharpe: expected a finite Sharpe ratio, got {sharpe!r}")
    n = int(trials.size)
    variance = float(trials.var(ddof=1)) if n > 1 else 0.0
    ann = math.sqrt(periods_per_year)
    sr0 = expected_max_sharpe(n, variance / periods_per_year)
    sr = sharpe / ann
    return DeflatedSharpe(
        sharpe=sharpe,
        n_trials=n,
        trials_sharpe_variance=variance,
        expected_max_sharpe=sr0 * ann,
        n_obs=n_obs,
        skew=skew,
        kurtosis=kurtosis,
        psr=probabilistic_sharpe_ratio(sr, 0.0, n_obs, skew, kurtosis),
        dsr=probabilistic_sharpe_ratio(sr, sr0, n_obs, skew, kurtosis),
    )


@dataclass(frozen=True, slots=True, eq=False)
class Overfitting:
    """CSCV over a ``n_rows x n_trials`` return matrix."""

    pbo: float
    """Share of the combinations whose in-sample best trial ranks at or below the
    out-of-sample median (logit <= 0)."""
    n_splits: int
    n_combinations: int
    n_rows: int
    n_trials: int
    logits: npt.NDArray[np.float64]
    """One per combination, in :func:`itertools.combinations` order."""
    oos_loss_rate: float
    """Share of the combinations whose in-sample best trial has a Sharpe < 0 out of sample."""


def _block_sharpe(
    sums: npt.NDArray[np.float64], squares: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Per-trial Sharpe (mean / sample std) of the rows of the chosen blocks. A trial whose
    returns are constant there has Sharpe 0 when its mean is 0 (it did nothing) and +-inf
    otherwise (a sure gain or loss)."""
    n = float(counts.sum())
    total = sums.sum(axis=0)
    mean = total / n
    var = (squares.sum(axis=0) - n * mean * mean) / (n - 1.0)
    std = np.sqrt(np.maximum(var, 0.0))
    tiny = std <= 1e-14 * np.maximum(np.abs(mean), 1e-300)
    out = np.divide(mean, std, out=np.zeros_like(mean), where=~tiny)
    out[tiny & (mean > 0.0)] = np.inf
    out[tiny & (mean < 0.0)] = -np.inf  # a constant 0 stays 0
    return np.asarray(out, dtype=np.float64)


def _relative_rank(values: npt.NDArray[np.float64], k: int) -> float:
    """Rank of ``values[k]`` among ``values`` (1 = lowest, ties averaged) over ``N + 1``."""
    v = values[k]
    below = int(np.sum(values < v))
    ties = int(np.sum(values == v)) - 1
    rank = 1.0 + below + ties / 2.0
    return rank / (values.size + 1.0)


def probability_of_backtest_overfitting(returns: npt.ArrayLike, n_splits: int = 16) -> Overfitting:
    """PBO by CSCV of ``returns`` (rows = periods in time order, columns = trials; the same
    periods for every trial). The rows go into ``n_splits`` (even) contiguous blocks whose sizes
    differ by at most one row (no row is left out); performance = per-period Sharpe."""
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2:
        raise DataError(f"returns: expected a 2-d matrix (periods x trials), got {m.ndim}-d")
    t, n = m.shape
    if n < 2:
        raise DataError(f"returns: PBO needs at least 2 trials, got {n}")
    if n_splits < 2 or n_splits % 2:
        raise ConfigError(f"n_splits must be an even number >= 2, got {n_splits}")
    if t < 2 * n_splits:
        raise DataError(f"returns: {t} periods for {n_splits} splits; need >= {2 * n_splits}")
    bad = np.argwhere(~np.isfinite(m))
    if bad.size:
        row, col = (int(x) for x in bad[0])
        raise DataError(f"returns: value {m[row, col]!r} at period {row}, trial {col}")
    n_comb = math.comb(n_splits, n_splits // 2)
    if n_comb > _MAX_COMBINATIONS:
        raise ConfigError(f"n_splits = {n_splits} gives {n_comb:,} combinations; use fewer")
    blocks = np.array_split(np.arange(t), n_splits)
    sums = np.stack([m[b].sum(axis=0) for b in blocks])
    squares = np.stack([(m[b] ** 2).sum(axis=0) for b in blocks])
    counts = np.array([b.size for b in blocks], dtype=np.int64)
    everything = frozenset(range(n_splits))
    logits = np.empty(n_comb, dtype=np.float64)
    losses = 0
    for i, chosen in enumerate(itertools.combinations(range(n_splits), n_splits // 2)):
        ins = list(chosen)
        outs = sorted(everything - set(chosen))
        is_sharpe = _block_sharpe(sums[ins], squares[ins], counts[ins])
        oos_sharpe = _block_sharpe(sums[outs], squares[outs], counts[outs])
        best = int(np.argmax(is_sharpe))  # the first of equal bests
        w = _relative_rank(oos_sharpe, best)
        logits[i] = math.log(w / (1.0 - w))
        losses += int(oos_sharpe[best] < 0.0)
    return Overfitting(
        pbo=float(np.mean(logits <= 0.0)),
        n_splits=n_splits,
        n_combinations=n_comb,
        n_rows=t,
        n_trials=n,
        logits=logits,
        oos_loss_rate=losses / n_comb,
    )
