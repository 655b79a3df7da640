"""zstd for the models' per-customer blobs: exact round trips, blobs stored before it still read, threads."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest
import zstandard

from profiles.compression import ENTRY_DICTIONARIES, ZSTD_MAGIC, compress, decompress, decompress_entry
from profiles.models.view import (
    EVENT,
    Entry,
    ModelView,
    decode_entry,
    decode_view,
    encode_entry,
    encode_view,
    pack_entry,
)
from schemas.validation import Rejection, decode_event
from services import entry_dictionary
from services.simulator import Simulation, SimulationConfig
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


def simulated_entries() -> list[Entry]:
    lines = Simulation(SimulationConfig(customers=40, days=10, seed=5)).lines()  # not the dictionary's seed
    events = (decode_event(line) for line in lines)
    return [Entry(T0, EVENT, e.event_id, msgspec.json.encode(e)) for e in events if not isinstance(e, Rejection)]


def test_entries_are_stored_in_under_a_third_of_their_bytes_and_read_back_exactly() -> None:
    entries = simulated_entries()
    stored = [encode_entry(e) for e in entries]
    assert all(s.startswith(ZSTD_MAGIC) for s in stored)
    assert [decode_entry(s) for s in stored] == entries
    raw = sum(len(pack_entry(e)) for e in entries)
    assert sum(map(len, stored)) < raw / 3, (sum(map(len, stored)), raw)
    assert [encode_entry(e) for e in entries] == stored  # the same entry, the same member of the sorted set


def test_entries_stored_uncompressed_are_still_read_and_an_unknown_dictionary_is_named() -> None:
    entry = simulated_entries()[0]
    legacy = pack_entry(entry)  # as stored until 2026-12-05
    assert decode_entry(legacy) == entry
    samples: list[bytes | bytearray | memoryview] = [legacy, bytes(range(200))] * 8
    other = zstandard.ZstdCompressor(dict_data=zstandard.train_dictionary(4096, samples))
    with pytest.raises(ValueError, match="which this version does not ship"):
        decompress_entry(other.compress(legacy))


def test_the_shipped_entry_dictionary_is_the_one_its_tool_trains() -> None:
    """``python -m services.entry_dictionary`` is deterministic: the shipped bytes can be made again."""
    trained = zstandard.train_dictionary(entry_dictionary.SIZE, entry_dictionary.samples(300, 30, seed=1))
    assert trained.as_bytes() == (entry_dictionary.DICTIONARIES / ENTRY_DICTIONARIES[-1]).read_bytes()
