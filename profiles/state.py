"""What a profile stores: the compact, mergeable state the fold updates and the view renders.

The state keeps the minimum from which every field of ``docs/profile.md`` can be computed for any
``as_of`` at or after the latest event: counters, integer cents, hourly window buckets, a decayed affinity
with its reference time, and two bounded memories (recent event ids per source stream, recent sessions).
It is stored as positional msgpack (field names are not repeated in every profile), so fields are only ever
appended, with defaults, to stay readable across versions.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import Struct, field

from schemas.events import CLICK_ACTIONS, EMAIL_ACTIONS
from schemas.resolved import Resolved

STATE_VERSION: Final = 1

CLICK_ACTION_INDEX: Final[dict[str, int]] = {action: i for i, action in enumerate(CLICK_ACTIONS)}
EMAIL_ACTION_INDEX: Final[dict[str, int]] = {action: i for i, action in enumerate(EMAIL_ACTIONS)}
#: Counters of one hourly window bucket, by position.
WINDOW_METRICS: Final = (
    "clicks",
    "product_views",
    "add_to_carts",
    "orders",
    "spend",
    "email_opens",
    "email_clicks",
    "mentions",
)
(W_CLICKS, W_PRODUCT_VIEWS, W_ADD_TO_CARTS, W_ORDERS, W_SPEND, W_OPENS, W_EMAIL_CLICKS, W_MENTIONS) = range(8)
# Two more counters per bucket, not shown as windows, feed the journey stage rules.
W_CHECKOUTS, W_SEARCHES = 8, 9
BUCKET_WIDTH: Final = 10


class Trait(Struct, array_like=True, frozen=True):
    value: Any
    updated_ms: int
    event_id: str


class Merge(Struct, array_like=True, frozen=True):
    """An anonymous id linked to this customer by an identify (its event time and id)."""

    anonymous_id: str
    at_ms: int
    event_id: str


class Conflict(Struct, array_like=True, frozen=True):
    """Identifies of this customer that claimed an anonymous id ``claimed_by`` holds: the earliest (event
    time, then event id) and how many."""

    anonymous_id: str
    claimed_by: str
    at_ms: int
    event_id: str
    attempts: int = 1  # after the others: states written before it decode (each entry was one identify)


class ProfileState(Struct, array_like=True, kw_only=True):
    profile_id: str
    customer_id: str | None = None
    anonymous_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    merged_from: list[Merge] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    traits: dict[str, Trait] = field(default_factory=dict)
    # behaviour
    clicks: list[int] = field(default_factory=lambda: [0] * len(CLICK_ACTION_INDEX))
    sessions: int = 0
    session_seen: dict[int, int] = field(default_factory=dict)  # session id hash → latest click ms
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None
    # transactions, in integer cents of the base currency
    orders: int = 0
    refunds: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0
    items: int = 0
    first_purchase_ms: int | None = None
    last_purchase_ms: int | None = None
    category_cents: dict[str, int] = field(default_factory=dict)
    # email
    email_actions: list[int] = field(default_factory=lambda: [0] * len(EMAIL_ACTION_INDEX))
    last_open_ms: int | None = None
    # social; sentiment in VADER's 4-decimal units, so sums are exact integers
    mentions: int = 0
    sentiment_sum: int = 0
    negative_mentions: int = 0
    last_mention_ms: int | None = None
    last_mention_id: str = ""
    last_sentiment: int = 0
    # category affinity: decayed scores as of affinity_ref_ms
    affinity: dict[str, float] = field(default_factory=dict)
    affinity_ref_ms: int | None = None
    # hourly window buckets: bucket → counters in WINDOW_METRICS order
    buckets: dict[int, list[int]] = field(default_factory=dict)
    # The recent event ids' first form, a list: a membership test scanned it on every event. Read only to
    # move a state written before ``recent_event_ids`` into it (``recent_event_ids`` below).
    recent_ids: list[int] = field(default_factory=list)
    # metadata
    events_applied: int = 0
    last_event_ms: int | None = None
    updated_ms: int | None = None
    # Exactly-once bookkeeping (the resolved-partition watermark itself is stored beside the state):
    # hash of (raw topic, partition, record key) → highest raw offset applied from it. A resolver sends each
    # such stream in offset order, so a restarted resolver's repeats are exactly the offsets at or below it.
    source_marks: dict[int, int] = field(default_factory=dict)
    # events.resolved partition → highest offset of a forwarded straggler applied
    forward_marks: dict[int, int] = field(default_factory=dict)
    absorbed: list[str] = field(default_factory=list)  # profile ids merged in (a merge_in may be redelivered)
    merged_into: str | None = None  # set on an anonymous profile once merged: stragglers go there
    # Events keyed by a linked anonymous id that arrived before that id's hand-over: applied once it comes.
    held: list[Resolved] = field(default_factory=list)
    version: int = STATE_VERSION
    # After ``version`` so that states written before it decode (missing trailing fields take defaults).
    # Hash of an anonymous raw stream → lowest offset applied from it directly (not forwarded): a forwarded
    # straggler at or above it was also routed here directly by a restarted resolver (``profiles.apply``).
    direct_floors: dict[int, int] = field(default_factory=dict)
    # The recent event ids' second form, one memory for all of a profile's streams (64-bit hashes, oldest
    # first): still checked, and forgotten one id per applied event (``profiles.dedup``).
    recent_event_ids: dict[int, None] = field(default_factory=dict)
    # The recent event ids' third form, per source stream, each an insertion-ordered dict of 64-bit hashes:
    # still checked, and moved into ``stream_memories`` when the profile next remembers an event.
    recent_by_stream: dict[int, dict[int, None]] = field(default_factory=dict)
    # Recently applied event ids by source stream (``profiles.dedup.stream_of``), least recently used stream
    # first; each the ids' 48-bit keys (``profiles.dedup.ID_BYTES``) concatenated, oldest first.
    stream_memories: dict[int, bytes] = field(default_factory=dict)
    # Identifies whose anonymous id was not linked: the customer held ``max_anonymous_ids`` already.
    links_refused: int = 0
    # Identifies whose email was not the customer's: it had named ``max_emails`` others already.
    emails_refused: int = 0


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(ProfileState)


def encode(state: ProfileState) -> bytes:
    return _ENCODER.encode(state)


def decode(blob: bytes) -> ProfileState:
    return _DECODER.decode(blob)


def recent_event_ids(state: ProfileState) -> dict[int, None]:
    """The state's single-memory recent ids, moving those of a state written in the list form over first.

    >>> old = ProfileState(profile_id="c-1", recent_ids=[7, 9])
    >>> list(recent_event_ids(old)), old.recent_ids
    ([7, 9], [])
    """
    if state.recent_ids:
        state.recent_event_ids = dict.fromkeys([*state.recent_ids, *state.recent_event_ids])
        state.recent_ids = []
    return state.recent_event_ids


def new_profile(profile_id: str, customer_id: str | None) -> ProfileState:
    """An empty profile; anonymous profiles know their anonymous id from the start."""
    state = ProfileState(profile_id=profile_id, customer_id=customer_id)
    if customer_id is None and profile_id.startswith(ANON_PREFIX):
        state.anonymous_ids.append(profile_id.removeprefix(ANON_PREFIX))
    return state


ANON_PREFIX: Final = "anon:"


def anonymous_profile_id(anonymous_id: str) -> str:
    """The profile id of a visitor never identified.

    >>> anonymous_profile_id("a-91c2")
    'anon:a-91c2'
    """
    return ANON_PREFIX + anonymous_id
