"""How an id resolves, from the values one read returns per id (``ProfileStore.resolution``): pure parsing,
no server (the integration tests read real Redis)."""

from __future__ import annotations

from redis.asyncio import Redis

from profiles.state import anonymous_profile_id, encode, new_profile
from profiles.store import ProfileStore, watermark_bytes


def stored(profile_id: str) -> bytes:
    return watermark_bytes(7) + encode(new_profile(profile_id, None if profile_id.startswith("anon:") else profile_id))


def test_each_kind_of_id_resolves_and_loads_in_one_read() -> None:
    store = ProfileStore(Redis(), "ns")  # no connection is made: only the parsing is used
    ids = ["c-1", "v-9", "ann@example.com", "v-1", "gone", "nobody"]
    # per id: erasure marker, profile under the id, alias, email owner, visitor profile
    replies = [
        [None, stored("c-1"), None, None, None],
        [None, None, b"c-2\x1fe-1", None, stored(anonymous_profile_id("v-9"))],  # linked: the customer wins
        [None, None, None, b"c-3", None],
        [None, None, None, None, stored(anonymous_profile_id("v-1"))],  # a visitor nobody claimed
        [b"receipt-1", stored("gone"), None, None, None],  # erased: nothing, whatever is left
        [None, None, None, None, None],
    ]
    resolution = store.resolution(ids, replies)
    assert resolution.resolved == {
        "c-1": "c-1",
        "v-9": "c-2",
        "ann@example.com": "c-3",
        "v-1": anonymous_profile_id("v-1"),
        "gone": None,
        "nobody": None,
    }
    # Loaded at once: profiles named by their own id and unclaimed visitors; customers behind an alias or an
    # email need a second read.
    assert sorted(resolution.stored) == sorted(["c-1", anonymous_profile_id("v-1")])
    assert all(s.watermark == 7 and s.state is not None for s in resolution.stored.values())
