"""One change to one endpoint (``services.webhooks.sender``), against a loopback receiver that answers as told."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from services.settings import WebhookSettings
from services.webhooks import sender as sender_module
from services.webhooks.parts import parse
from services.webhooks.sender import Gone, Retrying, Sender, client_session
from services.webhooks.store import Delivery, Webhook
from tests.http_support import loopback_server

CHANGE = ("c-1", "vip", b"{}")


class Endpoint:
    """Answers each request with the next of ``answers`` (status, headers), the last one for ever after;
    notes when each request came (monotonic)."""

    def __init__(self, *answers: tuple[int, dict[str, str]], delay_s: float = 0.0) -> None:
        self.answers = list(answers)
        self.delay_s = delay_s  # before each answer
        self.came: list[float] = []
        self.busy = self.most_busy = 0  # requests being answered: now, and at most
        self.lock = threading.Lock()

    @contextmanager
    def serving(self) -> Iterator[Webhook]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with endpoint.lock:
                    endpoint.came.append(time.monotonic())
                    status, headers = endpoint.answers[min(len(endpoint.came), len(endpoint.answers)) - 1]
                    endpoint.busy += 1
                    endpoint.most_busy = max(endpoint.most_busy, endpoint.busy)
                time.sleep(endpoint.delay_s)
                with endpoint.lock:
                    endpoint.busy -= 1
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        with loopback_server(Handler) as port:
            yield Webhook(webhook_id="wh_x", url=f"http://127.0.0.1:{port}/", segments=[], secret="s", created_at_ms=0)


def _settings(**overrides: float) -> WebhookSettings:
    return WebhookSettings(private_targets=True, **overrides)


def _send(settings: WebhookSettings, hook: Webhook, budgets_s: list[float]) -> list[Delivery | Retrying | Gone]:
    """``send`` called once per budget, each call given the state the previous one left, as a part does
    when it reads a cut batch again; the outcomes."""

    async def run() -> list[Delivery | Retrying | Gone]:
        outcomes: list[Delivery | Retrying | Gone] = []
        retrying: Retrying | None = None
        async with client_session(settings) as session:
            sender = Sender(settings, session)
            for budget_s in budgets_s:
                until = time.monotonic() + budget_s
                outcome = await sender.send(
                    hook, CHANGE, until=until, stop=asyncio.Event(), alive=lambda: None, retrying=retrying
                )
                # A copy: the next call goes on with the same state, and changes it.
                outcomes.append(dataclasses.replace(outcome) if isinstance(outcome, Retrying) else outcome)
                retrying = outcome if isinstance(outcome, Retrying) else None
        return outcomes

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_retries_cut_by_the_budget_go_on_where_they_stood() -> None:
    """A budget that ends before the next attempt returns the retries' state; given back, the attempts go on
    counting and the pause is not restarted. A part's batch is so cut without losing or resetting anything
    (aiokafka leaves the group when a batch outlasts max_poll_interval_ms)."""
    endpoint = Endpoint((503, {}), (503, {}), (200, {}))
    with endpoint.serving() as hook:
        outcomes = _send(_settings(backoff_base_s=0.4, backoff_max_s=0.4), hook, [0.0, 0.0, 5.0])
    first, second, third = outcomes
    assert isinstance(first, Retrying)
    assert first.attempts == 1
    assert first.status == 503
    assert isinstance(second, Retrying)
    assert second.attempts == 1, "the pause was not over: no attempt"
    assert isinstance(third, Delivery)
    assert (third.status, third.attempts) == ("delivered", 3)
    assert len(endpoint.came) == 3
    assert endpoint.came[1] - endpoint.came[0] >= 0.2  # the pause (drawn from 0.2–0.4 s) was kept


def test_a_change_is_dead_lettered_after_max_attempts_counted_across_cuts() -> None:
    endpoint = Endpoint((503, {}))
    with endpoint.serving() as hook:
        outcomes = _send(_settings(max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.05), hook, [0.0] * 6 + [5.0])
    last = outcomes[-1]
    assert isinstance(last, Delivery)
    assert (last.status, last.attempts, last.last_status_code, last.last_error) == (
        "dead_lettered",
        3,
        503,
        "HTTP 503",
    )
    assert len(endpoint.came) == 3


def test_retry_after_is_waited_for_up_to_its_limit() -> None:
    """429 with ``Retry-After: 1``: the next attempt waits a second, not the 10 ms backoff; with
    ``retry_after_max_s=0.2``, 0.2 s."""
    for limit_s, least_s, most_s in ((300.0, 1.0, 3.0), (0.2, 0.2, 0.9)):
        endpoint = Endpoint((429, {"Retry-After": "1"}), (200, {}))
        settings = _settings(backoff_base_s=0.01, backoff_max_s=0.01, retry_after_max_s=limit_s)
        with endpoint.serving() as hook:
            (outcome,) = _send(settings, hook, [10.0])
        assert isinstance(outcome, Delivery)
        assert outcome.attempts == 2
        assert least_s <= endpoint.came[1] - endpoint.came[0] < most_s, (limit_s, endpoint.came)


def test_a_stop_between_attempts_ends_the_retries_at_once_and_leaves_the_change_undelivered() -> None:
    """A stop during a pause ends it (the change is neither delivered nor dead-lettered, so not committed,
    and the next deliverer sends it). Before 2026-12-07 a deliverer stopped during such a pause finished the
    change's retry budget first."""
    endpoint = Endpoint((503, {}))
    settings = _settings(max_attempts=5, backoff_base_s=30, backoff_max_s=30)
    with endpoint.serving() as hook:

        async def run() -> tuple[object, float]:
            stop = asyncio.Event()
            async with client_session(settings) as session:
                until = time.monotonic() + 60
                sender = Sender(settings, session)
                sending = asyncio.create_task(sender.send(hook, CHANGE, until=until, stop=stop, alive=lambda: None))
                while not endpoint.came:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                stop.set()
                stopped_at = time.monotonic()
                outcome = await asyncio.wait_for(sending, 5)
                return outcome, time.monotonic() - stopped_at

        outcome, took_s = asyncio.run(run())
    assert isinstance(outcome, Retrying)
    assert outcome.attempts == 1
    assert took_s < 1.0
    assert len(endpoint.came) == 1


