"""The broker's ``server.properties``, generated in code so ports and paths come from Settings."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from pathlib import Path

from deploy.localstack.net import LOOPBACK

NODE_ID = 1


def new_cluster_id() -> str:
    """A KRaft cluster id in Kafka's own format: the base64url of a random UUID, without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def server_properties(*, port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
    """Properties for one combined broker+controller node listening only on loopback."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        # A single node can only hold one replica of anything.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "min.insync.replicas": "1",
        "default.replication.factor": "1",
        # Topics are created explicitly by `rapport topics`; a typo must not create a new topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "6",
        # The defaults (50 partitions each) make the first consumer group or transaction wait for
        # 50 partition leaders to load, which takes many seconds on a 2-core machine.
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.num.partitions": "6",
        # Tests and workers join groups constantly; don't wait 3 s for more members to arrive.
        "group.initial.rebalance.delay.ms": "0",
        # A broker restarted after a crash cannot register again until the controller has given its previous
        # registration up (DUPLICATE_BROKER_REGISTRATION): with the default 9 s session that took 14.6 s
        # against 3.4 s for a clean start. Both live in this one process, over loopback.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        # Small-machine sizing: few threads and a small log-cleaner buffer (default 128 MiB).
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
        "log.retention.check.interval.ms": "300000",
    }


def render_properties(properties: Mapping[str, str], header: str) -> str:
    """Java ``.properties`` text; backslashes are escaped because Java treats them as escapes."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key}={_escape(value)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\")
