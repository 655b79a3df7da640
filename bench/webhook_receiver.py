"""A bare ASGI endpoint for ``bench.webhooks``, run under uvicorn in a process of its own
(``uvicorn bench.webhook_receiver:app``) so that it takes no CPU time from the bench's own process.

A POST is answered 204, after ``delay_ms`` milliseconds if the URL's query gives them (an endpoint that takes
its time), and counted by its ``Rapport-Webhook-Id``; a GET answers the counts so far as
JSON: ``{"requests": total, "webhooks": how many webhooks sent at least one}``."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson

Message = MutableMapping[str, Any]

_counts: Counter[bytes] = Counter()


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["method"] == "POST":
        delay_ms = parse_qs(scope["query_string"].decode()).get("delay_ms")
        if delay_ms:
            await asyncio.sleep(float(delay_ms[0]) / 1000)
        _counts[dict(scope["headers"]).get(b"rapport-webhook-id", b"")] += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = orjson.dumps({"requests": sum(_counts.values()), "webhooks": len(_counts)})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
