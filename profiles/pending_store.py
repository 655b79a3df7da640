"""Pending prediction snapshots, the models' event-time watermarks and their due index, in Redis.

Keys (``<ns>`` the namespace):

- ``rapport:<ns>:ml:p:{<profile_id>}`` — the customer's pending snapshots (msgpack, zstd-compressed by
  ``profiles.compression``), with a TTL of the longest horizon plus lateness plus a day: a snapshot whose
  label never resolves cannot stay forever;
- ``rapport:<ns>:ml:v:{<profile_id>}`` — the customer's models view (``profiles.models.view``: the profile
  folded in event-time order up to a clock; compressed likewise), without a TTL: like the profile, it lives
  until the customer is erased (an expiry measured by the wall clock would make a live run and a replay of
  it differ);
- ``rapport:<ns>:ml:t:{<profile_id>}`` — sorted set: the customer's entries not folded into the view yet
  (each zstd-compressed with the entry dictionary, ``profiles.compression``), scored by entry time; added
  by every batch that touches the customer without loading anything, and read only up to the watermark:
  the entries ahead of it (days of them while a worker catches up on unevenly read partitions) are neither
  loaded nor written again until the watermark reaches them;
- ``rapport:<ns>:ml:e:{<profile_id>}`` — list: the entries as stored before 2026-12-04 (all of them loaded
  and written again at every fold); still read, and moved to the sorted set at the customer's next fold;
- ``rapport:<ns>:ml:w:<partition>`` — the event-time watermark of one ``events.resolved`` partition (ms);
- ``rapport:<ns>:ml:due:<partition>`` — sorted set: profile → when the watermark must next reach it
  (``profiles.models.view.next_due``);
- ``rapport:<ns>:ml:progress:<partition>`` — what the progress markers folded in that partition said
  (``profiles.models.progress``, msgpack): where its watermark may go;
- ``rapport:<ns>:ml:features`` — hash: names digest → the feature names (newline-separated) that stored
  vectors with that digest are in the order of. Every write of snapshots also sets its own entry, in the
  same pipeline, so a worker of another version can read what this one wrote.

Written in the profile write's pipeline (``ProfileStore.save(before=…)``), after the examples they release
were acknowledged by Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
import zstandard
from redis.asyncio import Redis

from profiles.compression import compress, decompress
from profiles.models.labels import Pending, SnapshotTrigger
from profiles.models.progress import PartitionProgress
from profiles.models.vectors import FEATURE_DIGEST, FEATURE_NAMES, FeatureVector, names_digest
from profiles.models.view import Entry, ModelView, decode_entry, decode_view, encode_entry, encode_view
from profiles.redis_values import as_bytes, as_text

log = logging.getLogger(__name__)

#: What a stored blob that is not what its reader expects raises: damaged bytes.
UNREADABLE: Final = (msgspec.MsgspecError, zstandard.ZstdError, ValueError)


class _Vector(msgspec.Struct, array_like=True, frozen=True):
    digest: str  # ``names_digest`` of the names the values are in the order of
    values: bytes  # ``FeatureVector.packed``


class _RowBase(msgspec.Struct, array_like=True, frozen=True):
    """A snapshot's fields but its features, first in both stored formats."""

    snapshot_id: str
    model: str
    trigger: SnapshotTrigger
    taken_at_ms: int
    horizon_end_ms: int
    message_id: str | None
    decided: bool
    decided_at_ms: int | None
    spend_cents: int


class _Row(_RowBase, array_like=True, frozen=True):
    vector: int  # an index into the blob's vectors


class _Blob(msgspec.Struct, array_like=True, frozen=True, tag=2):
    """One customer's pending snapshots. Snapshots taken at one instant share their vector (a customer's
    activity snapshots of three models); names are not stored per vector, only their digest."""

    vectors: list[_Vector]
    rows: list[_Row]


class _V1Row(_RowBase, array_like=True, frozen=True):
    features: int | dict[str, float]


class _V1Blob(msgspec.Struct, array_like=True, frozen=True):
    """The first format (untagged): vectors as msgpack floats in the writer's ``FEATURE_NAMES`` order.
    Still read, so that snapshots pending when a worker is upgraded are not lost (they expire within the
    longest horizon)."""

    vectors: list[list[float]]
    rows: list[_V1Row]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_Blob)
_V1_DECODER: Final = msgspec.msgpack.Decoder(_V1Blob)
_PROGRESS_DECODER: Final = msgspec.msgpack.Decoder(PartitionProgress)


