"""The data a live run has seen (:class:`atra.live.seen.SeenHistory`): the history it started
with, grown by the feed's windows after every bar, each row once, holes named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atra.adapters.exchange.client import BinanceClient
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.retraining import MarketHistory
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.live.deciders import StrategyDecider
from atra.live.feed import CandleFeed
from atra.live.ledger import FundingBook
from atra.live.paper import PaperBroker
from atra.live.seen import SeenHistory
from atra.live.settings import LoopSettings

TF = Timeframe.H1
H = TF.ms
T0 = 1_704_067_200_000
SYM = "AAAUSDT"


def _candles(seed: int, lo: int, hi: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(size=200))
    rows = np.arange(lo, hi)
    return pd.DataFrame(
        {
            "open_time": T0 + rows.astype(np.int64) * H,
            "open": close[rows] - 0.1,
            "high": close[rows] + 1.0,
            "low": close[rows] - 1.0,
            "close": close[rows],
            "volume": np.full(rows.size, 3.0),
        }
    )


def _funding(lo: int, hi: int) -> pd.DataFrame:
    rows = np.arange(lo, hi)
    rows = rows[rows % 8 == 0]
    return pd.DataFrame(
        {"funding_time": T0 + rows.astype(np.int64) * H, "funding_rate": rows * 1e-6}
    )


def _feed(window_bars: int = 40) -> CandleFeed:
    settings = LoopSettings((SYM,), TF, window_bars=window_bars)
    return CandleFeed(
        settings,
        client=BinanceClient(Market.PERP, base_url="http://127.0.0.1:9"),
        broker=PaperBroker(ExitSpec(), strategy="ema_cross", run_id="t"),
        funding=FundingBook(),
        decider=StrategyDecider(SignalSpec(), TF),
        inputs=ModelInputs(needs_funding=True, needs_counterpart=True, needs_btc=True),
        side_client=BinanceClient(Market.SPOT, base_url="http://127.0.0.1:9"),
    )


def _fill(feed: CandleFeed, lo: int, hi: int) -> None:
    feed.append(SYM, _candles(1, lo, hi))
    feed.counterparts[SYM].append(_candles(2, lo, hi))
    assert feed.btc is not None
    feed.btc.append(_candles(3, lo, hi))
    feed.context_funding[SYM] = _funding(lo - 24, hi)


def _start(hi: int) -> MarketHistory:
    return MarketHistory(
        {SYM: _candles(1, 0, hi)},
        {SYM: _candles(2, 0, hi)},
        _candles(3, 0, hi),
        {SYM: _funding(0, hi)},
    )


def test_the_start_history_grows_by_the_feed_each_row_once() -> None:
    seen = SeenHistory(_start(60), (SYM,), separate_btc=True)
    feed = _feed()
    _fill(feed, 40, 80)  # overlaps the start history
    seen.absorb(feed)
    seen.absorb(feed)  # nothing new: nothing added
    feed.append(SYM, _candles(1, 80, 120))
    feed.counterparts[SYM].append(_candles(2, 80, 120))
    assert feed.btc is not None
    feed.btc.append(_candles(3, 80, 120))
    feed.context_funding[SYM] = _funding(56, 120)
    feed.trim()  # the feed keeps 40 bars; what it dropped was absorbed before
    seen.absorb(feed)
    hist = seen.history()
    assert seen.hole is None
    pd.testing.assert_frame_equal(hist.candles[SYM], _candles(1, 0, 120))
    pd.testing.assert_frame_equal(hist.counterparts[SYM], _candles(2, 0, 120))
    assert hist.btc is not None
    pd.testing.assert_frame_equal(hist.btc, _candles(3, 0, 120))
    pd.testing.assert_frame_equal(hist.funding[SYM], _funding(0, 120))


def test_btc_traded_itself_is_not_kept_twice() -> None:
    seen = SeenHistory(_start(60), (SYM,), separate_btc=False)
    feed = _feed()
    _fill(feed, 40, 80)
    seen.absorb(feed)
    assert seen.history().btc is None


@pytest.mark.parametrize("what", ["candles", "funding"])
def test_a_start_history_older_than_the_feed_is_a_hole(what: str) -> None:
    start = _start(60)
    if what == "candles":
        start = MarketHistory(
            {SYM: _candles(1, 0, 20)}, start.counterparts, start.btc, start.funding
        )
        name = f"{SYM} candles"
    else:  # the feed's funding starts 32 h after the last one held: over a day
        start = MarketHistory(start.candles, start.counterparts, start.btc, {SYM: _funding(0, 8)})
        name = f"{SYM} funding"
    seen = SeenHistory(start, (SYM,), separate_btc=True)
    feed = _feed()
    _fill(feed, 50, 100)
    seen.absorb(feed)
    assert seen.hole is not None
    assert seen.hole.startswith(f"{name}: nothing between ")
    assert "update the store" in seen.hole
