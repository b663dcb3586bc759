"""The settings of an evaluation: the backtest settings from the config, and what was run as the
run record's :class:`~atra.research.runrecord.setup.RunSetup` (market, rule, barriers, costs,
sizing, dates, walk-forward, fold model ids), plus the labels and hashes of its data."""

from __future__ import annotations

import hashlib
from typing import Final

import numpy as np
import pandas as pd

from atra.config import AtraConfig
from atra.core.backtest.engine import BacktestConfig
from atra.core.costs import CostModel
from atra.core.risk import kelly_multiplier_of, limits_of, sizing_of
from atra.core.signals.rules import ParamValue
from atra.core.signals.spec import BarrierMode, Rule, SignalSpec
from atra.core.types import Market
from atra.errors import DataError
from atra.research.evaluation.oos import OOSEvents
from atra.research.pipeline import (
    ResearchDataset,
    Universe,
    WalkForwardConfig,
    WalkForwardResult,
)
from atra.research.runrecord.hashes import canonical_json, hash_frames
from atra.research.runrecord.setup import (
    BarrierSetup,
    CostSetup,
    DateRange,
    FoldModel,
    RunSetup,
    SizingSetup,
    WalkForwardSetup,
    sides_text,
)

__all__ = [
    "RULE_FIELDS",
    "backtest_config_from",
    "data_label_of",
    "fold_models",
    "rule_params_of",
    "run_setup",
    "universe_hash",
]

RULE_FIELDS: Final[dict[Rule, dict[str, str]]] = {
    Rule.EMA_CROSS: {"fast": "ema_fast", "slow": "ema_slow"},
    Rule.DONCHIAN: {"n": "donchian_n"},
    Rule.TSMOM: {"lookback": "tsmom_lookback"},
}
"""Each rule's parameters (the names of :data:`atra.config.RULE_PARAMS`) -> ``SignalSpec``
fields."""
_MODEL_ID_HEX: Final[int] = 12


def data_label_of(exchange: str) -> str:
    """``"synthetic"`` for the embedded synthetic market, ``"real"`` for any exchange."""
    return "synthetic" if exchange == "synthetic" else "real"


def backtest_config_from(cfg: AtraConfig) -> BacktestConfig:
    """The backtest settings of the config, the live loop's own: taker / maker fees, slippage
    and the margin interest of spot shorts (``costs``); the sizing and every risk guard from
    ``[risk]`` through the mappings the live loop uses (:func:`atra.core.risk.sizing_of`,
    :func:`atra.core.risk.limits_of`): ``risk_per_trade``, one position's notional <=
    ``max_gross_leverage`` x equity, ``max_open_positions``, ``max_per_symbol``, the gross
    leverage cap and the daily loss; the TP1 partial and break-even move of ``[strategy]``. Every
    fill pays the taker fee (take-profits too), as the labels assume.

    ``risk.kelly`` = ``half`` / ``full``: events with a ``p_take`` (the meta model's) are sized
    with that share of Kelly from p(take) and the TP1/SL payoff, under the 2% cap; the
    primary-only leg, which has no p(take), runs with ``probability_column=None`` and the fixed
    fraction (see :func:`atra.research.evaluation.loop.evaluate_walkforward`). ``none``: the
    fixed fraction everywhere."""
    c, r = cfg.costs, cfg.risk
    limits = limits_of(r)
    return BacktestConfig(
        sizing=sizing_of(r),
        costs=CostModel(
            maker_fee_rate=c.maker_fee_bps / 1e4,
            taker_fee_rate=c.taker_fee_bps / 1e4,
            slippage_bps=c.slippage_bps,
        ),
        max_positions=limits.max_open_positions,
        max_per_symbol=limits.max_per_symbol,
        max_gross_leverage=limits.max_gross_leverage,
        max_daily_loss=limits.max_daily_loss,
        tp1_fraction=cfg.strategy.tp1_fraction,
        move_to_be=cfg.strategy.move_to_be,
        spot_borrow_rate_per_hour=c.spot_borrow_bps_per_hour / 1e4,
        probability_column=None if kelly_multiplier_of(r.kelly) is None else "p_take",
    )


def universe_hash(universe: Universe) -> str:
    """:func:`atra.research.runrecord.hashes.hash_frames` of every frame the run read, symbol by
    symbol (candles, funding, counterpart market), then the BTC context and the external series."""
    frames: list[pd.DataFrame] = []
    for sym in sorted(universe.symbols):
        data = universe.symbols[sym]
        frames.append(data.candles)
        for extra in (data.funding, data.counterpart):
            frames.append(extra if extra is not None else pd.DataFrame())
    frames.append(universe.btc if universe.btc is not None else pd.DataFrame())
    frames.extend(s.series.frame for s in universe.series)  # none: the hash of before
    return hash_frames(frames)


def rule_params_of(spec: SignalSpec) -> dict[str, ParamValue]:
    """The primary rule's parameters in the config's names (``{"fast": 20, "slow": 50}``; a
    plug-in rule's own)."""
    if not isinstance(spec.rule, Rule):
        return spec.rule_params
    return {name: int(getattr(spec, attr)) for name, attr in RULE_FIELDS[spec.rule].items()}


