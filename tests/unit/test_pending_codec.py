"""The stored form of pending snapshots: exact round trips, vectors of other feature versions, the earlier
formats (the first one, float64 vectors, uncompressed blobs)."""

from __future__ import annotations

import math
import struct

import msgspec

from profiles.compression import ZSTD_MAGIC, decompress
from profiles.config import FoldConfig
from profiles.features import features
from profiles.models.labels import Pending
from profiles.models.vectors import FEATURE_DIGEST, FEATURE_NAMES, FeatureVector, names_digest
from profiles.pending_store import V1_OTHER_FEATURES, decode_pending, encode_pending
from profiles.state import new_profile

CURRENT = {FEATURE_DIGEST: FEATURE_NAMES}


def pending(snapshot_id: str, feats: dict[str, float], **extra: object) -> Pending:
    return Pending(
        snapshot_id=snapshot_id,
        model="m",
        profile_id="c-1",
        trigger="activity",
        taken_at_ms=1_000,
        horizon_end_ms=2_000,
        features=FeatureVector.of(feats),
        **extra,  # type: ignore[arg-type]
    )


AWKWARD = [0.1, -0.0, 1e-308, 1 / 3, math.pi * 1e12, 2.0**-1074, -7.5, 3e38, 1e-45]


def as_float32(value: float) -> float:
    """The float32 nearest ``value``, by the C library rather than the code under test."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def test_values_round_trip_bit_for_bit_at_float32() -> None:
    feats = dict(zip(FEATURE_NAMES, AWKWARD * 20, strict=False))
    feats = {name: feats.get(name, 0.0) for name in FEATURE_NAMES}
    ps = [pending("a", feats, decided=True, decided_at_ms=1_500, spend_cents=-120, message_id="e-1")]
    decoded, unknown = decode_pending("c-1", encode_pending(ps), CURRENT)
    assert unknown == set()
    assert decoded == ps
    stored = [v.hex() for v in decoded[0].features.as_dict().values()]
    assert stored == [as_float32(v).hex() for v in feats.values()]


class _V2Vector(msgspec.Struct, array_like=True):
    digest: str
    values: bytes


def test_float64_vectors_of_the_second_format_are_still_read_bit_for_bit() -> None:
    """What workers wrote from 2026-12-03 to 2026-12-04: the same blob, float64 vectors."""
    values = [AWKWARD[i % len(AWKWARD)] for i in range(len(FEATURE_NAMES))]
    float32 = encode_pending([pending("a", dict(zip(FEATURE_NAMES, values, strict=True)))])
    blob = msgspec.msgpack.decode(decompress(float32))
    blob[1][0] = _V2Vector(FEATURE_DIGEST, struct.pack(f"<{len(values)}d", *values))
    decoded, unknown = decode_pending("c-1", msgspec.msgpack.encode(blob), CURRENT)
    assert unknown == set()
    assert [v.hex() for v in decoded[0].features.as_dict().values()] == [v.hex() for v in values]


def test_snapshots_of_one_instant_share_one_stored_vector() -> None:
    feats = features(new_profile("c-1", "c-1"), 0, FoldConfig())
    one = decompress(encode_pending([pending("a", feats)]))
    three = decompress(encode_pending([pending(i, feats) for i in "abc"]))
    assert len(three) - len(one) < 150  # two more rows, not two more vectors of ~280 bytes


def test_vectors_of_other_names_need_their_names_and_say_which() -> None:
    other = {"only": 1.0, "two": 2.0}
    ps = [pending("old", other), pending("new", dict.fromkeys(FEATURE_NAMES, 0.5))]
    blob = encode_pending(ps)
    decoded, unknown = decode_pending("c-1", blob, CURRENT)
    assert unknown == {names_digest(("only", "two"))}
    assert [p.snapshot_id for p in decoded] == ["new"]
    decoded, unknown = decode_pending("c-1", blob, {**CURRENT, names_digest(("only", "two")): ("only", "two")})
    assert unknown == set()
    assert decoded == ps
    assert decoded[0].features.as_dict() == other


class _V1Row(msgspec.Struct, array_like=True):
    snapshot_id: str
    model: str
    trigger: str
    taken_at_ms: int
    horizon_end_ms: int
    message_id: str | None
    decided: bool
    decided_at_ms: int | None
    spend_cents: int
    features: int | dict[str, float]


def test_the_first_format_is_still_read() -> None:
    """What workers wrote before vectors were packed: floats in ``FEATURE_NAMES`` order, or a map."""
    values = [float(i) for i in range(len(FEATURE_NAMES))]
    rows = [
        _V1Row("a", "m", "census", 1_000, 2_000, None, False, None, 0, 0),
        _V1Row("b", "m", "activity", 1_000, 2_000, None, True, 1_200, 5, {"x": 3.0}),
    ]
    blob = msgspec.msgpack.encode([[values], rows])
    decoded, unknown = decode_pending("c-1", blob, CURRENT)
    assert unknown == set()
    assert decoded[0].features.as_dict() == dict(zip(FEATURE_NAMES, values, strict=True))
    assert decoded[1].features.as_dict() == {"x": 3.0}
    assert (decoded[1].decided, decoded[1].decided_at_ms, decoded[1].spend_cents) == (True, 1_200, 5)


def test_first_format_vectors_of_other_features_are_reported_not_misread() -> None:
    rows = [
        _V1Row("a", "m", "census", 1_000, 2_000, None, False, None, 0, 0),
        _V1Row("b", "m", "census", 1_000, 2_000, None, False, None, 0, 1),
    ]
    blob = msgspec.msgpack.encode([[[1.0, 2.0], [0.0] * len(FEATURE_NAMES)], rows])
    decoded, unknown = decode_pending("c-1", blob, CURRENT)
    assert unknown == {V1_OTHER_FEATURES}
    assert [p.snapshot_id for p in decoded] == ["b"]


def test_blobs_are_stored_compressed_and_uncompressed_ones_are_still_read() -> None:
    """Workers wrote the same msgpack uncompressed until 2026-12-04; a customer's vectors taken days apart
    repeat most of their values, which is what the compression is for."""
    state = new_profile("c-1", "c-1")
    day = 86_400_000
    ps = [pending(f"s-{d}", features(state, d * day, FoldConfig())) for d in range(1, 18)]
    blob = encode_pending(ps)
    raw = decompress(blob)
    assert blob.startswith(ZSTD_MAGIC)
    assert not raw.startswith(ZSTD_MAGIC)
    assert len(blob) < len(raw) / 3
    assert decode_pending("c-1", blob, CURRENT) == decode_pending("c-1", raw, CURRENT) == (ps, set())
