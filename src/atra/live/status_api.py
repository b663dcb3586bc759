"""The read-only status API: what a running (or finished) loop's journal says, over HTTP.

Endpoints (JSON bodies: :mod:`atra.live.status_models`):

- ``GET /health``: is the loop cycling (newest cycle's age against one bar + the close delay +
  the cycle deadline); 200, or 503 when stale. Never needs the token.
- ``GET /status``: open positions (entry, quantity, stops, targets) and equity at the last mark;
  paper / live / replay; the model of the newest decision.
- ``GET /trades?offset=&limit=``: closed trades, the columns of ``atra journal trades --csv``.
- ``GET /profit``: the replay summary's figures (:mod:`atra.live.summary`).
- ``GET /signals?symbol=&since=&limit=``: decisions (p(take), threshold, taken, blocked by what,
  reasons).
- ``GET /explain/{symbol}/{time}``: the decision(s) ``atra explain SYMBOL TIME`` prints.
- ``GET /openapi.json`` and ``GET /docs``: the OpenAPI schema and its browsable page.

Read-only by construction: every request opens the journal with SQLite's ``mode=ro``
(:func:`~atra.adapters.journal.readonly.open_readonly`) and reads one consistent snapshot; the
loop's writes are never blocked (WAL). There are no control endpoints (no pause, resume or
close): the API cannot change what the loop does.

With a token (``ATRA__STATUS_API__TOKEN``), every endpoint but ``/health`` needs
``Authorization: Bearer <token>`` (compared in constant time); a missing or wrong one is 401.
The server (:mod:`atra.live.status_server`) refuses to bind off loopback without a token.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from atra.adapters.journal.readonly import JournalReader, open_readonly
from atra.adapters.journal.records import PositionMark, PositionRecord, SignalRecord
from atra.adapters.trades_csv import closed_trades_of_journal
from atra.core.closed_trades import ClosedTrade, format_time
from atra.core.symbols import check_symbol
from atra.core.times import parse_time_ms
from atra.core.types import Timeframe
from atra.errors import AtraError, ConfigError
from atra.live.replay_run import stored_run
from atra.live.status_models import (
    Decision,
    Decisions,
    Explanation,
    Health,
    OpenPosition,
    Profit,
    Status,
    Trade,
    Trades,
)
from atra.live.summary import summarize_journal

__all__ = ["StatusSource", "create_app", "parse_time_ms"]

MAX_PAGE: Final[int] = 1000
API_VERSION: Final[str] = "1.0"
"""The API's own version (its paths and bodies), in the OpenAPI schema."""
_BEARER: Final[HTTPBearer] = HTTPBearer(auto_error=False, description="ATRA__STATUS_API__TOKEN")
"""Module level: the routes' annotations are resolved against the module's names."""


@dataclass(frozen=True, slots=True)
class StatusSource:
    """What the API serves: the journal and what the journal does not hold.

    ``mode`` / ``execution``: a live run's (from ``live.paper`` and ``--live``); a replay's
    journal says itself (its stored identity wins). ``max_age_s``: the newest cycle may be this
    old before ``/health`` says stale. ``move_to_be``: the exits move the stop to the entry
    price after TP1 (:class:`~atra.core.exits.api.ExitSpec`). ``token``: None = no auth."""

    journal_path: Path
    timeframe: Timeframe
    max_age_s: float
    mode: Literal["paper", "live", "replay"] = "paper"
    execution: Literal["paper", "orders"] = "paper"
    initial_equity: float = 10_000.0
    move_to_be: bool = False
    token: str | None = field(default=None, repr=False)
    clock: Callable[[], float] = time.time


def _side(side: int) -> Literal["LONG", "SHORT"]:
    return "LONG" if side > 0 else "SHORT"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _decision(s: SignalRecord) -> Decision:
    return Decision(
        symbol=s.symbol, strategy=s.strategy, bar_time=format_time(s.bar_time_ms),
        bar_time_ms=s.bar_time_ms, side=_side(s.side), entry=s.entry, sl=s.sl, tp1=s.tp1,
        tp2=s.tp2, horizon_bars=s.horizon_bars, p_take=_finite(s.p_take),
        threshold=_finite(s.threshold), take=s.take,
        verdict="TAKEN" if s.take else f"BLOCKED by {s.blocked_by or 'unknown'}",
        blocked_by=s.blocked_by, reasons=list(s.reasons), model_id=s.model_id,
        quantity=s.quantity,
    )  # fmt: skip


