"""Reading whole namespaces for ``rapport namespace hash | diff | list | promote``: SCAN-based, never blocking
Redis; and which processes write a namespace (``drop``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from profiles.canonical import canonical_view, field_differences, is_canonical, namespace_digest, profile_digest
from profiles.config import FoldConfig
from profiles.model_store import ModelStore
from profiles.segment_store import SegmentStore
from profiles.segments import PromotionCause, SegmentChange, promotion_changes
from profiles.segments.changes import promoted_differences
from profiles.segments.membership import Segments, excerpts
from profiles.store import ProfileStore
from services.kafka_clients import make_admin
from services.settings import Settings

if TYPE_CHECKING:
    from profiles.models.scoring import ServedModel

_EXAMPLES = 3
_PAGE = 1000  # profiles loaded per round trip


def running_writers(settings: Settings, namespace: str, *, webhooks: bool = True) -> dict[str, int]:
    """The consumer groups of processes that write ``namespace``'s keys that have members now, with how many:
    its workers', trainers' and (with ``webhooks``) webhook deliverers', one group per webhook
    (``Settings.webhook_part_group``), the shared one of earlier versions too. Each member is a running
    process. Blocking (kafka-python); raises ``KafkaError`` if Kafka cannot tell."""
    webhook_groups = settings.webhook_group_of(namespace)
    admin = make_admin(settings, "namespace-writers", request_timeout_ms=10_000)
    try:
        groups = [g for g in settings.writer_groups_of(namespace) if webhooks or g != webhook_groups]
        if webhooks:
            groups += [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(f"{webhook_groups}.")]
        described = admin.describe_groups(groups)
    finally:
        admin.close()
    return {group: len(found["members"]) for group, found in described.items() if found["members"]}


async def memberships(redis: Redis, namespace: str) -> dict[str, set[str]]:
    """Every segment of the namespace with its members."""
    segments = SegmentStore(redis, namespace)
    out: dict[str, set[str]] = {}
    for name in await segments.definitions():
        members: set[str] = set()
        after: str | None = None
        while page := await segments.members(name, after, 1000):
            members.update(page)
            after = page[-1]
        out[name] = members
    return out


@dataclass(frozen=True)
class NamespaceCheck:
    profiles: int  # profile keys scanned
    unreadable_profiles: dict[str, str]  # profile id → why it does not decode
    unreadable_segments: dict[str, str]  # segment → why its definition does not decode


async def check_namespace(redis: Redis, namespace: str) -> NamespaceCheck:
    """Every key of the namespace that this version reads before it can serve or fold: which do not decode
    (docs/streams.md, "Unreadable profiles"). One SCAN of the profiles."""
    seen: set[str] = set()  # SCAN may return a key twice
    unreadable: dict[str, str] = {}
    async for batch in ProfileStore(redis, namespace).scan_profiles():
        seen.update(batch)
        unreadable.update({pid: s.unreadable.reason for pid, s in batch.items() if s.unreadable is not None})
    segments = await SegmentStore(redis, namespace).unreadable_definitions()
    return NamespaceCheck(len(seen), dict(sorted(unreadable.items())), dict(sorted(segments.items())))


@dataclass(frozen=True)
class NamespaceHash:
    digest: str
    profiles: int
    segments: int


async def hash_namespace(redis: Redis, namespace: str, config: FoldConfig) -> NamespaceHash:
    """``profiles.canonical.namespace_digest`` over every profile and segment membership."""
    digests: list[bytes] = []
    async for batch in ProfileStore(redis, namespace).scan_profiles():
        digests += [profile_digest(s.state, config) for s in batch.values() if s.state and is_canonical(s.state)]
    members = await memberships(redis, namespace)
    return NamespaceHash(namespace_digest(digests, members), len(digests), len(members))


@dataclass
class NamespaceDiff:
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    differing: int = 0
    compared: int = 0
    fields: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    segments: dict[str, tuple[int, int, list[str]]] = field(default_factory=dict)  # only-in-a, only-in-b, examples

    @property
    def same(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.differing or self.segments)


async def diff_namespaces(redis: Redis, a: str, b: str, config: FoldConfig) -> NamespaceDiff:
    """Profiles only in one namespace, profiles whose canonical views differ (per field, with examples),
    and segment memberships that differ."""
    out = NamespaceDiff()
    store_a, store_b = ProfileStore(redis, a), ProfileStore(redis, b)
    seen: set[str] = set()
    async for batch in store_a.scan_profiles():
        live_a = {pid: s.state for pid, s in batch.items() if s.state and is_canonical(s.state)}
        seen.update(live_a)
        other = await store_b.load(list(live_a))
        for pid, state in live_a.items():
            state_b = other[pid].state
            if state_b is None or not is_canonical(state_b):
                out.only_in_a.append(pid)
                continue
            out.compared += 1
            paths = field_differences(canonical_view(state, config), canonical_view(state_b, config))
            if paths:
                out.differing += 1
                for path in paths:
                    out.fields[path] += 1
                    examples = out.examples.setdefault(path, [])
                    if len(examples) < _EXAMPLES:
                        examples.append(pid)
    async for batch in store_b.scan_profiles():
        out.only_in_b += [p for p, s in batch.items() if s.state and is_canonical(s.state) and p not in seen]
    members_a, members_b = await memberships(redis, a), await memberships(redis, b)
    for name in sorted(members_a.keys() | members_b.keys()):
        left, right = members_a.get(name, set()), members_b.get(name, set())
        if left != right:
            examples = sorted(left ^ right)[:_EXAMPLES]
            out.segments[name] = (len(left - right), len(right - left), examples)
    out.only_in_a.sort()
    out.only_in_b.sort()
    return out


async def promotion_announcements(
    redis: Redis, settings: Settings, served: str, promoted: str, at_ms: int
) -> list[SegmentChange]:
    """The changes that tell subscribers how ``promoted``'s memberships differ from ``served``'s
    (``profiles.segments.promotion_changes``), each with the fields its rule reads in ``promoted``'s profile
    when ``promoted`` decided that membership (``at_ms`` if it never evaluated the profile), with scores from
    ``promoted``'s models."""
    definitions = await SegmentStore(redis, promoted).definitions()
    before, after = await memberships(redis, served), await memberships(redis, promoted)
    versions = {name: d.version for name, d in definitions.items()}
    differing = promoted_differences(before, after, versions)
    ids = sorted({pid for pids in differing.values() for pid in pids})
    excerpts = await _excerpts(redis, settings, promoted, Segments.of(definitions), ids, at_ms=at_ms)
    return promotion_changes(before, after, versions, PromotionCause(served, promoted, at_ms), excerpts)


