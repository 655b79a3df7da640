"""``rapport deliver``: POST every segment change to the webhooks that want it, signed, in order, retried.

Guarantee: at least once per (change, webhook), in the topic's order per customer, each change identified
by ``Rapport-Change-Id`` (receivers de-duplicate on it). The consumer group commits a batch only once every
webhook has either acknowledged (2xx) or dead-lettered each of its changes, so a crash re-sends, never
skips. A change an endpoint refuses ``webhooks.max_attempts`` times is dead-lettered: the delivery log
(``GET /v1/webhooks/{id}/deliveries``) says so and the endpoint moves on to the next change.

Retries wait ``backoff_base_s × 2^(attempt−1)`` (capped at ``backoff_max_s``), drawn from the upper half of
that — jitter, so endpoints recovering from an outage are not hit by every deliverer at once. While one
endpoint retries, the others finish their part of the batch; the next batch waits for the slowest endpoint
(bounded by its retry budget).

Redis or Kafka failing is backpressure: the batch is retried after a pause (the worker's, `stream.retry_*`),
nothing is committed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from profiles.namespaces import Namespaces
from schemas.topics import SEGMENT_CHANGES, full_name
from services.kafka_clients import commit_offsets, stop_consumer
from services.redis_client import make_redis
from services.settings import Settings, WebhookSettings
from services.webhooks.signature import sign
from services.webhooks.store import Delivery, Webhook, WebhookStore
from services.webhooks.targets import PublicResolver, literal_refusal
from streams.backoff import OUTAGES, Backoff, through_outages
from streams.liveness import Liveness

log = logging.getLogger(__name__)

#: (change id, segment, the record's bytes)
Change = tuple[str, str, bytes]


class Deliverer:
    def __init__(
        self, settings: Settings, store: WebhookStore, session: aiohttp.ClientSession, alive: Liveness | None = None
    ) -> None:
        """``alive``: beaten at every attempt, since one batch can take minutes of retries to slow endpoints."""
        self.settings = settings.webhooks
        self.store = store
        self.session = session
        self.alive = alive or Liveness("")

    async def deliver(self, changes: Sequence[Change]) -> None:
        """Every change to every webhook that wants it; returns when each is delivered or dead-lettered.

        A failure in one webhook's part (Redis down while logging) stops the others before it propagates:
        the caller delivers the batch again from its start, and a part left running would send its endpoint
        a second sequence of the same changes, interleaved with the first (order per endpoint lost)."""
        hooks = await self.store.all()
        try:
            async with asyncio.TaskGroup() as parts:
                for hook in hooks:
                    parts.create_task(self._to(hook, [c for c in changes if hook.wants(c[1])]))
        except BaseExceptionGroup as failed:
            outages, others = failed.split(OUTAGES)
            if others is None and outages is not None:
                # through_outages knows an outage by its type, which the group hides; a defect among them
                # propagates as the whole group.
                raise outages.exceptions[0] from None
            raise

    async def _to(self, hook: Webhook, changes: Sequence[Change]) -> None:
        deliveries = [await self._one(hook, change) for change in changes]
        await self.store.log(hook.webhook_id, deliveries)

    async def _one(self, hook: Webhook, change: Change) -> Delivery:
        change_id, segment, body = change
        status: int | None = None
        error: str | None = None
        pauses = Backoff(self.settings.backoff_base_s, self.settings.backoff_max_s).pauses()
        for attempt in range(1, self.settings.max_attempts + 1):
            self.alive()
            status, error = await self._post(hook, change_id, body)
            if status is not None and 200 <= status < 300:
                return Delivery(
                    change_id=change_id,
                    segment=segment,
                    status="delivered",
                    attempts=attempt,
                    last_status_code=status,
                    at_ms=int(time.time() * 1000),
                )
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(next(pauses))
        log.warning("dead-lettered change %s for webhook %s", change_id, hook.webhook_id)
        return Delivery(
            change_id=change_id,
            segment=segment,
            status="dead_lettered",
            attempts=self.settings.max_attempts,
            last_status_code=status,
            last_error=error,
            at_ms=int(time.time() * 1000),
        )

    async def _post(self, hook: Webhook, change_id: str, body: bytes) -> tuple[int | None, str | None]:
        """The endpoint's status code, or None and why there was no answer."""
        if not self.settings.private_targets:
            host = urlsplit(hook.url).hostname or ""
            refused = literal_refusal(host)
            if refused is not None:
                return None, refused
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
                return response.status, None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            return None, f"no answer within {self.settings.timeout_s} s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, str(exc) or type(exc).__name__


def client_session(settings: WebhookSettings) -> aiohttp.ClientSession:
    """The deliverer's HTTP client: it connects only to public addresses unless private targets are allowed
    (``services.webhooks.targets``). Created in a running event loop."""
    resolver = None if settings.private_targets else PublicResolver()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver))


def parse(value: bytes | None) -> Change | None:
    """The change id and segment of a ``segments.changes`` record; None if it is not one."""
    try:
        change = orjson.loads(value or b"")
        return str(change["change_id"]), str(change["segment"]), value or b""
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver until ``stop`` is set, committing what was delivered."""
    prefix = settings.kafka.topic_prefix
    consumer = AIOKafkaConsumer(
        full_name(SEGMENT_CHANGES, prefix),
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-webhooks",
        group_id=settings.webhook_group_of(settings.profile.namespace),
        enable_auto_commit=False,
        auto_offset_reset=settings.webhooks.start_from,
    )
    redis = make_redis(settings)
    await consumer.start()
    try:
        async with client_session(settings.webhooks) as session:
            alive = Liveness(settings.stream.liveness_file)
            backoff = Backoff(settings.stream.retry_initial_s, settings.stream.retry_max_s)
            deliverer = Deliverer(settings, WebhookStore(redis, settings.profile.namespace), session, alive)
            checked = False
            while not stop.is_set():
                alive()
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                if not checked and consumer.assignment():
                    # Asked once the group lists this deliverer: a drop that marks the namespace from now on
                    # sees it (profiles.namespaces.Namespaces.begin_drop). Raises before anything is delivered.
                    refusal = functools.partial(_refuse_a_drop, Namespaces(redis), settings.profile.namespace)
                    await through_outages(refusal, backoff, "checking the namespace", alive=alive, stop=stop)
                    if stop.is_set():
                        break
                    checked = True
                records = [r for _, rs in sorted(batches.items(), key=lambda b: b[0].partition) for r in rs]
                changes = []
                for record in records:
                    change = parse(record.value)
                    if change is None:
                        log.warning("skipping a record that is not a segment change at %s", record.offset)
                    else:
                        changes.append(change)
                await through_outages(
                    functools.partial(
                        _delivered, deliverer, changes, consumer, bool(records), settings.kafka.commit_timeout_s
                    ),
                    backoff,
                    "delivery",
                    alive=alive,
                    stop=stop,  # stopped during an outage: the batch is not committed, so it is sent again
                )
    finally:
        await stop_consumer(consumer)
        await redis.aclose()


async def _refuse_a_drop(namespaces: Namespaces, namespace: str) -> None:
    """``NamespaceStateError`` if ``namespace`` is being dropped with its webhook registrations: not when an API
    configured with it serves another, whose drop keeps them (``rapport namespace drop``)."""
    if await namespaces.serves_another(namespace) is None:
        await namespaces.refuse_writers(namespace)


async def _delivered(
    deliverer: Deliverer, changes: Sequence[Change], consumer: AIOKafkaConsumer, commit: bool, commit_timeout_s: float
) -> None:
    await deliverer.deliver(changes)
    if commit:
        await commit_offsets(consumer, commit_timeout_s)
