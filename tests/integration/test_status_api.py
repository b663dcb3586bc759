"""The read-only status API over a real replay's journal: every endpoint served on a free port
of 127.0.0.1 and queried over HTTP, each answer checked against what the journal's other
readers give (``atra journal trades --csv``, the replay summary, ``atra explain``); the bearer
token; the refusal to serve off loopback without one; the OpenAPI schema.

The journal is the one of ``test_replay_outcome`` (two synthetic perpetuals, four days, one
position at a time, so some signals are blocked by a guard).
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_replay_outcome import (  # noqa: F401  (workdir: the fixture)
    ARGS,
    CANDLES,
    DAYS,
    EXIT,
    LIMITS,
    SPEC,
    STEP,
    SYMBOLS,
    T0,
    TF,
    _replay,
    _settings,
    workdir,
)

from atra.adapters.journal.database import Journal
from atra.adapters.journal.readonly import open_readonly
from atra.adapters.journal.records import (
    EquityRecord,
    JournalBatch,
    PositionMark,
    PositionRecord,
    SignalRecord,
)
from atra.cli import main
from atra.config import load_config
from atra.core.closed_trades import CLOSED_TRADE_COLUMNS, format_decimal, format_time
from atra.core.types import Market
from atra.errors import ConfigError, DataError
from atra.live.guards import RiskGuards
from atra.live.loop import StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.live.status_api import StatusSource
from atra.live.status_server import StatusServer, check_bind, is_loopback, start_status_server
from atra.live.summary import read_summary
from atra.research.explain import format_signal, load_signals
from helpers_logging import quiet_structlog

TOKEN = "s3cret-token-for-tests-0123456789"
MAX_AGE_S = TF.ms / 1000 + 30.0


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog():
        yield


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("status") / "replay.sqlite"
    assert _replay(path).cycles == DAYS * 24
    return path


@pytest.fixture(scope="module")
def clock(journal: Path) -> FakeClock:
    ended = sqlite3.connect(journal).execute("SELECT max(ended_ms) FROM cycles").fetchone()[0]
    return FakeClock(ended / 1000 + 1.0)  # one second after the last cycle


def _source(journal: Path, clock: FakeClock, token: str | None = None) -> StatusSource:
    return StatusSource(journal, TF, max_age_s=MAX_AGE_S, token=token, clock=clock)


@pytest.fixture(scope="module")
def server(journal: Path, clock: FakeClock) -> Iterator[StatusServer]:
    srv = start_status_server(_source(journal, clock), "127.0.0.1", 0)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server: StatusServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


def _ok(http: httpx.Client, url: str, **params: object) -> dict:  # type: ignore[type-arg]
    resp = http.get(url, params=params)
    assert resp.status_code == 200, resp.text
    body: dict = resp.json()  # type: ignore[type-arg]
    return body


# ---- health --------------------------------------------------------------------------------


def test_health_is_ok_while_cycles_are_fresh_and_503_when_stale(
    http: httpx.Client, journal: Path, clock: FakeClock
) -> None:
    body = _ok(http, "/health")
    assert body["status"] == "ok"
    assert body["cycles"] == DAYS * 24
    last_bar = sqlite3.connect(journal).execute("SELECT max(bar_time_ms) FROM cycles").fetchone()
    assert body["last_bar_time_ms"] == last_bar[0]
    assert body["age_s"] == pytest.approx(1.0, abs=1e-3)
    assert body["max_age_s"] == MAX_AGE_S
    saved = clock.now
    clock.now = saved + MAX_AGE_S + 1.0
    try:
        stale = http.get("/health")
    finally:
        clock.now = saved
    assert stale.status_code == 503
    assert stale.json()["status"] == "stale"


def test_health_before_the_journal_exists_is_starting_then_stale(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    srv = start_status_server(_source(tmp_path / "not-yet.sqlite", clock), "127.0.0.1", 0)
    try:
        with httpx.Client(base_url=srv.url) as c:
            first = c.get("/health")
            clock.now += MAX_AGE_S + 1.0
            later = c.get("/health")
            status = c.get("/status")
    finally:
        srv.stop()
    assert (first.status_code, first.json()["status"]) == (200, "starting")
    assert (later.status_code, later.json()["status"]) == (503, "stale")
    assert status.status_code == 503
    assert "no such file" in status.json()["detail"]


# ---- trades / profit -------------------------------------------------------------------------


def test_trades_are_the_journal_trades_csv(
    http: httpx.Client, journal: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "trades.csv"
    assert main(["journal", "trades", str(journal), "--csv", str(csv)]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0] == ",".join(CLOSED_TRADE_COLUMNS)
    assert len(lines) > 3, "the replay must close a few trades for this test to mean anything"
    body = _ok(http, "/trades", limit=1000)
    assert body["total"] == len(lines) - 1
    assert body["offset"] == 0
    money = {"entry_price", "qty", "exit_price", "fees", "funding", "pnl"}
    rows = []
    for t in body["trades"]:
        assert list(t) == list(CLOSED_TRADE_COLUMNS)
        rows.append(",".join(format_decimal(t[c], c) if c in money else str(t[c]) for c in t))
    assert rows == lines[1:]
    # pages of 2 put back together are the whole list
    pages = [_ok(http, "/trades", offset=k, limit=2)["trades"] for k in range(0, body["total"], 2)]
    assert [t for page in pages for t in page] == body["trades"]
    assert http.get("/trades", params={"limit": 0}).status_code == 422


def test_profit_is_the_replay_summary(http: httpx.Client, journal: Path) -> None:
    summary = asyncio.run(read_summary(journal))
    body = _ok(http, "/profit")
    want = {**summary.fields(), "trades_won": summary.trades_won}
    assert body == want
    assert body["trades_closed"] > 0
    assert body["blocked"], "the one-position guard must block some signals"


# ---- status ------------------------------------------------------------------------------------


async def _journal_state(path: Path, statuses: tuple[str, ...] = ("pending", "open")):  # type: ignore[no-untyped-def]
    async with Journal.open(path) as j:
        return await j.positions(statuses), await j.equity(), await j.signals()


def test_status_shows_open_positions_and_the_last_equity_mark(
    journal: Path, clock: FakeClock, tmp_path: Path
) -> None:
    closed, _, _ = asyncio.run(_journal_state(journal, ("closed",)))
    first = max(closed, key=lambda p: (p.exit_time_ms or 0) - (p.entry_time_ms or 0))
    assert first.entry_time_ms is not None
    assert first.exit_time_ms is not None
    assert first.exit_time_ms > first.entry_time_ms + 2 * STEP
    # the same replay stopped while that trade was still open
    midway = tmp_path / "midway.sqlite"
    _replay(midway, _settings(stop_ms=first.entry_time_ms + 2 * STEP))
    live, equity, signals = asyncio.run(_journal_state(midway))
    assert [(p.symbol, p.signal_time_ms) for p in live] == [(first.symbol, first.signal_time_ms)]
    srv = start_status_server(_source(midway, clock), "127.0.0.1", 0)
    try:
        body = httpx.get(f"{srv.url}/status").json()
    finally:
        srv.stop()
    mark = equity[-1]
    [pos_mark] = asyncio.run(_marks(midway, mark.bar_time_ms))
    assert (body["mode"], body["execution"], body["timeframe"]) == ("replay", "paper", TF.value)
    assert body["equity"] == mark.equity
    assert body["realized_pnl"] == mark.realized_pnl
    assert body["unrealized_pnl"] == pytest.approx(
        mark.equity - body["initial_equity"] - mark.realized_pnl, abs=1e-9
    )
    assert body["unrealized_pnl"] != 0.0
    assert body["model_id"] == signals[-1].model_id
    [got] = body["open_positions"]
    pos = live[0]
    sig = next(s for s in signals if (s.symbol, s.bar_time_ms) == (pos.symbol, pos.signal_time_ms))
    assert (got["symbol"], got["status"], got["quantity"]) == (pos.symbol, "open", pos.quantity)
    assert got["entry_price"] == first.entry_price
    assert got["remaining_qty"] == pos.quantity
    # the stop / targets sit at the signal's distances from the fill price
    assert got["stop_loss"] - got["entry_price"] == pytest.approx(sig.sl - sig.entry)
    assert got["take_profit_1"] - got["entry_price"] == pytest.approx(sig.tp1 - sig.entry)
    assert got["take_profit_2"] - got["entry_price"] == pytest.approx(sig.tp2 - sig.entry)
    assert got["time_exit"] == format_time(first.entry_time_ms + SPEC.horizon_bars * STEP)
    # marked at the newest bar close: its symbol's close, side x open quantity x (close - entry)
    close = _close(pos.symbol, mark.bar_time_ms)
    assert got["mark_time"] == body["equity_time"] == format_time(mark.bar_time_ms)
    assert got["mark_price"] == pos_mark.mark_price == close
    assert got["unrealized_pnl"] == pos_mark.unrealized_pnl
    assert got["unrealized_pnl"] == pytest.approx(
        pos.side * pos.quantity * (close - first.entry_price), rel=1e-12
    )
    assert got["unrealized_pct"] == pytest.approx(
        100.0 * pos.side * (close / first.entry_price - 1.0), rel=1e-9
    )
    # the only open position: its unrealised P&L is the equity mark's whole unrealised part
    assert got["unrealized_pnl"] == pytest.approx(body["unrealized_pnl"], abs=1e-6)


async def _marks(path: Path, bar_time_ms: int | None = None) -> list[PositionMark]:
    async with Journal.open(path) as j:
        return await j.position_marks(bar_time_ms)


def _close(symbol: str, bar_time_ms: int) -> float:
    frame = CANDLES[symbol]
    [close] = frame.loc[frame["open_time"] == bar_time_ms, "close"].to_numpy()
    return float(close)


def _open_at(p: PositionRecord, t_ms: int) -> bool:
    """``p`` held a quantity at bar ``t_ms``'s close (entered at or before, not yet out)."""
    entered = p.entry_time_ms is not None and p.entry_time_ms <= t_ms
    return entered and (p.exit_time_ms is None or p.exit_time_ms > t_ms)


