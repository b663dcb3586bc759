"""The numba kernels of the synthetic market (:mod:`atra.core.synthetic.market`): arrays only."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = ["ar1_nb", "regime_path_nb"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RegimeArray = npt.NDArray[np.int8]


@njit(cache=True)
def regime_path_nb(
    z: FloatArray,
    u_leave: FloatArray,
    u_pick: FloatArray,
    g_drift: FloatArray,
    u_sync: FloatArray,
    leader_regime: RegimeArray,
    leader_shock: FloatArray,
    leader_sigma: FloatArray,
    log_p0: float,
    log_centre: float,
    sigma_bar: float,
    beta: float,
    mu_bar: float,
    kappa_bar: float,
    anchor_follow_bar: float,
    leave_range: float,
    leave_trend: float,
    vol_mult: FloatArray,
    p: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, RegimeArray, IntArray]:
    """Simulate one symbol's regimes and log closes.

    ``z`` are unit-variance shocks, ``u_*`` uniforms and ``g_drift`` normals, one per bar.
    ``leader_regime`` / ``leader_shock`` / ``leader_sigma`` are the leader's regimes and
    base-level shocks and sigmas (all zeros, with leader_weight 0, for the leader itself).
    ``vol_mult`` = [range, up, down]; ``p`` = [trend_to_range, price_pull, leader_weight,
    follow_prob, drift_dispersion, garch_alpha, garch_beta, range_chop, centre_pull_bar,
    level_pull_bar, chop_memory].

    Returns (log_close, base shock, base sigma, total sigma, regime, age), where the base values
    are the own GARCH shock and sigma before the regime multiplier, and age counts the bars since
    the current regime began.
    """
    n = int(z.shape[0])
    trend_to_range = p[0]
    price_pull = p[1]
    leader_weight = p[2]
    follow_prob = p[3]
    dispersion = p[4]
    alpha = p[5]
    gbeta = p[6]
    chop = p[7]
    centre_pull_bar = p[8]
    level_pull_bar = p[9]
    chop_memory = p[10]
    omega = 1.0 - alpha - gbeta

    log_close = np.empty(n)
    base_shock = np.empty(n)
    base_sigma = np.empty(n)
    total_sigma = np.empty(n)
    regime = np.empty(n, dtype=np.int8)
    age = np.empty(n, dtype=np.int64)

    lp = log_p0
    anchor = log_p0
    h = 1.0
    last_sq = 1.0
    reg = 0
    bars_in = 0
    mu_abs = mu_bar
    recent = 0.0  # exponentially weighted recent shocks, given back in part in a range
    for t in range(n):
        if t > 0:
            p_up = 1.0 / (1.0 + math.exp(price_pull * (lp - log_centre)))
            lead = leader_regime[t]
            new = reg
            if lead != leader_regime[t - 1]:
                # adopt a leader switch at once; into a trend only as far as the centre allows
                p_dir = 0.5 if lead == 0 else (p_up if lead == 1 else 1.0 - p_up)
                if u_sync[t] < follow_prob * 2.0 * p_dir:
                    new = lead
            if new == reg:
                if reg == 0:
                    if u_leave[t] < leave_range:
                        p_pick = (1.0 - leader_weight) * p_up + leader_weight * (0.5 + 0.5 * lead)
                        new = 1 if u_pick[t] < p_pick else -1
                elif u_leave[t] < leave_trend:
                    p_rev = p_up if reg == -1 else 1.0 - p_up
                    new = -reg if u_pick[t] < (1.0 - trend_to_range) * 2.0 * p_rev else 0
            if new != reg:
                reg = new
                bars_in = 0
                if reg == 0:
                    anchor = lp
                else:
                    mu_abs = mu_bar * math.exp(dispersion * g_drift[t] - 0.5 * dispersion**2)
            else:
                bars_in += 1
        h = omega + alpha * last_sq + gbeta * h
        sd = sigma_bar * math.sqrt(h)
        e = sd * z[t]
        last_sq = h * z[t] * z[t]
        mult = vol_mult[0] if reg == 0 else (vol_mult[1] if reg == 1 else vol_mult[2])
        shock = mult * (e + beta * leader_shock[t])
        if reg == 0:
            drift = -kappa_bar * (lp - anchor) - chop * recent
            anchor += anchor_follow_bar * (lp - anchor) + centre_pull_bar * (log_centre - anchor)
        else:
            drift = reg * mu_abs
        lp += drift + level_pull_bar * (log_centre - lp) + shock
        recent += chop_memory * (shock - recent)
        log_close[t] = lp
        base_shock[t] = e
        base_sigma[t] = sd
        total_sigma[t] = mult * math.sqrt(sd * sd + beta * beta * leader_sigma[t] ** 2)
        regime[t] = reg
        age[t] = bars_in
    return log_close, base_shock, base_sigma, total_sigma, regime, age


@njit(cache=True)
def ar1_nb(x: FloatArray, phi: float, y0: float) -> FloatArray:
    """``y_t = phi * y_{t-1} + x_t`` with ``y_{-1} = y0``."""
    n = int(x.shape[0])
    y = np.empty(n)
    prev = y0
    for t in range(n):
        prev = phi * prev + x[t]
        y[t] = prev
    return y
