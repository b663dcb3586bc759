"""``live.feed``, ``live.stream_wait_s`` and the stream URLs: read from the file and the
environment, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from atra.config import load_config
from atra.errors import ConfigError


def test_feed_defaults_to_rest() -> None:
    cfg = load_config(None, env={})
    assert cfg.live.feed == "rest"
    assert cfg.live.stream_wait_s == 5.0


def test_stream_urls_default_to_binance_and_are_overridable(tmp_path: Path) -> None:
    cfg = load_config(None, env={})
    assert cfg.live.perp_stream_url == "wss://fstream.binance.com"
    assert cfg.live.spot_stream_url == "wss://stream.binance.com:9443"
    env = {"ATRA__LIVE__SPOT_STREAM_URL": "ws://127.0.0.1:9001/spot/"}
    cfg = load_config(None, env=env)
    assert cfg.live.spot_stream_url == "ws://127.0.0.1:9001/spot"


def test_feed_from_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[live]\nfeed = "ws"\nstream_wait_s = 2.5\n')
    cfg = load_config(path, env={})
    assert (cfg.live.feed, cfg.live.stream_wait_s) == ("ws", 2.5)
    cfg = load_config(path, env={"ATRA__LIVE__FEED": "rest"})
    assert cfg.live.feed == "rest"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('feed = "websocket"', "live.feed"),
        ('feed = "ws"\nstream_wait_s = 0', "live.stream_wait_s"),
        (
            'feed = "ws"\nstream_wait_s = 30\ncycle_deadline_s = 30',
            r"stream_wait_s \(30\) must be below cycle_deadline_s",
        ),
        ('perp_stream_url = "https://fstream.binance.com"', "live.perp_stream_url"),
        ('spot_stream_url = "wss://"', "live.spot_stream_url"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[live]\n{body}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, env={})
    assert "c.toml" in str(info.value)
    assert "\n" not in str(info.value)