def fold_models(wf: WalkForwardResult, data_hash: str, config_hash: str) -> tuple[FoldModel, ...]:
    """One :class:`FoldModel` per walk-forward fold, its threshold from its OOS predictions and
    its id a content id of the data, the config and the fold (see :class:`FoldModel`)."""
    thresholds = wf.predictions.groupby("fold")["threshold"].first()
    out: list[FoldModel] = []
    for f in wf.folds:
        if f.fold_id not in thresholds.index:
            raise DataError(f"evaluation: fold {f.fold_id} has no out-of-sample prediction")
        windows = (f.train_start_ms, f.train_end_ms, f.test_start_ms, f.test_end_ms)
        n_train = int(f.train_idx.size)
        identity = {"data": data_hash, "config": config_hash, "fold": f.fold_id,
                    "windows": [int(w) for w in windows], "n_train": n_train}  # fmt: skip
        model_id = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:_MODEL_ID_HEX]
        threshold = float(thresholds.loc[f.fold_id])
        out.append(
            FoldModel(
                fold=int(f.fold_id),
                model_id=model_id,
                train_start_ms=int(f.train_start_ms),
                train_end_ms=int(f.train_end_ms),
                test_start_ms=int(f.test_start_ms),
                test_end_ms=int(f.test_end_ms),
                n_train=n_train,
                threshold=threshold,
            )
        )
    return tuple(out)


def run_setup(
    dataset: ResearchDataset,
    wf: WalkForwardResult,
    oos: OOSEvents,
    backtest_config: BacktestConfig,
    wf_config: WalkForwardConfig,
    *,
    symbols: list[str],
    data_hash: str,
    config_hash: str,
) -> RunSetup:
    """What an evaluation ran: ``symbols`` (those with bars in the OOS span) of the dataset's
    universe, the sides its signal spec trades, its rule and barriers, the backtest's costs and
    sizing, the signal and OOS dates, the walk-forward settings and its fold models."""
    uni = dataset.universe
    spec = dataset.signal_spec
    bt = backtest_config
    atr = spec.barrier_mode is BarrierMode.ATR
    sl, tp1, tp2 = (
        (spec.sl_atr, spec.tp1_atr, spec.tp2_atr)
        if atr
        else (spec.sl_pct, spec.tp1_pct, spec.tp2_pct)
    )
    perp = uni.market is Market.PERP
    kelly = bt.probability_column is not None
    signal_ms = dataset.events["time_ms"].to_numpy(dtype=np.int64)
    return RunSetup(
        exchange=uni.exchange,
        market=uni.market.value,
        symbols=tuple(symbols),
        timeframe=uni.timeframe.value,
        rule=spec.rule_name,
        rule_params=rule_params_of(spec),
        barriers=BarrierSetup(
            mode="atr" if atr else "percent",
            sl=sl,
            tp1=tp1,
            tp2=tp2,
            atr_window=spec.atr_n,
            horizon_bars=spec.horizon_bars,
            tp1_fraction=bt.tp1_fraction,
            move_to_be=bt.move_to_be,
        ),
        costs=CostSetup(
            maker_fee_bps=bt.costs.maker_fee_rate * 1e4,
            taker_fee_bps=bt.costs.taker_fee_rate * 1e4,
            take_profit_fee="maker" if bt.tp_maker else "taker",
            slippage_bps=bt.costs.slippage_bps,
            funding=perp,
        ),
        sizing=SizingSetup(
            mode="kelly" if kelly else "fixed_fractional",
            initial_equity=bt.initial_equity,
            risk_per_trade=bt.sizing.risk_fraction,
            risk_cap=bt.sizing.risk_fraction_cap,
            kelly_fraction=bt.sizing.kelly_multiplier if kelly else None,
            max_leverage=bt.sizing.max_leverage,
            max_gross_leverage=bt.max_gross_leverage,
            max_positions=bt.max_positions,
            max_per_symbol=bt.max_per_symbol,
            margin_leverage=bt.leverage if perp else None,
            max_daily_loss=bt.max_daily_loss,
        ),
        dates=DateRange(
            first_signal_ms=int(signal_ms.min()),
            last_signal_ms=int(signal_ms.max()),
            oos_start_ms=oos.start_ms,
            oos_end_ms=oos.end_ms,
        ),
        walkforward=WalkForwardSetup(
            retrain_days=wf_config.retrain_days,
            embargo_hours=wf_config.embargo_hours,
            train_mode=wf_config.train,
            train_days=wf_config.train_days,
            min_train_days=wf_config.min_train_days,
            min_train_events=wf_config.min_train_events,
            folds=len(wf.folds),
        ),
        models=fold_models(wf, data_hash, config_hash),
        sides=sides_text(
            uni.market.value,
            spec.allow_long,
            spec.allow_short,
            bt.spot_borrow_rate_per_hour * 1e4,
        ),
    )
