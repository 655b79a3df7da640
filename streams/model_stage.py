"""The models' steps in the worker: progress markers, and snapshots and labels around the apply stage's fold.

The resolve stage keeps a ``SourceProgress`` and sends its ``SourceMarker`` to every ``events.resolved``
partition after the records it covers were acknowledged (``profiles.models.progress`` says why the
watermark is built from markers). Around each apply batch (``streams.profile_handler``), in the batch's
order of effects:

1. ``prepare``: the partitions' watermarks and their progress (one round trip), as a ``ModelBatch``: the
   fold calls its ``tracking`` for each applied event, which turns it into an entry of the customer's, and
   its ``observe`` for each marker;
2. ``after_batch``: each partition's watermark target from the markers folded so far, the partitions whose
   watermark moves, the customers due there (one round trip), their pending snapshots, views and entries
   (one more), each folded up to the watermark (``profiles.models.tracking``); returns the examples, to
   send to ``models.examples`` with the batch's other records (acknowledged before anything is written),
   the Redis writes to add to the profile write's pipeline (the other customers' new entries are appended,
   nothing of theirs is loaded), and this worker's ``ApplyMarker``s, to send once the batch's records were
   acknowledged.

A crash after the examples were sent and before the pipeline ran sends them again: the trainer recognises
them by example id. Erased customers lose their pending snapshots, view and entries with the profile.

Failures: a customer whose fold up to the watermark raises (or one of whose stored entries this version
cannot read: compressed with a dictionary it does not ship, after a rollback) is a defect, and the same
stored state would raise again on every retry of the batch, stalling every customer of the partition. So
it does not fail the batch: the error is logged with its traceback, nothing of the customer's models'
state is rewritten (its stored view, snapshots and entries stay; the batch's new entries are appended),
and it is due again once its partition's watermark is ``FAILED_RETRY_MS`` further. Its examples are
released then, if the defect was fixed (or the version rolled forward) meanwhile; none is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from redis.asyncio import Redis

from profiles.batch import BatchFold
from profiles.config import DAY_MS, FoldConfig
from profiles.models.labels import DEFAULT_LATENESS_MS, NAMESPACE_HEADER, Example, encode_example
from profiles.models.progress import PartitionProgress, watermark_target
from profiles.models.specs import ModelSpec
from profiles.models.tracking import ModelTracking
from profiles.models.view import ModelView, new_view, view_of
from profiles.pending_store import CustomerWrites, LoadedCustomers, PendingStore
from profiles.store import ProfileStore
from schemas.resolved import ApplyMarker, Envelope, SourceMarker, marker
from streams.outbox import Outgoing
from streams.segment_stage import PipelineOps

#: Most due profiles handled per partition and batch; the rest stay due for the next batches.
DUE_PER_BATCH = 10_000

#: How much further its partition's watermark must be before a customer whose fold raised is tried again (see
#: "Failures" above): not at every batch, where a defect would flood the log.
FAILED_RETRY_MS: Final = 60 * 60 * 1000

log = logging.getLogger(__name__)


class SourceProgress:
    """The resolve stage's side: per raw partition this worker reads, the newest event time resolved and
    sent on, and whether it is read to its end. A partition is *idle* once the consumer's position has been
    at its end (as last fetched) for ``idle_s``: then it stops holding the watermark back. A partition
    merely waiting for its turn in a catch-up is not at its end. Markers go out when something changed, at
    most every ``interval_s`` (idle changes at once)."""

    def __init__(self, idle_s: float, interval_s: float) -> None:
        self.idle_s = idle_s
        self.interval_s = interval_s
        self.owned: set[str] = set()
        self.newest: dict[str, int] = {}
        self.idle: set[str] = set()
        self.at_end_since: dict[str, float] = {}
        self.sent: SourceMarker | None = None
        self.sent_at = -float("inf")

    def assigned(self, names: Iterable[str]) -> None:
        self.owned = set(names)
        self.newest = {n: v for n, v in self.newest.items() if n in self.owned}
        self.idle = set()
        self.at_end_since = {}
        self.sent = None

    def resolved(self, event_time: Mapping[str, int]) -> None:
        for name, ts in event_time.items():
            self.newest[name] = max(ts, self.newest.get(name, ts))
            self.idle.discard(name)
            self.at_end_since.pop(name, None)

    def positions(self, at_end: Mapping[str, bool], now: float) -> None:
        """Where the consumer is: per owned raw partition, whether its position is at the partition's end."""
        for name in self.owned:
            if not at_end.get(name, False):
                self.at_end_since.pop(name, None)
                self.idle.discard(name)
            elif now - self.at_end_since.setdefault(name, now) >= self.idle_s:
                self.idle.add(name)

    def marker(self, raw_partitions: int, now: float) -> SourceMarker | None:
        """The marker to send now, if any; ``sent`` once it was acknowledged."""
        current = SourceMarker(raw_partitions, dict(self.newest), sorted(self.idle))
        if current == self.sent or not self.owned:
            return None
        idle_changed = self.sent is None or self.sent.idle != current.idle
        return current if idle_changed or now - self.sent_at >= self.interval_s else None

    def was_sent(self, marker: SourceMarker, now: float) -> None:
        self.sent, self.sent_at = marker, now


