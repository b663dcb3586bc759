"""The timeframe as a searched parameter, on real spot data: a 4h trial is the walk-forward on the
4h bars `atra data resample` stores, a 1d trial is annualised with sqrt(365), and a bucket with
a missing hour is left out, never filled."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.store import CandleStore
from atra.cli import main
from atra.config import AtraConfig, load_config
from atra.core.features.registry import HISTORY_BARS
from atra.core.types import Market, Timeframe
from atra.data.ingest import import_files
from atra.errors import ConfigError
from atra.research.evaluation.loop import run_research_loop
from atra.research.evaluation.settings import backtest_config_from
from atra.research.pipeline import Universe, load_universe, parse_time_ms, settings_from_config
from atra.research.resample import check_timeframes, universe_at, warmup_bars_for
from atra.research.search_space import apply_params, load_search_space, timeframe_of
from atra.research.search_trials import TrialRunner, WalkForwardOverrides

SYMBOLS = ("BTCUSDT", "ETHUSDT")
CONFIG = """
[strategy]
params = { fast = 5.0, slow = 20.0 }
horizon_bars = 12

[meta.lgbm]
n_estimators = 20
num_leaves = 7
min_child_samples = 10
"""
START, END = "2020-01-01", "2024-01-01"
WF = WalkForwardOverrides(retrain_days=60, min_train_days=120, min_train_events=40)
WF_DAILY = WalkForwardOverrides(retrain_days=90, min_train_days=180, min_train_events=20)


@pytest.fixture(scope="module")
def setup(
    shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CandleStore, AtraConfig, Universe]:
    root = tmp_path_factory.mktemp("search_tf")
    store = CandleStore(root / "store")
    import_files(store, [shared_data_dir / f"{s}_spot_1h.parquet" for s in SYMBOLS])
    for sym in SYMBOLS:  # the stored 4h bars, as a user makes them
        args = ["data", "resample", "--symbol", sym, "--from", "1h", "--to", "4h",
                "--data-dir", str(store.root)]  # fmt: skip
        assert main(args) == 0
    (root / "atra.toml").write_text(CONFIG)
    warmup = warmup_bars_for(Timeframe.H1, (Timeframe.H4, Timeframe.D1))
    span = parse_time_ms(START), parse_time_ms(END)
    hourly = load_universe(store, "binance", SYMBOLS, Market.SPOT, Timeframe.H1, *span,
                           warmup_bars=warmup)  # fmt: skip
    return store, load_config(root / "atra.toml"), hourly


def test_warmup_covers_the_coarsest_timeframe() -> None:
    assert warmup_bars_for(Timeframe.H1, ()) == HISTORY_BARS
    assert warmup_bars_for(Timeframe.H1, (Timeframe.H1, Timeframe.H4)) == 4 * HISTORY_BARS
    assert warmup_bars_for(Timeframe.H1, (Timeframe.D1, Timeframe.H4)) == 24 * HISTORY_BARS


def test_resampled_universe_is_the_stored_resample(
    setup: tuple[CandleStore, AtraConfig, Universe],
) -> None:
    store, _, hourly = setup
    stored = load_universe(store, "binance", SYMBOLS, Market.SPOT, Timeframe.H4,
                           parse_time_ms(START), parse_time_ms(END))  # fmt: skip
    mine = universe_at(hourly, Timeframe.H4)
    assert mine.timeframe is Timeframe.H4
    for sym in SYMBOLS:
        pd.testing.assert_frame_equal(mine.symbols[sym].candles, stored.symbols[sym].candles)
    assert mine.btc is not None
    assert stored.btc is not None
    pd.testing.assert_frame_equal(mine.btc, stored.btc)


def test_a_bucket_with_a_missing_hour_is_left_out(
    setup: tuple[CandleStore, AtraConfig, Universe],
) -> None:
    _, _, hourly = setup
    daily = universe_at(hourly, Timeframe.D1)
    for sym in SYMBOLS:
        hours = hourly.symbols[sym].candles["open_time"].to_numpy()
        per_day = pd.Series(hours // Timeframe.D1.ms).value_counts()
        short = set(per_day.index[per_day < 24] * Timeframe.D1.ms)
        assert short, f"{sym}: the span should hold a day with a missing hour"
        days = set(daily.symbols[sym].candles["open_time"].to_numpy().tolist())
        assert not (short & days)  # refused, not filled
        full = set(per_day.index[per_day == 24] * Timeframe.D1.ms)
        first_kept = daily.symbols[sym].candles["open_time"].iloc[0]
        assert {d for d in full if d >= first_kept} == days  # every complete day kept
    with pytest.raises(ConfigError, match="not a whole multiple"):
        universe_at(daily, Timeframe.H4)
    with pytest.raises(ConfigError, match=r"space.toml: timeframe: 1h is not a whole multiple"):
        check_timeframes(Timeframe.H4, (Timeframe.D1, Timeframe.H1), source="space.toml: timeframe")


def test_4h_trial_equals_the_walkforward_on_stored_4h_bars(
    setup: tuple[CandleStore, AtraConfig, Universe], tmp_path: Path
) -> None:
    store, cfg, hourly = setup
    searched = TrialRunner(hourly, Market.SPOT, WF, seed=7).run(cfg, Timeframe.H4)
    stored_uni = load_universe(store, "binance", SYMBOLS, Market.SPOT, Timeframe.H4,
                               parse_time_ms(START), parse_time_ms(END))  # fmt: skip
    direct = TrialRunner(stored_uni, Market.SPOT, WF, seed=7).run(cfg)
    assert searched.timeframe is direct.timeframe is Timeframe.H4
    assert direct.n_trades > 0
    assert (searched.sharpe, searched.n_returns, searched.n_trades) == (
        direct.sharpe,
        direct.n_returns,
        direct.n_trades,
    )
    assert (searched.oos_start_ms, searched.oos_end_ms) == (direct.oos_start_ms, direct.oos_end_ms)
    assert (searched.total_return, searched.max_drawdown) == (
        direct.total_return,
        direct.max_drawdown,
    )
    pd.testing.assert_series_equal(searched.daily, direct.daily)
    # and the figures `atra walkforward --timeframe 4h` records for that config
    settings = settings_from_config(cfg, Market.SPOT)
    settings = dataclasses.replace(settings, walkforward=WF.applied(settings.walkforward))
    ev = run_research_loop(
        store,
        exchange="binance",
        symbols=SYMBOLS,
        market=Market.SPOT,
        timeframe=Timeframe.H4,
        start_ms=parse_time_ms(START),
        end_ms=parse_time_ms(END),
        settings=settings,
        backtest_config=backtest_config_from(cfg),
        runs_dir=tmp_path / "runs",
        seed=7,
    )
    recorded = ev.figures["filtered"].sharpe
    assert recorded is not None
    assert math.isclose(searched.sharpe, recorded, rel_tol=1e-12, abs_tol=1e-12)


def test_1d_trial_is_annualised_with_sqrt_365_and_shares_the_cache_by_timeframe(
    setup: tuple[CandleStore, AtraConfig, Universe],
) -> None:
    _, cfg, hourly = setup
    runner = TrialRunner(hourly, Market.SPOT, WF_DAILY, seed=7)
    out = runner.run(cfg, Timeframe.D1)
    assert out.timeframe is Timeframe.D1
    assert math.isfinite(out.sharpe)
    # one mark per day: the bar returns are the daily returns the PBO reads
    r = out.daily.to_numpy()
    assert len(r) == out.n_returns
    assert np.all(np.diff(out.daily.index.to_numpy()) % Timeframe.D1.ms == 0)
    expected = r.mean() / r.std(ddof=1) * math.sqrt(365)
    assert math.isclose(out.sharpe, expected, rel_tol=1e-9)
    # the same config at another bar size is another dataset; at the same one, the cache
    again = runner.run(apply_params(cfg, {"meta.threshold": 0.5}), Timeframe.D1)
    hourly_out = runner.run(cfg, Timeframe.H1)
    assert (out.dataset_cached, again.dataset_cached, hourly_out.dataset_cached) == (
        False,
        True,
        False,
    )
    assert hourly_out.timeframe is Timeframe.H1
    # the 1h trial's daily returns sit on the same UTC day grid as the 1d trial's
    common = out.daily.index.intersection(hourly_out.daily.index)
    assert len(common) > 0.9 * min(len(out.daily), len(hourly_out.daily))


def test_space_timeframe_key_is_checked(
    setup: tuple[CandleStore, AtraConfig, Universe], tmp_path: Path
) -> None:
    _, cfg, _ = setup
    path = tmp_path / "space.toml"
    path.write_text('[search.params.timeframe]\ntype = "categorical"\nchoices = ["1h", "1d"]\n')
    space = load_search_space(path, cfg)
    assert space.timeframes() == (Timeframe.H1, Timeframe.D1)
    assert timeframe_of({"timeframe": "1d", "strategy.sl_atr": 1.0}) is Timeframe.D1
    assert apply_params(cfg, {"timeframe": "1d"}) == cfg  # not a config setting
    path.write_text('[search.params.timeframe]\ntype = "categorical"\nchoices = ["1h", "2d"]\n')
    with pytest.raises(ConfigError, match=r"search.params.timeframe: unknown timeframe '2d'"):
        load_search_space(path, cfg)
    path.write_text('[search.params.timeframe]\ntype = "int"\nlow = 1\nhigh = 4\n')
    with pytest.raises(ConfigError, match=r"search.params.timeframe: expected type"):
        load_search_space(path, cfg)
