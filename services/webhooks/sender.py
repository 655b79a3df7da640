"""One change to one endpoint: signed, POSTed, retried with jittered backoff, dead-lettered when the endpoint
never accepts it within ``webhooks.max_attempts``, or refuses it for good (``retried``: a 4xx other than 408,
425 and 429, or a redirect, which is not followed).

410 Gone is the endpoint saying it no longer exists: the change is neither retried nor dead-lettered, and the
part pauses its webhook (``Gone``) until it is resumed.

Retries wait ``backoff_base_s × 2^(attempt−1)`` (capped at ``backoff_max_s``), drawn from the upper half of
that — jitter, so endpoints recovering from an outage are not hit by every deliverer at once. An answer
with ``Retry-After`` (seconds or an HTTP date; 429 and 503 send it) waits at least that long, up to
``retry_after_max_s``.

A change's retries may outlast its batch's time budget: ``send`` then returns where they stand
(``Retrying``), the batch is cut there, and the change, read again with the next fetch, goes on from that
state: its attempts are counted across the cut and its pause is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from services.settings import WebhookSettings
from services.webhooks.signature import sign
from services.webhooks.store import Delivery, Webhook
from services.webhooks.targets import PublicResolver, literal_refusal
from streams.backoff import Backoff

log = logging.getLogger(__name__)

#: (change id, segment, the record's bytes)
Change = tuple[str, str, bytes]


@dataclass
class Retrying:
    """A change whose retries were interrupted (its batch's budget, or a stop): what the next ``send`` of the
    same change goes on from."""

    change_id: str
    attempts: int  # made so far
    next_at: float  # monotonic time of the next attempt
    status: int | None  # the last attempt's answer
    error: str | None  # None: the last attempt was accepted (2xx)
    pauses: Iterator[float]

    def ended(self, segment: str) -> Delivery:
        """The delivery log's entry: delivered if the last attempt was accepted, dead-lettered otherwise."""
        return Delivery(
            change_id=self.change_id,
            segment=segment,
            status="dead_lettered" if self.error is not None else "delivered",
            attempts=self.attempts,
            last_status_code=self.status,
            last_error=self.error,
            at_ms=int(time.time() * 1000),
        )


@dataclass(frozen=True)
class Gone:
    """The endpoint answered 410 Gone to ``change_id``: the webhook is to be paused, the change sent again when it
    is resumed."""

    change_id: str
    error: str


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer
    error: str | None  # why it failed; None when 2xx
    retry_after_s: float | None = None


class Sender:
    def __init__(self, settings: WebhookSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        # A request starts its timeout once it holds one of these, as many as the session has connections:
        # waiting for aiohttp's pool inside the timeout, a deliverer with hundreds of webhooks timed its own
        # queue, and dead-lettered changes to endpoints that answered at once (``bench.webhooks``).
        self._slots = asyncio.Semaphore(settings.max_requests)

    async def send(
        self,
        hook: Webhook,
        change: Change,
        *,
        until: float,
        stop: asyncio.Event,
        alive: Callable[[], None],
        retrying: Retrying | None = None,
    ) -> Delivery | Retrying | Gone:
        """How ``change``'s delivery to ``hook`` ended, or where its retries stand (having waited until ``until``,
        monotonic) when the next attempt is not due by then, or ``stop`` was set while waiting for it (not
        delivered: the change is sent again), or that the endpoint is gone. ``retrying``: where an earlier call
        left this change; ignored if it was another one. ``alive`` is beaten at every attempt."""
        change_id, segment, body = change
        state = retrying if retrying is not None and retrying.change_id == change_id else None
        if state is None:
            pauses = Backoff(self.settings.backoff_base_s, self.settings.backoff_max_s).pauses()
            state = Retrying(change_id, 0, time.monotonic(), None, None, pauses)
        while True:
            wait_s = min(state.next_at, until) - time.monotonic()
            if wait_s > 0:
                # Up to the budget's end at most: a pause longer than the budget is waited out over several
                # batches, each ending here (not at once, which would fetch and commit in a busy loop).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait_s)
            if stop.is_set() or state.next_at > time.monotonic() or not await self._slot(stop, alive):
                return state
            alive()
            try:
                answer = await self._post(hook, change_id, body)
            finally:
                self._slots.release()
            state.attempts += 1
            state.status, state.error = answer.status, answer.error
            if answer.error is None:
                return state.ended(segment)
            if answer.status == GONE:
                log.warning("webhook %s answered 410 Gone to change %s", hook.webhook_id, change_id)
                return Gone(change_id, answer.error)
            if not retried(answer.status) or state.attempts >= self.settings.max_attempts:
                break
            pause = next(state.pauses)
            if answer.retry_after_s is not None:
                pause = max(pause, min(answer.retry_after_s, self.settings.retry_after_max_s))
            state.next_at = time.monotonic() + pause
        log.warning(
            "dead-lettered change %s for webhook %s after %d attempts (%s)",
            change_id,
            hook.webhook_id,
            state.attempts,
            state.error,
        )
        return state.ended(segment)

    async def _slot(self, stop: asyncio.Event, alive: Callable[[], None]) -> bool:
        """One of the deliverer's request slots taken; False if ``stop`` was set first. ``alive`` is beaten every
        few seconds while waiting: a part queued behind the other webhooks' requests is not hung."""
        if not self._slots.locked():
            return await self._slots.acquire()  # free: taken without waiting
        taking = asyncio.ensure_future(self._slots.acquire())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not taking.done() and not stop.is_set():
                await asyncio.wait({taking, stopping}, timeout=_BEAT_S, return_when=asyncio.FIRST_COMPLETED)
                alive()
        except BaseException:
            if taking.done() and not taking.cancelled():
                self._slots.release()
            taking.cancel()
            raise
        finally:
            stopping.cancel()
        if taking.done():
            return True
        taking.cancel()  # the semaphore passes a slot granted meanwhile on
        return False

    async def _post(self, hook: Webhook, change_id: str, body: bytes) -> Answer:
        """The endpoint's answer, or why there was none."""
        if not self.settings.private_targets:
            host = urlsplit(hook.url).hostname or ""
            refused = literal_refusal(host)
            if refused is not None:
                return Answer(None, refused)
        headers = {
            "Content-Type": "application/json",
            "Rapport-Change-Id": change_id,
            "Rapport-Webhook-Id": hook.webhook_id,
            "Rapport-Signature": sign(hook.secret, body, int(time.time())),
        }
        try:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
            # Not following redirects: a receiver could send the deliverer on to an address it may not reach.
            async with self.session.post(
                hook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return Answer(response.status, None)
                after = retry_after_s(response.headers.get("Retry-After"), time.time())
                return Answer(response.status, f"HTTP {response.status}", after)
        except TimeoutError:
            return Answer(None, f"no answer within {self.settings.timeout_s} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Answer(None, str(exc) or type(exc).__name__)


GONE: Final = 410
#: How often a change waiting for a request slot beats its part's liveness (stale after ``batch_budget_s`` +
#: ``timeout_s`` + 30 s): thousands of waiting changes beating every second kept the event loop busy.
_BEAT_S: Final = 5.0
#: Client errors that say "not now" rather than "not this": a timeout, too early, too many requests.
_CLIENT_ERRORS_RETRIED: Final = frozenset({408, 425, 429})


def retried(status: int | None) -> bool:
    """Whether a failed attempt is tried again: no answer, a server error, or a client error that is about timing.
    Any other 4xx refuses the change itself (its bytes get the same answer every time), and a redirect is not
    followed (a receiver could send the deliverer on to an address it may not reach).

    >>> [retried(s) for s in (None, 500, 502, 503, 408, 425, 429)]
    [True, True, True, True, True, True, True]
    >>> [retried(s) for s in (301, 308, 400, 401, 403, 404, 413, 422)]
    [False, False, False, False, False, False, False, False]
    """
    return status is None or status >= 500 or status in _CLIENT_ERRORS_RETRIED


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: seconds, or an HTTP date); None if absent or
    not understood.

    >>> retry_after_s("120", 0.0), retry_after_s(" 7 ", 0.0)
    (120.0, 7.0)
    >>> retry_after_s("Thu, 01 Jan 1970 00:01:40 GMT", 60.0)
    40.0
    >>> retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", 60.0), retry_after_s("-5", 0.0)
    (0.0, 0.0)
    >>> [retry_after_s(v, 0.0) for v in (None, "", "soon", "1e9999", "nan", "²")]
    [None, None, None, None, None, None]
    """
    text = (value or "").strip()
    if text.isascii() and text.isdigit():
        return float(text)
    if text.isascii() and text.startswith("-") and text[1:].isdigit():
        return 0.0
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def client_session(settings: WebhookSettings) -> aiohttp.ClientSession:
    """The deliverer's HTTP client: it connects only to public addresses unless private targets are allowed
    (``services.webhooks.targets``). Created in a running event loop."""
    resolver = None if settings.private_targets else PublicResolver()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, limit=settings.max_requests))
