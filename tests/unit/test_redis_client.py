"""hiredis packs the worker's commands: the bytes on the wire must be the ones redis-py would send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError
from redis.typing import EncodableT

from services.redis_client import hiredis_packing, make_redis
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
    packed = b"".join(hiredis_packing(Connection)().pack_command(*args))
    assert packed == b"".join(bytes(chunk) for chunk in Connection().pack_command(*args))


@pytest.mark.parametrize("value", [None, True])
def test_values_redis_cannot_take_are_refused_the_same_way(value: object) -> None:
    wrong: Any = value  # what a caller's bug would pass
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", wrong)
    with pytest.raises(DataError):
        hiredis_packing(Connection)().pack_command("SET", "k", wrong)


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
        assert chosen is hiredis_packing(kind)  # one class per kind, not one per client
    finally:
        asyncio.run(client.aclose())  # nothing was connected: this only releases the pool
