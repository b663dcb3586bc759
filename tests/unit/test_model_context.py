"""One description of a model's inputs (ModelInputs), one context assembler, and the refusals
of a model the live venue cannot serve."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from atra.adapters.artifacts import META_FILE, resolve_model_dir
from atra.adapters.exchange.client import BinanceClient
from atra.core.features.context import (
    ModelInputs,
    assemble_context,
    counterpart_market,
    missing_inputs,
)
from atra.core.features.registry import HISTORY_BARS, feature_registry
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError, ModelError
from atra.live.feed import check_servable


def test_inputs_follow_the_registry() -> None:
    reg = feature_registry()
    candle_only = ModelInputs.from_features(["ret_24", "rsi_14", "side", "sl_dist_pct"])
    assert candle_only == ModelInputs(warmup_bars=max(reg["ret_24"].warmup_bars,
                                                      reg["rsi_14"].warmup_bars))  # fmt: skip
    assert candle_only.names == ()
    rich = ModelInputs.from_features(["funding_rate", "basis", "btc_vol_regime"])
    assert (rich.needs_funding, rich.needs_counterpart, rich.needs_btc) == (True, True, True)
    assert rich.warmup_bars == reg["btc_vol_regime"].warmup_bars
    assert rich.history_bars == max(HISTORY_BARS, rich.warmup_bars + 1)
    assert rich.names == ("funding", "counterpart", "btc")
    with pytest.raises(ConfigError, match="not_a_feature"):
        ModelInputs.from_features(["ret_24", "not_a_feature"])


def test_inputs_round_trip_and_bad_metadata_is_named() -> None:
    rich = ModelInputs.from_features(["funding_rate", "basis", "btc_ret_24"])
    assert ModelInputs.from_dict(rich.to_dict()) == rich
    bad = rich.to_dict() | {"needs_btc": "yes"}
    with pytest.raises(DataError, match="needs_btc must be true or false"):
        ModelInputs.from_dict(bad, "models/x/meta.json inputs")
    with pytest.raises(DataError, match="warmup_bars"):
        ModelInputs.from_dict(rich.to_dict() | {"warmup_bars": -1})


def test_assemble_context_marks_the_other_market_and_absent_inputs() -> None:
    frame = pd.DataFrame({"open_time": [0, 3_600_000], "close": [1.0, 2.0]})
    ctx = assemble_context(Timeframe.H1, Market.PERP, counterpart=frame, btc=frame.iloc[:0])
    assert ctx.counterpart_market is Market.SPOT is counterpart_market(Market.PERP)
    assert ctx.btc is None  # an empty frame is absent, never a zero-row input
    rich = ModelInputs.from_features(["funding_rate", "basis", "btc_ret_24"])
    assert missing_inputs(rich, ctx) == ["funding", "btc"]


def test_model_ids_resolve_in_the_models_folder(tmp_path: Path) -> None:
    model = tmp_path / "models" / "abc123"
    model.mkdir(parents=True)
    (model / META_FILE).write_text("{}")
    assert resolve_model_dir("abc123", tmp_path / "models") == model
    assert resolve_model_dir(str(model), tmp_path / "elsewhere") == model
    with pytest.raises(ModelError, match="neither a model directory"):
        resolve_model_dir("nope", tmp_path / "models")


def test_a_venue_that_cannot_serve_the_model_is_refused() -> None:
    spot, perp = BinanceClient(Market.SPOT), BinanceClient(Market.PERP)
    funding = ModelInputs(needs_funding=True)
    basis = ModelInputs(needs_counterpart=True)
    with pytest.raises(ConfigError, match="funding"):
        check_servable(funding, spot, None)
    check_servable(funding, perp, None)
    with pytest.raises(ConfigError, match="spot candles"):
        check_servable(basis, perp, None)
    check_servable(basis, perp, spot)
    with pytest.raises(ConfigError, match="external series"):
        check_servable(ModelInputs(series=("fear_greed",)), perp, spot)


def _saved(tmp_path: Path, names: list[str], extra: dict[str, object]) -> str:
    import numpy as np

    from atra.adapters.artifacts import save_model
    from atra.core.decision import EVENT_FEATURES
    from atra.core.meta import MetaModel, MetaParams

    rng = np.random.default_rng(0)
    cols = [*names, *EVENT_FEATURES]
    X = pd.DataFrame({c: rng.normal(size=200) for c in cols})
    y = (X[cols[0]] + rng.normal(size=200) > 0).astype(int)
    model = MetaModel(MetaParams(n_estimators=5, min_child_samples=5)).fit(X, y)
    reg = save_model(model, tmp_path, train_start_ms=0, train_end_ms=1, data_hash="h",
                     extra=extra)  # fmt: skip
    return reg.model_id


def test_live_refuses_a_model_of_another_market_or_schema(tmp_path: Path) -> None:
    from atra.cli.live import exit_spec, signal_spec
    from atra.cli.models import load_decision_model
    from atra.config import AtraConfig

    cfg = AtraConfig()
    kw = {"market": Market.PERP, "timeframe": Timeframe.H1, "signal": signal_spec(cfg),
          "exit_spec": exit_spec(cfg)}  # fmt: skip
    ok = _saved(tmp_path, ["basis", "btc_ret_24"], {"market": "perp", "timeframe": "1h"})
    _, inputs = load_decision_model(ok, tmp_path, **kw)  # type: ignore[arg-type]
    assert inputs == ModelInputs.from_features(["basis", "btc_ret_24"])  # derived: none stored
    spot = _saved(tmp_path, ["ret_24"], {"market": "spot", "timeframe": "1h"})
    with pytest.raises(ModelError, match="trained on market spot; this run uses market perp"):
        load_decision_model(spot, tmp_path, **kw)  # type: ignore[arg-type]
    daily = _saved(tmp_path, ["ret_24"], {"market": "perp", "timeframe": "1d"})
    with pytest.raises(ModelError, match="timeframe 1d"):
        load_decision_model(daily, tmp_path, **kw)  # type: ignore[arg-type]
    alien = _saved(tmp_path, ["my_secret_feature"], {})
    with pytest.raises(ModelError, match="my_secret_feature"):
        load_decision_model(alien, tmp_path, **kw)  # type: ignore[arg-type]
