"""The README's first command, ``rapport demo up`` (what ``make demo`` runs), on a private stack: it starts
Kafka, Redis, the worker, the trainer, the API and the simulator, returns once profiles fill up, and
prints where to look; what it prints works; ``demo down --stack`` stops every process it started."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from deploy.localstack.process import is_alive, read_pid
from tests.integration.test_localstack import free_ports
from tests.kafka_support import rapport

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
PROCESSES = ("worker", "trainer", "api", "simulator")  # the stack's two nodes besides


def test_demo_up_serves_live_profiles_and_demo_down_stops_everything_it_started(tmp_path: Path) -> None:
    kafka, controller, redis, api = free_ports(4)
    state = tmp_path / "stack"
    env = {
        "RAPPORT_STACK__STATE_DIR": str(state),
        "RAPPORT_STACK__KAFKA_PORT": str(kafka),
        "RAPPORT_STACK__KAFKA_CONTROLLER_PORT": str(controller),
        "RAPPORT_STACK__REDIS_PORT": str(redis),
        "RAPPORT_STACK__KAFKA_HEAP": "512m",
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
        "RAPPORT_KAFKA__TOPIC_PREFIX": "",
        "RAPPORT_REDIS__URL": f"redis://127.0.0.1:{redis}/0",
        "RAPPORT_API__PORT": str(api),
        "RAPPORT_MODELS__SECRET": "",
    }
    pids: dict[str, int | None] = {}
    try:
        up = rapport("demo", "up", "--customers", "200", "--days", "3", "--live-days", "0", env=env)
        pids = {name: read_pid(state / "demo" / f"{name}.pid") for name in PROCESSES}
        pids |= {node: read_pid(state / node / f"{node}.pid") for node in ("kafka", "redis")}
        assert up.returncode == 0, f"{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        assert "Rapport demo is running." in up.stdout
        for name, pid in pids.items():
            assert pid is not None, f"no PID file for the {name}"
            assert is_alive(pid), f"the {name} is not running"

        example = re.search(r"rapport profile get (\S+)", up.stdout)
        assert example is not None, up.stdout
        profile = rapport("profile", "get", example[1], env=env)
        assert profile.returncode == 0, profile.stderr
        assert orjson.loads(profile.stdout)["profile_id"] == example[1]
        key = (state / "demo" / "api-key").read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{api}/v1/profiles/{example[1]}/scores", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert set(orjson.loads(response.read())["scores"]) == {
                "purchase_propensity", "churn_risk", "clv_90d", "email_open",
            }  # fmt: skip
        # The simulator's malformed lines reach the raw topics, and the worker dead-letters them with reasons.
        assert "rapport dlq summary" in up.stdout
        assert _dead_letter_reasons(env, timeout_s=60), "no dead letter within 60 s"
    finally:
        down = rapport("demo", "down", "--stack", env=env)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert pid is None or not is_alive(pid), f"the {name} (pid {pid}) still runs"


def _dead_letter_reasons(env: dict[str, str], timeout_s: float) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        summary = rapport("dlq", "summary", "--json", env=env)
        assert summary.returncode == 0, summary.stderr
        reasons = {row["reason"] for row in orjson.loads(summary.stdout) if row["records"] > 0}
        if reasons or time.monotonic() > deadline:
            return reasons
        time.sleep(2)
