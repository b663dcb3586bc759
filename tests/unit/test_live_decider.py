"""The live decider builds the model's own feature columns, like research does."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from atra.core.decision import EVENT_FEATURES, ModelHandle, primary_signal_at
from atra.core.meta import MetaModel, MetaParams
from atra.core.signals.spec import SignalSpec
from atra.core.synthetic.market import SyntheticConfig, generate_market
from atra.core.types import Timeframe
from atra.live.loop import StrategyDecider


def test_symbol_without_funding_gets_nan_funding_features_not_an_error() -> None:
    """A model trained with funding features decides on a spot-only symbol: funding is NaN."""
    rng = np.random.default_rng(1)
    names = ["ret_1", "funding_rate", *EVENT_FEATURES]
    X = pd.DataFrame({k: rng.normal(size=300) for k in names})
    y = (X["ret_1"] + rng.normal(size=300) > 0).astype(int)
    model = MetaModel(MetaParams(n_estimators=5, min_child_samples=5)).fit(X, y)

    candles = generate_market(SyntheticConfig(symbols=("BTCUSDT",), bars=1_500)).spot["BTCUSDT"]
    spec = SignalSpec()
    decider = StrategyDecider(spec, Timeframe.H1, model=ModelHandle(model, "m-funding"))
    decided = 0
    for end in range(200, len(candles)):
        window = candles.iloc[: end + 1].reset_index(drop=True)
        _, signal = primary_signal_at(window, spec, symbol="BTCUSDT", timeframe=Timeframe.H1)
        if signal is None:
            continue
        decision = decider("BTCUSDT", window, 10_000.0)
        assert decision.p_take is not None
        assert math.isfinite(decision.p_take)
        assert decision.model_id == "m-funding"
        decided += 1
        if decided == 3:
            break
    assert decided == 3
