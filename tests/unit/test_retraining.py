"""The retrain schedule (:mod:`atra.core.retraining`) is the walk-forward's: the same windows,
the same training rows, no label that ends inside the embargo before a retrain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atra.cli.retraining import utc_ms
from atra.config import LiveConfig
from atra.core.retraining import MarketHistory, RetrainSchedule
from atra.core.validation import (
    DAY_MS,
    schedule_windows,
    training_fold,
    walk_forward_splits,
    window_start_ms,
)
from atra.errors import ConfigError

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01


def test_schedule_windows_and_their_starts() -> None:
    sched = RetrainSchedule.every_days(30, T0)
    assert sched.span_ms == 30 * DAY_MS
    assert sched.window_start(T0) == T0
    assert sched.window_start(T0 + 30 * DAY_MS - 1) == T0
    assert sched.window_start(T0 + 30 * DAY_MS) == T0 + 30 * DAY_MS
    assert sched.window_start(T0 - 1) == T0 - 30 * DAY_MS  # before the anchor: earlier windows
    assert window_start_ms(T0 + 45 * DAY_MS, T0, 30 * DAY_MS) == T0 + 30 * DAY_MS
    assert schedule_windows(np.array([T0 - 1, T0, T0 + 61 * DAY_MS]), T0, 30 * DAY_MS).tolist() == [
        -1,
        0,
        2,
    ]
    # a run deciding 2024-01-01 .. 2024-04-01 swaps on 01-31, 03-01 and 03-31
    end = T0 + 91 * DAY_MS
    assert sched.retrain_times(T0, end) == [T0 + k * 30 * DAY_MS for k in (1, 2, 3)]
    # anchored elsewhere: the model it starts with serves the window holding its first bar
    late = RetrainSchedule.every_days(30, T0 - 10 * DAY_MS)
    assert late.retrain_times(T0, end)[0] == T0 + 20 * DAY_MS


@pytest.mark.parametrize("days", [0, -3])
def test_schedule_needs_a_positive_period(days: int) -> None:
    with pytest.raises(ConfigError, match="retrain_days must be >= 1"):
        RetrainSchedule.every_days(days, T0)
    with pytest.raises(ConfigError, match="positive"):
        RetrainSchedule(T0, 0)


def _events(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t0 = T0 + np.sort(rng.integers(0, 200 * DAY_MS // H, n)).astype(np.int64) * H
    t1 = t0 + rng.integers(1, 72, n).astype(np.int64) * H
    return t0, t1


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("embargo_h", [0, 24])
def test_a_retrain_trains_on_the_walkforward_fold_of_its_window(seed: int, embargo_h: int) -> None:
    t0, t1 = _events(seed)
    start = T0 + 60 * DAY_MS
    span = 30 * DAY_MS
    folds = walk_forward_splits(t0, t1, start_ms=start, test_span_ms=span, embargo_ms=embargo_h * H)
    assert len(folds) >= 4
    sched = RetrainSchedule(start, span)
    for fold in folds:
        # the schedule puts every test event of the fold in the window the fold starts
        assert {sched.window_start(int(t)) for t in t0[fold.test_idx]} == {fold.test_start_ms}
        # a retrain at that window's start trains on exactly the fold's rows, from the events
        # known then (those decided before it: nothing of the window or after is given)
        known = np.flatnonzero(t0 < fold.test_start_ms)
        live = training_fold(
            t0[known],
            t1[known],
            test_start_ms=fold.test_start_ms,
            test_span_ms=span,
            embargo_ms=embargo_h * H,
        )
        assert known[live.train_idx].tolist() == fold.train_idx.tolist()
        assert (live.n_purged, live.n_embargoed) == (fold.n_purged, fold.n_embargoed)
        assert live.test_idx.size == 0
        # no look-ahead: every training label ended an embargo before the retrain
        assert (t1[fold.train_idx] + embargo_h * H < fold.test_start_ms).all()
    assert sum(f.n_purged for f in folds) > 0


def test_training_fold_refuses_bad_arguments() -> None:
    t0, t1 = _events(0, 10)
    with pytest.raises(ConfigError, match="test_span_ms"):
        training_fold(t0, t1, test_start_ms=T0, test_span_ms=0)
    with pytest.raises(ConfigError, match="embargo_ms"):
        training_fold(t0, t1, test_start_ms=T0, test_span_ms=DAY_MS, embargo_ms=-1)
    with pytest.raises(ConfigError, match="rolling"):
        training_fold(t0, t1, test_start_ms=T0, test_span_ms=DAY_MS, train="rolling")


def test_market_history_before_cuts_every_series() -> None:
    times = T0 + np.arange(10, dtype=np.int64) * H
    candles = pd.DataFrame({"open_time": times, "close": np.arange(10.0)})
    funding = pd.DataFrame({"funding_time": times[::4], "funding_rate": [1e-4, 2e-4, 3e-4]})
    hist = MarketHistory({"AAA": candles}, {"AAA": candles}, candles, {"AAA": funding})
    cut = hist.before(T0 + 5 * H)
    assert cut.candles["AAA"]["open_time"].tolist() == times[:5].tolist()
    assert cut.counterparts["AAA"]["open_time"].max() == T0 + 4 * H
    assert cut.btc is not None
    assert len(cut.btc) == 5
    assert cut.funding["AAA"]["funding_time"].tolist() == [T0, T0 + 4 * H]
    assert hist.before(T0 + 20 * H).candles["AAA"] is candles  # nothing to cut: no copy


def test_live_config_retrain_fields() -> None:
    cfg = LiveConfig(
        retrain_days=30, retrain_anchor="2024-01-01", retrain_from="2024-01-01T02:00+02:00"
    )
    assert cfg.retrain_anchor is not None
    assert utc_ms(cfg.retrain_anchor) == T0  # no zone: UTC
    assert cfg.retrain_from is not None
    assert utc_ms(cfg.retrain_from) == T0
    assert LiveConfig().retrain_days is None  # off by default
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        LiveConfig(retrain_days=-1)
    with pytest.raises(ValueError, match="retrain_min_events"):
        LiveConfig(retrain_min_events=0)
