"""The deliverer's batch across a failure of one webhook's part: against a loopback receiver, with the failure
injected where the deliverer meets Redis (its store), retried as ``rapport deliver`` retries it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler

from redis.exceptions import ConnectionError as RedisConnectionError

from services.settings import Settings, WebhookSettings
from services.webhooks.deliver import Change, Deliverer, client_session
from services.webhooks.store import Delivery, Webhook, WebhookStore
from streams.backoff import Backoff, through_outages
from tests.http_support import loopback_server


class _FlakyLog(WebhookStore):
    """The registrations in memory; the first ``log`` of ``failing`` raises as a Redis blip does."""

    def __init__(self, hooks: list[Webhook], failing: str) -> None:  # no Redis: nothing here reaches one
        self.hooks, self.failing = hooks, failing
        self.logged: dict[str, list[list[str]]] = {}

    async def all(self) -> list[Webhook]:
        return self.hooks

    async def log(self, webhook_id: str, deliveries: list[Delivery]) -> None:
        if webhook_id == self.failing:
            self.failing = ""
            raise RedisConnectionError("injected: Redis went away while logging")
        self.logged.setdefault(webhook_id, []).append([d.change_id for d in deliveries])


def _hook(webhook_id: str, url: str, segment: str) -> Webhook:
    return Webhook(webhook_id=webhook_id, url=url, segments=[segment], secret="whsec_x", created_at_ms=0)


def test_a_failing_webhook_part_stops_the_others_so_each_endpoint_gets_one_sequence_in_order() -> None:
    """Webhook ``fast`` has one change and its log fails once; ``slow`` has 30 changes answered in 20 ms each.
    The batch is delivered again from its start, as ``rapport deliver`` does after an outage. Until
    2026-12-06 the first attempt's ``slow`` part went on meanwhile (``asyncio.gather`` cancels nothing), so
    ``slow``'s endpoint got two interleaved sequences: ``b-0, b-1, b-0, b-2, b-1, …``."""
    arrivals: dict[str, list[str]] = {"/fast": [], "/slow": []}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                arrivals[self.path].append(self.headers["Rapport-Change-Id"])
            if self.path == "/slow":
                time.sleep(0.02)
            # The deliverer may have dropped this request (its part was stopped): nobody to answer.
            with contextlib.suppress(OSError):
                self.send_response(200)
                self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    fast = [(f"a-{i}", "a", b"{}") for i in range(1)]
    slow = [(f"b-{i}", "b", b"{}") for i in range(30)]
    changes: list[Change] = [*fast, *slow]
    with loopback_server(Handler) as port:
        store = _FlakyLog(
            [
                _hook("wh_fast", f"http://127.0.0.1:{port}/fast", "a"),
                _hook("wh_slow", f"http://127.0.0.1:{port}/slow", "b"),
            ],
            failing="wh_fast",
        )
        settings = Settings(_env_file=None, webhooks=WebhookSettings(private_targets=True, timeout_s=5))

        async def run() -> None:
            async with client_session(settings.webhooks) as session:
                deliverer = Deliverer(settings, store, session)
                await through_outages(
                    functools.partial(deliverer.deliver, changes), Backoff(0.05, 0.05), "delivery", alive=lambda: None
                )

        asyncio.run(asyncio.wait_for(run(), 60))

    slow_ids = [c for c, _, _ in slow]
    got = arrivals["/slow"]
    # Each sequence goes in order; a new one may start over from the first change, never join an old one.
    for previous, following in itertools.pairwise(got):
        assert following in (slow_ids[0], slow_ids[slow_ids.index(previous) + 1]), got
    assert got[-len(slow_ids) :] == slow_ids, got
    assert arrivals["/fast"] == ["a-0", "a-0"]
    assert store.logged == {"wh_fast": [["a-0"]], "wh_slow": [slow_ids]}
