"""The configured external series through the commands: ``atra data import-series``, then
``atra train`` and ``atra signals`` with ``--config`` reading them from the store, and
``atra live --replay --compare`` with the trained model, its series coming through their
(faked) live sources: identical to its backtest, and its p(take) equals ``atra signals``'. A
model reading a series the config does not define is refused in one line."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.helpers_logging import quiet_structlog

from atra.adapters.journal.database import Journal
from atra.adapters.store import CandleStore, DatasetKey
from atra.cli import main
from atra.core.features.external import SERIES
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.core.types import Market, Timeframe
from atra.data.demo import stage_data

SYMBOLS = ("BTCUSDT", "ETHUSDT")
DAY = 86_400_000
SERIES_CONFIG = """
[[features.series]]
name = "fear_greed"
source = "fear_greed"
lag_hours = 1.0
max_age_hours = 48.0
family = "alternative"

[[features.series]]
name = "onchain_eth"
source = "coinmetrics"
asset = "eth"
lag_hours = 30.0
max_age_hours = 48.0
family = "fundamental"
applies_to = ["ETH"]
"""
CONFIG = """
[strategy]
params = { fast = 10.0, slow = 30.0 }
[meta]
threshold = 0.5
[meta.lgbm]
n_estimators = 30
num_leaves = 7
min_child_samples = 10
[live]
symbols = ["BTCUSDT", "ETHUSDT"]
market = "spot"
bar_close_delay_s = 0.0
[obs]
log_format = "json"
log_level = "ERROR"
"""


@pytest.fixture(autouse=True)
def _plain(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    with quiet_structlog():
        yield


def _series_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(11)
    t = 1_609_459_200_000 + np.arange(730, dtype=np.int64) * DAY  # 2021-01-01 .. 2022-12-31
    fg = pd.DataFrame({"time": t, "fear_greed": np.round(rng.uniform(5, 95, t.size))})
    fg = fg.drop(index=[500, 501]).reset_index(drop=True)  # two missing days: reported
    eth = pd.DataFrame({"time": t, **{c: rng.uniform(1, 3, t.size) * (1e3 if c != "mvrv" else 1)
                                      for c in SERIES["onchain_eth"].columns}})  # fmt: skip
    out = {"fear_greed": folder / "fear_greed_daily.csv", "onchain_eth": folder / "eth.parquet"}
    fg.to_csv(out["fear_greed"], index=False)
    eth.to_parquet(out["onchain_eth"])
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A store with candles and the two series imported, a config, a model trained on them."""
    root = tmp_path_factory.mktemp("cli-series")
    full = CandleStore(root / "full")
    stage_data(full, config=SyntheticConfig(symbols=SYMBOLS, bars=4000, seed=3))
    store = root / "store"  # spot candles only: the model reads no funding and no basis
    for info in full.datasets():
        if info.key is not None and info.market is Market.SPOT:
            CandleStore(store).write_candles(info.key, full.read_candles(info.key))
    files = _series_files(root)
    assert main(["data", "import-series", str(files["fear_greed"]), "--data-dir", str(store)]) == 0
    assert main(["data", "import-series", str(files["onchain_eth"]), "--name", "onchain_eth",
                 "--data-dir", str(store)]) == 0  # fmt: skip
    config = root / "atra.toml"
    config.write_text(CONFIG + f'[data]\ndata_dir = "{store}"\n' + SERIES_CONFIG)
    return store, config, root


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_signals_and_replay_read_the_configured_series(
    trained: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, config, root = trained
    sel = ["--data-dir", str(store), "--exchange", EXCHANGE, "--config", str(config)]
    code, out, err = _run(["train", *sel, "--start", "2022-01-20", "--end", "2022-04-15",
                           "--out", str(root / "models")], capsys)  # fmt: skip
    assert code == 0, err
    assert "external series: fear_greed (728 days), onchain_eth (730 days)." in out
    assert "no series" not in out  # onchain_eth does not apply to BTC: nothing is "missing"
    model_dir = Path(re.search(r"saved model \w+ to (\S+)", out)[1])  # type: ignore[index]
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["inputs"]["series"] == ["fear_greed", "onchain_eth"]
    assert {"fg_level", "fg_z_30d", "mvrv_eth", "realized_dist_eth"} <= set(meta["feature_names"])

    export = root / "signals.csv"
    code, out, err = _run(["signals", *sel, "--start", "2022-05-01", "--end", "2022-05-09",
                           "--model", str(model_dir), "--export", str(export)], capsys)  # fmt: skip
    assert code == 0, err
    research = pd.read_csv(export)
    assert len(research) > 4, len(research)
    assert research["p_take"].notna().all()

    data = root / "replay"
    data.mkdir()
    for sym in SYMBOLS:
        key = DatasetKey(EXCHANGE, Market.SPOT, sym, Timeframe.H1)
        CandleStore(store).read_candles(key).to_parquet(data / f"{sym}_spot_1h.parquet")
    journal = root / "replay.sqlite"
    args = ["live", "--config", str(config), "--replay", "--from", "2022-05-01", "--to",
            "2022-05-09", "--data", str(data), "--model", str(model_dir), "--journal",
            str(journal), "--no-metrics", "--compare"]  # fmt: skip
    code, out, err = _run(args, capsys)
    assert code == 0, err
    assert re.search(r"result\s*│\s*identical", out)  # --compare: the backtest of the range

    async def read() -> dict[tuple[str, int], float | None]:
        async with Journal.open(journal) as j:
            return {(s.symbol, s.bar_time_ms): s.p_take for s in await j.signals()}

    replayed = asyncio.run(read())
    want = dict(zip(zip(research["symbol"], research["time_ms"], strict=True),
                    research["p_take"], strict=True))  # fmt: skip
    assert set(replayed) == set(want)
    np.testing.assert_allclose([replayed[k] for k in want], list(want.values()), rtol=0,
                               atol=1e-12)  # fmt: skip

    bare = root / "bare.toml"
    bare.write_text(CONFIG + f'[data]\ndata_dir = "{store}"\n')
    args = ["live", "--config", str(bare), "--replay", "--from", "2022-05-01", "--to",
            "2022-05-02", "--data", str(data), "--model", str(model_dir), "--journal",
            str(root / "bare.sqlite"), "--no-metrics"]  # fmt: skip
    code, _, err = _run(args, capsys)
    assert code != 0
    assert err.count("\n") == 1
    assert "ModelError: the model reads the external series fear_greed, onchain_eth, which " in err
    assert "does not define (add a [[features.series]] entry" in err
