"""Signed, versioned model snapshots: the only bytes serving will unpickle.

A snapshot is ``MAGIC ‖ tag ‖ len(meta) ‖ meta ‖ payload``: ``meta`` is JSON (name, version, times,
examples seen, metrics), ``payload`` the pickled model state, and ``tag`` is HMAC-SHA256 under a configured
secret over everything after it (the magic included). Pickle runs code while it loads, so the tag is checked
(``hmac.compare_digest``, constant time) before a single byte is unpickled; anything unsigned, truncated,
tampered with or signed under another secret raises ``SnapshotRejectedError``. The metadata can be read,
verified, without unpickling anything (``read_meta``), for listings.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Iterable
from typing import Any, Final

import msgspec
from msgspec import Struct

MAGIC: Final = b"RPMS1"
_TAG = hashlib.sha256().digest_size
_LEN = 4


class SnapshotRejectedError(ValueError):
    """The bytes are not a snapshot signed with this secret: nothing was unpickled."""


class SnapshotMeta(Struct, frozen=True, kw_only=True):
    name: str
    version: int
    created_at_ms: int
    examples_seen: int
    horizon_ms: int
    metrics: dict[str, float | None] = {}
    #: The position after the last example learned (a ``models.examples`` offset): a resumed trainer
    #: re-learns from there.
    source_offset: int | None = None


class ModelSnapshot(Struct, frozen=True, kw_only=True):
    """A verified, loaded snapshot: its metadata and the unpickled payload."""

    meta: SnapshotMeta
    payload: Any


def _check_secret(secret: bytes) -> None:
    if not secret:
        raise ValueError("a snapshot secret must not be empty")


def _tag(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, signed, hashlib.sha256).digest()


def dump_snapshot(meta: SnapshotMeta, payload: Any, secret: bytes) -> bytes:
    """The signed snapshot of ``payload`` with ``meta``.

    >>> blob = dump_snapshot(SnapshotMeta(name="m", version=3, created_at_ms=0, examples_seen=9, horizon_ms=1),
    ...                      {"w": 1.5}, b"secret")
    >>> load_snapshot(blob, b"secret").payload
    {'w': 1.5}
    >>> load_snapshot(blob, b"other")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    profiles.models.snapshots.SnapshotRejectedError: snapshot signature does not match: ...
    """
    _check_secret(secret)
    meta_bytes = msgspec.json.encode(meta)
    body = len(meta_bytes).to_bytes(_LEN, "big") + meta_bytes + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + _tag(secret, MAGIC + body) + body


def _verified_body(blob: bytes, secret: bytes) -> tuple[SnapshotMeta, bytes]:
    """The metadata and the still-pickled payload, once the signature is verified."""
    _check_secret(secret)
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _TAG + _LEN:
        raise SnapshotRejectedError("not a signed Rapport model snapshot")
    tag, body = blob[len(MAGIC) : len(MAGIC) + _TAG], blob[len(MAGIC) + _TAG :]
    if not hmac.compare_digest(tag, _tag(secret, MAGIC + body)):
        raise SnapshotRejectedError("snapshot signature does not match: tampered, or signed with another secret")
    size = int.from_bytes(body[:_LEN], "big")
    # Signed, so these can only fail for a snapshot a bug wrote: still refused, not half-loaded.
    try:
        meta = msgspec.json.decode(body[_LEN : _LEN + size], type=SnapshotMeta)
    except msgspec.DecodeError as exc:
        raise SnapshotRejectedError(f"snapshot metadata is invalid: {exc}") from exc
    return meta, body[_LEN + size :]


def read_meta(blob: bytes, secret: bytes) -> SnapshotMeta:
    """The verified metadata of a snapshot, without unpickling its payload."""
    return _verified_body(blob, secret)[0]


def load_snapshot(blob: bytes, secret: bytes) -> ModelSnapshot:
    """The snapshot in ``blob``, unpickled only after its signature is verified."""
    meta, pickled = _verified_body(blob, secret)
    payload = pickle.loads(pickled)  # noqa: S301 -- verified above: only bytes this service signed get here
    return ModelSnapshot(meta=meta, payload=payload)


def retain(versions: Iterable[int], keep: int) -> tuple[list[int], list[int]]:
    """Split stored versions into the newest ``keep`` (newest first) and the ones to delete.

    >>> retain([1, 5, 3, 4, 2], keep=3)
    ([5, 4, 3], [2, 1])
    """
    if keep < 1:
        raise ValueError("keep at least one version")
    ordered = sorted(set(versions), reverse=True)
    return ordered[:keep], ordered[keep:]