@pytest.mark.parametrize("which", ["journal", "orders_journal"])
def test_position_marks_add_up_to_every_equity_marks_unrealised_part(
    which: str, request: pytest.FixtureRequest
) -> None:
    """Paper fills, and the order path (where a time exit fills at the next open: the position
    is still marked at the close the exit was sent at)."""
    journal: Path = request.getfixturevalue(which)

    async def read():  # type: ignore[no-untyped-def]
        async with Journal.open(journal) as j:
            return await j.equity(), await j.position_marks(), await j.positions(), await j.fills()

    equity, marks, positions, fills = asyncio.run(read())
    initial = _settings().initial_equity
    by_id = {p.position_id: p for p in positions}
    by_bar: dict[int, list[PositionMark]] = {}
    for m in marks:
        by_bar.setdefault(m.bar_time_ms, []).append(m)
    assert set(by_bar) <= {e.bar_time_ms for e in equity}
    held = 0
    for e in equity:
        mine = by_bar.get(e.bar_time_ms, [])
        open_ids = {p.position_id for p in positions if _open_at(p, e.bar_time_ms)}
        assert {m.position_id for m in mine} == open_ids, format_time(e.bar_time_ms)
        unrealised = e.equity - initial - e.realized_pnl
        assert sum(m.unrealized_pnl for m in mine) == pytest.approx(unrealised, abs=1e-6)
        held += bool(mine)
    assert held >= 20, "the replay must hold positions over many bars for this to mean anything"
    for m in marks:
        pos = by_id[m.position_id]
        legs = sum(
            f.quantity
            for f in fills
            if f.client_order_id == m.position_id
            and f.leg.startswith("leg")
            and f.time_ms <= m.bar_time_ms
        )
        assert (m.symbol, m.side, m.entry_price) == (pos.symbol, pos.side, pos.entry_price)
        assert m.quantity == pytest.approx(pos.quantity - legs, rel=1e-12)
        assert m.mark_price == _close(m.symbol, m.bar_time_ms)
        assert m.unrealized_pnl == m.side * m.quantity * (m.mark_price - m.entry_price)


