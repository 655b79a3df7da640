"""Erasure's pure parts: which ids a request covers, what events of erased customers add, and an apply
batch deleting an erased profile while refusing everything still in flight for it."""

from __future__ import annotations

import msgspec

from profiles.apply import new_state_for
from profiles.batch import BatchFold
from profiles.erasure import erasure_record, event_ids, extensions, requested_ids, without_erased
from profiles.store import ABSENT, Stored, watermark_bytes
from schemas.events import IdentifyEvent
from schemas.resolved import LinkDecision, Resolved
from tests.unit.test_apply import CONFIG, event, parsed, resolved, run

RECEIPT = "er_" + "1" * 32


def buyer() -> Stored:
    state = new_state_for("c-1")
    state, _ = run(state, resolved(event("purchase", n=1, customer_id="c-1"), "c-1", offset=1), offset=10)
    return Stored(10, state, watermark_bytes(10))


def test_an_erasure_covers_the_customer_every_linked_id_and_the_merged_profiles() -> None:
    state = buyer().state
    assert state is not None
    state.anonymous_ids, state.emails, state.absorbed = ["a-1", "a-2"], ["jo@example.com"], ["anon:a-1"]
    record = erasure_record(RECEIPT, "a-2", state, requested_at_ms=5)
    assert record.profile_ids == ["c-1", "anon:a-1", "anon:a-2"]
    assert record.ids == ["a-2", "c-1", "a-1", "jo@example.com"]
    unknown = erasure_record(RECEIPT, "nobody", None, requested_at_ms=5)
    assert (unknown.profile_ids, unknown.ids) == ([], ["nobody"])


def test_an_email_no_profile_has_yet_is_erased_as_the_events_naming_it_carry_it() -> None:
    """docs/erasure.md: an id no profile has is erased too, and its future events are refused. Events name an
    email lower-cased (``event_ids``): erasing ``Ann@Example.com`` marked only that spelling, so a later
    identify naming the email kept it, and a request in another spelling found no receipt."""
    record = erasure_record(RECEIPT, "Ann@Example.com", None, requested_at_ms=5)
    # The spelling given is kept too: it may be a customer id, which events carry as given.
    assert record.ids == ["Ann@Example.com", "ann@example.com"]
    assert (record.requested_id, record.profile_ids) == ("Ann@Example.com", [])
    identify = parsed(event("identify", n=1, customer_id="c-9", traits={"email": "ANN@example.COM"}))
    assert set(event_ids(identify)) & set(record.ids) == {"ann@example.com"}
    kept = without_erased(identify, record.ids)
    assert isinstance(kept, IdentifyEvent)
    assert (kept.customer_id, kept.traits.email) == ("c-9", None)
    # A later request, in any spelling, looks up a marker this record set (the first receipt).
    for again in ("Ann@Example.com", "ann@example.com", "ANN@EXAMPLE.COM"):
        assert set(requested_ids(again)) & set(record.ids), again
    # An id that no event could carry as an email is marked as given only: another visitor may be "a-9".
    assert erasure_record(RECEIPT, "A-9", None, requested_at_ms=5).ids == ["A-9"]
    assert erasure_record(RECEIPT, "Ann@Example", None, requested_at_ms=5).ids == ["Ann@Example"]


def test_an_identify_of_an_erased_customer_erases_its_new_ids_but_a_conflicting_claim_erases_nothing() -> None:
    linking = parsed(event("identify", n=1, customer_id="c-1", anonymous_id="a-new"))
    claiming = parsed(event("identify", n=2, customer_id="c-2", anonymous_id="a-old"))
    out = extensions([linking, claiming], {"c-1": RECEIPT, "a-old": RECEIPT}, at_ms=0)
    assert [(r.erasure_id, r.profile_ids, r.ids) for r in out] == [
        (RECEIPT, ["anon:a-new"], ["a-new", "jo@example.com"])
    ]


def test_an_erased_profile_is_deleted_and_takes_nothing_more() -> None:
    stored = {"c-1": buyer(), "c-2": Stored(-1, None, ABSENT)}
    fold = BatchFold(stored, {}, CONFIG)
    assert fold.apply(Resolved(kind="erase", profile_id="c-1", other_profile=RECEIPT), 0, 100) == []
    fold.apply(resolved(event(n=2, customer_id="c-1"), "c-1", offset=2), 0, 101)  # in flight
    fold.apply(resolved(event(n=3, customer_id="c-2"), "c-2", offset=3), 0, 102)
    writes = {w.profile_id: w for w in fold.writes(0)}
    deleted = writes["c-1"]
    assert (deleted.state, deleted.erasure_id, deleted.expected) == (None, RECEIPT, watermark_bytes(10))
    assert deleted.population_changed, "a buyer leaves the RFM population"
    kept = writes["c-2"].state
    assert kept is not None
    assert kept.events_applied == 1


