"""``rapport trainer``: learns every model from ``models.examples`` and publishes signed snapshots.

The topic has one partition and the trainers of a namespace share one consumer group, so Kafka's
assignment elects the one that trains; the others wait as standbys and take over on a rebalance.

**Where it resumes.** A snapshot holds the whole trainer (model, baselines, rolling metrics, drift
detector) and, in its metadata, the offset after the last example it learned. On assignment each model is
restored from its newest kept snapshot and the partition is read from the smallest of those offsets; a
model skips the examples below its own. Kafka's committed offset is only for lag monitoring. The newest
snapshot is used rather than the active one: a rollback pins what is *served* (``profiles.model_store``),
training goes on.

**When it snapshots.** A model that learned something is snapshotted after ``models.snapshot_every_examples``
new examples or ``models.snapshot_every_s`` seconds, whichever comes first; versions come from a counter
and never go back; the newest ``models.keep_versions`` are kept. Drift events (``profiles.models.trainer``)
are logged and kept in Redis (``rapport models list`` shows them), written with the next snapshots.

The topic is shared by every namespace on the same topic prefix (a live namespace, a shadow one): a
trainer learns only the examples its own namespace's workers sent (header ``rapport-namespace``).

Examples re-sent by a worker that crashed before recording them are skipped by example id (the last
200,000 ids; a restarted trainer remembers none, and resumes after what its snapshots learned).

An undecodable record is logged and skipped: examples are produced by Rapport's own worker, so one that
does not decode is a bug to look at, not input to dead-letter. So is an example its model must not learn
(``profiles.models.trainer.unlearnable``: a NaN or infinite value, which would make every later score NaN;
a label a binary model cannot have; no recency feature, which the baseline reads). An example whose learning
raises anyway (a defect, in Rapport or River) is skipped the same way, with its traceback: raising would stop
the trainer, and a restarted one would meet the same example and stop again, so no model would learn any
more. What the failed step changed of the model before raising is kept; that is one example's worth.

**Outages are backpressure.** Learning touches no I/O; what a batch leaves to write (snapshots due, drift
events, the commit) is retried with backoff while Redis or Kafka is unavailable, and nothing more is
fetched meanwhile. Reading the snapshots on assignment is retried the same way, and nothing is learned
until it succeeds (the records fetched meanwhile are read again from the snapshots' offsets). A trainer
killed instead resumes from its snapshots, losing nothing either.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from profiles.model_store import ModelStore
from profiles.models.labels import NAMESPACE_HEADER, Example, decode_example
from profiles.models.snapshots import SnapshotRejectedError, dump_snapshot, load_snapshot
from profiles.models.specs import ModelSpec
from profiles.models.trainer import ModelTrainer, restore, unlearnable
from profiles.namespaces import Namespaces, NamespaceStateError
from schemas.topics import MODEL_EXAMPLES, full_name
from services.kafka_clients import commit_offsets, stop_consumer
from services.redis_client import make_redis
from services.settings import Settings
from streams.backoff import Backoff, through_outages
from streams.liveness import Liveness

log = logging.getLogger(__name__)
RECENT_IDS = 200_000


class MissingSecretError(RuntimeError):
    def __init__(self) -> None:
        super().__init__("set RAPPORT_MODELS__SECRET: snapshots are signed with it (docs/models.md)")


class Trainers:
    """The trainers of one namespace and what is needed to snapshot them."""

    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings.models
        self.secret = settings.models.secret.get_secret_value().encode()
        if not self.secret:
            raise MissingSecretError
        self.specs: dict[str, ModelSpec] = settings.models.specs()
        self.store = store
        self.trainers: dict[str, ModelTrainer] = {}
        self.resume_at: dict[str, int] = {}  # per model: the first offset it has not learned
        self.unsaved: dict[str, int] = {}
        self.saved_at: dict[str, float] = {}
        # A worker that crashed after sending examples sends them again: recognised by id, recently seen.
        self.recent: deque[str] = deque(maxlen=RECENT_IDS)
        self.recent_set: set[str] = set()
        self.drifts: list[tuple[str, bytes]] = []  # (model, event JSON) not yet written

    async def restore_all(self) -> int:
        """Each model from its newest loadable snapshot (or new); returns the offset to read from. All or
        nothing: a Redis failure midway leaves the trainers as they were."""
        restored = {name: await self._restored(name, spec) for name, spec in self.specs.items()}
        for name, (trainer, resume_at) in restored.items():
            self.trainers[name], self.resume_at[name] = trainer, resume_at
            self.unsaved[name] = 0
            self.saved_at[name] = time.monotonic()
        return min(self.resume_at.values(), default=0)

    async def _restored(self, name: str, spec: ModelSpec) -> tuple[ModelTrainer, int]:
        for version, blob in sorted((await self.store.snapshots(name)).items(), reverse=True):
            try:
                snapshot = load_snapshot(blob, self.secret)
                trainer = restore(snapshot, spec)
            except SnapshotRejectedError as exc:
                log.error("%s v%d cannot be resumed from (%s); trying an older one", name, version, exc)
                continue
            log.info("%s resumes from v%d (%d examples seen)", name, version, trainer.examples_seen)
            return trainer, snapshot.meta.source_offset or 0
        return ModelTrainer(spec, window=self.settings.metrics_window), 0

    def learn(self, offset: int, value: bytes) -> None:
        try:
            example = decode_example(value)
        except msgspec.MsgspecError as exc:
            log.error("skipping an undecodable models.examples record at offset %d: %s", offset, exc)
            return
        self.learn_example(offset, example)

    def learn_example(self, offset: int, example: Example) -> None:
        """Learn ``example``, found at ``offset`` (where a model restored from a snapshot resumes)."""
        trainer = self.trainers.get(example.model)
        if trainer is None or offset < self.resume_at[example.model]:
            return  # a model not configured here, or learned before the snapshot it resumed from
        defect = unlearnable(example, trainer.spec)
        if defect is not None:
            log.error("skipping %s example %s at offset %d: %s", example.model, example.example_id, offset, defect)
            return
        if example.example_id in self.recent_set:
            return
        if len(self.recent) == self.recent.maxlen:
            self.recent_set.discard(self.recent[0])
        self.recent.append(example.example_id)
        self.recent_set.add(example.example_id)
        try:
            step = trainer.learn(example)
        except MemoryError:
            raise
        except Exception:
            model, example_id = example.model, example.example_id
            log.exception("learning %s example %s at offset %d raised (a defect): skipped", model, example_id, offset)
            self.resume_at[example.model] = offset + 1
            return
        self.resume_at[example.model] = offset + 1
        self.unsaved[example.model] += 1
        if step.drift is not None:
            log.warning("drift in %s: %s", example.model, step.drift)
            self.drifts.append((example.model, orjson.dumps(asdict(step.drift))))

    async def snapshot_due(self, *, force: bool = False) -> None:
        """The drift events not yet written, then a snapshot of each model that is due one (``force``: of
        each that learned anything since its last one). Raises on Redis failure; calling again resumes."""
        while self.drifts:
            await self.store.record_drift(*self.drifts[0])
            self.drifts.pop(0)
        now = time.monotonic()
        for name, trainer in self.trainers.items():
            waited = now - self.saved_at[name] >= self.settings.snapshot_every_s
            if self.unsaved[name] and (force or waited or self.unsaved[name] >= self.settings.snapshot_every_examples):
                version = await self.store.next_version(name)
                meta = trainer.snapshot_meta(version, int(time.time() * 1000), source_offset=self.resume_at[name])
                await self.store.publish(
                    name, version, dump_snapshot(meta, trainer, self.secret), self.settings.keep_versions
                )
                log.info("%s v%d: %d examples seen, %s", name, version, trainer.examples_seen, meta.metrics)
                self.unsaved[name] = 0
                self.saved_at[name] = now


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, trainers: Trainers, consumer: AIOKafkaConsumer, namespaces: Namespaces, backoff: Backoff, alive: Liveness
    ) -> None:
        self.trainers = trainers
        self.consumer = consumer
        self.namespaces = namespaces
        self.backoff = backoff
        self.alive = alive
        self.assigned = False
        #: Why this trainer must not train (its namespace is being dropped), for the loop to raise: aiokafka
        #: logs and swallows what a listener raises.
        self.refused: NamespaceStateError | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked and self.assigned:
            await self.trainers.snapshot_due(force=True)  # what was learned survives the hand-over
        self.assigned = False

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not assigned or self.refused is not None:
            return
        # Until the snapshots are read, nothing may be learned (examples fetched meanwhile would be skipped
        # for good): a Redis outage here is waited out too. aiokafka holds the assignment while this runs.
        try:
            start = await through_outages(self._restore, self.backoff, "restoring the models", alive=self.alive)
        except NamespaceStateError as exc:
            self.refused = exc
            return
        assert start is not None  # no stop event: it returns only once restored
        for tp in assigned:
            self.consumer.seek(tp, start)
        log.info("training from offset %d", start)
        self.assigned = True

    async def _restore(self) -> int:
        """The offset to train from. The namespace is checked first, once the group lists this trainer: a drop
        that marks it from now on sees the trainer (profiles.namespaces.Namespaces.begin_drop); refused, the
        trainer restores nothing and saves nothing."""
        await self.namespaces.refuse_writers(self.trainers.store.namespace)
        return await self.trainers.restore_all()


def _sender(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The namespace whose worker sent an example (None for records older than the header)."""
    return next((value.decode() for name, value in headers if name == NAMESPACE_HEADER), None)


