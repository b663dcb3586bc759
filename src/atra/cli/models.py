"""Loading the meta model a command decides with (``atra live --model``, ``live.model``).

A model is named by a path to its directory or by its id in the models folder (``--models-dir``,
default ``models/``, where ``atra train --out`` saves). It is refused with one line when its
feature schema is not the one the decision path builds (registry features, then the event
attributes), when its features read something this market cannot serve, or when it was trained
for another market, timeframe, signal rule or exit spec than the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from atra.errors import AtraError, DataError, ModelError

if TYPE_CHECKING:
    import pandas as pd

    from atra.adapters.exchange.client import BinanceClient
    from atra.config import AtraConfig
    from atra.core.decision import ModelHandle
    from atra.core.exits.api import ExitSpec
    from atra.core.features.context import ModelInputs
    from atra.core.signals.spec import SignalSpec
    from atra.core.types import Market, Timeframe

__all__ = [
    "DEFAULT_MODELS_DIR",
    "check_servable_config",
    "load_decision_model",
    "read_context_candles",
    "side_client",
]

DEFAULT_MODELS_DIR = Path("models")


def load_decision_model(
    ref: str,
    models_dir: Path,
    *,
    market: Market,
    timeframe: Timeframe,
    signal: SignalSpec,
    exit_spec: ExitSpec,
) -> tuple[ModelHandle, ModelInputs]:
    """The model ``ref`` names, checked against the command's settings, and its inputs."""
    from atra.adapters.artifacts import load_model, read_metadata, resolve_model_dir
    from atra.core.decision import EVENT_FEATURES, ModelHandle
    from atra.research.walkforward import spec_to_dict

    directory = resolve_model_dir(ref, models_dir)
    meta = read_metadata(directory)
    model_id = str(meta.get("model_id", ref))
    names = meta.get("feature_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"model {model_id}: feature_names in its metadata is not a list of names")
    bar = [n for n in names if n not in EVENT_FEATURES]
    reg = load_model(directory, [*bar, *EVENT_FEATURES])  # schema: bar features, then events
    try:
        inputs = reg.inputs
    except AtraError as exc:
        raise ModelError(f"model {model_id}: {exc}") from None
    extra: dict[str, Any] = reg.metadata.get("extra") or {}
    for key, want in (("market", market.value), ("timeframe", timeframe.value)):
        have = extra.get(key)
        if have is not None and have != want:
            raise ModelError(
                f"model {model_id} was trained on {key} {have}; this run uses {key} {want}"
            )
    for key, spec in (("signal_spec", signal), ("exit_spec", exit_spec)):
        stored = extra.get(key)
        if stored is not None and stored != spec_to_dict(spec):
            raise ModelError(
                f"model {model_id} was trained with {key} {stored}, "
                f"the current settings give {spec_to_dict(spec)}"
            )
    return ModelHandle(reg.model, reg.model_id), inputs


def read_context_candles(
    cfg: AtraConfig,
    symbols: tuple[str, ...],
    inputs: ModelInputs | None,
    start_ms: int,
    end_ms: int,
    data: Path | None,
) -> dict[tuple[Market, str], pd.DataFrame]:
    """The side candles a model needs for a replay, by (market, symbol): every symbol on its
    counterpart market and BTCUSDT (when not replayed itself), from ``data``
    (``{SYMBOL}_{market}_{tf}.parquet``) or the store. A missing file or range is a one-line
    :class:`DataError` naming it and the input that needs it."""
    from atra.adapters.store import CandleStore, DatasetKey
    from atra.cli.replay_data import read_candles_file
    from atra.core.features.context import counterpart_market
    from atra.live.feed import BTC_SYMBOL

    if inputs is None:
        return {}
    lv = cfg.live
    wanted: list[tuple[Market, str, str]] = []
    if inputs.needs_counterpart:
        other = counterpart_market(lv.market)
        wanted += [(other, sym, "its basis features") for sym in symbols]
    if inputs.needs_btc and BTC_SYMBOL not in symbols:
        wanted.append((lv.market, BTC_SYMBOL, "its BTC cross-asset features"))
    out: dict[tuple[Market, str], pd.DataFrame] = {}
    for market, sym, why in wanted:
        if data is not None:
            path, frame = read_candles_file(
                data, market, sym, lv.timeframe, start_ms, end_ms, needed_for=why
            )
            where = str(path)
        else:
            store = CandleStore(cfg.data.data_dir)
            key = DatasetKey(cfg.data.exchange, market, sym, lv.timeframe)
            if not store.candle_path(key).exists():
                raise DataError(
                    f"replay: no {key} in the store at {store.root}; the model needs it for {why}"
                )
            frame = store.read_candles(key, start_ms, end_ms)
            where = str(store.candle_path(key))
        if frame.empty:
            raise DataError(f"replay data {where}: no candles in the range; the model needs them")
        out[(market, sym)] = frame
    return out


def check_servable_config(cfg: AtraConfig, inputs: ModelInputs) -> None:
    """Refuse a model whose inputs the configured venue cannot serve (one line)."""
    from atra.core.types import Market

    if inputs.needs_funding and cfg.live.market is not Market.PERP:
        raise ModelError(
            f"the model needs funding rates; live.market = {cfg.live.market.value!r} serves none "
            '(a model trained with --market perp needs live.market = "perp")'
        )
    lacking = [n for n in inputs.series if n not in {s.name for s in cfg.features.series}]
    if lacking:
        raise ModelError(
            f"the model reads the external series {', '.join(lacking)}, which the config does "
            "not define (add a [[features.series]] entry; examples/series.toml)"
        )


def side_client(cfg: AtraConfig, inputs: ModelInputs | None) -> BinanceClient | None:
    """The counterpart market's client when the model reads it (basis features); it shares
    nothing with the main client but the configuration."""
    if inputs is None or not inputs.needs_counterpart:
        return None
    from atra.adapters.exchange.client import BinanceClient
    from atra.core.features.context import counterpart_market
    from atra.core.types import Market

    ex = cfg.exchange
    other = counterpart_market(cfg.live.market)
    return BinanceClient(
        other,
        base_url=ex.spot_base_url if other is Market.SPOT else ex.perp_base_url,
        timeout_s=ex.read_timeout_s,
        connect_timeout_s=ex.connect_timeout_s,
        max_attempts=ex.max_retries + 1,
        max_connections=ex.max_connections,
    )
