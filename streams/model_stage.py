"""The apply stage's model step: snapshots and labels around the fold, examples on watermark advances.

Around each apply batch (``streams.profile_handler``), in the batch's order of effects:

1. ``prepare``: the batch's customers' pending snapshots, the partitions' event-time watermarks and the
   progress of the slowest raw partition (one round trip), as a ``ModelTracking`` the fold calls for each
   applied event. The watermark may move to that progress minus ``models.watermark_lag_s``: the resolve
   stages publish, per raw partition, the newest event time they resolved and sent on, so the minimum says
   how far *every* input has been read (a catch-up reads topics unevenly: one partition's newest event
   would run days ahead of another's); the lag covers records resolved but still on their way through
   ``events.resolved``, and late events;
2. ``after_batch``: the partitions whose watermark moves, the profiles due there (one round trip, plus one
   to load the states of due profiles the batch did not touch), census snapshots and expired snapshots
   turned into examples (``profiles.models.tracking``); returns the examples, to send to
   ``models.examples`` with the batch's other records (acknowledged before anything is written), and the
   Redis writes to add to the profile write's pipeline.

A crash after the examples were sent and before the pipeline ran sends them again: the trainer recognises
them by example id. Erased profiles lose their pending snapshots with the profile.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from profiles.batch import BatchFold
from profiles.config import DAY_MS, FoldConfig
from profiles.models.labels import DEFAULT_LATENESS_MS, Example, encode_example
from profiles.models.specs import ModelSpec
from profiles.models.tracking import ModelTracking
from profiles.pending_store import PendingStore
from profiles.state import ANON_PREFIX, ProfileState
from profiles.store import ProfileStore
from streams.outbox import Outgoing
from streams.segment_stage import PipelineOps

#: Most due profiles handled per partition and batch; the rest stay due for the next batches.
DUE_PER_BATCH = 10_000


class RawProgress:
    """The resolve stage's side: per raw partition this worker reads, the newest event time resolved and
    sent on, published after the send. A partition stops holding the watermark back once its last fetch
    reached its end and nothing came for ``idle_s`` (or it never delivered anything for ``idle_s``): a
    partition merely waiting for its turn in a catch-up still holds it back."""

    def __init__(self, store: PendingStore, idle_s: float) -> None:
        self.store = store
        self.idle_s = idle_s
        self.newest: dict[str, int] = {}
        self.seen: dict[str, float] = {}
        self.at_end: dict[str, bool] = {}
        self.idle: set[str] = set()

    async def assigned(self, names: Sequence[str], now: float) -> None:
        self.newest = {n: v for n, v in self.newest.items() if n in names}
        self.seen = dict.fromkeys(names, now)
        self.at_end = {}
        self.idle = set()
        await self.store.register_raw(names)

    async def resolved(self, event_time: dict[str, int], at_end: dict[str, bool], now: float) -> None:
        self.at_end.update(at_end)
        changed = {}
        for name in at_end:
            self.seen[name] = now
        for name, ts in event_time.items():
            if ts > self.newest.get(name, -1) or name in self.idle:
                self.newest[name] = max(ts, self.newest.get(name, ts))
                changed[name] = self.newest[name]
            self.idle.discard(name)
        await self.store.publish_raw(changed)

    async def tick(self, now: float) -> None:
        quiet = {
            n
            for n, at in self.seen.items()
            if now - at >= self.idle_s and n not in self.idle and self.at_end.get(n, n not in self.newest)
        }
        if quiet:
            await self.store.idle_raw(quiet)
            self.idle |= quiet


class ModelStage:
    def __init__(
        self, store: PendingStore, specs: dict[str, ModelSpec], config: FoldConfig, topic: str, lag_ms: int
    ) -> None:
        self.store = store
        self.specs = specs
        self.config = config
        self.topic = topic
        self.lag_ms = lag_ms
        longest = max((s.horizon_ms for s in specs.values()), default=0)
        self.ttl_s = (longest + DEFAULT_LATENESS_MS + DAY_MS) // 1000

    async def prepare(self, profile_ids: Sequence[str], partitions: Sequence[int]) -> ModelTracking:
        customers = [pid for pid in profile_ids if not pid.startswith(ANON_PREFIX)]
        pending, stored, slowest = await self.store.load(customers, partitions)
        watermarks = {p: stored.get(p, 0) for p in partitions}
        # 0: a raw partition assigned but not read yet
        target = None if slowest is None or slowest == 0 else slowest - self.lag_ms
        return ModelTracking(self.specs, self.config, pending, watermarks, target_ms=target)

    async def tick(self, profiles: ProfileStore, partitions: Sequence[int]) -> tuple[list[Outgoing], PipelineOps]:
        """The watermark advance of the owned partitions without a batch: a quiet stream (or the end of a
        catch-up) still releases what is due."""
        tracking = await self.prepare([], partitions)
        return await self.after_batch(BatchFold({}, {}, self.config), tracking, profiles)

    async def after_batch(
        self, fold: BatchFold, tracking: ModelTracking, profiles: ProfileStore
    ) -> tuple[list[Outgoing], PipelineOps]:
        advanced = tracking.advanced()
        watermarks = {**tracking.watermarks, **{p: new for p, (_, new) in advanced.items()}}
        due = await self.store.due({p: watermarks[p] for p in advanced}, DUE_PER_BATCH)
        waiting = {pid: (p, at) for p, found in due.items() for pid, at in found if pid not in fold.states}
        states: dict[str, ProfileState] = dict(fold.states)
        if waiting:
            loaded = await profiles.load(list(waiting))
            states.update({pid: s.state for pid, s in loaded.items() if s.state is not None})
            extra, _, _ = await self.store.load([pid for pid in waiting if pid in states], [])
            tracking.pending.update(extra)
        examples: list[Example] = []
        next_due: list[tuple[int, str, int | None]] = []
        for pid, partition in tracking.touched.items():
            state = states.get(pid)
            if state is None:
                continue  # erased in this batch (below)
            # Also when the watermark stays: a snapshot it passed earlier is released now, so that what is
            # due is always after the watermark (the due path starts from the due time).
            current = watermarks.get(partition, 0)
            old, new = advanced.get(partition, (current, current))
            examples += tracking.advance(state, old, new)
            next_due.append((partition, pid, tracking.next_due(state, new)))
        for pid, (partition, due_at) in waiting.items():
            quiet = states.get(pid)
            if quiet is None:  # erased or gone: nothing more is due
                tracking.pending[pid] = []
                next_due.append((partition, pid, None))
                continue
            # Everything before its due time was handled when it was set.
            examples += tracking.advance(quiet, due_at - 1, watermarks[partition])
            next_due.append((partition, pid, tracking.next_due(quiet, watermarks[partition])))
        for pid in fold.deleted:
            tracking.pending[pid] = []
            tracking.dirty.add(pid)
            if pid in fold.partition_of:
                next_due.append((fold.partition_of[pid], pid, None))
        out: list[Outgoing] = [
            (self.topic, None, e.model.encode(), encode_example(e), None)
            for e in sorted(examples, key=lambda e: (e.horizon_end_ms, e.example_id))
        ]
        moved = {p: new for p, (_, new) in advanced.items()}

        changed = {pid: tracking.pending.get(pid, []) for pid in tracking.dirty}

        def ops(pipe: Redis) -> None:
            self.store.write(pipe, changed, next_due, moved, self.ttl_s)

        return out, ops
