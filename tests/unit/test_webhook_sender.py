"""One change to one endpoint (``services.webhooks.sender``), against a loopback receiver."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler

from services.settings import WebhookSettings
from services.webhooks.parts import parse
from services.webhooks.sender import Sender, client_session
from services.webhooks.store import Webhook
from tests.http_support import loopback_server


def _refusing(answers: list[float]) -> type[BaseHTTPRequestHandler]:
    """A receiver that answers 503, noting when each request came."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                answers.append(time.monotonic())
            self.send_response(503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    return Handler


def test_a_stop_between_attempts_ends_the_retries_at_once_and_leaves_the_change_undelivered() -> None:
    """Retries of a refused change pause for up to ``backoff_max_s``; a stop meanwhile ends them (None: neither
    delivered nor dead-lettered, so not committed, and the next deliverer sends it). Before 2026-12-07 a
    deliverer stopped during such a pause finished the change's retry budget first."""
    answers: list[float] = []
    settings = WebhookSettings(private_targets=True, max_attempts=5, backoff_base_s=30, backoff_max_s=30)
    with loopback_server(_refusing(answers)) as port:
        hook = Webhook(webhook_id="wh_x", url=f"http://127.0.0.1:{port}/", segments=[], secret="s", created_at_ms=0)

        async def run() -> tuple[object, float]:
            stop = asyncio.Event()
            async with client_session(settings) as session:
                sending = asyncio.create_task(Sender(settings, session).send(hook, ("c-1", "vip", b"{}"), stop))
                while not answers:
                    await asyncio.sleep(0.01)
                stop.set()
                stopped_at = time.monotonic()
                outcome = await asyncio.wait_for(sending, 5)
                return outcome, time.monotonic() - stopped_at

        outcome, took_s = asyncio.run(run())
    assert outcome is None
    assert took_s < 1.0
    assert len(answers) == 1


def test_records_that_are_not_segment_changes_are_told_apart() -> None:
    body = b'{"change_id":"ch-1","segment":"vip","customer_id":"c"}'
    assert parse(body) == ("ch-1", "vip", body)
    for value in (None, b"", b"not json", b'{"segment":"vip"}', b"[1]"):
        assert parse(value) is None, value
