"""The synthetic market's numba kernels: jitted == interpreted (``py_func``) == a plain-Python
reference, plus the regime logic on hand-set inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.core.synthetic.market_nb import ar1_nb, regime_path_nb

# ------------------------------------------------------------------------------------------
# kernels: jitted == interpreted == plain-Python reference


def ar1_reference(x: list[float], phi: float, y0: float) -> list[float]:
    out, prev = [], y0
    for v in x:
        prev = phi * prev + v
        out.append(prev)
    return out


@settings(max_examples=30, deadline=None)
@given(
    x=st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=40),
    phi=st.floats(-0.99, 0.99),
    y0=st.floats(-10, 10),
)
def test_ar1_kernel_matches_reference(x: list[float], phi: float, y0: float) -> None:
    arr = np.asarray(x, dtype=np.float64)
    ref = ar1_reference(x, phi, y0)
    np.testing.assert_allclose(ar1_nb.py_func(arr, phi, y0), ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ar1_nb(arr, phi, y0), ref, rtol=1e-12, atol=1e-9)


KernelOut = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

VOL_MULT = np.array([0.6, 1.0, 1.3])


def kernel_inputs(rng: np.random.Generator, n: int, leader: bool, **over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "z": rng.standard_normal(n),
        "u_leave": rng.random(n),
        "u_pick": rng.random(n),
        "g_drift": rng.standard_normal(n),
        "u_sync": rng.random(n),
        "leader_regime": (
            np.repeat(rng.integers(-1, 2, size=n // 10 + 1), 10)[:n].astype(np.int8)
            if leader
            else np.zeros(n, dtype=np.int8)
        ),
        "leader_shock": rng.standard_normal(n) * 0.01 if leader else np.zeros(n),
        "leader_sigma": np.full(n, 0.01) if leader else np.zeros(n),
        "log_p0": math.log(100.0),
        "log_centre": math.log(80.0),
        "sigma_bar": 0.01,
        "beta": 0.8 if leader else 0.0,
        "mu_bar": 0.002,
        "kappa_bar": 0.05,
        "anchor_follow_bar": 0.01,
        "leave_range": 0.1,
        "leave_trend": 0.1,
        "vol_mult": VOL_MULT,
        "p": np.array(
            [0.75, 4.0, 0.5 if leader else 0.0, 0.5, 0.45, 0.05, 0.9, 0.4, 1e-3, 2e-4, 0.2]
        ),
    }
    kw.update(over)
    return kw


def run_kernel(kernel: Callable[..., KernelOut], kw: dict[str, Any]) -> KernelOut:
    return kernel(*kw.values())


def price_reference(kw: dict[str, Any], regime: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python rebuild of the price equation for a given regime path."""
    p = kw["p"]
    alpha, gbeta, chop, centre_pull, level_pull, dispersion = p[5], p[6], p[7], p[8], p[9], p[4]
    memory = p[10]
    lp = anchor = kw["log_p0"]
    h, last_sq, recent, mu = 1.0, 1.0, 0.0, kw["mu_bar"]
    closes, sigmas = [], []
    for t, reg in enumerate(regime.tolist()):
        if t > 0 and reg != regime[t - 1]:
            if reg == 0:
                anchor = lp
            else:
                mu = kw["mu_bar"] * math.exp(dispersion * kw["g_drift"][t] - dispersion**2 / 2)
        h = (1 - alpha - gbeta) + alpha * last_sq + gbeta * h
        sd = kw["sigma_bar"] * math.sqrt(h)
        last_sq = h * kw["z"][t] ** 2
        mult = {0: VOL_MULT[0], 1: VOL_MULT[1], -1: VOL_MULT[2]}[reg]
        shock = mult * (sd * kw["z"][t] + kw["beta"] * kw["leader_shock"][t])
        if reg == 0:
            drift = -kw["kappa_bar"] * (lp - anchor) - chop * recent
            anchor += kw["anchor_follow_bar"] * (lp - anchor) + centre_pull * (
                kw["log_centre"] - anchor
            )
        else:
            drift = reg * mu
        lp += drift + level_pull * (kw["log_centre"] - lp) + shock
        recent = (1 - memory) * recent + memory * shock
        closes.append(lp)
        sigmas.append(mult * math.sqrt(sd**2 + kw["beta"] ** 2 * kw["leader_sigma"][t] ** 2))
    return np.asarray(closes), np.asarray(sigmas)


