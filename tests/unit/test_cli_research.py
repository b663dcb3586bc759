"""`atra train / signals / labels / wf-metrics` through ``atra.cli.main`` on real files."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from atra.adapters.store import CandleStore
from atra.cli import main
from atra.cli.console import natural_width, print_wide, when
from atra.cli.research import _metrics_table
from atra.config import MetaConfig
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.data.demo import stage_data
from atra.data.ingest import import_files
from atra.errors import ConfigError, ModelError

SYMBOLS = ("BTCUSDT", "ETHUSDT")
CONFIG = """
[strategy]
rule = "ema_cross"
params = { fast = 10.0, slow = 30.0 }
sl_atr = 1.0
tp1_atr = 1.5
tp2_atr = 3.0
horizon_bars = 24

[meta]
threshold_mode = "fixed"
threshold = 0.5
retrain_days = 30
embargo_hours = 12

[meta.lgbm]
n_estimators = 40
num_leaves = 7
min_child_samples = 10
"""


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output goes to a pipe: keep it plain even where the environment forces colour."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli-research")
    stage_data(
        CandleStore(root / "store"), config=SyntheticConfig(symbols=SYMBOLS, bars=5000, seed=9)
    )
    config = root / "atra.toml"
    config.write_text(CONFIG)
    return root / "store", config


def base_args(demo: tuple[Path, Path]) -> list[str]:
    store, config = demo
    return ["--data-dir", str(store), "--exchange", EXCHANGE, "--config", str(config),
            "--start", "2022-02-01"]  # fmt: skip


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_labels_table(demo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["labels", *base_args(demo)], capsys)
    assert code == 0
    m = re.search(
        r"(\d+) primary signal\(s\) on 2 symbol\(s\) \(synthetic/spot/1h\); "
        r"(\d+) labelled, (\d+) incomplete",
        out,
    )
    assert m is not None
    events, done, incomplete = (int(g) for g in m.groups())
    assert events == done + incomplete
    row = re.search(r"│ all\s+│\s+([\d,]+) │\s+([\d,]+) │\s+([\d,]+) │", out)
    assert row is not None
    assert int(row[1].replace(",", "")) == events
    assert "Triple-barrier labels" in out
    assert "meta+ rate" in out


def test_wf_metrics_per_year(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "wf.json"
    args = ["wf-metrics", *base_args(demo), "--min-train-days", "60", "--min-train-events",
            "60", "--n-jobs", "2", "--json", str(out_json)]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "Walk-forward out-of-sample metrics" in out
    assert re.search(r"│ 2022 │", out)
    assert re.search(r"│ all  │", out)
    data = json.loads(out_json.read_text())
    assert data["folds"] >= 3
    m = re.search(r"(\d+) fold\(s\) every 30 d \(expanding\), embargo 12 h; ([\d,]+) OOS", out)
    assert m is not None
    assert int(m[1]) == data["folds"]
    assert int(m[2].replace(",", "")) == data["oos_events"] == data["metrics"]["all"]["n_events"]
    assert 0.0 <= data["metrics"]["all"]["auc"] <= 1.0
    # the long name is the same command; rolling window, own retrain period
    code, out, err = run(
        [
            "walkforward-metrics",
            *base_args(demo),
            "--min-train-days",
            "60",
            "--min-train-events",
            "40",
            "--train",
            "rolling",
            "--train-days",
            "60",
            "--retrain-days",
            "20",
            "--decay",
            "0.5",
            "--embargo-hours",
            "0",
            "--n-jobs",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert "every 20 d (rolling), embargo 0 h" in out


def test_train_then_signals_with_model(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    code, out, err = run(
        [
            "train",
            *base_args(demo),
            "--out",
            str(models),
            "--walkforward",
            "--n-jobs",
            "2",
            "--min-train-days",
            "60",
            "--min-train-events",
            "60",
        ],
        capsys,
    )
    assert code == 0, err
    saved = re.search(r"saved model ([0-9a-f]{20}) to (\S+)", out)
    assert saved is not None
    model_dir = Path(saved[2])
    assert model_dir.parent == models
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["model_id"] == saved[1]
    assert meta["extra"]["symbols"] == list(SYMBOLS)
    assert "all" in meta["oos_metrics"]
    assert (model_dir / "model.txt").read_text().startswith("tree")

    export = tmp_path / "signals.csv"
    code, out, err = run(
        [
            "signals",
            *base_args(demo),
            "--model",
            str(model_dir),
            "--explain",
            "--last",
            "5",
            "--export",
            str(export),
            "--at",
            "2022-06-30T12:00",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"model {saved[1]}" in out
    taken = re.search(
        r"TAKEN: (\w+) (LONG|SHORT) at .*, p_take ([\d.]+) >= threshold ([\d.]+)", out
    )
    blocked = re.search(
        r"BLOCKED: (\w+) (LONG|SHORT) at .*, p_take ([\d.]+) < threshold ([\d.]+)", out
    )
    assert taken is not None
    assert blocked is not None
    assert float(taken[3]) >= float(taken[4])
    assert float(blocked[3]) < float(blocked[4])
    assert out.count("log-odds") == 6  # three reasons each
    with export.open() as fh:
        rows = list(csv.DictReader(fh))
    summary = re.search(r"([\d,]+) signal\(s\): ([\d,]+) taken, ([\d,]+) blocked", out)
    assert summary is not None
    assert len(rows) == int(summary[1].replace(",", ""))
    assert sum(r["take"] == "True" for r in rows) == int(summary[2].replace(",", ""))
    assert all(r["time_utc"] <= "2022-06-30 12:00" for r in rows)
    for r in rows:
        assert (float(r["p_take"]) >= float(r["threshold"])) == (r["take"] == "True")
        assert r["top_reasons"].count("=") == 3

    # a model trained with another strategy is refused, with its own exit code
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("sl_atr = 1.0", "sl_atr = 2.0"))
    args = base_args(demo)
    args[args.index("--config") + 1] = str(other)
    code, _, err = run(["signals", *args, "--model", str(model_dir)], capsys)
    assert code == ModelError.exit_code
    assert err.startswith("ModelError: model ")


def test_signals_primary_only(demo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["signals", *base_args(demo), "--symbols", "ETHUSDT", "--last", "3"], capsys
    )
    assert code == 0, err
    assert "Primary signals (primary only), newest 3" in out
    assert "BTCUSDT" not in out.split("Primary signals")[1]
    m = re.search(r"([\d,]+) signal\(s\): ([\d,]+) taken, 0 blocked", out)
    assert m is not None
    assert m[1] == m[2]


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["signals", "--explain"], ConfigError),
        (["wf-metrics", "--train", "sideways"], ConfigError),
        (["labels", "--symbols", "DOGEUSDT"], ConfigError),
        (["labels", "--end", "not-a-date"], ConfigError),
    ],
)
def test_errors_are_one_line(
    demo: tuple[Path, Path], capsys: pytest.CaptureFixture[str], extra: list[str], error: type
) -> None:
    code, _, err = run([extra[0], *base_args(demo), *extra[1:]], capsys)
    assert code == error.exit_code
    assert err.startswith(f"{error.__name__}: ")
    assert len(err.strip().splitlines()) == 1


def test_empty_store_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["labels", "--data-dir", str(tmp_path)], capsys)
    assert code == ConfigError.exit_code
    assert err.startswith(
        f"ConfigError: no binance/spot/*/1h candles in the store at {tmp_path} "
        "(the store holds nothing)"
    )


def test_unknown_symbol_names_the_nearest_stored_ones(
    demo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = demo[0]
    code, _, err = run(["labels", *base_args(demo), "--symbols", "ETHUSDT,btcustd"], capsys)
    assert code == ConfigError.exit_code
    assert err == (
        f"ConfigError: no candles for BTCUSTD spot 1h on synthetic in {store}; did you mean "
        "BTCUSDT? (stored: BTCUSDT, ETHUSDT)\n"
    )
    code, _, err = run(["signals", *base_args(demo), "--timeframe", "5m"], capsys)
    assert code == ConfigError.exit_code
    assert err.startswith(f"ConfigError: no synthetic/spot/*/5m candles in the store at {store}")
    assert "(the store holds synthetic/perp/*/1h, synthetic/spot/*/1h)" in err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--start", "2030-01-01"],
            "no candles for BTCUSDT spot 1h on synthetic from 2030-01-01 UTC on in {store} "
            "(stored: {span} UTC)",
        ),
        (
            ["--start", "2010-01-01", "--end", "2011-06-30T12:00"],
            "no candles for BTCUSDT spot 1h on synthetic from 2010-01-01 to 2011-06-30T12:00 "
            "UTC (end exclusive) in {store}",
        ),
        (
            ["--end", "2001-01-01"],
            "no candles for BTCUSDT spot 1h on synthetic before 2001-01-01 UTC in",
        ),
        (
            ["--start", "2022-03-01", "--end", "2022-02-01"],
            "empty range: --end 2022-02-01 is not after --start 2022-03-01 (--end is exclusive)",
        ),
        (
            ["--start", "2022-03-01", "--end", "2022-03-01"],
            "empty range: --end 2022-03-01 is not after --start 2022-03-01",
        ),
        (["--start", "yesterday"], "--start: time 'yesterday': expected an ISO date/time"),
    ],
)
def test_empty_range_shows_the_dates_as_typed(
    demo: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    store, config = demo
    info = next(i for i in CandleStore(store).datasets() if i.name == "synthetic/spot/BTCUSDT/1h")
    span = f"{when(info.first_ms)} .. {when(info.last_ms)}"
    args = ["labels", "--data-dir", str(store), "--exchange", EXCHANGE, "--config", str(config)]
    code, _, err = run([*args, "--symbols", "BTCUSDT", *extra], capsys)
    assert code == ConfigError.exit_code
    assert err.startswith("ConfigError: " + expected.format(store=store, span=span))
    assert not re.search(r"\d{10,}", err)  # never epoch milliseconds
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["wf-metrics", "walkforward"])
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--retrain-days", "0"],
            "--retrain-days must be >= 1 day, got 0 (leave it out for the "
            "config's meta.retrain_days = 30)",
        ),
        (["--retrain-days", "-7"], "--retrain-days must be >= 1 day, got -7"),
        (
            ["--embargo-hours", "-1"],
            "--embargo-hours must be a number >= 0, got -1 (leave it "
            "out for the config's meta.embargo_hours = 12)",
        ),
        (["--embargo-hours", "nan"], "--embargo-hours must be a number >= 0, got nan"),
        (["--min-train-events", "0"], "--min-train-events must be >= 1, got 0"),
    ],
)
def test_walkforward_options_are_checked(
    demo: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    command: str,
    extra: list[str],
    expected: str,
) -> None:
    code, _, err = run([command, *base_args(demo), *extra], capsys)
    assert code == ConfigError.exit_code
    assert err.startswith(f"ConfigError: {expected}")
    assert err.count("\n") == 1


def test_walkforward_embargo_defaults_to_the_config(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --embargo-hours / --retrain-days, `walkforward` uses meta.* of the config: the
    built-in defaults without such keys, the config's values with them (as wf-metrics does)."""
    store, _ = demo
    config = tmp_path / "no-wf-keys.toml"
    config.write_text(CONFIG.replace("retrain_days = 30\nembargo_hours = 12\n", ""))
    meta = MetaConfig()
    for path, expected in ((config, (meta.retrain_days, meta.embargo_hours)), (demo[1], (30, 12))):
        runs = tmp_path / f"runs-{path.stem}"
        args = ["walkforward", "--data-dir", str(store), "--exchange", EXCHANGE, "--config",
                str(path), "--start", "2022-02-01", "--min-train-days", "60",
                "--min-train-events", "60", "--runs-dir", str(runs)]  # fmt: skip
        code, _, err = run(args, capsys)
        assert code == 0, err
        (run_dir,) = runs.iterdir()
        setup = json.loads((run_dir / "run.json").read_text())["setup"]["walkforward"]
        assert (setup["retrain_days"], setup["embargo_hours"]) == expected


