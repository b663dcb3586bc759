"""`atra data download` end to end: real Binance data served by the fake exchange on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

import atra.cli.download  # noqa: F401  (registers `atra data download`)
from atra.adapters.exchange.client import BinanceClient
from atra.adapters.ratelimit import ScaledClock, forget_shared_limiters, shared_limiter
from atra.adapters.store import CandleStore, DatasetKey
from atra.cli import main
from atra.core.types import Market, Timeframe
from atra.data.download import DownloadSpec, download, parse_utc_ms, split_symbols
from atra.errors import ConfigError, ExchangeError, IPBanned
from atra.sim.exchange import FakeExchange, Faults
from helpers_failures import drip_server, serving, snapshot, tcp_server

pytestmark = pytest.mark.shared_data

SYMBOLS = (
    *("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"),
    *("DOGEUSDT", "LTCUSDT", "LINKUSDT", "AVAXUSDT", "DOTUSDT"),
)
SINCE = 1_672_531_200_000  # 2023-01-01
UNTIL = 1_735_689_600_000  # 2025-01-01
SCALE = 60.0  # one exchange minute lasts one real second
H1 = Timeframe.H1


@pytest.fixture(scope="module")
def spot(shared_data_dir: Path) -> dict[str, pd.DataFrame]:
    """Spot 1h candles of 2023-2024 for the ten symbols (17,543 rows each)."""
    out = {}
    for sym in SYMBOLS:
        df = pd.read_parquet(shared_data_dir / f"{sym}_spot_1h.parquet")
        t = df["open_time"]
        out[sym] = df[(t >= SINCE) & (t < UNTIL)].reset_index(drop=True)
    return out


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    forget_shared_limiters()
    yield
    forget_shared_limiters()


def fake_for(frames: dict[str, pd.DataFrame], **kw: object) -> FakeExchange:
    data = {(Market.SPOT, s, H1): f for s, f in frames.items()}
    kw.setdefault("time_scale", SCALE)
    return FakeExchange(data, **kw)  # type: ignore[arg-type]


def client_for(fx: FakeExchange, market: Market = Market.SPOT, **kw: object) -> BinanceClient:
    clock = ScaledClock(SCALE)
    limiter = shared_limiter(f"127.0.0.1:{fx.port}", market, clock=clock)
    limiter.slack_s = 6.0  # 100 ms of real latency at this time scale
    kw.setdefault("backoff_s", 0.5)
    return BinanceClient(market, base_url=fx.url, clock=clock, **kw)  # type: ignore[arg-type]


def spec_for(symbols: list[str], market: Market = Market.SPOT) -> DownloadSpec:
    return DownloadSpec("binance", market, tuple(symbols), H1, SINCE, UNTIL)


async def run(client: BinanceClient, store: CandleStore, spec: DownloadSpec, **kw: int) -> None:
    async with client:
        await client.sync_limits()
        report = await download(client, store, spec, now_ms=int(time.time() * 1000), **kw)
    report.raise_for_errors()


def assert_store_equals(store: CandleStore, frames: dict[str, pd.DataFrame]) -> None:
    for sym, frame in frames.items():
        stored = store.read_candles(DatasetKey("binance", Market.SPOT, sym, H1))
        pd.testing.assert_frame_equal(stored, frame, check_exact=True, obj=sym)


def weight_per_window(fx: FakeExchange) -> Counter[int]:
    per: Counter[int] = Counter()
    for r in fx.requests:
        if r.status == 200:
            per[math.floor(r.t_s / fx.limits.window_s)] += r.weight
    return per


# ---- the big one ---------------------------------------------------------------------


async def test_ten_symbols_two_years_under_the_weight_limit(
    spot: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    store = CandleStore(tmp_path)
    async with fake_for(spot, weight_limit=2400) as fx:
        windows: set[int] = set()

        async def neighbour() -> None:
            """Another process on the same IP: 2,100 weight at the start of every window."""
            while True:
                window = math.floor(fx.now_s() / fx.limits.window_s)
                if window not in windows:
                    windows.add(window)
                    fx.charge_external(2100)
                await asyncio.sleep(0.002)

        other = asyncio.ensure_future(neighbour())
        await asyncio.sleep(0.01)
        client = client_for(fx)
        try:
            await run(client, store, spec_for(SYMBOLS))
        finally:
            other.cancel()
    statuses = Counter(r.status for r in fx.requests)
    assert statuses == {200: len(fx.requests)}  # not a single 429 or 418
    ours = weight_per_window(fx)
    assert max(ours.values()) <= 2400 - 2100
    assert len(ours) >= 2  # our 380 weight did not fit beside the neighbour in one window
    assert client.limiter.stats.waits > 0  # slowed down by the server's weight header
    assert client.limiter.limit() == (2400, 60.0)  # taken from exchangeInfo
    assert_store_equals(store, spot)


# ---- faults, bans, cancellation ------------------------------------------------------


async def test_ten_percent_faults_lose_and_duplicate_nothing(
    spot: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    frames = {s: spot[s] for s in SYMBOLS[:4]}
    faults = Faults(
        p_5xx=0.03, p_timeout=0.01, p_truncated=0.02, p_garbage=0.02, p_drop=0.02, seed=5
    )
    store = CandleStore(tmp_path)
    async with fake_for(frames, faults=faults) as fx:
        client = client_for(fx, page_limit=500, timeout_s=0.5, max_attempts=10)
        await run(client, store, spec_for(list(frames)), chunk_pages=20)
    kinds = Counter(r.fault for r in fx.requests)
    assert {"5xx", "timeout", "truncated", "garbage", "drop"} <= set(kinds)
    failed = sum(n for k, n in kinds.items() if k is not None)
    assert 0.04 < failed / len(fx.requests) < 0.2
    assert_store_equals(store, frames)


async def test_418_stops_every_request_until_the_ban_ends(
    spot: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    frames = {s: spot[s] for s in SYMBOLS[:3]}
    store = CandleStore(tmp_path)
    ban_s = 45.0  # exchange seconds: 0.75 s real
    async with fake_for(frames) as fx:
        ban_at: list[float] = []

        async def ban_mid_download() -> None:
            while sum(r.status == 200 for r in fx.requests) < 20:
                await asyncio.sleep(0.002)
            fx.ban(ban_s)
            ban_at.append(fx.now_s())

        client = client_for(fx, page_limit=500)
        banner = asyncio.ensure_future(ban_mid_download())
        with pytest.raises(IPBanned, match="418"):
            await run(client, store, spec_for(list(frames)), chunk_pages=2)
        await banner
        start, end = ban_at[0], ban_at[0] + ban_s
        sent = len(fx.requests)
        # a new download during the ban fails at once and sends nothing
        with pytest.raises(IPBanned, match="every request is stopped"):
            await run(client_for(fx, page_limit=500), store, spec_for(list(frames)))
        assert len(fx.requests) == sent
        in_ban = [r for r in fx.requests if start <= r.t_s < end]
        assert all(r.status == 418 for r in in_ban)
        assert len(in_ban) <= client.limiter.max_connections  # only those already in flight
        await asyncio.sleep((end - fx.now_s()) / SCALE + 0.05)
        await run(client_for(fx, page_limit=500), store, spec_for(list(frames)), chunk_pages=2)
    after = fx.requests[sent:]
    assert after
    assert min(r.t_s for r in after) >= end
    assert_store_equals(store, frames)


async def test_cancel_mid_download_then_resume(
    spot: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    frames = {s: spot[s] for s in SYMBOLS[:3]}
    store = CandleStore(tmp_path)
    async with fake_for(frames) as fx:
        client = client_for(fx, page_limit=500)
        task = asyncio.ensure_future(run(client, store, spec_for(list(frames)), chunk_pages=2))
        while len(fx.requests) < 25:
            await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not client.is_open  # the HTTP client was closed on the way out
        assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written
        partial = 0
        for sym, frame in frames.items():  # each store holds a clean prefix of the source
            stored = store.read_candles(DatasetKey("binance", Market.SPOT, sym, H1))
            partial += len(stored)
            pd.testing.assert_frame_equal(stored, frame.iloc[: len(stored)])
        assert 0 < partial < sum(len(f) for f in frames.values())
        sent = len(fx.requests)
        await run(client_for(fx, page_limit=500), store, spec_for(list(frames)), chunk_pages=2)
        resumed = [
            int(r.params["startTime"]) for r in fx.requests[sent:] if "startTime" in r.params
        ]
    assert len(resumed) < (sent + len(frames) * 36)  # did not start over from scratch
    assert_store_equals(store, frames)


async def test_perp_candles_and_funding_resume_without_refetching(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    candles = pd.read_parquet(shared_data_dir / "BTCUSDT_perp_1h.parquet")
    funding = pd.read_parquet(shared_data_dir / "BTCUSDT_perp_funding.parquet")
    since, until = parse_utc_ms("2024-01-01", "--since"), UNTIL
    c_src = candles[candles["open_time"] >= since].reset_index(drop=True)
    f_src = funding[funding["funding_time"] >= since].reset_index(drop=True)
    store = CandleStore(tmp_path)
    spec = DownloadSpec("binance", Market.PERP, ("BTCUSDT",), H1, since, until)
    data = {(Market.PERP, "BTCUSDT", H1): candles}
    async with FakeExchange(data, {"BTCUSDT": funding}, time_scale=SCALE) as fx:
        await run(client_for(fx, Market.PERP), store, spec)
        first = len(fx.requests)
        async with client_for(fx, Market.PERP) as client:
            again = await download(client, store, spec, now_ms=int(time.time() * 1000))
    key = DatasetKey("binance", Market.PERP, "BTCUSDT", H1)
    pd.testing.assert_frame_equal(store.read_candles(key), c_src)
    pd.testing.assert_frame_equal(store.read_funding("binance", "BTCUSDT"), f_src)
    assert again.symbols[0].candles_added == 0
    assert again.symbols[0].funding_added == 0
    assert [r.path for r in fx.requests[first:]] == ["/fapi/v1/fundingRate"]


async def test_failed_symbol_leaves_others_stored(
    spot: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    frames = {"BTCUSDT": spot["BTCUSDT"]}
    store = CandleStore(tmp_path)
    async with fake_for(frames) as fx:
        with pytest.raises(ExchangeError, match=r"NOPEUSDT: .*-1121.*1 of 2 symbols failed"):
            await run(client_for(fx), store, spec_for(["BTCUSDT", "NOPEUSDT"]))
    assert_store_equals(store, frames)
    assert store.last_open_time(DatasetKey("binance", Market.SPOT, "NOPEUSDT", H1)) is None


async def test_sequential_baseline_sends_the_same_requests_one_at_a_time(
    spot: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    frames = {s: spot[s] for s in SYMBOLS[:2]}
    async with fake_for(frames, weight_limit=None) as fx:
        await run(client_for(fx), CandleStore(tmp_path / "a"), spec_for(list(frames)))
        together = sorted((r.params["symbol"], r.params["startTime"]) for r in fx.requests[1:])
        sent = len(fx.requests)
        store = CandleStore(tmp_path / "b")
        async with client_for(fx) as client:
            now_ms = int(time.time() * 1000)
            await download(client, store, spec_for(list(frames)), now_ms=now_ms, sequential=True)
    in_a_row = [(r.params["symbol"], r.params["startTime"]) for r in fx.requests[sent:]]
    assert in_a_row == sorted(in_a_row, key=lambda p: (SYMBOLS.index(p[0]), int(p[1])))
    assert sorted(in_a_row) == together
    assert_store_equals(store, frames)


def test_spec_and_argument_parsing() -> None:
    assert parse_utc_ms("2024-01-01", "--since") == 1_704_067_200_000
    assert parse_utc_ms("2024-01-01T01:00+01:00", "--since") == 1_704_067_200_000
    assert parse_utc_ms("1704067200000", "--since") == 1_704_067_200_000
    for bad in ("yesterday", ""):
        with pytest.raises(ConfigError, match="--since"):
            parse_utc_ms(bad, "--since")
    assert split_symbols(" btcusdt, ETHUSDT,") == ("BTCUSDT", "ETHUSDT")
    with pytest.raises(ConfigError, match="--symbols"):
        split_symbols(" , ")
    with pytest.raises(ConfigError, match="no symbols"):
        DownloadSpec("binance", Market.SPOT, (), H1, 0)
    with pytest.raises(ConfigError, match="listed twice"):
        DownloadSpec("binance", Market.SPOT, ("A", "A"), H1, 0)
    with pytest.raises(ConfigError, match="is not before --until"):
        DownloadSpec("binance", Market.SPOT, ("A",), H1, 10, 10)


# ---- the command line ----------------------------------------------------------------


@contextmanager
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    with tcp_server(hold) as url:
        yield url


CLI_SINCE, CLI_UNTIL = "2024-11-01", "2024-12-01"


def cli(url: str, data_dir: Path, *extra: str, symbols: str = "BTCUSDT,ETHUSDT") -> int:
    args = ["data", "download", "--exchange", "binance", "--market", "spot"]
    args += ["--symbols", symbols, "--timeframe", "1h", "--since", CLI_SINCE]
    args += ["--until", CLI_UNTIL, "--base-url", url, "--data-dir", str(data_dir), *extra]
    return main(args)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "Error:" in line or "Banned:" in line]


@pytest.fixture
def cli_store(spot: dict[str, pd.DataFrame], tmp_path: Path) -> Path:
    """A store already holding BTCUSDT and ETHUSDT for November 2024."""
    data_dir = tmp_path / "data"
    with serving(fake_for({s: spot[s] for s in ("BTCUSDT", "ETHUSDT")}, time_scale=1.0)) as fx:
        assert cli(fx.url, data_dir) == 0
    return data_dir


def test_cli_downloads_and_reports(
    tmp_path: Path, spot: dict[str, pd.DataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    cli_store = tmp_path / "data"
    with serving(fake_for({s: spot[s] for s in ("BTCUSDT", "ETHUSDT")}, time_scale=1.0)) as fx:
        assert cli(fx.url, cli_store) == 0
        assert cli(fx.url, cli_store) == 0  # again: nothing new
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "BTCUSDT: ok, 720 candles added",
        "ETHUSDT: ok, 720 candles added",
        "BTCUSDT: ok, 0 candles added",
        "ETHUSDT: ok, 0 candles added",
    ]
    store = CandleStore(cli_store)
    since, until = parse_utc_ms(CLI_SINCE, "s"), parse_utc_ms(CLI_UNTIL, "u")
    for sym in ("BTCUSDT", "ETHUSDT"):
        src = spot[sym]
        want = src[(src["open_time"] >= since) & (src["open_time"] < until)]
        stored = store.read_candles(DatasetKey("binance", Market.SPOT, sym, H1))
        pd.testing.assert_frame_equal(stored, want.reset_index(drop=True))


def test_cli_perp_with_funding(
    shared_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candles = pd.read_parquet(shared_data_dir / "ETHUSDT_perp_1h.parquet")
    funding = pd.read_parquet(shared_data_dir / "ETHUSDT_perp_funding.parquet")
    data = {(Market.PERP, "ETHUSDT", H1): candles}
    with serving(FakeExchange(data, {"ETHUSDT": funding})) as fx:
        args = ["data", "download", "--market", "perp", "--symbols", "ethusdt"]
        args += ["--since", "2024-12-01", "--until", "2025-01-01", "--base-url", fx.url]
        assert main([*args, "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "ETHUSDT: ok, 744 candles added, 93 funding events added\n"
    stored = CandleStore(tmp_path).read_funding("binance", "ETHUSDT")
    assert stored["funding_time"].iloc[0] == parse_utc_ms("2024-12-01", "s")


def test_cli_unknown_symbol(
    cli_store: Path, spot: dict[str, pd.DataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    before = snapshot(cli_store)
    frames = {s: spot[s] for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    with serving(fake_for(frames, time_scale=1.0)) as fx:
        code = cli(fx.url, cli_store, symbols="SOLUSDT,NOPEUSDT,BTCUSDT")
    err = capsys.readouterr().err
    assert code == ExchangeError.exit_code
    (line,) = error_lines(err)
    assert line.startswith("ExchangeError: NOPEUSDT: ")
    assert "-1121: Invalid symbol." in line
    after = snapshot(cli_store)
    assert {k: v for k, v in after.items() if k in before} == before  # others intact
    assert not any("NOPEUSDT" in k for k in after)
    assert any("SOLUSDT" in k for k in after)  # the good new symbol was stored


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--timeframe", "7h"), "ConfigError: unknown timeframe '7h'"),
        (("--until", "2024-10-01"), "ConfigError: --since 2024-11-01 00:00 is not before --until"),
        (("--exchange", "kraken"), "ConfigError: --exchange 'kraken'"),
        (("--since", "soon"), "ConfigError: --since 'soon'"),
        (("--retries", "0"), "ConfigError: --retries"),
    ],
)
def test_cli_bad_arguments(
    cli_store: Path,
    spot: dict[str, pd.DataFrame],
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    message: str,
) -> None:
    capsys.readouterr()
    before = snapshot(cli_store)
    with serving(fake_for({"BTCUSDT": spot["BTCUSDT"]}, time_scale=1.0)) as fx:
        code = cli(fx.url, cli_store, *extra)
    assert code == ConfigError.exit_code
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(message)
    assert snapshot(cli_store) == before
    assert fx.requests == []  # refused before anything was sent


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (Faults(p_garbage=1.0), "body is an HTML page"),
        (Faults(p_truncated=1.0), "body is not valid JSON"),
    ],
)
def test_cli_server_sending_html_or_truncated_json(
    cli_store: Path,
    spot: dict[str, pd.DataFrame],
    capsys: pytest.CaptureFixture[str],
    faults: Faults,
    message: str,
) -> None:
    capsys.readouterr()
    before = snapshot(cli_store)
    frames = {s: spot[s] for s in ("BTCUSDT", "ETHUSDT")}
    fake = fake_for(frames, time_scale=1.0, faults=faults)
    with serving(fake) as fx:
        code = cli(fx.url, cli_store, "--retries", "2", "--until", "2024-12-31")
    assert code == ExchangeError.exit_code
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("TransientExchangeError: ")
    assert message in line
    assert "gave up after 2 attempts" in line
    assert snapshot(cli_store) == before


def test_cli_server_that_never_answers(cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    before = snapshot(cli_store)
    with silent_server() as url:
        started = time.monotonic()
        code = cli(url, cli_store, "--timeout", "0.3", "--retries", "1")
        assert time.monotonic() - started < 5
    assert code == ExchangeError.exit_code
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("TransientExchangeError: ")
    assert "no answer within 0.3 s" in line
    assert snapshot(cli_store) == before


@pytest.mark.parametrize(
    ("extra", "bound_s", "message"),
    [
        (("--timeout", "2", "--retries", "1"), 4.0, "no answer within 2 s (whole-request"),
        (("--timeout", "2", "--deadline", "3"), 6.0, "within the download deadline of 3 s"),
    ],
)
def test_cli_drip_server_fails_within_the_deadline(
    cli_store: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    bound_s: float,
    message: str,
) -> None:
    """One byte a second resets every per-read timeout; the whole-request and download
    deadlines still end the command, with one line and nothing stored."""
    capsys.readouterr()
    before = snapshot(cli_store)
    with drip_server() as url:
        started = time.monotonic()
        code = cli(url, cli_store, *extra)
        elapsed = time.monotonic() - started
    assert elapsed < bound_s, elapsed
    assert code == ExchangeError.exit_code
    captured = capsys.readouterr()
    (line,) = error_lines(captured.err)
    assert line.startswith("TransientExchangeError: ")
    assert message in line
    assert "ok" not in captured.out
    assert snapshot(cli_store) == before


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
@pytest.mark.parametrize("flag", ["--timeout", "--deadline", "--symbol-deadline"])
def test_cli_refuses_non_finite_or_non_positive_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with silent_server() as url:
        code = cli(url, tmp_path / "data", flag, value)
    assert code == ConfigError.exit_code
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"ConfigError: {flag} ")
    assert "expected a finite number of seconds above 0" in line
    assert not (tmp_path / "data").exists()


def test_cli_download_refuses_rows_outside_the_configured_bounds(
    tmp_path: Path,
    spot: dict[str, pd.DataFrame],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[data.bounds]`` reaches the store the download writes: BTCUSDT (above 50,000 in
    November 2024) is refused with the key named and nothing of it stored; ETHUSDT is in
    bounds and stored."""
    for name in [n for n in os.environ if n.upper().startswith("ATRA__")]:
        monkeypatch.delenv(name)
    config = tmp_path / "narrow.toml"
    config.write_text("[data.bounds]\nmax_price = 50000\n")
    data_dir = tmp_path / "data"
    capsys.readouterr()
    with serving(fake_for({s: spot[s] for s in ("BTCUSDT", "ETHUSDT")}, time_scale=1.0)) as fx:
        code = cli(fx.url, data_dir, "--config", str(config))
    assert code == 4  # DataError
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "BTCUSDT: failed, 0 candles added",
        "ETHUSDT: ok, 720 candles added",
    ]
    (line,) = error_lines(captured.err)
    assert line.startswith(
        "DataError: BTCUSDT: binance spot BTCUSDT 1h: row 1 (open_time 2024-11-"
    ), line
    assert (
        "price >= 50000 (implausible; prices must be below data.bounds.max_price = 50000)" in line
    )
    assert line.endswith("(1 of 2 symbols failed; the others are stored)")
    store = CandleStore(data_dir)
    assert not store.candle_path(DatasetKey("binance", Market.SPOT, "BTCUSDT", H1)).exists()
    assert store.count_candles(DatasetKey("binance", Market.SPOT, "ETHUSDT", H1)) == 720
