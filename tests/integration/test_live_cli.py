"""`atra live` in-process: replay from files and from the store, paper mode against a fake
exchange process, and the one-line errors."""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atra.cli.live as cli_live
from atra.adapters.journal.database import Journal
from atra.adapters.store import CandleStore, DatasetKey
from atra.cli import main
from atra.config import load_config
from atra.core.signals.spec import Rule
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.obs import reset_logging
from atra.sim.exchange import FakeExchange

STEP = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01
SYMBOLS = ("AAAUSDT", "BBBUSDT")
CONFIG = """
[live]
market = "perp"
timeframe = "1h"
bar_close_delay_s = 0.0
[strategy]
params = { fast = 5.0, slow = 13.0 }
horizon_bars = 12
[obs]
log_format = "json"
log_level = "ERROR"
"""


def _frame(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": T0 - 100 * STEP + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": np.maximum(open_, close) * 1.003,
            "low": np.minimum(open_, close) * 0.997,
            "close": close,
            "volume": np.full(n, 5.0),
        }
    )


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command configures logging for the process: undo it for the tests that follow."""
    level = logging.getLogger().level
    yield
    reset_logging()
    logging.getLogger().setLevel(level)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.upper().startswith("ATRA__"):
            monkeypatch.delenv(name)
    data = tmp_path / "flat"
    data.mkdir()
    for k, sym in enumerate(SYMBOLS):
        _frame(k).to_parquet(data / f"{sym}_perp_1h.parquet")
    (tmp_path / "atra.toml").write_text(CONFIG)
    return tmp_path


def _journal_counts(path: Path) -> tuple[int, int]:
    async def read() -> tuple[int, int]:
        async with Journal.open(path) as j:
            return len(await j.cycles()), len(await j.signals())

    return asyncio.run(read())


def test_replay_from_flat_files(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["live", "--config", "atra.toml", "--replay", "--from", "2024-01-01", "--to",
            "2024-01-05", "--data", "flat", "--symbols", "aaausdt,BBBUSDT", "--journal",
            "j.sqlite", "--window-bars", "40", "--no-metrics"]  # fmt: skip
    assert main(args) == 0
    assert "96 cycles journalled in j.sqlite" in capsys.readouterr().out
    cycles, signals = _journal_counts(workdir / "j.sqlite")
    assert cycles == 96
    assert signals > 3
    assert main(args) == 0  # everything done already: a restart has nothing to do
    assert "0 cycles journalled" in capsys.readouterr().out


def test_replay_from_the_store_with_metrics(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = CandleStore(workdir / "data")
    for k, sym in enumerate(SYMBOLS):
        store.write_candles(DatasetKey("binance", Market.PERP, sym, Timeframe.H1), _frame(k))
    (workdir / "atra.toml").write_text(
        CONFIG.replace("[live]", '[live]\nsymbols = ["AAAUSDT", "BBBUSDT"]\nmetrics_port = 0')
    )
    args = ["live", "--config", "atra.toml", "--replay", "--from", "2024-01-02T00:00",
            "--to", "2024-01-03", "--speed", "1e9", "--journal", "s.sqlite",
            "--window-bars", "40"]  # fmt: skip
    assert main(args) == 0
    assert "24 cycles journalled" in capsys.readouterr().out


def _funding_frame(n: int = 60) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "funding_time": T0 - 96 * STEP + np.arange(n, dtype=np.int64) * 8 * STEP,
            "funding_rate": np.full(n, 0.0005),
        }
    )


def _funding_fills(path: Path) -> list[float]:
    async def read() -> list[float]:
        async with Journal.open(path) as j:
            return [f.pnl for f in await j.fills() if f.reason == "FUNDING"]

    return asyncio.run(read())


def test_replay_charges_funding_from_files(workdir: Path) -> None:
    for sym in SYMBOLS:
        _funding_frame().to_parquet(workdir / "flat" / f"{sym}_perp_funding.parquet")
    args = ["live", "--config", "atra.toml", "--replay", "--from", "2024-01-01", "--to",
            "2024-01-05", "--data", "flat", "--journal", "f.sqlite", "--window-bars", "40",
            "--no-metrics", "--symbols", "AAAUSDT,BBBUSDT"]  # fmt: skip
    assert main(args) == 0
    paid = _funding_fills(workdir / "f.sqlite")
    assert paid  # positions were open at funding times and were charged
    assert all(p != 0.0 for p in paid)


def test_replay_charges_funding_from_the_store(workdir: Path) -> None:
    store = CandleStore(workdir / "data")
    for k, sym in enumerate(SYMBOLS):
        store.write_candles(DatasetKey("binance", Market.PERP, sym, Timeframe.H1), _frame(k))
        store.write_funding("binance", sym, _funding_frame())
    args = ["live", "--config", "atra.toml", "--replay", "--from", "2024-01-01", "--to",
            "2024-01-05", "--journal", "g.sqlite", "--window-bars", "40", "--no-metrics",
            "--symbols", "AAAUSDT,BBBUSDT"]  # fmt: skip
    assert main(args) == 0
    assert _funding_fills(workdir / "g.sqlite")


def test_replay_with_funding_for_some_symbols_only_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _funding_frame().to_parquet(workdir / "flat" / "AAAUSDT_perp_funding.parquet")
    args = ["live", "--config", "atra.toml", "--replay", "--from", "2024-01-01", "--to",
            "2024-01-05", "--data", "flat", "--journal", "h.sqlite", "--window-bars", "40",
            "--no-metrics", "--symbols", "AAAUSDT,BBBUSDT"]  # fmt: skip
    assert main(args) == DataError.exit_code
    err = capsys.readouterr().err
    assert "no funding history for BBBUSDT" in err
    assert not (workdir / "h.sqlite").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--replay", "--from", "2024-01-01"], "--replay needs --from and --to"),
        (["--replay", "--from", "2024-01-05", "--to", "2024-01-01"], "must be after --from"),
        (["--replay", "--from", "yesterday", "--to", "2024-01-01"], "--from 'yesterday'"),
        (["--replay", "--from", "2024-01-01", "--to", "2024-01-02", "--speed", "fast"], "--speed"),
        (["--replay", "--from", "2024-01-01", "--to", "2024-01-02", "--speed", "-1"], "--speed"),
        (
            ["--replay", "--from", "2024-01-01", "--to", "2024-01-02", "--data", "nowhere"],
            "does not exist",
        ),
        (
            [
                "--replay",
                "--from",
                "2030-01-01",
                "--to",
                "2030-01-02",
                "--data",
                "flat",
                "--symbols",
                "AAAUSDT",
            ],
            "no candles in the requested range",
        ),
        (["--live"], "real orders need live.paper = false"),
    ],
)
def test_one_line_errors(
    workdir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = ["live", "--config", "atra.toml", "--journal", "e.sqlite", "--no-metrics", *extra]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code in (3, 4), err
    assert message in err
    assert len(err.splitlines()) == 1


def test_live_needs_keys_and_long_only_spot(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spot orders are allowed (long only, OCO exits): a config asking for spot shorts is
    refused before anything is sent."""
    assert main(["live", "--config", "atra.toml", "--live", "--no-metrics"]) == 3
    assert "real orders need live.paper = false" in capsys.readouterr().err
    monkeypatch.setenv("ATRA__LIVE__PAPER", "false")
    assert main(["live", "--config", "atra.toml", "--live", "--no-metrics"]) == 3
    assert "needs ATRA__EXCHANGE__API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("ATRA__EXCHANGE__API_KEY", "k" * 16)
    monkeypatch.setenv("ATRA__EXCHANGE__API_SECRET", "s" * 16)
    monkeypatch.setenv("ATRA__LIVE__MARKET", "spot")
    monkeypatch.setenv("ATRA__STRATEGY__SPOT_SHORTS", "true")
    monkeypatch.setenv("ATRA__COSTS__SPOT_BORROW_BPS_PER_HOUR", "0.1")
    assert main(["live", "--config", "atra.toml", "--live", "--no-metrics"]) == 3
    assert "spot shorts on margin are modelled in backtests only" in capsys.readouterr().err


