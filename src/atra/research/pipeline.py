"""The research pipeline: store -> universe -> features + primary events + labels -> walk-forward
meta model -> OOS metrics -> registered model.

1. :func:`load_universe` reads candles per symbol from the store (plus ``warmup_bars`` bars
   before the range, so features are warm at its start), the symbol's perp funding and its
   counterpart market where stored, and BTCUSDT of the same market as cross-asset context.
2. :func:`build_dataset` runs the primary model per symbol, takes the features at the SIGNAL
   bar ``t`` (the decision at ``t``'s close; :func:`atra.core.decision.decision_features`, the
   same builder the decision path uses), and labels every event with the exit kernel
   (triple barrier + meta-label, ``t0``/``t1`` for purging). Events whose trade does not
   resolve inside the data stay in the dataset with ``complete = False`` and are excluded from
   training and scoring, counted in :class:`DatasetReport`; nothing is dropped silently.
3. :func:`run_walkforward`: walk-forward splits with purge + embargo, sample weights
   (balanced x uniqueness x optional decay, per fold, training rows only), out-of-sample
   predictions of every fold concatenated, per-year AUC / precision / recall / base rate.
4. :func:`train_model`: one meta model on every complete event of the range, saved to the
   model registry (LightGBM text + metadata JSON with the signal / exit specs).

:func:`settings_from_config` maps the typed :class:`~atra.config.AtraConfig` sections
(strategy, costs, meta) onto the core parameter objects for one market: spot is long only
unless ``strategy.spot_shorts`` (shorts on margin, paying ``costs.spot_borrow_bps_per_hour``).

Steps 1-2 live in :mod:`atra.research.dataset`, steps 3-4 in :mod:`atra.research.walkforward`;
this module holds the settings and is the public face of all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from atra.config import RULE_PARAMS, AtraConfig
from atra.core.exits.api import ExitSpec
from atra.core.meta import MetaParams
from atra.core.signals.rules import ParamValue, find_rule
from atra.core.signals.spec import BarrierMode, Rule, SignalSpec
from atra.core.types import Market
from atra.research.dataset import (
    BTC_SYMBOL,
    DatasetReport,
    ResearchDataset,
    SymbolData,
    Universe,
    build_dataset,
    load_universe,
    parse_time_ms,
    symbol_features,
)
from atra.research.walkforward import (
    TrainedModel,
    WalkForwardConfig,
    WalkForwardResult,
    load_model_for,
    run_walkforward,
    spec_to_dict,
    train_model,
)

__all__ = [
    "BTC_SYMBOL",
    "DatasetReport",
    "ResearchDataset",
    "ResearchSettings",
    "SymbolData",
    "TrainedModel",
    "Universe",
    "WalkForwardConfig",
    "WalkForwardResult",
    "build_dataset",
    "load_model_for",
    "load_universe",
    "metrics_records",
    "parse_time_ms",
    "run_walkforward",
    "settings_from_config",
    "shorts_allowed",
    "spec_to_dict",
    "symbol_features",
    "train_model",
]


# ---- settings from the config -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResearchSettings:
    """The core parameter objects of a research run."""

    signal: SignalSpec
    exit: ExitSpec
    meta: MetaParams
    walkforward: WalkForwardConfig


def shorts_allowed(cfg: AtraConfig, market: Market) -> bool:
    """Whether the primary model may sell short on ``market``: always on perpetuals; on spot
    only with ``strategy.spot_shorts`` (a margin short; the config then states its borrow
    rate)."""
    return market is Market.PERP or cfg.strategy.spot_shorts


def settings_from_config(cfg: AtraConfig, market: Market | str) -> ResearchSettings:
    """Map ``strategy`` / ``costs`` / ``meta`` of the config onto the core specs of ``market``
    (a :class:`~atra.core.types.Market` or its name, ``spot`` / ``perp``).

    strategy: ``rule`` (ema_cross|donchian|tsmom, or a plug-in rule registered by a module of
    ``[plugins]``: the plug-ins must be loaded first) with ``params`` (fast/slow, n, lookback;
    a plug-in rule's declared ones, validated by it; an unknown rule is one line listing the
    known ones),
    ATR barriers ``sl_atr / tp1_atr / tp2_atr`` (tp2 must exceed tp1), ``horizon_bars``, the
    TP1 partial ``tp1_fraction`` and the break-even move ``move_to_be``; the
    signal spec sells short on perpetuals, on spot only with ``spot_shorts``
    (:func:`shorts_allowed`): spot is long only by default.
    costs: the taker fee on every fill (the backtest's default cost model) and the slippage,
    so a label is the trade the backtest and the paper loop would make.
    meta: LightGBM parameters; ``threshold_mode`` fixed -> the configured threshold,
    f1 -> F1-optimal on inner out-of-fold predictions, expected_value -> max summed net return;
    ``retrain_days`` / ``embargo_hours`` drive the walk-forward.
    """
    mkt = Market.parse(market) if isinstance(market, str) else market
    st = cfg.strategy
    rule: Rule | str
    plugin_params: tuple[tuple[str, ParamValue], ...] = ()
    if st.rule in RULE_PARAMS:
        rule = Rule(st.rule)
        p = {**{k: v for d in RULE_PARAMS.values() for k, v in d.items()}, **st.rule_params()}
    else:  # a plug-in rule (registered by a module of [plugins]); its own params only
        defn = find_rule(st.rule)
        rule = defn.name
        given = st.params if "params" in st.model_fields_set else {}
        plugin_params = defn.validate(given, "strategy.params")
        p = {k: v for d in RULE_PARAMS.values() for k, v in d.items()}
    signal = SignalSpec(
        rule=rule,
        params=plugin_params,
        ema_fast=p["fast"],
        ema_slow=p["slow"],
        donchian_n=p["n"],
        tsmom_lookback=p["lookback"],
        barrier_mode=BarrierMode.ATR,
        atr_n=st.atr_window,
        sl_atr=st.sl_atr,
        tp1_atr=st.tp1_atr,
        tp2_atr=st.tp2_atr,
        horizon_bars=st.horizon_bars,
        allow_short=shorts_allowed(cfg, mkt),
    )
    c = cfg.costs
    fee = c.taker_fee_bps / 1e4  # every fill at the taker fee, as the backtest's default
    exit_spec = ExitSpec(
        fee_entry=fee,
        fee_tp=fee,
        fee_stop=fee,
        slippage_bps=c.slippage_bps,
        tp1_fraction=st.tp1_fraction,
        move_to_be=st.move_to_be,
    )
    m = cfg.meta
    lg = m.lgbm
    objective: Literal["fbeta", "net_return"] = (
        "net_return" if m.threshold_mode == "expected_value" else "fbeta"
    )
    threshold = m.threshold  # 0 < threshold < 1, validated by the config
    meta = MetaParams(
        n_estimators=lg.n_estimators,
        learning_rate=lg.learning_rate,
        num_leaves=lg.num_leaves,
        min_child_samples=lg.min_child_samples,
        subsample=lg.bagging_fraction if lg.bagging_freq > 0 else 1.0,
        colsample_bytree=lg.feature_fraction,
        reg_lambda=lg.lambda_l2,
        seed=lg.seed,
        threshold_objective=objective,
        fbeta=1.0,
        inner_splits=0 if m.threshold_mode == "fixed" else 2,
        default_threshold=threshold,
    )
    wf = WalkForwardConfig(retrain_days=m.retrain_days, embargo_hours=m.embargo_hours)
    return ResearchSettings(signal, exit_spec, meta, wf)


def metrics_records(metrics: pd.DataFrame) -> Mapping[str, Mapping[str, float]]:
    """The per-year metrics as ``{year: {column: value}}`` (plain floats)."""
    return {
        str(year): {str(k): float(v) for k, v in row.items()} for year, row in metrics.iterrows()
    }
