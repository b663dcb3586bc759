"""A local HTTP server on 127.0.0.1 that records what notifications arrive (acting as the
Telegram Bot API and as a webhook), and answers as each test scripts it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:AAE-test-token-never-logged-x9Zq"  # a test's fake token
HOOK_PATH = "/api/webhooks/42/hook-secret-path-never-logged"


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    at: float


@dataclass
class Recorder:
    """What arrived, and the answers to give: ``script`` is consumed first (status, body,
    headers), then ``delay_s`` and 200."""

    received: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    url: str = ""

    def bodies(self, pred: Callable[[str], bool] = lambda _: True) -> list[dict[str, Any]]:
        return [r.body for r in self.received if pred(r.path)]


@asynccontextmanager
async def recording_server(recorder: Recorder | None = None) -> AsyncIterator[Recorder]:
    rec = recorder or Recorder()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.text() or "{}")
        rec.received.append(Received(request.path, body, time.monotonic()))
        if rec.script:
            status, answer, headers = rec.script.pop(0)
            return web.json_response(answer, status=status, headers=headers)
        if rec.delay_s:
            await asyncio.sleep(rec.delay_s)
        return web.json_response({"ok": True, "result": {}})

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)  # the receiver's own log
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()
