"""The CLI shell: exit codes, one-line errors, --debug tracebacks, --version, start-up cost,
one error class for a missing data dir, option defaults from the config."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer

import atra
from atra import __version__
from atra.cli import app, main
from atra.config import MetaConfig
from atra.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[2]
HEAVY = ("lightgbm", "sklearn", "scipy", "numba", "pandas", "talib", "plotly", "httpx",
         "aiohttp", "aiosqlite", "structlog", "prometheus_client", "opentelemetry")  # fmt: skip
COMMANDS = ("data", "demo", "explain", "labels", "live", "report", "signals", "train",
            "walkforward", "walkforward-metrics", "wf-metrics")  # fmt: skip


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"atra {__version__}"


def test_version_is_written_once() -> None:
    """pyproject reads the version from ``atra.__version__``, statically (as setuptools does)."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "atra.__version__"}
    init = Path(atra.__file__)
    assigned = [
        ast.literal_eval(node.value)
        for node in ast.parse(init.read_text()).body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
    ]
    assert assigned == [__version__]
    assert re.fullmatch(r"\d+\.\d+\.\d+([.+-]\w+)*", __version__)


def _in_fresh_interpreter(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter; it leaves a JSON object in ``result``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(result))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_start_up_loads_no_heavy_stack(tmp_path: Path) -> None:
    """`atra --help`, `--version`, a command's help and `data list` load none of the research,
    live or HTTP stacks (LightGBM, scikit-learn, SciPy, numba, pandas, ...)."""
    store = tmp_path / "store" / "binance" / "spot" / "BTCUSDT"
    store.mkdir(parents=True)
    heavy = list(HEAVY)
    code = f"""
from atra.cli import main
codes = [main(args) for args in (["--help"], ["--version"], ["wf-metrics", "--help"],
         ["live", "--help"], ["data", "list", "--data-dir", {str(tmp_path / "store")!r}])]
result = {{"codes": codes, "loaded": [m for m in {heavy!r} if m in sys.modules]}}
"""
    result = _in_fresh_interpreter(code)
    assert result == {"codes": [0, 0, 0, 0, 0], "loaded": []}


def test_the_check_sees_a_heavy_import() -> None:
    """The start-up check can fail: importing the research pipeline is caught."""
    code = f"""
import atra.research.pipeline
result = [m for m in {list(HEAVY)!r} if m in sys.modules]
"""
    loaded = _in_fresh_interpreter(code)
    assert {"lightgbm", "pandas"} <= set(loaded)  # type: ignore[arg-type]


def test_every_command_is_registered() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert set(COMMANDS) <= set(group.commands)


def _help(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*args, "--help"]) == 0
    text = capsys.readouterr().out
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize("command", ["wf-metrics", "walkforward"])
def test_walkforward_defaults_come_from_the_config(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    meta = MetaConfig()
    text = _help([command], capsys)
    assert f"default: from config ({meta.embargo_hours:g})" in text
    assert f"default: from config ({meta.retrain_days})" in text
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    params = {p.name: p.default for p in group.commands[command].params}
    assert params["embargo_hours"] is None  # None: the config's value, resolved at run time
    assert params["retrain_days"] is None


def test_help_constants_match_their_source() -> None:
    from atra.cli.demo import REAL_START_HELP
    from atra.cli.live import WINDOW_BARS_HELP
    from atra.core.features.registry import HISTORY_BARS
    from atra.research.demo import REAL_DEMO_START

    assert REAL_START_HELP == REAL_DEMO_START
    assert WINDOW_BARS_HELP == HISTORY_BARS


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "no-such-command"]) == 2
    assert "no-such-command" in capsys.readouterr().err


def test_atra_error_is_one_line_with_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["data", "check", "--data-dir", str(tmp_path), "--timeframe", "7h"])
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]]
    assert err[0].startswith("ConfigError: unknown timeframe '7h'")


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--debug", "data", "check", "--data-dir", str(tmp_path), "--timeframe", "7h"])
    assert code == 3
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("ConfigError: unknown timeframe")