def _trade(t: ClosedTrade) -> Trade:
    return Trade(
        symbol=t.symbol, side=_side(t.side), entry_time=format_time(t.entry_time_ms),
        entry_price=t.entry_price, qty=t.qty, exit_time=format_time(t.exit_time_ms),
        exit_price=t.exit_price, exit_reason=t.exit_reason, fees=t.fees, funding=t.funding,
        pnl=t.pnl,
    )  # fmt: skip


def _position(
    p: PositionRecord,
    legs_qty: float,
    cash: float,
    src: StatusSource,
    tf: Timeframe,
    mark: PositionMark | None,
) -> OpenPosition:
    entry = p.entry_price
    filled = p.status != "pending" and entry is not None
    stop = tp1 = tp2 = None
    if filled and entry is not None:
        stop = entry - p.side * p.sl_dist
        if p.legs_done and src.move_to_be:
            stop = entry
        tp1, tp2 = entry + p.side * p.tp1_dist, entry + p.side * p.tp2_dist
    step = tf.ms
    state: Literal["pending", "open", "closing"] = "closing"  # open at the mark, closed since
    if p.status in ("pending", "open"):
        state = "open" if p.status == "open" else "pending"
    return OpenPosition(
        position_id=p.position_id, strategy=p.strategy, symbol=p.symbol, side=_side(p.side),
        signal_time=format_time(p.signal_time_ms),
        entry_time=None if p.entry_time_ms is None else format_time(p.entry_time_ms),
        entry_price=entry, quantity=p.quantity, remaining_qty=p.quantity - legs_qty,
        legs_done=p.legs_done, stop_loss=stop, take_profit_1=tp1, take_profit_2=tp2,
        time_exit=None if p.entry_time_ms is None
        else format_time(p.entry_time_ms + p.horizon_bars * step),
        realized_pnl=cash,
        status=state,
        mark_time=None if mark is None else format_time(mark.bar_time_ms),
        mark_price=None if mark is None else mark.mark_price,
        unrealized_pnl=None if mark is None else mark.unrealized_pnl,
        unrealized_pct=None if mark is None else _pct(mark),
    )  # fmt: skip


def _pct(m: PositionMark) -> float | None:
    base = m.quantity * m.entry_price
    return 100.0 * m.unrealized_pnl / base if base > 0.0 else None


async def _status(j: JournalReader, src: StatusSource) -> Status:
    run = await stored_run(j)
    mode, execution, initial, tf = src.mode, src.execution, src.initial_equity, src.timeframe
    if run is not None:  # a replay's journal: its own identity
        mode, initial, tf = "replay", run.initial_equity, Timeframe.parse(run.timeframe)
        execution = "orders" if run.execution == "orders" else "paper"
    mark = await j.last_equity()
    marks = {m.position_id: m for m in mark.positions or ()} if mark is not None else {}
    live = await j.positions(("pending", "open"))
    ids = {p.position_id for p in live}
    # open at the newest mark, closed since (a time exit at the next open): shown as closing
    gone = set(marks) - ids
    live += [p for p in await j.positions(("closed",)) if p.position_id in gone]
    ids |= gone
    legs: dict[str, float] = {}
    cash: dict[str, float] = {}
    for f in await j.fills():
        if f.client_order_id in ids:
            cash[f.client_order_id] = cash.get(f.client_order_id, 0.0) + f.pnl
            if f.leg.startswith("leg"):
                legs[f.client_order_id] = legs.get(f.client_order_id, 0.0) + f.quantity
    model_id = await j.newest_model_id() or (run.model_id if run is not None else None)
    return Status(
        mode=mode, execution=execution,
        run_id=run.run_id if run is not None else (await j.meta_value("run_id") or ""),
        model_id=model_id, timeframe=tf.value, initial_equity=initial,
        equity=None if mark is None else mark.equity,
        equity_time=None if mark is None else format_time(mark.bar_time_ms),
        realized_pnl=None if mark is None else mark.realized_pnl,
        unrealized_pnl=None if mark is None else mark.equity - initial - mark.realized_pnl,
        open_positions=[
            _position(p, legs.get(p.position_id, 0.0), cash.get(p.position_id, 0.0), src, tf,
                      marks.get(p.position_id))
            for p in live
        ],
    )  # fmt: skip


async def _health(j: JournalReader | None, src: StatusSource, started_s: float) -> Health:
    """``j`` None: the loop has not created its journal yet."""
    last = None if j is None else await j.last_cycle()
    now_s = src.clock()
    if last is None:
        fresh = now_s - started_s <= src.max_age_s
        return Health(
            status="starting" if fresh else "stale", cycles=0, last_bar_time=None,
            last_bar_time_ms=None, last_cycle_ended=None, last_cycle_status=None, age_s=None,
            max_age_s=src.max_age_s,
        )  # fmt: skip
    count = 0 if j is None else (await j.row_counts(("cycles",)))["cycles"]
    age = max(0.0, now_s - last.ended_ms / 1000)
    return Health(
        status="ok" if age <= src.max_age_s else "stale", cycles=count,
        last_bar_time=format_time(last.bar_time_ms), last_bar_time_ms=last.bar_time_ms,
        last_cycle_ended=format_time(last.ended_ms), last_cycle_status=last.status,
        age_s=round(age, 3), max_age_s=src.max_age_s,
    )  # fmt: skip


