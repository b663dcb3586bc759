"""When the live feed fetches funding: the interval is read from the rows held, and from the
venue's statement (``fundingInfo``) when it is shorter."""

from __future__ import annotations

import asyncio

import numpy as np
from structlog.testing import capture_logs

from atra.errors import ExchangeError
from atra.live.funding_due import FundingIntervals, funding_due, recent_funding_times

H = 3_600_000


def _times(*hours: float) -> np.ndarray:
    return np.array([int(h * H) for h in hours], np.int64)


def test_due_once_the_next_interval_is_reached() -> None:
    eight = _times(0, 8, 16)
    assert not funding_due(eight, 24 * H - 1)  # the bar closing at the settlement: not yet
    assert funding_due(eight, 24 * H)
    four = _times(0, 4, 8)  # another symbol's interval, read from its own rows
    assert not funding_due(four, 12 * H - 1)
    assert funding_due(four, 12 * H)


def test_a_late_row_keeps_the_gate_open() -> None:
    """Until the expected row arrives, every later fetch is due."""
    held = _times(0, 8, 16)
    assert funding_due(held, 25 * H)
    assert funding_due(held, 30 * H)


def test_unknown_interval_is_always_due() -> None:
    assert funding_due(None, 0)
    assert funding_due(_times(), 0)
    assert funding_due(_times(8), 9 * H)


def test_millisecond_jitter_and_a_shortened_interval() -> None:
    # settlement a few ms after the hour: the next one is still fetched at the hour's bar
    jittered = np.array([0, 8 * H + 3, 16 * H + 7], np.int64)
    assert funding_due(jittered, 24 * H)
    assert not funding_due(jittered, 24 * H - 1)
    # 8 h then 4 h: the shortest recent spacing rules
    assert funding_due(_times(0, 8, 16, 20), 24 * H)


def test_recent_times_keep_the_tail_after_the_held_ones() -> None:
    held = _times(0, 8, 16)
    out = recent_funding_times(held, _times(16, 24, 32))
    assert out.tolist() == _times(8, 16, 24, 32).tolist()
    assert recent_funding_times(None, _times(0, 8)).tolist() == _times(0, 8).tolist()


def test_a_stated_interval_shorter_than_the_rows_rules() -> None:
    eight = _times(0, 8, 16)
    assert not funding_due(eight, 20 * H)  # by the rows: next at 24 h
    assert funding_due(eight, 20 * H, stated_ms=4 * H)  # the venue says 4 h now: due at 20 h
    assert not funding_due(eight, 20 * H - 1, stated_ms=4 * H)
    assert not funding_due(eight, 20 * H, stated_ms=8 * H)
    assert not funding_due(_times(0, 4, 8), 11 * H, stated_ms=8 * H)  # never later than rows


class _Venue:
    def __init__(self, answers: list[dict[str, int] | Exception]) -> None:
        self.answers = answers
        self.calls = 0

    async def __call__(self) -> dict[str, int]:
        self.calls += 1
        await asyncio.sleep(0)  # other symbols ask meanwhile
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_intervals_asked_once_per_bar_and_shared() -> None:
    venue = _Venue([{"BBBUSDT": 4}, {}])
    iv = FundingIntervals(venue)
    got = await asyncio.gather(*(iv.stated_ms(s, 5 * H) for s in ("AAAUSDT", "BBBUSDT") * 3))
    assert got == [8 * H, 4 * H] * 3  # not listed: the default 8 h
    assert venue.calls == iv.requests == 1
    assert await iv.stated_ms("BBBUSDT", 6 * H) == 8 * H  # the next bar asks again
    assert venue.calls == 2


async def test_a_failed_statement_leaves_the_rows_to_decide() -> None:
    venue = _Venue([ExchangeError("binance perp /fapi/v1/fundingInfo: HTTP 503"), {"X": 1}])
    iv = FundingIntervals(venue)
    eight = _times(0, 8, 16)
    with capture_logs() as logs:
        assert await iv.stated_ms("X", 20 * H) is None
        assert await iv.skip("X", eight, 20 * H, 20 * H)  # the rows say not yet
    assert venue.calls == 1  # not asked again within the bar
    assert [e["event"] for e in logs] == ["funding_info_unavailable"]
    assert not await iv.skip("X", eight, 21 * H, 21 * H)  # next bar: 1 h stated, due
    assert await FundingIntervals(None).stated_ms("X", 0) is None
