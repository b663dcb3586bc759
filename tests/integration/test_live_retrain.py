"""Retraining while live, replayed: ``atra live --replay`` with ``live.retrain_days = 14`` over
seven weeks equals ``atra walkforward`` with the same schedule, decision for decision.

Two perpetuals (ETHUSDT, LTCUSDT; BTCUSDT as cross-asset context) from the shared data go
into a store with their funding; the model reads every candle and BTC feature (40 trees).
The run starts with the model the live loop itself would have retrained on
2024-01-01 (:class:`WindowTrainer`, trained from 2023-07-01); the replay of 2024-01-01 ..
2024-02-19 then retrains on 2024-01-15, 2024-01-29 and 2024-02-12 in a worker process, on the
history before the run plus the bars its feed fetched. The walk-forward reads the same store
through :func:`load_universe` with ``first_test_ms = 2024-01-01`` and ``retrain_days = 14``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import SignalRecord
from atra.adapters.store import CandleStore, DatasetKey
from atra.cli import main
from atra.config import load_config
from atra.core.features.registry import HISTORY_BARS, feature_registry
from atra.core.retraining import MarketHistory, RetrainRequest, RetrainSchedule
from atra.core.types import Market, Timeframe
from atra.core.validation import DAY_MS
from atra.live.retrain import RetrainRecord, retrain_log
from atra.obs import reset_logging
from atra.research.pipeline import (
    WalkForwardResult,
    build_dataset,
    load_universe,
    run_walkforward,
    settings_from_config,
)
from atra.research.retrain import WindowTrainer

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("ETHUSDT", "LTCUSDT")
TF = Timeframe.H1


def _ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


DATA_START, FROM, TO = _ms("2023-07-01"), _ms("2024-01-01"), _ms("2024-02-19")
SWAPS = [_ms("2024-01-15"), _ms("2024-01-29"), _ms("2024-02-12")]  # every 14 days
CONFIG = """
[data]
data_dir = "{store}"
[live]
symbols = ["ETHUSDT", "LTCUSDT"]
market = "perp"
timeframe = "1h"
bar_close_delay_s = 0.0
retrain_days = 14
retrain_min_events = 100
[meta]
threshold = 0.5
[meta.lgbm]
n_estimators = 40
[obs]
log_format = "json"
log_level = "ERROR"
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    reset_logging()
    logging.getLogger().setLevel(level)