def _order_replay(path: Path, **kw: object) -> None:
    """The module's replay through the real order path against the fake's matching engine:
    a time exit is a market order sent at a close and filled at the next open."""
    s = _settings(**kw)
    asyncio.run(run_replay(
        s, {sym: CANDLES[sym] for sym in s.symbols}, path,
        decider=StrategyDecider(SPEC, TF, costs=EXIT), exit_spec=EXIT,
        guards=RiskGuards(LIMITS), setup=ReplaySetup(market=Market.PERP, orders=True),
    ))  # fmt: skip


@pytest.fixture(scope="module")
def orders_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("status-orders") / "orders.sqlite"
    with quiet_structlog():
        _order_replay(path)
    return path


def test_a_time_exit_at_the_next_open_is_closing_with_its_mark(
    orders_journal: Path, clock: FakeClock, tmp_path: Path
) -> None:
    closed, _, _ = asyncio.run(_journal_state(orders_journal, ("closed",)))
    timed = next(p for p in closed if p.reason == "TIME")
    assert timed.exit_time_ms is not None
    last_bar = timed.exit_time_ms - STEP  # its time exit is sent at this close
    cut = tmp_path / "cut.sqlite"
    _order_replay(cut, stop_ms=timed.exit_time_ms)  # the last bar processed is last_bar
    [state] = [
        p
        for p in asyncio.run(_journal_state(cut, ("closed",)))[0]
        if (p.symbol, p.signal_time_ms) == (timed.symbol, timed.signal_time_ms)
    ]
    assert state.exit_time_ms == timed.exit_time_ms  # booked closed at the next open already
    srv = start_status_server(_source(cut, clock), "127.0.0.1", 0)
    try:
        body = httpx.get(f"{srv.url}/status").json()
    finally:
        srv.stop()
    assert body["equity_time"] == format_time(last_bar)
    [got] = [p for p in body["open_positions"] if p["position_id"] == state.position_id]
    assert got["status"] == "closing"
    assert got["mark_price"] == _close(timed.symbol, last_bar)
    assert got["unrealized_pnl"] == pytest.approx(
        state.side * state.quantity * (got["mark_price"] - got["entry_price"]), rel=1e-12
    )
    total = sum(p["unrealized_pnl"] for p in body["open_positions"] if p["status"] != "pending")
    assert total == pytest.approx(body["unrealized_pnl"], abs=1e-6)
    assert body["unrealized_pnl"] != 0.0


