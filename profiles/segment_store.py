"""Segment definitions and memberships in Redis: a thin adapter, no domain logic.

Key layout (``<ns>`` is the namespace):

- ``rapport:<ns>:seg:defs`` — segment name → its current definition (JSON);
- ``rapport:<ns>:seg:versions`` — segment name → the last version it ever had, kept after a deletion so a
  segment created again under the same name never reuses a version (change ids include it);
- ``rapport:<ns>:seg:m:{<segment>}`` — the members, a sorted set with equal scores so members come in id
  order (cursor pagination with ``ZRANGE … BYLEX`` is stable while members come and go);
- ``rapport:<ns>:seg:c:{<profile_id>}`` — the segments a profile is in (segment → version it entered
  under) and, under ``@at``, the event-time instant it was last evaluated at; its hash tag is the
  profile's, so it lives in the profile's slot;
- ``rapport:<ns>:seg:t:<partition>`` — timers of the profiles of one ``events.resolved`` partition
  (profile id → when time alone can change one of its answers, ms), read by the partition's owner;
- ``rapport:<ns>:seg:bf:{<segment>}`` — the evaluation of existing profiles for the segment's current
  version: ``version``, ``sweep`` (0 for the definition's own evaluation, then one more each time the
  served models a score rule reads changed), ``models`` (their versions when it started, JSON),
  ``started`` (ms, the starting worker's clock), per partition the last profile id evaluated (or
  ``done``), and ``evaluated``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from profiles.redis_values import as_bytes, as_text
from profiles.segments.definitions import SegmentDefinition, save

# Both start a job over (ARGV: version, expected sweep, new sweep, models, started); as one script each, so
# two workers noticing the same new definition or model change start one job, not two.
_RESTART_JOB = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'sweep', ARGV[3], 'models', ARGV[4], 'started', ARGV[5])
return 1
"""
_NEW_VERSION = "if redis.call('HGET', KEYS[1], 'version') == ARGV[1] then return 0 end\n" + _RESTART_JOB
_NEXT_SWEEP = (
    """
local held = redis.call('HMGET', KEYS[1], 'version', 'sweep')
if held[1] ~= ARGV[1] or (held[2] or '0') ~= ARGV[2] then return 0 end
"""
    + _RESTART_JOB
)
_AT = "@at"  # a field no segment can have: names are slugs
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(SegmentDefinition)


