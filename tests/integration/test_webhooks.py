"""Webhooks end to end: registered over the API, segment changes delivered by `rapport deliver` to real HTTP
endpoints on loopback — signed, in order per customer, retried through failures, dead-lettered when an
endpoint never accepts, and every outcome in the delivery log."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from services.webhooks.signature import verify
from tests.api_support import create_key, running_api, stopped
from tests.http_support import loopback_server
from tests.kafka_support import Topics, private_kafka, send_changes
from tests.redis_support import private_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Receiver:
    """An HTTP endpoint that answers ``fail_first`` requests with 500, then ``status``; it keeps what came.
    With a ``gate``, every request waits for it to open before being answered."""

    def __init__(self, status: int, fail_first: int = 0, gate: threading.Event | None = None) -> None:
        self.status, self.fail_first, self.gate = status, fail_first, gate
        self.received: list[tuple[str, bytes, str]] = []  # (change id, body, signature) of accepted requests
        self.requests = 0
        self.lock = threading.Lock()


@contextmanager
def serving(receiver: Receiver) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.requests += 1
                number = receiver.requests
            if receiver.gate is not None:
                receiver.gate.wait(30)
            with receiver.lock:
                status = 500 if number <= receiver.fail_first else receiver.status
                if 200 <= status < 300:
                    receiver.received.append(
                        (self.headers["Rapport-Change-Id"], body, self.headers["Rapport-Signature"])
                    )
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    with loopback_server(Handler) as port:
        yield f"http://127.0.0.1:{port}/hook"


def start_deliverer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "deliver"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def test_changes_reach_webhooks_signed_in_order_retried_and_dead_lettered(tmp_path: Path, topics: Topics) -> None:
    env = {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": f"wh-{uuid.uuid4().hex[:6]}",
        "RAPPORT_API__KEY_CACHE_S": "0",
        "RAPPORT_WEBHOOKS__START_FROM": "earliest",
        "RAPPORT_WEBHOOKS__MAX_ATTEMPTS": "3",
        "RAPPORT_WEBHOOKS__BACKOFF_BASE_S": "0.05",
        "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",  # the receivers are on loopback
    }
    token = create_key(env, "--name", "wh", "--scopes", "segments:admin", "--rate-limit", "1000")
    flaky, down = Receiver(200, fail_first=2), Receiver(503)
    with serving(flaky) as flaky_url, serving(down) as down_url, running_api(env, tmp_path / "api.log") as base:
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        vip_hook = http.post("/v1/webhooks", json={"url": flaky_url, "segments": ["vip"]}).json()
        all_hook = http.post("/v1/webhooks", json={"url": down_url}).json()
        assert http.post("/v1/webhooks", json={"url": "not a url"}).status_code == 422
        assert "secret" not in http.get("/v1/webhooks").json()["webhooks"][0]

        changes = [
            {"change_id": f"ch-{i}", "customer_id": f"c-{i % 3}", "segment": "vip" if i % 4 else "other"}
            for i in range(16)
        ]
        send_changes(topics, changes)
        vip = [c for c in changes if c["segment"] == "vip"]

        deliverer = start_deliverer(env, tmp_path / "deliver.log")
        try:
            deadline = time.monotonic() + 120
            while True:
                dead = http.get(f"/v1/webhooks/{all_hook['webhook_id']}/deliveries", params={"limit": 100}).json()
                if len(dead["deliveries"]) == len(changes) and len({c for c, _, _ in flaky.received}) == len(vip):
                    break
                assert deliverer.poll() is None, (tmp_path / "deliver.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "deliver.log").read_text()
                time.sleep(0.5)
        finally:
            assert stopped(deliverer, 30) == 0

        # Only its segment, each change signed with its secret, in the topic's order per customer.
        assert {c for c, _, _ in flaky.received} == {c["change_id"] for c in vip}
        now = int(time.time())
        assert all(verify(vip_hook["secret"], body, signature, now) for _, body, signature in flaky.received)
        assert not verify(all_hook["secret"], flaky.received[0][1], flaky.received[0][2], now)
        for customer in ("c-0", "c-1", "c-2"):
            expected = [c["change_id"] for c in vip if c["customer_id"] == customer]
            got = [c for c, _, _ in flaky.received if c in expected]
            assert list(dict.fromkeys(got)) == expected

        delivered = http.get(f"/v1/webhooks/{vip_hook['webhook_id']}/deliveries").json()["deliveries"]
        assert {(d["status"], d["last_error"]) for d in delivered} == {("delivered", None)}
        assert sum(d["attempts"] for d in delivered) == len(vip) + 2, "two refusals, retried"
        assert {(d["status"], d["attempts"], d["last_status_code"], d["last_error"]) for d in dead["deliveries"]} == {
            ("dead_lettered", 3, 503, "HTTP 503")
        }
        assert down.requests == 3 * len(changes)
        assert http.delete(f"/v1/webhooks/{all_hook['webhook_id']}").status_code == 204
        assert http.get(f"/v1/webhooks/{all_hook['webhook_id']}/deliveries").status_code == 404


def test_webhooks_to_addresses_that_are_not_public_are_refused_at_registration(tmp_path: Path, topics: Topics) -> None:
    """The default: only public targets. Names are judged where the deliverer connects, not here
    (tests/unit/test_webhook_targets.py)."""
    env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": f"wh-{uuid.uuid4().hex[:6]}", "RAPPORT_API__KEY_CACHE_S": "0"}
    token = create_key(env, "--name", "wh", "--scopes", "segments:admin")
    with running_api(env, tmp_path / "api.log") as base:
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for url in ("http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://169.254.169.254/x", "http://localhost/"):
            answer = http.post("/v1/webhooks", json={"url": url})
            assert answer.status_code == 422, url
            error = answer.json()["error"]
            assert error["code"] == "webhook_target_not_public"
            assert error["details"] == {"url": url}
        assert http.get("/v1/webhooks").json()["webhooks"] == []
        assert http.post("/v1/webhooks", json={"url": "https://crm.example/hook"}).status_code == 201


def test_a_deliverer_waits_out_a_redis_outage_and_skips_no_change(tmp_path: Path, topics: Topics) -> None:
    """Redis killed (SIGKILL) while changes keep coming: the deliverer keeps running with a fresh liveness file
    and pauses instead of skipping or dead-lettering; stopped during the outage, it exits at once; once Redis
    is back from its AOF, a new deliverer sends every change (at least once: nothing unsent was committed)."""
    alive = tmp_path / "alive"
    with private_redis(topics, tmp_path) as (redis, own):
        env = {
            **own.env,
            "RAPPORT_PROFILE__NAMESPACE": f"wh-{uuid.uuid4().hex[:6]}",
            "RAPPORT_WEBHOOKS__START_FROM": "earliest",
            "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
            "RAPPORT_STREAM__LIVENESS_FILE": str(alive),
        }
        token = create_key(env, "--name", "wh", "--scopes", "segments:admin")
        receiver = Receiver(200)
        with serving(receiver) as url:
            with running_api(env, tmp_path / "api.log") as base:
                created = httpx.post(
                    f"{base}/v1/webhooks", json={"url": url}, headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                assert created.status_code == 201, created.text
            time.sleep(1.5)  # past appendfsync everysec: the registration is in the AOF
            changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 3}", "segment": "vip"} for i in range(30)]
            send_changes(own, changes[:10])
            deliverer = start_deliverer(env, tmp_path / "deliver.log")
            try:
                wait_for(lambda: len(receiver.received) >= 10, deliverer, tmp_path / "deliver.log")
                redis.kill()
                send_changes(own, changes[10:])
                for _ in range(8):
                    time.sleep(1.0)
                    assert deliverer.poll() is None, "the deliverer exited on the outage"
                    assert time.time() - alive.stat().st_mtime < 7, "the deliverer looked hung during the outage"
                assert stopped(deliverer, 10) == 0, "not stopped while waiting out the outage"
                assert len(receiver.received) < len(changes), "everything was delivered before the outage"
                redis.start()
                deliverer = start_deliverer(env, tmp_path / "deliver-again.log")
                expected = {c["change_id"] for c in changes}
                again = tmp_path / "deliver-again.log"
                wait_for(lambda: {c for c, _, _ in receiver.received} == expected, deliverer, again)
            finally:
                assert stopped(deliverer, 30) == 0
    logs = (tmp_path / "deliver.log").read_text() + (tmp_path / "deliver-again.log").read_text()
    assert "delivery paused" in logs
    assert "dead-lettered" not in logs


def test_a_deliverer_waits_out_a_kafka_outage_and_stops_cleanly_during_it(tmp_path: Path, topics: Topics) -> None:
    """The broker (of this test alone) SIGKILLed while the first changes are being delivered, so that their
    commit meets the outage: the deliverer keeps running and pauses; stopped during the outage, it exits at
    once and cleanly. Before session 35 the commit waited for the broker for as long as it was down (a stop
    was never seen, the liveness file went stale), and aiokafka's own CancelledError on stop killed the
    process (``services.kafka_clients``). Once the broker is back on its storage, a new deliverer sends every
    change, those produced after the outage too."""
    with private_kafka(topics.settings, tmp_path) as (kafka, own):
        env = {
            **own.env,
            "RAPPORT_PROFILE__NAMESPACE": f"wh-{uuid.uuid4().hex[:6]}",
            "RAPPORT_WEBHOOKS__START_FROM": "earliest",
            "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
            "RAPPORT_KAFKA__COMMIT_TIMEOUT_S": "2",
        }
        token = create_key(env, "--name", "wh", "--scopes", "segments:admin")
        receiver = Receiver(200, gate=threading.Event())
        with serving(receiver) as url:
            with running_api(env, tmp_path / "api.log") as base:
                created = httpx.post(
                    f"{base}/v1/webhooks", json={"url": url}, headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                assert created.status_code == 201, created.text
            changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 3}", "segment": "vip"} for i in range(30)]
            send_changes(own, changes[:10])
            log = tmp_path / "deliver.log"
            deliverer = start_deliverer(env, log)
            try:
                wait_for(lambda: receiver.requests >= 1, deliverer, log)  # held at the gate
                kafka.kill()
                assert receiver.gate is not None
                receiver.gate.set()
                wait_for(lambda: len(receiver.received) >= 10, deliverer, log)
                for _ in range(4):
                    time.sleep(1.0)
                    assert deliverer.poll() is None, "the deliverer exited on the outage: " + log.read_text()
                assert stopped(deliverer, 10) == 0, "not stopped cleanly during the outage: " + log.read_text()
                assert "delivery paused" in log.read_text(), "the commit never met the outage"
                kafka.start()
                send_changes(own, changes[10:])
                again = tmp_path / "deliver-again.log"
                deliverer = start_deliverer(env, again)
                expected = {c["change_id"] for c in changes}
                wait_for(lambda: {c for c, _, _ in receiver.received} == expected, deliverer, again)
            finally:
                assert stopped(deliverer, 30) == 0
    logs = (tmp_path / "deliver.log").read_text() + (tmp_path / "deliver-again.log").read_text()
    assert "dead-lettered" not in logs
    assert "Traceback" not in logs, logs


def wait_for(done: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