def test_a_journal_from_before_the_marks_shows_null_not_zero(
    tmp_path: Path, clock: FakeClock
) -> None:
    old = tmp_path / "v2.sqlite"
    pos = PositionRecord(
        "p1", "ema_cross", "AAAUSDT", 1, T0, 2.0, 1.0, 2.0, 3.0, 12, "open", T0 + STEP, 100.0
    )

    async def write_v2() -> None:
        async with Journal.open(old, target_version=2) as j:
            mark = EquityRecord(T0 + STEP, 10_010.0, -0.1, 1)
            await j.write(JournalBatch(positions=[pos], equity=mark))

    asyncio.run(write_v2())
    srv = start_status_server(_source(old, clock), "127.0.0.1", 0)
    try:
        resp = httpx.get(f"{srv.url}/status")
    finally:
        srv.stop()
    assert resp.status_code == 200, resp.text
    body = resp.json()
    version = sqlite3.connect(old).execute("SELECT max(version) FROM schema_version").fetchone()
    assert version == (2,), "the reader must not migrate it"
    assert body["unrealized_pnl"] == pytest.approx(10_010.0 - 10_000.0 + 0.1)
    [got] = body["open_positions"]
    assert (got["status"], got["entry_price"]) == ("open", 100.0)
    assert [got[k] for k in ("mark_time", "mark_price", "unrealized_pnl", "unrealized_pct")] == [
        None
    ] * 4


# ---- signals / explain -----------------------------------------------------------------------