class UnreadableSegmentError(ValueError):
    """A stored segment definition this version cannot decode (a key edited by hand, a bad restore). The
    namespace's workers wait while it is unreadable, as for an outage: memberships evaluated without it would
    publish changes that are not true (docs/segments.md, "Definitions")."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            f"the definition of segment {name!r} cannot be read ({reason}): save it again, or delete it "
            f"(`rapport segments delete {name}`)"[:1000]
        )
        self.name = name


def _definition(name: str, blob: bytes | str) -> SegmentDefinition:
    try:
        return _DECODER.decode(blob)
    except msgspec.MsgspecError as exc:
        raise UnreadableSegmentError(name, str(exc)) from None


@dataclass(frozen=True, slots=True)
class Membership:
    segments: dict[str, int]  # segment → the version it was entered under
    evaluated_at_ms: int | None  # event time of the last evaluation (None: never evaluated)


#: Model → its served version (None: no model, the cold-start heuristic), for the models a rule reads.
ModelVersions = dict[str, int | None]


@dataclass(frozen=True, slots=True)
class Backfill:
    version: int
    cursors: dict[int, str]  # partition → the last profile id evaluated, or "done"
    evaluated: int
    sweep: int = 0
    models: ModelVersions | None = None
    started_ms: int | None = None

    def done(self, partitions: int) -> bool:
        return all(self.cursors.get(p) == "done" for p in range(partitions))


class SegmentStore:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._base = f"rapport:{namespace}:seg"
        self._new_version = redis.register_script(_NEW_VERSION)
        self._next_sweep = redis.register_script(_NEXT_SWEEP)

    @property
    def definitions_key(self) -> str:
        """The hash of the namespace's segment definitions (name → JSON)."""
        return f"{self._base}:defs"

    def members_key(self, segment: str) -> str:
        return f"{self._base}:m:{{{segment}}}"

    def profile_segments_key(self, profile_id: str) -> str:
        return f"{self._base}:c:{{{profile_id}}}"

    # definitions
    async def definitions(self) -> dict[str, SegmentDefinition]:
        """Every definition by name. Raises ``UnreadableSegmentError``."""
        raw = await self.redis.hgetall(self.definitions_key)
        return {as_text(name): _definition(as_text(name), blob) for name, blob in sorted(raw.items())}

    async def unreadable_definitions(self) -> dict[str, str]:
        """The definitions that do not decode, by name, and why (``rapport namespace check``)."""
        out = {}
        for name, blob in (await self.redis.hgetall(self.definitions_key)).items():
            try:
                _definition(as_text(name), blob)
            except UnreadableSegmentError as exc:
                out[exc.name] = str(exc)
        return out

    async def definition(self, name: str) -> SegmentDefinition | None:
        """The definition of ``name`` (None: no such segment). Raises ``UnreadableSegmentError``."""
        blob = await self.redis.hget(self.definitions_key, name)
        return None if blob is None else _definition(name, blob)

    async def last_version(self, name: str) -> int:
        """The highest version ``name`` ever had (0 if never saved), deleted or not."""
        value = await self.redis.hget(f"{self._base}:versions", name)
        return 0 if value is None else int(value)

    async def save(self, name: str, description: str, rule: str, *, now_ms: int) -> SegmentDefinition:
        """Save a definition (``segments.save``: raises ``DefinitionError`` or ``RuleError``); a name used
        before keeps counting versions, because change ids include the version and must never repeat."""
        try:
            current = await self.definition(name)
        except UnreadableSegmentError:
            current = None  # saved again over damaged bytes: a new version, as after a deletion
        saved = save(current, name, description, rule, now_ms=now_ms)
        if current is None:
            version = await self.last_version(name) + 1
            saved = msgspec.structs.replace(saved, version=version, first_version=version)
        if saved is not current:
            await self.put(saved)
        return saved

    async def put(self, definition: SegmentDefinition) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.definitions_key, definition.name, _ENCODER.encode(definition))
            pipe.hset(f"{self._base}:versions", definition.name, definition.version)
            await pipe.execute()

    async def delete(self, name: str) -> bool:
        """Forget the definition and its members index (``UNLINK``: freed in the background)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self.definitions_key, name)
            pipe.unlink(self.members_key(name))
            removed, _ = await pipe.execute()
        return bool(removed)

    async def adopt_definitions(self, source: SegmentStore) -> None:
        """Make this namespace's definitions those of ``source`` (a replay's, from the served namespace):
        versions as they are there, so memberships and change events keep meaning the same versions; version
        counters never go down, so a name created again here still never reuses a version."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(source.definitions_key)
            pipe.hgetall(f"{source._base}:versions")
            pipe.hgetall(self.definitions_key)
            pipe.hgetall(f"{self._base}:versions")
            theirs, their_versions, ours, our_versions = await pipe.execute()
        wanted = {as_text(name): as_bytes(blob) for name, blob in theirs.items()}
        held = {as_text(name): as_bytes(blob) for name, blob in ours.items()}
        counters = {as_text(name): int(v) for name, v in our_versions.items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, blob in wanted.items():
                if held.get(name) != blob:
                    pipe.hset(self.definitions_key, name, blob)
            for name in held.keys() - wanted.keys():
                pipe.hdel(self.definitions_key, name)
                pipe.unlink(self.members_key(name))
            for name, version in ((as_text(n), int(v)) for n, v in their_versions.items()):
                if counters.get(name, 0) < version:
                    pipe.hset(f"{self._base}:versions", name, version)
            await pipe.execute()

    # memberships
    async def counts(self, names: Sequence[str]) -> dict[str, int]:
        if not names:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(self.members_key(name))
            return {name: int(n) for name, n in zip(names, await pipe.execute(), strict=True)}

    async def members(self, name: str, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` members in id order, strictly after ``after`` (None: from the first)."""
        start = "-" if after is None else f"({after}"
        raw = await self.redis.zrange(self.members_key(name), start, "+", bylex=True, offset=0, num=limit)
        return [as_text(m) for m in raw if isinstance(m, bytes | str)]

    async def segments_of(self, profile_id: str) -> dict[str, int]:
        return (await self.memberships([profile_id]))[profile_id].segments

    async def memberships(self, profile_ids: Sequence[str]) -> dict[str, Membership]:
        """Each profile's segments and last evaluation instant, in one round trip."""
        if not profile_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in profile_ids:
                pipe.hgetall(self.profile_segments_key(pid))
            replies = await pipe.execute()
        out = {}
        for pid, raw in zip(profile_ids, replies, strict=True):
            fields = {as_text(k): int(v) for k, v in raw.items()}
            at = fields.pop(_AT, None)
            out[pid] = Membership(fields, at)
        return out

    def write_membership(
        self, pipe: Redis, profile_id: str, before: Membership, segments: Mapping[str, int], at_ms: int | None
    ) -> None:
        """Queue on ``pipe`` what moves ``profile_id`` from ``before`` to ``segments`` evaluated at ``at_ms``
        (None: the profile is gone — forget it everywhere)."""
        key = self.profile_segments_key(profile_id)
        for name in before.segments.keys() - segments.keys():
            pipe.zrem(self.members_key(name), profile_id)
        for name, version in segments.items():
            # Another version than before: it entered, or it entered a segment created again under a name
            # it was a member of before the deletion (whose member set went with it).
            if before.segments.get(name) != version:
                pipe.zadd(self.members_key(name), {profile_id: 0})
        pipe.delete(key)
        if at_ms is not None:
            pipe.hset(key, _AT, at_ms, items=[x for pair in segments.items() for x in pair])

    def set_timer(
        self, pipe: Redis, partition: int, profile_id: str, due_ms: int | None, *, earlier_only: bool = False
    ) -> None:
        """Set (or clear) a profile's timer; ``earlier_only``: only move it earlier (one segment's timer)."""
        if due_ms is None:
            if not earlier_only:
                pipe.zrem(self.timers_key(partition), profile_id)
        else:
            pipe.zadd(self.timers_key(partition), {profile_id: due_ms}, lt=earlier_only)

    # evaluating existing profiles when a definition is published or edited
    def backfill_key(self, segment: str) -> str:
        return f"{self._base}:bf:{{{segment}}}"

    async def backfill(self, segment: str) -> Backfill | None:
        raw = {as_text(k): as_text(v) for k, v in (await self.redis.hgetall(self.backfill_key(segment))).items()}
        if "version" not in raw:
            return None
        cursors = {int(k[2:]): v for k, v in raw.items() if k.startswith("p:")}
        return Backfill(
            int(raw["version"]),
            cursors,
            int(raw.get("evaluated", 0)),
            sweep=int(raw.get("sweep", 0)),
            models=msgspec.json.decode(raw["models"]) if "models" in raw else None,
            started_ms=int(raw["started"]) if "started" in raw else None,
        )

    async def start_backfill(self, segment: str, version: int, models: ModelVersions, now_ms: int) -> None:
        """Start over for ``version`` unless it is already the one being (or been) evaluated."""
        args = (version, 0, 0, _ENCODER.encode(models), now_ms)
        await self._new_version(keys=[self.backfill_key(segment)], args=args)

    async def start_sweep(self, segment: str, after: Backfill, models: ModelVersions, now_ms: int) -> bool:
        """Start the next sweep of ``after``'s segment version for the served ``models`` — unless another
        worker already started one (or a new definition's evaluation) since ``after`` was read."""
        args = (after.version, after.sweep, after.sweep + 1, _ENCODER.encode(models), now_ms)
        return bool(await self._next_sweep(keys=[self.backfill_key(segment)], args=args))

    def advance_backfill(self, pipe: Redis, segment: str, partition: int, last: str | None, evaluated: int) -> None:
        """Record progress: evaluated up to profile id ``last`` (None: the partition is done)."""
        pipe.hset(self.backfill_key(segment), f"p:{partition}", "done" if last is None else f"@{last}")
        pipe.hincrby(self.backfill_key(segment), "evaluated", evaluated)

    async def due(self, partitions: Sequence[int], now_ms: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (partition, profile id) per partition whose timer is due at ``now_ms``, earliest
        first, in one round trip."""
        if not partitions:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.zrangebyscore(self.timers_key(partition), "-inf", now_ms, start=0, num=limit)
            replies = await pipe.execute()
        return [(p, as_text(pid)) for p, pids in zip(partitions, replies, strict=True) for pid in pids]

    def timers_key(self, partition: int) -> str:
        return f"{self._base}:t:{partition}"
