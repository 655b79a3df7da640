"""An erasure recorded while the resolve stage links a new id of the same customer, against the real Redis.

The API records an erasure in Redis (markers set, the links it knows deleted) without coordinating with the
workers. A resolve stage can look the customer up just before (not erased yet) and claim a new link just
after: the erasure record does not name the new ids. The interleaving is injected here, then the records
are applied in each order the ``events.resolved`` topic allows, one batch each as a slow worker would:
nothing of the customer may remain (fresh-clone CI caught this once in four runs of test_erasure.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from profiles.config import LinkLimits
from profiles.erasure import erasure_record
from profiles.identity import Claim
from profiles.read import canonical_state
from profiles.store import ProfileStore
from schemas.erasure import ErasureRecord
from schemas.resolved import Resolved
from services.settings import Settings
from tests.erasure_support import NOW, apply_in_turn, identify, purchase, raw, resolver_of, traces
from tests.redis_support import scratch_namespace

pytestmark = pytest.mark.integration
RECEIPT = "er_" + "7" * 32


class ErasedMeanwhile(ProfileStore):
    """A store whose next ``link`` comes after the API recorded ``meanwhile``: the race, made certain."""

    meanwhile: ErasureRecord | None = None

    async def link(
        self,
        claims: Sequence[tuple[str, str, str]],
        named: Sequence[tuple[str, str]],
        limits: LinkLimits,
    ) -> tuple[list[Claim], list[bool]]:
        if self.meanwhile is not None:
            await self.record_erasures([self.meanwhile])
            self.meanwhile = None
        return await super().link(claims, named, limits)


@pytest.mark.parametrize(
    "order",
    [
        "identify, hand-over, erasure",  # the customer's state knows the visitor when it goes
        "identify, erasure, hand-over",  # the visitor's hand-over reaches an erased customer
        "erasure, identify, hand-over",  # the identify and the visitor's merge_out meet an erased customer
    ],
)
def test_ids_linked_while_an_erasure_is_recorded_are_erased_with_the_customer(
    settings: Settings, local_stack: object, order: str
) -> None:
    asyncio.run(_race(settings, order))


async def _race(settings: Settings, order: str) -> None:
    async with scratch_namespace(settings, "erasure-race") as (redis, namespace):
        store = ErasedMeanwhile(redis, namespace)
        offsets = itertools.count(1)
        resolver = resolver_of(store, settings)
        # Before: c-1 known by a visitor id and an email; c-2, who must keep everything.
        before = await resolver.resolve(
            [
                raw(1, identify("e1", "c-1", "a-old", "old@example.com")),
                raw(2, purchase("e2", "c-1")),
                raw(3, identify("e3", "c-2", "a-2", "two@example.com")),
            ],
            NOW,
        )
        await apply_in_turn(store, settings, offsets, before.records)

        # The API reads c-1 and records its erasure while a resolve stage is between its lookup and its claims.
        state = await canonical_state(store, "c-1")
        record = erasure_record(RECEIPT, "c-1", state, requested_at_ms=0)
        assert record.ids == ["c-1", "a-old", "old@example.com"]
        store.meanwhile = record
        during = await resolver.resolve([raw(4, identify("e4", "c-1", "a-new", "new@example.com"))], NOW)
        assert during.kept == 1, "the lookup came before the markers: the identify went through"
        # What the resolve stage sends when it reads the erasure record from its topic.
        erase = [Resolved(kind="erase", profile_id=p, other_profile=RECEIPT) for p in record.profile_ids]
        if order.startswith("identify, hand-over"):
            await apply_in_turn(store, settings, offsets, during.records)  # and what it emits: the hand-over
            await apply_in_turn(store, settings, offsets, erase)
        elif order.startswith("identify"):
            await apply_in_turn(store, settings, offsets, [*during.records, *erase])
        else:
            await apply_in_turn(store, settings, offsets, [*erase, *during.records])

        customer = ["c-1", "a-old", "a-new", "old@example.com", "new@example.com"]
        assert await traces(redis, store, customer) == []
        assert await store.erased(customer) == dict.fromkeys(customer, RECEIPT), "their events are refused"
        # The other customer keeps its profile and links (the checks above can fail).
        assert await traces(redis, store, ["c-2", "a-2", "two@example.com"]) == [
            "link a-2",
            "link two@example.com",
            "profile anon:a-2",
            "profile c-2",
        ]
