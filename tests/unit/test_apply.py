"""The apply stage's decisions: replays skipped, merges handed over once, stragglers forwarded once,
conflicts recorded, the two bounded memories behaving as documented, and corrupt records refused."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from profiles.apply import CorruptRecordError, apply_resolved, new_state_for
from profiles.config import DAY_MS, FoldConfig
from profiles.dedup import ID_BYTES, MAX_STREAMS, stream_of
from profiles.fold import apply
from profiles.identity import Arrival, resolve
from profiles.ids import id_hash
from profiles.merge import merge_into
from profiles.models.specs import default_specs
from profiles.models.tracking import ModelTracking
from profiles.offline import OfflineFolder
from profiles.state import EMAIL_ACTION_INDEX, ProfileState, decode, encode
from profiles.timeutil import iso
from profiles.view import render
from schemas.events import AnyEvent
from schemas.resolved import LinkDecision, RawSource, Resolved
from schemas.validation import Rejection, decode_event

CONFIG = FoldConfig()
T0 = 1_740_000_000_000  # 2025-02-19T21:20:00Z


def event(kind: str = "click", n: int = 1, at: int = T0, **fields: Any) -> bytes:
    base: dict[str, Any] = {"event_id": f"e-{n}", "type": kind, "timestamp": iso(at)}
    if kind == "click":
        base |= {"action": "product_view", "url": "/p", "session_id": f"s-{n}", "category": "shoes"}
    elif kind == "identify":
        base |= {"traits": {"email": "Jo@Example.com", "country": "DE"}}
    elif kind == "purchase":
        base |= {"action": "order", "order_id": f"o-{n}", "currency": "EUR", "total": 10.0}
    return orjson.dumps({**base, **fields})


def parsed(raw: bytes) -> AnyEvent:
    result = decode_event(raw)
    assert not isinstance(result, Rejection), result
    return result


def resolved(raw: bytes, profile: str, offset: int) -> Resolved:
    return Resolved(kind="event", profile_id=profile, event=raw, source=RawSource("events.clicks", 3, offset))


def run(state: ProfileState, record: Resolved, offset: int = 0) -> tuple[ProfileState, list[Resolved]]:
    return apply_resolved(state, record, partition=1, offset=offset, config=CONFIG)


def test_a_raw_record_sent_again_by_a_restarted_resolver_is_skipped() -> None:
    state = new_state_for("c-1")
    raw = event(n=1, customer_id="c-1")
    state, _ = run(state, resolved(raw, "c-1", offset=40))
    state, _ = run(state, resolved(event(n=2, customer_id="c-1"), "c-1", offset=41))
    state, _ = run(state, resolved(raw, "c-1", offset=40))  # the resolver restarted from offset 40
    assert state.events_applied == 2
    assert state.clicks[1] == 2


def test_merge_hands_the_anonymous_state_over_once_and_forwards_stragglers_once() -> None:
    anon = new_state_for("anon:a-1")
    anon, _ = run(anon, resolved(event(n=1, anonymous_id="a-1"), "anon:a-1", offset=1))
    merge_out = Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1")
    anon, out = run(anon, merge_out, offset=2)
    assert anon.merged_into == "c-1"
    assert [r.kind for r in out] == ["merge_in"]
    handover = out[0]
    assert run(anon, merge_out, offset=3)[1] == []  # redelivered: no second handover

    straggler = resolved(event(n=2, anonymous_id="a-1"), "anon:a-1", offset=7)
    anon, forwarded = run(anon, straggler, offset=4)
    assert [(r.kind, r.profile_id, r.origin_partition, r.origin_offset) for r in forwarded] == [
        ("forward", "c-1", 1, 4)
    ]

    customer = new_state_for("c-1")
    identify = Resolved(
        kind="event",
        profile_id="c-1",
        event=event("identify", n=3, customer_id="c-1", anonymous_id="a-1"),
        source=RawSource("events.identities", 0, 9),
        link=LinkDecision("a-1"),
    )
    for record in (forwarded[0], identify, handover, handover, forwarded[0]):  # redeliveries included
        customer, _ = run(customer, record)
    assert customer.events_applied == 3
    assert customer.clicks[1] == 2
    assert customer.anonymous_ids == ["a-1"]
    assert [m.anonymous_id for m in customer.merged_from] == ["a-1"]
    assert customer.emails == ["jo@example.com"]


def test_second_claim_on_an_anonymous_id_is_a_conflict_not_a_link() -> None:
    folder = OfflineFolder(CONFIG)
    raws = [
        event(n=1, anonymous_id="a-1"),
        event("identify", n=2, at=T0 + 1, customer_id="c-1", anonymous_id="a-1"),
        event("identify", n=3, at=T0 + 2, customer_id="c-2", anonymous_id="a-1", traits={"country": "FR"}),
    ]
    folder.feed(Arrival(RawSource("t", 0, i), r, parsed(r)) for i, r in enumerate(raws))
    profiles = folder.profiles()
    assert set(profiles) == {"c-1", "c-2"}
    assert profiles["c-1"].clicks[1] == 1
    assert [(c.anonymous_id, c.claimed_by) for c in profiles["c-2"].conflicts] == [("a-1", "c-1")]
    assert profiles["c-2"].anonymous_ids == []
    assert profiles["c-2"].traits["country"].value == "FR"  # the identify still sets its own traits


def test_a_conflict_claimed_daily_stays_one_entry_counting_its_attempts_in_any_order() -> None:
    """A customer who logs in every day on a device another customer's login claimed first: the profile
    must not grow by an entry a login."""
    raws = [event("identify", n=0, at=T0, customer_id="c-1", anonymous_id="a-shared")]
    raws += [
        event("identify", n=n, at=T0 + n * 86_400_000, customer_id="c-2", anonymous_id="a-shared") for n in range(1, 41)
    ]
    raws.append(event("identify", n=41, at=T0 + 5, customer_id="c-2", anonymous_id="a-other-shared"))
    raws.insert(1, event("identify", n=42, at=T0 + 1, customer_id="c-1", anonymous_id="a-other-shared"))
    runs = []
    for order in (raws, [raws[0], raws[1], *reversed(raws[2:])]):
        folder = OfflineFolder(CONFIG)
        folder.feed(Arrival(RawSource("t", 0, i), r, parsed(r)) for i, r in enumerate(order))
        runs.append(folder.profiles()["c-2"].conflicts)
    assert runs[0] == runs[1]
    assert [(c.anonymous_id, c.at_ms - T0, c.event_id, c.attempts) for c in runs[0]] == [
        ("a-other-shared", 5, "e-41", 1),
        ("a-shared", 86_400_000, "e-1", 40),
    ]


def test_a_customer_keeps_at_most_its_limit_of_conflicts_the_earliest_in_any_order() -> None:
    """A support agent logging in on 40 browsers that customers claimed first, with a limit of 10."""
    config = FoldConfig(max_anonymous_ids=10)
    raws = [event("identify", n=n, at=T0 + n, customer_id=f"owner-{n}", anonymous_id=f"a-{n}") for n in range(40)]
    claims = [
        event("identify", n=100 + n, at=T0 + DAY_MS + n * 60_000, customer_id="agent", anonymous_id=f"a-{n}")
        for n in range(40)
    ]
    runs = []
    for order in (raws + claims, raws + claims[::-1]):
        folder = OfflineFolder(config)
        folder.feed(Arrival(RawSource("t", 0, i), r, parsed(r)) for i, r in enumerate(order))
        runs.append(folder.profiles()["agent"].conflicts)
    assert runs[0] == runs[1]
    assert [c.anonymous_id for c in runs[0]] == [f"a-{n}" for n in range(10)]


def test_duplicates_are_recognised_within_the_last_64_events_and_not_beyond() -> None:
    state = new_state_for("c-1")
    first = parsed(event(n=0, customer_id="c-1"))
    assert apply(state, first, CONFIG)
    for n in range(1, CONFIG.dedup_memory):
        apply(state, parsed(event(n=n, customer_id="c-1")), CONFIG)
    assert not apply(state, first, CONFIG)  # 63 events in between: recognised
    apply(state, parsed(event(n=999, customer_id="c-1")), CONFIG)
    assert apply(state, first, CONFIG)  # 64 in between: documented limit, counted again


def test_a_resend_is_recognised_however_many_events_of_other_streams_come_between() -> None:
    # A worker catching up a backlog can apply a long slice of one partition (a heavy user's clicks, keyed by
    # the customer or by a linked visitor) between an email and its re-send (CI, 2026-12-05: c-000258).
    state = new_state_for("c-1")
    email = parsed(event("email", n=0, customer_id="c-1", action="delivered", campaign_id="k-1", message_id="m-1"))
    assert apply(state, email, CONFIG)
    for n in range(1, 4 * CONFIG.dedup_memory):
        apply(state, parsed(event(n=n, customer_id="c-1")), CONFIG)
        apply(state, parsed(event(n=10_000 + n, customer_id="c-1", anonymous_id="a-1")), CONFIG)
        apply(state, parsed(event(n=20_000 + n, anonymous_id="a-1")), CONFIG)
    before = encode(state)
    assert not apply(state, email, CONFIG)
    assert encode(state) == before  # a re-send changes nothing, not even which stream was used last
    assert state.email_actions[EMAIL_ACTION_INDEX["delivered"]] == sum(state.email_actions) == 1


def test_a_profile_forgets_the_stream_it_used_least_recently_first() -> None:
    state = new_state_for("c-1")
    first = parsed(event(n=1, customer_id="c-1"))
    assert apply(state, first, CONFIG)
    for n in range(MAX_STREAMS - 1):  # as many streams as a profile keeps: the first is still remembered
        apply(state, parsed(event(n=100 + n, anonymous_id=f"a-{n}")), CONFIG)
    assert not apply(state, first, CONFIG)  # a re-send is not a use of its stream ...
    apply(state, parsed(event(n=2, customer_id="c-1")), CONFIG)  # ... a new event is
    apply(state, parsed(event(n=200, anonymous_id="a-new")), CONFIG)
    assert len(state.stream_memories) == MAX_STREAMS
    assert not apply(state, first, CONFIG)
    assert apply(state, parsed(event(n=100, anonymous_id="a-0")), CONFIG)  # its stream was forgotten


_FIELDS = list(ProfileState.__struct_fields__)


def stored_in_an_earlier_layout(state: ProfileState, last_field: str) -> ProfileState:
    """``state`` as a version whose last field was ``last_field`` wrote it (positional msgpack)."""
    earlier = msgspec.msgpack.decode(encode(state))[: _FIELDS.index(last_field) + 1]
    return decode(msgspec.msgpack.encode(earlier))


@pytest.mark.parametrize("layout", ["a list", "one memory for all streams"])
def test_ids_remembered_in_an_earlier_layout_are_recognised_then_forgotten_one_per_event(layout: str) -> None:
    first, second = parsed(event(n=1, customer_id="c-1")), parsed(event("purchase", n=2, customer_id="c-1"))
    ids = [id_hash("e-1"), id_hash("e-2")]
    state = new_state_for("c-1")
    if layout == "a list":
        state.recent_ids = ids
        stored = stored_in_an_earlier_layout(state, "direct_floors")
    else:
        state.recent_event_ids = dict.fromkeys(ids)
        stored = stored_in_an_earlier_layout(state, "recent_event_ids")
    assert not apply(stored, first, CONFIG)
    assert not apply(stored, second, CONFIG)
    assert stored.events_applied == 0
    assert apply(stored, parsed(event(n=3, customer_id="c-1")), CONFIG)
    assert (stored.recent_ids, list(stored.recent_event_ids)) == ([], ids[1:])
    assert not apply(stored, second, CONFIG)
    assert apply(stored, parsed(event(n=4, customer_id="c-1")), CONFIG)
    assert not stored.recent_event_ids
    assert apply(stored, first, CONFIG)  # forgotten: the earlier memory drained as events came
    assert decode(encode(stored)) == stored


def test_memories_kept_per_stream_as_maps_of_hashes_are_moved_over_and_still_recognise_re_sends() -> None:
    email = parsed(event("email", n=0, customer_id="c-1", action="delivered", campaign_id="k-1", message_id="m-1"))
    clicks = [parsed(event(n=n, customer_id="c-1")) for n in range(1, CONFIG.dedup_memory + 1)]
    state = new_state_for("c-1")
    for e in [email, *clicks]:
        state.recent_by_stream.setdefault(stream_of(e.type, e.key), {})[id_hash(e.event_id)] = None
    stored = stored_in_an_earlier_layout(state, "recent_by_stream")
    before = encode(stored)
    assert not apply(stored, email, CONFIG)
    assert not any(apply(stored, click, CONFIG) for click in clicks)
    assert encode(stored) == before  # re-sends leave the stored state as it is, its layout included
    assert apply(stored, parsed(event(n=999, customer_id="c-1")), CONFIG)
    assert not stored.recent_by_stream
    assert [len(m) // ID_BYTES for m in stored.stream_memories.values()] == [1, CONFIG.dedup_memory]
    assert not apply(stored, clicks[1], CONFIG)  # the oldest click was forgotten for the new one, not this
    assert apply(stored, clicks[0], CONFIG)
    assert decode(encode(stored)) == stored


def test_a_hand_over_from_a_visitor_stored_in_the_per_stream_map_layout_brings_its_memories() -> None:
    visitor = new_state_for("anon:a-1")
    clicks = [parsed(event(n=n, anonymous_id="a-1")) for n in range(3)]
    for e in clicks:
        visitor.recent_by_stream.setdefault(stream_of(e.type, e.key), {})[id_hash(e.event_id)] = None
    customer = new_state_for("c-1")
    merge_into(customer, stored_in_an_earlier_layout(visitor, "recent_by_stream"), CONFIG)
    assert not any(apply(customer, click, CONFIG) for click in clicks)
    assert not customer.recent_by_stream


def test_each_event_applied_to_a_customer_is_one_entry_of_its_models_view() -> None:
    # The models views fold their entries without a duplicate check (``profiles.fold.fold_new``): the apply
    # stage must give each event one entry, whatever is re-sent, with a hand-over and the events held for it.
    tracking = ModelTracking(default_specs(), CONFIG, {1: 0})

    def step(state: ProfileState, record: Resolved, offset: int) -> ProfileState:
        return apply_resolved(state, record, partition=1, offset=offset, config=CONFIG, hooks=tracking)[0]

    anon = new_state_for("anon:a-1")
    anon, _ = run(anon, resolved(event(n=1, anonymous_id="a-1"), "anon:a-1", offset=1))
    anon, (handover,) = run(anon, Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1"))
    customer = new_state_for("c-1")
    own = [event(n=10 + k, at=T0 + k, customer_id="c-1") for k in range(5)]
    # Three of them sent again by their producer; then, routed here before the hand-over and so held for
    # it, one new event of the visitor's and a re-send of the one the visitor already counted.
    sent = [*own, *own[:3], event(n=20, anonymous_id="a-1"), event(n=1, anonymous_id="a-1")]
    for offset, raw in enumerate(sent, start=10):
        customer = step(customer, resolved(raw, "c-1", offset=offset), offset)
    assert len(customer.held) == 2
    customer = step(customer, handover, 100)
    keys = [entry.key for entry in tracking.entries["c-1"]]
    assert keys == ["e-10", "e-11", "e-12", "e-13", "e-14", "anon:a-1", "e-20"]
    assert customer.events_applied == 7


def test_a_late_handover_keeps_the_customers_own_duplicate_memory() -> None:
    # The visitor's partition was down: its hand-over (a full memory of the visitor's ids) arrives between
    # a customer's event and that event's duplicate. The duplicate must still be recognised.
    anon = new_state_for("anon:a-1")
    for n in range(CONFIG.dedup_memory):
        anon, _ = run(anon, resolved(event(n=100 + n, anonymous_id="a-1"), "anon:a-1", offset=n))
    anon, (handover,) = run(anon, Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1"))
    customer = new_state_for("c-1")
    original = event(n=1, customer_id="c-1", anonymous_id="a-1")
    customer, _ = run(customer, resolved(original, "c-1", offset=500))
    customer, _ = run(customer, handover)
    customer, _ = run(customer, resolved(original, "c-1", offset=501))  # the producer's duplicate
    assert customer.events_applied == CONFIG.dedup_memory + 1
    # and the visitor's ids are remembered too: its events' duplicates may still come, forwarded
    customer, _ = run(customer, resolved(event(n=100, anonymous_id="a-1"), "c-1", offset=502))
    assert customer.events_applied == CONFIG.dedup_memory + 1


def test_a_stream_both_profiles_remember_keeps_both_memories_through_a_merge() -> None:
    visitor, customer = new_state_for("anon:a-1"), new_state_for("c-1")
    for n in range(CONFIG.dedup_memory):
        apply(visitor, parsed(event(n=n, anonymous_id="a-1")), CONFIG)
        apply(customer, parsed(event(n=1000 + n, anonymous_id="a-1")), CONFIG)
    merge_into(customer, visitor, CONFIG)
    assert [len(ids) for ids in customer.stream_memories.values()] == [2 * CONFIG.dedup_memory * ID_BYTES]
    assert not apply(customer, parsed(event(n=0, anonymous_id="a-1")), CONFIG)
    assert not apply(customer, parsed(event(n=1000, anonymous_id="a-1")), CONFIG)


def test_a_merge_gives_the_customer_copies_of_the_visitors_memories() -> None:
    visitor, customer = new_state_for("anon:a-1"), new_state_for("c-1")
    apply(visitor, parsed(event(n=1, anonymous_id="a-1")), CONFIG)
    merge_into(customer, visitor, CONFIG)
    apply(customer, parsed(event(n=2, anonymous_id="a-1")), CONFIG)
    assert [len(ids) for ids in visitor.stream_memories.values()] == [ID_BYTES]  # a later merge of it is unchanged


def test_a_profile_remembers_at_most_its_cap_of_sessions_those_seen_last() -> None:
    # A crawler starting a session per click: its profile must not grow by a session a click for 90 days.
    config = FoldConfig(session_memory_max=64)
    state = new_state_for("c-1")
    for n in range(1_000):
        assert apply(state, parsed(event(n=n, at=T0 + n * 60_000, customer_id="c-1")), config)
        assert len(state.session_seen) <= config.session_memory_max
    assert state.sessions == 1_000
    kept = len(state.session_seen)
    assert config.session_memory_max * 3 // 4 <= kept <= config.session_memory_max
    assert len(encode(state)) < 3_072
    # a click of a session still remembered does not count it again; one of a session forgotten does
    apply(state, parsed(event(n=5_000, at=T0 + 2_000 * 60_000, customer_id="c-1", session_id="s-999")), config)
    assert state.sessions == 1_000
    apply(state, parsed(event(n=5_001, at=T0 + 2_001 * 60_000, customer_id="c-1", session_id="s-0")), config)
    assert state.sessions == 1_001


def test_a_merge_keeps_the_cap_of_sessions_those_seen_last() -> None:
    config = FoldConfig(session_memory_max=64)
    visitor, customer = new_state_for("anon:a-1"), new_state_for("c-1")
    for n in range(60):
        apply(visitor, parsed(event(n=n, at=T0 + n, anonymous_id="a-1")), config)
        apply(customer, parsed(event(n=100 + n, at=T0 + 1_000 + n, customer_id="c-1")), config)
    merge_into(customer, visitor, config)
    assert customer.sessions == 120
    assert len(customer.session_seen) == 48  # three quarters of the cap: the customer's own 60 minus 12
    assert min(customer.session_seen.values()) == T0 + 1_012


def test_a_profile_keeps_an_affinity_for_at_most_its_cap_of_categories_the_strongest() -> None:
    # A bot sending a new category with each click: its profile must not grow by a category a click.
    config = FoldConfig(affinity_categories_max=64)
    state = new_state_for("c-1")
    for n in range(20):  # a category the customer cares about, early on
        apply(state, parsed(event(n=n, at=T0 + n, customer_id="c-1", action="add_to_cart")), config)
    for n in range(1_000):
        click = event(n=100 + n, at=T0 + n * 60_000, customer_id="c-1", category=f"junk-{n:04}")
        assert apply(state, parsed(click), config)
        assert len(state.affinity) <= config.affinity_categories_max
    assert config.affinity_categories_max * 3 // 4 <= len(state.affinity) <= config.affinity_categories_max
    assert "shoes" in state.affinity  # 20 add-to-carts outweigh any single later view
    assert min(state.affinity) >= "junk-0900"  # of the rest, the views seen last (the least decayed) are kept


def test_a_merge_keeps_the_cap_of_categories_the_strongest() -> None:
    config = FoldConfig(affinity_categories_max=64)
    visitor, customer = new_state_for("anon:a-1"), new_state_for("c-1")
    for n in range(60):
        apply(visitor, parsed(event(n=n, at=T0 + n, anonymous_id="a-1", category=f"v-{n:02}")), config)
        cart = event(n=100 + n, at=T0 + n, customer_id="c-1", action="add_to_cart", category=f"c-{n:02}")
        apply(customer, parsed(cart), config)
    merge_into(customer, visitor, config)
    # The customer's add-to-carts (weight 3) beat the visitor's views (1); of them, the least decayed stay.
    assert sorted(customer.affinity) == [f"c-{n:02}" for n in range(12, 60)]


def test_a_late_click_of_a_session_older_than_the_session_memory_counts_it_again() -> None:
    state = new_state_for("c-1")
    apply(state, parsed(event(n=1, customer_id="c-1", session_id="s-old")), CONFIG)
    apply(state, parsed(event(n=2, at=T0 + 89 * DAY_MS, customer_id="c-1", session_id="s-new")), CONFIG)
    apply(state, parsed(event(n=3, at=T0 + 60_000, customer_id="c-1", session_id="s-old")), CONFIG)
    assert state.sessions == 2
    apply(state, parsed(event(n=4, at=T0 + 91 * DAY_MS, customer_id="c-1", session_id="s-newer")), CONFIG)
    apply(state, parsed(event(n=5, at=T0 + 120_000, customer_id="c-1", session_id="s-old")), CONFIG)
    assert state.sessions == 4


def test_state_survives_encoding_and_renders_the_same() -> None:
    state = new_state_for("c-1")
    for raw in (event(n=1, customer_id="c-1"), event("purchase", n=2, customer_id="c-1")):
        assert apply(state, parsed(raw), CONFIG)
    as_of = T0 + DAY_MS
    assert render(decode(encode(state)), as_of, CONFIG) == render(state, as_of, CONFIG)


def test_ingest_time_travels_with_the_event_through_resolution_and_forwarding() -> None:
    raw = event(n=1, anonymous_id="a-1")
    (resolved_record,) = resolve([Arrival(RawSource("events.clicks", 0, 5), raw, parsed(raw), 1234)], [], [], {})
    assert resolved_record.ingested_ms == 1234
    tombstone = new_state_for("anon:a-1")
    tombstone.merged_into = "c-1"
    _, (forward,) = run(tombstone, resolved_record, offset=9)
    assert forward.ingested_ms == 1234


def test_an_anonymous_event_rerouted_before_the_handover_is_counted_once() -> None:
    """A restarted resolver re-sends an anonymous event after the link exists: it reaches the customer
    directly, possibly before the anonymous profile's hand-over that already counted it."""
    counted = event(n=1, anonymous_id="a-1")
    fresh = event(n=2, anonymous_id="a-1")
    anon = new_state_for("anon:a-1")
    anon, _ = run(anon, resolved(counted, "anon:a-1", offset=5))
    _, (handover,) = run(anon, Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1"))

    customer = new_state_for("c-1")
    customer, _ = run(customer, resolved(counted, "c-1", offset=5))  # the re-sent copy, routed directly
    customer, _ = run(customer, resolved(fresh, "c-1", offset=6))  # a new event, also before the hand-over
    assert customer.events_applied == 0
    assert len(customer.held) == 2
    customer, _ = run(customer, handover)
    assert customer.events_applied == 2  # the anonymous profile's one, and the new one; not the copy
    assert customer.clicks[1] == 2
    assert customer.held == []


def test_a_forwarded_straggler_also_rerouted_directly_by_a_restarted_resolver_is_counted_once() -> None:
    """The tombstone forwards a straggler; the resolver that sent it dies before committing and, the link
    now known, sends the same raw record straight to the customer. Both copies arrive, in either order, and
    more of them than the recent-event-id memory holds (64)."""
    anon = new_state_for("anon:a-1")
    anon, (handover,) = run(anon, Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1"))
    stragglers = [event(n=n, anonymous_id="a-1") for n in range(70)]
    forwards = [run(anon, resolved(raw, "anon:a-1", offset=10 + n), offset=n)[1][0] for n, raw in enumerate(stragglers)]
    direct = [resolved(raw, "c-1", offset=10 + n) for n, raw in enumerate(stragglers)]

    for arrivals in (
        [handover, *forwards, *direct],
        [handover, *direct, *forwards],
        [handover, *direct[:30], *forwards, *direct[30:]],
    ):
        customer = new_state_for("c-1")
        for record in arrivals:
            customer, _ = run(customer, record)
        assert customer.events_applied == 70
        assert customer.clicks[1] == 70


def test_a_straggler_forwarded_after_a_later_record_was_routed_directly_still_counts() -> None:
    """One resolver routes e4 to the visitor (link not yet known) and e5 to the customer (now known): the
    customer can apply e5 before the tombstone forwards e4, which is new, not a repeat."""
    anon = new_state_for("anon:a-1")
    anon, (handover,) = run(anon, Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1"))
    e4, e5 = event(n=4, anonymous_id="a-1"), event(n=5, anonymous_id="a-1")
    anon, (forward,) = run(anon, resolved(e4, "anon:a-1", offset=4), offset=1)
    customer = new_state_for("c-1")
    for record in (handover, resolved(e5, "c-1", offset=5), forward):
        customer, _ = run(customer, record)
    assert customer.events_applied == 2


def test_the_tombstone_forwards_a_record_sent_to_it_twice_once_and_what_it_counted_never() -> None:
    """A resolver restarted before the link exists sends the visitor's records to it again."""
    anon = new_state_for("anon:a-1")
    counted, straggler = event(n=1, anonymous_id="a-1"), event(n=2, anonymous_id="a-1")
    anon, _ = run(anon, resolved(counted, "anon:a-1", offset=1), offset=0)
    anon, (handover,) = run(anon, Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1"), offset=1)
    sent = []
    for offset, record in enumerate(
        [resolved(straggler, "anon:a-1", 2), resolved(counted, "anon:a-1", 1), resolved(straggler, "anon:a-1", 2)],
        start=2,
    ):
        anon, out = run(anon, record, offset=offset)
        sent += out
    assert [r.origin_offset for r in sent] == [2]
    customer = new_state_for("c-1")
    for record in (handover, *sent):
        customer, _ = run(customer, record)
    assert customer.events_applied == 2


def test_records_the_resolver_cannot_have_written_are_refused_as_corrupt_and_change_nothing() -> None:
    customer = new_state_for("c-1")
    run(customer, resolved(event(n=1, customer_id="c-1"), "c-1", 1))
    before = encode(customer)
    corrupt = [
        Resolved(kind="merge_in", profile_id="c-1", other_profile="anon:a-9", state=b"\x01not a state"),
        Resolved(kind="forward", profile_id="c-1", event=event(n=2, customer_id="c-1")),  # from where?
        Resolved(kind="erase", profile_id="c-1"),  # without its receipt
        Resolved(kind="event", profile_id="c-1", event=b"{", source=RawSource("events.clicks", 3, 2)),
    ]
    for record in corrupt:
        with pytest.raises(CorruptRecordError):
            run(customer, record, offset=5)
        assert encode(customer) == before, record.kind
