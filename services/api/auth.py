"""Who is calling: the API key dependency (``Authorization: Bearer <token>``), scopes, origins, rate limits."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.context import ApiContext
from services.api.errors import ApiError
from services.api.keys import ApiKey, Scope, parse_token, token_hash

# Documents the scheme in OpenAPI; the header is read below so that each failure gets its own code.
_BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer rk_…`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class KeyCache:
    """Looked-up keys by token hash for ``ttl_s``: a hot key costs no round trip (revocations take up to
    ``ttl_s`` to apply in a process)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}

    async def get(self, token: str, load: Callable[[str], Awaitable[ApiKey | None]]) -> ApiKey | None:
        digest = token_hash(token)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await load(token)
        if self.ttl_s > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (now + self.ttl_s, key)
        return key


def require(scope: Scope) -> KeyRequired:
    """A dependency that admits a caller holding ``scope`` and counts the request against its rate limit."""
    return KeyRequired(scope)


class KeyRequired:
    """The key check of routes that need ``scope`` (``require``)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self, request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None
    ) -> ApiKey:
        ctx: ApiContext = request.app.state.ctx
        header = request.headers.get("authorization")
        if not header:
            raise ApiError(401, "missing_api_key", "send an API key: Authorization: Bearer rk_…", headers=_CHALLENGE)
        scheme, _sep, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or parse_token(token) is None:
            raise ApiError(401, "malformed_api_key", "the Authorization header is not Bearer rk_…", headers=_CHALLENGE)
        key = await ctx.key_cache.get(token, ctx.keys.authenticate)
        if key is None:
            raise ApiError(401, "invalid_api_key", "unknown API key", headers=_CHALLENGE)
        if key.revoked_at is not None:
            raise ApiError(401, "revoked_api_key", "this API key was revoked", headers=_CHALLENGE)
        origin = request.headers.get("origin")
        if not key.allows_origin(origin):
            raise ApiError(403, "origin_not_allowed", "this publishable key does not allow this origin")
        if not key.allows(self.scope):
            raise ApiError(
                403, "insufficient_scope", f"this route needs the {self.scope} scope", {"required": self.scope}
            )
        wait_s = await ctx.limiter.wait_s(key.key_id, key.rate_per_s)
        if wait_s > 0:
            raise rate_limited(key, wait_s)
        if key.publishable and origin is not None:
            request.state.cors_origin = origin  # the CORS middleware allows this response to be read
        return key


async def check_key_first(request: Request) -> None:
    """The key check of the route ``request`` was matched to, if it has one (raises its refusal). FastAPI parses a
    JSON body before it solves a route's dependencies, so a body that is not JSON would otherwise be refused
    before the key is checked: a caller with no key or a wrong one would learn the route's contract first."""
    route = request.scope.get("route")
    for dependency in getattr(getattr(route, "dependant", None), "dependencies", ()):
        if isinstance(dependency.call, KeyRequired):
            await dependency.call(request)


def rate_limited(key: ApiKey, wait_s: float) -> ApiError:
    retry = str(max(1, math.ceil(wait_s)))
    return ApiError(429, "rate_limited", "rate limit exceeded", {"rate_per_s": key.rate_per_s}, {"Retry-After": retry})
