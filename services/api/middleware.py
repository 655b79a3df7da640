"""The ASGI middleware of the API: times every request, applies CORS for publishable keys, and answers a
defect with the error body.

Routes are labelled by their template (``/v1/profiles/{profile_id}``), never by the concrete path: ids must
not reach metrics or logs.

A request body larger than ``api.max_batch_bytes`` (the largest any route takes: an events batch) is
answered 413 ``payload_too_large`` here, before a route parses it: a batch route validates its whole body
before counting its ids (a 35 MB list of 3 million ids took 0.33 s to be refused, one request on loopback),
and a publishable key, which anyone can read from a web page, may call the scores batch. A declared
``Content-Length`` is checked at once; a chunked body is read here up to the limit, then handed on.

A defect (an exception no handler of ``services.api.errors`` expects) is answered here as a 500 with code
``internal_error``, so that clients parse one format, and logged with its traceback. Starlette alone
answers it in plain text. Its 500 handler is not used for this: Starlette re-raises after it, uvicorn then
closes the connection, and in a test the client saw a reset connection instead of the body.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import error_response
from services.api.metrics import ApiMetrics

log = logging.getLogger(__name__)

#: Routes a browser may call with a publishable key (CORS preflights are answered for these): sending events,
#: and reading a visitor's scores (``scores:read``), the personalisation a web page asks for.
BROWSER_ROUTES = ("/v1/events", "/v1/events/batch", "/v1/scores/batch")


def is_browser_route(path: str) -> bool:
    """Whether a preflight for ``path`` is answered: a browser route, or one profile's scores.

    >>> [is_browser_route(p) for p in ("/v1/events", "/v1/profiles/a-1/scores", "/v1/profiles/a-1", "/v1/x/y/scores")]
    [True, True, False, False]
    """
    if path in BROWSER_ROUTES:
        return True
    head, _, tail = path.removeprefix("/v1/profiles/").partition("/")
    return path.startswith("/v1/profiles/") and bool(head) and tail == "scores"


_PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"authorization, content-type"),
    (b"access-control-max-age", b"600"),
    (b"vary", b"Origin"),
]


class ApiMiddleware:
    """Times every request, answers CORS preflights, refuses a body over ``max_body_bytes``, and lets a browser
    read responses to publishable keys from allowed origins (the key dependency decides, per request;
    preflights carry no key)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if scope["method"] == "OPTIONS" and origin and b"access-control-request-method" in headers:
            await self._preflight(scope, origin, send)
            return
        started = time.perf_counter()
        status: list[int | None] = [None]  # None until the response starts

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                allowed = scope.get("state", {}).get("cors_origin")
                if allowed is not None:
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"access-control-allow-origin", allowed.encode()),
                        (b"vary", b"Origin"),
                    ]
            await send(message)

        try:
            bounded = await self._bounded(headers, receive)
            if bounded is None:
                limit = self.max_body_bytes
                too_large = error_response(
                    413, "payload_too_large", f"the body exceeds {limit} bytes", {"limit": limit}
                )
                await too_large(scope, receive, send_wrapper)
                return
            await self.app(scope, bounded, send_wrapper)
        except ClientDisconnect:
            raise  # nobody to answer, and not a defect
        except Exception:
            if status[0] is not None:
                raise  # a response under way cannot be taken back
            log.exception("%s %s failed on a defect", scope["method"], _route(scope))
            failed = error_response(500, "internal_error", "the request failed on a defect in Rapport; it is logged")
            await failed(scope, receive, send_wrapper)
        finally:
            self.metrics.latency.labels(_route(scope), scope["method"], str(status[0] or 500)).observe(
                time.perf_counter() - started
            )

    async def _bounded(self, headers: dict[bytes, bytes], receive: Receive) -> Receive | None:
        """``receive``, or one replaying the chunked body read here; None if the body is over the limit."""
        declared = headers.get(b"content-length")
        if declared is not None:
            # The server frames the body by this header: it cannot carry more than it declares.
            return None if declared.isdigit() and int(declared) > self.max_body_bytes else receive
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            return receive  # no body
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client left: the route will see it
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        return replayed

    async def _preflight(self, scope: Scope, origin: bytes, send: Send) -> None:
        allowed = is_browser_route(scope["path"])
        headers = [(b"access-control-allow-origin", origin), *_PREFLIGHT_HEADERS] if allowed else []
        await send({"type": "http.response.start", "status": 204 if allowed else 403, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", "unmatched")
