"""Redis clients built from settings, when a process starts (never at import)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.settings import Settings


def make_redis(settings: Settings) -> Redis:
    """Binary-safe (profiles are msgpack), with timeouts so an outage surfaces as an error to retry; its
    connections pack commands with hiredis and read a pipeline's replies under one deadline (below). A command
    that finds every connection busy waits for one (``redis.pool_timeout_s``): a burst is queued, not refused."""
    pool = BlockingConnectionPool.from_url(
        settings.redis.url,
        max_connections=settings.redis.max_connections,
        timeout=settings.redis.pool_timeout_s,
        decode_responses=False,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        health_check_interval=10,
    )
    pool.connection_class = fast_connection(pool.connection_class)
    return FastRedis.from_pool(pool)


#: Above this many arguments a command goes to redis-py's packer: hiredis copies every argument into one
#: buffer, and its cost grows faster than the command (1,000 values of 2.7 KB: 3 ms, against 0.5 ms).
_HIREDIS_MAX_ARGS = 64


class _HiredisPacking:
    """Commands packed into the wire protocol by hiredis, in C. redis-py's asyncio connections pack them in
    Python (its sync ones use hiredis when it is installed): 2.15 µs against 0.64 µs for an entry's ZADD,
    and packing was ~4.7% of the worker's CPU (py-spy, bench throughput phase, 2026-12-04). Long commands,
    multi-word command names and what hiredis refuses (bytearrays; None and bools, which redis-py refuses
    with ``DataError``) take redis-py's own path."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if len(args) > _HIREDIS_MAX_ARGS or (b" " if isinstance(name, bytes) else " ") in name:
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]


#: A pipeline's replies share one deadline: the socket timeout, plus this much per command.
PIPELINE_DEADLINE_PER_COMMAND_S: Final = 0.001

_T = TypeVar("_T")


class FastRedis(Redis):
    """A client whose pipelines read their replies under one deadline (``_Pipeline``)."""

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class _Pipeline(Pipeline):
    """A pipeline whose replies are read under one deadline, not one timeout each.

    redis-py reads each reply of a pipeline under its own ``socket_timeout``: an ``asyncio.timeout``
    entered and left per reply, 3.4 µs of the 8.4 µs a pipelined ``SET`` costs the client (2,000 of them,
    2026-12-04). The worker pipelines several commands per customer per batch, so here the whole exchange
    has one deadline, ``socket_timeout`` plus ``PIPELINE_DEADLINE_PER_COMMAND_S`` per command (a healthy
    Redis answers a pipelined command in microseconds). A missed deadline is redis-py's ``TimeoutError``,
    as a missed per-reply timeout was, and the connection is dropped (redis-py disconnects a connection
    whose read was interrupted), so the caller's retry starts on a fresh one."""

    async def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        run = super()._execute_pipeline(connection, commands, raise_on_error)
        return await _one_deadline(connection, len(commands), run)

    async def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        run = super()._execute_transaction(connection, commands, raise_on_error)
        return await _one_deadline(connection, len(commands) + 2, run)  # with MULTI and EXEC


async def _one_deadline(connection: Any, commands: int, run: Awaitable[_T]) -> _T:
    timeout = connection.socket_timeout
    if timeout is None or not isinstance(connection, _PipelineDeadline):
        return await run
    connection.under_deadline = True
    try:
        async with asyncio.timeout(timeout + commands * PIPELINE_DEADLINE_PER_COMMAND_S):
            return await run
    except TimeoutError as exc:  # the deadline's (redis-py's own TimeoutError is not a builtin one)
        raise RedisTimeoutError(f"Timeout reading the replies of {commands} pipelined commands") from exc
    finally:
        connection.under_deadline = False


class _PipelineDeadline:
    """Reads without a timeout of their own while a pipeline's deadline covers them (``_Pipeline``)."""

    under_deadline = False

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        if timeout is None and self.under_deadline:
            timeout = math.inf  # redis-py's "no timeout of its own"
        return await super().read_response(  # type: ignore[misc]
            disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
        )


_FAST: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def fast_connection(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class`` (plain, TLS or unix socket, as the URL says) with hiredis packing its commands
    and one deadline for a pipeline's replies."""
    if connection_class not in _FAST:
        name = f"Fast{connection_class.__name__}"
        _FAST[connection_class] = type(name, (_HiredisPacking, _PipelineDeadline, connection_class), {})
    return _FAST[connection_class]