def test_in_flight_events_of_an_already_deleted_erased_profile_write_nothing() -> None:
    fold = BatchFold({"c-1": Stored(-1, None, ABSENT)}, {"c-1": RECEIPT}, CONFIG)
    fold.apply(resolved(event(n=2, customer_id="c-1"), "c-1", offset=2), 0, 101)
    assert fold.writes(0) == []


def test_a_visitor_handed_over_to_an_erased_customer_is_erased_with_it() -> None:
    visitor = new_state_for("anon:a-late")
    visitor.events_applied = 1
    stored = {"anon:a-late": Stored(5, visitor, watermark_bytes(5))}
    fold = BatchFold(stored, {"c-1": RECEIPT}, CONFIG)
    handover = Resolved(kind="merge_out", profile_id="anon:a-late", other_profile="c-1")
    assert fold.apply(handover, 0, 100) == [], "nothing is handed over to an erased customer"
    (write,) = fold.writes(0)
    assert (write.profile_id, write.state, write.erasure_id) == ("anon:a-late", None, RECEIPT)


def test_a_hand_over_reaching_an_erased_customer_erases_the_visitor_it_came_from() -> None:
    fold = BatchFold({"c-1": Stored(-1, None, ABSENT)}, {"c-1": RECEIPT}, CONFIG)
    handover = Resolved(kind="merge_in", profile_id="c-1", other_profile="anon:a-late")
    (erase,) = fold.apply(handover, 0, 100)
    assert (erase.kind, erase.profile_id, erase.other_profile) == ("erase", "anon:a-late", RECEIPT)


def test_a_visitor_without_a_profile_handed_over_to_an_erased_customer_is_erased_too() -> None:
    """Its identify was its first event: no profile, but a link to forget and an id to refuse from now on."""
    fold = BatchFold({"anon:a-new": Stored(-1, None, ABSENT)}, {"c-1": RECEIPT}, CONFIG)
    fold.apply(Resolved(kind="merge_out", profile_id="anon:a-new", other_profile="c-1"), 0, 100)
    (write,) = fold.writes(0)
    assert (write.profile_id, write.state, write.erasure_id) == ("anon:a-new", None, RECEIPT)


def test_an_identify_refused_for_an_erased_customer_forgets_the_ids_it_linked() -> None:
    """Resolved (and its links claimed) just before the erasure's markers were set, applied after them."""
    fold = BatchFold({"c-1": Stored(-1, None, ABSENT)}, {"c-1": RECEIPT}, CONFIG)
    identify = event("identify", n=4, customer_id="c-1", anonymous_id="a-new")
    assert fold.apply(resolved(identify, "c-1", offset=4), 0, 100) == []
    (write,) = fold.writes(0)
    assert (write.state, write.erasure_id, write.forget) == (None, RECEIPT, ("a-new", "jo@example.com"))


def test_an_erased_profile_goes_with_every_id_it_knows_beyond_its_erasure_record() -> None:
    """An identify applied before the erasure record (which did not know it): the state knows more."""
    stored = buyer()
    fold = BatchFold({"c-1": stored}, {}, CONFIG)
    identify = resolved(event("identify", n=4, customer_id="c-1", anonymous_id="a-new"), "c-1", offset=4)
    fold.apply(msgspec.structs.replace(identify, link=LinkDecision("a-new")), 0, 100)
    handover = Resolved(kind="merge_in", profile_id="c-1", other_profile="anon:a-new")
    assert fold.apply(handover, 0, 101) == []
    emitted = fold.apply(Resolved(kind="erase", profile_id="c-1", other_profile=RECEIPT), 0, 102)
    assert [(r.kind, r.profile_id, r.other_profile) for r in emitted] == [("erase", "anon:a-new", RECEIPT)]
    assert fold.apply(resolved(event(n=5, customer_id="c-1"), "c-1", offset=5), 0, 103) == [], "only once"
    (write,) = fold.writes(0)
    assert (write.state, write.expected, write.forget) == (None, watermark_bytes(10), ("a-new", "jo@example.com"))