@pytest.mark.parametrize(
    "args",
    [
        ["data", "list"],
        ["data", "check"],
        ["data", "check", "--symbol", "BTCUSDT"],
        ["data", "resample", "--symbol", "BTCUSDT", "--from", "5m", "--to", "1h"],
        ["labels"],
        ["wf-metrics"],
        ["train"],
        ["signals", "--symbols", "BTCUSDT"],
        ["walkforward"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_missing_data_dir_is_the_same_config_error_everywhere(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-store"
    assert main([*args, "--data-dir", str(missing)]) == ConfigError.exit_code == 3
    err = capsys.readouterr().err
    assert err.startswith(f"ConfigError: data dir {missing} does not exist (--data-dir")
    assert "atra data import" in err  # the hint says what to do
    assert err.count("\n") == 1
    assert not missing.exists()


def test_data_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store.txt"
    path.write_text("not a store")
    assert main(["data", "list", "--data-dir", str(path)]) == 3
    assert capsys.readouterr().err.startswith(f"ConfigError: data dir {path} is not a folder")


def test_live_replay_with_a_missing_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-store"
    monkeypatch.setenv("ATRA__DATA__DATA_DIR", str(missing))
    args = ["live", "--replay", "--from", "2024-01-01", "--to", "2024-01-02", "--no-metrics"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"ConfigError: data dir {missing} does not exist (data.data_dir")
    assert err.count("\n") == 1


def test_live_replay_names_unknown_symbols_and_empty_ranges_as_typed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from atra.adapters.store import CandleStore, DatasetKey
    from atra.core.features.registry import HISTORY_BARS
    from atra.core.synthetic.market import SyntheticConfig, generate_market
    from atra.core.types import Market, Timeframe

    monkeypatch.chdir(tmp_path)
    store = CandleStore(tmp_path / "store")
    market = generate_market(SyntheticConfig(symbols=("BTCUSDT",), bars=200, seed=3))
    store.write_candles(
        DatasetKey("binance", Market.PERP, "BTCUSDT", Timeframe.H1), market.perp["BTCUSDT"]
    )
    monkeypatch.setenv("ATRA__DATA__DATA_DIR", str(store.root))
    args = ["live", "--replay", "--to", "2030-01-02", "--no-metrics", "--from", "2030-01-01"]
    assert main([*args, "--symbols", "BTCUSDT"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(
        f"ConfigError: replay data for BTCUSDT perp 1h in {store.root}: no candles in the "
        f"requested range, --from 2030-01-01 to --to 2030-01-02 UTC with {HISTORY_BARS} "
        "warm-up bars"
    )
    assert not re.search(r"\d{10,}", err)  # never epoch milliseconds
    assert err.count("\n") == 1
    assert main([*args, "--symbols", "BTCUSTD"]) == 3
    assert capsys.readouterr().err == (
        f"ConfigError: replay: no candles for BTCUSTD perp 1h on binance in {store.root}; "
        "did you mean BTCUSDT? (stored: BTCUSDT)\n"
    )


def test_replay_data_file_is_read_in_range_and_a_missing_one_is_named(tmp_path: Path) -> None:
    """``--data`` files: candles opening in [start, end) only; a missing file is one DataError
    naming the path (and what needs it, for a model's side candles)."""
    import pandas as pd

    from atra.cli.replay_data import read_candles_file
    from atra.core.types import Market, Timeframe
    from atra.errors import DataError

    times = [1_704_067_200_000 + i * 3_600_000 for i in range(5)]
    pd.DataFrame({"open_time": times, "close": [1.0, 2.0, 3.0, 4.0, 5.0]}).to_parquet(
        tmp_path / "BTCUSDT_perp_1h.parquet", index=False
    )
    path, frame = read_candles_file(tmp_path, Market.PERP, "BTCUSDT", Timeframe.H1,
                                    times[1], times[4])  # fmt: skip
    assert path == tmp_path / "BTCUSDT_perp_1h.parquet"
    assert frame["open_time"].tolist() == times[1:4]
    assert frame.index.tolist() == [0, 1, 2]
    missing = tmp_path / "ETHUSDT_spot_1h.parquet"
    with pytest.raises(DataError) as plain:
        read_candles_file(tmp_path, Market.SPOT, "ETHUSDT", Timeframe.H1, 0, 1)
    assert str(plain.value) == f"replay data {missing} does not exist"
    with pytest.raises(DataError) as needed:
        read_candles_file(tmp_path, Market.SPOT, "ETHUSDT", Timeframe.H1, 0, 1, "its basis")
    assert str(needed.value) == (
        f"replay data {missing} does not exist; the model needs it for its basis"
    )
