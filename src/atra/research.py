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
(strategy, costs, meta) onto the core parameter objects.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.artifacts import RegisteredModel, dataset_hash, load_model, save_model
from atra.adapters.store import CandleStore, DatasetKey
from atra.config import AtraConfig
from atra.core.decision import (
    EVENT_FEATURES,
    ModelHandle,
    available_inputs,
    bar_features,
    decision_features,
)
from atra.core.exits import ExitSpec
from atra.core.features import HISTORY_BARS, FeatureContext, feature_specs
from atra.core.frames import ms_to_iso
from atra.core.labels import label_events
from atra.core.meta import MetaModel, MetaParams, OOSPredictions, oos_metrics_by_year
from atra.core.meta import walk_forward_predict as _walk_forward_predict
from atra.core.signals import BarrierMode, Rule, SignalSpec, generate_events
from atra.core.types import Market, Timeframe
from atra.core.validation import DAY_MS, Fold, walk_forward_splits
from atra.core.weights import fold_weights_fn, sample_weights
from atra.errors import ConfigError, DataError, ModelError

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
    "spec_to_dict",
    "symbol_features",
    "train_model",
]

BTC_SYMBOL = "BTCUSDT"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ProgressFn = Callable[[int, int, str], None]


def parse_time_ms(text: str) -> int:
    """``"2024-01-01"`` / ``"2024-01-01T12:00"`` / ``"2024-01-01 12:00:00Z"`` (UTC) or epoch ms."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    try:
        stamp = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"time {text!r}: expected an ISO date/time (2024-01-01[T12:00]) or epoch ms"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (stamp - _EPOCH) // dt.timedelta(milliseconds=1)  # exact: no float seconds


# ---- universe ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SymbolData:
    """One symbol's bars (warm-up included), its funding and counterpart market where stored."""

    symbol: str
    candles: pd.DataFrame
    funding: pd.DataFrame | None
    counterpart: pd.DataFrame | None


@dataclass(frozen=True, slots=True, eq=False)
class Universe:
    """What :func:`load_universe` read. ``start_ms`` is the first signal time of the research
    range (bars before it are feature warm-up), ``end_ms`` its exclusive end."""

    exchange: str
    market: Market
    timeframe: Timeframe
    start_ms: int | None
    end_ms: int | None
    symbols: dict[str, SymbolData]
    btc: pd.DataFrame | None

    def context(self, symbol: str) -> FeatureContext:
        """The feature context of ``symbol``: funding, counterpart and BTC where present."""
        data = self.symbols[symbol]
        other = Market.PERP if self.market is Market.SPOT else Market.SPOT
        return FeatureContext(
            timeframe=self.timeframe,
            funding=data.funding,
            counterpart=data.counterpart,
            counterpart_market=other,
            btc=self.btc,
        )


def load_universe(
    store: CandleStore,
    exchange: str,
    symbols: Sequence[str],
    market: Market,
    timeframe: Timeframe,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    warmup_bars: int = HISTORY_BARS,
    btc_symbol: str = BTC_SYMBOL,
) -> Universe:
    """Read candles of ``symbols`` (``start_ms - warmup_bars`` bars .. ``end_ms``), the
    funding of each symbol and its other market where stored, and ``btc_symbol`` (same market
    and bar size) as context when stored. A symbol without candles is a :class:`DataError`."""
    if not symbols:
        raise ConfigError("load_universe: no symbols given")
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"load_universe: duplicate symbols in {list(symbols)}")
    if warmup_bars < 0:
        raise ConfigError(f"warmup_bars must be >= 0, got {warmup_bars}")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError(f"empty range: end {end_ms} <= start {start_ms}")
    read_from = None if start_ms is None else start_ms - warmup_bars * timeframe.ms
    other = Market.PERP if market is Market.SPOT else Market.SPOT

    def candles(sym: str, mkt: Market) -> pd.DataFrame | None:
        key = DatasetKey(exchange, mkt, sym, timeframe)
        if not store.candle_path(key).exists():
            return None
        return store.read_candles(key, read_from, end_ms)

    data: dict[str, SymbolData] = {}
    for sym in symbols:
        main = candles(sym, market)
        if main is None:
            key = DatasetKey(exchange, market, sym, timeframe)
            raise DataError(
                f"no candles {key} in the store at {store.root} (expected {store.candle_path(key)})"
            )
        if main.empty:
            raise DataError(f"{exchange}/{market}/{sym}/{timeframe}: no bars in the range")
        funding = None
        if store.funding_path(exchange, sym).exists():
            # funding features look back a few days of events: read a month before the bars
            funding_from = None if read_from is None else read_from - 31 * DAY_MS
            funding = store.read_funding(exchange, sym, funding_from, end_ms)
        counterpart = candles(sym, other)
        data[sym] = SymbolData(
            sym,
            main,
            funding,
            counterpart if counterpart is not None and not counterpart.empty else None,
        )
    btc = data[btc_symbol].candles if btc_symbol in data else candles(btc_symbol, market)
    return Universe(
        exchange,
        market,
        timeframe,
        start_ms,
        end_ms,
        data,
        btc if btc is not None and not btc.empty else None,
    )


