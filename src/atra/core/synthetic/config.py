"""What the synthetic market (:mod:`atra.core.synthetic.market`) generates: the model constants, the
run settings, the per-symbol levels and their validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import pandas as pd

from atra.core.types import Timeframe
from atra.errors import ConfigError

__all__ = [
    "ModelParams",
    "SymbolProfile",
    "SyntheticConfig",
    "parse_start_ms",
    "symbol_profile",
    "validate_config",
]


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


def parse_start_ms(config: SyntheticConfig) -> int:
    """``config.start`` as epoch ms, checked to be UTC and on the bar grid."""
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


def validate_config(config: SyntheticConfig) -> None:
    """A :class:`ConfigError` naming the first setting out of range."""
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
