"""The live pipeline's pure parts under adversarial schedules: exactly the offline fold, whatever happens.

A small model of the live worker drives the real pure code (``profiles.identity.resolve``,
``profiles.batch.BatchFold``, ``streams.owned_states.OwnedStates``) with Kafka and Redis replaced by lists
and dicts that keep their guarantees: per-partition order, first claim wins, compare-and-set writes. The
schedule is hypothesis's to choose: which stage runs next, batch sizes, a resolver that crashes in the
middle of a send and restarts from its last commit (sending a suffix again, now with links it claimed
before), an apply stage that crashes before its send, after it or after its write. Whatever the schedule,
the profiles must equal the offline fold of the same events in the order they were produced.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from profiles.batch import BatchFold
from profiles.config import HOUR_MS, FoldConfig
from profiles.identity import Arrival, LinkTable, anonymous_only, claims, linked_after, named_emails, resolve
from profiles.offline import OfflineFolder
from profiles.state import ProfileState, decode, encode
from profiles.store import ABSENT, Stored, watermark_bytes
from profiles.timeutil import iso
from profiles.view import render
from schemas.resolved import RawSource, Resolved
from schemas.validation import Rejection, decode_event
from streams.owned_states import OwnedStates
from tests.oracle import diff_profiles

CONFIG = FoldConfig()
T0 = 1_740_000_000_000
RAW_PARTITIONS = {"events.clicks": 2, "events.identifies": 1}
RESOLVED_PARTITIONS = 2
CUSTOMERS = ("c-1", "c-2")
ANONYMOUS = ("a-1", "a-2", "a-3")


def _partition(key: str, count: int) -> int:
    return zlib.crc32(key.encode()) % count


@st.composite
def histories(draw: st.DrawFn, copies: bool) -> list[bytes]:
    """Clicks by customers and visitors, identifies (some claiming an id another customer holds), and
    (``copies``) exact copies of recent events, in production order."""
    out: list[bytes] = []
    for n in range(draw(st.integers(4, 40))):
        kind = draw(st.sampled_from(["click", "click", "click", "identify", *(["copy"] if copies else [])]))
        if kind == "copy" and out:
            out.append(draw(st.sampled_from(out[-6:])))
            continue
        at = iso(T0 + n * 60_000)
        if kind == "identify":
            fields = {"type": "identify", "customer_id": draw(st.sampled_from(CUSTOMERS)), "traits": {"country": "DE"}}
            fields["anonymous_id"] = draw(st.sampled_from(ANONYMOUS))
        else:
            fields = {"type": "click", "action": "product_view", "url": "/p", "session_id": f"s-{n % 3}"}
            fields["category"] = draw(st.sampled_from(["shoes", "books"]))
            who = draw(st.sampled_from(CUSTOMERS + ANONYMOUS + ANONYMOUS))  # visitors make stragglers
            if who.startswith("c-"):
                fields["customer_id"] = who
                if draw(st.booleans()):  # a known visitor's click carries both ids
                    fields["anonymous_id"] = draw(st.sampled_from(ANONYMOUS))
            else:
                fields["anonymous_id"] = who
        out.append(orjson.dumps({"event_id": f"e-{n}", "timestamp": at, **fields}))
    return out


@dataclass
class Resolver:
    """The resolve stage of one raw partition (its own worker's): look up and claim, later send."""

    tp: tuple[str, int]
    next: int = 0
    committed: int = 0
    #: Resolved but not sent yet, and the offset its records end at.
    pending: list[Resolved] | None = None
    pending_end: int = 0


@dataclass
class Pipeline:
    """Raw partitions in, profiles out; workers whose stages may crash at any of their steps."""

    raw: dict[tuple[str, int], list[bytes]]
    config: FoldConfig
    resolved: list[list[Resolved]] = field(default_factory=lambda: [[] for _ in range(RESOLVED_PARTITIONS)])
    resolvers: list[Resolver] = field(default_factory=list)
    links: LinkTable = field(default_factory=lambda: LinkTable(CONFIG.link_limits))
    # Redis: the apply stage's positions and the profiles (watermark, bytes).
    positions: list[int] = field(default_factory=lambda: [0] * RESOLVED_PARTITIONS)
    stored: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    owned: OwnedStates = field(default_factory=lambda: OwnedStates(64))

    def __post_init__(self) -> None:
        self.resolvers = [Resolver(tp) for tp in self.raw]

    def look_up(self, which: int, take: int) -> None:
        """A resolver reads up to ``take`` records, looks up their links and claims its identifies' ids;
        another resolver may claim or send before this one sends."""
        resolver = self.resolvers[which]
        if resolver.pending is not None:
            return
        records = self.raw[resolver.tp]
        end = min(resolver.next + take, len(records))
        arrivals: list[Arrival] = []
        for offset in range(resolver.next, end):
            event = decode_event(records[offset])
            assert not isinstance(event, Rejection)
            arrivals.append(Arrival(RawSource(*resolver.tp, offset), records[offset], event))
        linked = self.links.linked(anonymous_only(arrivals))
        claimed = claims(arrivals)
        outcomes, accepted = self.links.claim(claimed), self.links.name(named_emails(arrivals))
        resolver.pending = resolve(arrivals, outcomes, accepted, linked_after(linked, claimed, outcomes))
        resolver.pending_end = end

    def send(self, which: int, cut: list[int] | None, commit: bool) -> None:
        """The resolver sends what it resolved; ``cut``: it dies mid-send, after each resolved partition
        received that many of its records, and restarts from its last commit (its claims stay)."""
        resolver = self.resolvers[which]
        if resolver.pending is None:
            return
        for partition in range(RESOLVED_PARTITIONS):
            mine = [r for r in resolver.pending if _partition(r.profile_id, RESOLVED_PARTITIONS) == partition]
            self.resolved[partition].extend(mine if cut is None else mine[: cut[partition]])
        resolver.pending = None
        resolver.next = resolver.committed if cut is not None else resolver.pending_end
        if commit and cut is None:
            resolver.committed = resolver.next

    def apply_batch(self, partition: int, size: int, crash: str | None) -> None:
        """Apply up to ``size`` records of ``partition`` as the live apply stage does: fold, send what the
        fold emits, write the profiles (compare-and-set), move the position; ``crash`` stops it after the
        named step, and the cached states of the profiles it touched are dropped."""
        start = self.positions[partition]
        batch = self.resolved[partition][start : start + size]
        if not batch:
            return
        pids = list(dict.fromkeys(r.profile_id for r in batch))
        cached, missing = self.owned.split(pids)
        loaded = {pid: self._load(pid) for pid in missing}
        fold = BatchFold({**cached, **loaded}, {}, self.config)
        emitted = [out for i, record in enumerate(batch) for out in fold.apply(record, partition, start + i)]
        if crash == "fold":
            self.owned.drop(pids)
            return
        for record in emitted:
            self.resolved[_partition(record.profile_id, RESOLVED_PARTITIONS)].append(record)
        if crash == "send":
            self.owned.drop(pids)
            return
        writes = fold.writes(T0)
        for write in writes:
            current = self.stored.get(write.profile_id)
            assert (watermark_bytes(current[0]) if current else ABSENT) == write.expected, "fenced"
            assert write.state is not None
            self.stored[write.profile_id] = (write.watermark, encode(write.state))
        if crash == "write":
            self.owned.drop(pids)
            return
        self.positions[partition] = start + len(batch)
        self.owned.written(writes)

    def _load(self, pid: str) -> Stored:
        if pid not in self.stored:
            return Stored(-1, None, ABSENT)
        watermark, blob = self.stored[pid]
        return Stored(watermark, decode(blob), watermark_bytes(watermark), blob)

    def done(self) -> bool:
        raw_done = all(r.next == len(self.raw[r.tp]) and r.pending is None for r in self.resolvers)
        return raw_done and all(p == len(r) for p, r in zip(self.positions, self.resolved, strict=True))


def produce(history: list[bytes]) -> tuple[dict[tuple[str, int], list[bytes]], list[Arrival]]:
    """Raw partitions keyed as producers key them, and the arrivals in production order."""
    raw: dict[tuple[str, int], list[bytes]] = {
        (topic, p): [] for topic, count in RAW_PARTITIONS.items() for p in range(count)
    }
    arrivals = []
    for line in history:
        event = decode_event(line)
        assert not isinstance(event, Rejection)
        topic = "events.identifies" if event.type == "identify" else "events.clicks"
        key = event.customer_id or event.anonymous_id or ""
        tp = (topic, _partition(key, RAW_PARTITIONS[topic]))
        arrivals.append(Arrival(RawSource(*tp, len(raw[tp])), line, event))
        raw[tp].append(line)
    return raw, arrivals


CRASHES = st.sampled_from([None, None, None, "fold", "send", "write"])


SCHEDULES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SCHEDULES
@given(history=histories(copies=True), data=st.data())
def test_any_schedule_of_stages_and_crashes_gives_the_offline_fold(history: list[bytes], data: st.DataObject) -> None:
    run_and_compare(history, data, CONFIG)


@SCHEDULES
@given(history=histories(copies=False), data=st.data())
def test_repeats_are_recognised_by_positions_and_marks_not_by_the_event_id_memory(
    history: list[bytes], data: st.DataObject
) -> None:
    """The same, with no duplicates in the history and a one-id duplicate memory: every repeat the
    schedule causes must be recognised by watermarks, stream marks and hand-over bookkeeping alone."""
    run_and_compare(history, data, FoldConfig(dedup_memory=1))


def run_and_compare(history: list[bytes], data: st.DataObject, config: FoldConfig) -> None:
    raw, arrivals = produce(history)
    pipeline = Pipeline(raw, config)
    resolvers = len(pipeline.resolvers)
    for _ in range(data.draw(st.integers(0, 80))):
        step = data.draw(st.sampled_from(["look up", "send", "apply"]))
        if step == "look up":
            pipeline.look_up(data.draw(st.integers(0, resolvers - 1)), data.draw(st.integers(1, 4)))
        elif step == "send":
            cut = None
            if data.draw(st.integers(0, 3)) == 0:
                cut = data.draw(st.lists(st.integers(0, 8), min_size=RESOLVED_PARTITIONS, max_size=RESOLVED_PARTITIONS))
            pipeline.send(data.draw(st.integers(0, resolvers - 1)), cut, data.draw(st.booleans()))
        else:
            partition = data.draw(st.integers(0, RESOLVED_PARTITIONS - 1))
            pipeline.apply_batch(partition, data.draw(st.integers(1, 5)), data.draw(CRASHES))
    while not pipeline.done():  # the rest of the run, without faults
        for which in range(resolvers):
            pipeline.look_up(which, len(history))
            pipeline.send(which, None, commit=True)
        for partition in range(RESOLVED_PARTITIONS):
            pipeline.apply_batch(partition, len(history) * 4, None)

    # Steer the search towards the rarer paths: stragglers forwarded by a merged visitor's profile.
    target(float(sum(r.kind == "forward" for part in pipeline.resolved for r in part)), label="forwards")
    folder = OfflineFolder(config)
    folder.feed(arrivals)
    expected = folder.profiles()
    actual = {pid: decode(blob) for pid, (_, blob) in pipeline.stored.items()}
    live = {pid: state for pid, state in actual.items() if state.merged_into is None}
    as_of = T0 + len(history) * 60_000 + HOUR_MS
    # Sums of decayed floats in another order may differ in their last bit: compared to 1e-9.
    differences = diff_profiles(
        {pid: _view(s, as_of, config) for pid, s in expected.items()},
        {pid: _view(s, as_of, config) for pid, s in live.items()},
    )
    assert differences == []
    assert all(state.held == [] for state in live.values())


def _view(state: ProfileState, as_of: int, config: FoldConfig) -> dict[str, Any]:
    view = render(state, as_of, config)
    del view["meta"]["updated_at"]  # the time of the write, which the offline fold does not make
    return view
