"""Deflated Sharpe ratio and PBO by CSCV against independent references (SciPy, brute force)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats as sps

from atra.core.stats.overfitting import deflated_sharpe, probability_of_backtest_overfitting
from atra.errors import ConfigError, DataError

EULER = 0.5772156649015329


def _reference_dsr(
    r: npt.NDArray[np.float64], trial_sharpes: npt.NDArray[np.float64], ppy: float
) -> tuple[float, float]:
    """Bailey & López de Prado (2014), eq. for E[max SR] and PSR, written out with SciPy."""
    sr = r.mean() / r.std(ddof=1)
    g3 = sps.skew(r)
    g4 = sps.kurtosis(r, fisher=False)
    n = len(trial_sharpes)
    v = np.var(trial_sharpes / math.sqrt(ppy), ddof=1)
    sr0 = math.sqrt(v) * (
        (1 - EULER) * sps.norm.ppf(1 - 1 / n) + EULER * sps.norm.ppf(1 - 1 / (n * math.e))
    )
    z = (sr - sr0) * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return float(sps.norm.cdf(z)), float(sr0 * math.sqrt(ppy))


def _inputs(r: npt.NDArray[np.float64], ppy: float) -> dict[str, float]:
    return {
        "n_obs": len(r),
        "skew": float(sps.skew(r)),
        "kurtosis": float(sps.kurtosis(r, fisher=False)),
        "periods_per_year": ppy,
    }


def test_dsr_matches_the_paper_formula_computed_with_scipy() -> None:
    rng = np.random.default_rng(3)
    r = rng.standard_t(5, size=2_000) * 0.01 + 0.0008
    ppy = 365.0
    trials = rng.normal(0.5, 0.8, size=25)
    sharpe = float(r.mean() / r.std(ddof=1) * math.sqrt(ppy))
    got = deflated_sharpe(sharpe, trial_sharpes=trials, **_inputs(r, ppy))  # type: ignore[arg-type]
    want_dsr, want_sr0 = _reference_dsr(r, trials, ppy)
    assert got.dsr == pytest.approx(want_dsr, rel=1e-9)
    assert got.expected_max_sharpe == pytest.approx(want_sr0, rel=1e-9)
    assert got.n_trials == 25
    assert got.trials_sharpe_variance == pytest.approx(np.var(trials, ddof=1))
    assert 0.0 < got.dsr < got.psr < 1.0


def test_dsr_falls_as_trials_are_added() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0.001, 0.01, size=1_500)
    sharpe = float(r.mean() / r.std(ddof=1) * math.sqrt(365))
    pool = rng.normal(0.0, 1.0, size=400)
    pool = pool / pool.std(ddof=1)  # unit variance whatever the count
    dsrs = []
    for n in (2, 5, 20, 100, 400):
        trials = np.concatenate([pool[: n - 1], [sharpe]])
        trials = (trials - trials.mean()) / trials.std(ddof=1)  # variance 1 for every n
        dsrs.append(deflated_sharpe(sharpe, trial_sharpes=trials, **_inputs(r, 365.0)).dsr)  # type: ignore[arg-type]
    assert all(a > b for a, b in itertools.pairwise(dsrs)), dsrs


def test_one_trial_is_not_deflated() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0.001, 0.01, size=500)
    sharpe = float(r.mean() / r.std(ddof=1) * math.sqrt(365))
    got = deflated_sharpe(sharpe, trial_sharpes=[sharpe], **_inputs(r, 365.0))  # type: ignore[arg-type]
    assert got.expected_max_sharpe == 0.0
    assert got.dsr == got.psr


def test_dsr_refuses_undefined_trial_sharpes() -> None:
    with pytest.raises(DataError, match="row 1"):
        deflated_sharpe(
            1.0, n_obs=10, skew=0.0, kurtosis=3.0, trial_sharpes=[1.0, math.nan], periods_per_year=1
        )


def _reference_pbo(m: npt.NDArray[np.float64], s: int) -> tuple[float, list[float]]:
    """CSCV written directly from the paper: loops, numpy std, SciPy ranks."""
    blocks = np.array_split(np.arange(m.shape[0]), s)
    logits = []
    for chosen in itertools.combinations(range(s), s // 2):
        rows_in = np.concatenate([blocks[i] for i in chosen])
        rows_out = np.concatenate([blocks[i] for i in range(s) if i not in chosen])
        is_sr = m[rows_in].mean(0) / m[rows_in].std(0, ddof=1)
        oos_sr = m[rows_out].mean(0) / m[rows_out].std(0, ddof=1)
        best = int(np.argmax(is_sr))
        w = sps.rankdata(oos_sr)[best] / (m.shape[1] + 1)
        logits.append(math.log(w / (1 - w)))
    return float(np.mean(np.array(logits) <= 0)), logits


def test_pbo_matches_a_direct_implementation() -> None:
    rng = np.random.default_rng(11)
    m = rng.normal(0.0, 0.01, size=(203, 7))  # 203 rows: blocks of unequal size
    got = probability_of_backtest_overfitting(m, n_splits=8)
    want, logits = _reference_pbo(m, 8)
    assert got.n_combinations == math.comb(8, 4) == len(logits)
    np.testing.assert_allclose(got.logits, logits, rtol=1e-9)
    assert got.pbo == want


def test_pbo_of_pure_noise_is_high_and_of_a_real_edge_is_low() -> None:
    rng = np.random.default_rng(2024)
    noise = rng.normal(0.0, 0.01, size=(1_000, 30))
    assert probability_of_backtest_overfitting(noise, n_splits=10).pbo > 0.3
    edge = noise.copy()
    edge[:, 4] += 0.004  # one trial genuinely better, every period
    result = probability_of_backtest_overfitting(edge, n_splits=10)
    assert result.pbo < 0.05
    assert result.oos_loss_rate == 0.0


def test_pbo_input_errors_name_the_problem() -> None:
    m = np.zeros((40, 3))
    with pytest.raises(ConfigError, match="even"):
        probability_of_backtest_overfitting(m, n_splits=5)
    with pytest.raises(DataError, match="need >= 48"):
        probability_of_backtest_overfitting(m, n_splits=24)
    m[7, 2] = math.inf
    with pytest.raises(DataError, match="period 7, trial 2"):
        probability_of_backtest_overfitting(m, n_splits=4)
    with pytest.raises(DataError, match="at least 2 trials"):
        probability_of_backtest_overfitting(np.zeros((40, 1)), n_splits=4)
