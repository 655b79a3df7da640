"""Every error the API returns: a precise status and a machine-readable body, never a bare 500 (a defect
gets the body too, from ``services.api.middleware``).

Body: ``{"error": {"code": "profile_not_found", "message": "...", "details": {...}}}``. ``code`` is stable
and documented per route in the OpenAPI description; ``message`` is for people; ``details`` is optional.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from profiles.read import AsOfBeforeLastEventError
from profiles.segment_store import UnreadableSegmentError
from profiles.store import UnreadableProfileError
from profiles.timeutil import iso, to_ms, unwritable
from services.api.responses import JsonResponse


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable reason, e.g. `insufficient_scope`.")
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None
        self.headers = dict(headers or {})


def read_failed(error: AsOfBeforeLastEventError | UnreadableProfileError) -> ApiError:
    """Why a profile or its scores cannot be read (profile and score routes, one id or a batch's): a 422 for
    an ``as_of`` before the profile's last event, a 503 for a stored profile this version cannot decode
    (the worker dead-letters its events until an operator repairs it, docs/streams.md)."""
    if isinstance(error, UnreadableProfileError):
        return ApiError(
            503,
            "profile_unreadable",
            "the stored profile cannot be read by this version of Rapport; an operator must repair it",
            {"profile_id": error.profile_id},
        )
    return ApiError(
        422,
        "as_of_before_last_event",
        "as_of is before the profile's last event",
        {"last_event_at": iso(error.last_event_ms)},
    )


def checked_as_of(as_of: datetime | None) -> int | None:
    """A profile or score route's ``as_of`` (one id or a batch's) in epoch ms, or a 422 ``invalid_as_of``:
    without a UTC offset, or outside the years 0001 to 9999 in UTC, which the answer could not write back
    (``9999-12-31T23:59:59-12:00`` is in year 10000)."""
    if as_of is None:
        return None
    if as_of.tzinfo is None:
        raise ApiError(422, "invalid_as_of", "as_of needs a UTC offset, e.g. 2026-11-23T12:00:00Z")
    ms = to_ms(as_of)
    if (why := unwritable(ms)) is not None:
        raise ApiError(422, "invalid_as_of", f"as_of {why}", {"as_of": as_of.isoformat()})
    return ms


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    body = {"error": {"code": code, "message": message, "details": dict(details) if details is not None else None}}
    return JsonResponse(body, status_code=status, headers=dict(headers or {}))


def redis_unavailable() -> JsonResponse:
    """The 503 of a request Redis could not serve."""
    return error_response(503, "redis_unavailable", "Redis is unavailable; retry", headers={"Retry-After": "1"})


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a route's error statuses, all with the error body. A route that authenticates (401)
    may answer 503 too: keys and rate limits are read from Redis."""
    documented = {*statuses, 503} if 401 in statuses else set(statuses)
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in sorted(documented)}


_DESCRIPTIONS = {
    400: "Bad request.",
    401: "No API key, a malformed one, or one that is unknown or revoked.",
    403: "The key lacks the route's scope, or a publishable key is used from an origin it does not allow.",
    404: "Not found.",
    409: "The request conflicts with what is stored (e.g. `too_many_webhooks`: the namespace has the most allowed).",
    413: "The body is larger than the route accepts.",
    422: "The request does not follow the contract; `details` says where.",
    429: "The key's rate limit is exhausted; retry after `Retry-After` seconds.",
    503: "A dependency (Kafka or Redis) is unavailable; retry after `Retry-After` seconds. Or (code "
    "`profile_unreadable`, `segment_unreadable`) a stored profile or segment definition this version cannot "
    "decode, until an operator repairs it.",
}


def install_error_handlers(app: FastAPI, check_key_first: Callable[[Request], Awaitable[None]]) -> None:
    """``check_key_first``: the key check of the route a request was matched to (``services.api.auth``), run
    before a body that could not be parsed is refused."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JsonResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RedisError)
    async def _redis_down(_: Request, exc: RedisError) -> JsonResponse:
        return redis_unavailable()

    @app.exception_handler(UnreadableProfileError)
    async def _unreadable(_: Request, exc: UnreadableProfileError) -> JsonResponse:
        failed = read_failed(exc)
        return error_response(failed.status, failed.code, failed.message, failed.details)

    @app.exception_handler(UnreadableSegmentError)
    async def _unreadable_segment(_: Request, exc: UnreadableSegmentError) -> JsonResponse:
        return error_response(503, "segment_unreadable", str(exc), {"segment": exc.name})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JsonResponse:
        errors = exc.errors()
        unparsed = [error for error in errors if error.get("type") == "json_invalid"]
        if unparsed:
            # Raised before the route's dependencies ran: the key is checked first, as for every other breach.
            refused = await _key_refusal(request, check_key_first)
            if refused is not None:
                return refused
            why = unparsed[0].get("ctx", {}).get("error", "")
            return error_response(422, "invalid_json", f"the body is not JSON: {why}")
        problems = [
            {"location": [str(part) for part in error.get("loc", ())], "message": str(error.get("msg", ""))}
            for error in errors
        ]
        return error_response(
            422, "invalid_request", "the request does not follow the contract", {"problems": problems}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it could not read as JSON at all (before the dependencies ran).
            refused = await _key_refusal(request, check_key_first)
            if refused is not None:
                return refused
            return error_response(422, "invalid_json", f"the body is not JSON: {exc.detail}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _key_refusal(request: Request, check: Callable[[Request], Awaitable[None]]) -> JsonResponse | None:
    """The answer of the route's key check if it refuses the caller; None if it admits it (or there is none)."""
    try:
        await check(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except RedisError:
        return redis_unavailable()
    return None