async def _excerpts(
    redis: Redis, settings: Settings, namespace: str, segments: Segments, ids: list[str], *, at_ms: int
) -> dict[str, dict[str, dict[str, Any]]]:
    # Imported here: the models' modules bring River and SciPy (~0.9 s), which `rapport namespace hash | list |
    # diff | drop` never use.
    from profiles.models.scoring import score_values  # noqa: PLC0415
    from services.model_cache import ModelCache  # noqa: PLC0415

    config, specs = settings.profile.fold_config(), settings.models.specs()
    models: dict[str, ServedModel] = {}
    reads_scores = any(path[0] == "scores" for path in segments.reads)
    if reads_scores:
        secret = settings.models.secret.get_secret_value().encode()
        models = await ModelCache(ModelStore(redis, namespace), specs, secret, settings.models.reload_s).current()
    store, decided, out = ProfileStore(redis, namespace), SegmentStore(redis, namespace), {}
    for start in range(0, len(ids), _PAGE):
        page = ids[start : start + _PAGE]
        evaluated = await decided.memberships(page)
        for pid, stored in (await store.load(page)).items():
            if (state := stored.state) is not None:
                # When the namespace decided the membership announced: the excerpt then explains that decision,
                # even if a window's boundary has passed since (its workers re-evaluate it once started).
                at = max(evaluated[pid].evaluated_at_ms or at_ms, state.last_event_ms or 0)
                # No model served yet: the cold-start heuristic's scores, as the workers' rules read them.
                scores = score_values(state, at, config, specs, models) if reads_scores else None
                out[pid] = excerpts(state, segments, at_ms=at, config=config, scores=scores)
    return out


async def profile_counts(redis: Redis, namespaces: Sequence[str]) -> dict[str, int]:
    """Indexed profiles per namespace (the sizes of its partition indexes), for ``namespace list``.

    One ``SCAN`` of the keyspace for all of them, then one pipelined ``ZCARD`` per index: with a ``SCAN`` per
    namespace, listing 137 namespaces in a Redis of 838,000 keys took 4 min 26 s; this way, 2.7 s for the
    whole command (137 namespaces, 859,000 keys)."""
    wanted = set(namespaces)
    indexes: list[tuple[str, bytes]] = []
    async for key in redis.scan_iter(match="rapport:*:pp:*", count=5_000):
        namespace = key.split(b":", 2)[1].decode()
        if namespace in wanted:
            indexes.append((namespace, key))
    counts = dict.fromkeys(namespaces, 0)
    async with redis.pipeline(transaction=False) as pipe:
        for _, key in indexes:
            pipe.zcard(key)
        sizes = await pipe.execute() if indexes else []
    for (namespace, _), size in zip(indexes, sizes, strict=True):
        counts[namespace] += int(size)
    return counts
