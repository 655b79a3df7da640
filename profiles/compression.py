"""zstd for the models' per-customer blobs in Redis: pending snapshots and models views.

Why: a customer's pending snapshots hold ~17 feature vectors taken days apart, and ~70% of a vector's
values equal the previous one's; with the models views they were ~60% of a namespace's memory
(``docs/benchmarks.md``). zstd at level 1 stores pending snapshots in about a quarter of the bytes and
views in two thirds, for ~16 µs to compress and ~8 µs to decompress a 7 KB blob; a worker catching up on
240,000 events wrote 900–1,400 pending blobs and ~1,800 views, so its CPU barely moves. zlib at its
fastest level compressed less and took four times as long; lz4 was faster but kept a third more bytes
(``docs/decisions.md``).

Blobs stored before compression are read as they are: a zstd frame starts with a magic number that no
msgpack array (the blobs' encoding) starts with.

>>> blob = b"\\x92" + bytes(1000)
>>> len(compress(blob)) < 100, decompress(compress(blob)) == blob, decompress(blob) == blob
(True, True, True)
"""

from __future__ import annotations

import threading
from typing import Final

import zstandard

#: The first bytes of every zstd frame (RFC 8878, 3.1.1).
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_LEVEL: Final = 1


class _Codecs(threading.local):
    """A compression context per thread: zstandard's contexts must not be used by two threads at once."""

    def __init__(self) -> None:
        # The content size goes into each frame (the default), so decompressing allocates once.
        self.compressor = zstandard.ZstdCompressor(level=_LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_codecs: Final = _Codecs()


def compress(raw: bytes) -> bytes:
    return _codecs.compressor.compress(raw)


def decompress(stored: bytes) -> bytes:
    """The blob ``compress`` was given, or ``stored`` itself when it was written uncompressed."""
    if not stored.startswith(ZSTD_MAGIC):
        return stored
    return _codecs.decompressor.decompress(stored)