def _record(d: dict) -> SignalRecord:  # type: ignore[type-arg]
    return SignalRecord(
        d["strategy"], d["symbol"], d["bar_time_ms"], 1 if d["side"] == "LONG" else -1,
        d["entry"], d["sl"], d["tp1"], d["tp2"], d["horizon_bars"], d["p_take"], d["threshold"],
        d["take"], tuple(d["reasons"]), d["model_id"], d["quantity"], d["blocked_by"],
    )  # fmt: skip


def test_signals_are_the_journalled_decisions(http: httpx.Client, journal: Path) -> None:
    _, _, signals = asyncio.run(_journal_state(journal))
    body = _ok(http, "/signals", limit=1000)
    assert body["total"] == len(signals)
    key = [(s.strategy, s.symbol, s.bar_time_ms) for s in signals]
    got = [_record(d) for d in body["decisions"]]
    assert [(s.strategy, s.symbol, s.bar_time_ms) for s in got] == key
    assert [(s.take, s.blocked_by, s.p_take, s.entry) for s in got] == [
        (s.take, s.blocked_by, s.p_take, s.entry) for s in signals
    ]
    sym = SYMBOLS[1]
    mine = [s for s in signals if s.symbol == sym]
    since = mine[len(mine) // 2].bar_time_ms
    part = _ok(http, "/signals", symbol=sym.lower(), since=str(since), limit=2)
    later = [s for s in mine if s.bar_time_ms >= since]
    assert part["total"] == len(later)
    assert [d["bar_time_ms"] for d in part["decisions"]] == [s.bar_time_ms for s in later[-2:]]
    assert http.get("/signals", params={"symbol": "btc/usdt"}).status_code == 400
    assert http.get("/signals", params={"since": "yesterday"}).status_code == 400


def test_explain_is_what_atra_explain_prints(
    http: httpx.Client, journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, signals = asyncio.run(_journal_state(journal))
    for s in (next(s for s in signals if s.take), next(s for s in signals if not s.take)):
        capsys.readouterr()
        assert main(["explain", s.symbol, str(s.bar_time_ms), "--journal", str(journal)]) == 0
        printed = capsys.readouterr().out.rstrip("\n")
        iso = _ok(http, f"/explain/{s.symbol}/{s.bar_time_ms}")["bar_time"]
        body = _ok(http, f"/explain/{s.symbol.lower()}/{iso}")  # ISO time, any case
        assert body["bar_time_ms"] == s.bar_time_ms
        text = "\n".join(format_signal(_record(d)) for d in body["decisions"])
        assert text == printed
        stored = asyncio.run(load_signals(journal, s.symbol, s.bar_time_ms))
        assert [_record(d) for d in body["decisions"]] == [
            SignalRecord(*[getattr(r, f) for f in SignalRecord.__slots__][:16]) for r in stored
        ]
    missing = http.get(f"/explain/{SYMBOLS[0]}/2023-01-01T00:00")
    assert missing.status_code == 404
    assert "no signal for" in missing.json()["detail"]


# ---- schema, token, binding ------------------------------------------------------------------


def test_openapi_lists_every_endpoint(http: httpx.Client) -> None:
    schema = _ok(http, "/openapi.json")
    assert set(schema["paths"]) == {
        "/health", "/status", "/trades", "/profit", "/signals", "/explain/{symbol}/{time}",
    }  # fmt: skip
    assert all(set(ops) == {"get"} for ops in schema["paths"].values()), "read-only: GET only"
    assert "Status" in schema["components"]["schemas"]
    assert http.get("/docs").status_code == 200
    assert http.post("/status").status_code == 405


def test_a_token_is_required_on_every_endpoint_but_health(journal: Path, clock: FakeClock) -> None:
    srv = start_status_server(_source(journal, clock, TOKEN), "127.0.0.1", 0)
    try:
        with httpx.Client(base_url=srv.url) as c:
            for url in ("/status", "/trades", "/profit", "/signals", "/openapi.json", "/docs",
                        f"/explain/{SYMBOLS[0]}/0"):  # fmt: skip
                bare = c.get(url)
                assert bare.status_code == 401, url
                assert bare.headers["www-authenticate"] == "Bearer"
                wrong = c.get(url, headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
                assert wrong.status_code == 401, url
            good = {"Authorization": f"Bearer {TOKEN}"}
            assert c.get("/status", headers=good).status_code == 200
            assert c.get("/openapi.json", headers=good).status_code == 200
            assert c.get("/health").status_code == 200
    finally:
        srv.stop()


def test_serving_off_loopback_needs_a_token(journal: Path, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0' is not loopback.*ATRA__STATUS_API__TOKEN"):
        start_status_server(_source(journal, clock), "0.0.0.0", 0)
    with pytest.raises(ConfigError, match="at least 16"):
        check_bind("127.0.0.1", "short")
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.1.2.3")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "10.1.2.3", "host", "::")] == [False] * 4
    # with the token it binds every interface; a request without the token is refused
    srv = start_status_server(_source(journal, clock, TOKEN), "0.0.0.0", 0)
    try:
        url = f"http://127.0.0.1:{srv.port}"
        assert httpx.get(f"{url}/status").status_code == 401
        ok = httpx.get(f"{url}/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
    finally:
        srv.stop()


def test_a_taken_port_is_one_line(server: StatusServer, journal: Path, clock: FakeClock) -> None:
    with pytest.raises(
        ConfigError, match=f"cannot serve the status API on 127.0.0.1:{server.port}"
    ):
        start_status_server(_source(journal, clock), "127.0.0.1", server.port)


def test_the_token_comes_only_from_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "atra.toml"
    cfg.write_text('[status_api]\ntoken = "in-the-file-0123456789"\n')
    with pytest.raises(ConfigError, match=r"status_api\.token: secrets are read only from the env"):
        load_config(cfg, env={})
    cfg.write_text('[status_api]\nenabled = true\nhost = "0.0.0.0"\n')
    loaded = load_config(cfg, env={"ATRA__STATUS_API__TOKEN": TOKEN})
    assert loaded.status_api.token is not None
    assert loaded.status_api.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(loaded)
    assert TOKEN in loaded.secret_values()


def test_the_reader_never_writes(journal: Path, tmp_path: Path) -> None:
    async def write() -> None:
        async with open_readonly(journal) as j:
            await j.set_meta("x", "y")

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        asyncio.run(write())
    not_journal = tmp_path / "x.sqlite"
    sqlite3.connect(not_journal).execute("CREATE TABLE t (a)").connection.commit()

    async def read() -> None:
        async with open_readonly(not_journal):
            pass

    with pytest.raises(DataError, match="not a readable journal"):
        asyncio.run(read())


# ---- the command ---------------------------------------------------------------------------


def test_the_command_serves_a_journal_until_stopped(journal: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ATRA__")}
    env["ATRA__STATUS_API__TOKEN"] = TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from atra.cli import main; sys.exit(main())",
         "status-api", "--journal", str(journal), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        found = None
        while found is None:
            seen.append(lines.get(timeout=30))  # queue.Empty: the command never said its URL
            found = re.search(r"http://127\.0\.0\.1:(\d+) \(token required\)", seen[-1])
        url = f"http://127.0.0.1:{found.group(1)}"
        assert httpx.get(f"{url}/profit").status_code == 401
        got = httpx.get(f"{url}/profit", headers={"Authorization": f"Bearer {TOKEN}"})
        assert got.json()["cycles"] == DAYS * 24
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        reader.join(5)
        proc.stdout.close()
    assert proc.returncode == 0, seen
    while not lines.empty():
        seen.append(lines.get())
    assert TOKEN not in "".join(seen)
    assert not [x for x in seen if "uvicorn" in x], seen


@pytest.mark.usefixtures("workdir")
def test_atra_live_serves_it_while_the_loop_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATRA__STATUS_API__ENABLED", "true")
    monkeypatch.setenv("ATRA__STATUS_API__PORT", "0")
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    found = re.search(r"status API: (http://127\.0\.0\.1:\d+) \(token off\)", out)
    assert found, out
    with pytest.raises(httpx.ConnectError):  # stopped with the loop
        httpx.get(f"{found.group(1)}/health")
