"""Feature vectors of pending snapshots: values packed as float64 bytes beside a shared tuple of names.

Why: a customer holds a few dozen pending snapshots, and every fold of the customer's models view loads
and stores them (until 2026-12-03, every batch that touched the customer did). As name → float maps they
cost ~70 µs to decode and ~55 µs to encode per customer (msgpack floats become Python floats, then 69-key
dicts), a sixth of the worker's time with the models' stage on then.
Packed, the values stay bytes until an example is released: storing and loading copy bytes, and the map
is built once per example. float64 keeps every value exact, so a replay releases the same examples.

``names`` is shared (the names of the running version's ``features()`` are one tuple), and ``digest``
identifies a tuple of names in storage, where vectors written by another version may use other names.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping, Sequence
from typing import Final

from msgspec import Struct

from profiles.config import FoldConfig
from profiles.features import features
from profiles.state import new_profile


def names_digest(names: Sequence[str]) -> str:
    """A short, stable identifier of an ordered tuple of feature names.

    >>> names_digest(("a", "b")) == names_digest(["a", "b"]) != names_digest(("b", "a"))
    True
    """
    return hashlib.blake2b("\n".join(names).encode(), digest_size=8).hexdigest()


#: The names of ``features()`` in its order, in the running version.
FEATURE_NAMES: Final = tuple(features(new_profile("-", "-"), 0, FoldConfig()))
FEATURE_DIGEST: Final = names_digest(FEATURE_NAMES)


def _pack(values: Sequence[float]) -> bytes:
    packed = array("d", values)
    if array("H", [1]).tobytes() != b"\x01\x00":  # stored little-endian whatever the host's order
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: bytes) -> array[float]:
    values = array("d", blob)
    if array("H", [1]).tobytes() != b"\x01\x00":
        values.byteswap()
    return values


class FeatureVector(Struct, frozen=True):
    """Features in ``names`` order, ``packed`` as little-endian float64.

    >>> v = FeatureVector.of({"a": 1.5, "b": -2.0})
    >>> v.as_dict(), FeatureVector.of(v.as_dict()) == v, len(v.packed)
    ({'a': 1.5, 'b': -2.0}, True, 16)
    """

    names: tuple[str, ...]
    packed: bytes

    @classmethod
    def of(cls, feats: Mapping[str, float]) -> FeatureVector:
        names = tuple(feats)
        return cls(FEATURE_NAMES if names == FEATURE_NAMES else names, _pack(list(feats.values())))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, _unpack(self.packed), strict=True))