def test_terminal_progress_bars(
    demo: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    code, out, err = run(
        ["wf-metrics", *base_args(demo), "--min-train-days", "60", "--min-train-events", "60"],
        capsys,
    )
    assert code == 0, err
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "Walk-forward out-of-sample metrics" in plain


@pytest.mark.shared_data
def test_wf_metrics_on_real_data(
    shared_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [shared_data_dir / f"{s}_{kind}.parquet" for s in SYMBOLS
             for kind in ("spot_1h", "perp_1h", "perp_funding")]  # fmt: skip
    store = CandleStore(tmp_path / "store")
    import_files(store, files, exchange="binance")
    code, out, err = run(
        [
            "wf-metrics",
            "--data-dir",
            str(store.root),
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--start",
            "2023-01-01",
            "--end",
            "2024-01-01",
            "--min-train-days",
            "120",
            "--min-train-events",
            "60",
            "--n-jobs",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    m = re.search(r"(\d+) primary signal\(s\) on 2 symbol\(s\) \(binance/spot/1h\)", out)
    assert m is not None
    assert int(m[1]) > 100
    assert "no funding" not in out  # both symbols have perp + funding stored
    assert re.search(r"│ 2023 │\s+[\d,]+ │\s+0\.\d{3} │\s+0\.\d{3} │", out)
    assert "2024" not in out.split("Walk-forward")[1].split("fold(s)")[0]


def test_train_without_walkforward_and_partial_side_data(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = CandleStore(demo[0])
    store = CandleStore(tmp_path / "store")
    for info in src.datasets():
        if info.symbol == "BTCUSDT" and info.key is None:
            store.write_funding(EXCHANGE, "BTCUSDT", src.read_funding(EXCHANGE, "BTCUSDT"))
        elif info.key is not None and (info.symbol == "BTCUSDT" or info.market.value == "spot"):
            store.write_candles(info.key, src.read_candles(info.key))
    config = tmp_path / "low.toml"
    config.write_text(CONFIG.replace("threshold = 0.5", "threshold = 0.01"))
    args = ["--data-dir", str(store.root), "--exchange", EXCHANGE, "--config", str(config)]
    code, out, err = run(["train", *args, "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert "ETHUSDT: no counterpart, funding data stored: those features are NaN." in out
    assert "Walk-forward" not in out
    model_dir = re.search(r"saved model \w+ to (\S+)", out)
    assert model_dir is not None
    meta = json.loads((Path(model_dir[1]) / "meta.json").read_text())
    assert meta["oos_metrics"] is None
    assert meta["threshold"] == 0.01
    code, out, err = run(["signals", *args, "--model", model_dir[1], "--explain"], capsys)
    assert code == 0, err
    assert "BLOCKED: no such signal in the range." in out
    assert "TAKEN: " in out


def test_metrics_table_is_printed_whole_at_80_columns() -> None:
    metrics = pd.DataFrame(
        {
            "n_events": [12_345.0, 23_456.0],
            "base_rate": [0.4567, 0.5012],
            "auc": [0.5678, float("nan")],
            "n_take": [6_789.0, 7_890.0],
            "take_rate": [0.55, 0.3364],
            "precision": [0.61, 0.58],
            "recall": [0.72, 0.49],
            "mean_net_return": [0.000123, -0.004567],
            "mean_net_return_take": [0.001234, -0.000321],
        },
        index=pd.Index(["2023", "all"], name="year"),
    )
    table = _metrics_table(metrics, "Walk-forward out-of-sample metrics")
    out = io.StringIO()
    console = Console(file=out, width=80, highlight=False)
    assert natural_width(console, table) > 80
    print_wide(console, table)
    text = out.getvalue()
    assert "…" not in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    cells = [c.strip() for c in lines["2023"].strip("│ ").split("│")]
    assert cells == ["2023", "12,345", "0.457", "0.568", "6,789", "0.550", "0.610", "0.720",
                     "0.0001", "0.0012"]  # fmt: skip
    cells = [c.strip() for c in lines["all"].strip("│ ").split("│")]
    assert cells[3] == "-"  # NaN AUC shows as "-", not as a number
    header = next(line for line in text.splitlines() if "┃" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == [
        "year", "n_events", "base_rate", "auc", "n_take", "take_rate", "precision", "recall",
        "ret", "ret_take",
    ]  # fmt: skip