@dataclass
class ModelBatch:
    """The models' view of one apply batch: the tracking the fold calls, and the partitions' progress."""

    tracking: ModelTracking
    progress: dict[int, PartitionProgress]
    changed: set[int] = field(default_factory=set)

    def observe(self, partition: int, envelope: Envelope) -> None:
        """A progress marker was folded in ``partition``: what it covers is folded too."""
        known = self.progress.get(partition)
        if known is None:
            return
        if envelope.sources is not None:
            known.observe_sources(envelope.sources)
        if envelope.applied is not None:
            known.observe_applied(envelope.applied.partition, envelope.applied.bound)
        self.changed.add(partition)


class ModelStage:
    def __init__(
        self,
        store: PendingStore,
        specs: dict[str, ModelSpec],
        config: FoldConfig,
        topics: tuple[str, str],
        *,
        lag_ms: int,
        interval_s: float,
    ) -> None:
        self.store = store
        self.specs = specs
        self.config = config
        self.topic, self.resolved_topic = topics
        self.lag_ms = lag_ms
        self.interval_s = interval_s
        self.resolved_partitions = 0  # events.resolved's partition count, set by the handler when assigned
        longest = max((s.horizon_ms for s in specs.values()), default=0)
        self.ttl_s = (longest + DEFAULT_LATENESS_MS + DAY_MS) // 1000
        # The input bound each owned partition last announced in an acknowledged ApplyMarker.
        self.announced: dict[int, int] = {}
        self.announced_at = -float("inf")
        self.announcing: dict[int, int] = {}

    async def prepare(self, partitions: Sequence[int]) -> ModelBatch:
        """The partitions' watermarks and progress (nothing per customer: the fold only appends entries)."""
        stored, progress = await self.store.load(partitions)
        watermarks = {p: stored.get(p, 0) for p in partitions}
        return ModelBatch(ModelTracking(self.specs, self.config, watermarks), progress)

    async def tick(
        self, profiles: ProfileStore, partitions: Sequence[int], now: float
    ) -> tuple[list[Outgoing], PipelineOps, list[Outgoing]]:
        """The watermark advance of the owned partitions without a batch: a quiet stream (or the end of a
        catch-up) still releases what is due, and announces what a batch held back."""
        batch = await self.prepare(partitions)
        return await self.after_batch(BatchFold({}, {}, self.config), batch, profiles, now)

    def announced_ok(self) -> None:
        """The ApplyMarkers last returned by ``after_batch`` or ``tick`` were acknowledged."""
        self.announced.update(self.announcing)

    def _announcements(self, batch: ModelBatch, now: float) -> list[Outgoing]:
        bounds = {p: progress.input_bound() for p, progress in batch.progress.items()}
        news = {p: b for p, b in bounds.items() if b is not None and self.announced.get(p) != b}
        if not news or now - self.announced_at < self.interval_s:
            self.announcing = {}
            return []
        self.announced_at, self.announcing = now, news
        return [
            (self.resolved_topic, target, None, marker(self.store.namespace, applied=ApplyMarker(p, bound)), None)
            for p, bound in sorted(news.items())
            for target in range(self.resolved_partitions)
        ]

    async def after_batch(
        self, fold: BatchFold, batch: ModelBatch, profiles: ProfileStore, now: float
    ) -> tuple[list[Outgoing], PipelineOps, list[Outgoing]]:
        everyone = range(self.resolved_partitions)
        targets = {
            p: target
            for p, progress in batch.progress.items()
            if (target := watermark_target(progress, everyone, self.lag_ms)) is not None
        }
        changed_progress = {p: batch.progress[p] for p in batch.changed}
        examples, ops = await self.release(fold, batch.tracking, targets, profiles, changed_progress)
        sender = [(NAMESPACE_HEADER, self.store.namespace.encode())]
        out: list[Outgoing] = [(self.topic, None, e.model.encode(), encode_example(e), sender) for e in examples]
        return out, ops, self._announcements(batch, now)

    async def release(
        self,
        fold: BatchFold,
        tracking: ModelTracking,
        targets: Mapping[int, int],
        profiles: ProfileStore,
        progress: Mapping[int, PartitionProgress] | None = None,
    ) -> tuple[list[Example], PipelineOps]:
        """The partitions' watermarks move to ``targets``: the customers due by then are folded; returns the
        labelled examples that releases, in a fixed order (horizon end, example id), and the Redis writes
        that record the batch (entries, views, pending snapshots, due index, watermarks, and the partitions'
        ``progress`` if given)."""
        tracking.targets = targets
        advanced = tracking.advanced()
        watermarks = {**tracking.watermarks, **{p: new for p, (_, new) in advanced.items()}}
        found = await self.store.due({p: watermarks[p] for p in advanced}, DUE_PER_BATCH)
        erased = set(fold.deleted)
        due = {pid: p for p, listed in found.items() for pid, _ in listed if pid not in erased}
        for pid, partition in tracking.touched.items():  # entries already due (late ones)
            at = tracking.entry_due(pid)
            if pid not in erased and at is not None and at <= watermarks.get(partition, 0):
                due[pid] = partition
        loaded = await self.store.load_customers({pid: watermarks[partition] for pid, partition in due.items()})
        views = loaded.views
        views.update({pid: v for pid, v in tracking.new_views.items() if pid in due and pid not in views})
        rebuilt = [pid for pid in due if pid not in views]
        if rebuilt:
            await self._views_from_profiles(rebuilt, views=views, profiles=profiles, watermarks=watermarks, due=due)
        examples: list[Example] = []
        writes = CustomerWrites()
        for pid, partition in due.items():
            view = views.get(pid)
            if view is None:  # gone: nothing more is due
                writes.forget(partition, pid)
                continue
            where = (partition, watermarks[partition])
            examples += _fold_due(tracking, pid, view, loaded, writes, at=where, rebuilt=pid in rebuilt)
        for pid, partition in tracking.touched.items():
            if pid in due or pid in erased:
                continue
            if pid in tracking.new_views:
                writes.views[pid] = tracking.new_views[pid]
            writes.appended[pid] = tracking.entries.get(pid, [])
            if (at := tracking.entry_due(pid)) is not None:
                writes.due_by.append((partition, pid, at))
        for pid in erased:
            writes.forget(fold.partition_of.get(pid), pid)
        moved = {p: new for p, (_, new) in advanced.items()}
        progress = dict(progress or {})

        def ops(pipe: Redis) -> None:
            self.store.write(pipe, customers=writes, watermarks=moved, progress=progress, ttl_s=self.ttl_s)

        return sorted(examples, key=lambda e: (e.horizon_end_ms, e.example_id)), ops

    async def _views_from_profiles(
        self,
        missing: Sequence[str],
        *,
        views: dict[str, ModelView],
        profiles: ProfileStore,
        watermarks: Mapping[int, int],
        due: Mapping[str, int],
    ) -> None:
        """Due customers without a view: tracked before views existed. Their view starts from the live
        profile, which already holds their stored entries (those take no snapshot)."""
        loaded = await profiles.load(list(missing))
        for pid in missing:
            # One that does not decode gets no view and is forgotten as one that is gone (its records are
            # dead-lettered): kept due, it would come first in every batch's due list, for ever.
            state = loaded[pid].decoded if pid in loaded else None
            if state is not None and state.customer_id is not None and state.last_event_ms is not None:
                clock = max(watermarks.get(due[pid], 0), state.last_event_ms)
                views[pid] = view_of(state, clock)