@pytest.mark.parametrize("leader", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_regime_kernel_py_func_matches_jit_and_reference(seed: int, leader: bool) -> None:
    kw = kernel_inputs(np.random.default_rng(seed), 300, leader)
    slow = run_kernel(regime_path_nb.py_func, kw)
    fast = run_kernel(regime_path_nb, kw)
    for a, b in zip(slow, fast, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    log_close, _, _, sigma, regime, age = slow
    assert len(np.unique(regime)) >= 2  # switches happen with these rates
    ref_close, ref_sigma = price_reference(kw, regime)
    np.testing.assert_allclose(log_close, ref_close, rtol=1e-12)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-12)
    # age counts bars since the regime began
    assert age[0] == 0
    for t in range(1, len(regime)):
        assert age[t] == (age[t - 1] + 1 if regime[t] == regime[t - 1] else 0)


def test_regime_kernel_never_leaving_a_quiet_range_stays_put() -> None:
    n = 50
    kw = kernel_inputs(
        np.random.default_rng(0),
        n,
        False,
        z=np.zeros(n),
        u_leave=np.ones(n),
        log_centre=math.log(100.0),
    )
    log_close, *_, regime, age = run_kernel(regime_path_nb.py_func, kw)
    np.testing.assert_allclose(log_close, math.log(100.0), atol=1e-15)
    assert np.all(regime == 0)
    np.testing.assert_array_equal(age, np.arange(n))


@pytest.mark.parametrize(("pick", "direction"), [(0.0, 1), (0.999999, -1)])
def test_regime_kernel_trend_drifts_in_its_direction(pick: float, direction: int) -> None:
    n = 40
    u_leave = np.ones(n)
    u_leave[1] = 0.0  # leave the range at bar 1, then stay in the trend
    kw = kernel_inputs(
        np.random.default_rng(0),
        n,
        False,
        z=np.zeros(n),
        u_leave=u_leave,
        u_pick=np.full(n, pick),
        g_drift=np.zeros(n),
        log_centre=math.log(100.0),
        p=np.array([0.75, 4.0, 0.0, 0.5, 0.0, 0.05, 0.9, 0.4, 0.0, 0.0, 0.2]),
    )
    log_close, *_, regime, _ = run_kernel(regime_path_nb.py_func, kw)
    assert regime[0] == 0
    assert np.all(regime[1:] == direction)
    np.testing.assert_allclose(np.diff(log_close), direction * kw["mu_bar"], rtol=1e-12)


def test_regime_kernel_follows_leader_switches_and_reverses() -> None:
    n = 6
    leader_regime = np.array([0, 0, -1, -1, 0, 0], dtype=np.int8)
    kw = kernel_inputs(
        np.random.default_rng(0),
        n,
        True,
        z=np.zeros(n),
        u_sync=np.zeros(n),  # always follow
        u_leave=np.ones(n),
        leader_regime=leader_regime,
        log_centre=math.log(100.0),
    )
    *_, regime, _ = run_kernel(regime_path_nb.py_func, kw)
    np.testing.assert_array_equal(regime, leader_regime)
    # a trend that ends with a low pick reverses straight into the opposite trend
    u_leave = np.ones(n)
    u_leave[1] = u_leave[3] = 0.0
    kw = kernel_inputs(
        np.random.default_rng(0),
        n,
        False,
        z=np.zeros(n),
        u_leave=u_leave,
        u_pick=np.zeros(n),
        log_centre=math.log(100.0),
    )
    *_, regime, _ = run_kernel(regime_path_nb.py_func, kw)
    np.testing.assert_array_equal(regime, [0, 1, 1, -1, -1, -1])