def test_a_request_waiting_for_a_connection_is_not_timed_until_it_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six webhooks' changes at once, one request at a time (``max_requests``), each answered in 0.4 s with a
    timeout of 1 s: the last waits 2 s for its turn, and is still delivered at its first attempt. Timed from
    the moment it asked for a connection, as aiohttp's pool does, the later ones timed out; with hundreds of
    webhooks a deliverer dead-lettered changes to an endpoint that answered every request at once."""
    monkeypatch.setattr(sender_module, "_BEAT_S", 0.2)  # the waiting ones beat within the test's seconds
    endpoint = Endpoint((200, {}), delay_s=0.4)
    settings = _settings(max_requests=1, timeout_s=1.0, max_attempts=1)
    beats = [0] * 6
    with endpoint.serving() as hook:

        async def run() -> list[Delivery | Retrying | Gone]:
            async with client_session(settings) as session:
                sender = Sender(settings, session)
                until = time.monotonic() + 30

                def beating(i: int) -> Callable[[], None]:
                    def alive() -> None:
                        beats[i] += 1

                    return alive

                sends = [
                    sender.send(hook, (f"c-{i}", "vip", b"{}"), until=until, stop=asyncio.Event(), alive=beating(i))
                    for i in range(6)
                ]
                return await asyncio.gather(*sends)

        outcomes = asyncio.run(asyncio.wait_for(run(), 30))
    assert [(o.status, o.attempts) for o in outcomes if isinstance(o, Delivery)] == [("delivered", 1)] * 6
    assert len(endpoint.came) == 6
    assert endpoint.most_busy == 1
    assert endpoint.came[-1] - endpoint.came[0] >= 5 * 0.4
    # Each beats once as it is sent; the last ones, queued for over a second, beat while they waited too.
    assert max(beats) >= 4, beats


def test_a_stop_while_waiting_for_a_connection_ends_the_send_without_an_attempt() -> None:
    endpoint = Endpoint((200, {}), delay_s=1.5)
    settings = _settings(max_requests=1)
    with endpoint.serving() as hook:

        async def run() -> tuple[object, object, float]:
            stop = asyncio.Event()
            async with client_session(settings) as session:
                sender = Sender(settings, session)
                until = time.monotonic() + 30
                first = asyncio.create_task(sender.send(hook, CHANGE, until=until, stop=stop, alive=lambda: None))
                while not endpoint.came:
                    await asyncio.sleep(0.01)
                queued = asyncio.create_task(
                    sender.send(hook, ("c-2", "vip", b"{}"), until=until, stop=stop, alive=lambda: None)
                )
                await asyncio.sleep(0.1)
                stop.set()
                stopped_at = time.monotonic()
                outcome = await asyncio.wait_for(queued, 5)
                took_s = time.monotonic() - stopped_at
                return outcome, await asyncio.wait_for(first, 5), took_s

        queued, first, took_s = asyncio.run(run())
    assert isinstance(queued, Retrying)
    assert queued.attempts == 0
    assert took_s <= 1.2
    assert isinstance(first, Delivery)  # the request in flight is answered: a stop does not cut it off
    assert first.status == "delivered"
    assert len(endpoint.came) == 1


def test_records_that_are_not_segment_changes_are_told_apart() -> None:
    body = b'{"change_id":"ch-1","segment":"vip","customer_id":"c"}'
    assert parse(body) == ("ch-1", "vip", body)
    for value in (None, b"", b"not json", b'{"segment":"vip"}', b"[1]"):
        assert parse(value) is None, value


def test_a_pause_longer_than_the_budget_is_waited_until_the_budget_ends_not_returned_at_once() -> None:
    """``Retry-After: 5`` and 0.3 s of budget: ``send`` returns at the budget's end with one attempt made.
    Returning at once (as on 2026-12-07 before this test) made the part fetch, seek back and commit in a busy
    loop until the pause was over."""
    endpoint = Endpoint((503, {"Retry-After": "5"}))
    settings = _settings(backoff_base_s=0.01, backoff_max_s=0.01)
    with endpoint.serving() as hook:
        started = time.monotonic()
        (outcome,) = _send(settings, hook, [0.3])
        took_s = time.monotonic() - started
    assert isinstance(outcome, Retrying)
    assert outcome.attempts == 1
    assert 0.25 <= took_s < 2.0
    assert len(endpoint.came) == 1


def test_a_change_refused_for_good_is_dead_lettered_at_its_first_answer() -> None:
    """A 4xx (other than 408, 425, 429) or a redirect refuses the change itself: dead-lettered after one attempt,
    where before 2026-12-07 it was retried like a 503, ``max_attempts`` times with backoff."""
    for status in (400, 404, 301):
        endpoint = Endpoint((status, {"Location": "http://127.0.0.1:1/"}))
        with endpoint.serving() as hook:
            (outcome,) = _send(_settings(max_attempts=5, backoff_base_s=0.01), hook, [10.0])
        assert isinstance(outcome, Delivery)
        assert (outcome.status, outcome.attempts, outcome.last_status_code, outcome.last_error) == (
            "dead_lettered",
            1,
            status,
            f"HTTP {status}",
        )
        assert len(endpoint.came) == 1


def test_client_errors_about_timing_are_retried() -> None:
    for status in (408, 425, 429):
        endpoint = Endpoint((status, {}), (200, {}))
        with endpoint.serving() as hook:
            (outcome,) = _send(_settings(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.01), hook, [10.0])
        assert isinstance(outcome, Delivery)
        assert (outcome.status, outcome.attempts) == ("delivered", 2), status


def test_an_endpoint_that_answers_gone_is_neither_retried_nor_dead_lettered() -> None:
    endpoint = Endpoint((410, {}))
    with endpoint.serving() as hook:
        (outcome,) = _send(_settings(max_attempts=5, backoff_base_s=0.01), hook, [10.0])
    assert outcome == Gone(CHANGE[0], "HTTP 410")
    assert len(endpoint.came) == 1
