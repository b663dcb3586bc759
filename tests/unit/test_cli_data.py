"""`atra data ...` driven through ``atra.cli.main`` on real files in a temp folder."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from rich.table import Table

from atra.adapters.store import CandleStore, DatasetKey
from atra.cli import main
from atra.cli.console import natural_width, print_wide
from atra.cli.data import check_table
from atra.core.types import Market, Timeframe
from atra.data.ingest import check_datasets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binance"
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000


def make_candles(n: int, start: int = T0, step: int = H) -> pd.DataFrame:
    close = 50.0 + np.arange(n, dtype=np.float64) % 7
    return pd.DataFrame(
        {
            "open_time": start + np.arange(n, dtype=np.int64) * step,
            "open": close - 0.25,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.where(np.arange(n) == 3, 0.0, 1.5),
        }
    )


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output goes to a pipe: keep it plain even where the environment forces colour."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_terminal_output_with_progress_bar(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert main(["data", "import", str(FIXTURES), "--data-dir", str(data_dir)]) == 0
    assert main(["data", "check", "--data-dir", str(data_dir)]) == 0
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out)
    assert "4 file(s) imported, 63 new row(s)." in out
    assert "2 dataset(s) valid." in out


def test_import_check_list(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "import", str(FIXTURES), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "BTCUSDT-1h-2024-01.zip" in out
    assert "binance/spot/BTCUSDT/1h" in out
    assert "4 file(s) imported, 63 new row(s)." in out

    assert main(["data", "check", "--data-dir", str(data_dir), "--symbol", "BTCUSDT"]) == 0
    out = capsys.readouterr().out
    assert "binance/spot/BTCUSDT/1h" in out
    assert "binance/perp/BTCUSDT/funding" in out
    assert "8,736 missing from 2024-01-03 00:00" in out  # the largest gap, in the summary
    assert "..2024-12-31T23:00:00Z" not in out  # gaps one by one only with --verbose
    assert "2 dataset(s) valid." in out
    args = ["data", "check", "--data-dir", str(data_dir), "--symbol", "btcusdt", "--verbose"]
    assert main(args) == 0
    assert "2024-01-03T00:00:00Z..2024-12-31T23:00:00Z (8736 missing)" in capsys.readouterr().out

    assert main(["data", "list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "binance/spot/BTCUSDT/1h" in out
    assert "2025-01-01 05:00" in out
    assert "funding" in out


def test_data_dir_from_environment(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATRA_DATA_DIR", str(data_dir))
    fund = FIXTURES / "BTCUSDT-fundingRate-2024-01.csv"
    assert main(["data", "import", str(fund)]) == 0
    assert (data_dir / "binance" / "perp" / "BTCUSDT" / "funding.parquet").is_file()
    assert main(["data", "check", "--market", "perp"]) == 0
    assert "1 dataset(s) valid." in capsys.readouterr().out


def test_default_data_dir_is_local_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ATRA_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    for command in ("list", "check"):  # no ./data: nothing was checked, so no success
        assert main(["data", command]) == 3
        err = capsys.readouterr().err
        assert err.startswith("ConfigError: data dir data does not exist (--data-dir")
        assert err.count("\n") == 1
    (tmp_path / "data").mkdir()
    assert main(["data", "list"]) == 0
    assert "No datasets in data." in capsys.readouterr().out
    assert main(["data", "check"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("ConfigError: no datasets in the store at data: nothing to check")


def test_import_with_flags_and_gap_report(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dump.parquet"
    frame = make_candles(60)
    frame.drop(index=[10, 11, 12, 40]).to_parquet(path, index=False)
    args = ["data", "import", str(path), "--data-dir", str(data_dir), "--symbol", "SOLUSDT"]
    args += ["--market", "perp", "--timeframe", "1h", "--exchange", "binance"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["data", "check", "--data-dir", str(data_dir), "--timeframe", "1h", "-v"]) == 0
    out = capsys.readouterr().out
    assert "2024-01-01T10:00:00Z..2024-01-01T12:00:00Z (3 missing)" in out
    assert "2024-01-02T16:00:00Z..2024-01-02T16:00:00Z (1 missing)" in out
    assert "zero-volume bars: 2024-01-01T03:00:00Z" in out
    stored = CandleStore(data_dir).read_candles(
        DatasetKey("binance", Market.PERP, "SOLUSDT", Timeframe.H1)
    )
    assert len(stored) == 56


def _row(out: str, dataset: str) -> list[str]:
    """The cells of the table row whose first cell is ``dataset``."""
    line = next(x for x in out.splitlines() if re.match(rf"[│┃] {re.escape(dataset)} ", x))
    return [cell.strip() for cell in re.split(r"[│┃]", line.strip("│┃ "))]


def test_check_prints_a_summary_per_dataset(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = CandleStore(data_dir)
    store.write_candles(  # every other bar: 99 one-bar gaps
        DatasetKey("binance", Market.SPOT, "ADAUSDT", Timeframe.H1), make_candles(200).iloc[::2]
    )
    store.write_candles(  # gaps of 3 and 1 bars: the largest first
        DatasetKey("binance", Market.SPOT, "SOLUSDT", Timeframe.H1),
        make_candles(60).drop(index=[10, 11, 12, 40]),
    )
    store.write_candles(
        DatasetKey("binance", Market.SPOT, "XRPUSDT", Timeframe.H1), make_candles(5)
    )
    assert main(["data", "check", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    heads = ["dataset", "rows", "first (UTC)", "last (UTC)", "gaps", "missing", "largest gap"]
    assert _row(out, "dataset") == [*heads, "zero-vol"]
    assert _row(out, "binance/spot/ADAUSDT/1h") == [
        "binance/spot/ADAUSDT/1h", "100", "2024-01-01 00:00", "2024-01-09 06:00", "99", "99",
        "1 missing from 2024-01-01 01:00", "0",
    ]  # fmt: skip
    assert _row(out, "binance/spot/SOLUSDT/1h")[4:] == [
        "2",
        "4",
        "3 missing from 2024-01-01 10:00",
        "1",
    ]
    assert _row(out, "binance/spot/XRPUSDT/1h")[4:] == ["0", "0", "-", "1"]
    assert "T01:00:00Z" not in out  # no gap listed one by one
    assert len(out.splitlines()) < 15
    assert "atra data check --verbose" in out
    assert "3 dataset(s) valid." in out

    assert main(["data", "check", "--data-dir", str(data_dir), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "binance/spot/ADAUSDT/1h: 99 gap(s), missing (UTC):" in out
    gaps = re.findall(r"^  (\S+)\.\.(\S+) \(1 missing\)$", out, flags=re.M)
    assert len(gaps) == 99 + 1  # every gap of ADAUSDT, and SOLUSDT's one-bar gap
    assert gaps[-2] == ("2024-01-09T05:00:00Z", "2024-01-09T05:00:00Z")


def test_resample(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    five = make_candles(12 * 5 + 4, step=300_000).drop(index=[30]).reset_index(drop=True)
    CandleStore(data_dir).write_candles(
        DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.M5), five
    )
    args = ["data", "resample", "--data-dir", str(data_dir), "--symbol", "ETHUSDT"]
    assert main([*args, "--market", "spot", "--from", "5m", "--to", "1h"]) == 0
    out = capsys.readouterr().out
    assert "4 complete bar(s), 4 new, 4 stored; 2 partial bucket(s) left out" in out
    assert "partial 2024-01-01T02:00:00Z (11/12 bars)" in out
    assert "partial 2024-01-01T05:00:00Z (4/12 bars)" in out
    hours = CandleStore(data_dir).read_candles(
        DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.H1)
    )
    assert hours["open_time"].tolist() == [T0, T0 + H, T0 + 3 * H, T0 + 4 * H]


def test_resample_lists_many_partials_briefly(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    five = make_candles(12 * 60, step=300_000).iloc[::2].reset_index(drop=True)
    CandleStore(data_dir).write_candles(
        DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.M5), five
    )
    args = ["data", "resample", "--data-dir", str(data_dir), "--symbol", "ETHUSDT"]
    assert main([*args, "--from", "5m", "--to", "1h"]) == 0
    out = capsys.readouterr().out
    assert "60 partial bucket(s)" in out
    assert "... and 10 more" in out


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["data", "check", "--symbol", "DOGEUSDT"], 3, "ConfigError: symbol DOGEUSDT is not in"),
        (
            ["data", "check", "--symbol", "BTCUSTD"],
            3,
            "ConfigError: symbol BTCUSTD is not in the store at {dir}; did you mean BTCUSDT? "
            "(stored: BTCUSDT)",
        ),
        (
            ["data", "resample", "--symbol", "XRPUSDT", "--from", "5m", "--to", "1h"],
            3,
            "ConfigError: symbol XRPUSDT is not in the store",
        ),
        (
            ["data", "resample", "--symbol", "BTCUSDT", "--from", "5m", "--to", "1h"],
            3,
            "ConfigError: cannot resample: no candles for BTCUSDT spot 5m on binance in {dir}; "
            "BTCUSDT is stored as binance/spot/BTCUSDT/1h (no binance spot 5m candles stored; "
            "the store holds binance/spot/*/1h)",
        ),
        (
            ["data", "resample", "--symbol", "BTCUSDT", "--from", "1h", "--to", "5m"],
            3,
            "ConfigError: cannot resample 1h to 5m",
        ),
        (["data", "check", "--market", "options"], 3, "ConfigError: unknown market"),
        (["data", "check", "--timeframe", "7m"], 3, "ConfigError: unknown timeframe"),
    ],
)
def test_errors_are_one_line_with_exit_code(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    expected: str,
) -> None:
    assert main(["data", "import", str(FIXTURES), "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    assert main([*args, "--data-dir", str(data_dir)]) == code
    err = capsys.readouterr().err
    assert err.startswith(expected.format(dir=data_dir))
    assert err.count("\n") == 1


def test_bad_import_leaves_store_and_prints_one_line(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "import", str(FIXTURES), "--data-dir", str(data_dir)]) == 0
    before = {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
    bad = tmp_path / "BTCUSDT-1h-2024-01.zip"
    shutil.copy(FIXTURES / bad.name, bad)
    bad.with_name(bad.name + ".CHECKSUM").write_text("0" * 64 + "  " + bad.name + "\n")
    capsys.readouterr()
    assert main(["data", "import", str(bad), "--data-dir", str(data_dir)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("DataError: ")
    assert "BTCUSDT-1h-2024-01.zip: sha256 checksum mismatch" in err
    assert err.count("\n") == 1
    assert {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()} == before


def test_tables_are_never_cut_at_80_columns(data_dir: Path) -> None:
    """A console that is not a terminal is 80 columns wide; the table prints at its own width,
    every header and value whole."""
    long_symbol = "VERYLONGNAMEDTOKENUSDT"
    CandleStore(data_dir).write_candles(
        DatasetKey("binance", Market.PERP, long_symbol, Timeframe.H1),
        make_candles(60).drop(index=[10, 11, 12, 40]),
    )
    checks = check_datasets(CandleStore(data_dir))
    table = check_table(checks, "Datasets")
    out = io.StringIO()
    console = Console(file=out, width=80, highlight=False)
    assert not console.is_terminal
    assert natural_width(console, table) > 80  # else the test would prove nothing
    print_wide(console, table)
    text = out.getvalue()
    assert "…" not in text
    row = _row(text, f"binance/perp/{long_symbol}/1h")
    assert row == [
        f"binance/perp/{long_symbol}/1h", "56", "2024-01-01 00:00", "2024-01-03 11:00", "2", "4",
        "3 missing from 2024-01-01 10:00", "1",
    ]  # fmt: skip
    heads = ["dataset", "rows", "first (UTC)", "last (UTC)", "gaps", "missing", "largest gap"]
    assert _row(text, "dataset") == [*heads, "zero-vol"]


def test_narrow_tables_print_as_usual() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, highlight=False)
    table = Table(title="Small")
    table.add_column("a")
    table.add_column("b")
    table.add_row("1", "2")
    print_wide(console, table)
    plain = io.StringIO()
    Console(file=plain, width=80, highlight=False).print(table)
    assert out.getvalue() == plain.getvalue()
