"""Deterministic synthetic crypto market: the embedded default data of ``make demo``.

A regime-switching model per symbol on a regular bar grid (parameters in :class:`ModelParams`,
per-hour rates rescaled to the bar size):

* **Regimes** — a Markov chain over range (0), up-trend (+1) and down-trend (-1) with persistent
  states (mean 7 days in a range, 3 days in a trend). A new trend's direction leans towards the
  symbol's long-run price centre (so levels stay plausible) and, for alts, towards the leader's
  regime; alts also adopt a leader switch at once with some probability. The leader (market
  factor) is ``BTCUSDT`` when listed, else the first symbol.
* **Returns** — ``r = drift + m_regime * (eps + beta * leader_eps) + pull``: ``eps`` is GARCH(1,1)
  with unit-variance Student-t shocks (fat tails, volatility clustering), ``beta * leader_eps``
  the loading on the leader's shock (BTC-led correlation), ``m_regime`` a volatility multiplier
  (quiet ranges, loud sell-offs). In a trend the drift is ``direction * mu`` with ``mu`` drawn per
  episode; in a range it is an Ornstein–Uhlenbeck pull to a slowly moving anchor minus a share of
  the last shock (choppy, mean-reverting). A weak pull of the log price to its centre applies
  always.
* **Bars** — ``open_t = close_{t-1}``; high/low are sampled extremes of a Brownian bridge from
  open to close (the intrabar path), so ``low <= min(open, close)`` and ``high >= max(...)``.
* **Volume** — rises with conditional volatility and the bar's |return| surprise, is higher in
  trends and jumps at breakouts (decaying over the first hours of a trend), with AR(1) noise and
  an hour-of-day / weekend profile.
* **Perpetual** — ``perp = spot * (1 + basis)``; the basis is an AR(1) around a regime- and
  momentum-dependent target with occasional spikes. Funding at 00/08/16 UTC is the mean basis of
  the previous 8 h plus noise: positive in up-trends, negative in down-trends, typically 1e-4.

Pure: arrays in, frames out; randomness only from ``numpy.random.SeedSequence([seed, symbol
key])``, so the same config always gives the same data. ``regimes`` are ground truth for tests
and diagnostics, never a feature.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.synthetic.config import (
    ModelParams,
    SymbolProfile,
    SyntheticConfig,
    parse_start_ms,
    symbol_profile,
    validate_config,
)
from atra.core.synthetic.market_nb import ar1_nb as _ar1_nb
from atra.core.synthetic.market_nb import regime_path_nb as _regime_path_nb

__all__ = [
    "EXCHANGE",
    "FUNDING_INTERVAL_MS",
    "REGIME_DOWN",
    "REGIME_RANGE",
    "REGIME_UP",
    "ModelParams",
    "SymbolProfile",
    "SyntheticConfig",
    "SyntheticMarket",
    "generate_market",
    "symbol_profile",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RegimeArray = npt.NDArray[np.int8]

EXCHANGE: Final[str] = "synthetic"
"""The exchange name under which the demo stores the synthetic market."""

REGIME_RANGE: Final[int] = 0
REGIME_UP: Final[int] = 1
REGIME_DOWN: Final[int] = -1

FUNDING_INTERVAL_MS: Final[int] = 8 * 3_600_000
"""Funding is settled every 8 hours, at 00:00, 08:00 and 16:00 UTC."""

_HOUR_MS: Final[int] = 3_600_000
_DAY_MS: Final[int] = 86_400_000


@dataclass(frozen=True, slots=True)
class SyntheticMarket:
    """Spot and perpetual candles, funding and ground-truth regimes, keyed by symbol."""

    config: SyntheticConfig
    spot: dict[str, pd.DataFrame]
    perp: dict[str, pd.DataFrame]
    funding: dict[str, pd.DataFrame]
    regimes: dict[str, np.ndarray]


_LEADER: Final[str] = "BTCUSDT"


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "little")


def _per_bar(rate_h: float, dt_h: float) -> float:
    """An hourly probability / decay rate as the per-bar equivalent."""
    return 1.0 - float((1.0 - rate_h) ** dt_h)


@dataclass(frozen=True, slots=True)
class _Path:
    log_close: FloatArray
    base_shock: FloatArray  # own GARCH shock before the regime multiplier (the market factor)
    base_sigma: FloatArray
    sigma: FloatArray  # total conditional sd of the bar's log return
    regime: RegimeArray
    age: IntArray  # bars since the current regime began


def _simulate_path(
    mp: ModelParams,
    rng: np.random.Generator,
    prof: SymbolProfile,
    leader: _Path | None,
    leader_prof: SymbolProfile,
    n: int,
    dt_h: float,
) -> _Path:
    df = mp.student_df
    z = rng.standard_t(df, size=n) * math.sqrt((df - 2.0) / df)
    u_leave = rng.random(n)
    u_pick = rng.random(n)
    g_drift = rng.standard_normal(n)
    u_sync = rng.random(n)
    if leader is None:
        beta = 0.0
        idio_h = prof.vol_h
        leader_regime = np.zeros(n, dtype=np.int8)
        leader_shock = np.zeros(n)
        leader_sigma = np.zeros(n)
    else:
        beta = prof.corr * prof.vol_h / leader_prof.vol_h
        idio_h = prof.vol_h * math.sqrt(1.0 - prof.corr**2)
        leader_regime = leader.regime
        leader_shock = leader.base_shock
        leader_sigma = leader.base_sigma
    params = np.array(
        [
            mp.trend_to_range,
            mp.price_pull,
            0.0 if leader is None else mp.leader_weight,
            mp.follow_prob,
            mp.drift_dispersion,
            mp.garch_alpha,
            mp.garch_beta,
            mp.range_chop,
            _per_bar(mp.range_centre_pull_h, dt_h),
            _per_bar(mp.level_pull_h, dt_h),
            _per_bar(mp.range_chop_memory_h, dt_h),
        ]
    )
    out = _regime_path_nb(
        z,
        u_leave,
        u_pick,
        g_drift,
        u_sync,
        leader_regime,
        leader_shock,
        leader_sigma,
        math.log(prof.price0),
        math.log(prof.centre),
        idio_h * math.sqrt(dt_h),
        beta,
        mp.trend_drift_vol * prof.vol_h * dt_h,
        _per_bar(mp.range_kappa_h, dt_h),
        _per_bar(mp.anchor_follow_h, dt_h),
        _per_bar(1.0 / mp.range_duration_h, dt_h),
        _per_bar(1.0 / mp.trend_duration_h, dt_h),
        np.array(mp.vol_mult),
        params,
    )
    return _Path(*out)


def _candles(
    mp: ModelParams,
    rng: np.random.Generator,
    path: _Path,
    prof: SymbolProfile,
    open_time: IntArray,
    dt_h: float,
) -> pd.DataFrame:
    n = int(open_time.shape[0])
    log_open = np.empty(n)
    log_open[0] = math.log(prof.price0)
    log_open[1:] = path.log_close[:-1]
    x = path.log_close - log_open
    s_tot = path.sigma
    ln_u_hi = np.log1p(-rng.random(n))  # log of a uniform in (0, 1]
    ln_u_lo = np.log1p(-rng.random(n))
    up = 0.5 * (x + np.sqrt(x * x - 2.0 * s_tot**2 * ln_u_hi))
    dn = 0.5 * (x - np.sqrt(x * x - 2.0 * s_tot**2 * ln_u_lo))
    open_ = np.exp(log_open)
    close = np.exp(path.log_close)
    high = np.maximum(np.exp(log_open + up), np.maximum(open_, close))
    low = np.minimum(np.exp(log_open + dn), np.minimum(open_, close))

    # volume: volatility level, |return| surprise, breakout boost, seasonality, AR(1) noise
    base_sigma = prof.vol_h * math.sqrt(dt_h)
    surprise = np.abs(x) / s_tot
    boost = np.where(
        path.regime != REGIME_RANGE,
        mp.trend_volume + mp.breakout_boost * np.exp(-path.age * dt_h / mp.breakout_decay_h),
        0.0,
    )
    hour = (open_time // _HOUR_MS) % 24
    weekday = (open_time // _DAY_MS + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    season = 0.25 * np.cos(2.0 * np.pi * (hour - 15.0) / 24.0) - 0.2 * (weekday >= 5)
    noise = _ar1_nb(
        rng.standard_normal(size=n) * mp.volume_noise * math.sqrt(1.0 - mp.volume_noise_ar**2),
        mp.volume_noise_ar,
        0.0,
    )
    log_qv = (
        math.log(prof.quote_volume_h * dt_h)
        + mp.volume_vol_elasticity * np.log(s_tot / base_sigma)
        + mp.volume_abs_return * (surprise - 0.8)
        + boost
        + season
        + noise
    )
    volume = np.exp(log_qv) / close
    return pd.DataFrame(
        {
            "open_time": open_time,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def _basis(
    mp: ModelParams, rng: np.random.Generator, path: _Path, dt_h: float
) -> tuple[FloatArray, float]:
    """Per-bar perp basis and its value before the first bar."""
    n = int(path.regime.shape[0])
    phi = mp.basis_ar_h**dt_h
    # basis_target is (range, up, down): regime -1 picks the last entry
    targets = np.asarray(mp.basis_target)[path.regime.astype(np.int64)]
    lag = max(1, round(24.0 / dt_h))
    trail = np.empty(n)
    trail[:lag] = path.log_close[:lag] - path.log_close[0]
    trail[lag:] = path.log_close[lag:] - path.log_close[:-lag]
    target = targets + mp.basis_momentum * trail
    spike_on = rng.random(n) < _per_bar(mp.basis_spike_prob_h, dt_h)
    spike_sign = np.where(path.regime != 0, path.regime, np.where(rng.random(n) < 0.5, 1, -1))
    spikes = spike_on * spike_sign * rng.exponential(mp.basis_spike_size, size=n)
    innov = (1.0 - phi) * target + mp.basis_noise * math.sqrt(dt_h) * rng.standard_normal(n)
    b0 = mp.basis_target[0]
    return _ar1_nb(innov + spikes, phi, b0), b0


def _perp(
    mp: ModelParams, rng: np.random.Generator, spot: pd.DataFrame, basis: FloatArray, b0: float
) -> pd.DataFrame:
    n = int(basis.shape[0])
    b_prev = np.empty(n)
    b_prev[0] = b0
    b_prev[1:] = basis[:-1]
    open_ = spot["open"].to_numpy() * (1.0 + b_prev)
    close = spot["close"].to_numpy() * (1.0 + basis)
    mid = 1.0 + 0.5 * (b_prev + basis)
    high = np.maximum(spot["high"].to_numpy() * mid, np.maximum(open_, close))
    low = np.minimum(spot["low"].to_numpy() * mid, np.minimum(open_, close))
    volume = spot["volume"].to_numpy() * mp.perp_volume_mult * np.exp(0.1 * rng.standard_normal(n))
    return pd.DataFrame(
        {
            "open_time": spot["open_time"].to_numpy(),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def _funding(
    mp: ModelParams, rng: np.random.Generator, open_time: IntArray, basis: FloatArray
) -> pd.DataFrame:
    """Funding at every 00/08/16 UTC strictly after the first bar opens and not after the last:
    the mean basis of the bars opened in the 8 h before it, plus noise."""
    first = int(open_time[0]) // FUNDING_INTERVAL_MS * FUNDING_INTERVAL_MS + FUNDING_INTERVAL_MS
    times = np.arange(first, int(open_time[-1]) + 1, FUNDING_INTERVAL_MS, dtype=np.int64)
    csum = np.concatenate(([0.0], np.cumsum(basis)))
    hi = np.searchsorted(open_time, times, side="left")  # bars opened before T
    lo = np.searchsorted(open_time, times - FUNDING_INTERVAL_MS, side="left")
    lo = np.minimum(lo, hi - 1)  # bars longer than 8 h: the bar that contains T - 1 ms
    premium = (csum[hi] - csum[lo]) / (hi - lo)
    rate = np.round(premium + mp.funding_noise * rng.standard_normal(times.shape[0]), 8)
    return pd.DataFrame({"funding_time": times, "funding_rate": rate.astype(np.float64)})


_DEFAULT_CONFIG: Final[SyntheticConfig] = SyntheticConfig()


def generate_market(config: SyntheticConfig = _DEFAULT_CONFIG) -> SyntheticMarket:
    """Generate the synthetic market described in the module docstring; same config, same data."""
    validate_config(config)
    start_ms = parse_start_ms(config)
    tf = config.timeframe
    dt_h = tf.minutes / 60.0
    n = config.bars
    open_time = start_ms + np.arange(n, dtype=np.int64) * tf.ms

    leader_sym = _LEADER if _LEADER in config.symbols else config.symbols[0]
    order = [leader_sym, *(s for s in config.symbols if s != leader_sym)]
    leader_prof = symbol_profile(leader_sym)
    leader_path: _Path | None = None

    spot: dict[str, pd.DataFrame] = {}
    perp: dict[str, pd.DataFrame] = {}
    funding: dict[str, pd.DataFrame] = {}
    regimes: dict[str, np.ndarray] = {}
    mp = config.params
    for sym in order:
        prof = symbol_profile(sym)
        seq = np.random.SeedSequence([config.seed, _symbol_key(sym)])
        path_rng, bar_rng, basis_rng, fund_rng = (np.random.default_rng(s) for s in seq.spawn(4))
        path = _simulate_path(mp, path_rng, prof, leader_path, leader_prof, n, dt_h)
        if leader_path is None:
            leader_path = path
        spot[sym] = _candles(mp, bar_rng, path, prof, open_time, dt_h)
        basis, b0 = _basis(mp, basis_rng, path, dt_h)
        perp[sym] = _perp(mp, basis_rng, spot[sym], basis, b0)
        funding[sym] = _funding(mp, fund_rng, open_time, basis)
        regimes[sym] = path.regime
    keys = list(config.symbols)
    return SyntheticMarket(
        config=config,
        spot={k: spot[k] for k in keys},
        perp={k: perp[k] for k in keys},
        funding={k: funding[k] for k in keys},
        regimes={k: regimes[k] for k in keys},
    )
