"""Notifications to Telegram and to webhooks (Discord / Slack / plain JSON).

:class:`Notifier` owns one bounded queue and one background task per destination:
:meth:`Notifier.notify` never awaits the network (it appends to the queues and returns), each
task sends at most ``rate_per_minute`` messages a minute (a token bucket, ``burst`` at once),
honours a 429's ``retry_after``, retries 5xx answers, timeouts and connection errors with
backoff, and stops on :meth:`Notifier.aclose` after flushing for up to ``flush_s`` seconds.
A full queue drops its OLDEST low-priority message (``error``, ``guard`` and
``daily_summary`` are high priority) and counts it in ``atra_notifications_total{outcome=
"dropped"}``. Secrets (the bot token, the webhook URL) are never logged: log lines carry the
destination kind and host only.

May import: ``atra.obs``, ``atra.config``, ``atra.core``, ``atra.errors``.
"""

from atra.adapters.notify.destinations import (
    Destination,
    TelegramDestination,
    WebhookDestination,
    destinations_of,
)
from atra.adapters.notify.messages import HIGH_PRIORITY, Notification
from atra.adapters.notify.notifier import Notifier, TokenBucket

__all__ = [
    "HIGH_PRIORITY",
    "Destination",
    "Notification",
    "Notifier",
    "TelegramDestination",
    "TokenBucket",
    "WebhookDestination",
    "destinations_of",
]