def _symbol(text: str) -> str:
    return check_symbol(text.strip().upper(), "symbol")


def create_app(src: StatusSource) -> FastAPI:
    """The API over ``src`` (serve it with :mod:`atra.live.status_server`)."""
    started_s = src.clock()
    app = FastAPI(
        title="ATRA status API",
        version=API_VERSION,
        description="Read-only view of the live loop's journal. No control endpoints.",
        openapi_url=None,  # served below, behind the token
        docs_url=None,
        redoc_url=None,
    )

    def authorised(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if src.token is None:
            return
        given = creds.credentials if creds is not None else ""
        if not hmac.compare_digest(given.encode(), src.token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(authorised)]

    @app.exception_handler(AtraError)
    async def _refused(_: Request, exc: AtraError) -> JSONResponse:
        code = 400 if isinstance(exc, ConfigError) else 503
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """200 while the loop cycles, 503 when its newest cycle is too old."""
        if not src.journal_path.exists():
            out = await _health(None, src, started_s)
        else:
            async with open_readonly(src.journal_path) as j:
                out = await _health(j, src, started_s)
        return JSONResponse(out.model_dump(), status_code=503 if out.status == "stale" else 200)

    @app.get("/status", dependencies=auth)
    async def status() -> Status:
        """Open positions and the equity at the last bar-close mark."""
        async with open_readonly(src.journal_path) as j:
            return await _status(j, src)

    @app.get("/trades", dependencies=auth)
    async def trades(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Trades:
        """Closed trades sorted by (entry_time, symbol), ``limit`` from ``offset``."""
        async with open_readonly(src.journal_path) as j:
            positions, fills = await j.positions(), await j.fills()
        rows, not_closed = closed_trades_of_journal(positions, fills, str(src.journal_path))
        rows.sort(key=lambda t: (t.entry_time_ms, t.symbol, t.exit_time_ms, t.side, t.qty))
        page = rows[offset : offset + limit]
        return Trades(total=len(rows), offset=offset, limit=limit, not_closed=not_closed,
                      trades=[_trade(t) for t in page])  # fmt: skip

    @app.get("/profit", dependencies=auth)
    async def profit() -> Profit:
        """Trades, win rate, P&L, fees, funding, equity, drawdown, decisions blocked by what."""
        async with open_readonly(src.journal_path) as j:
            summary = await summarize_journal(j)
        fields: dict[str, Any] = summary.fields()
        return Profit(**fields, trades_won=summary.trades_won)

    @app.get("/signals", dependencies=auth)
    async def signals(
        symbol: str | None = None,
        since: Annotated[str | None, Query(description="ISO UTC time or epoch ms")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Decisions:
        """Decisions (of ``symbol``) at bars from ``since`` on: the newest ``limit``."""
        sym = None if symbol is None else _symbol(symbol)
        since_ms = None if since is None else parse_time_ms(since)
        async with open_readonly(src.journal_path) as j:
            found = await j.signals(sym)
        if since_ms is not None:
            found = [s for s in found if s.bar_time_ms >= since_ms]
        return Decisions(total=len(found), decisions=[_decision(s) for s in found[-limit:]])

    @app.get("/explain/{symbol}/{time}", dependencies=auth, responses={404: {}})
    async def explain(symbol: str, time: str, strategy: str | None = None) -> Explanation:
        """Why the loop took or blocked SYMBOL's signal at bar TIME (open, ISO UTC or ms)."""
        sym, time_ms = _symbol(symbol), parse_time_ms(time)
        async with open_readonly(src.journal_path) as j:
            found = [
                s
                for s in await j.signals(sym)
                if s.bar_time_ms == time_ms and (strategy is None or s.strategy == strategy)
            ]
        if not found:
            which = f" strategy {strategy}" if strategy is not None else ""
            raise HTTPException(
                404, f"no{which} signal for {sym} at bar {format_time(time_ms)} ({time_ms} ms)"
            )
        return Explanation(symbol=sym, bar_time=format_time(time_ms), bar_time_ms=time_ms,
                           decisions=[_decision(s) for s in found])  # fmt: skip

    @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=auth, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    return app
