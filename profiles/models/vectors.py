"""Feature vectors of pending snapshots: values packed as float32 bytes beside a shared tuple of names.

Why: a customer holds a few dozen pending snapshots, and every fold of the customer's models view loads
and stores them (until 2026-12-03, every batch that touched the customer did). As name → float maps they
cost ~70 µs to decode and ~55 µs to encode per customer (msgpack floats become Python floats, then 69-key
dicts), a sixth of the worker's time with the models' stage on then.
Packed, the values stay bytes until an example is released: storing and loading copy bytes, and the map
is built once per example.

Why float32 (float64 until 2026-12-04): the vectors are ~80% of the pending snapshots' bytes, and those
~60% of a namespace's. Seven significant digits are more than an online linear model can use, and a
replay packs the same values the same way, so it still releases the same examples. Vectors stored as
float64 are still read: a vector's length over its names' count says which width it has.

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


_BIG_ENDIAN: Final = array("H", [1]).tobytes() != b"\x01\x00"


def _pack(values: Sequence[float]) -> bytes:
    packed = array("f", values)
    if _BIG_ENDIAN:  # stored little-endian whatever the host's order
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: bytes, count: int) -> array[float]:
    values = array("d" if len(blob) == 8 * count else "f", blob)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


class FeatureVector(Struct, frozen=True):
    """Features in ``names`` order, ``packed`` as little-endian float32 (float64 when stored by an older
    version).

    >>> v = FeatureVector.of({"a": 1.5, "b": -2.0, "c": 0.1})
    >>> v.as_dict()["b"], FeatureVector.of(v.as_dict()) == v, len(v.packed)
    (-2.0, True, 12)
    >>> v.as_dict()["c"] == 0.1, abs(v.as_dict()["c"] - 0.1) < 1e-8  # rounded to float32
    (False, True)
    >>> old = FeatureVector(("a", "c"), array("d", [1.5, 0.1]).tobytes())  # little-endian hosts
    >>> old.as_dict() == {"a": 1.5, "c": 0.1}
    True
    """

    names: tuple[str, ...]
    packed: bytes

    @classmethod
    def of(cls, feats: Mapping[str, float]) -> FeatureVector:
        names = tuple(feats)
        return cls(FEATURE_NAMES if names == FEATURE_NAMES else names, _pack(list(feats.values())))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, _unpack(self.packed, len(self.names)), strict=True))
