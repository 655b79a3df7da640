"""Profiles, identity links and stream positions in Redis: a thin adapter, no domain logic.

Key layout (``<ns>`` is the namespace, braces are Redis Cluster hash tags so that every script touches
one slot):

- ``rapport:<ns>:p:{<profile_id>}`` — the profile: an 8-byte big-endian watermark (the last applied
  offset of the profile's ``events.resolved`` partition) followed by the msgpack state. A write is a
  compare-and-set on those 8 bytes: a worker that lost the partition (a zombie after a rebalance) read an
  older watermark and its write is refused;
- ``rapport:<ns>:a:{<anonymous_id>}`` — the customer an anonymous id is linked to, and the identify that
  linked it (first claim wins);
- ``rapport:<ns>:l:{<customer_id>}`` — the anonymous ids linked to a customer (a set): how many it holds,
  against ``profile.max_anonymous_ids``;
- ``rapport:<ns>:n:{<customer_id>}`` — the emails a customer named and was allowed (a set), against
  ``profile.max_emails``;
- ``rapport:<ns>:e:{<email>}`` — the customer an email belongs to;
- ``rapport:<ns>:pos:{<topic>}:<partition>`` — the next offset to read, moved (compare-and-set) after the
  profiles it covers are written; Redis, not Kafka's committed offset, is where a worker resumes (after a
  Redis crash the two can disagree, and only Redis knows what it kept);
- ``rapport:<ns>:rfm:r|f|m`` — the population of buyers for RFM scores (last purchase time, orders, net
  spend);
- ``rapport:<ns>:pp:<partition>`` — the profiles of one ``events.resolved`` partition, in id order (a
  sorted set with equal scores): what the partition's owner goes through when it must look at every
  profile it owns (e.g. a newly published segment);
- ``rapport:<ns>:x:{<id>}`` — an erasure marker: the receipt that erased this id (an id events carry or a
  profile id); ``rapport:<ns>:er:{<receipt>}`` the erasure record, ``…:done`` the profiles deleted so far.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from profiles.config import LinkLimits
from profiles.identity import Claim, ClaimOutcome, email_owners
from profiles.redis_values import as_text
from profiles.rfm import RfmRanks, RfmThresholds, threshold_ranks
from profiles.state import ANON_PREFIX, ProfileState, anonymous_profile_id, decode, encode
from schemas import erasure as erasure_codec
from schemas.erasure import ErasureRecord

_WATERMARK: Final = struct.Struct(">q")
ABSENT: Final = b""  # the compare-and-set "expected" value of a profile that does not exist yet


def watermark_bytes(watermark: int) -> bytes:
    """What a profile written at ``watermark`` starts with: the "expected" of the next compare-and-set."""
    return _WATERMARK.pack(watermark)


# An empty new value deletes the profile (an erasure). A refusal sets the optional second key, which
# ``_SET_IF_ALL_WRITTEN`` reads (and clears) later in the same transaction.
_CAS_PROFILE: Final = """
if redis.call('GETRANGE', KEYS[1], 0, 7) ~= ARGV[1] then
  if KEYS[2] then redis.call('SET', KEYS[2], 1) end
  return 0
