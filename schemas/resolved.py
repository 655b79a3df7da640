"""Records of ``events.resolved``: the contract between the resolve stage and the apply stage.

Every resolved record goes to the partition of its canonical profile id (Kafka's default partitioner on
the id), so the worker that owns a profile's partition sees everything that changes it, in order. Records
travel in *envelopes*: one Kafka record holds the resolved records a batch sends to one partition, because
a Kafka record costs far more to produce and fetch than to decode, and this topic carries every event a
second time. A resolved record's position is its envelope's offset and its index in the envelope
(``position``). Five kinds:

- ``event``: a valid raw event routed to its profile, with the raw coordinates it came from (used to
  skip what a restarted resolver sends again) and, for identifies, what identity resolution decided;
- ``merge_out``: tells an anonymous profile it was linked to a customer: hand your state over, then
  forward whatever still arrives;
- ``merge_in``: the anonymous profile's state, for the customer profile to add;
- ``forward``: an event that reached an anonymous profile after it was merged (a straggler resolved before
  the link existed), sent on to the customer profile with the coordinates it was forwarded from;
- ``erase``: the profile was erased (``other_profile`` holds the erasure's receipt): delete it.

An envelope can also carry a *progress marker* instead of records (``SourceMarker`` from a resolve stage,
``ApplyMarker`` from an apply stage), sent to every partition: what it says holds for everything before it
in that partition. The models' event-time watermark is built from them (``profiles.models.progress``).

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
    #: Not linked: the customer already holds ``profile.max_anonymous_ids`` anonymous ids.
    limited: bool = False


class Resolved(Struct, array_like=True, frozen=True, kw_only=True):
    kind: Literal["event", "merge_out", "merge_in", "forward", "erase"]
    profile_id: str
    event: bytes | None = None  # the raw event JSON (event, forward)
    source: RawSource | None = None  # raw coordinates (event, forward)
    link: LinkDecision | None = None  # identify only
    # merge_out: the customer to merge into; merge_in: the merged profile; erase: the erasure's receipt
    other_profile: str | None = None
    state: bytes | None = None  # merge_in: the encoded state of the merged profile
    origin_partition: int | None = None  # forward: the events.resolved partition it was forwarded from
    origin_offset: int | None = None
    ingested_ms: int | None = None  # Kafka timestamp of the raw record: when it entered Rapport (freshness)
    #: identify only: its email is not the customer's, who named ``profile.max_emails`` others already
    email_refused: bool = False


class SourceMarker(Struct, array_like=True, frozen=True):
    """A resolve stage's progress: every record it resolved from these raw partitions, up to the newest
    event time given, was sent to ``events.resolved`` before this marker."""

    raw_partitions: int  # how many raw partitions exist (all the raw topics')
    newest: dict[str, int]  # raw partition ("topic:partition") -> newest event time resolved and sent (ms)
    idle: list[str]  # raw partitions it has read to their end, with nothing new for a while


class ApplyMarker(Struct, array_like=True, frozen=True):
    """An apply stage's progress: ``partition`` folded every record up to ``bound`` (event time, ms), and
    what that sent on (forwards, hand-overs) was acknowledged before this marker."""

    partition: int
    bound: int


class Envelope(Struct, array_like=True, frozen=True):
    records: list[Resolved]
    sources: SourceMarker | None = None
    applied: ApplyMarker | None = None
    #: The namespace whose worker sent it ("" in envelopes written before this field existed). Each
    #: namespace's worker resolves the raw topics itself, so it skips the envelopes of other namespaces.
    namespace: str = ""


#: An envelope holds at most this many records, so (offset, index) packs into one integer.
ENVELOPE_SLOTS: Final = 4096
#: And stays well under Kafka's default 1 MB record limit.
ENVELOPE_MAX_BYTES: Final = 512 * 1024

ENCODER: Final = msgspec.msgpack.Encoder()
DECODER: Final = msgspec.msgpack.Decoder(Envelope)


def marker(namespace: str, *, sources: SourceMarker | None = None, applied: ApplyMarker | None = None) -> bytes:
    """An envelope holding only a progress marker."""
    return ENCODER.encode(Envelope([], sources, applied, namespace))


def position(offset: int, index: int) -> int:
    """A resolved record's position: ordered like (envelope offset, index in the envelope).

    >>> position(10, 4095) < position(11, 0)
    True
    """
    return offset * ENVELOPE_SLOTS + index


def envelopes(records: list[Resolved], namespace: str) -> list[bytes]:
    """Pack records, in order, into as few envelopes as the limits allow."""
    out: list[bytes] = []
    chunk: list[Resolved] = []
    size = 0
    for record in records:
        # An upper bound of the record's encoded size: its two blobs plus generous room for the rest.
        estimate = len(record.event or b"") + len(record.state or b"") + 256
        if chunk and (len(chunk) == ENVELOPE_SLOTS or size + estimate > ENVELOPE_MAX_BYTES):
            out.append(ENCODER.encode(Envelope(chunk, namespace=namespace)))
            chunk, size = [], 0
        chunk.append(record)
        size += estimate
    if chunk:
        out.append(ENCODER.encode(Envelope(chunk, namespace=namespace)))
    return out
