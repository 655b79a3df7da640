"""Records of ``events.resolved``: the contract between the resolve stage and the apply stage.

Every record is keyed by the canonical profile id, so the worker that owns a profile's partition sees
everything that changes it, in order. Four kinds:

- ``event``: a valid raw event routed to its profile, with the raw coordinates it came from (used to
  skip what a restarted resolver sends again) and, for identifies, what identity resolution decided;
- ``merge_out``: tells an anonymous profile it was linked to a customer: hand your state over, then
  forward whatever still arrives;
- ``merge_in``: the anonymous profile's state, for the customer profile to add;
- ``forward``: an event that reached an anonymous profile after it was merged (a straggler resolved before
  the link existed), sent on to the customer profile with the coordinates it was forwarded from.

Encoded as positional msgpack: records are internal and high-volume, and the event travels as its
original JSON bytes so the apply stage validates it with the same contract.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from msgspec import Struct


class RawSource(Struct, array_like=True, frozen=True):
    """Where a record came from on the raw topics."""

    topic: str
    partition: int
    offset: int


class LinkDecision(Struct, array_like=True, frozen=True):
    """Identity resolution's verdict on an identify's anonymous id."""

    anonymous_id: str
    conflict_with: str | None = None  # the customer who already holds the anonymous id


class Resolved(Struct, array_like=True, frozen=True, kw_only=True):
    kind: Literal["event", "merge_out", "merge_in", "forward"]
    profile_id: str
    event: bytes | None = None  # the raw event JSON (event, forward)
    source: RawSource | None = None  # raw coordinates (event, forward)
    link: LinkDecision | None = None  # identify only
    other_profile: str | None = None  # merge_out: the customer to merge into; merge_in: the merged profile
    state: bytes | None = None  # merge_in: the encoded state of the merged profile
    origin_partition: int | None = None  # forward: the events.resolved partition it was forwarded from
    origin_offset: int | None = None


ENCODER: Final = msgspec.msgpack.Encoder()
DECODER: Final = msgspec.msgpack.Decoder(Resolved)
