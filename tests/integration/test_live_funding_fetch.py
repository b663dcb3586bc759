"""Funding rates are fetched only when a new settled rate can exist.

A replay against the fake exchange, one symbol funded every 8 h and one every 4 h (the
interval read from the rows fetched, never assumed): a model reading funding features sends
one ``fundingRate`` request per symbol for the first fill and then one per funding interval,
not one per bar, and every decision still sees every settled rate before its bar's close and
none after. With positions open (funding charged, as the backtest does) the requests are one
per interval too, and the charges are made.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.core.decision import Decision
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.features.registry import FeatureContext
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.sim.exchange import FakeExchange
from helpers_live import STEP, T0, synthetic
from helpers_logging import quiet_structlog
from helpers_parity import read_journal

TF = Timeframe.H1
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
N_BARS = 96
HOURS = {"AAAUSDT": 8, "BBBUSDT": 4}  # each symbol's funding interval
CANDLES = {s: synthetic(k + 11, n=N_BARS + 120) for k, s in enumerate(HOURS)}


def _funding(hours: int, seed: int) -> pd.DataFrame:
    step = hours * STEP
    times = np.arange(T0 - 40 * 24 * STEP, T0 + (N_BARS + 24) * STEP, step, dtype=np.int64)
    rates = np.random.default_rng(seed).normal(1e-4, 2e-4, times.size)
    return pd.DataFrame({"funding_time": times, "funding_rate": rates})


FUNDING = {s: _funding(h, k) for k, (s, h) in enumerate(HOURS.items())}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog(logging.ERROR):
        yield


class FundingDecider:
    """The strategy's decisions; declares funding features and records, per decision, the
    funding times it was given."""

    def __init__(self) -> None:
        self.inner = StrategyDecider(SPEC, TF)
        self.spec = SPEC
        self.inputs = ModelInputs(needs_funding=True, warmup_bars=10)
        self.seen: list[tuple[str, int, tuple[int, ...]]] = []

    def __call__(
        self,
        symbol: str,
        candles: pd.DataFrame,
        equity: float,
        context: FeatureContext | None = None,
    ) -> Decision:
        assert context is not None
        assert context.funding is not None
        times = tuple(int(t) for t in context.funding["funding_time"])
        self.seen.append((symbol, int(candles["open_time"].iloc[-1]), times))
        return self.inner(symbol, candles, equity, context)


def _replay(path: Path, decider: object, *, funding: bool) -> Counter[str]:
    """Replay ``N_BARS`` bars; the ``fundingRate`` requests per symbol."""
    fakes: list[FakeExchange] = []

    def start(_loop: LiveLoop, fake: FakeExchange) -> None:
        fakes.append(fake)

    settings = LoopSettings(
        tuple(HOURS),
        TF,
        window_bars=40,
        bar_close_delay_s=0.0,
        start_ms=T0,
        stop_ms=T0 + N_BARS * STEP,
        funding=funding,
    )
    report = asyncio.run(
        run_replay(
            settings,
            CANDLES,
            path,
            decider=decider,  # type: ignore[arg-type]
            exit_spec=ExitSpec(slippage_bps=2.0),
            guards=RiskGuards(GuardLimits(max_open_positions=2)),
            setup=ReplaySetup(weight_limit=None),
            on_start=start,
            funding=FUNDING,
        )
    )
    assert report.cycles == N_BARS
    (fake,) = fakes
    assert all(r.status == 200 for r in fake.requests)
    return Counter(
        str(r.params["symbol"]) for r in fake.requests if r.path == "/fapi/v1/fundingRate"
    )


def test_funding_features_fetched_once_per_interval(tmp_path: Path) -> None:
    decider = FundingDecider()
    requests = _replay(tmp_path / "features.sqlite", decider, funding=False)
    for sym, hours in HOURS.items():
        # the first fill, then one at the first bar whose close is after each new rate
        assert requests[sym] == 1 + len(range(hours, N_BARS, hours)), sym
        assert requests[sym] < N_BARS // 3
    # every settled rate before the bar's close reaches its decision, none after
    assert len(decider.seen) == len(HOURS) * N_BARS
    for sym, t, times in decider.seen:
        ft = FUNDING[sym]["funding_time"].to_numpy()
        assert times[-1] == int(ft[ft < t + STEP][-1]), (sym, t)
        assert times == tuple(int(x) for x in ft[(ft >= times[0]) & (ft < t + STEP)])


def test_position_funding_fetched_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "positions.sqlite"
    requests = _replay(path, StrategyDecider(SPEC, TF), funding=True)
    journal = read_journal(path)
    funded = [f for f in journal.fills if f.leg.startswith("funding:")]
    assert funded  # funding was charged
    for fill in funded:  # at settled rates' times only
        assert int(fill.leg.split(":")[1]) in set(FUNDING[fill.symbol]["funding_time"].tolist())
    for sym, hours in HOURS.items():
        held = [p for p in journal.positions if p.symbol == sym and p.entry_time_ms is not None]
        assert held, sym
        # at most the first fetch and one per interval, while positions were open for many
        # more bars than that
        assert 1 <= requests[sym] <= 2 + N_BARS // hours, sym
        bars_open = len(
            {
                t
                for p in held
                for t in range(int(p.entry_time_ms or 0), T0 + N_BARS * STEP, STEP)
                if p.exit_time_ms is None or t <= p.exit_time_ms
            }
        )
        assert bars_open > 2 * requests[sym], sym


# ---- a shortened interval: the venue's statement makes the first new row on time ----------

SHORT = "CCCUSDT"
CHANGE = T0 + 40 * STEP  # 8 h settlements until here, 4 h from here on


def _shortened(seed: int) -> pd.DataFrame:
    before = np.arange(T0 - 40 * 24 * STEP, CHANGE + 1, 8 * STEP, dtype=np.int64)
    after = np.arange(CHANGE + 4 * STEP, T0 + (N_BARS + 24) * STEP, 4 * STEP, dtype=np.int64)
    times = np.concatenate([before, after])
    rates = np.random.default_rng(seed).normal(1e-4, 2e-4, times.size)
    return pd.DataFrame({"funding_time": times, "funding_rate": rates})


def test_a_shortened_interval_is_fetched_on_time_from_its_first_row(tmp_path: Path) -> None:
    """Binance moves a symbol from 8 h to 4 h funding: the rows alone would expect the first
    4 h row 8 h after the last one (4 bars late); ``fundingInfo`` states 4 h, so every
    decision still sees every settled rate before its bar's close."""
    rates = {SHORT: _shortened(7)}
    fakes: list[FakeExchange] = []
    decider = FundingDecider()
    settings = LoopSettings(
        (SHORT,), TF, window_bars=40, bar_close_delay_s=0.0, start_ms=T0,
        stop_ms=T0 + N_BARS * STEP,
    )  # fmt: skip
    report = asyncio.run(
        run_replay(
            settings,
            {SHORT: CANDLES["AAAUSDT"]},
            tmp_path / "short.sqlite",
            decider=decider,  # type: ignore[arg-type]
            exit_spec=ExitSpec(),
            guards=RiskGuards(GuardLimits(max_open_positions=2)),
            setup=ReplaySetup(weight_limit=None),
            on_start=lambda _loop, fake: fakes.append(fake),
            funding=rates,
        )
    )
    assert report.cycles == N_BARS
    ft = rates[SHORT]["funding_time"].to_numpy()
    for sym, t, times in decider.seen:
        assert times[-1] == int(ft[ft < t + STEP][-1]), (sym, t)  # none late, none early
    (fake,) = fakes
    paths = Counter(r.path for r in fake.requests)
    assert paths["/fapi/v1/fundingInfo"] >= 1  # asked when the rows would have skipped
    assert paths["/fapi/v1/fundingInfo"] <= N_BARS  # at most once per bar close
    new_rows = int(((ft > T0) & (ft < T0 + N_BARS * STEP)).sum())
    # the first fill, one fetch per settlement, and one more at the change (at its instant
    # the venue already states the new interval, the row is not settled yet)
    assert paths["/fapi/v1/fundingRate"] <= 2 + new_rows