def encode_pending(pending: Sequence[Pending]) -> bytes:
    """A customer's pending snapshots as stored.

    >>> f = FeatureVector.of(dict.fromkeys(FEATURE_NAMES, 1.0))
    >>> ps = [Pending(snapshot_id=m, model=m, profile_id="c", trigger="census", taken_at_ms=1,
    ...               horizon_end_ms=2, features=f) for m in ("a", "b")]
    >>> decode_pending("c", encode_pending(ps), {FEATURE_DIGEST: FEATURE_NAMES}) == (ps, set())
    True
    >>> len(encode_pending(ps)) < 800
    True
    """
    vectors: list[_Vector] = []
    # Keyed by the names' identity: they are one shared tuple (hashing its 69 names per snapshot was most
    # of this function), and equal tuples that are not shared only cost a vector stored twice.
    index: dict[tuple[int, bytes], int] = {}
    rows = []
    for p in pending:
        names, values = p.features.names, p.features.packed
        at = index.get((id(names), values), -1)
        if at < 0:
            at = index[id(names), values] = len(vectors)
            vectors.append(_Vector(FEATURE_DIGEST if names is FEATURE_NAMES else names_digest(names), values))
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
                at,
            )
        )
    return compress(_ENCODER.encode(_Blob(vectors, rows)))


def decode_pending(
    profile_id: str, blob: bytes, names: Mapping[str, tuple[str, ...]]
) -> tuple[list[Pending], set[str]]:
    """The snapshots of a stored blob whose vectors' names are known (``names``: digest → names), and the
    digests that were not (their snapshots are left out). Blobs written before compression are read too."""
    blob = decompress(blob)
    try:
        decoded = _DECODER.decode(blob)
    except msgspec.DecodeError:
        return _decode_v1(profile_id, blob)
    vectors = [
        FeatureVector(known, v.values) if (known := names.get(v.digest)) is not None else None for v in decoded.vectors
    ]
    unknown = {v.digest for v, vector in zip(decoded.vectors, vectors, strict=True) if vector is None}
    rows = [(r, vectors[r.vector]) for r in decoded.rows]
    return [_pending(profile_id, r, vector) for r, vector in rows if vector is not None], unknown


def _pending(profile_id: str, r: _RowBase, vector: FeatureVector) -> Pending:
    return Pending(
        snapshot_id=r.snapshot_id,
        model=r.model,
        profile_id=profile_id,
        trigger=r.trigger,
        taken_at_ms=r.taken_at_ms,
        horizon_end_ms=r.horizon_end_ms,
        features=vector,
        message_id=r.message_id,
        decided=r.decided,
        decided_at_ms=r.decided_at_ms,
        spend_cents=r.spend_cents,
    )


#: What ``decode_pending`` reports for first-format vectors of another length than ``FEATURE_NAMES``: their
#: writer had other features, and that format did not say which.
V1_OTHER_FEATURES: Final = "first format, other features"


def _decode_v1(profile_id: str, blob: bytes) -> tuple[list[Pending], set[str]]:
    decoded = _V1_DECODER.decode(blob)
    vectors = [
        FeatureVector.of(dict(zip(FEATURE_NAMES, v, strict=True))) if len(v) == len(FEATURE_NAMES) else None
        for v in decoded.vectors
    ]
    rows = [
        (r, FeatureVector.of(r.features) if isinstance(r.features, dict) else vectors[r.features]) for r in decoded.rows
    ]
    out = [_pending(profile_id, r, vector) for r, vector in rows if vector is not None]
    return out, {V1_OTHER_FEATURES} if len(out) < len(decoded.rows) else set()


