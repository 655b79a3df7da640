"""``LocalStack``: Kafka and Redis on loopback, started without Docker and tracked by PID files."""

from __future__ import annotations

from pathlib import Path

from deploy.localstack import process
from deploy.localstack.kafka_node import KafkaNode
from deploy.localstack.node import ManagedNode, NodeStatus, Outcome
from deploy.localstack.redis_node import RedisNode
from services.settings import Settings, StackSettings


class LocalStack:
    """The whole local stack. ``up`` is idempotent; ``down`` stops only what ``up`` started."""

    def __init__(self, settings: Settings | StackSettings, *, search_path: str | None = None) -> None:
        stack = settings.stack if isinstance(settings, Settings) else settings
        # Absolute paths: they end up in the services' command lines and must not depend on the cwd
        # of whoever later runs `status` or `down`.
        self.settings = stack.model_copy(
            update={
                "state_dir": stack.state_dir.expanduser().resolve(),
                "cache_dir": stack.cache_dir.expanduser().resolve(),
            }
        )
        self.redis = RedisNode(self.settings, search_path=search_path)
        self.kafka = KafkaNode(self.settings, search_path=search_path)
        self._lock_file = self.settings.state_dir / "stack.lock"

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def nodes(self) -> tuple[ManagedNode, ...]:
        """Start order: Redis first because it is up in well under a second."""
        return (self.redis, self.kafka)

    def up(self) -> dict[str, Outcome]:
        """Start (or reuse) every service; returns only when each answers a real request."""
        with process.file_lock(self._lock_file):
            return {node.name: node.start() for node in self.nodes}

    def down(self) -> dict[str, int | None]:
        """Stop the processes ``up`` started (name -> stopped PID, None if nothing of ours ran)."""
        with process.file_lock(self._lock_file):
            return {node.name: node.stop() for node in reversed(self.nodes)}

    def status(self) -> list[NodeStatus]:
        return [node.status() for node in self.nodes]
