"""ATRA: crypto momentum research to live signals, without lying on the way.

``import atra`` gives the notebook API (:mod:`atra.api`)::

    import atra

    btc = atra.load_candles(frame, "BTC/USDT")            # or a Parquet file / store directory
    uni = atra.universe([btc, eth], start="2024-01-01")
    events = atra.signals(uni)                            # primary model
    labelled = atra.labels(uni, events)                   # triple barrier + meta-label
    wf = atra.walk_forward(uni)                           # meta model, out of sample
    result = atra.backtest(wf)                            # OOS span, meta-filtered
    print(atra.stats(result).returns.sharpe)              # annualised x sqrt(8760) at 1h

Plug-ins add the user's own entry rule and features (``examples/plugins/``)::

    @atra.rule("breakout", params=BreakoutParams, warmup=lambda p: p.n + 1)
    def breakout(bars: pd.DataFrame, p: BreakoutParams) -> np.ndarray: ...

    @atra.feature("range_pos_48", family="price", warmup=47)
    def range_pos_48(ff: atra.FeatureFrame) -> np.ndarray: ...

The names load on first use, so importing the package stays light (the CLI reads only
``__version__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # loading data
    "Candles": "atra.api.candles",
    "load_candles": "atra.api.candles",
    "universe": "atra.api.candles",
    "synthetic_market": "atra.api.candles",
    "parse_symbol": "atra.core.symbols",
    # the research steps
    "Settings": "atra.api.workflow",
    "WalkForward": "atra.api.workflow",
    "settings": "atra.api.workflow",
    "features": "atra.api.workflow",
    "signals": "atra.api.workflow",
    "labels": "atra.api.workflow",
    "dataset": "atra.api.workflow",
    "walk_forward": "atra.api.workflow",
    "backtest": "atra.api.workflow",
    "stats": "atra.api.workflow",
    "report": "atra.api.workflow",
    # the specs the steps take
    "Market": "atra.core.types",
    "Timeframe": "atra.core.types",
    "Rule": "atra.core.signals.spec",
    "BarrierMode": "atra.core.signals.spec",
    "SignalSpec": "atra.core.signals.spec",
    "ExitSpec": "atra.core.exits.api",
    "MetaParams": "atra.core.meta",
    "WalkForwardConfig": "atra.research.walkforward",
    "BacktestConfig": "atra.core.backtest.engine",
    # plug-ins: the user's own rules and features
    "rule": "atra.core.signals.rules",
    "feature": "atra.core.features.registry",
    "FeatureFrame": "atra.core.features.frame",
    "Family": "atra.core.features.sources",
    # errors, grouped by what the caller does
    "AtraError": "atra.errors",
    "ConfigError": "atra.errors",
    "DataError": "atra.errors",
    "ModelError": "atra.errors",
}
"""Public name -> the module that defines it, imported on first access."""

__all__ = [
    "AtraError",
    "BacktestConfig",
    "BarrierMode",
    "Candles",
    "ConfigError",
    "DataError",
    "ExitSpec",
    "Family",
    "FeatureFrame",
    "Market",
    "MetaParams",
    "ModelError",
    "Rule",
    "Settings",
    "SignalSpec",
    "Timeframe",
    "WalkForward",
    "WalkForwardConfig",
    "__version__",
    "backtest",
    "dataset",
    "feature",
    "features",
    "labels",
    "load_candles",
    "parse_symbol",
    "report",
    "rule",
    "settings",
    "signals",
    "stats",
    "synthetic_market",
    "universe",
    "walk_forward",
]
"""The API; every name but ``__version__`` is in :data:`_LAZY`."""

if TYPE_CHECKING:
    from atra.api.candles import Candles, load_candles, synthetic_market, universe
    from atra.api.workflow import (
        Settings,
        WalkForward,
        backtest,
        dataset,
        features,
        labels,
        report,
        settings,
        signals,
        stats,
        walk_forward,
    )
    from atra.core.backtest.engine import BacktestConfig
    from atra.core.exits.api import ExitSpec
    from atra.core.features.frame import FeatureFrame
    from atra.core.features.registry import feature
    from atra.core.features.sources import Family
    from atra.core.meta import MetaParams
    from atra.core.signals.rules import rule
    from atra.core.signals.spec import BarrierMode, Rule, SignalSpec
    from atra.core.symbols import parse_symbol
    from atra.core.types import Market, Timeframe
    from atra.errors import AtraError, ConfigError, DataError, ModelError
    from atra.research.walkforward import WalkForwardConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atra' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
