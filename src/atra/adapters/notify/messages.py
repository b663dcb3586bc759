"""One notification and how each destination renders it.

A :class:`Notification` is an event name, a title line, detail lines and the same facts as
JSON fields. Telegram gets HTML (``parse_mode="HTML"``, text escaped), Discord and Slack their
own bold markup in ``content`` / ``text``, the ``json`` webhook format every field. A text
longer than a destination's limit (Telegram 4096, Discord 2000 characters) is cut with a
marker saying how many characters were left out; nothing is cut silently.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

HIGH_PRIORITY: Final[frozenset[str]] = frozenset({"error", "guard", "daily_summary"})
"""Events a full queue never drops to make room for a lower-priority one."""
TELEGRAM_MAX_CHARS: Final[int] = 4096
DISCORD_MAX_CHARS: Final[int] = 2000
SLACK_MAX_CHARS: Final[int] = 40_000


@dataclass(frozen=True, slots=True)
class Notification:
    """What happened (``event``), when (``time_ms``, the bar or the failure), and the text."""

    event: str
    title: str
    time_ms: int
    lines: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def high_priority(self) -> bool:
        return self.event in HIGH_PRIORITY

    @property
    def when(self) -> str:
        """The time as ``2024-01-01 13:00 UTC``."""
        return datetime.fromtimestamp(self.time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")

    def plain(self) -> str:
        """Title, time and detail lines, one a line, no markup."""
        return "\n".join((f"{self.title} ({self.when})", *self.lines))

    def telegram_html(self) -> str:
        """The text for ``parse_mode="HTML"``: the title bold, everything escaped."""
        head = f"<b>{html.escape(self.title, quote=False)}</b> ({self.when})"
        body = (html.escape(line, quote=False) for line in self.lines)
        return fit("\n".join((head, *body)), TELEGRAM_MAX_CHARS)

    def markdown(self, bold: str, limit: int) -> str:
        """Title in ``bold`` markers (``**`` Discord, ``*`` Slack), then the lines."""
        return fit("\n".join((f"{bold}{self.title}{bold} ({self.when})", *self.lines)), limit)

    def as_json(self) -> dict[str, Any]:
        """Every fact, for the ``json`` webhook format."""
        return {
            "event": self.event,
            "time": datetime.fromtimestamp(self.time_ms / 1000, UTC).isoformat(),
            "title": self.title,
            "text": self.plain(),
            "fields": dict(self.fields),
        }


def fit(text: str, limit: int) -> str:
    """``text`` if it fits ``limit`` characters, else cut with a marker of what was cut."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    while True:  # the marker's own length changes how much must go
        marker = f"\n[... {cut} more characters not shown]"
        keep = limit - len(marker)
        if len(text) - keep == cut:
            return text[:keep] + marker
        cut = len(text) - keep
