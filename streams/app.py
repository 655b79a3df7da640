"""``make_app``: a Faust app whose only consumer path is the batch runtime, configured from ``Settings``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import faust
from faust.types.transports import TransportT

from services.settings import Settings
from streams.batch_consumer import BatchConsumer
from streams.handler import BatchHandler, HandlerFactory
from streams.transport import BatchTransport


class BatchApp(faust.App):
    """Every topic this app subscribes to is handed to its handler in batches: do not add agents to it."""

    logger = logging.getLogger(f"faust.{__name__}")  # see BatchConsumer.logger

    def __init__(self, group_id: str, *, settings: Settings, handler_factory: HandlerFactory, **options: Any) -> None:
        super().__init__(group_id, **options)
        self.settings = settings
        self._handler_factory = handler_factory
        self._handler: BatchHandler | None = None

    @property
    def handler(self) -> BatchHandler:
        if self._handler is None:
            raise RuntimeError("the handler exists only while the app runs")
        return self._handler

    def _new_transport(self) -> TransportT:
        return BatchTransport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        """Faust creates its table directories here; this app has no tables (and no files)."""

    async def on_start(self) -> None:
        await super().on_start()
        # Entered before the consumer starts; exited (mode's exit stack) after its final commit.
        self._handler = await self.async_exit_stack.enter_async_context(self._handler_factory(self.settings))

    async def on_stop(self) -> None:
        # Let the batch in flight finish before Faust cancels the fetch loop that runs it.
        if self._consumer is not None:
            await self._batch_consumer.quiesce()
        await super().on_stop()

    @property
    def _batch_consumer(self) -> BatchConsumer:
        consumer = self.consumer
        assert isinstance(consumer, BatchConsumer)
        return consumer


def make_app(settings: Settings, *, handler_factory: HandlerFactory, topics: Sequence[str], group_id: str) -> BatchApp:
    """The app of one stream worker: consumer group ``group_id`` over ``topics`` (full names).

    Creates no client: the handler is built from ``handler_factory(settings)`` when the app starts.
    """
    stream = settings.stream
    app = BatchApp(
        group_id,
        settings=settings,
        handler_factory=handler_factory,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_client_id=settings.kafka.client_id,
        broker_max_poll_records=stream.max_poll_records,
        broker_commit_interval=stream.commit_interval_s,
        broker_session_timeout=stream.session_timeout_s,
        broker_heartbeat_interval=stream.heartbeat_interval_s,
        consumer_group_instance_id=stream.instance_id or None,
        consumer_auto_offset_reset="earliest",
        # No tables, no web server, no leader election: a consumer group and a producer.
        table_standby_replicas=0,
        web_enabled=False,
        topic_disable_leader=True,
        producer_threaded=False,
    )
    # acks=False: Faust's livelock detector then does not expect per-message acks from these topics.
    app.topics.add(app.topic(*topics, acks=False))
    return app