@pytest.fixture(scope="module")
def store(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CandleStore:
    """Perp candles and funding of the two symbols and BTCUSDT."""
    st = CandleStore(tmp_path_factory.mktemp("store"))
    lo = DATA_START - (HISTORY_BARS + 48) * TF.ms
    hi = TO + 10 * DAY_MS
    for sym in (*SYMBOLS, "BTCUSDT"):
        frame = pd.read_parquet(shared_data_dir / f"{sym}_perp_1h.parquet")
        frame = frame[(frame["open_time"] >= lo) & (frame["open_time"] < hi)]
        st.write_candles(DatasetKey("binance", Market.PERP, sym, TF), frame)
        funding = pd.read_parquet(shared_data_dir / f"{sym}_perp_funding.parquet")
        times = funding["funding_time"]
        st.write_funding("binance", sym, funding[(times >= lo - 40 * DAY_MS) & (times < hi)])
    return st


def _features() -> tuple[str, ...]:
    """Every candle and BTC cross-asset feature (the replay fetches BTCUSDT beside the two)."""
    served = {"candles", "btc"}
    return tuple(n for n, spec in feature_registry().items() if set(spec.inputs) <= served)


def _history(st: CandleStore, end_ms: int) -> MarketHistory:
    lo = DATA_START - HISTORY_BARS * TF.ms

    def candles(sym: str, market: Market) -> pd.DataFrame:
        return st.read_candles(DatasetKey("binance", market, sym, TF), lo, end_ms)

    return MarketHistory(
        {s: candles(s, Market.PERP) for s in SYMBOLS},
        btc=candles("BTCUSDT", Market.PERP),
        funding={s: st.read_funding("binance", s, lo - 31 * DAY_MS, end_ms) for s in SYMBOLS},
    )


@pytest.fixture(scope="module")
def workdir(store: CandleStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config, and the starting model: the live loop's own retrain at 2024-01-01."""
    root = tmp_path_factory.mktemp("retrain")
    (root / "atra.toml").write_text(CONFIG.format(store=store.root))
    cfg = load_config(root / "atra.toml")
    settings = settings_from_config(cfg, Market.PERP)
    trainer = WindowTrainer(
        exchange="binance",
        market=Market.PERP,
        timeframe=TF,
        symbols=SYMBOLS,
        signal_spec=settings.signal,
        exit_spec=settings.exit,
        bar_features=_features(),
        params=settings.meta,
        walkforward=replace(settings.walkforward, retrain_days=14, min_train_events=100),
        data_start_ms=DATA_START,
        out=root / "models",
    )
    outcome = trainer(
        RetrainRequest(
            FROM, _history(store, FROM), "setup", "none", RetrainSchedule.every_days(14, FROM)
        )
    )
    (root / "start_model").write_text(outcome.model_id)
    return root


@pytest.fixture(scope="module")
def walkforward(store: CandleStore, workdir: Path) -> WalkForwardResult:
    """``atra walkforward --first-test 2024-01-01 --retrain-days 14`` on the same store."""
    cfg = load_config(workdir / "atra.toml")
    settings = settings_from_config(cfg, Market.PERP)
    uni = load_universe(store, "binance", SYMBOLS, Market.PERP, TF, DATA_START, TO + 3 * DAY_MS)
    dataset = build_dataset(uni, settings.signal, settings.exit, _features())
    wf = replace(settings.walkforward, retrain_days=14, min_train_days=0, first_test_ms=FROM,
                 min_train_events=100)  # fmt: skip
    return run_walkforward(dataset, wf, settings.meta)


def _journal(path: Path) -> tuple[list[SignalRecord], list[RetrainRecord]]:
    async def read() -> tuple[list[SignalRecord], list[RetrainRecord]]:
        async with Journal.open(path) as journal:
            return await journal.signals(), await retrain_log(journal)

    return asyncio.run(read())


def test_replay_with_retraining_equals_the_walkforward(
    workdir: Path, walkforward: WalkForwardResult, capsys: pytest.CaptureFixture[str]
) -> None:
    folds = [f.test_start_ms for f in walkforward.folds]
    assert folds == [FROM, *SWAPS]  # the walk-forward's schedule is the one the replay runs
    start_model = (workdir / "start_model").read_text()
    journal = workdir / "j.sqlite"
    args = ["live", "--config", str(workdir / "atra.toml"), "--replay", "--from", "2024-01-01",
            "--to", "2024-02-19", "--journal", str(journal), "--model", start_model,
            "--models-dir", str(workdir / "models"), "--no-metrics"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1176 cycles journalled" in out
    signals, retrains = _journal(journal)

    # the model ids change exactly at the scheduled bars, to the models registered then
    assert [r.status for r in retrains] == ["registered"] * 3
    assert [r.window_ms for r in retrains] == SWAPS
    assert [r.swapped_at_ms for r in retrains] == SWAPS
    ids = [start_model, *(r.model_id for r in retrains)]
    assert len(set(ids)) == 4
    for rec in retrains:
        assert rec.model_dir is not None
        assert (Path(rec.model_dir) / "meta.json").is_file()
        assert f"model {rec.model_id} (" in out
    bounds = [FROM, *SWAPS, TO]
    for s in signals:
        k = int(np.searchsorted(bounds, s.bar_time_ms, side="right")) - 1
        assert s.model_id == ids[k], (s.symbol, s.bar_time_ms)

    # every decision equals the walk-forward's out-of-sample prediction for its bar
    preds = walkforward.predictions
    preds = preds[(preds["time_ms"] >= FROM) & (preds["time_ms"] < TO)]
    expected = {(str(r.symbol), int(r.time_ms)): r for r in preds.itertuples(index=False)}
    got = {(s.symbol, s.bar_time_ms): s for s in signals}
    assert set(got) == set(expected)
    assert len(got) > 30
    assert {int(r.fold) for r in expected.values()} == {0, 1, 2, 3}
    for key, s in got.items():
        want = expected[key]
        assert s.p_take is not None
        assert s.p_take == pytest.approx(float(want.p_take), abs=1e-12), key
        assert s.threshold == pytest.approx(float(want.threshold), abs=1e-12), key
        meta_take = bool(want.take)
        assert (s.p_take >= s.threshold) == meta_take, key
        if s.blocked_by in (None, "meta_model"):  # not blocked by sizing or a risk guard
            assert s.take == meta_take, key
        else:
            assert not s.take
    assert any(s.take for s in got.values())
    assert any(s.blocked_by == "meta_model" for s in got.values())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--retrain-days", "-1"], "--retrain-days must be >= 0 (0: off), got -1"),
        ([], "live.retrain_days = 14 needs a model to start from (--model or live.model)"),
        (["--model", "START", "--compare"], "--compare backtests one model"),
    ],
)
def test_retraining_one_line_errors(
    workdir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    start_model = (workdir / "start_model").read_text()
    args = ["live", "--config", str(workdir / "atra.toml"), "--replay", "--from", "2024-01-01",
            "--to", "2024-01-02", "--journal", str(workdir / "e.sqlite"), "--models-dir",
            str(workdir / "models"), "--no-metrics",
            *(start_model if a == "START" else a for a in extra)]  # fmt: skip
    assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
