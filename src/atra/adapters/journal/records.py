"""The journal's records: one frozen dataclass per row kind (signals, orders, fills,
positions, equity, cycles, guard events), and :class:`JournalBatch`, everything one step of the
live loop writes in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One primary signal and what was decided about it."""

    strategy: str
    symbol: str
    bar_time_ms: int
    side: int
    entry: float
    sl: float
    tp1: float
    tp2: float
    horizon_bars: int
    p_take: float | None
    threshold: float | None
    take: bool
    reasons: tuple[str, ...]
    model_id: str
    quantity: float
    blocked_by: str | None = None
    run_id: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order (paper or real); ``status`` pending / filled / cancelled / rejected."""

    client_order_id: str
    strategy: str
    symbol: str
    bar_time_ms: int
    side: int
    kind: str
    quantity: float
    status: str
    run_id: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One fill of an order; ``leg`` is ``entry``, ``leg1``, ``leg2`` or ``funding:<time ms>``.
    ``pnl`` is the fill's own cash: minus the fee for the entry, ``side x qty x (price -
    entry)`` minus the exit fee for a leg, minus the payment for funding."""

    client_order_id: str
    leg: str
    symbol: str
    time_ms: int
    price: float
    quantity: float
    fee: float
    pnl: float
    reason: str


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A position from its decision to its last exit; ``status`` pending / open / closed."""

    position_id: str
    strategy: str
    symbol: str
    side: int
    signal_time_ms: int
    quantity: float
    sl_dist: float
    tp1_dist: float
    tp2_dist: float
    horizon_bars: int
    status: str
    entry_time_ms: int | None = None
    entry_price: float | None = None
    legs_done: int = 0
    exit_time_ms: int | None = None
    exit_price: float | None = None
    reason: str | None = None
    pnl: float | None = None
    ret_net: float | None = None


@dataclass(frozen=True, slots=True)
class PositionMark:
    """One open position marked at a bar close: ``unrealized_pnl = side x quantity x
    (mark_price - entry_price)``, ``quantity`` the part still open. Fees are not in it: the
    entry fee is realised with the entry fill, the exit fee with the exit (the equity mark's
    accounting)."""

    bar_time_ms: int
    position_id: str
    symbol: str
    side: int
    quantity: float
    entry_price: float
    mark_price: float
    unrealized_pnl: float


@dataclass(frozen=True, slots=True)
class EquityRecord:
    """Equity marked at a bar close (realised P&L + open positions at their last close).

    ``positions``: the marks of the open positions whose ``unrealized_pnl`` make up
    ``equity - initial equity - realized_pnl``, written with the equity row in one transaction;
    None when not known (a journal from before schema 3) or not read
    (:meth:`~atra.adapters.journal.database.Journal.equity` reads the equity rows alone)."""

    bar_time_ms: int
    equity: float
    realized_pnl: float
    open_positions: int
    positions: tuple[PositionMark, ...] | None = None


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """One cycle of the loop: which symbols were fetched, which failed (and why), latency."""

    bar_time_ms: int
    run_id: str
    started_ms: int
    ended_ms: int
    symbols_ok: int
    symbols_failed: dict[str, str]
    latency_ms: float
    status: str


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """A risk guard that refused an action."""

    time_ms: int
    guard: str
    symbol: str
    detail: str


@dataclass(slots=True)
class JournalBatch:
    """Everything one step writes; :meth:`Journal.write` stores it in one transaction."""

    signals: list[SignalRecord] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    positions: list[PositionRecord] = field(default_factory=list)
    guard_events: list[GuardEvent] = field(default_factory=list)
    symbol_state: dict[str, int] = field(default_factory=dict)
    equity: EquityRecord | None = None
    cycle: CycleRecord | None = None

    def __bool__(self) -> bool:
        return bool(
            self.signals
            or self.orders
            or self.fills
            or self.positions
            or self.guard_events
            or self.symbol_state
            or self.equity is not None
            or self.cycle is not None
        )