def _fold_due(
    tracking: ModelTracking,
    pid: str,
    view: ModelView,
    loaded: LoadedCustomers,
    writes: CustomerWrites,
    *,
    at: tuple[int, int],
    rebuilt: bool,
) -> list[Example]:
    """Fold a due customer up to its partition's watermark (``at``: the partition and its watermark) into
    ``writes``; returns the examples released. A fold that raises writes what "Failures" above says instead
    and releases nothing."""
    partition, watermark = at
    later = None if rebuilt else loaded.later.get(pid)
    try:
        stored = [] if rebuilt else loaded.entries(pid)  # rebuilt: the profile it started from holds them
        done = tracking.fold(view, stored, loaded.pending_of(pid), watermark, later_ms=later)
    except MemoryError:
        raise
    except Exception:
        log.exception(
            "folding the models' entries of %s up to %d raised (a defect): it is set aside and due again later",
            pid,
            watermark,
        )
        if view is tracking.new_views.get(pid):  # the fold changed it in place: a fresh one is kept
            writes.views[pid] = new_view(pid)
        writes.appended[pid] = tracking.entries.get(pid, [])
        writes.due.append((partition, pid, watermark + FAILED_RETRY_MS))
        return []
    writes.folded[pid] = (None if rebuilt else watermark, done.entries)
    writes.pending[pid], writes.views[pid] = done.pending, done.view
    writes.due.append((partition, pid, done.due))
    return done.examples