# ---- dataset ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetReport:
    """Counts of the dataset: nothing excluded goes unreported."""

    events: int
    complete: int
    incomplete: int
    """Events whose trade had not resolved when the data ended: excluded from training."""
    before_start: int
    """Signals in the warm-up bars before the range start: not part of the dataset."""
    per_symbol: dict[str, dict[str, int]] = field(default_factory=dict)
    absent_inputs: dict[str, list[str]] = field(default_factory=dict)
    """Per symbol, the side data it lacks (its features of those inputs are NaN)."""


@dataclass(frozen=True, slots=True, eq=False)
class ResearchDataset:
    """Primary events with labels (``events``) and model inputs (``X``), row for row.

    ``events`` columns: those of :func:`atra.core.signals.generate_events` plus the label
    columns (``t0_ms, t1_ms, label, ret_net, reason, complete, meta_label, ...``). Rows are
    sorted by ``time_ms`` then symbol; index 0..n-1.
    """

    events: pd.DataFrame
    X: pd.DataFrame
    bar_features: tuple[str, ...]
    signal_spec: SignalSpec
    exit_spec: ExitSpec
    universe: Universe
    report: DatasetReport

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Model input columns: the bar features then :data:`EVENT_FEATURES`."""
        return (*self.bar_features, *EVENT_FEATURES)

    @property
    def complete(self) -> npt.NDArray[np.bool_]:
        return self.events["complete"].to_numpy(dtype=bool)

    def training(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(events, X)`` of the complete (trainable) events, index reset."""
        m = self.complete
        return (
            self.events.loc[m].reset_index(drop=True),
            self.X.loc[m].reset_index(drop=True),
        )


def _default_features(universe: Universe) -> list[str]:
    """Built-in features whose inputs at least one symbol has."""
    have: set[str] = set()
    for sym in universe.symbols:
        have |= available_inputs(universe.context(sym))
    return [s.name for s in feature_specs().values() if set(s.inputs) <= have]