end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"""
# KEYS[2] = ARGV[1] unless a compare-and-set of the transaction was refused (KEYS[1], the refusal mark).
_SET_IF_ALL_WRITTEN: Final = """
if redis.call('DEL', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""
# Forgets an id of the erased profile ARGV[2]: its links (KEYS but the last: an alias "customer<US>event
# id", an email's "customer") go if they point at it, and the id is marked (the last key) with the receipt
# ARGV[1] unless a link of another customer remains (a shared email that customer claimed first stays theirs).
_FORGET: Final = """
local foreign = false
for i = 1, #KEYS - 1 do
  local current = redis.call('GET', KEYS[i])
  if current then
    if current == ARGV[2] or string.sub(current, 1, #ARGV[2] + 1) == ARGV[2] .. '\\31' then
      redis.call('DEL', KEYS[i])
    else
      foreign = true
    end
  end
end
if foreign then return 0 end
redis.call('SET', KEYS[#KEYS], ARGV[1], 'NX')
return 1
"""
_MOVE_POSITION: Final = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# Takes a place for ARGV[1] in the set KEYS[1] (a customer's anonymous ids, or emails) unless it holds ARGV[2].
_RESERVE_PLACE: Final = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""
# First claim wins; ARGV[3] = '1' when the customer had a place for a new link (``_RESERVE_PLACE``).
_CLAIM_LINK: Final = """
local current = redis.call('GET', KEYS[1])
if not current then
  if ARGV[3] ~= '1' then return {'limited', ''} end
  redis.call('SET', KEYS[1], ARGV[1] .. '\\31' .. ARGV[2])
  return {'linked', ARGV[1]}
end
local sep = string.find(current, '\\31', 1, true)
local owner, by = string.sub(current, 1, sep - 1), string.sub(current, sep + 1)
if owner ~= ARGV[1] then return {'conflict', owner} end
if by == ARGV[2] then return {'linked', owner} end
return {'already', owner}
"""


def rfm_position(state: ProfileState) -> tuple[int, int, int] | None:
    """What places a profile in the RFM population (last purchase, orders, net cents); None for non-buyers
    and merged-away profiles."""
    if state.orders == 0 or state.last_purchase_ms is None or state.merged_into is not None:
        return None
    return state.last_purchase_ms, state.orders, state.gross_cents - state.refunded_cents


@dataclass(frozen=True, slots=True)
class ProfileWrite:
    profile_id: str
    expected: bytes  # the watermark bytes the stored profile must still have
    watermark: int
    state: ProfileState | None  # None: delete the profile, erased by the receipt ``erasure_id``
    population_changed: bool
    erasure_id: str | None = None
    #: The profile's events.resolved partition, to index it there when it is created (None: not indexed).
    partition: int | None = None
    #: ``state`` encoded, when the caller has it already (a replay encodes to compare): not encoded again.
    encoded: bytes | None = None
    #: Ids a deleted profile was known by (anonymous ids, emails): erased under ``erasure_id`` too, and their
    #: identity links forgotten where they still point at this profile.
    forget: tuple[str, ...] = ()


class UnreadableProfileError(ValueError):
    """A stored profile this version cannot decode: damaged by hand or by a restore, or written by a release
    whose layout this one does not read. Left as it is in Redis for an operator (docs/streams.md)."""

    def __init__(self, profile_id: str, reason: str) -> None:
        super().__init__(f"the stored profile {profile_id!r} cannot be read: {reason}"[:1000])
        self.profile_id = profile_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Stored:
    """A profile as read: its watermark, its state, and the bytes a compare-and-set must find.

    A profile that does not decode has no ``decoded`` state and raises ``UnreadableProfileError`` from
    ``state``: a reader that does not expect it gets that error, never an absent profile in its place (a hash
    would skip it, a fold would start it afresh and overwrite its history).
    """

    watermark: int
    decoded: ProfileState | None
    expected: bytes
    #: ``state``'s encoding as stored (None: not kept): what a replay compares its result with.
    encoded: bytes | None = None
    #: why the stored bytes do not decode (None: they do, or there are none)
    unreadable: UnreadableProfileError | None = None

    @property
    def state(self) -> ProfileState | None:
        """The state; None if there is no profile. Raises ``UnreadableProfileError``."""
        if self.unreadable is not None:
            raise UnreadableProfileError(self.unreadable.profile_id, self.unreadable.reason)
        return self.decoded


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where each requested id leads (its profile id; None: no profile has it), and the profiles stored
    under the requested ids themselves (loaded in the same round trip)."""

    resolved: dict[str, str | None]
    stored: dict[str, Stored]


class ProfileStore:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._base = f"rapport:{namespace}"
        self._cas = redis.register_script(_CAS_PROFILE)
        self._set_if_all_written = redis.register_script(_SET_IF_ALL_WRITTEN)
        self._move = redis.register_script(_MOVE_POSITION)
        self._reserve = redis.register_script(_RESERVE_PLACE)
        self._claim = redis.register_script(_CLAIM_LINK)
        self._forget = redis.register_script(_FORGET)

    # keys
    def profile_key(self, profile_id: str) -> str:
        return f"{self._base}:p:{{{profile_id}}}"

    def alias_key(self, anonymous_id: str) -> str:
        return f"{self._base}:a:{{{anonymous_id}}}"

    def links_key(self, customer_id: str) -> str:
        return f"{self._base}:l:{{{customer_id}}}"

    def named_key(self, customer_id: str) -> str:
        return f"{self._base}:n:{{{customer_id}}}"

    def email_key(self, email: str) -> str:
        return f"{self._base}:e:{{{email.lower()}}}"

    def position_key(self, topic: str, partition: int) -> str:
        return f"{self._base}:pos:{{{topic}}}:{partition}"

    def rfm_key(self, dimension: Literal["r", "f", "m"]) -> str:
        return f"{self._base}:rfm:{dimension}"

    def partition_index_key(self, partition: int) -> str:
        return f"{self._base}:pp:{partition}"

    async def partition_profiles(self, partition: int, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` profile ids of ``partition`` in id order, strictly after ``after``."""
        start = "-" if after is None else f"({after}"
        raw = await self.redis.zrange(self.partition_index_key(partition), start, "+", bylex=True, offset=0, num=limit)
        return [as_text(pid) for pid in raw if isinstance(pid, bytes | str)]

    def erased_key(self, any_id: str) -> str:
        return f"{self._base}:x:{{{any_id}}}"

    def erasure_key(self, erasure_id: str) -> str:
        return f"{self._base}:er:{{{erasure_id}}}"

    def erasure_done_key(self, erasure_id: str) -> str:
        return f"{self._base}:er:{{{erasure_id}}}:done"

    # profiles
    async def load(self, profile_ids: Sequence[str]) -> dict[str, Stored]:
        """Every requested profile in one round trip; absent ones have watermark -1 and no state."""
        blobs = await self.redis.mget([self.profile_key(p) for p in profile_ids]) if profile_ids else []
        return _stored(profile_ids, blobs)

    async def read_for_apply(
        self, topic: str, partitions: Sequence[int], to_load: Sequence[str], profile_ids: Sequence[str]
    ) -> tuple[dict[int, int], dict[str, Stored], dict[str, str]]:
        """What an apply batch starts from, in one round trip: the partitions' positions, the profiles
        ``to_load``, and the erasure receipts of those of ``profile_ids`` that were erased."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([self.position_key(topic, p) for p in partitions])
            if to_load:
                pipe.mget([self.profile_key(p) for p in to_load])
            if profile_ids:
                pipe.mget([self.erased_key(p) for p in profile_ids])
            replies = iter(await pipe.execute())
        positions = {p: int(v) for p, v in zip(partitions, next(replies), strict=True) if v is not None}
        stored = _stored(to_load, next(replies)) if to_load else {}
        erased = _present(profile_ids, next(replies)) if profile_ids else {}
        return positions, stored, erased

    def profile_id_of(self, key: bytes | str) -> str:
        """The profile id in a profile key (the inverse of ``profile_key``)."""
        return as_text(key)[len(self.profile_key("")) - 1 : -1]

    async def scan_profiles(self, batch: int = 500) -> AsyncIterator[dict[str, Stored]]:
        """Every profile of the namespace, a batch at a time (``SCAN``: no blocking, each profile present
        throughout the scan comes at least once)."""
        ids: list[str] = []
        async for key in self.redis.scan_iter(match=self.profile_key("*"), count=batch):
            ids.append(self.profile_id_of(key))
            if len(ids) >= batch:
                yield await self.load(ids)
                ids = []
        if ids:
            yield await self.load(ids)

    async def save(
        self,
        writes: Sequence[ProfileWrite],
        before: Callable[[Redis], None] | None = None,
        *,
        atomic: bool = False,
        if_all_written: tuple[str, bytes] | None = None,
    ) -> list[str]:
        """Compare-and-set each profile, pipelined; returns the ids whose stored watermark was not the
        expected one (left untouched). ``atomic``: in one MULTI/EXEC, so that a writer that dies while
        sending leaves nothing of it (a replay's chunk); otherwise Redis may apply a prefix.
        ``if_all_written``: (key, value) set in the same transaction if no profile was refused (a replay's
        checkpoint, which must not pass a profile that missed the chunk).

        Population updates go first in the pipeline: Redis's AOF keeps a prefix of the writes, so a profile
        write that survives a crash implies its population update did too (and a replay skips the profile's
        events without touching the population again).
        """
        if not writes and before is None and if_all_written is None:
            return []
        if if_all_written is not None and not atomic:
            raise ValueError("if_all_written needs atomic=True: the mark is read in the same transaction")
        marks = [] if if_all_written is None else [f"{if_all_written[0]}:refused"]
        # ``before`` alone too: a batch of progress markers changes no profile, but the models' progress and
        # watermarks it moved must be kept (dropping them stalled the event-time watermark for good).
        async with self.redis.pipeline(transaction=atomic) as pipe:
            if before is not None:
                before(pipe)  # what must survive whenever the profiles do (e.g. segment memberships)
            self._indexes(pipe, writes)
            first_cas = len(pipe.command_stack)
            for write in writes:
                if write.state is None:
                    blob = b""
                else:
                    body = write.encoded if write.encoded is not None else encode(write.state)
                    blob = watermark_bytes(write.watermark) + body
                keys = [self.profile_key(write.profile_id), *marks]
                await self._cas(keys=keys, args=[write.expected, blob], client=pipe)
            cas_end = len(pipe.command_stack)
            for write in writes:
                if write.erasure_id is not None:
                    await self._erased(pipe, write, write.erasure_id)
            if if_all_written is not None:
                key, value = if_all_written
                await self._set_if_all_written(keys=[*marks, key], args=[value], client=pipe)
            results = await pipe.execute()
        return [w.profile_id for w, ok in zip(writes, results[first_cas:cas_end], strict=True) if not ok]

    def _indexes(self, pipe: Redis, writes: Sequence[ProfileWrite]) -> None:
        for write in writes:
            if write.population_changed:
                self._population(pipe, write.profile_id, write.state)
            if write.partition is not None and write.state is None:
                pipe.zrem(self.partition_index_key(write.partition), write.profile_id)
            elif write.partition is not None and write.expected == ABSENT:
                pipe.zadd(self.partition_index_key(write.partition), {write.profile_id: 0})

    async def _erased(self, pipe: Pipeline, write: ProfileWrite, erasure_id: str) -> None:
        # The marker again: Redis may have lost it since the resolver set it (its AOF keeps a prefix).
        pipe.set(self.erased_key(write.profile_id), erasure_id, nx=True)
        pipe.sadd(self.erasure_done_key(erasure_id), write.profile_id)
        if write.profile_id.startswith(ANON_PREFIX):
            # A visitor erased with its customer after the erasure record was written (linked just before
            # it): its id is refused from now on, and its link is forgotten.
            visitor = write.profile_id.removeprefix(ANON_PREFIX)
            pipe.set(self.erased_key(visitor), erasure_id, nx=True)
            pipe.delete(self.alias_key(visitor))
        else:
            # The customer's linked ids and named emails (their counts' members) go with the profile.
            pipe.delete(self.links_key(write.profile_id), self.named_key(write.profile_id))
        for any_id in write.forget:
            # An id is an anonymous id or an email (lower-cased): both kinds of link are tried, the email's
            # only when its key shares the id's hash tag, so that the script stays in one cluster slot.
            links = [self.alias_key(any_id), *([self.email_key(any_id)] if any_id == any_id.lower() else [])]
            await self._forget(keys=[*links, self.erased_key(any_id)], args=[erasure_id, write.profile_id], client=pipe)

    def _population(self, pipe: Redis, profile_id: str, state: ProfileState | None) -> None:
        position = None if state is None else rfm_position(state)
        if position is None:
            pipe.zrem(self.rfm_key("r"), profile_id)
            pipe.zrem(self.rfm_key("f"), profile_id)
            pipe.zrem(self.rfm_key("m"), profile_id)
            return
        last_purchase, orders, net = position
        pipe.zadd(self.rfm_key("r"), {profile_id: last_purchase})
        pipe.zadd(self.rfm_key("f"), {profile_id: orders})
        pipe.zadd(self.rfm_key("m"), {profile_id: net})

    async def rfm_ranks(self, state: ProfileState) -> RfmRanks | None:
        """How many buyers there are and how many are strictly worse on each RFM dimension."""
        return (await self.rfm_ranks_of([state]))[0]

    async def rfm_ranks_of(self, states: Sequence[ProfileState]) -> list[RfmRanks | None]:
        """``rfm_ranks`` of each state (None for non-buyers), in one round trip."""
        positions = [rfm_position(s) for s in states]
        if all(p is None for p in positions):
            return [None] * len(states)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.rfm_key("r"))
            for position in positions:
                if position is not None:
                    last_purchase, orders, net = position
                    pipe.zcount(self.rfm_key("r"), "-inf", f"({last_purchase}")
                    pipe.zcount(self.rfm_key("f"), "-inf", f"({orders}")
                    pipe.zcount(self.rfm_key("m"), "-inf", f"({net}")
            buyers, *worse = [int(r) for r in await pipe.execute()]
        ranked = iter(zip(worse[0::3], worse[1::3], worse[2::3], strict=True))
        return [None if p is None else RfmRanks(buyers, *next(ranked)) for p in positions]

    async def rfm_thresholds(self) -> RfmThresholds:
        """The population's quintile thresholds per dimension (two round trips: sizes, then the values)."""
        buyers = int(await self.redis.zcard(self.rfm_key("r")))
        ranks = threshold_ranks(buyers)
        async with self.redis.pipeline(transaction=False) as pipe:
            for dimension in ("r", "f", "m"):
                for rank in ranks:
                    pipe.zrange(self.rfm_key(dimension), rank, rank, withscores=True)
            replies = await pipe.execute()
        values = [int(reply[0][1]) if reply else 0 for reply in replies]
        n = len(ranks)
        return RfmThresholds(buyers, values[:n], values[n : 2 * n], values[2 * n :])

    # identity
    async def lookup(self, ids: Sequence[str], anonymous_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """One round trip before a batch is resolved: which of ``ids`` are erased (id → receipt), and the
        customer each of ``anonymous_ids`` is linked to (for those that are linked)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if ids:
                pipe.mget([self.erased_key(i) for i in ids])
            if anonymous_ids:
                pipe.mget([self.alias_key(a) for a in anonymous_ids])
            replies = iter(await pipe.execute())
        erased = _present(ids, next(replies)) if ids else {}
        aliases = _present(anonymous_ids, next(replies)) if anonymous_ids else {}
        return erased, {a: owner.split("\x1f", 1)[0] for a, owner in aliases.items()}

    async def link_owners(self, ids: Sequence[str]) -> dict[str, str]:
        """The customer each of ``ids`` (anonymous ids, emails) is linked to, for those that are linked."""
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([self.alias_key(i) for i in ids])
            pipe.mget([self.email_key(i) for i in ids])
            aliases, emails = await pipe.execute()
        owners = {i: owner.split("\x1f", 1)[0] for i, owner in _present(ids, aliases).items()}
        return {**_present(ids, emails), **owners}

    async def links_of(self, customer_id: str) -> tuple[list[str], list[str]]:
        """The anonymous ids and the emails linked to ``customer_id`` (sorted), as its link sets hold them: what
        is known of a customer whose stored profile does not decode."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.links_key(customer_id))
            pipe.smembers(self.named_key(customer_id))
            anonymous, emails = await pipe.execute()
        return sorted(as_text(a) for a in anonymous), sorted(as_text(e) for e in emails)

    async def link(
        self,
        claims: Sequence[tuple[str, str, str]],
        named: Sequence[tuple[str, str]],
        limits: LinkLimits,
    ) -> tuple[list[Claim], list[bool]]:
        """Decide a batch's identity links as ``identity.LinkTable`` does one at a time, in order; idempotent.

        Each claim ``(anonymous_id, customer_id, event_id)`` links the id unless it is linked already or the
        customer holds ``limits.anonymous_ids``; each naming ``(customer_id, email)`` is accepted unless the
        customer named ``limits.emails`` others, and an accepted email finds its customer unless it has an
        owner already (its first). Returns the claims' outcomes and whether each naming was accepted.

        A customer's counts and an id's link are in different cluster slots, so no script sees both: each
        claim first takes a place among its customer's ids, then claims the id only if it got one, so that
        a link never exists, even for an instant, past the limit. Claims are sent together (two round
        trips) in runs where no anonymous id is claimed by two customers: past such a claim a new run
        starts, because the claim that conflicts may have held the place the other needed when it was
        linked. A shared device claimed by its users in turn costs a run per change of user."""
        if not claims and not named:
            return [], []
        runs: list[list[tuple[str, str, str]]] = [[]]
        claimant: dict[str, str] = {}
        for claim in claims:
            anonymous_id, customer_id, _ = claim
            if claimant.setdefault(anonymous_id, customer_id) != customer_id:
                runs.append([])
                claimant = {anonymous_id: customer_id}
            runs[-1].append(claim)
        outcomes, accepted = await self._link(runs[0], named, limits)
        for run in runs[1:]:
            outcomes += (await self._link(run, [], limits))[0]
        return outcomes, accepted

    async def _link(
        self,
        claims: Sequence[tuple[str, str, str]],
        named: Sequence[tuple[str, str]],
        limits: LinkLimits,
    ) -> tuple[list[Claim], list[bool]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for anonymous_id, customer_id, _ in claims:
                await self._reserve(
                    keys=[self.links_key(customer_id)], args=[anonymous_id, limits.anonymous_ids], client=pipe
                )
            for customer_id, email in named:
                await self._reserve(keys=[self.named_key(customer_id)], args=[email, limits.emails], client=pipe)
            replies = await pipe.execute()
        places, accepted = replies[: len(claims)], [bool(r) for r in replies[len(claims) :]]
        async with self.redis.pipeline(transaction=False) as pipe:
            for (anonymous_id, customer_id, event_id), place in zip(claims, places, strict=True):
                await self._claim(
                    keys=[self.alias_key(anonymous_id)], args=[customer_id, event_id, int(place)], client=pipe
                )
            for email, customer_id in email_owners(named, accepted).items():
                pipe.set(self.email_key(email), customer_id, nx=True)
            results = await pipe.execute()
        outcomes = [Claim(_outcome(r[0]), as_text(r[1]) or None) for r in results[: len(claims)]]
        # A claim that found the id held by another customer took a place it must give back. One at a time,
        # it would never have had it: a later claim of that customer refused for want of a place is
        # claimed again (with the rest of the run, whose claims are idempotent).
        given_back = [
            i for i, (c, place) in enumerate(zip(outcomes, places, strict=True)) if c.outcome == "conflict" and place
        ]
        if not given_back:
            return outcomes, accepted
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in given_back:
                anonymous_id, customer_id, _ = claims[i]
                pipe.srem(self.links_key(customer_id), anonymous_id)
            await pipe.execute()
        refused_after = (
            i for i in given_back if any(_refused_after(claims, outcomes, i, j) for j in range(i + 1, len(claims)))
        )
        first = next(refused_after, None)
        if first is not None:
            again, _ = await self._link(claims[first + 1 :], [], limits)
            outcomes[first + 1 :] = again
        return outcomes, accepted

    # erasure
    async def record_erasures(self, records: Sequence[ErasureRecord]) -> None:
        """Mark every id and profile id of each record as erased (a first receipt stays), forget their
        identity links, and keep the record for progress reports. Idempotent."""
        if not records:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                for any_id in dict.fromkeys([*record.ids, *record.profile_ids]):
                    pipe.set(self.erased_key(any_id), record.erasure_id, nx=True)
                if record.ids:
                    pipe.delete(*(self.alias_key(i) for i in record.ids))
                    pipe.delete(*(self.email_key(i) for i in record.ids))
                pipe.set(self.erasure_key(record.erasure_id), erasure_codec.encode(record), nx=True)
            await pipe.execute()

    async def erasure(self, erasure_id: str) -> tuple[ErasureRecord, set[str]] | None:
        """An erasure's record and the profiles deleted so far, if this namespace knows the receipt."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.erasure_key(erasure_id))
            pipe.smembers(self.erasure_done_key(erasure_id))
            blob, done = await pipe.execute()
        if blob is None:
            return None
        return erasure_codec.decode(_bytes(blob)), {as_text(d) for d in done}

    async def erased(self, ids: Sequence[str]) -> dict[str, str]:
        """The erasure receipt of each of ``ids`` that was erased."""
        return _present(ids, await self.redis.mget([self.erased_key(i) for i in ids])) if ids else {}

    async def resolve_id(self, any_id: str) -> str | None:
        """The profile id for a customer id, an anonymous id or an email, if any profile has it."""
        return (await self.resolve_ids([any_id]))[any_id]

    def queue_resolution(self, pipe: Pipeline, any_ids: Sequence[str]) -> None:
        """Queue on ``pipe`` what ``resolution`` needs, so that a caller can send it in the same round trip as
        its own commands (the API's rate limit): per id one ``MGET`` of its erasure marker, the profile stored
        under it, the customer it is an alias of, the customer it is the email of, and its visitor profile
        (loaded at once: an anonymous id not linked to a customer reads its own visitor profile)."""
        for any_id in any_ids:
            pipe.mget(self.resolution_keys(any_id))

    def resolution_keys(self, any_id: str) -> list[str]:
        """The keys whose values (``MGET``, in this order) ``resolution`` reads for one id."""
        return [
            self.erased_key(any_id),
            self.profile_key(any_id),
            self.alias_key(any_id),
            self.email_key(any_id),
            self.profile_key(anonymous_profile_id(any_id)),
        ]

    def resolution(self, any_ids: Sequence[str], replies: Sequence[object]) -> Resolution:
        """The ``Resolution`` of ``any_ids`` from the replies to ``queue_resolution``'s commands."""
        found = [_five(reply) for reply in replies]
        resolved = _resolved(any_ids, found)
        loaded: list[tuple[str, bytes | str | None]] = []
        for any_id, (_, profile, _, _, visitor) in zip(any_ids, found, strict=True):
            if resolved[any_id] == any_id:
                loaded.append((any_id, profile))
            elif resolved[any_id] == anonymous_profile_id(any_id):
                loaded.append((anonymous_profile_id(any_id), visitor))
        return Resolution(resolved, _stored([pid for pid, _ in loaded], [blob for _, blob in loaded]))

    async def resolve_and_load(self, any_ids: Sequence[str]) -> Resolution:
        """``resolve_ids`` and, in the same round trip, the profile stored under each id itself (the common
        case: callers name customers by their id) or, for an anonymous id of nobody, its visitor profile; the
        customers reached through an alias or an email still need a ``load``."""
        if not any_ids:
            return Resolution({}, {})
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_resolution(pipe, any_ids)
            replies = await pipe.execute()
        return self.resolution(any_ids, replies)

    async def resolve_ids(self, any_ids: Sequence[str]) -> dict[str, str | None]:
        """``resolve_id`` of each id, in one round trip. An erased id has no profile; otherwise a profile with
        that id wins, then the customer an anonymous id is linked to, then the owner of an email, then the
        visitor's anonymous profile."""
        return (await self.resolve_and_load(any_ids)).resolved

    # positions
    async def positions(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Next offset to read per partition, where one is recorded."""
        parts = list(partitions)
        values = await self.redis.mget([self.position_key(topic, p) for p in parts]) if parts else []
        return {p: int(v) for p, v in zip(parts, values, strict=True) if v is not None}

    async def start_positions(self, topic: str, offsets: Mapping[int, int]) -> None:
        """Record where reading starts, for partitions that have no position yet."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition, offset in offsets.items():
                pipe.set(self.position_key(topic, partition), offset, nx=True)
            await pipe.execute()

    async def move_positions(self, topic: str, moves: Mapping[int, tuple[int, int]]) -> set[int]:
        """Move each partition's position from ``start`` to ``end`` if it is still at ``start`` (or was never
        recorded); returns the partitions whose position had moved elsewhere (left untouched)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition, (start, end) in moves.items():
                await self._move(keys=[self.position_key(topic, partition)], args=[start, end], client=pipe)
            results = await pipe.execute()
        return {partition for partition, moved in zip(moves, results, strict=True) if not moved}


def _resolved(any_ids: Sequence[str], found: Sequence[Sequence[bytes | str | None]]) -> dict[str, str | None]:
    """``resolve_ids``' answer from the five values read per id (erasure marker, profile, alias, email owner,
    visitor profile)."""
    out: dict[str, str | None] = {}
    for any_id, (erased, profile, alias, email_owner, visitor) in zip(any_ids, found, strict=True):
        if erased is not None:
            out[any_id] = None
        elif profile is not None:
            out[any_id] = any_id
        elif alias is not None:
            out[any_id] = as_text(alias).split("\x1f", 1)[0]
        elif email_owner is not None:
            out[any_id] = as_text(email_owner)
        else:
            out[any_id] = anonymous_profile_id(any_id) if visitor is not None else None
    return out


def _five(reply: object) -> list[bytes | str | None]:
    if not isinstance(reply, list) or len(reply) != 5:
        raise TypeError(f"a resolution read returned {reply!r}")
    return [_blob(value) for value in reply]


def _stored(profile_ids: Sequence[str], blobs: Sequence[bytes | str | None]) -> dict[str, Stored]:
    out = {}
    for profile_id, blob in zip(profile_ids, blobs, strict=True):
        if blob is None:
            out[profile_id] = Stored(-1, None, ABSENT)
        else:
            out[profile_id] = stored_from(profile_id, _bytes(blob))
    return out


def stored_from(profile_id: str, raw: bytes) -> Stored:
    """The profile that a profile key's bytes hold: an unreadable one (``Stored.unreadable``) if they do not decode."""
    body = raw[8:]
    try:
        return Stored(_WATERMARK.unpack_from(raw)[0], decode(body), raw[:8], body)
    except (msgspec.MsgspecError, struct.error) as exc:
        watermark = _WATERMARK.unpack_from(raw)[0] if len(raw) >= _WATERMARK.size else -1
        return Stored(watermark, None, raw[:8], unreadable=UnreadableProfileError(profile_id, str(exc)))


def _blob(reply: object) -> bytes | str | None:
    if reply is None or isinstance(reply, bytes | str):
        return reply
    raise TypeError(f"a profile read returned {type(reply).__name__}")


def _present(ids: Sequence[str], values: Sequence[bytes | str | None]) -> dict[str, str]:
    return {i: as_text(v) for i, v in zip(ids, values, strict=True) if v is not None}


def _bytes(value: bytes | str) -> bytes:
    # The store's client must not decode responses: profiles are binary.
    if isinstance(value, str):
        raise TypeError("the Redis client of a ProfileStore must use decode_responses=False")
    return value


def _refused_after(claims: Sequence[tuple[str, str, str]], outcomes: Sequence[Claim], given: int, later: int) -> bool:
    """Whether claim ``later`` found no place among the ids of the customer that claim ``given`` gave one back to."""
    return outcomes[later].outcome == "limited" and claims[later][1] == claims[given][1]


def _outcome(value: bytes | str) -> ClaimOutcome:
    text = as_text(value)
    if text not in ("linked", "already", "conflict", "limited"):
        raise ValueError(f"unexpected claim outcome {text!r}")
    return text  # type: ignore[return-value]  # checked just above
