"""zstd for the models' per-customer blobs in Redis: pending snapshots, models views, pending entries.

Why: a customer's pending snapshots hold ~17 feature vectors taken days apart, and ~70% of a vector's
values equal the previous one's; with the models views they were ~60% of a namespace's memory
(``docs/benchmarks.md``). zstd at level 1 stores pending snapshots in about a quarter of the bytes and
views in two thirds, for ~16 µs to compress and ~8 µs to decompress a 7 KB blob; a worker catching up on
240,000 events wrote 900–1,400 pending blobs and ~1,800 views, so its CPU barely moves. zlib at its
fastest level compressed less and took four times as long; lz4 was faster but kept a third more bytes
(``docs/decisions.md``).

Blobs stored before compression are read as they are: a zstd frame starts with a magic number that no
msgpack array (the blobs' encoding) starts with.

Pending entries (one event each, ~370 bytes) are compressed with a dictionary trained on simulated events
(``services.entry_dictionary``, shipped in ``profiles/dictionaries``): alone, an entry only shrinks to ~280
bytes; with the dictionary to ~85. Each frame names its dictionary, and every dictionary ever shipped is
kept, so an entry decompresses whichever version wrote it; a dictionary is written with only from the
release after the one that shipped it, so that a rollback of one release reads what was written.

>>> blob = b"\\x92" + bytes(1000)
>>> len(compress(blob)) < 100, decompress(compress(blob)) == blob, decompress(blob) == blob
(True, True, True)
"""

from __future__ import annotations

import threading
from functools import cache
from importlib.resources import files
from typing import Final, NamedTuple

import zstandard

#: The first bytes of every zstd frame (RFC 8878, 3.1.1).
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_LEVEL: Final = 1
#: Entries are small and written once: level 3 keeps ~3% fewer bytes than 1 at the same speed.
_ENTRY_LEVEL: Final = 3
#: The dictionaries shipped for entries, oldest first: an entry decompresses whichever of them wrote it.
ENTRY_DICTIONARIES: Final = ("entries-1.zdict",)
#: The one new entries are compressed with. A new dictionary is shipped in one release and written with from
#: a later one: a rollback from the release that writes it to the one that shipped it still reads every entry
#: (docs/decisions.md, "Pending model entries are compressed with a shipped dictionary").
ENTRY_WRITE_DICTIONARY: Final = "entries-1.zdict"


@cache
def _entry_dictionaries() -> tuple[zstandard.ZstdCompressionDict, ...]:
    """Read from the package once, when the first entry is compressed or decompressed."""
    folder = files("profiles").joinpath("dictionaries")
    return tuple(zstandard.ZstdCompressionDict(folder.joinpath(name).read_bytes()) for name in ENTRY_DICTIONARIES)


class _EntryCodecs(NamedTuple):
    compressor: zstandard.ZstdCompressor  # with the newest dictionary
    decompressors: dict[int, zstandard.ZstdDecompressor]  # by dictionary id


class _Codecs(threading.local):
    """A compression context per thread: zstandard's contexts must not be used by two threads at once."""

    def __init__(self) -> None:
        # The content size goes into each frame (the default), so decompressing allocates once.
        self.compressor = zstandard.ZstdCompressor(level=_LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()
        self._entries: _EntryCodecs | None = None

    def entries(self) -> _EntryCodecs:
        if self._entries is None:
            dictionaries = _entry_dictionaries()
            writing = dictionaries[ENTRY_DICTIONARIES.index(ENTRY_WRITE_DICTIONARY)]
            compressor = zstandard.ZstdCompressor(level=_ENTRY_LEVEL, dict_data=writing, write_checksum=False)
            decompressors = {d.dict_id(): zstandard.ZstdDecompressor(dict_data=d) for d in dictionaries}
            self._entries = _EntryCodecs(compressor, decompressors)
        return self._entries


_codecs: Final = _Codecs()


def compress(raw: bytes) -> bytes:
    return _codecs.compressor.compress(raw)


def decompress(stored: bytes) -> bytes:
    """The blob ``compress`` was given, or ``stored`` itself when it was written uncompressed."""
    if not stored.startswith(ZSTD_MAGIC):
        return stored
    return _codecs.decompressor.decompress(stored)


def compress_entry(raw: bytes) -> bytes:
    """A pending entry compressed with the newest entry dictionary. The same bytes give the same frame (a
    sorted set of entries recognises an entry added twice by its bytes).

    >>> entry = b"\\x94\\x01\\x01\\xa3e-1\\xc4\\x02{}"
    >>> decompress_entry(compress_entry(entry)) == entry, compress_entry(entry) == compress_entry(entry)
    (True, True)
    """
    return _codecs.entries().compressor.compress(raw)


def decompress_entry(stored: bytes) -> bytes:
    """The entry ``compress_entry`` was given (with the dictionary its frame names), or ``stored`` itself
    when it was written uncompressed (before 2026-12-05)."""
    if not stored.startswith(ZSTD_MAGIC):
        return stored
    dictionary_id = zstandard.get_frame_parameters(stored).dict_id
    decompressor = _codecs.entries().decompressors.get(dictionary_id)
    if decompressor is None:
        raise ValueError(f"an entry compressed with dictionary {dictionary_id}, which this version does not ship")
    return decompressor.decompress(stored)
