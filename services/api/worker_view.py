"""What the API shows of the profile workers on ``/metrics``: their published totals and their lag.

Lag per partition is computed at scrape time, the way the workers define their positions: for the raw
topics and ``erasures``, the end offset minus the group's committed offset; for ``events.resolved``, the
end offset minus the position in Redis (the authoritative one, docs/streams.md). Answers are cached for
a few seconds so that frequent scrapes cost nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from profiles.store import ProfileStore
from schemas.topics import ERASURES, RAW_EVENT_TOPICS, RESOLVED, full_name
from services import worker_metrics
from services.kafka_clients import make_admin, make_consumer, topic_partitions
from services.settings import Settings
from services.worker_metrics import WorkerTotals

_CACHE_S = 5.0


@dataclass(frozen=True)
class WorkerSnapshot:
    totals: WorkerTotals
    lag: dict[tuple[str, int], int]  # (topic, partition) → records not yet processed
    lag_known: bool  # False when Kafka did not answer: the lag series are then left out


class WorkerView:
    def __init__(self, settings: Settings, store: ProfileStore) -> None:
        self.settings = settings
        self.store = store
        self._lock = asyncio.Lock()
        self._cached: tuple[float, WorkerSnapshot] | None = None
        self._clients: tuple[KafkaConsumer, KafkaAdminClient] | None = None

    async def snapshot(self) -> WorkerSnapshot:
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < _CACHE_S:
                return self._cached[1]
            totals = await worker_metrics.read(self.store.redis, self.store.namespace)
            try:
                ends, committed = await asyncio.wait_for(asyncio.to_thread(self._offsets), 3.0)
            except (KafkaError, OSError, TimeoutError):  # Kafka down or slow: metrics must still answer
                self._close_clients()
                snapshot = WorkerSnapshot(totals, {}, lag_known=False)
            else:
                resolved_topic = full_name(RESOLVED, self.settings.kafka.topic_prefix)
                resolved = [tp.partition for tp in ends if tp.topic == resolved_topic]
                positions = await self.store.positions(resolved_topic, resolved)
                lag = {}
                for tp, end in ends.items():
                    done = positions.get(tp.partition, 0) if tp.topic == resolved_topic else committed.get(tp, 0)
                    lag[(tp.topic, tp.partition)] = max(0, end - done)
                snapshot = WorkerSnapshot(totals, lag, lag_known=True)
            self._cached = (time.monotonic(), snapshot)
            return snapshot

    def close(self) -> None:
        self._close_clients()

    def _offsets(self) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        if self._clients is None:
            self._clients = (make_consumer(self.settings, "api-lag"), make_admin(self.settings, "api-lag"))
        consumer, admin = self._clients
        prefix = self.settings.kafka.topic_prefix
        tps = [
            tp
            for spec in (*RAW_EVENT_TOPICS, ERASURES, RESOLVED)
            for tp in topic_partitions(consumer, full_name(spec, prefix))
        ]
        group = self.settings.profile_group_id
        offsets = admin.list_group_offsets(group).get(group, {})
        committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        return consumer.end_offsets(tps), committed

    def _close_clients(self) -> None:
        if self._clients is not None:
            consumer, admin = self._clients
            self._clients = None
            consumer.close()
            admin.close()
