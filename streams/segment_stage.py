"""Segment evaluation in the owning worker: after each apply batch, and when a profile's timer is due.

After a batch, every changed profile is re-evaluated against the live segments
(``profiles.segments.membership``) at ``max(its latest event, its last evaluation)``, caused by the last
event applied to it in the batch; a merged-away profile exits everything, and so does an erased one (cause
``{"erasure": receipt}``, empty excerpt), whose memberships are then forgotten. The changes go to
``segments.changes`` (keyed by profile, so ordered per profile) with the batch's other output — sent and
acknowledged before the profile write — and the memberships and the next timer are written in the profile
write's pipeline, before its compare-and-set (a surviving profile implies surviving memberships; a batch
retried after a crash recomputes the same changes with the same ids).

Timers: each profile whose answers can change with time alone has an entry in its partition's timer set.
The worker's ``tick`` evaluates the due ones of the partitions it owns *at the worker's clock* (wall time
live): a profile overdue by more than one step is evaluated once, at now, and transitions that began and
ended while nobody looked are not reported.

Scores: a rule reading ``scores.<name>`` sees the score the API serves at the evaluation instant — the
active model version of the serving processes (hot-reloaded, ``services.model_cache``), or the documented
cold-start heuristic while a model is cold or when no secret is configured. When the served versions of
the models a segment's rule reads change, the existing profiles are evaluated again like for a new
definition (a *sweep*, caused by the models), at most once per ``sweep_interval_s`` per segment: versions
come every few seconds while a trainer learns, and each sweep scores every profile.

Failures: an evaluation that raises is a defect (rules' own errors are absorbed as CEL does,
``profiles.segments.ops``), and the same state would raise again on every retry. So it does not fail the
batch, which would stall every profile of the partition. The profile's memberships are left as they were;
the error is logged with its traceback; a due timer is tried again ``FAILED_RETRY_MS`` later. The next
change of the profile evaluates it again.

Granularity: a batch evaluates each profile once, after all its events in the batch; a customer entering
and leaving within one batch (milliseconds apart) produces no change.

Superseded namespace: once ``rapport namespace promote`` has served another namespace in the place of this
one (``profiles.namespaces``: the first rebuild promoted over the configured namespace, or the next one over
a promoted rebuild whose workers now run), the stage keeps evaluating and writing this namespace's
memberships but publishes no change. The promotion announced how the new namespace's memberships differ,
and from the hand-over its workers publish; changes computed here from the old memberships would
contradict them. Served again (a promotion back), it publishes again. The mark is read just before a
batch's changes are sent (one GET, only when there are changes), so an old worker stops publishing at the
promotion itself, bar changes already being sent, not up to ``refresh_s`` later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
from redis.asyncio import Redis

from profiles.batch import BatchFold
from profiles.config import FoldConfig
from profiles.models.scoring import score_values
from profiles.models.specs import ModelSpec
from profiles.namespaces import Namespaces
from profiles.segment_store import Backfill, Membership, ModelVersions, SegmentStore
from profiles.segments.changes import (
    Cause,
    DefinitionCause,
    EventCause,
    ModelCause,
    SegmentChange,
    TimerCause,
    erasure_exits,
)
from profiles.segments.membership import LiveSegment, Reevaluation, Segments, reevaluate
from profiles.state import ProfileState
from profiles.store import ProfileStore
from services.model_cache import ModelCache
from streams.outbox import Outgoing

_ENCODER = msgspec.json.Encoder()
log = logging.getLogger(__name__)

PipelineOps = Callable[[Redis], None]
#: When a profile's evaluation raised, its timer is due again this much later: not at every tick, where a
#: crowd of such profiles would fill the ``due`` steps.
FAILED_RETRY_MS: Final = 60 * 60 * 1000
#: A profile's scores at an instant (event time), for the rules that read them.
Scoring = Callable[[ProfileState, int], Mapping[str, float]]


@dataclass(frozen=True)
class SegmentScores:
    """Where the scores rules read come from: the served models, per score definition."""

    models: ModelCache
    specs: Mapping[str, ModelSpec]


def _no_scores(_: ProfileState, __: int) -> Mapping[str, float]:
    return {}


class SegmentStage:
    def __init__(
        self,
        store: SegmentStore,
        config: FoldConfig,
        changes_topic: str,
        *,
        partitions: int,
        scores: SegmentScores | None = None,
        refresh_s: float = 1.0,
        sweep_interval_s: float = 300.0,
    ) -> None:
        self.store = store
        self.config = config
        self.changes_topic = changes_topic
        self.partitions = partitions  # of events.resolved: a sweep is over when every one is done
        self.scores = scores
        self.refresh_s = refresh_s
        self.sweep_interval_ms = int(sweep_interval_s * 1000)
        self._segments = Segments.of({})
        self._versions: dict[str, int] = {}
        self._loaded_at = float("-inf")
        self._namespaces = Namespaces(store.redis)
        self._superseded_by: str | None = None  # the namespace served in this one's place

    async def live(self, now_ms: int) -> Segments:
        """The live segments, re-read at most every ``refresh_s`` and recompiled only when they changed; a
        new version starts the evaluation of existing profiles (``backfill_step``)."""
        if time.monotonic() - self._loaded_at >= self.refresh_s:
            definitions = await self.store.definitions()
            versions = {name: d.version for name, d in definitions.items()}
            if versions != self._versions:
                segments = Segments.of(definitions)
                for name, version in versions.items():
                    if self._versions.get(name) != version:
                        models = await self._served(segments.by_name[name])
                        await self.store.start_backfill(name, version, models, now_ms)
                self._segments, self._versions = segments, versions
            self._loaded_at = time.monotonic()
        return self._segments

    async def _check_superseded(self) -> None:
        own = self.store.namespace
        superseded_by = await self._namespaces.superseded_by(own)
        if superseded_by != self._superseded_by:
            if superseded_by is None:
                log.info("namespace %r is served again: publishing its segment changes", own)
            else:
                log.warning(
                    "namespace %r was replaced by %r (`rapport namespace promote`): its segment changes are not "
                    "published; hand over to the promoted namespace's workers (docs/replay.md)",
                    own,
                    superseded_by,
                )
            self._superseded_by = superseded_by

    async def backfill_step(
        self,
        profiles: ProfileStore,
        partitions: set[int],
        now_ms: int,
        budget: int = 1000,
    ) -> tuple[list[Outgoing], PipelineOps]:
        """One step (a page of one owned partition's profiles, in id order) of evaluating existing profiles
        against a segment version, or against served models, they were not evaluated against yet. Segments
        whose evaluations stand at the same place in that partition (definitions published together, a
        replay's namespace) are evaluated together: each profile is rendered once for all of them."""
        segments = await self.live(now_ms)
        jobs: dict[str, Backfill] = {}
        for name, segment in segments.by_name.items():
            job = await self.store.backfill(name)
            if job is None or job.version != segment.definition.version:
                continue
            if job.done(self.partitions):
                job = await self._next_sweep(name, segment, job, now_ms)
                if job is None:
                    continue
            jobs[name] = job
        for partition in sorted(partitions):
            at = {name: job.cursors.get(partition) for name, job in jobs.items()}
            first = next((cursor for cursor in at.values() if cursor != "done"), "done")
            if first == "done":
                continue
            group = {name: (segments.by_name[name], _cause_of(jobs[name])) for name, c in at.items() if c == first}
            page = await profiles.partition_profiles(partition, first[1:] if first else None, budget)
            return await self._evaluate_existing(
                profiles,
                group,
                partition=partition,
                pids=page,
                last=page[-1] if len(page) == budget else None,
                now_ms=now_ms,
            )
        return [], _nothing

    async def unevaluated(self, now_ms: int, *, not_begun: bool = False) -> set[str]:
        """The live segments whose current version has not been evaluated against every existing profile
        yet (``backfill_step`` will reach each of them); ``not_begun``: only those whose evaluation has not
        reached any profile yet (so it will reach every one that changes from now on)."""
        pending = set()
        for name, segment in (await self.live(now_ms)).by_name.items():
            job = await self.store.backfill(name)
            if job is None or job.version != segment.definition.version or job.done(self.partitions):
                continue
            if not (not_begun and job.cursors):
                pending.add(name)
        return pending

    async def _next_sweep(self, name: str, segment: LiveSegment, done: Backfill, now_ms: int) -> Backfill | None:
        """The sweep started now because the served versions of the models the rule reads differ from the
        last evaluation's (and that one started ``sweep_interval_s`` ago or more), or None."""
        served = await self._served(segment)
        if not served or served == done.models or now_ms - (done.started_ms or 0) < self.sweep_interval_ms:
            return None
        await self.store.start_sweep(name, done, served, now_ms)  # False: another worker started it first
        job = await self.store.backfill(name)
        return job if job is not None and job.version == done.version and job.sweep > done.sweep else None

    async def _served(self, segment: LiveSegment) -> ModelVersions:
        """The versions served of the models ``segment``'s rule reads (none read: empty)."""
        read = sorted({path[1] for path in segment.rule.reads if path[0] == "scores" and len(path) > 1})
        if self.scores is None or not read:
            return {}
        models = await self.scores.models.current()
        return {name: model.version if (model := models.get(name)) is not None else None for name in read}

    async def _scoring(self, segments: Segments) -> Scoring:
        """Scores for the rules, computed only when some live rule reads them (one load check per call)."""
        if self.scores is None or not any(path[0] == "scores" for path in segments.reads):
            return _no_scores
        models, specs, config = await self.scores.models.current(), self.scores.specs, self.config

        def scoring(state: ProfileState, at_ms: int) -> Mapping[str, float]:
            return score_values(state, at_ms, config, specs, models)

        return scoring

    async def _evaluate_existing(
        self,
        profiles: ProfileStore,
        group: Mapping[str, tuple[LiveSegment, Cause]],
        *,
        partition: int,
        pids: list[str],
        last: str | None,
        now_ms: int,
    ) -> tuple[list[Outgoing], PipelineOps]:
        states = await profiles.load(pids)
        before = await self.store.memberships(pids)
        only = Segments(
            {n: segment for n, (segment, _) in group.items()},
            frozenset().union(*(segment.rule.reads for segment, _ in group.values())),
        )
        causes = {n: cause for n, (_, cause) in group.items()}
        scoring = await self._scoring(only)
        changes: list[SegmentChange] = []
        writes: list[tuple[str, Membership, dict[str, int], int, int | None]] = []
        for pid in pids:
            stored, membership = states[pid], before[pid]
            if stored.unreadable is not None:
                log.error("%s: its memberships are left as they were", stored.unreadable)
                continue
            state = stored.decoded
            if state is None:
                continue
            at = max(now_ms, membership.evaluated_at_ms or 0, state.last_event_ms or 0)
            previous = {n: v for n, v in membership.segments.items() if n in group}
            result = self._reevaluate(state, previous, only, at=at, cause=causes, scoring=scoring)
            if result is None:
                continue
            changes += result.changes
            others = {n: v for n, v in membership.segments.items() if n not in group}
            writes.append((pid, membership, {**others, **result.memberships}, at, result.timer_ms))

        def ops(pipe: Redis) -> None:
            for pid, membership, now_in, at, timer in writes:
                self.store.write_membership(pipe, pid, membership, now_in, at)
                self.store.set_timer(pipe, partition, pid, timer, earlier_only=True)
            for name in group:
                self.store.advance_backfill(pipe, name, partition, last, len(writes))

        return await self._publishable(changes), ops

    async def after_batch(
        self, fold: BatchFold, now_ms: int, *, changed: bool = True
    ) -> tuple[list[Outgoing], PipelineOps]:
        """The changes a batch causes, and what to add to its profile write's pipeline (``now_ms``: the
        worker's clock, for a definition noticed now). ``changed=False``: the erased profiles only, the
        changed ones being left to an evaluation of every profile that is pending (a replay's)."""
        segments = await self.live(now_ms)
        # Erased profiles exit, and are forgotten, even when no segment is live any more: deleting a segment
        # leaves the memberships that name it until their profile is evaluated again.
        evaluated = fold.states if segments.by_name and changed else {}
        pids = [*evaluated, *fold.deleted]
        if not pids:
            return [], _nothing
        scoring = await self._scoring(segments)
        before = await self.store.memberships(pids)
        changes: list[SegmentChange] = []
        writes: list[tuple[str, Membership, Mapping[str, int], int | None, int | None]] = []
        for pid, state in evaluated.items():
            membership = before[pid]
            at = max(state.last_event_ms or 0, membership.evaluated_at_ms or 0)
            cause = EventCause(fold.last_event_id.get(pid, ""))
            result = self._reevaluate(state, membership.segments, segments, at=at, cause=cause, scoring=scoring)
            if result is None:
                continue
            changes += result.changes
            writes.append((pid, membership, result.memberships, at, result.timer_ms))
        for pid, erasure_id in fold.deleted.items():
            membership = before[pid]
            at = max(now_ms, membership.evaluated_at_ms or 0)
            changes += erasure_exits(pid, membership.segments, erasure_id=erasure_id, at_ms=at)
            writes.append((pid, membership, {}, None, None))

        def ops(pipe: Redis) -> None:
            for pid, membership, now_in, at, timer in writes:
                self.store.write_membership(pipe, pid, membership, now_in, at)
                self.store.set_timer(pipe, fold.partition_of[pid], pid, timer)

        return await self._publishable(changes), ops

    async def due(
        self, profiles: ProfileStore, partitions: set[int], now_ms: int, limit: int = 100
    ) -> tuple[list[Outgoing], PipelineOps, bool]:
        """Evaluate up to ``limit`` profiles per partition whose timers are due at ``now_ms``; the flag says
        whether more may be due (small steps, so the first exits of a crowded boundary go out first)."""
        segments = await self.live(now_ms)
        due = await self.store.due(sorted(partitions), now_ms, limit)
        if not due:
            return [], _nothing, False
        pids = [pid for _, pid in due]
        scoring = await self._scoring(segments)
        states = await profiles.load(pids)
        before = await self.store.memberships(pids)
        changes: list[SegmentChange] = []
        writes: list[tuple[int, str, Membership, Mapping[str, int], int | None, int | None]] = []
        retries: list[tuple[int, str]] = []
        for partition, pid in due:
            stored, membership = states[pid], before[pid]
            if stored.unreadable is not None:
                log.error("%s: its segment timer is retried later", stored.unreadable)
                retries.append((partition, pid))
                continue
            state: ProfileState | None = stored.decoded
            if state is None:
                writes.append((partition, pid, membership, {}, None, None))
                continue
            at = max(now_ms, membership.evaluated_at_ms or 0, state.last_event_ms or 0)
            result = self._reevaluate(
                state, membership.segments, segments, at=at, cause=TimerCause(at), scoring=scoring
            )
            if result is None:
                retries.append((partition, pid))
                continue
            changes += result.changes
            writes.append((partition, pid, membership, result.memberships, at, result.timer_ms))

        def ops(pipe: Redis) -> None:
            for partition, pid, membership, now_in, at, timer in writes:
                self.store.write_membership(pipe, pid, membership, now_in, at)
                self.store.set_timer(pipe, partition, pid, timer)
            for partition, pid in retries:
                self.store.set_timer(pipe, partition, pid, now_ms + FAILED_RETRY_MS)

        return await self._publishable(changes), ops, len(due) >= limit

    def _reevaluate(
        self,
        state: ProfileState,
        previous: Mapping[str, int],
        segments: Segments,
        *,
        at: int,
        cause: Cause | Mapping[str, Cause],
        scoring: Scoring,
    ) -> Reevaluation | None:
        """The profile's memberships at ``at``, or None if evaluating them raised (see "Failures" above)."""
        try:
            return reevaluate(
                state, previous, segments, at_ms=at, cause=cause, config=self.config, scores=scoring(state, at)
            )
        except MemoryError:
            raise
        except Exception:
            log.exception(
                "evaluating the segments of %s raised (a defect): its memberships are left as they were",
                state.profile_id,
            )
            return None

    async def _publishable(self, changes: list[SegmentChange]) -> list[Outgoing]:
        """The records of ``changes``, or none if another namespace is served in this one's place."""
        if not changes:
            return []
        await self._check_superseded()
        if self._superseded_by is not None:
            return []
        return [(self.changes_topic, None, c.customer_id.encode(), _ENCODER.encode(c), None) for c in changes]


def _nothing(_: Redis) -> None:
    pass


def chained(first: PipelineOps, second: PipelineOps | None) -> PipelineOps:
    """``first``'s operations, then ``second``'s, in one pipeline."""
    if second is None:
        return first

    def ops(pipe: Redis) -> None:
        first(pipe)
        second(pipe)

    return ops


def _cause_of(job: Backfill) -> Cause:
    if job.sweep == 0:
        return DefinitionCause(job.version)
    return ModelCause(tuple(sorted((job.models or {}).items())), job.sweep)
