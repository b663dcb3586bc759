"""`atra features list` and `atra features lookahead` on a synthetic store, with plug-ins named
in the config: the listing shows their origin, a causal plug-in passes, one that peeks a bar
ahead fails naming it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atra.adapters.store import CandleStore
from atra.cli import main
from atra.core.features.registry import feature_registry, unregister_features
from atra.core.signals.rules import unregister_rules
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.data.demo import stage_data
from atra.errors import DataError

SYMBOLS = ("BTCUSDT", "ETHUSDT")
PLUGIN = '''
import numpy as np
import pandas as pd
import atra


@atra.feature("close_pos_24", family="price", warmup=23)
def close_pos_24(ff):
    """Close within the 24-bar close range."""
    c = pd.Series(ff.close)
    lo, hi = c.rolling(24).min().to_numpy(), c.rolling(24).max().to_numpy()
    return (ff.close - lo) / (hi - lo)


@atra.rule("up_close")
def up_close(bars, _):
    """Long on three rising closes."""
    up = (bars["close"].diff() > 0).astype(int).rolling(3).sum().to_numpy() == 3
    return up.astype(np.int8)
'''
LEAKY = '''
import numpy as np
import atra


@atra.feature("peek_next_close", family="price", warmup=0)
def peek_next_close(ff):
    """The next bar's return (looks one bar ahead)."""
    return np.append(ff.close[1:], np.nan) / ff.close - 1.0
'''


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-features") / "store"
    stage_data(CandleStore(root), config=SyntheticConfig(symbols=SYMBOLS, bars=2500, seed=5))
    return root


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Two plug-in modules on sys.path; what they register is removed afterwards."""
    (tmp_path / "plug_cli_ok.py").write_text(PLUGIN)
    (tmp_path / "plug_cli_leaky.py").write_text(LEAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in ("plug_cli_ok", "plug_cli_leaky"):
        unregister_features(module)
        unregister_rules(module)
        sys.modules.pop(module, None)


def config(root: Path, modules: list[str], rule: str = "up_close") -> Path:
    path = root / f"{'_'.join(modules)}.toml"
    path.write_text(
        f"[plugins]\nmodules = {json.dumps(modules)}\n[strategy]\nrule = {json.dumps(rule)}\n"
    )
    return path


def test_list_shows_every_feature_and_rule_with_its_origin(
    plugins: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(plugins, ["plug_cli_ok"])
    assert main(["features", "list", "--config", str(cfg), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    names = [f["name"] for f in listed["features"]]
    assert names == list(feature_registry())
    mine = next(f for f in listed["features"] if f["name"] == "close_pos_24")
    assert mine == {
        "name": "close_pos_24",
        "family": "price",
        "warmup_bars": 23,
        "inputs": ["candles"],
        "origin": "plug_cli_ok",
        "definition": "Close within the 24-bar close range.",
    }
    assert next(f for f in listed["features"] if f["name"] == "ret_1")["origin"] == "built-in"
    assert listed["rules"][-1] == {
        "name": "up_close", "origin": "plug_cli_ok", "params": [],
        "definition": "Long on three rising closes.",
    }  # fmt: skip
    assert main(["features", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "│ close_pos_24 " in out
    assert "plug_cli_ok" in out
    n = len(feature_registry())
    assert f"{n - 1} built-in, 1 plug-in feature(s);" in out
    assert "up_close (plug_cli_ok)." in out


def test_lookahead_is_green_for_causal_features_and_rule(
    store: Path, plugins: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["features", "lookahead", "--data-dir", str(store), "--exchange", EXCHANGE,
            "--config", str(config(plugins, ["plug_cli_ok"])), "--start", "2022-03-01"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(1 plug-in) and rule up_close on 2 symbol(s)" in out
    assert "No feature and no rule changes when later data is removed." in out
    assert "fg_level (series:fear_greed)" in out  # no series stored: said, not counted


def test_lookahead_names_a_feature_that_peeks_ahead(
    store: Path, plugins: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(plugins, ["plug_cli_ok", "plug_cli_leaky"])
    args = ["features", "lookahead", "--data-dir", str(store), "--exchange", EXCHANGE,
            "--config", str(cfg), "--start", "2022-03-01", "--cuts", "4"]  # fmt: skip
    assert main(args) == DataError.exit_code
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        "DataError: look-ahead: 1 feature(s) / rule change when later data is removed: "
        "peek_next_close (BTCUSDT from 2022-03-01 00:00)"
    )
    assert "│ peek_next_close │ plug_cli_leaky │ BTCUSDT │" in captured.out


def test_lookahead_options_are_checked(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "lookahead", "--data-dir", str(store), "--cuts", "-1"]) == 3
    assert "ConfigError: --cuts must be >= 0, got -1" in capsys.readouterr().err
