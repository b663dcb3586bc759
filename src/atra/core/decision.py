"""THE decision function: one path from a bar's features and primary signal to "trade or not".

Backtest, replay and live all decide through this module, so they cannot drift apart:

- :func:`decision_features` builds the meta model's input row(s) from the feature rows at the
  signal bars plus the signal's own attributes (:data:`EVENT_FEATURES`). Research builds its
  training matrix with it too, so training and decision inputs are the same columns.
- :func:`decide_events` is the vectorised path (backtests, reports): one row per primary event
  with ``p_take``, ``threshold``, ``take``, ``blocked_by`` and the top reasons.
- :func:`decide` is the per-bar path (live loop, replay): the signal at bar ``t`` (the last
  bar of the history it is given), the feature rows up to ``t``, an optional model and sizing
  inputs -> one :class:`Decision`. On a history truncated at ``t`` it returns exactly what
  :func:`decide_events` returns for the event at ``t`` on the full history (the parity test).

Timing: the decision is made at bar ``t``'s close with data up to that close; the trade fills
at ``open[t + 1]``, which is unknown here, so sizing uses the signal's reference ``entry``
(``close_t``) and its stop level. Given the trade's ``costs`` (an :class:`ExitSpec`), the size
is the backtest's own (:func:`atra.core.backtest.position_nb.size_nb`: reference moved by the
slippage, both fees and the stop's slippage in the risk per unit), so live and backtest
quantities agree.

``model=None`` is the primary-only mode: every signal is taken (``p_take`` is None / NaN).

A per-bar caller builds its inputs the way research does::

    _, signal = primary_signal_at(candles, spec, symbol=sym, timeframe=tf)
    feats, _ = bar_features(candles, ctx, model_bar_features(model))   # NaN where ctx lacks data
    decision = decide(candles, feats, signal, model, equity=eq, sizing=cfg)

with at least :data:`atra.core.features.registry.HISTORY_BARS` candles, so that the EMA / Wilder
seeds
have decayed and the features match the backtest's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from atra.core.backtest.engine import OUTCOME_NAMES
from atra.core.backtest.position_nb import EV_TAKEN, size_nb
from atra.core.exits.api import ExitSpec
from atra.core.features.context import EVENT_ATTRIBUTES
from atra.core.features.registry import FeatureContext, compute_features, feature_specs
from atra.core.meta import MetaModel, Reason
from atra.core.signals.events import events_to_signals, last_bar_events
from atra.core.signals.spec import Signal, SignalSpec
from atra.core.sizing import (
    SizingConfig,
    SizingDecision,
    kelly_from_probability,
    payoff_ratio,
    size_position,
)
from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

__all__ = [
    "BLOCKED_META",
    "BLOCKED_NO_SIGNAL",
    "BLOCKED_SIZING",
    "EVENT_FEATURES",
    "Decision",
    "ModelHandle",
    "available_inputs",
    "bar_features",
    "decide",
    "decide_events",
    "decision_features",
    "model_bar_features",
    "primary_signal_at",
]

EVENT_FEATURES: Final[tuple[str, ...]] = EVENT_ATTRIBUTES
"""Attributes of the signal itself given to the meta model beside the bar features:
``side`` (+1 long / -1 short), ``sl_dist_pct`` and ``tp1_dist_pct`` (|level - entry| / entry)."""

BLOCKED_NO_SIGNAL: Final[str] = "no_signal"
BLOCKED_META: Final[str] = "meta_model"
BLOCKED_SIZING: Final[str] = "sizing"


@dataclass(frozen=True, slots=True)
class ModelHandle:
    """A loaded meta model and its registry id (the adapters' ``RegisteredModel`` has both)."""

    model: MetaModel
    model_id: str

    @property
    def threshold(self) -> float:
        return self.model.threshold


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do at one bar, and why.

    ``take`` is True only when there is a signal, the meta model (if any) accepts it and, when
    sizing inputs were given, the size is tradeable. ``blocked_by`` names the first stage that
    said no (``no_signal``, ``meta_model``, ``sizing``), None when taken.
    """

    signal: Signal | None
    p_take: float | None
    threshold: float | None
    take: bool
    reasons: tuple[Reason, ...]
    model_id: str | None
    sizing: SizingDecision | None
    blocked_by: str | None


def available_inputs(ctx: FeatureContext) -> set[str]:
    """The feature inputs ``ctx`` provides: ``candles`` plus ``funding`` / ``counterpart`` /
    ``btc`` / ``series:<name>`` where present."""
    have = {"candles"}
    for key, value in (("funding", ctx.funding), ("counterpart", ctx.counterpart),
                       ("btc", ctx.btc)):  # fmt: skip
        if value is not None:
            have.add(key)
    have.update(f"series:{s.name}" for s in ctx.series)
    return have


def bar_features(
    candles: pd.DataFrame, ctx: FeatureContext, names: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Features ``names`` of one symbol, aligned row for row with ``candles`` (``open_time``
    first). A feature whose input the context lacks (no funding, no counterpart market, no
    BTC) is a NaN column, never a neighbour's value; the lacking inputs are returned beside the
    frame so callers can report them. Research and the live loop both build features here."""
    specs = feature_specs(ctx)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ConfigError(f"unknown feature(s) {', '.join(unknown)}; see feature_registry()")
    have = available_inputs(ctx)
    usable = [n for n in names if set(specs[n].inputs) <= have]
    absent = sorted({i for n in names for i in specs[n].inputs} - have)
    feats = compute_features(candles, ctx, usable)
    for n in names:
        if n not in usable:
            feats[n] = np.nan
    return feats.loc[:, ["open_time", *names]], absent


def model_bar_features(model: ModelHandle | MetaModel) -> list[str]:
    """The bar features a model takes: its inputs minus :data:`EVENT_FEATURES`."""
    meta = model.model if isinstance(model, ModelHandle) else model
    return [n for n in meta.feature_names if n not in EVENT_FEATURES]


def decision_features(
    events: pd.DataFrame, features: pd.DataFrame, feature_names: Sequence[str]
) -> pd.DataFrame:
    """The meta model's input: ``features`` rows at each event's bar ``t`` + event attributes.

    ``features`` is one symbol's feature frame aligned row for row with its candles (the
    frame of :func:`atra.core.features.registry.compute_features`); ``events`` carries ``t, side,
    entry, sl, tp1`` of that symbol. Columns: ``feature_names`` then
    :data:`EVENT_FEATURES`; a bar feature absent from ``features`` is a :class:`DataError`.
    Indexed like ``events``.
    """
    missing = [n for n in feature_names if n not in features.columns]
    if missing:
        raise DataError(f"features: missing column(s) {', '.join(missing[:5])}")
    need = ("t", "side", "entry", "sl", "tp1")
    lacking = [c for c in need if c not in events.columns]
    if lacking:
        raise DataError(f"events: missing column(s) {', '.join(lacking)}")
    t = events["t"].to_numpy(dtype=np.int64)
    n_rows = len(features)
    bad = np.flatnonzero((t < 0) | (t >= n_rows))
    if bad.size:
        raise DataError(
            f"events row {int(bad[0])}: t = {int(t[bad[0]])} is not a feature row (0..{n_rows - 1})"
        )
    values = features.loc[:, list(feature_names)].to_numpy(dtype=np.float64)[t]
    entry = events["entry"].to_numpy(dtype=np.float64)
    out = pd.DataFrame(values, columns=list(feature_names), index=events.index)
    out["side"] = events["side"].to_numpy(dtype=np.float64)
    # from the price levels, as a Signal carries them: both paths do the same arithmetic
    out["sl_dist_pct"] = np.abs(entry - events["sl"].to_numpy(dtype=np.float64)) / entry
    out["tp1_dist_pct"] = np.abs(events["tp1"].to_numpy(dtype=np.float64) - entry) / entry
    return out


def primary_signal_at(
    candles: pd.DataFrame,
    spec: SignalSpec,
    *,
    symbol: str,
    timeframe: Timeframe | None = None,
) -> tuple[pd.DataFrame, Signal | None]:
    """The primary model's event at the LAST bar of ``candles`` (one-row frame) and its
    :class:`Signal`, or an empty frame and None when that bar has no signal."""
    last = last_bar_events(candles, spec, symbol=symbol, timeframe=timeframe)
    if last.empty:
        return last, None
    return last, events_to_signals(last)[0]


def _check_threshold(threshold: float) -> float:
    if not (math.isfinite(threshold) and 0.0 < threshold < 1.0):
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    return float(threshold)


def decide_events(
    events: pd.DataFrame,
    X: pd.DataFrame,
    model: ModelHandle | MetaModel | None,
    threshold: float | None = None,
    *,
    top_k: int = 3,
    explain: bool = True,
) -> pd.DataFrame:
    """Vectorised decisions for primary events: ``events`` + ``p_take, threshold, take,
    blocked_by, reasons``.

    ``X`` holds the model inputs of the events row for row (:func:`decision_features`);
    ``threshold=None`` uses the model's. ``reasons`` is a tuple of :class:`Reason` (top
    ``top_k`` by |log-odds contribution|; empty without a model or with ``explain=False``).
    Without a model every event is taken and ``p_take`` / ``threshold`` are NaN.
    """
    if len(X) != len(events):
        raise DataError(f"X has {len(X)} rows for {len(events)} events")
    out = events.copy()
    n = len(events)
    meta = model.model if isinstance(model, ModelHandle) else model
    if meta is None:
        out["p_take"] = np.full(n, np.nan)
        out["threshold"] = np.full(n, np.nan)
        out["take"] = np.ones(n, dtype=bool)
        out["blocked_by"] = pd.Series([None] * n, index=out.index, dtype=object)
        out["reasons"] = pd.Series([()] * n, index=out.index, dtype=object)
        return out
    thr = _check_threshold(meta.threshold if threshold is None else threshold)
    p = meta.predict_proba(X) if n else np.empty(0)
    take = p >= thr
    out["p_take"] = p
    out["threshold"] = np.full(n, thr)
    out["take"] = take
    out["blocked_by"] = pd.Series(
        [None if k else BLOCKED_META for k in take.tolist()], index=out.index, dtype=object
    )
    reasons: list[tuple[Reason, ...]] = (
        [tuple(r) for r in meta.explain(X, top_k=top_k)] if explain and n else [()] * n
    )
    out["reasons"] = pd.Series(reasons, index=out.index, dtype=object)
    return out


def decide(
    candles: pd.DataFrame,
    features: pd.DataFrame,
    signal: Signal | None,
    model: ModelHandle | MetaModel | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    threshold: float | None = None,
    equity: float | None = None,
    sizing: SizingConfig | None = None,
    use_kelly: bool = False,
    costs: ExitSpec | None = None,
    top_k: int = 3,
) -> Decision:
    """The decision at bar ``t`` = the last row of ``candles`` (data up to ``t``'s close).

    ``features``: the symbol's feature rows aligned with ``candles`` (only the last row is
    read). ``signal``: the primary model's signal at ``t`` or None (see
    :func:`primary_signal_at`); its ``time_ms`` must be ``t``'s open time. ``feature_names``:
    the bar features the model takes (default: the model's names minus
    :data:`EVENT_FEATURES`). With ``equity`` and ``sizing`` a taken signal is sized
    (:func:`atra.core.sizing.size_position`, entry = ``signal.entry``, stop = ``signal.sl``;
    ``use_kelly`` sizes from ``p_take`` and the TP1/SL payoff); with ``costs`` the size is the
    backtest's (:func:`size_like_backtest`). An untradeable size blocks the signal.
    """
    meta = model.model if isinstance(model, ModelHandle) else model
    model_id = model.model_id if isinstance(model, ModelHandle) else None
    if len(candles) == 0:
        raise DataError("decide: empty candle history")
    if len(features) != len(candles):
        raise DataError(
            f"decide: {len(features)} feature rows for {len(candles)} candles (must be aligned)"
        )
    t = len(candles) - 1
    t_ms = int(candles["open_time"].iloc[-1])
    if "open_time" in features.columns and int(features["open_time"].iloc[-1]) != t_ms:
        raise DataError(
            f"decide: last feature row is at {int(features['open_time'].iloc[-1])}, "
            f"last candle at {t_ms}"
        )
    thr: float | None = None
    if meta is not None:
        thr = _check_threshold(meta.threshold if threshold is None else threshold)
    if signal is None:
        return Decision(None, None, thr, False, (), model_id, None, BLOCKED_NO_SIGNAL)
    if signal.time_ms != t_ms:
        raise DataError(
            f"decide: signal {signal.symbol} at {signal.time_ms} is not at the last bar ({t_ms})"
        )
    p_take: float | None = None
    reasons: tuple[Reason, ...] = ()
    if meta is not None and thr is not None:
        names = list(feature_names) if feature_names is not None else model_bar_features(meta)
        event = pd.DataFrame(
            {
                "t": [t],
                "side": [int(signal.side)],
                "entry": [signal.entry],
                "sl": [signal.sl],
                "tp1": [signal.tp1],
            }
        )
        X = decision_features(event, features, names)
        p_take = float(meta.predict_proba(X)[0])
        reasons = tuple(meta.explain(X, top_k=top_k)[0])
        if not p_take >= thr:
            return Decision(signal, p_take, thr, False, reasons, model_id, None, BLOCKED_META)
    size: SizingDecision | None = None
    if equity is not None and sizing is not None and costs is not None:
        size = size_like_backtest(equity, signal, sizing, costs, p_take if use_kelly else None)
        if not size.tradeable:
            return Decision(signal, p_take, thr, False, reasons, model_id, size, BLOCKED_SIZING)
    elif equity is not None and sizing is not None:
        kelly = (
            kelly_from_probability(p_take, payoff_ratio(signal.entry, signal.tp1, signal.sl))
            if use_kelly and p_take is not None
            else None
        )
        size = size_position(equity, signal.entry, signal.sl, config=sizing, kelly=kelly)
        if not size.tradeable:
            return Decision(signal, p_take, thr, False, reasons, model_id, size, BLOCKED_SIZING)
    return Decision(signal, p_take, thr, True, reasons, model_id, size, None)


def size_like_backtest(
    equity: float,
    signal: Signal,
    sizing: SizingConfig,
    costs: ExitSpec,
    p_take: float | None = None,
) -> SizingDecision:
    """The backtest's size for ``signal`` (:func:`atra.core.backtest.position_nb.size_nb`, the same
    compiled function): reference ``signal.entry`` moved adversely by the slippage, risk per
    unit with the entry and stop fees and the stop's slippage, fixed-fractional or (with
    ``p_take``) ``kelly_multiplier`` x Kelly from the TP1/SL distances, capped at the risk cap
    and at ``max_leverage`` x equity."""
    side = int(signal.side)
    slip = costs.slippage_bps / 1e4
    ref = signal.entry * (1.0 + side * slip)
    prob = math.nan if p_take is None else float(p_take)
    code, qty, risk = size_nb(
        float(equity),
        side,
        ref,
        signal.sl_dist,
        signal.tp1_dist,
        prob,
        sizing.risk_fraction,
        sizing.risk_fraction_cap,
        sizing.kelly_multiplier,
        sizing.max_leverage,
        costs.fee_entry,
        costs.fee_stop,
        slip,
    )
    kelly = None if p_take is None else p_take - (1.0 - p_take) / (signal.tp1_dist / signal.sl_dist)
    if code != EV_TAKEN:
        return SizingDecision(0.0, 0.0, 0.0, 0.0, kelly, None, OUTCOME_NAMES[int(code)])
    capped = "leverage" if qty * ref >= sizing.max_leverage * equity * (1.0 - 1e-12) else None
    return SizingDecision(
        quantity=float(qty),
        notional=float(qty * ref),
        risk_amount=float(risk),
        risk_fraction=float(risk / equity),
        kelly_fraction=kelly,
        capped_by=capped,
        reason=f"risk {risk / equity:.4%} of equity at reference {ref:.8g}",
    )
