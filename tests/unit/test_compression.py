"""zstd for the models' per-customer blobs: exact round trips, blobs stored before it still read, threads."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import msgspec

from profiles.compression import ZSTD_MAGIC, compress, decompress
from profiles.models.view import ModelView, decode_view, encode_view
from tests.unit.models_support import T0, click, folded


def test_round_trips_exactly_whatever_the_bytes() -> None:
    rng = random.Random(7)
    blobs = [b"", b"\x90", bytes(5000), rng.randbytes(3000), b"\x93\x02" + rng.randbytes(64) * 40]
    for blob in blobs:
        stored = compress(blob)
        assert stored.startswith(ZSTD_MAGIC)
        assert decompress(stored) == blob


def test_uncompressed_msgpack_is_returned_as_it_is() -> None:
    """What workers stored until 2026-12-04: msgpack arrays, which never start with zstd's magic."""
    values: list[object] = [[2, [], []], [[], []], {"a": 1}, [40]]
    for value in values:
        blob = msgspec.msgpack.encode(value)
        assert decompress(blob) == blob


def test_threads_compress_at_once_without_mixing_their_frames() -> None:
    rng = random.Random(11)
    blobs = [bytes([i]) * 2000 + rng.randbytes(200) for i in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        stored = list(pool.map(compress, blobs))
        assert list(pool.map(decompress, stored)) == blobs


def test_views_are_stored_compressed_and_uncompressed_ones_are_still_read() -> None:
    view = ModelView(state=folded(click(i, T0 + i * 3_600_000) for i in range(40)), clock_ms=T0 + 40 * 3_600_000)
    stored = encode_view(view)
    assert stored.startswith(ZSTD_MAGIC)
    raw = decompress(stored)
    assert len(stored) < len(raw)
    assert decode_view(stored) == decode_view(raw) == view
