"""The example plug-in package (examples/plugins/) end to end on real data, through the CLI in
fresh processes as a user runs it (nothing installed: the package is put on PYTHONPATH and
named in the config's ``[plugins] modules``):

- ``atra walkforward`` runs with its rule and parameters (recorded in the run);
- ``atra train`` saves a model that uses its two features and records the plug-in;
- ``atra live --replay --compare`` with that model: the replay equals the backtest;
- the same model in a process without the plug-in is refused at start, in one line;
- ``atra features lookahead`` passes its features and rule on the real data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atra.adapters.store import CandleStore
from atra.data.ingest import import_files

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins"
ENTRY = "import sys; from atra.cli import main; sys.exit(main(sys.argv[1:]))"
SYMBOLS = "ETHUSDT,LTCUSDT"
RANGE = ["--start", "2023-01-01", "--end", "2024-03-01"]


def atra_cli(
    args: list[str], cwd: Path, *, plugin: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRA")}
    env["PYTHONPATH"] = str(EXAMPLE) if plugin else ""
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def workdir(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugins_example")
    store = CandleStore(root / "store")
    import_files(store, [shared_data_dir / f"{s}_spot_1h.parquet" for s in SYMBOLS.split(",")])
    return root


def test_the_example_plugin_end_to_end(workdir: Path, shared_data_dir: Path) -> None:
    config = str(EXAMPLE / "atra.toml")
    common = ["--config", config, "--data-dir", "store", "--symbols", SYMBOLS, *RANGE]

    wf = atra_cli(["walkforward", *common, "--min-train-days", "120", "--runs-dir", "runs"],
                  workdir)  # fmt: skip
    assert wf.returncode == 0, wf.stderr
    (run_json,) = (workdir / "runs").glob("*/run.json")
    setup = json.loads(run_json.read_text())["setup"]
    assert setup["rule"] == "rsi_breakout"
    assert setup["rule_params"] == {"n": 48, "rsi_min": 55.0, "rsi_n": 14}

    train = atra_cli(["train", *common, "--out", "models"], workdir)
    assert train.returncode == 0, train.stderr
    (meta_json,) = (workdir / "models").glob("*/meta.json")
    meta = json.loads(meta_json.read_text())
    module = "atra_example_plugins.momentum"
    assert meta["plugins"] == {
        "features": {"range_pos_48": module, "up_volume_share_24": module},
        "rule": {"rsi_breakout": module},
    }
    assert {"range_pos_48", "up_volume_share_24"} <= set(meta["feature_names"])
    assert meta["extra"]["signal_spec"]["params"] == {"n": 48, "rsi_min": 55.0, "rsi_n": 14}

    replay = ["live", "--replay", "--config", config, "--model", str(meta_json.parent),
              "--data", str(shared_data_dir), "--symbols", SYMBOLS, "--from", "2024-03-01",
              "--to", "2024-03-08", "--no-metrics"]  # fmt: skip
    done = atra_cli([*replay, "--journal", "replay.sqlite", "--compare"], workdir)
    assert done.returncode == 0, done.stderr
    decisions = next(ln for ln in done.stdout.splitlines() if "decisions compared" in ln)
    assert int(decisions.split("│")[2]) >= 3
    assert "│ result                  │ identical │" in done.stdout

    plain = workdir / "plain.toml"  # the built-in rule, no plug-ins
    plain.write_text('[live]\nmarket = "spot"\n')
    refused = atra_cli([*replay[:2], "--config", str(plain), *replay[4:], "--journal",
                        "other.sqlite"], workdir, plugin=False)  # fmt: skip
    assert refused.returncode == 5
    assert refused.stderr.strip() == (
        f"ModelError: model {meta_json.parent.name} was trained with the feature 'range_pos_48' "
        f"of plug-in {module}, which is not registered (add '{module}' to [plugins] modules "
        "or install its package)"
    )
    missing = atra_cli([*replay, "--journal", "third.sqlite"], workdir, plugin=False)
    assert missing.returncode == 3
    assert missing.stderr.strip() == (
        f"ConfigError: plugins.modules: cannot import plug-in module '{module}': No module "
        "named 'atra_example_plugins' (install its package or put it on PYTHONPATH)"
    )


def test_the_example_plugin_has_no_lookahead_on_real_data(workdir: Path) -> None:
    done = atra_cli(["features", "lookahead", "--config", str(EXAMPLE / "atra.toml"),
                     "--data-dir", "store", "--symbols", SYMBOLS, *RANGE], workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(2 plug-in) and rule rsi_breakout on 2 symbol(s)" in done.stdout
    assert "No feature and no rule changes when later data is removed." in done.stdout
