"""Pending prediction snapshots, the models' event-time watermarks and their due index, in Redis.

Keys (``<ns>`` the namespace):

- ``rapport:<ns>:ml:p:{<profile_id>}`` — the customer's pending snapshots (msgpack list), with a TTL of the
  longest horizon plus lateness plus a day: a snapshot whose label never resolves cannot stay forever;
- ``rapport:<ns>:ml:w:<partition>`` — the event-time watermark of one ``events.resolved`` partition (ms);
- ``rapport:<ns>:ml:due:<partition>`` — sorted set: profile → when the watermark must next reach it (its
  next census instant or first expiry);
- ``rapport:<ns>:ml:progress:<partition>`` — what the progress markers folded in that partition said
  (``profiles.models.progress``, msgpack): where its watermark may go.

Written in the profile write's pipeline (``ProfileStore.save(before=…)``), after the examples they release
were acknowledged by Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import msgspec
from redis.asyncio import Redis

from profiles.config import FoldConfig
from profiles.features import features
from profiles.models.labels import Pending, SnapshotTrigger
from profiles.models.progress import PartitionProgress
from profiles.redis_values import as_bytes, as_text
from profiles.state import new_profile

#: The feature names in ``features()``'s order: stored vectors are positional in this order.
FEATURE_NAMES: Final = tuple(features(new_profile("-", "-"), 0, FoldConfig()))


class _Row(msgspec.Struct, array_like=True, frozen=True):
    snapshot_id: str
    model: str
    trigger: SnapshotTrigger
    taken_at_ms: int
    horizon_end_ms: int
    message_id: str | None
    decided: bool
    decided_at_ms: int | None
    spend_cents: int
    #: An index into the blob's vectors (features in ``FEATURE_NAMES`` order), or the features themselves
    #: when their names are not those (written by another version).
    features: int | dict[str, float]


class _Blob(msgspec.Struct, array_like=True, frozen=True):
    """One customer's pending snapshots. Snapshots taken at one instant share their features (a customer's
    activity snapshots of three models), and vectors are positional: about 0.6 KB per instant instead of
    a 66-key map per snapshot."""

    vectors: list[list[float]]
    rows: list[_Row]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_Blob)
_PROGRESS_DECODER: Final = msgspec.msgpack.Decoder(PartitionProgress)


def encode_pending(pending: Sequence[Pending]) -> bytes:
    """A customer's pending snapshots as stored.

    >>> f = dict.fromkeys(FEATURE_NAMES, 1.0)
    >>> ps = [Pending(snapshot_id=m, model=m, profile_id="c", trigger="census", taken_at_ms=1,
    ...               horizon_end_ms=2, features=f) for m in ("a", "b")]
    >>> decode_pending("c", encode_pending(ps)) == ps, len(encode_pending(ps)) < 800
    (True, True)
    """
    vectors: list[list[float]] = []
    index: dict[tuple[float, ...], int] = {}
    rows = []
    for p in pending:
        feats: int | dict[str, float]
        if tuple(p.features) == FEATURE_NAMES:
            values = tuple(p.features.values())
            feats = index.get(values, -1)
            if feats < 0:
                feats = index[values] = len(vectors)
                vectors.append(list(values))
        else:
            feats = dict(p.features)
        rows.append(
            _Row(
                p.snapshot_id,
                p.model,
                p.trigger,
                p.taken_at_ms,
                p.horizon_end_ms,
                p.message_id,
                p.decided,
                p.decided_at_ms,
                p.spend_cents,
                feats,
            )
        )
    return _ENCODER.encode(_Blob(vectors, rows))


def decode_pending(profile_id: str, blob: bytes) -> list[Pending]:
    decoded = _DECODER.decode(blob)
    maps = [dict(zip(FEATURE_NAMES, v, strict=True)) for v in decoded.vectors]
    return [
        Pending(
            snapshot_id=r.snapshot_id,
            model=r.model,
            profile_id=profile_id,
            trigger=r.trigger,
            taken_at_ms=r.taken_at_ms,
            horizon_end_ms=r.horizon_end_ms,
            features=maps[r.features] if isinstance(r.features, int) else r.features,
            message_id=r.message_id,
            decided=r.decided,
            decided_at_ms=r.decided_at_ms,
            spend_cents=r.spend_cents,
        )
        for r in decoded.rows
    ]


class PendingStore:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self._base = f"rapport:{namespace}:ml"

    def pending_key(self, profile_id: str) -> str:
        return f"{self._base}:p:{{{profile_id}}}"

    def watermark_key(self, partition: int) -> str:
        return f"{self._base}:w:{partition}"

    def due_key(self, partition: int) -> str:
        return f"{self._base}:due:{partition}"

    def progress_key(self, partition: int) -> str:
        return f"{self._base}:progress:{partition}"

    async def load(
        self, profile_ids: Sequence[str], partitions: Sequence[int]
    ) -> tuple[dict[str, list[Pending]], dict[int, int], dict[int, PartitionProgress]]:
        """The profiles' pending snapshots, the partitions' watermarks and progress, in one round trip."""
        keys = [self.pending_key(p) for p in profile_ids]
        keys += [self.watermark_key(p) for p in partitions] + [self.progress_key(p) for p in partitions]
        values = await self.redis.mget(keys) if keys else []
        blobs = values[: len(profile_ids)]
        marks = values[len(profile_ids) : len(profile_ids) + len(partitions)]
        progress = values[len(profile_ids) + len(partitions) :]
        pending = {
            pid: decode_pending(pid, as_bytes(b)) for pid, b in zip(profile_ids, blobs, strict=True) if b is not None
        }
        watermarks = {p: int(v) for p, v in zip(partitions, marks, strict=True) if v is not None}
        known = {
            p: _PROGRESS_DECODER.decode(as_bytes(v)) if v is not None else PartitionProgress()
            for p, v in zip(partitions, progress, strict=True)
        }
        return pending, watermarks, known

    async def due(self, until: Mapping[int, int], limit: int) -> dict[int, list[tuple[str, int]]]:
        """Per partition, up to ``limit`` profiles due at or before its watermark, with their due time."""
        parts = list(until)
        if not parts:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in parts:
                pipe.zrangebyscore(self.due_key(partition), "-inf", until[partition], 0, limit, withscores=True)
            replies = await pipe.execute()
        return {p: [(as_text(pid), int(at)) for pid, at in reply] for p, reply in zip(parts, replies, strict=True)}

    def write(
        self,
        pipe: Redis,
        *,
        pending: Mapping[str, Sequence[Pending]],
        due: Iterable[tuple[int, str, int | None]],
        watermarks: Mapping[int, int],
        progress: Mapping[int, PartitionProgress],
        ttl_s: int,
    ) -> None:
        for pid, snapshots in pending.items():
            if snapshots:
                pipe.set(self.pending_key(pid), encode_pending(snapshots), ex=ttl_s)
            else:
                pipe.delete(self.pending_key(pid))
        for partition, pid, at in due:
            if at is None:
                pipe.zrem(self.due_key(partition), pid)
            else:
                pipe.zadd(self.due_key(partition), {pid: at})
        for partition, watermark in watermarks.items():
            pipe.set(self.watermark_key(partition), watermark)
        for partition, known in progress.items():
            pipe.set(self.progress_key(partition), _ENCODER.encode(known))
