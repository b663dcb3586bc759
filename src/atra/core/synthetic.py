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
from numba import njit

from atra.core.types import Timeframe
from atra.errors import ConfigError

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
class ModelParams:
    """Model constants shared by every symbol; rates are per hour, scaled to the bar size."""

    # regimes (0 range, +1 up, -1 down)
    range_duration_h: float = 168.0  # mean range length: 7 days
    trend_duration_h: float = 72.0  # mean trend length: 3 days
    trend_to_range: float = 0.75  # leaving a trend: to range, else straight into the opposite
    price_pull: float = 4.0  # logistic pull of the trend direction towards the price centre
    leader_weight: float = 0.5  # weight of the leader's regime when an alt picks a direction
    follow_prob: float = 0.5  # an alt adopts a leader switch at once with this probability
    # returns
    trend_drift_vol: float = 0.28  # mean |drift| per hour in a trend, in units of vol_h
    drift_dispersion: float = 0.35  # lognormal dispersion of |drift| across trend episodes
    range_kappa_h: float = 0.01  # mean-reversion speed per hour in a range
    range_chop: float = 0.4  # in a range, this share of recent shocks is given back
    range_chop_memory_h: float = 0.2  # weight of the newest shock in that recent average
    anchor_follow_h: float = 0.004  # how fast the range anchor drifts towards the price
    range_centre_pull_h: float = 5.0e-4  # the range anchor's pull towards the price centre
    level_pull_h: float = 4.0e-4  # pull of the log price to the centre in every regime
    vol_mult: tuple[float, float, float] = (0.6, 1.0, 1.3)  # sigma multiplier: range, up, down
    garch_alpha: float = 0.05
    garch_beta: float = 0.90
    student_df: float = 5.0
    # volume
    volume_vol_elasticity: float = 1.0  # d log(volume) / d log(sigma)
    volume_abs_return: float = 0.3  # d log(volume) / d (|r| / sigma)
    trend_volume: float = 0.2  # extra log-volume throughout a trend
    breakout_boost: float = 0.8  # extra log-volume at a trend start
    breakout_decay_h: float = 18.0  # e-folding of the breakout boost
    volume_noise: float = 0.12  # AR(1) innovation sd of log volume
    volume_noise_ar: float = 0.9
    perp_volume_mult: float = 3.0
    # basis and funding
    basis_target: tuple[float, float, float] = (6.0e-5, 2.5e-4, -1.6e-4)  # range, up, down
    basis_momentum: float = 4.0e-3  # target shift per unit of trailing 24h log return
    basis_ar_h: float = 0.96  # AR(1) coefficient of the basis per hour
    basis_noise: float = 4.0e-5
    basis_spike_prob_h: float = 0.002
    basis_spike_size: float = 6.0e-4  # mean spike size (exponential)
    funding_noise: float = 1.5e-5


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """What to generate. The default is 2.5 years of 1h bars for six USDT pairs."""

    seed: int = 20240601
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT")
    start: str = "2022-01-01T00:00:00Z"
    bars: int = 2 * 8760 + 4380  # 2.5 years of 1h bars
    timeframe: Timeframe = Timeframe.H1
    params: ModelParams = ModelParams()


@dataclass(frozen=True, slots=True)
class SyntheticMarket:
    """Spot and perpetual candles, funding and ground-truth regimes, keyed by symbol."""

    config: SyntheticConfig
    spot: dict[str, pd.DataFrame]
    perp: dict[str, pd.DataFrame]
    funding: dict[str, pd.DataFrame]
    regimes: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    """Per-symbol levels. Vols are per hour; ``corr`` is the target correlation with the leader."""

    price0: float  # first open
    centre: float  # long-run price centre the regime choice leans towards
    vol_h: float  # hourly return volatility before the regime multiplier
    corr: float  # loading on the leader's shock expressed as a correlation
    quote_volume_h: float  # typical hourly volume in quote currency (USDT)


_PROFILES: Final[dict[str, SymbolProfile]] = {
    "BTCUSDT": SymbolProfile(46_200.0, 34_000.0, 0.0072, 1.0, 9.0e7),
    "ETHUSDT": SymbolProfile(3_680.0, 2_300.0, 0.0090, 0.82, 5.0e7),
    "SOLUSDT": SymbolProfile(170.0, 70.0, 0.0125, 0.68, 1.5e7),
    "BNBUSDT": SymbolProfile(510.0, 340.0, 0.0082, 0.72, 8.0e6),
    "XRPUSDT": SymbolProfile(0.83, 0.52, 0.0102, 0.62, 1.2e7),
    "ADAUSDT": SymbolProfile(1.37, 0.45, 0.0105, 0.66, 6.0e6),
}
_LEADER: Final[str] = "BTCUSDT"


