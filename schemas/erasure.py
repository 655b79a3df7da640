"""Records of the compacted ``erasures`` topic: who was erased, under which receipt, and every id they had.

An erasure is final (docs/erasure.md). The record lists every id the customer was known by when the
erasure was requested — the ids events carry (customer id, anonymous ids, emails) and the profile ids
Rapport kept for them — so that the live worker and every replay can refuse those ids from the start,
whatever namespace they write. Keyed by the canonical profile id: a second erasure of the same customer
is answered with the first receipt, so compaction never drops ids.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

ReceiptId = Annotated[str, Meta(pattern=r"^er_[0-9a-f]{32}$")]


class ErasureRecord(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    erasure_id: ReceiptId
    requested_id: str  # the id the request named
    profile_ids: list[str]  # the canonical profile and the anonymous profiles merged into it
    ids: list[str]  # what events carry: customer id, anonymous ids, lower-cased emails
    requested_at_ms: int


ENCODER: Final = msgspec.json.Encoder()
DECODER: Final = msgspec.json.Decoder(ErasureRecord)


def encode(record: ErasureRecord) -> bytes:
    return ENCODER.encode(record)


def decode(value: bytes) -> ErasureRecord:
    """The record in ``value``; raises ``msgspec.DecodeError`` or ``msgspec.ValidationError`` if it is not one.

    >>> decode(b'{"erasure_id": "er_' + b'0' * 32 + b'", "requested_id": "c-1", "profile_ids": ["c-1"],'
    ...        b' "ids": ["c-1"], "requested_at_ms": 0}').profile_ids
    ['c-1']
    """
    return DECODER.decode(value)
