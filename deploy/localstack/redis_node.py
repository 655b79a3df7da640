"""Redis under ``<state_dir>/redis``, with an append-only file so data survives a crash."""

from __future__ import annotations

import re
from pathlib import Path

import redis

from deploy.localstack.net import LOOPBACK
from deploy.localstack.node import ManagedNode
from deploy.localstack.tools import find_redis_server
from services.settings import StackSettings


class RedisNode(ManagedNode):
    """Debian's ``redis-server`` run in the foreground (``--daemonize no``) so the PID we record is its own."""

    name = "redis"

    def __init__(
        self,
        settings: StackSettings,
        *,
        search_path: str | None = None,
        allow_install: bool = True,
        stop_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(
            state_dir=settings.state_dir,
            port=settings.redis_port,
            start_timeout_s=settings.start_timeout_s,
            stop_timeout_s=stop_timeout_s,
        )
        self.search_path = search_path
        self.allow_install = allow_install
        self.data_dir = self.node_dir / "data"
        self.redis_log = self.log_dir / "redis.log"

    @property
    def log_files(self) -> tuple[Path, ...]:
        return (self.redis_log, self.stdout_log)

    def server_args(self) -> list[str]:
        """Everything after the binary; the durability settings are what crash tests rely on."""
        return [
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--logfile", str(self.redis_log),
            # Every write reaches the AOF; fsync once a second bounds a power loss to ~1 s of writes.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # The AOF is the persistence; RDB snapshots would only add fork pauses.
            "--save", "",
            # A customer's pending model entries (a sorted set of ~90-byte compressed events) stay in the
            # compact listpack encoding: above the default 64 bytes a value makes the set a skiplist, which
            # took 1.9 times the memory (docs/profile.md, "Bounded memory").
            "--zset-max-listpack-value", "256",
        ]  # fmt: skip

    def _prepare(self) -> list[str]:
        server = find_redis_server(self.search_path, allow_install=self.allow_install)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return [server, *self.server_args()]

    def _is_our_process(self, cmdline: str) -> bool:
        # Redis retitles itself "redis-server 127.0.0.1:<port>" once running; before that the argv shows.
        listening = rf"(?:{re.escape(LOOPBACK)}:|--port ){self.port}(?:\s|$)"
        return "redis-server" in cmdline and re.search(listening, cmdline) is not None

    def probe(self) -> bool:
        """PING; a Redis still loading its AOF answers LOADING, which counts as not ready."""
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
