"""The worker's Redis connections: hiredis packs commands into the bytes redis-py would send, and a pipeline's
replies are read under one deadline that still ends in redis-py's TimeoutError."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from services.redis_client import PIPELINE_DEADLINE_PER_COMMAND_S, FastRedis, fast_connection, make_redis
from services.settings import Settings

COMMANDS: list[tuple[EncodableT, ...]] = [
    ("SET", "rapport:live:p:{c-1}", b"\x93\x01\x02", "EX", 600),
    ("CONFIG GET", "maxmemory"),
    (b"EVALSHA", "f" * 40, 2, "k1", "k2", 1.5, bytearray(b"x"), memoryview(b"yz")),
    ("ZADD", "z", 1_734_000_000_000, b"m", 0.1 + 0.2, "n", float("inf"), "o", 1e20, "p"),
    ("SET", "h\u00e9llo", "w\u00f6rld"),
    ("SET", "big", b"v" * 100_000),
    ("MGET", *(f"rapport:live:p:{{c-{i}}}" for i in range(500))),  # long: redis-py's own path
]


@pytest.mark.parametrize("args", COMMANDS)
def test_commands_are_packed_as_redis_py_packs_them(args: tuple[EncodableT, ...]) -> None:
    packed = b"".join(fast_connection(Connection)().pack_command(*args))
    assert packed == b"".join(bytes(chunk) for chunk in Connection().pack_command(*args))


@pytest.mark.parametrize("value", [None, True])
def test_values_redis_cannot_take_are_refused_the_same_way(value: object) -> None:
    wrong: Any = value  # what a caller's bug would pass
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", wrong)
    with pytest.raises(DataError):
        fast_connection(Connection)().pack_command("SET", "k", wrong)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_the_url_chooses_the_connection_and_hiredis_packs_its_commands(url: str, kind: type) -> None:
    settings = Settings()
    client = make_redis(settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": url})}))
    try:
        chosen = client.connection_pool.connection_class
        assert issubclass(chosen, kind)
        assert chosen is fast_connection(kind)  # one class per kind, not one per client
    finally:
        asyncio.run(client.aclose())  # nothing was connected: this only releases the pool


# A pipeline's one deadline. Real Redis cannot be made to stall on demand (DEBUG SLEEP is off by default), so
# these talk to a loopback socket that answers OK until a command names ``STALL``, and then nothing more.
TIMEOUT_S = 0.3
STALL = b"stall"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers each command (the connection's handshake) until one names
    ``STALL``; it then reads on and never answers."""
    loop = asyncio.new_event_loop()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled = False
        while data := await reader.read(65536):
            stalled = stalled or STALL in data
            if stalled:
                continue
            if b"HELLO" in data:  # redis-py's handshake: RESP3, which this server "speaks"
                writer.write(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                data = data[data.index(b"HELLO") :]
            writer.write(b"+OK\r\n" * data.count(b"*"))  # one RESP array ("*<n>") per command; no other "*"
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(swallow, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server.sockets[0].getsockname()[1]

    async def shut_down() -> None:
        server.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shut_down(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


def _client(port: int) -> FastRedis:
    pool = ConnectionPool(
        connection_class=fast_connection(Connection), host="127.0.0.1", port=port, socket_timeout=TIMEOUT_S
    )
    client = FastRedis.from_pool(pool)
    assert isinstance(client, FastRedis)
    return client


@pytest.mark.parametrize("transaction", [False, True])
def test_a_stalled_pipeline_is_a_redis_timeout_at_its_deadline(silent_port: int, transaction: bool) -> None:
    async def run() -> tuple[float, BaseException | None]:
        client = _client(silent_port)
        pipe = client.pipeline(transaction=transaction)
        for i in range(100):
            pipe.set(f"{STALL.decode()}-{i}", b"v")
        started = time.monotonic()
        try:
            await asyncio.wait_for(pipe.execute(), timeout=10 * TIMEOUT_S)
        except Exception as exc:  # which one is the point of the test
            return time.monotonic() - started, exc
        finally:
            await client.aclose()
        return time.monotonic() - started, None

    took, error = asyncio.run(run())
    assert isinstance(error, RedisTimeoutError)  # the worker's backpressure catches RedisError, not TimeoutError
    deadline = TIMEOUT_S + 100 * PIPELINE_DEADLINE_PER_COMMAND_S
    # One deadline for the 100 replies: a timeout per reply (redis-py's own) would give up at TIMEOUT_S.
    assert deadline <= took < 2 * deadline


@pytest.mark.parametrize("pipelined", [b"answered", STALL])
def test_a_command_after_a_pipeline_has_its_own_timeout_again(silent_port: int, pipelined: bytes) -> None:
    async def run() -> BaseException | None:
        client = _client(silent_port)
        try:
            with contextlib.suppress(RedisTimeoutError):  # when the pipeline stalls
                pipe = client.pipeline(transaction=False)
                pipe.set(pipelined, b"v")
                await pipe.execute()
            await asyncio.wait_for(client.get(STALL), timeout=10 * TIMEOUT_S)
        except Exception as exc:
            return exc
        finally:
            await client.aclose()
        return None

    error = asyncio.run(run())
    # Had the pipeline left its deadline switched on, the read would wait on and wait_for would cancel it.
    assert isinstance(error, RedisTimeoutError), repr(error)
