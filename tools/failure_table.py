"""Run ATRA's failure cases and print a table: command -> exit code -> seconds -> first line.

``python tools/failure_table.py [--out FILE]``. Every case runs ``atra`` in a fresh process on
throw-away folders: implausible files aimed at a store that already holds the datasets they
target (times in s / us / ns, before 1970, a timeframe the name contradicts, short CSV rows,
prices and funding rates out of bounds, a corrupt zip), a full disk (``RLIMIT_FSIZE``), a data
dir that is a file, a server dripping one byte a second, journal paths that cannot hold a
journal (a folder, a missing folder, a read-only folder: run without ``CAP_DAC_OVERRIDE`` when
this runs as root, since root writes anywhere) and symbols that are paths. ``tests/integration/
test_cli_failures.py`` runs the same cases and checks each gives one line, a non-zero exit
other than 1 (a traceback's), and leaves every file byte-identical, creating none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from atra.sim.exchange import FakeExchange

SHARED = Path("/work/shared/data")
SAMPLE = "BTCUSDT_spot_1h.parquet"
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
REPLAY = ["live", "--replay", "--from", "2024-01-02", "--to", "2024-01-03", "--no-metrics"]


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]
    fsize_limit: int | None = None
    server: str | None = None
    """``{url}`` in ``args`` is a server: ``"drip"`` drips one byte a second, ``"fake"`` is the
    fake exchange serving BTCUSDT spot 1h candles of the shared sample."""
    obey_permissions: bool = False
    """When this process is root, drop ``CAP_DAC_OVERRIDE`` / ``CAP_DAC_READ_SEARCH`` from the
    command, so folder permissions bind it as they bind any user."""
    may_create: tuple[str, ...] = ()
    """Files the command may leave (relative to the root): the journal of a run that started."""


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    stderr_lines: list[str]
    seconds: float

    @property
    def first_line(self) -> str:
        return self.stderr_lines[0] if self.stderr_lines else ""


def _preexec(case: Case) -> Callable[[], None] | None:
    drop = case.obey_permissions and os.geteuid() == 0
    if case.fsize_limit is None and not drop:
        return None

    def apply() -> None:
        if case.fsize_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize_limit, case.fsize_limit))
        if drop:  # out of the bounding set: the exec'd command never holds them
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
                if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return apply


def run_case(case: Case, cwd: Path) -> Outcome:
    with _server(case.server) as url:
        args = [a.replace("{url}", url) for a in case.args]
        cmd = [sys.executable, "-c", "import sys; from atra.cli import main; sys.exit(main())"]
        started = time.monotonic()
        proc = subprocess.run(  # noqa: S603  (our own CLI, fixed arguments)
            [*cmd, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_preexec(case),
        )
        seconds = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return Outcome(case, proc.returncode, lines, seconds)


# ---- servers: one dripping one byte a second, the fake exchange ---------------------------


@contextlib.contextmanager
def _server(kind: str | None) -> Iterator[str]:
    if kind is None:
        yield ""
        return
    if kind == "fake":
        with _fake_exchange() as url:
            yield url
        return
    with drip_server() as url:
        yield url


@contextlib.contextmanager
def tcp_server(handle: ConnectionHandler) -> Iterator[str]:
    """``handle`` answering every connection to a free port of 127.0.0.1, on its own event loop
    in a thread (the CLI runs its own loop); yields the base URL. On exit the open connections
    are closed and their handlers cancelled."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handle(reader, writer)

    async def start() -> asyncio.Server:
        return await asyncio.start_server(tracked, "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:

        async def close() -> None:
            server.close()
            for writer in writers:
                writer.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            for _ in range(5):
                await asyncio.sleep(0)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def drip_server() -> Iterator[str]:
    """A server that answers 200 and then sends its body one byte a second, for ever."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1000000\r\n\r\n")
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(1.0)

    with tcp_server(drip) as url:
        yield url


@contextlib.contextmanager
def serving(fake: FakeExchange) -> Iterator[FakeExchange]:
    """Run ``fake`` on its own event loop in a thread (the CLI runs its own loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def _fake_exchange() -> Iterator[str]:
    """The fake exchange serving BTCUSDT spot 1h candles of the shared sample."""
    from atra.core.types import Market, Timeframe
    from atra.sim.exchange import FakeExchange

    frame = pd.read_parquet(SHARED / SAMPLE)
    with serving(FakeExchange({(Market.SPOT, "BTCUSDT", Timeframe.H1): frame})) as fake:
        yield fake.url


# ---- inputs -------------------------------------------------------------------------------


def candles(n: int, start: int = T0, step: int = H) -> pd.DataFrame:
    """``n`` plausible bars from ``start``, ``step`` ms apart (prices rise by 1 a bar)."""
    close = 100.0 + np.arange(n, dtype=np.float64)
    return pd.DataFrame(
        {
            "open_time": start + np.arange(n, dtype=np.int64) * step,
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, 2.5),
        }
    )


def funding(n: int, start: int = T0) -> pd.DataFrame:
    """``n`` plausible funding rates from ``start``, 8 h apart."""
    return pd.DataFrame(
        {
            "funding_time": start + np.arange(n, dtype=np.int64) * 8 * H,
            "funding_rate": np.linspace(-1e-4, 3e-4, n),
        }
    )


def _bad_files(d: Path) -> dict[str, Path]:
    """One implausible file per case, each aimed at a dataset the store already holds."""
    d.mkdir()
    out: dict[str, Path] = {}
    times = candles(5).open_time.to_numpy()
    for unit, times_in in (("us", times * 1000), ("ns", times * 1_000_000)):
        sub = d / unit
        sub.mkdir()
        out[unit] = sub / "BTCUSDT_spot_1h.parquet"
        candles(5).assign(open_time=times_in).to_parquet(out[unit], index=False)
    (d / "s").mkdir()
    out["s"] = d / "s" / "BTCUSDT_spot_1h.csv"
    candles(5).assign(open_time=times // 1000).to_csv(out["s"], index=False)
    (d / "pre1970").mkdir()
    out["pre1970"] = d / "pre1970" / "BTCUSDT_spot_1h.parquet"
    candles(5).assign(open_time=-(10 - np.arange(5)) * H).to_parquet(out["pre1970"])
    out["tf"] = d / "BTCUSDT_spot_5m.parquet"
    candles(24).to_parquet(out["tf"], index=False)  # hourly bars in a file named 5m
    out["cols8"] = d / "BTCUSDT-1h-2024-01.csv"
    lines = [
        f"{t},{r.open},{r.high},{r.low},{r.close},{r.volume},{t + H - 1},{r.close},10,1.0,1.0,0"
        for t, r in zip(times, candles(5).itertuples(index=False), strict=True)
    ]
    lines[2] = ",".join(lines[2].split(",")[:8])
    out["cols8"].write_text(KLINE_HEADER + "\n" + "\n".join(lines) + "\n")
    (d / "price").mkdir()
    out["price"] = d / "price" / "BTCUSDT_spot_1h.parquet"
    frame = candles(6)
    frame.loc[3, "high"] = 1e300
    frame.to_parquet(out["price"], index=False)
    out["rate"] = d / "BTCUSDT_perp_funding.parquet"
    rates = funding(4)
    rates.loc[1, "funding_rate"] = 1e9
    rates.to_parquet(out["rate"], index=False)
    (d / "fine").mkdir()
    out["fine"] = d / "fine" / "BTCUSDT_spot_1h.parquet"
    candles(6).to_parquet(out["fine"], index=False)  # fine under the default bounds
    out["zip"] = d / "BTCUSDT-1h-2024-01.zip"
    good = b"1704067200000,1,2,0.5,1.5,3,1704070799999,0,1,0,0,0\n" * 200
    with zipfile.ZipFile(out["zip"], "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BTCUSDT-1h-2024-01.csv", good)
    raw = bytearray(out["zip"].read_bytes())
    start = 30 + len("BTCUSDT-1h-2024-01.csv")
    for i in range(start + 2, start + 40):  # scramble the deflate stream, keep the headers
        raw[i] ^= 0x5A
    out["zip"].write_bytes(bytes(raw))
    return out


def _fill_store(root: Path) -> Path:
    """A store holding the datasets the bad files aim at (so a partial write would show), and
    ETHUSDT 1h holding the first rows of the shared sample (the full-disk import merges the
    whole sample into it)."""
    from atra.adapters.store import CandleStore, DatasetKey
    from atra.core.types import Market, Timeframe

    store = CandleStore(root / "store")
    for tf, step in ((Timeframe.H1, H), (Timeframe.M5, H // 12)):
        key = DatasetKey("binance", Market.SPOT, "BTCUSDT", tf)
        store.write_candles(key, candles(48, start=T0 - 48 * step, step=step))
    store.write_funding("binance", "BTCUSDT", funding(6, start=T0 - 6 * 8 * H))
    if (SHARED / SAMPLE).exists():
        head = pd.read_parquet(SHARED / SAMPLE).head(48)
        store.write_candles(DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.H1), head)
    return store.root


def build_cases(root: Path) -> list[Case]:
    """Create the inputs under ``root`` and return the cases."""
    store = _fill_store(root)
    bad = _bad_files(root / "bad")
    (root / "a_file").write_text("not a folder\n")
    (root / "journal_dir").mkdir()
    ro = root / "read_only"
    ro.mkdir()
    ro.chmod(0o555)
    (root / "flat").mkdir()
    outside = root / "OUTSIDE"
    outside.mkdir()
    candles(100, start=T0 - 50 * H).to_parquet(outside / "X_perp_1h.parquet")
    (root / "narrow.toml").write_text("[data.bounds]\nmax_price = 105.0\n")
    (root / "inf.toml").write_text("[data.bounds]\nmax_price = inf\n")
    src = root / "in"
    src.mkdir()
    if (SHARED / SAMPLE).exists():
        shutil.copy(SHARED / SAMPLE, src / SAMPLE)

    def imp(name: str, path: Path, *extra: str, data_dir: Path = store) -> Case:
        return Case(name, ["data", "import", str(path), "--data-dir", str(data_dir), *extra])

    def download(name: str, *extra: str, server: str | None = None, **kw: object) -> Case:
        args = ["data", "download", "--symbols", "BTCUSDT", "--since", "2024-01-01"]
        return Case(name, [*args, *extra, "--data-dir", str(store)], server=server, **kw)  # type: ignore[arg-type]

    def live(name: str, journal: str, symbols: str = "BTCUSDT", **kw: object) -> Case:
        args = [*REPLAY, "--data", "flat", "--symbols", symbols, "--journal", journal]
        return Case(name, args, **kw)  # type: ignore[arg-type]

    drip = ["--base-url", "{url}", "--timeout", "2"]
    week = [*REPLAY[:5], "2024-01-09", *REPLAY[6:]]
    journal_files = ("full.sqlite", ".full.sqlite.lock", "full.sqlite-wal", "full.sqlite-shm")
    return [
        imp("import, open times in microseconds", bad["us"]),
        imp("import, open times in nanoseconds", bad["ns"]),
        imp("import, open times in seconds (CSV)", bad["s"]),
        imp("import, open times before 1970", bad["pre1970"]),
        imp("import, 1h bars in a file named _5m", bad["tf"]),
        imp("import, Binance CSV row with 8 of 12 columns", bad["cols8"]),
        imp("import, a price of 1e300", bad["price"]),
        imp("import, a funding rate of 1e9", bad["rate"]),
        imp("import, data.bounds.max_price narrowed", bad["fine"], "--config", "narrow.toml"),
        imp("import, data.bounds.max_price = inf", bad["fine"], "--config", "inf.toml"),
        imp("import, corrupt zip without checksum", bad["zip"]),
        Case(
            "import, file-size limit hit (disk full)",
            ["data", "import", str(src / SAMPLE), "--symbol", "ETHUSDT", "--data-dir", str(store)],
            fsize_limit=20_000,
        ),
        imp("import, data dir is a file", src / SAMPLE, data_dir=root / "a_file"),
        Case("list, data dir is a file", ["data", "list", "--data-dir", str(root / "a_file")]),
        Case("list, missing data dir", ["data", "list", "--data-dir", str(root / "missing")]),
        download("download, drip server, --timeout 2 --retries 1", *drip, "--retries", "1",
                 server="drip"),
        download("download, drip server, --timeout 2 --deadline 3", *drip, "--deadline", "3",
                 server="drip"),
        download("download, file-size limit hit (disk full)", "--base-url", "{url}", "--until",
                 "2024-03-01", server="fake", fsize_limit=20_000),
        download("download, --timeout nan", "--timeout", "nan"),
        download("download, --timeout inf", "--timeout", "inf"),
        download("download, unknown timeframe", "--timeframe", "7h"),
        live("live, --journal is a folder", "journal_dir"),
        live("live, --journal in a missing folder", "no_such_dir/j.sqlite"),
        live("live, --journal under a file", "a_file/j.sqlite"),
        live("live, --journal in a read-only folder", "read_only/j.sqlite", obey_permissions=True),
        Case(
            "live, the journal fills the disk mid-run (file-size limit)",
            [*week, "--data", str(SHARED), "--symbols", "BTCUSDT,ETHUSDT", "--journal",
             "full.sqlite"],
            fsize_limit=160_000,
            may_create=journal_files,
        ),
        live("live, --symbols ../OUTSIDE/X", "j.sqlite", symbols="../OUTSIDE/X"),
        live("live, --symbols /etc/passwd", "j.sqlite", symbols="/etc/passwd"),
    ]  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show nothing changed or appeared)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def table(outcomes: list[Outcome]) -> str:
    rows = ["| case | command | exit | s | first line of stderr |", "|---|---|---|---|---|"]
    for o in outcomes:
        cmd = "atra " + " ".join(o.case.args)
        line = o.first_line.replace("|", "\\|")
        rows.append(f"| {o.case.name} | `{cmd}` | {o.code} | {o.seconds:.1f} | {line} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outcomes = [run_case(c, root) for c in build_cases(root)]
        text = table(outcomes).replace(str(root), "$TMP")
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
