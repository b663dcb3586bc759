"""What the live loop calls per symbol and bar: the backtest's decision path.

:class:`StrategyDecider` runs :func:`atra.core.decision.primary_signal_at`, the model's bar
features (:func:`atra.core.decision.bar_features`, exactly as research builds them) and
:func:`atra.core.decision.decide` (meta probability, reasons, the backtest's sizing).
:func:`decide_one` / :func:`decide_many` are module functions so an executor (threads or a
process pool) can run them off the event loop.

The side data of the features (funding, the counterpart market, BTC) comes with each call as a
:class:`FeatureContext` assembled by the feed (:func:`atra.core.features.context.assemble_context`,
the function research builds its contexts with); :attr:`StrategyDecider.inputs` tells the feed
what to fetch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from atra.core.decision import (
    Decision,
    ModelHandle,
    bar_features,
    decide,
    model_bar_features,
    primary_signal_at,
)
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.features.registry import FeatureContext
from atra.core.meta import MetaModel
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.types import Timeframe

# ---- decisions -----------------------------------------------------------------------------


class DecisionFn(Protocol):
    """What the loop calls for one symbol's bar: the candles up to and including that bar
    (the last ``window_bars`` of them), the equity to size with and the features' side data
    over the same bars (None: the decider needs none)."""

    def __call__(
        self,
        symbol: str,
        candles: pd.DataFrame,
        equity: float,
        context: FeatureContext | None = None,
    ) -> Decision: ...


@dataclass(frozen=True, slots=True)
class StrategyDecider:
    """The backtest's decision path per bar: primary signal at the last bar
    (:func:`primary_signal_at`), features only when there is a signal and a model, then
    :func:`decide` (meta probability, reasons, sizing)."""

    spec: SignalSpec
    timeframe: Timeframe
    model: ModelHandle | MetaModel | None = None
    sizing: SizingConfig = field(default_factory=SizingConfig)
    feature_context: FeatureContext | None = None
    use_kelly: bool = False
    costs: ExitSpec | None = None
    """The trade's fees and slippage: set, the size is the backtest's own
    (:func:`atra.core.decision.size_like_backtest`)."""

    @property
    def inputs(self) -> ModelInputs | None:
        """What the model's features read (None without a model)."""
        if self.model is None:
            return None
        return ModelInputs.from_features(model_bar_features(self.model))

    def __call__(
        self,
        symbol: str,
        candles: pd.DataFrame,
        equity: float,
        context: FeatureContext | None = None,
    ) -> Decision:
        _, signal = primary_signal_at(candles, self.spec, symbol=symbol, timeframe=self.timeframe)
        if signal is not None and self.model is not None:
            ctx = context or self.feature_context or FeatureContext(timeframe=self.timeframe)
            # the model's own columns; an input this symbol lacks (no funding, no perp) is NaN,
            # exactly as in training (atra.research.pipeline builds its features with
            # bar_features too)
            features, _ = bar_features(candles, ctx, model_bar_features(self.model))
        else:  # decide() reads the open time only (to_frame: a view, 8x faster than [[...]])
            features = candles["open_time"].to_frame()
        return decide(
            candles,
            features,
            signal,
            self.model,
            equity=equity,
            sizing=self.sizing,
            use_kelly=self.use_kelly,
            costs=self.costs,
        )


Job = tuple[str, pd.DataFrame, float, FeatureContext | None]
"""One decision to make: symbol, candles, equity, feature context."""


def decide_one(
    decider: DecisionFn,
    symbol: str,
    candles: pd.DataFrame,
    equity: float,
    context: FeatureContext | None = None,
) -> Decision:
    """One decision (a module function, so a process pool can run it too)."""
    return decider(symbol, candles, equity, context)


def decide_many(decider: DecisionFn, jobs: Sequence[Job]) -> list[Decision]:
    """Several decisions in one executor call."""
    return [decider(sym, candles, equity, ctx) for sym, candles, equity, ctx in jobs]
