"""Notifications: Telegram and webhook bodies, the queue that never blocks, rate limits, 429
waits, retries, shutdown, and secrets that never reach a log line or a config file."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from atra.adapters.notify import (
    Notification,
    Notifier,
    TelegramDestination,
    TokenBucket,
    WebhookDestination,
)
from atra.adapters.notify.messages import TELEGRAM_MAX_CHARS, fit
from atra.config import load_config
from atra.errors import ConfigError
from atra.obs import Metrics
from helpers_logging import json_log_lines
from helpers_notify import HOOK_PATH, TOKEN, Recorder, recording_server

T0 = 1_704_067_200_000


def note(event: str = "signal_taken", k: int = 0) -> Notification:
    return Notification(event, f"LONG BTCUSDT <{k}> & co", T0, ("entry 42000",), {"k": k})


def count(metrics: Metrics, destination: str, outcome: str, event: str | None = None) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name != "atra_notifications_total":
                continue
            lab = s.labels
            if (lab["destination"], lab["outcome"]) == (destination, outcome) and (
                event is None or lab["event"] == event
            ):
                total += s.value
    return total


def fast(dests: list, metrics: Metrics, **kw: object) -> Notifier:  # type: ignore[type-arg]
    opts: dict[str, object] = {"rate_per_minute": 6000.0, "burst": 100, "backoff_s": 0.01,
                               "timeout_s": 2.0, "flush_s": 5.0}  # fmt: skip
    opts.update(kw)
    return Notifier(dests, metrics=metrics, **opts)  # type: ignore[arg-type]


def test_telegram_and_webhook_bodies() -> None:
    async def run() -> Recorder:
        async with recording_server() as rec:
            metrics = Metrics()
            dests = [
                TelegramDestination(TOKEN, "-1001", rec.url),
                WebhookDestination(rec.url + "/discord", "discord"),
                WebhookDestination(rec.url + "/slack", "slack"),
                WebhookDestination(rec.url + "/json", "json"),
            ]
            async with fast(dests, metrics) as n:
                n.notify(note())
            assert count(metrics, "telegram", "sent") == 1
            assert count(metrics, "webhook", "sent", "signal_taken") == 3
            return rec

    rec = asyncio.run(run())
    by_path = {r.path: r.body for r in rec.received}
    assert by_path[f"/bot{TOKEN}/sendMessage"] == {
        "chat_id": "-1001",
        "text": "<b>LONG BTCUSDT &lt;0&gt; &amp; co</b> (2024-01-01 00:00 UTC)\nentry 42000",
        "parse_mode": "HTML",
    }
    assert by_path["/discord"] == {
        "content": "**LONG BTCUSDT <0> & co** (2024-01-01 00:00 UTC)\nentry 42000"
    }
    assert by_path["/slack"] == {
        "text": "*LONG BTCUSDT <0> & co* (2024-01-01 00:00 UTC)\nentry 42000"
    }
    assert by_path["/json"]["event"] == "signal_taken"
    assert by_path["/json"]["fields"] == {"k": 0}
    assert by_path["/json"]["time"] == "2024-01-01T00:00:00+00:00"


def test_events_not_configured_are_not_sent() -> None:
    n = Notifier([WebhookDestination("http://127.0.0.1:9/x")], events=("guard",))
    n.notify(note("signal_taken"))
    n.notify(note("guard"))
    assert n.pending == 1


def test_full_queue_drops_the_oldest_low_priority_message() -> None:
    metrics = Metrics()
    n = Notifier([WebhookDestination("http://127.0.0.1:9/x")], queue_size=3, metrics=metrics)
    n.notify(note("signal_taken", 1))
    n.notify(note("error", 2))
    n.notify(note("position_closed", 3))
    n.notify(note("guard", 4))  # full: signal 1 (the oldest low-priority) goes
    (lane,) = n.lanes
    assert [m.fields["k"] for m in lane.queue] == [2, 3, 4]
    n.notify(note("error", 5))  # full: position 3 goes
    assert [m.fields["k"] for m in lane.queue] == [2, 4, 5]
    n.notify(note("signal_taken", 6))  # full of high priority: the new low one goes
    assert [m.fields["k"] for m in lane.queue] == [2, 4, 5]
    n.notify(note("error", 7))  # all high: the oldest goes
    assert [m.fields["k"] for m in lane.queue] == [4, 5, 7]
    assert count(metrics, "webhook", "dropped") == 4
    assert count(metrics, "webhook", "dropped", "signal_taken") == 2


def test_token_bucket_paces_sends() -> None:
    now = [0.0]
    bucket = TokenBucket(30.0, 2, clock=lambda: now[0])  # one every 2 s, two at once
    assert bucket.wait_s() == 0.0
    bucket.tokens -= 2.0
    assert bucket.wait_s() == pytest.approx(2.0)
    now[0] = 1.0
    assert bucket.wait_s() == pytest.approx(1.0)
    now[0] = 100.0
    bucket.wait_s()
    assert bucket.tokens == 2.0  # never more than the burst
    bucket.hold()
    assert bucket.wait_s() == pytest.approx(2.0)


def test_rate_limit_spaces_requests_in_real_time() -> None:
    async def run() -> list[float]:
        async with recording_server() as rec:
            dest = WebhookDestination(rec.url + "/hook")
            async with fast([dest], Metrics(), rate_per_minute=600.0, burst=1) as n:
                for k in range(4):
                    n.notify(note(k=k))
            return [r.at for r in rec.received]

    at = asyncio.run(run())
    assert len(at) == 4
    assert at[-1] - at[0] >= 3 * 0.1 * 0.9  # 10 a second after the first


def test_429_retry_after_is_honoured() -> None:
    async def run() -> tuple[Recorder, Metrics]:
        metrics = Metrics()
        rec = Recorder(script=[
            (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry "
                   "after 1", "parameters": {"retry_after": 1}}, {}),
            (429, {"message": "rate limited", "retry_after": 0.3, "global": False},
             {"Retry-After": "1"}),
        ])  # fmt: skip
        async with recording_server(rec):
            tg = TelegramDestination(TOKEN, "7", rec.url)
            async with fast([tg], metrics) as n:
                n.notify(note())
                n.notify(note(k=1))
        return rec, metrics

    rec, metrics = asyncio.run(run())
    at = [r.at for r in rec.received]
    assert len(at) == 4  # two 429s, then both sent
    assert at[1] - at[0] >= 0.95  # Telegram's parameters.retry_after
    assert at[2] - at[1] >= 0.28  # Discord's retry_after (before the header)
    assert count(metrics, "telegram", "sent") == 2
    assert count(metrics, "telegram", "failed") == 0


def test_429_asking_too_long_fails_and_4xx_is_not_retried() -> None:
    async def run() -> tuple[Recorder, Metrics]:
        metrics = Metrics()
        rec = Recorder(script=[
            (429, {"parameters": {"retry_after": 3600}}, {}),
            (400, {"ok": False, "description": "Bad Request: chat not found"}, {}),
        ])  # fmt: skip
        async with recording_server(rec):
            tg = TelegramDestination(TOKEN, "7", rec.url)
            async with fast([tg], metrics, max_retry_after_s=60.0) as n:
                n.notify(note())
                n.notify(note(k=1))
        return rec, metrics

    rec, metrics = asyncio.run(run())
    assert len(rec.received) == 2
    assert count(metrics, "telegram", "failed") == 2


def test_5xx_and_timeouts_are_retried_with_backoff() -> None:
    async def run() -> tuple[Recorder, Metrics]:
        metrics = Metrics()
        rec = Recorder(script=[(502, {}, {}), (503, {}, {})])
        async with recording_server(rec):
            dest = WebhookDestination(rec.url + "/hook", "slack")
            async with fast([dest], metrics, max_retries=2) as n:
                n.notify(note())
            rec.delay_s = 1.0  # every answer now later than the whole-request timeout
            async with fast([dest], metrics, max_retries=1, timeout_s=0.2) as n:
                n.notify(note(k=1))
        return rec, metrics

    rec, metrics = asyncio.run(run())
    assert len(rec.received) == 3 + 2
    assert count(metrics, "webhook", "sent") == 1
    assert count(metrics, "webhook", "failed") == 1


def test_a_blocked_server_never_blocks_notify_and_shutdown_is_bounded() -> None:
    async def run() -> tuple[float, int, float, Metrics]:
        metrics = Metrics()
        async with recording_server(Recorder(delay_s=5.0)) as rec:
            n = fast([WebhookDestination(rec.url + "/hook")], metrics)
            await n.start()
            t0 = time.perf_counter()
            for k in range(200):
                n.notify(note(k=k))
            took = time.perf_counter() - t0
            await asyncio.sleep(0.2)  # the first send is now waiting on the server
            pending = n.pending
            t1 = time.perf_counter()
            await n.aclose(flush_s=0.3)
            closing = time.perf_counter() - t1
        return took, pending, closing, metrics

    took, pending, closing, metrics = asyncio.run(run())
    assert took < 0.5  # 200 notify() calls queue and return
    assert pending == 200
    assert closing < 2.0  # flushed for 0.3 s, then cancelled
    assert count(metrics, "webhook", "dropped") == 200  # unsent at shutdown, counted


def test_secrets_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        rec = Recorder(script=[
            (429, {"parameters": {"retry_after": 0}}, {}),
            (500, {"description": f"echo {TOKEN}"}, {}),
            (401, {"ok": False, "description": "Unauthorized"}, {}),
        ])  # fmt: skip
        async with recording_server(rec):
            dests = [TelegramDestination(TOKEN, "7", rec.url),
                     WebhookDestination(rec.url + HOOK_PATH)]  # fmt: skip
            async with fast(dests, Metrics(), max_retries=1) as n:
                n.notify(note())
                n.notify(note("error"))
        dead = [TelegramDestination(TOKEN, "7", "http://127.0.0.1:9"),
                WebhookDestination("http://127.0.0.1:9" + HOOK_PATH)]  # fmt: skip
        async with fast(dead, Metrics(), max_retries=1) as n:  # connection refused
            n.notify(note())

    caplog.set_level(logging.DEBUG)
    with json_log_lines("DEBUG") as lines:
        asyncio.run(run())
        structured = lines()
    events = {line["event"] for line in structured}
    assert {"notification_rate_limited", "notification_retry", "notification_failed"} <= events
    text = caplog.text + "\n".join(map(str, structured))
    assert "httpx" in {r.name for r in caplog.records}  # the HTTP library did log its requests
    assert TOKEN not in text
    assert "hook-secret-path" not in text
    assert "telegram@127.0.0.1" in text  # kind and host are what is shown
    assert TOKEN not in repr(TelegramDestination(TOKEN, "7"))


def test_fit_cuts_with_a_marker() -> None:
    text = "x" * 5000
    cut = fit(text, TELEGRAM_MAX_CHARS)
    assert len(cut) == TELEGRAM_MAX_CHARS
    assert cut.endswith(f"[... {5000 - cut.index(chr(10))} more characters not shown]")
    assert fit("short", 10) == "short"


# ---- config ---------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "atra.toml"
    path.write_text(text)
    return path


def test_a_secret_in_the_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[notify]\ndestinations = ["telegram"]\ntelegram_token = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value) == (
        "atra.toml: notify.telegram_token: secrets are read only from the environment "
        "(ATRA__NOTIFY__TELEGRAM_TOKEN); remove it from the file"
    )
    path = write(tmp_path, f'[notify]\nwebhook_url = "https://x.example{HOOK_PATH}"\n')
    with pytest.raises(ConfigError, match=r"^atra.toml: notify.webhook_url: secrets are read"):
        load_config(path, env={})


def test_destinations_need_their_credentials_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[notify]\ndestinations = ["telegram", "webhook"]\n'
                 'telegram_chat_id = "-1001"\nwebhook_format = "slack"\n')  # fmt: skip
    with pytest.raises(ConfigError, match="ATRA__NOTIFY__TELEGRAM_TOKEN in the environment"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="ATRA__NOTIFY__WEBHOOK_URL in the environment"):
        load_config(path, env={"ATRA__NOTIFY__TELEGRAM_TOKEN": TOKEN})
    env = {"ATRA__NOTIFY__TELEGRAM_TOKEN": TOKEN,
           "ATRA__NOTIFY__WEBHOOK_URL": "https://hooks.example" + HOOK_PATH}  # fmt: skip
    cfg = load_config(path, env=env)
    assert cfg.notify.destinations == ("telegram", "webhook")
    assert TOKEN not in repr(cfg)
    assert "hook-secret-path" not in cfg.model_dump_json()
    assert TOKEN in cfg.notify.secret_values()
    notifier = Notifier.from_config(cfg)
    assert notifier is not None
    assert [lane.dest.label for lane in notifier.lanes] == [
        "telegram@api.telegram.org",
        "webhook:slack@hooks.example",
    ]
    assert Notifier.from_config(load_config(None, env={})) is None  # off by default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('events = ["signal_taken", "tweet"]', "notify.events.1: Input should be"),
        ("queue_size = 0", "notify.queue_size: Input should be greater than or equal to 1"),
        ("rate_per_minute = -1", "notify.rate_per_minute: Input should be greater than 0"),
        ('destinations = ["pager"]', "notify.destinations.0: Input should be"),
        ('webhook_format = "teams"', "notify.webhook_format: Input should be"),
    ],
)
def test_bad_notify_keys_are_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"[notify]\n{text}\n"), env={})
    assert str(err.value).startswith(f"atra.toml: {expected}")
    assert "\n" not in str(err.value)


def test_a_malformed_webhook_url_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"ATRA__NOTIFY__WEBHOOK_URL": "ftp://secret-thing"})
    assert "ATRA__NOTIFY__WEBHOOK_URL: notify.webhook_url: expected an http(s):// URL" in str(
        err.value
    )
    assert "secret-thing" not in str(err.value)