class PendingStore:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._base = f"rapport:{namespace}:ml"
        self._names: dict[str, tuple[str, ...]] = {FEATURE_DIGEST: FEATURE_NAMES}

    @property
    def names_key(self) -> str:
        return f"{self._base}:features"

    def pending_key(self, profile_id: str) -> str:
        return f"{self._base}:p:{{{profile_id}}}"

    def view_key(self, profile_id: str) -> str:
        return f"{self._base}:v:{{{profile_id}}}"

    def entries_key(self, profile_id: str) -> str:
        return f"{self._base}:t:{{{profile_id}}}"

    def listed_entries_key(self, profile_id: str) -> str:
        return f"{self._base}:e:{{{profile_id}}}"

    def watermark_key(self, partition: int) -> str:
        return f"{self._base}:w:{partition}"

    def due_key(self, partition: int) -> str:
        return f"{self._base}:due:{partition}"

    def progress_key(self, partition: int) -> str:
        return f"{self._base}:progress:{partition}"

    async def load(self, partitions: Sequence[int]) -> tuple[dict[int, int], dict[int, PartitionProgress]]:
        """The partitions' watermarks and progress, in one round trip."""
        keys = [self.watermark_key(p) for p in partitions] + [self.progress_key(p) for p in partitions]
        values = await self.redis.mget(keys) if keys else []
        marks, progress = values[: len(partitions)], values[len(partitions) :]
        watermarks = {p: int(v) for p, v in zip(partitions, marks, strict=True) if v is not None}
        known = {
            p: _PROGRESS_DECODER.decode(as_bytes(v)) if v is not None else PartitionProgress()
            for p, v in zip(partitions, progress, strict=True)
        }
        return watermarks, known

    async def load_customers(self, until: Mapping[str, int]) -> LoadedCustomers:
        """The customers' pending snapshots, views, and entries up to ``until`` (per customer: its partition's
        watermark), in one round trip."""
        if not until:
            return LoadedCustomers({}, {}, {}, {}, {})
        profile_ids = list(until)
        n = len(profile_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([self.pending_key(p) for p in profile_ids] + [self.view_key(p) for p in profile_ids])
            for pid, at in until.items():
                pipe.lrange(self.listed_entries_key(pid), 0, -1)
                pipe.zrange(self.entries_key(pid), "-inf", at, byscore=True)
                pipe.zrange(self.entries_key(pid), f"({at}", "+inf", byscore=True, offset=0, num=1, withscores=True)
            replies = await pipe.execute()
        blobs, view_blobs = replies[0][:n], replies[0][n:]
        unreadable: dict[str, str] = {}
        pending = await self._decode(
            {pid: as_bytes(b) for pid, b in zip(profile_ids, blobs, strict=True) if b}, unreadable
        )
        views = {}
        for pid, blob in zip(profile_ids, view_blobs, strict=True):
            if blob:
                try:
                    views[pid] = decode_view(as_bytes(blob))
                except UNREADABLE as exc:
                    # Derived from the profile: rebuilt from it (``streams.model_stage``), not a customer set aside.
                    log.error("the models view of %s does not decode (%s): it is rebuilt from the profile", pid, exc)
        stored: dict[str, list[bytes]] = {}
        later: dict[str, int] = {}
        for i, pid in enumerate(profile_ids):
            listed, scored, first_after = replies[1 + 3 * i : 4 + 3 * i]
            stored[pid] = [as_bytes(e) for e in (*listed, *scored)]
            if first_after:
                later[pid] = int(first_after[0][1])
        return LoadedCustomers(pending, views, stored, later, unreadable)

    async def _decode(self, blobs: Mapping[str, bytes], unreadable: dict[str, str]) -> dict[str, list[Pending]]:
        """The customers' pending snapshots; a blob that does not decode is named in ``unreadable`` instead."""
        pending: dict[str, list[Pending]] = {}
        retry: dict[str, bytes] = {}
        for pid, blob in blobs.items():
            try:
                pending[pid], unknown = decode_pending(pid, blob, self._names)
            except UNREADABLE as exc:
                unreadable[pid] = f"{type(exc).__name__}: {exc}"
                continue
            if unknown:
                retry[pid] = blob
        if not retry:
            return pending
        # Written by another version of the features: their names are in the namespace's registry.
        wanted = sorted({d for blob in retry.values() for d in decode_pending("-", blob, self._names)[1]})
        found = await self.redis.hmget(self.names_key, wanted)
        self._names.update({d: tuple(as_text(n).split("\n")) for d, n in zip(wanted, found, strict=True) if n})
        for pid, blob in retry.items():
            pending[pid], unknown = decode_pending(pid, blob, self._names)
            if unknown:  # the registry lost them: the snapshots cannot become examples any more
                log.warning("pending snapshots with unregistered feature names %s dropped", sorted(unknown))
        return pending

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
        customers: CustomerWrites,
        watermarks: Mapping[int, int],
        progress: Mapping[int, PartitionProgress],
        ttl_s: int,
    ) -> None:
        self._write_customers(pipe, customers, ttl_s)
        for partition, pid, at in customers.due:
            if at is None:
                pipe.zrem(self.due_key(partition), pid)
            else:
                pipe.zadd(self.due_key(partition), {pid: at})
        for partition, pid, at in customers.due_by:
            pipe.zadd(self.due_key(partition), {pid: at}, lt=True)
        for partition, watermark in watermarks.items():
            pipe.set(self.watermark_key(partition), watermark)
        for partition, known in progress.items():
            pipe.set(self.progress_key(partition), _ENCODER.encode(known))

    def _write_customers(self, pipe: Redis, customers: CustomerWrites, ttl_s: int) -> None:
        # By identity: the names are one shared tuple, and hashing its 69 names per snapshot is not free.
        names = {id(p.features.names): p.features.names for snapshots in customers.pending.values() for p in snapshots}
        for written in names.values():  # the current names, and those of snapshots another version took
            pipe.hsetnx(self.names_key, names_digest(written), "\n".join(written))
        for pid, snapshots in customers.pending.items():
            if snapshots:
                pipe.set(self.pending_key(pid), encode_pending(snapshots), ex=ttl_s)
            else:
                pipe.delete(self.pending_key(pid))
        for pid, view in customers.views.items():
            if view is not None:
                pipe.set(self.view_key(pid), encode_view(view))
            else:
                pipe.delete(self.view_key(pid))
        self._write_entries(pipe, customers)

    def _write_entries(self, pipe: Redis, customers: CustomerWrites) -> None:
        for pid, (until, rest) in customers.folded.items():
            pipe.delete(self.listed_entries_key(pid))
            if until is None:
                pipe.delete(self.entries_key(pid))
            else:
                pipe.zremrangebyscore(self.entries_key(pid), "-inf", until)
            if rest:
                pipe.zadd(self.entries_key(pid), {encode_entry(e): e.at_ms for e in rest})
        for pid, added in customers.appended.items():
            if added:
                pipe.zadd(self.entries_key(pid), {encode_entry(e): e.at_ms for e in added})


