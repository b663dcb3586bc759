"""The meta model retrained at one walk-forward window: what the live loop runs in its worker
process (``live.retrain_days``, :mod:`atra.live.retrain`).

:class:`WindowTrainer` is the walk-forward's training of one fold, run on the history known
at the window's start: the universe is cut as :func:`atra.research.dataset.load_universe`
cuts the store (the same warm-up before ``data_start_ms``, nothing at or after the window),
the dataset is :func:`build_dataset`'s, the training rows are
:func:`atra.core.validation.training_fold`'s (the walk-forward's purge and embargo: every
label ended ``embargo_hours`` before the window), the weights are
:func:`atra.core.weights.fold_weights_fn`'s and the fit is
:func:`atra.core.meta.walkforward.fit_fold_model`, with the same LightGBM parameters. The
model a live run retrains at ``T`` is therefore the model ``atra walkforward --first-test``
fits for the window starting at ``T`` on the same data, and decides the same.

The model is saved to the registry like ``atra train``'s (same files, same ``extra``), its
metadata adding ``trained_through_ms`` (the window start), ``parent_model``, ``run_id`` and
the schedule. The saved id is a content hash: the same retrain gives the same id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atra.adapters.artifacts import dataset_hash, save_model
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.features.registry import HISTORY_BARS
from atra.core.frames import ms_to_iso
from atra.core.meta import MetaParams
from atra.core.meta.inputs import check_labels, feature_matrix, feature_names_of
from atra.core.meta.walkforward import fit_fold_model
from atra.core.retraining import MarketHistory, RetrainOutcome, RetrainRequest
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.core.validation import DAY_MS, training_fold
from atra.core.weights import fold_weights_fn
from atra.errors import DataError, ModelError
from atra.research.dataset import (
    BTC_SYMBOL,
    ResearchDataset,
    SymbolData,
    Universe,
    build_dataset,
)
from atra.research.walkforward import WalkForwardConfig, artifact_extra, fold_spans, labelled

__all__ = ["WindowTrainer"]

FUNDING_LEAD_MS = 31 * DAY_MS
"""Funding read before the first bar, as :func:`load_universe` reads it."""


def _since(frame: pd.DataFrame, col: str, lo: int) -> pd.DataFrame:
    return frame.loc[frame[col].to_numpy() >= lo].reset_index(drop=True)


@dataclass(frozen=True, slots=True)
class WindowTrainer:
    """Fits the model of the walk-forward window starting at a request's ``test_start_ms``
    and saves it under ``out`` (picklable: the live loop sends it to its worker process)."""

    exchange: str
    market: Market
    timeframe: Timeframe
    symbols: tuple[str, ...]
    signal_spec: SignalSpec
    exit_spec: ExitSpec
    bar_features: tuple[str, ...]
    params: MetaParams
    walkforward: WalkForwardConfig
    data_start_ms: int
    """The first signal time of the training data (``atra train --start``)."""
    out: Path
    warmup_bars: int = HISTORY_BARS

    def universe(self, history: MarketHistory, test_start_ms: int) -> Universe:
        """The universe :func:`load_universe` reads for ``[data_start_ms, test_start_ms)``
        from a store holding ``history``."""
        if test_start_ms <= self.data_start_ms:
            raise DataError(
                f"retrain at {ms_to_iso(test_start_ms)}: not after the training data's start "
                f"{ms_to_iso(self.data_start_ms)}"
            )
        known = history.before(test_start_ms)
        read_from = self.data_start_ms - self.warmup_bars * self.timeframe.ms
        data: dict[str, SymbolData] = {}
        for sym in self.symbols:
            frame = known.candles.get(sym)
            main = None if frame is None else _since(frame, "open_time", read_from)
            if main is None or main.empty:
                raise DataError(
                    f"retrain at {ms_to_iso(test_start_ms)}: no {sym} candles between "
                    f"{ms_to_iso(read_from)} and then"
                )
            funding = known.funding.get(sym)
            other = known.counterparts.get(sym)
            other = None if other is None else _since(other, "open_time", read_from)
            data[sym] = SymbolData(
                sym,
                main,
                None
                if funding is None
                else _since(funding, "funding_time", read_from - FUNDING_LEAD_MS),
                other if other is not None and not other.empty else None,
            )
        btc = data[BTC_SYMBOL].candles if BTC_SYMBOL in data else known.btc
        if btc is not None and BTC_SYMBOL not in data:
            btc = _since(btc, "open_time", read_from)
        return Universe(
            self.exchange,
            self.market,
            self.timeframe,
            self.data_start_ms,
            test_start_ms,
            data,
            btc if btc is not None and not btc.empty else None,
        )

    def dataset(self, history: MarketHistory, test_start_ms: int) -> ResearchDataset:
        """The research dataset of the history known at ``test_start_ms``."""
        uni = self.universe(history, test_start_ms)
        return build_dataset(uni, self.signal_spec, self.exit_spec, self.bar_features)

    def __call__(self, request: RetrainRequest) -> RetrainOutcome:
        started = time.perf_counter()
        at = request.test_start_ms
        when = ms_to_iso(at)
        dataset = self.dataset(request.history, at)
        lab = labelled(dataset)
        cfg = self.walkforward
        span, rolling, embargo = fold_spans(cfg)
        fold = training_fold(
            lab.t0,
            lab.t1,
            test_start_ms=at,
            test_span_ms=span,
            train=cfg.train,
            train_span_ms=rolling,
            embargo_ms=embargo,
        )
        rows = fold.train_idx
        if rows.size < cfg.min_train_events:
            raise ModelError(
                f"retrain at {when}: {rows.size} labelled events ended before it (embargo "
                f"{cfg.embargo_hours:g} h), fewer than min_train_events = {cfg.min_train_events}"
            )
        y = check_labels(lab.y, lab.y.size)
        if np.unique(y[rows]).size < 2:
            raise ModelError(f"retrain at {when}: all {rows.size} training meta-labels agree")
        weights = fold_weights_fn(
            y, lab.t0, lab.t1, lab.symbols, cfg.decay, bar_ms=self.timeframe.ms
        )(rows)
        names = feature_names_of(lab.X)
        model = fit_fold_model(
            feature_matrix(lab.X), names, y, lab.t0, lab.t1, lab.net, rows, weights, self.params
        )
        start, end = int(lab.t0[rows].min()), int(lab.t1[rows].max())
        extra = artifact_extra(dataset, y[rows], cfg.decay) | {
            "trained_through_ms": at,
            "parent_model": request.parent_model_id,
            "run_id": request.run_id,
            "retrain": {
                "anchor_ms": request.schedule.anchor_ms,
                "span_ms": request.schedule.span_ms,
                "embargo_hours": cfg.embargo_hours,
                "min_train_events": cfg.min_train_events,
                "n_purged": fold.n_purged,
                "n_embargoed": fold.n_embargoed,
            },
        }
        X_train = lab.X.iloc[rows]
        reg = save_model(
            model,
            self.out,
            train_start_ms=start,
            train_end_ms=end,
            data_hash=dataset_hash(X_train, y[rows], lab.t0[rows], lab.t1[rows]),
            extra=extra,
            inputs=ModelInputs.from_features(self.bar_features),
        )
        return RetrainOutcome(
            model_dir=str(reg.path),
            model_id=reg.model_id,
            test_start_ms=at,
            n_train=int(rows.size),
            n_purged=fold.n_purged,
            n_embargoed=fold.n_embargoed,
            train_start_ms=start,
            train_end_ms=end,
            elapsed_s=time.perf_counter() - started,
        )
