"""The signature a webhook receiver checks: HMAC-SHA256 over the timestamp and the body.

Header ``Rapport-Signature: t=<unix seconds>,v1=<hex digest>``, where the digest is
``HMAC-SHA256(secret, f"{t}.".encode() + body)``. The timestamp is signed so a receiver can refuse old
requests (a replay of a captured one); ``verify`` does that with a tolerance.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """
    >>> sign("s3cret", b'{"a":1}', 1700000000)
    't=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940'
    """
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does (and the tests do): a valid signature of this body, made recently."""
    # hmac.compare_digest raises TypeError on a str that is not ASCII; a signature never is, whatever the
    # sender put in the header.
    if not header.isascii():
        return False
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)