@dataclass
class LoadedCustomers:
    """What a fold of due customers starts from: their pending snapshots, views and entries up to the
    watermark, and when the first of their stored entries after it is (those stay in Redis)."""

    pending: dict[str, list[Pending]]  # ``pending_of`` reads them
    views: dict[str, ModelView]  # those that decode
    stored_entries: dict[str, list[bytes]]  # as stored: ``entries`` decodes them
    later: dict[str, int]
    #: customers whose pending snapshots do not decode, and why
    unreadable_pending: dict[str, str]

    def pending_of(self, profile_id: str) -> list[Pending]:
        """The customer's pending snapshots. Raises ``ValueError`` if they do not decode (damaged bytes): in
        the customer's own fold, which sets that customer aside, not the batch with everyone in it."""
        reason = self.unreadable_pending.get(profile_id)
        if reason is not None:
            raise ValueError(f"the pending snapshots of {profile_id!r} do not decode ({reason})")
        return self.pending.get(profile_id, [])

    def entries(self, profile_id: str) -> list[Entry]:
        """The customer's entries up to the watermark, one per (time, order, key): the sorted set recognises
        an entry added again by its bytes, which another version's encoding (msgpack, zstd) may not
        reproduce. Decoded here, in the customer's own fold, rather than when loading the batch: an entry
        this version cannot read (compressed with a dictionary it does not ship: ``ValueError``) sets that
        customer aside, not the batch with everyone in it."""
        decoded = (decode_entry(e) for e in self.stored_entries.get(profile_id, ()))
        return list({(e.at_ms, e.order, e.key): e for e in decoded}.values())


@dataclass
class CustomerWrites:
    """What one batch stores for the models' customers: ``folded`` customers were folded up to a time (their
    stored entries up to it go, all of them with None) and keep the given entries after it; ``appended``
    entries are added; ``due`` sets (or with None removes) a due time, ``due_by`` only brings one forward."""

    pending: dict[str, list[Pending]] = field(default_factory=dict)
    views: dict[str, ModelView | None] = field(default_factory=dict)
    folded: dict[str, tuple[int | None, list[Entry]]] = field(default_factory=dict)
    appended: dict[str, list[Entry]] = field(default_factory=dict)
    due: list[tuple[int, str, int | None]] = field(default_factory=list)
    due_by: list[tuple[int, str, int]] = field(default_factory=list)

    def forget(self, partition: int | None, pid: str) -> None:
        """An erased or vanished customer: its snapshots, view and entries go."""
        self.pending[pid], self.views[pid], self.folded[pid] = [], None, (None, [])
        if partition is not None:
            self.due.append((partition, pid, None))