def trainer_group(settings: Settings) -> str:
    """The consumer group of the namespace's trainers (the member assigned the partition trains)."""
    return settings.trainer_group_of(settings.profile.namespace)


async def run_trainer(settings: Settings, stop: asyncio.Event | None = None) -> None:
    namespace = settings.profile.namespace
    redis = make_redis(settings)
    trainers = Trainers(settings, ModelStore(redis, namespace))
    topic = full_name(MODEL_EXAMPLES, settings.kafka.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-trainer",
        group_id=trainer_group(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    alive = Liveness(settings.stream.liveness_file)
    backoff = Backoff(settings.stream.retry_initial_s, settings.stream.retry_max_s)
    listener = _Seek(trainers, consumer, Namespaces(redis), backoff, alive)
    consumer.subscribe([topic], listener=listener)
    try:
        while stop is None or not stop.is_set():
            alive()
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            if listener.refused is not None:
                raise listener.refused
            if not listener.assigned:
                continue  # still restoring: the listener seeks back to the snapshots' offsets, then they come again
            for records in batches.values():
                for record in records:
                    if _sender(record.headers) in (None, namespace):
                        trainers.learn(record.offset, record.value or b"")
            # Given up only at ``stop``: the final snapshot is attempted once more on the way out.
            saving = functools.partial(_persist, trainers, consumer, bool(batches), settings.kafka.commit_timeout_s)
            await through_outages(saving, backoff, "saving", alive=alive, stop=stop)
    finally:
        if listener.assigned:
            await trainers.snapshot_due(force=True)
        await stop_consumer(consumer)
        await redis.aclose()


async def _persist(trainers: Trainers, consumer: AIOKafkaConsumer, commit: bool, commit_timeout_s: float) -> None:
    """What learning left to write: the snapshots due, the drift events, the commit."""
    await trainers.snapshot_due()
    if commit:
        await commit_offsets(consumer, commit_timeout_s)
