"""The replay summary of hand-written journal records, every figure checked by hand."""

from __future__ import annotations

import pytest

from atra.adapters.journal.records import (
    EquityRecord,
    FillRecord,
    OrderRecord,
    PositionRecord,
    SignalRecord,
)
from atra.live.replay_run import ReplayRun
from atra.live.summary import summarize

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01
RUN = ReplayRun(
    run_id="paper-2024-01-01..2024-01-02-0123abcd",
    start_ms=T0,
    stop_ms=T0 + 24 * H,
    symbols=("AAAUSDT", "BBBUSDT"),
    market="perp",
    timeframe="1h",
    config_hash="0" * 64,
    model_id="primary",
    initial_equity=1_000.0,
    execution="orders",
)


def _signal(sym: str, t: int, take: bool, blocked_by: str | None = None) -> SignalRecord:
    return SignalRecord("ema_cross", sym, t, 1, 100.0, 98.0, 104.0, 106.0, 12, None, None, take,
                        (), "primary", 1.0, blocked_by)  # fmt: skip


def _position(pid: str, sym: str, t: int, status: str, pnl: float | None) -> PositionRecord:
    return PositionRecord(pid, "ema_cross", sym, 1, t, 1.0, 2.0, 4.0, 6.0, 12, status, pnl=pnl)


def _fill(pid: str, leg: str, fee: float, pnl: float) -> FillRecord:
    return FillRecord(pid, leg, "AAAUSDT", T0, 100.0, 1.0, fee, pnl, leg.upper())


def test_summary_figures_by_hand() -> None:
    signals = [
        _signal("AAAUSDT", T0, True),  # p1: won (+8 - 1 fee in, 1 fee out, -0.5 funding)
        _signal("BBBUSDT", T0, True),  # p2: lost
        _signal("AAAUSDT", T0 + H, False, "meta_model"),
        _signal("BBBUSDT", T0 + H, False, "max_positions"),
        _signal("AAAUSDT", T0 + 2 * H, False, "max_positions"),
        _signal("BBBUSDT", T0 + 2 * H, True),  # p3: the venue refused the entry
        _signal("AAAUSDT", T0 + 3 * H, True),  # p4: still open
        _signal("BBBUSDT", T0 + 3 * H, False, "sizing"),
    ]
    positions = [
        _position("p1", "AAAUSDT", T0, "closed", 6.5),
        _position("p2", "BBBUSDT", T0, "closed", -4.0),
        _position("p3", "BBBUSDT", T0 + 2 * H, "cancelled", None),
        _position("p4", "AAAUSDT", T0 + 3 * H, "open", None),
    ]
    fills = [
        _fill("p1", "entry", 1.0, -1.0),
        _fill("p1", "funding:1704096000000", 0.0, -0.5),
        _fill("p1", "leg1", 1.0, 8.0),  # +9 move, 1 fee
        _fill("p2", "entry", 1.0, -1.0),
        _fill("p2", "leg1", 1.0, -3.0),
        _fill("p4", "entry", 0.5, -0.5),
    ]
    orders = [
        OrderRecord("p3", "ema_cross", "BBBUSDT", T0 + 2 * H, 1, "entry", 1.0, "rejected"),
        OrderRecord("p1", "ema_cross", "AAAUSDT", T0, 1, "entry", 1.0, "filled"),
    ]
    equity = [
        EquityRecord(T0, 1_000.0, 0.0, 2),
        EquityRecord(T0 + H, 1_020.0, 0.0, 2),  # the peak
        EquityRecord(T0 + 2 * H, 969.0, 0.0, 1),  # 51 below 1020: 5%
        EquityRecord(T0 + 3 * H, 1_001.0, 2.0, 1),
    ]
    s = summarize(signals, positions, fills, orders, equity, cycles=4, run=RUN)
    assert s.run_id == RUN.run_id
    assert s.range_text == "2024-01-01..2024-01-02"
    assert s.symbols == ("AAAUSDT", "BBBUSDT")
    assert s.cycles == 4
    assert s.signals == 8
    assert s.taken == 3  # p1, p2, p4; p3 was refused by the venue
    assert s.blocked == {"max_positions": 2, "meta_model": 1, "sizing": 1, "venue": 1}
    assert s.trades_closed == 2
    assert s.trades_won == 1
    assert s.win_rate == 0.5
    assert s.open_positions == 1
    assert s.realized_pnl == pytest.approx(-1.0 - 0.5 + 8.0 - 1.0 - 3.0 - 0.5)  # 2.0
    assert s.fees == pytest.approx(4.5)
    assert s.funding == pytest.approx(0.5)
    assert s.initial_equity == 1_000.0
    assert s.ending_equity == 1_001.0
    assert s.net_pnl == pytest.approx(1.0)
    assert s.max_drawdown == pytest.approx(51.0 / 1_020.0)
    assert s.max_drawdown_usdt == pytest.approx(51.0)
    fields = s.fields()
    assert fields["trades_closed"] == 2
    assert fields["blocked"] == dict(s.blocked)
    assert fields["net_pnl"] == s.net_pnl


def test_a_fall_from_the_starting_equity_counts_as_drawdown() -> None:
    equity = [EquityRecord(T0, 900.0, -100.0, 0), EquityRecord(T0 + H, 950.0, -50.0, 0)]
    s = summarize([], [], [], [], equity, cycles=2, run=RUN)
    assert s.max_drawdown == pytest.approx(0.1)
    assert s.win_rate is None
    assert s.blocked == {}


def test_a_journal_without_identity_is_summarised_from_its_records() -> None:
    equity = [EquityRecord(T0, 1_000.0, 0.0, 0), EquityRecord(T0 + H, 990.0, 0.0, 0)]
    s = summarize([_signal("AAAUSDT", T0, False, "meta_model")], [], [], [], equity,
                  cycles=2, run=None, run_id="paper")  # fmt: skip
    assert s.run_id == "paper"
    assert s.start_ms == T0
    assert s.initial_equity is None
    assert s.net_pnl is None
    assert s.ending_equity == 990.0
    assert s.max_drawdown == pytest.approx(0.01)