def _orders_and_positions(path: Path) -> tuple[list[str], list[str]]:
    async def read() -> tuple[list[str], list[str]]:
        async with Journal.open(path) as j:
            orders = [o.kind for o in await j.orders()]
            return orders, [p.status for p in await j.positions()]

    return asyncio.run(read())


def test_replay_through_the_order_path(workdir: Path) -> None:
    args = ["live", "--config", "atra.toml", "--replay", "--live", "--from", "2024-01-01",
            "--to", "2024-01-05", "--data", "flat", "--symbols", "AAAUSDT,BBBUSDT",
            "--journal", "o.sqlite", "--window-bars", "40", "--no-metrics"]  # fmt: skip
    assert main(args) == 0
    kinds, statuses = _orders_and_positions(workdir / "o.sqlite")
    assert kinds.count("entry") >= 3
    assert "sl" in kinds  # exchange-side protective orders were placed
    assert "tp1" in kinds
    assert "closed" in statuses


def test_replay_through_the_spot_order_path(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``live.market = "spot"``: long-only entries protected by one OCO each (the tp1 and sl
    legs), sold at the end; nothing else is placed."""
    for k, sym in enumerate(SYMBOLS):
        _frame(k).to_parquet(workdir / "flat" / f"{sym}_spot_1h.parquet")
    monkeypatch.setenv("ATRA__LIVE__MARKET", "spot")
    args = ["live", "--config", "atra.toml", "--replay", "--live", "--from", "2024-01-01",
            "--to", "2024-01-05", "--data", "flat", "--symbols", "AAAUSDT,BBBUSDT",
            "--journal", "s.sqlite", "--window-bars", "40", "--no-metrics"]  # fmt: skip
    assert main(args) == 0
    kinds, statuses = _orders_and_positions(workdir / "s.sqlite")
    assert kinds.count("entry") >= 2
    assert kinds.count("sl") == kinds.count("tp1") == kinds.count("entry")  # one OCO each
    assert set(kinds) <= {"entry", "sl", "tp1", "time"}
    assert "closed" in statuses


class ThreadedExchange:
    """A fake exchange serving from its own event loop in a thread (the command under test
    runs its own loop in this one)."""

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeExchange:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_live_sends_signed_orders_to_the_exchange(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``atra live --live`` on the system clock: the last closed bar is a fresh EMA cross, so
    the loop enters at market and places its stop and take-profit on the exchange."""
    now_bar = int(time.time() * 1000) // STEP * STEP  # the bar forming now
    n = 200
    # a slow slide (fast EMA under the slow one), then a jump on the last closed bar
    close = 100.0 * np.exp(-0.001 * np.arange(n, dtype=np.float64))
    close[-2:] = close[-3] * 1.05
    open_ = np.concatenate(([100.0], close[:-1]))
    frame = pd.DataFrame(
        {
            "open_time": now_bar - (n - 1) * STEP + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": np.full(n, 5.0),
        }
    )
    key, secret = "live-test-key-1234", "live-test-secret-5678"
    fake = FakeExchange(
        {(Market.PERP, "AAAUSDT", Timeframe.H1): frame}, api_key=key, api_secret=secret
    )
    with ThreadedExchange(fake) as fx:
        monkeypatch.setenv("ATRA__EXCHANGE__PERP_BASE_URL", fx.url)
        monkeypatch.setenv("ATRA__EXCHANGE__API_KEY", key)
        monkeypatch.setenv("ATRA__EXCHANGE__API_SECRET", secret)
        monkeypatch.setenv("ATRA__LIVE__PAPER", "false")
        args = ["live", "--config", "atra.toml", "--live", "--symbols", "AAAUSDT",
                "--journal", "l.sqlite", "--max-cycles", "1", "--no-metrics",
                "--window-bars", "150"]  # fmt: skip
        assert main(args) == 0
    assert "1 cycles journalled in l.sqlite" in capsys.readouterr().out
    kinds, statuses = _orders_and_positions(workdir / "l.sqlite")
    assert sorted(kinds) == ["entry", "sl", "tp1"]
    assert statuses == ["open"]
    engine = fake.engine
    (fill,) = engine.fills  # the entry, at the forming bar's open
    assert fill.price == float(frame["open"].iloc[-1])  # this fake has no slippage
    assert {o.type for o in engine.open_orders("AAAUSDT")} == {"LIMIT"}
    # the stop is a conditional order: on the Algo Order API (/fapi/v1/order refuses it)
    assert {a.order_type for a in engine.open_algo_orders("AAAUSDT")} == {"STOP_MARKET"}
    posted = [r for r in fake.requests if r.path == "/fapi/v1/order" and r.status == 200]
    assert posted
    assert all("signature" not in r.params for r in fake.requests)


def test_strategy_and_costs_from_config(workdir: Path) -> None:
    cfg = load_config(workdir / "atra.toml")
    spec = cli_live.signal_spec(cfg)
    assert (spec.rule, spec.ema_fast, spec.ema_slow, spec.horizon_bars) == (
        Rule.EMA_CROSS, 5, 13, 12
    )  # fmt: skip
    ex = cli_live.exit_spec(cfg)
    assert ex.fee_entry == pytest.approx(cfg.costs.taker_fee_bps / 1e4)
    assert ex.slippage_bps == cfg.costs.slippage_bps
    bad = load_config(env={"ATRA__STRATEGY__RULE": "martingale"})
    with pytest.raises(
        ConfigError, match=r"strategy\.rule: 'martingale' is not a known rule \(known: ema_cross, "
    ):
        cli_live.signal_spec(bad)
    assert math.isinf(cli_live.parse_speed("MAX"))
    assert cli_live.parse_speed("60") == 60.0
    assert cli_live.parse_day("2024-01-01", "--from") == T0


def test_spot_is_long_only_live_and_spot_shorts_are_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_live.signal_spec(load_config(workdir / "atra.toml")).allow_short is True  # perp
    monkeypatch.setenv("ATRA__LIVE__MARKET", "spot")
    spot = cli_live.signal_spec(load_config(workdir / "atra.toml"))
    assert (spot.allow_long, spot.allow_short) == (True, False)
    monkeypatch.setenv("ATRA__STRATEGY__SPOT_SHORTS", "true")
    monkeypatch.setenv("ATRA__COSTS__SPOT_BORROW_BPS_PER_HOUR", "0.1")
    monkeypatch.setenv("ATRA__COSTS__SPOT_BORROW_BPS_PER_HOUR", "0.1")
    replay = ["--replay", "--from", "2024-01-01", "--to", "2024-01-02", "--data", "flat"]
    for extra in ([], replay):
        args = ["live", "--config", "atra.toml", "--journal", "s.sqlite", "--no-metrics", *extra]
        assert main(args) == 3
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "spot shorts on margin are modelled in backtests only" in err
        assert "the live loop trades spot long-only" in err
        assert not (workdir / "s.sqlite").exists()  # refused before the journal is opened
    monkeypatch.setenv("ATRA__LIVE__MARKET", "perp")  # perpetuals short without margin loans
    assert cli_live.signal_spec(load_config(workdir / "atra.toml")).allow_short is True


def test_paper_mode_against_an_exchange_process(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "atra.sim.exchange", "--data", "flat"],
        stdout=subprocess.PIPE,
    ) as server:
        try:
            assert server.stdout is not None
            url = server.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
            monkeypatch.setenv("ATRA__EXCHANGE__PERP_BASE_URL", url)
            args = ["live", "--config", "atra.toml", "--symbols", "AAAUSDT,BBBUSDT",
                    "--journal", "p.sqlite", "--max-cycles", "1", "--no-metrics"]  # fmt: skip
            assert main(args) == 0
        finally:
            server.terminate()
            server.wait(timeout=10)
    assert "1 cycles journalled in p.sqlite" in capsys.readouterr().out
    cycles, signals = _journal_counts(workdir / "p.sqlite")
    assert cycles == 1  # today's bar does not exist on the fake: nothing decided, still logged
    assert signals == 0