def symbol_features(
    universe: Universe, symbol: str, names: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Features ``names`` of ``symbol`` aligned with its candles
    (:func:`atra.core.decision.bar_features`: features whose inputs the symbol lacks are NaN
    columns). Returns the frame and the absent inputs."""
    return bar_features(universe.symbols[symbol].candles, universe.context(symbol), names)


def build_dataset(
    universe: Universe,
    signal_spec: SignalSpec,
    exit_spec: ExitSpec,
    feature_names: Sequence[str] | None = None,
    *,
    progress: ProgressFn | None = None,
) -> ResearchDataset:
    """Primary events of every symbol in the range, with features at the signal bar and
    triple-barrier labels / meta-labels from the exit kernel (see the module docstring)."""
    names = list(feature_names) if feature_names is not None else _default_features(universe)
    if len(set(names)) != len(names):
        raise ConfigError("build_dataset: feature names must be unique")
    clash = [n for n in names if n in EVENT_FEATURES]
    if clash:
        raise ConfigError(f"feature name(s) {clash} are reserved for event attributes")
    ev_parts: list[pd.DataFrame] = []
    x_parts: list[pd.DataFrame] = []
    per_symbol: dict[str, dict[str, int]] = {}
    absent_inputs: dict[str, list[str]] = {}
    before = 0
    syms = list(universe.symbols)
    for k, sym in enumerate(syms):
        candles = universe.symbols[sym].candles
        events = generate_events(candles, signal_spec, symbol=sym, timeframe=universe.timeframe)
        labels = label_events(candles, events, exit_spec, timeframe=universe.timeframe)
        feats, absent = symbol_features(universe, sym, names)
        if absent:
            absent_inputs[sym] = absent
        in_range = np.ones(len(events), dtype=bool)
        if universe.start_ms is not None:
            in_range = events["time_ms"].to_numpy() >= universe.start_ms
        n_before = int((~in_range).sum())
        before += n_before
        events, labels = events.loc[in_range], labels.loc[in_range]
        X = decision_features(events, feats, names)
        lab = labels.drop(columns=["symbol", "t", "side"])
        merged = pd.concat([events, lab], axis=1)
        done = int(merged["complete"].sum())
        per_symbol[sym] = {
            "events": len(merged),
            "complete": done,
            "incomplete": len(merged) - done,
            "before_start": n_before,
        }
        if len(merged):
            ev_parts.append(merged)
            x_parts.append(X)
        if progress is not None:
            progress(k + 1, len(syms), sym)
    if not ev_parts:
        raise DataError(
            f"no primary signal on {', '.join(syms)} in the range "
            f"({universe.exchange}/{universe.market}/{universe.timeframe})"
        )
    events_all = pd.concat(ev_parts, ignore_index=True)
    X_all = pd.concat(x_parts, ignore_index=True)
    order = np.lexsort((events_all["symbol"].to_numpy(dtype=str), events_all["time_ms"].to_numpy()))
    events_all = events_all.iloc[order].reset_index(drop=True)
    X_all = X_all.iloc[order].reset_index(drop=True)
    events_all["reason"] = events_all["reason"].astype(str)
    events_all["first_reason"] = events_all["first_reason"].astype(str)
    n_done = int(events_all["complete"].sum())
    report = DatasetReport(
        events=len(events_all),
        complete=n_done,
        incomplete=len(events_all) - n_done,
        before_start=before,
        per_symbol=per_symbol,
        absent_inputs=absent_inputs,
    )
    return ResearchDataset(
        events_all, X_all, tuple(names), signal_spec, exit_spec, universe, report
    )


# ---- walk-forward -----------------------------------------------------------------------------


def _check_decay(decay: float | None) -> None:
    if decay is not None and not (math.isfinite(decay) and -1.0 < decay <= 1.0):
        raise ConfigError(f"decay must be in (-1, 1] or None, got {decay}")


@dataclass(frozen=True, slots=True)
class WalkForwardConfig:
    """Retrain every ``retrain_days``; first test window ``min_train_days`` after the first
    event (or at ``first_test_ms``); ``embargo_hours`` between training labels and the test
    window; ``decay`` (None = none) for the sample-weight time decay."""

    retrain_days: int = 30
    train: Literal["expanding", "rolling"] = "expanding"
    train_days: int | None = None
    embargo_hours: float = 24.0
    min_train_days: int = 180
    first_test_ms: int | None = None
    min_train_events: int = 200
    decay: float | None = None

    def __post_init__(self) -> None:
        if self.retrain_days < 1 or self.min_train_days < 0 or self.min_train_events < 1:
            raise ConfigError("retrain_days >= 1, min_train_days >= 0, min_train_events >= 1")
        if not (math.isfinite(self.embargo_hours) and self.embargo_hours >= 0):
            raise ConfigError(f"embargo_hours must be >= 0, got {self.embargo_hours}")
        if self.train == "rolling" and (self.train_days is None or self.train_days < 1):
            raise ConfigError("train='rolling' needs train_days >= 1")
        if self.train not in ("expanding", "rolling"):
            raise ConfigError(f"train must be expanding|rolling, got {self.train!r}")
        _check_decay(self.decay)


@dataclass(frozen=True, slots=True, eq=False)
class WalkForwardResult:
    """Out-of-sample predictions and their quality.

    ``predictions``: the complete events that got an OOS prediction, with ``fold, p_take,
    threshold, take`` (index = row of ``dataset.events``). ``metrics``: per year and ``all``
    (``n_events, base_rate, auc, n_take, take_rate, precision, recall, mean_net_return,
    mean_net_return_take``). ``excluded_incomplete``: events not used (label unknown);
    ``untested``: complete events before the first fold (training warm-up).
    """

    predictions: pd.DataFrame
    metrics: pd.DataFrame
    folds: list[Fold]
    oos: OOSPredictions
    excluded_incomplete: int
    untested: int
    elapsed_s: float


def _split_config(
    t0: npt.NDArray[np.int64], config: WalkForwardConfig
) -> tuple[int, int, int | None, int]:
    span = config.retrain_days * DAY_MS
    embargo = round(config.embargo_hours * 3_600_000)
    first = config.first_test_ms
    if first is None:
        first = (int(t0.min()) // DAY_MS) * DAY_MS + config.min_train_days * DAY_MS
    rolling = None if config.train_days is None else config.train_days * DAY_MS
    return first, span, rolling, embargo


def run_walkforward(
    dataset: ResearchDataset,
    config: WalkForwardConfig | None = None,
    params: MetaParams | None = None,
    *,
    n_jobs: int = 2,
    backend: str = "threading",
    progress: Callable[[int, int], None] | None = None,
) -> WalkForwardResult:
    """Walk-forward OOS predictions over the complete events of ``dataset``.

    Folds run through joblib (``n_jobs`` workers, ``backend``): threads by default, since
    LightGBM trains without the GIL and threads need no process start-up or data copies.
    ``progress(done, total)`` is called after each fold."""
    cfg = config or WalkForwardConfig()
    started = time.perf_counter()
    rows = np.flatnonzero(dataset.complete)
    if rows.size == 0:
        raise DataError("walk-forward: the dataset has no complete (labelled) event")
    ev = dataset.events.iloc[rows]
    X = dataset.X.iloc[rows].reset_index(drop=True)
    y = ev["meta_label"].to_numpy(dtype=np.int64)
    t0 = ev["t0_ms"].to_numpy(dtype=np.int64)
    t1 = ev["t1_ms"].to_numpy(dtype=np.int64)
    net = ev["ret_net"].to_numpy(dtype=np.float64)
    symbols = ev["symbol"].to_numpy(dtype=str)
    first, span, rolling, embargo = _split_config(t0, cfg)
    folds = walk_forward_splits(
        t0,
        t1,
        start_ms=first,
        test_span_ms=span,
        train=cfg.train,
        train_span_ms=rolling,
        embargo_ms=embargo,
        min_train_events=cfg.min_train_events,
    )
    folds = [f for f in folds if np.unique(y[f.train_idx]).size == 2]
    if not folds:
        raise DataError(
            f"walk-forward: no fold has {cfg.min_train_events} training events of both classes "
            f"({rows.size} labelled events, first test window {ms_to_iso(first)})"
        )
    weights = fold_weights_fn(y, t0, t1, symbols, cfg.decay, bar_ms=dataset.universe.timeframe.ms)
    oos = _walk_forward_predict(
        X,
        y,
        t0,
        t1,
        folds,
        weights_fn=weights,
        params=params or MetaParams(),
        net_return=net,
        n_jobs=n_jobs,
        backend=backend,
        progress=progress,
    )
    pos = oos.frame["pos"].to_numpy(dtype=np.int64)
    preds = dataset.events.iloc[rows[pos]].copy()
    for col in ("fold", "p_take", "threshold", "take"):
        preds[col] = oos.frame[col].to_numpy()
    metrics = oos_metrics_by_year(oos, y, t0, net)
    return WalkForwardResult(
        predictions=preds,
        metrics=metrics,
        folds=folds,
        oos=oos,
        excluded_incomplete=int(len(dataset.events) - rows.size),
        untested=int(rows.size - pos.size),
        elapsed_s=time.perf_counter() - started,
    )


# ---- training and the registry ----------------------------------------------------------------


def spec_to_dict(spec: SignalSpec | ExitSpec) -> dict[str, Any]:
    """Plain JSON-ready fields of a spec (enums as their values)."""
    return {
        k: (v.value if isinstance(v, Rule | BarrierMode) else v) for k, v in asdict(spec).items()
    }


@dataclass(frozen=True, slots=True, eq=False)
class TrainedModel:
    """A model fitted on a whole range and saved to the registry."""

    registered: RegisteredModel
    n_train: int
    excluded_incomplete: int
    train_start_ms: int
    train_end_ms: int

    @property
    def handle(self) -> ModelHandle:
        return ModelHandle(self.registered.model, self.registered.model_id)


def train_model(
    dataset: ResearchDataset,
    out: Path,
    params: MetaParams | None = None,
    *,
    decay: float | None = None,
    oos_metrics: pd.DataFrame | None = None,
) -> TrainedModel:
    """Fit the meta model on every complete event of ``dataset`` (weights: balanced x
    uniqueness x decay) and save it under ``out`` (LightGBM text + metadata JSON)."""
    _check_decay(decay)
    ev, X = dataset.training()
    if ev.empty:
        raise DataError("train: the dataset has no complete (labelled) event")
    y = ev["meta_label"].to_numpy(dtype=np.int64)
    t0 = ev["t0_ms"].to_numpy(dtype=np.int64)
    t1 = ev["t1_ms"].to_numpy(dtype=np.int64)
    net = ev["ret_net"].to_numpy(dtype=np.float64)
    if np.unique(y).size < 2:
        raise ModelError(f"train: all {y.size} meta-labels are {int(y[0])}; need both classes")
    w = sample_weights(
        y, t0, t1, ev["symbol"].to_numpy(dtype=str), decay, bar_ms=dataset.universe.timeframe.ms
    )
    model = MetaModel(params or MetaParams()).fit(X, y, w, t0=t0, t1=t1, net_return=net)
    uni = dataset.universe
    extra = {
        "exchange": uni.exchange,
        "market": uni.market.value,
        "timeframe": uni.timeframe.value,
        "symbols": list(uni.symbols),
        "signal_spec": spec_to_dict(dataset.signal_spec),
        "exit_spec": spec_to_dict(dataset.exit_spec),
        "bar_features": list(dataset.bar_features),
        "n_train": int(y.size),
        "excluded_incomplete": dataset.report.incomplete,
        "meta_positive_rate": float(y.mean()),
        "decay": decay,
    }
    start, end = int(t0.min()), int(t1.max())
    reg = save_model(
        model,
        out,
        train_start_ms=start,
        train_end_ms=end,
        data_hash=dataset_hash(X, y, t0, t1),
        oos_metrics=oos_metrics,
        extra=extra,
    )
    return TrainedModel(reg, int(y.size), dataset.report.incomplete, start, end)


def load_model_for(path: Path, dataset: ResearchDataset) -> ModelHandle:
    """Load a registered model for ``dataset``'s inputs; a model trained with another signal
    or exit spec is refused (its probabilities would describe other trades)."""
    reg = load_model(path, dataset.feature_names)
    extra = reg.metadata.get("extra") or {}
    for key, spec in (("signal_spec", dataset.signal_spec), ("exit_spec", dataset.exit_spec)):
        stored = extra.get(key)
        if stored is not None and stored != spec_to_dict(spec):
            raise ModelError(
                f"model {reg.model_id} was trained with {key} {stored}, "
                f"the current settings give {spec_to_dict(spec)}"
            )
    return ModelHandle(reg.model, reg.model_id)


# ---- settings from the config -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResearchSettings:
    """The core parameter objects of a research run."""

    signal: SignalSpec
    exit: ExitSpec
    meta: MetaParams
    walkforward: WalkForwardConfig


def settings_from_config(cfg: AtraConfig) -> ResearchSettings:
    """Map ``strategy`` / ``costs`` / ``meta`` of the config onto the core specs.

    strategy: ``rule`` (ema_cross|donchian|tsmom) with ``params`` (fast/slow, n, lookback),
    ATR barriers ``sl_atr / tp1_atr / tp2_atr`` (tp2 must exceed tp1), ``horizon_bars``.
    costs: the taker fee on every fill (the backtest's default cost model) and the slippage,
    so a label is the trade the backtest and the paper loop would make.
    meta: LightGBM parameters; ``threshold_mode`` fixed -> the configured threshold,
    f1 -> F1-optimal on inner out-of-fold predictions, expected_value -> max summed net return;
    ``retrain_days`` / ``embargo_hours`` drive the walk-forward.
    """
    st = cfg.strategy
    try:
        rule = Rule(st.rule)
    except ValueError:
        raise ConfigError(
            f"strategy.rule: {st.rule!r} is not one of {', '.join(r.value for r in Rule)}"
        ) from None
    p = st.params
    signal = SignalSpec(
        rule=rule,
        ema_fast=int(p.get("fast", 20)),
        ema_slow=int(p.get("slow", 50)),
        donchian_n=int(p.get("n", 20)),
        tsmom_lookback=int(p.get("lookback", 168)),
        barrier_mode=BarrierMode.ATR,
        atr_n=st.atr_window,
        sl_atr=st.sl_atr,
        tp1_atr=st.tp1_atr,
        tp2_atr=st.tp2_atr,
        horizon_bars=st.horizon_bars,
    )
    c = cfg.costs
    fee = c.taker_fee_bps / 1e4  # every fill at the taker fee, as the backtest's default
    exit_spec = ExitSpec(fee_entry=fee, fee_tp=fee, fee_stop=fee, slippage_bps=c.slippage_bps)
    m = cfg.meta
    lg = m.lgbm
    objective: Literal["fbeta", "net_return"] = (
        "net_return" if m.threshold_mode == "expected_value" else "fbeta"
    )
    threshold = min(max(m.threshold, 0.01), 0.99)
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
