"""Stable 64-bit hashes of ids, as profiles store them (Python's ``hash`` changes between processes). Pure."""

from __future__ import annotations

import hashlib
from functools import lru_cache


def id_digest(value: str) -> bytes:
    """The 8 bytes of ``id_hash`` (the duplicate memories keep a prefix of them, ``profiles.dedup``)."""
    return hashlib.blake2b(value.encode(), digest_size=8).digest()


def id_hash(value: str) -> int:
    """A stable 64-bit hash.

    >>> id_hash("ev-1") == id_hash("ev-1") != id_hash("ev-2")
    True
    >>> id_hash("ev-1") == int.from_bytes(id_digest("ev-1"), "big")
    True
    """
    return int.from_bytes(id_digest(value), "big")


#: Session ids and stream identities repeat across many events: hash each once.
repeated_id_hash = lru_cache(maxsize=1 << 16)(id_hash)
