"""``rapport deliver``: POST every segment change to the webhooks that want it, signed, in order, retried.

Guarantee: at least once per (change, webhook), in the topic's order per customer, each change identified
by ``Rapport-Change-Id`` (receivers de-duplicate on it). Each webhook has its own consumer group and its own
part in this process (``services.webhooks.parts``): an endpoint that is down holds back only its own
deliveries. A change an endpoint refuses ``webhooks.max_attempts`` times, or refuses for good (a 4xx other than
408, 425 and 429), is dead-lettered for it: the delivery log (``GET /v1/webhooks/{id}/deliveries``) says so
and that webhook moves on.

The registrations are read again every ``webhooks.refresh_s``: a new or resumed webhook's part starts, a removed
or paused one's stops (a part that is cancelled in the middle of a batch has committed none of it: that batch is
sent again when the webhook is resumed). A change that an endpoint answers 410 Gone pauses its webhook.

The liveness file is touched while every part goes round: a part hung for longer than its batch
budget and request timeout allow stops the beats, and the probe restarts the process. Redis or Kafka
failing is backpressure: the part concerned pauses and retries (``stream.retry_*``), nothing is committed
meanwhile. A part failing otherwise (its namespace is being dropped, a defect) stops every other and the
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from kafka.errors import KafkaError as SyncKafkaError

from profiles.namespaces import Namespaces
from services.kafka_clients import make_admin
from services.redis_client import make_redis
from services.settings import Settings
from services.webhooks.parts import Shared, WebhookPart
from services.webhooks.sender import Sender, client_session
from services.webhooks.starts import shared_group_offsets
from services.webhooks.store import Pause, Webhook, WebhookStore
from streams.backoff import OUTAGES, Backoff, through_outages
from streams.liveness import Liveness

log = logging.getLogger(__name__)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Deliver until ``stop`` is set."""
    namespace = settings.profile.namespace
    redis = make_redis(settings)
    alive = Liveness(settings.stream.liveness_file)
    backoff = Backoff(settings.stream.retry_initial_s, settings.stream.retry_max_s)
    store = WebhookStore(redis, namespace)
    refuse_a_drop = functools.partial(_refuse_a_drop, Namespaces(redis), namespace)
    try:
        # Asked here too: with no webhook there is no group for a drop to see this deliverer by.
        await through_outages(refuse_a_drop, backoff, "checking the namespace", alive=alive, stop=stop)
        offsets = functools.partial(asyncio.to_thread, shared_group_offsets, settings, namespace)
        handover = await through_outages(
            functools.partial(store.handover, offsets),
            backoff,
            "reading the hand-over",
            alive=alive,
            stop=stop,
            outages=(*OUTAGES, SyncKafkaError),  # read with kafka-python, whose errors are its own
        )
        if handover is None:
            return
        async with client_session(settings.webhooks) as session:
            shared = Shared(settings, Sender(settings.webhooks, session), store, handover, refuse_a_drop, stop)
            try:
                async with asyncio.TaskGroup() as group:
                    parts = _Parts(shared, group, backoff, alive)
                    while not stop.is_set():
                        parts.beat()
                        hooks = await through_outages(
                            store.all, backoff, "reading the webhooks", alive=alive, stop=stop
                        )
                        if hooks is None:
                            break
                        await parts.follow(hooks)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), settings.webhooks.refresh_s)
            except BaseExceptionGroup as failed:
                # One cause is enough to stop for; the command line knows a refusal by its type, which the group
                # hides. The others are logged.
                for other in failed.exceptions[1:]:
                    log.error("a webhook's part failed too", exc_info=other)
                raise failed.exceptions[0] from None
    finally:
        await redis.aclose()


class _Parts:
    """A running part per webhook that is registered and not paused."""

    def __init__(self, shared: Shared, group: asyncio.TaskGroup, backoff: Backoff, alive: Callable[[], None]) -> None:
        self.shared, self.group, self.backoff, self.alive = shared, group, backoff, alive
        self.running: dict[str, tuple[WebhookPart, asyncio.Task[None]]] = {}
        # A part beats at least once per batch budget and request timeout; later than this, it hangs.
        webhooks = shared.settings.webhooks
        self.stale_s = webhooks.batch_budget_s + webhooks.timeout_s + 30.0

    def beat(self) -> None:
        """The liveness file touched, unless a part hangs."""
        for webhook_id in [w for w, (_, task) in self.running.items() if task.done()]:
            del self.running[webhook_id]  # its endpoint is gone: it paused its webhook
        now = time.monotonic()
        hung = [w for w, (part, _) in self.running.items() if now - part.beat_at > self.stale_s]
        if hung:
            log.error("webhook parts have not gone round for %.0f s: %s", self.stale_s, ", ".join(hung))
        else:
            self.alive()

    async def follow(self, hooks: list[tuple[Webhook, Pause | None]]) -> None:
        """The parts of removed and paused webhooks stopped; new and resumed ones' started."""
        registered = {hook.webhook_id for hook, _ in hooks}
        wanted = {hook.webhook_id: hook for hook, pause in hooks if pause is None}
        for webhook_id in [w for w in self.running if w not in wanted]:
            _, task = self.running.pop(webhook_id)
            task.cancel()
            await asyncio.wait({task})
            if webhook_id in registered:
                log.info("webhook %s is paused: its deliveries stop until it is resumed", webhook_id)
                continue
            log.info("webhook %s was removed: its deliveries stop", webhook_id)
            # Its part may have logged a delivery after the removal deleted the log.
            forget = functools.partial(self.shared.store.forget_log, webhook_id)
            await through_outages(forget, self.backoff, "removing a log", alive=self.alive, stop=self.shared.stop)
            settings = self.shared.settings
            await asyncio.to_thread(
                _delete_group, settings, settings.webhook_part_group(settings.profile.namespace, webhook_id)
            )
        for webhook_id, hook in wanted.items():
            if webhook_id not in self.running:
                part = WebhookPart(hook, self.shared)
                self.running[webhook_id] = part, self.group.create_task(part.run(), name=f"webhook {webhook_id}")


def _delete_group(settings: Settings, group: str) -> None:
    """A removed webhook's consumer group deleted, so that group listings (and ``rapport namespace drop``'s look
    for running deliverers) do not carry it for Kafka's ``offsets.retention.minutes``. Tidying only: while
    another deliverer's part is still a member, or Kafka cannot be reached, it is left for Kafka to expire."""
    try:
        admin = make_admin(settings, "webhook-groups", request_timeout_ms=10_000)
        try:
            outcome = dict(admin.delete_groups([group])).get(group)
        finally:
            admin.close()
    except SyncKafkaError as exc:
        outcome = repr(exc)
    if outcome != "OK":
        log.info("consumer group %s left for Kafka to expire (%s)", group, outcome)


async def _refuse_a_drop(namespaces: Namespaces, namespace: str) -> None:
    """``NamespaceStateError`` if ``namespace`` is being dropped with its webhook registrations: not when an API
    configured with it serves another, whose drop keeps them (``rapport namespace drop``)."""
    if await namespaces.serves_another(namespace) is None:
        await namespaces.refuse_writers(namespace)
