"""Values as the Redis client returns them: bytes from a binary-safe client, str from a decoding one."""

from __future__ import annotations


def as_text(value: bytes | str) -> str:
    """
    >>> as_text(b"c-1"), as_text("c-1")
    ('c-1', 'c-1')
    """
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    """
    >>> as_bytes("v1"), as_bytes(b"v1")
    (b'v1', b'v1')
    """
    return value.encode() if isinstance(value, str) else value
