"""API keys: what a key may do, how a token is shaped, and where keys live (only their hashes).

A token is ``rk_<kind>_<key id>_<secret>``: ``kind`` is ``sec`` (server-side) or ``pub`` (publishable:
embedded in web pages, so it may only send events and read scores, from the origins it lists). Redis keeps
``rapport:keys:{<key id>}`` = a hash with the SHA-256 of the token and the key's attributes, never the
token: the secret is 256 random bits, so a fast hash is enough (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.asyncio import Redis

from profiles.redis_values import as_text

Scope = Literal["profiles:read", "scores:read", "events:write", "segments:admin", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("profiles:read", "scores:read", "events:write", "segments:admin", "admin")
PUBLISHABLE_SCOPES: Final[frozenset[str]] = frozenset({"events:write", "scores:read"})
_TOKEN: Final = re.compile(r"^rk_(?P<kind>sec|pub)_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
_INDEX: Final = "rapport:keys:index"


class KeyDefinitionError(ValueError):
    """A key definition that cannot be created (bad scope, publishable key without origins, ...)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    publishable: bool
    origins: tuple[str, ...]
    rate_per_s: float
    created_at: float
    revoked_at: float | None = None

    def allows(self, scope: str) -> bool:
        """Whether the key holds ``scope`` (``admin`` holds every scope).

        >>> key = ApiKey("0" * 12, "shop", frozenset({"profiles:read"}), False, (), 10.0, 0.0)
        >>> key.allows("profiles:read"), key.allows("events:write")
        (True, False)
        """
        return scope in self.scopes or "admin" in self.scopes

    def allows_origin(self, origin: str | None) -> bool:
        """Server-side keys ignore origins; a publishable key needs one it lists."""
        return not self.publishable or (origin is not None and origin in self.origins)


def parse_token(token: str) -> tuple[str, bool] | None:
    """``(key id, publishable)`` of a well-formed token, else None.

    >>> parse_token("rk_pub_0123456789ab_" + "x" * 43)
    ('0123456789ab', True)
    >>> parse_token("sk_live_123") is None
    True
    """
    match = _TOKEN.match(token)
    if match is None:
        return None
    return match["key_id"], match["kind"] == "pub"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: Longer names make ``rapport keys list`` unreadable; a name is a label, not a description.
MAX_NAME_LENGTH: Final = 200


def check_definition(name: str, scopes: list[str], publishable: bool, origins: list[str], rate_per_s: float) -> None:
    """Refuse a key that could not be used safely, or that nobody could tell apart from the others (no name).

    >>> check_definition(" ", ["admin"], False, [], 1.0)
    Traceback (most recent call last):
    ...
    services.api.keys.KeyDefinitionError: a key needs a name: who or what uses it
    """
    if not name.strip():
        raise KeyDefinitionError("a key needs a name: who or what uses it")
    if len(name) > MAX_NAME_LENGTH:
        raise KeyDefinitionError(f"a key's name has at most {MAX_NAME_LENGTH} characters, not {len(name)}")
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise KeyDefinitionError(f"the rate limit must be a positive number of requests per second, not {rate_per_s}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise KeyDefinitionError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise KeyDefinitionError("a key needs at least one scope")
    if publishable:
        extra = sorted(set(scopes) - PUBLISHABLE_SCOPES)
        if extra:
            raise KeyDefinitionError(f"a publishable key may only hold {sorted(PUBLISHABLE_SCOPES)}, not {extra}")
        if not origins:
            raise KeyDefinitionError("a publishable key needs at least one allowed origin")
    for origin in origins:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
            raise KeyDefinitionError(f"origin {origin!r} is not scheme://host[:port]")


class KeyStore:
    """API keys in Redis, shared by every namespace."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def _key(key_id: str) -> str:
        return f"rapport:keys:{{{key_id}}}"

    async def create(
        self, name: str, scopes: list[str], *, publishable: bool, origins: list[str], rate_per_s: float
    ) -> tuple[str, ApiKey]:
        """A new key and its token: the token is shown once and never stored."""
        check_definition(name, scopes, publishable, origins, rate_per_s)
        key_id = secrets.token_hex(6)
        token = f"rk_{'pub' if publishable else 'sec'}_{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, frozenset(scopes), publishable, tuple(origins), rate_per_s, time.time())
        fields: dict[Any, Any] = {  # redis-py types mapping keys as an invariant union
            "hash": token_hash(token),
            "name": name,
            "scopes": " ".join(sorted(scopes)),
            "publishable": "1" if publishable else "0",
            "origins": " ".join(origins),
            "rate_per_s": repr(rate_per_s),
            "created_at": repr(key.created_at),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(key_id), mapping=fields)
            pipe.sadd(_INDEX, key_id)
            await pipe.execute()
        return token, key

    async def revoke(self, key_id: str) -> bool:
        """Mark a key revoked (kept for the audit trail); False if there is no such key."""
        if not await self.redis.exists(self._key(key_id)):
            return False
        await self.redis.hsetnx(self._key(key_id), "revoked_at", repr(time.time()))
        return True

    async def all(self) -> list[ApiKey]:
        ids = sorted(as_text(i) for i in await self.redis.smembers(_INDEX))
        loaded = [await self._load(key_id) for key_id in ids]
        return [entry[0] for entry in loaded if entry is not None]

    async def authenticate(self, token: str) -> ApiKey | None:
        """The key a well-formed token belongs to, revoked or not; None if unknown or the secret is wrong."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        loaded = await self._load(parsed[0])
        if loaded is None:
            return None
        key, stored_hash = loaded
        return key if hmac.compare_digest(stored_hash, token_hash(token)) else None

    async def _load(self, key_id: str) -> tuple[ApiKey, str] | None:
        raw = {as_text(k): as_text(v) for k, v in (await self.redis.hgetall(self._key(key_id))).items()}
        if not raw:
            return None
        key = ApiKey(
            key_id=key_id,
            name=raw["name"],
            scopes=frozenset(raw["scopes"].split()),
            publishable=raw["publishable"] == "1",
            origins=tuple(raw["origins"].split()),
            rate_per_s=float(raw["rate_per_s"]),
            created_at=float(raw["created_at"]),
            revoked_at=float(raw["revoked_at"]) if "revoked_at" in raw else None,
        )
        return key, raw["hash"]
