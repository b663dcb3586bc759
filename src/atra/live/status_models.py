"""The JSON bodies of the status API (:mod:`atra.live.status_api`), as pydantic models: the
OpenAPI schema is generated from them.

Times are given twice: ISO-8601 UTC text (``2024-01-01T05:00:00Z``, the closed-trades CSV's
format) and epoch milliseconds. Money is in the quote currency (USDT). A value the journal
does not hold (no meta model: no p(take); no equity mark yet) is ``null``, never a made-up 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Health(_Out):
    """Is the loop cycling? ``ok``: the newest cycle ended at most ``max_age_s`` ago;
    ``starting``: no cycle yet, the server started less than ``max_age_s`` ago; ``stale``:
    neither (HTTP 503)."""

    status: Literal["ok", "starting", "stale"]
    cycles: int
    last_bar_time: str | None
    last_bar_time_ms: int | None
    last_cycle_ended: str | None
    last_cycle_status: str | None = Field(description="ok, partial or failed")
    age_s: float | None = Field(description="Seconds since the newest cycle ended.")
    max_age_s: float = Field(description="One bar + the close delay + the cycle deadline.")


class OpenPosition(_Out):
    """A pending (entry not filled yet) or open position, or one open at the newest mark and
    closed since (``closing``: a time exit at the next open), marked at the newest mark."""

    position_id: str
    strategy: str
    symbol: str
    side: Literal["LONG", "SHORT"]
    status: Literal["pending", "open", "closing"]
    signal_time: str
    entry_time: str | None
    entry_price: float | None = Field(description="Fill price; pending: the signal's close.")
    quantity: float
    remaining_qty: float = Field(description="Quantity minus the exit legs filled so far.")
    legs_done: int
    stop_loss: float | None = Field(
        description="Entry -/+ the stop distance; at the entry price after TP1 when the exits "
        "move the stop to break-even. null while pending (the entry fill sets it)."
    )
    take_profit_1: float | None
    take_profit_2: float | None
    time_exit: str | None = Field(description="Open of the bar the time barrier closes it at.")
    realized_pnl: float = Field(description="Cash of its fills so far: fees, legs, funding.")
    mark_time: str | None = Field(description="The bar-close mark its mark price is from.")
    mark_price: float | None = Field(
        description="Its symbol's close at the newest equity mark; null while pending, when "
        "the journal holds no mark of it (opened after the mark, no close) or predates marks."
    )
    unrealized_pnl: float | None = Field(
        description="side x open quantity x (mark price - entry price), as the equity mark "
        "counts it: the entry fee is in realized_pnl, the exit fee is charged at the exit."
    )
    unrealized_pct: float | None = Field(
        description="unrealized_pnl in percent of the open quantity's entry value."
    )


class Status(_Out):
    """Open positions and equity at the last mark."""

    mode: Literal["paper", "live", "replay"]
    execution: Literal["paper", "orders"]
    run_id: str
    model_id: str | None = Field(description="The model of the newest decision.")
    timeframe: str
    initial_equity: float
    equity: float | None = Field(description="Equity at the newest bar-close mark.")
    equity_time: str | None
    realized_pnl: float | None = Field(description="Realised cash at that mark.")
    unrealized_pnl: float | None = Field(
        description="Open positions at their symbol's last close at that mark "
        "(equity - initial equity - realised): the sum of the positions' unrealized_pnl."
    )
    open_positions: list[OpenPosition]


class Trade(_Out):
    """One closed trade: the columns of ``atra journal trades --csv``."""

    symbol: str
    side: Literal["LONG", "SHORT"]
    entry_time: str
    entry_price: float
    qty: float
    exit_time: str
    exit_price: float
    exit_reason: str
    fees: float
    funding: float
    pnl: float


class Trades(_Out):
    """A page of closed trades, sorted as the CSV is: by (entry_time, symbol)."""

    total: int
    offset: int
    limit: int
    not_closed: int = Field(description="Positions still pending or open (not trades).")
    trades: list[Trade]


class Profit(_Out):
    """The replay summary's figures, read from the journal (``atra live --replay`` prints
    them at the end of a replay)."""

    run_id: str
    range: str
    symbols: list[str]
    cycles: int
    signals: int
    taken: int
    blocked: dict[str, int]
    trades_closed: int
    trades_won: int
    win_rate: float | None
    net_pnl: float | None
    realized_pnl: float
    fees: float
    funding: float
    initial_equity: float | None
    ending_equity: float | None
    max_drawdown: float = Field(description="Largest fall from the running peak, a fraction.")
    max_drawdown_usdt: float
    open_positions: int


class Decision(_Out):
    """One primary signal and what was decided about it (``atra explain`` shows one)."""

    symbol: str
    strategy: str
    bar_time: str
    bar_time_ms: int
    side: Literal["LONG", "SHORT"]
    entry: float
    sl: float
    tp1: float
    tp2: float
    horizon_bars: int
    p_take: float | None
    threshold: float | None
    take: bool
    verdict: str = Field(description="TAKEN, or BLOCKED by <what>.")
    blocked_by: str | None
    reasons: list[str] = Field(description="feature=value (log-odds contribution); [] no model")
    model_id: str
    quantity: float


class Decisions(_Out):
    """Decisions in bar-time order (the newest ``limit`` of those matching)."""

    total: int = Field(description="Decisions matching symbol and since, before the limit.")
    decisions: list[Decision]


class Explanation(_Out):
    """The journalled decision(s) of one symbol's bar, one per strategy."""

    symbol: str
    bar_time: str
    bar_time_ms: int
    decisions: list[Decision]
