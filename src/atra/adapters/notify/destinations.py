"""Where notifications go: the Telegram Bot API and a webhook (Discord, Slack or JSON).

A destination turns a :class:`~atra.adapters.notify.messages.Notification` into one HTTP POST
(URL and JSON body) and reads a 429 answer's wait. Its :attr:`~Destination.url` holds the
secret (the bot token in the path, the webhook's own path) and is only ever handed to the HTTP
client; :attr:`~Destination.label` (kind and host) is what logs and metrics show.

- Telegram: ``POST {api}/bot<token>/sendMessage`` with ``{"chat_id", "text", "parse_mode":
  "HTML"}``; a 429 answers ``{"ok": false, "parameters": {"retry_after": <seconds>}}``.
- Discord: ``{"content": text}``; a 429 answers ``{"retry_after": <seconds>}`` and a
  ``Retry-After`` header. Slack: ``{"text": text}``; a 429 carries ``Retry-After``.
- ``json``: ``{"event", "time", "title", "text", "fields"}`` for any other receiver.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx

from atra.adapters.notify.messages import DISCORD_MAX_CHARS, SLACK_MAX_CHARS, Notification
from atra.config import AtraConfig

WebhookFormat = Literal["discord", "slack", "json"]


class Destination(Protocol):
    """One receiver of notifications."""

    @property
    def kind(self) -> str:
        """``telegram`` or ``webhook`` (the metric's ``destination`` label)."""
        ...

    @property
    def label(self) -> str:
        """Kind and host, safe to log (never the token or the webhook path)."""
        ...

    @property
    def url(self) -> str:
        """The full URL, secret included: for the HTTP client only."""
        ...

    def body(self, note: Notification) -> dict[str, Any]:
        """The JSON body of ``note``."""
        ...


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.hostname or "?"


class TelegramDestination:
    """A Telegram chat through the Bot API's ``sendMessage``."""

    kind = "telegram"

    def __init__(self, token: str, chat_id: str, api_url: str = "https://api.telegram.org"):
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self.chat_id = chat_id
        self.label = f"telegram@{_host(api_url)}"

    @property
    def url(self) -> str:
        return self._url

    def body(self, note: Notification) -> dict[str, Any]:
        return {"chat_id": self.chat_id, "text": note.telegram_html(), "parse_mode": "HTML"}

    def __repr__(self) -> str:  # the token stays out of any repr
        return f"TelegramDestination({self.label})"


class WebhookDestination:
    """A webhook taking Discord-, Slack-compatible or plain JSON bodies."""

    kind = "webhook"

    def __init__(self, url: str, fmt: WebhookFormat = "discord") -> None:
        self._url = url
        self.format: WebhookFormat = fmt
        self.label = f"webhook:{fmt}@{_host(url)}"

    @property
    def url(self) -> str:
        return self._url

    def body(self, note: Notification) -> dict[str, Any]:
        if self.format == "discord":
            return {"content": note.markdown("**", DISCORD_MAX_CHARS)}
        if self.format == "slack":
            return {"text": note.markdown("*", SLACK_MAX_CHARS)}
        return note.as_json()

    def __repr__(self) -> str:  # the URL (a credential) stays out of any repr
        return f"WebhookDestination({self.label})"


def retry_after_s(resp: httpx.Response) -> float | None:
    """The wait a 429 asks for, in seconds: Telegram's ``parameters.retry_after``, Discord's
    ``retry_after`` or the ``Retry-After`` header (seconds); None when it names none."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    candidates: list[object] = []
    if isinstance(data, dict):
        params = data.get("parameters")
        if isinstance(params, dict):
            candidates.append(params.get("retry_after"))
        candidates.append(data.get("retry_after"))
    candidates.append(resp.headers.get("retry-after"))
    for value in candidates:
        if value is None or isinstance(value, bool):
            continue
        try:
            wait = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(wait) and wait >= 0:
            return wait
    return None


def destinations_of(config: AtraConfig) -> list[Destination]:
    """The destinations ``[notify]`` enables (the config validated their credentials)."""
    cfg = config.notify
    out: list[Destination] = []
    for name in cfg.destinations:
        if name == "telegram" and cfg.telegram_token is not None and cfg.telegram_chat_id:
            token = cfg.telegram_token.get_secret_value()
            out.append(TelegramDestination(token, cfg.telegram_chat_id, cfg.telegram_api_url))
        elif name == "webhook" and cfg.webhook_url is not None:
            out.append(WebhookDestination(cfg.webhook_url.get_secret_value(), cfg.webhook_format))
    return out