def symbol_profile(symbol: str) -> SymbolProfile:
    """The symbol's profile; unknown symbols get a deterministic one derived from the name."""
    known = _PROFILES.get(symbol)
    if known is not None:
        return known
    digest = hashlib.sha256(symbol.encode()).digest()
    u = [b / 255.0 for b in digest[:4]]
    price0 = 10.0 ** (-1.0 + 4.0 * u[0])  # 0.1 .. 1000
    return SymbolProfile(
        price0=price0,
        centre=price0 * (0.4 + 0.5 * u[1]),
        vol_h=0.007 + 0.005 * u[2],
        corr=0.55 + 0.2 * u[3],
        quote_volume_h=5.0e6,
    )


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "little")


# --------------------------------------------------------------------------------------------
# kernels


@njit(cache=True)
def _regime_path_nb(
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
def _ar1_nb(x: FloatArray, phi: float, y0: float) -> FloatArray:
    """``y_t = phi * y_{t-1} + x_t`` with ``y_{-1} = y0``."""
    n = int(x.shape[0])
    y = np.empty(n)
    prev = y0
    for t in range(n):
        prev = phi * prev + x[t]
        y[t] = prev
    return y


# --------------------------------------------------------------------------------------------
# helpers


def _per_bar(rate_h: float, dt_h: float) -> float:
    """An hourly probability / decay rate as the per-bar equivalent."""
    return 1.0 - float((1.0 - rate_h) ** dt_h)


def _parse_start_ms(config: SyntheticConfig) -> int:
    try:
        ts = pd.Timestamp(config.start)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"synthetic start {config.start!r}: expected an ISO-8601 UTC time like "
            f"'2022-01-01T00:00:00Z' ({exc})"
        ) from None
    if ts.tzinfo is None:
        raise ConfigError(f"synthetic start {config.start!r}: expected a UTC time ending in 'Z'")
    start_ms = int(ts.tz_convert("UTC").value // 1_000_000)
    if start_ms % config.timeframe.ms != 0:
        raise ConfigError(
            f"synthetic start {config.start!r} is not aligned to the {config.timeframe} bar grid"
        )
    return start_ms


def _validate_params(mp: ModelParams) -> None:
    unit = {
        "trend_to_range": mp.trend_to_range,
        "leader_weight": mp.leader_weight,
        "follow_prob": mp.follow_prob,
        "range_chop": mp.range_chop,
        "range_chop_memory_h": mp.range_chop_memory_h,
        "basis_ar_h": mp.basis_ar_h,
        "volume_noise_ar": mp.volume_noise_ar,
        "basis_spike_prob_h": mp.basis_spike_prob_h,
    }
    for name, value in unit.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"synthetic params.{name} = {value}: expected a value in [0, 1]")
    for name, value in (
        ("range_duration_h", mp.range_duration_h),
        ("trend_duration_h", mp.trend_duration_h),
    ):
        if not value >= 1.0:
            raise ConfigError(f"synthetic params.{name} = {value}: expected at least 1 hour")
    if not (mp.garch_alpha >= 0.0 and mp.garch_beta >= 0.0 and mp.garch_alpha + mp.garch_beta < 1):
        raise ConfigError(
            f"synthetic params.garch_alpha + garch_beta = {mp.garch_alpha + mp.garch_beta}: "
            "expected non-negative values summing to less than 1"
        )
    if not mp.student_df > 2.0:
        raise ConfigError(f"synthetic params.student_df = {mp.student_df}: expected more than 2")
    if min(mp.vol_mult) <= 0.0:
        raise ConfigError(f"synthetic params.vol_mult = {mp.vol_mult}: expected positive values")


def _validate(config: SyntheticConfig) -> None:
    if not isinstance(config.timeframe, Timeframe):
        raise ConfigError(f"synthetic timeframe {config.timeframe!r}: expected a Timeframe")
    if not 0 <= config.seed < 2**63:
        raise ConfigError(f"synthetic seed {config.seed}: expected an integer in [0, 2**63)")
    if config.bars < 2:
        raise ConfigError(f"synthetic bars {config.bars}: expected at least 2")
    if not config.symbols:
        raise ConfigError("synthetic symbols: expected at least one symbol")
    _validate_params(config.params)
    seen: set[str] = set()
    for sym in config.symbols:
        if not sym or not sym.isalnum() or sym.upper() != sym:
            raise ConfigError(f"synthetic symbol {sym!r}: expected upper-case letters/digits")
        if sym in seen:
            raise ConfigError(f"synthetic symbol {sym!r} is listed twice")
        seen.add(sym)


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


def generate_market(config: SyntheticConfig = SyntheticConfig()) -> SyntheticMarket:
    """Generate the synthetic market described in the module docstring; same config, same data."""
    _validate(config)
    start_ms = _parse_start_ms(config)
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
