"""The HTTP event collector's way into Kafka: answer 202 only for events Kafka acknowledged.

The producer is idempotent with ``acks=all``. It is started on first use (the API must come up, and say
it is not ready, while Kafka is down) and a send that fails or is not acknowledged within
``api.produce_timeout_s`` raises ``KafkaUnavailableError``: the route answers 503 with ``Retry-After``.
An event whose acknowledgement timed out may still reach Kafka later; a client that retries sends it
again with the same ``event_id``, which profiles deduplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.kafka_clients import make_async_producer, stop_producer
from services.settings import Settings

#: (topic, key, value)
Record = tuple[str, bytes, bytes]


class KafkaUnavailableError(Exception):
    pass


class EventCollector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def send(self, records: Sequence[Record]) -> None:
        """Return once Kafka acknowledged every record; raise ``KafkaUnavailableError`` otherwise."""
        try:
            await asyncio.wait_for(self._send(records), self.settings.api.produce_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailableError(type(exc).__name__) from exc

    async def ready(self) -> bool:
        """Whether the broker answers a metadata request within a second."""
        try:
            producer = await asyncio.wait_for(self._started(), 1.0)
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 1.0)
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        if self._producer is not None:
            await stop_producer(self._producer, self.settings.api.produce_timeout_s)
            self._producer = None

    async def _send(self, records: Sequence[Record]) -> None:
        producer = await self._started()
        pending = [await producer.send(topic, value=value, key=key) for topic, key, value in records]
        await asyncio.gather(*pending)

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = make_async_producer(self.settings, "api")
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer
