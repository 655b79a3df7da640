"""An email two customers share, and one of them erased, against the real Redis.

The email index keeps an email's first owner; both customers' profiles list it. Erasing the customer who
claimed it second must leave it to the first: the API's erasure record, the worker deleting the profile
(it forgets every id the state knows) and the resolve stage refusing the erased customer's later identify
(it erases the new ids that identify carries) each skip an id linked to another customer. And the other
customer's events that carry an erased id (the email, when the erased customer claimed it first; the erased
customer's visitor id, on a shared device) are applied without it, not refused.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from profiles.read import canonical_state, erasure_of
from profiles.state import CLICK_ACTION_INDEX
from profiles.store import ProfileStore
from schemas.resolved import Resolved
from services.settings import Settings
from tests.erasure_support import NOW, apply_in_turn, identify, purchase, raw, resolver_of, traces
from tests.redis_support import scratch_namespace

pytestmark = pytest.mark.integration
RECEIPT = "er_" + "8" * 32
HOME = "home@example.com"


@pytest.mark.parametrize("first", ["the other customer", "the erased customer"])
def test_a_shared_email_is_erased_only_with_the_customer_who_claimed_it_first(
    settings: Settings, local_stack: object, first: str
) -> None:
    asyncio.run(_shared(settings, first))


async def _shared(settings: Settings, first: str) -> None:
    async with scratch_namespace(settings, "erasure-shared") as (redis, namespace):
        store = ProfileStore(redis, namespace)
        offsets = itertools.count(1)
        resolver = resolver_of(store, settings)
        claims = [identify("e1", "c-2", "a-2", HOME), identify("e2", "c-1", "a-1", HOME)]
        if first == "the erased customer":
            claims.reverse()
        before = await resolver.resolve(
            [raw(1, claims[0]), raw(2, claims[1]), raw(3, identify("e3", "c-1", "a-1b", "one@example.com"))], NOW
        )
        await apply_in_turn(store, settings, offsets, before.records)
        owner = "c-2" if first == "the other customer" else "c-1"
        assert await store.link_owners([HOME]) == {HOME: owner}
        for customer in ("c-1", "c-2"):
            state = await canonical_state(store, customer)
            assert state is not None
            assert HOME in state.emails, "both profiles list the shared email"

        # The API erases c-1; the worker deletes its profiles; then c-1's identify carrying the email
        # (refused) and c-2's events come.
        record = await erasure_of(store, RECEIPT, "c-1", requested_at_ms=0)
        await store.record_erasures([record])
        erase = [Resolved(kind="erase", profile_id=p, other_profile=RECEIPT) for p in record.profile_ids]
        after = await resolver.resolve(
            [
                raw(4, identify("e4", "c-1", "a-1c", HOME)),
                raw(5, identify("e5", "c-2", "a-2", HOME)),
                raw(6, purchase("e6", "c-2")),
                raw(7, _click("e7", "c-2", "a-1")),  # c-2 on the erased customer's device
            ],
            NOW,
        )
        await apply_in_turn(store, settings, offsets, [*erase, *after.records])

        erased_customer = ["c-1", "a-1", "a-1b", "a-1c", "one@example.com"]
        assert await traces(redis, store, erased_customer) == []
        assert await store.erased(erased_customer) == dict.fromkeys(erased_customer, RECEIPT)
        assert after.erased == 1, "only c-1's identify is refused: c-2's events apply, without c-1's ids"
        other = await canonical_state(store, "c-2")
        assert other is not None
        assert (other.events_applied, other.orders, other.clicks[CLICK_ACTION_INDEX["page_view"]]) == (4, 1, 1)
        assert "a-1" not in other.anonymous_ids
        if first == "the other customer":
            assert HOME not in record.ids
            assert await store.erased([HOME]) == {}
            assert await store.link_owners([HOME]) == {HOME: "c-2"}
        else:
            # The email was c-1's: it goes with c-1, and c-2's identify is applied without it, so nothing
            # links it again (c-2's profile still lists it from before the erasure: docs/erasure.md, "Limits").
            assert HOME in record.ids
            assert await store.erased([HOME]) == {HOME: RECEIPT}
            assert await store.link_owners([HOME]) == {}


def test_erasing_an_unknown_id_leaves_its_lower_cased_spelling_to_the_customer_who_has_it(
    settings: Settings, local_stack: object
) -> None:
    """``Ann@Example.com``, which no profile has, is erased under both spellings (an email is named lower-cased)
    unless the lower-cased one is already someone's id: a customer id may look like an email. Until 2026-12-07
    the customer ``ann@example.com`` had every later event refused."""
    asyncio.run(_unknown_spelling(settings))


async def _unknown_spelling(settings: Settings) -> None:
    async with scratch_namespace(settings, "erasure-spelling") as (redis, namespace):
        store = ProfileStore(redis, namespace)
        offsets = itertools.count(1)
        resolver = resolver_of(store, settings)
        before = await resolver.resolve([raw(1, purchase("e1", "ann@example.com"))], NOW)
        await apply_in_turn(store, settings, offsets, before.records)

        record = await erasure_of(store, RECEIPT, "Ann@Example.com", requested_at_ms=0)
        assert (record.ids, record.profile_ids) == (["Ann@Example.com"], [])
        await store.record_erasures([record])
        after = await resolver.resolve([raw(2, purchase("e2", "ann@example.com"))], NOW)
        await apply_in_turn(store, settings, offsets, after.records)
        assert after.erased == 0
        kept = await canonical_state(store, "ann@example.com")
        assert kept is not None
        assert (kept.events_applied, kept.orders) == (2, 2)

        # With no such customer, both spellings are erased (tests/unit/test_erasure.py).
        other = await erasure_of(store, RECEIPT, "Bob@Example.com", requested_at_ms=0)
        assert other.ids == ["Bob@Example.com", "bob@example.com"]


def _click(event_id: str, customer: str, visitor: str) -> dict[str, Any]:
    return {
        "type": "click",
        "event_id": event_id,
        "timestamp": NOW.isoformat(),
        "customer_id": customer,
        "anonymous_id": visitor,
        "action": "page_view",
        "url": "/",
        "session_id": f"s-{event_id}",
    }
