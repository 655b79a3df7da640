"""The local Kafka + Redis stack behind ``rapport stack up | down | status`` (no Docker needed)."""

from deploy.localstack.errors import MissingToolError, StackError, StartupError
from deploy.localstack.kafka_node import KafkaNode
from deploy.localstack.node import ManagedNode, NodeState, NodeStatus, Outcome
from deploy.localstack.redis_node import RedisNode
from deploy.localstack.stack import LocalStack

__all__ = [
    "KafkaNode",
    "LocalStack",
    "ManagedNode",
    "MissingToolError",
    "NodeState",
    "NodeStatus",
    "Outcome",
    "RedisNode",
    "StackError",
    "StartupError",
]
