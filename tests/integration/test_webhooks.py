"""Webhooks end to end: registered over the API, segment changes delivered by `rapport deliver` to real HTTP
endpoints on loopback — signed, in order per customer, retried through failures, dead-lettered when an
endpoint never accepts, and every outcome in the delivery log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from kafka.errors import NoError
from kafka.structs import OffsetAndMetadata

from services.kafka_clients import make_consumer, topic_partitions
from services.namespace_ops import running_writers
from services.redis_client import make_redis
from services.settings import Settings
from services.topics_admin import admin_client
from services.webhooks.signature import verify
from services.webhooks.store import Webhook, WebhookStore
from streams.outbox import key_partition
from tests.api_support import create_key, running_api, stopped
from tests.http_support import loopback_server
from tests.kafka_support import Topics, private_kafka, rapport, send_changes
from tests.redis_support import private_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
T = TypeVar("T")


class Receiver:
    """An HTTP endpoint that answers ``fail_first`` requests with 500, then ``status``; it keeps what came.
    With a ``gate``, every request waits for it to open before being answered."""

    def __init__(
        self, status: int, fail_first: int = 0, gate: threading.Event | None = None, delay_s: float = 0.0
    ) -> None:
        self.status, self.fail_first, self.gate, self.delay_s = status, fail_first, gate, delay_s
        self.received: list[tuple[str, bytes, str]] = []  # (change id, body, signature) of accepted requests
        self.requests = 0
        self.busy = self.most_busy = 0  # requests being answered: now, and at most
        self.lock = threading.Lock()


@contextmanager
def serving(receiver: Receiver) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.requests += 1
                number = receiver.requests
                receiver.busy += 1
                receiver.most_busy = max(receiver.most_busy, receiver.busy)
            if receiver.gate is not None:
                receiver.gate.wait(30)
            time.sleep(receiver.delay_s)
            with receiver.lock:
                receiver.busy -= 1
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


def from_the_earliest(topics: Topics, namespace: str, **more: str) -> dict[str, str]:
    """The environment of a deliverer of ``namespace`` whose webhooks start at the oldest change and reach the
    loopback receivers, with ``more`` settings."""
    return {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": namespace,
        "RAPPORT_WEBHOOKS__START_FROM": "earliest",
        "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
        **more,
    }


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


def test_an_endpoint_that_is_down_holds_back_only_itself(tmp_path: Path, topics: Topics) -> None:
    """Each webhook has its own consumer group: while one endpoint answers 503 (with a retry budget of hours),
    another gets every change as it comes, batch after batch. Until 2026-12-07 one group served every webhook
    and committed a batch once each had finished its part, so the second batch waited for the first one's
    retries to the endpoint that was down. Removing the webhook stops its retries within the refresh."""
    namespace = f"wh-{uuid.uuid4().hex[:6]}"
    env = {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": namespace,
        "RAPPORT_WEBHOOKS__MAX_ATTEMPTS": "100000",
        "RAPPORT_WEBHOOKS__BACKOFF_BASE_S": "0.05",
        "RAPPORT_WEBHOOKS__BACKOFF_MAX_S": "0.2",
        "RAPPORT_WEBHOOKS__REFRESH_S": "0.5",
        "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
        "RAPPORT_STREAM__LIVENESS_FILE": str(tmp_path / "alive"),
    }
    up, down = Receiver(200), Receiver(503)
    with serving(up) as up_url, serving(down) as down_url:
        hooks = register(topics.settings, namespace, up_url, down_url)
        changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 3}", "segment": "vip"} for i in range(20)]
        log = tmp_path / "deliver.log"
        deliverer = start_deliverer(env, log)
        try:
            wait_for(lambda: running_parts(topics.settings, namespace) == 2, deliverer, log)
            send_changes(topics, changes[:10])
            wait_for(lambda: len(up.received) == 10, deliverer, log, timeout_s=30)
            send_changes(topics, changes[10:])
            wait_for(lambda: len(up.received) == 20, deliverer, log, timeout_s=30)
            assert down.requests > 2, "the endpoint that is down was not being retried"
            assert time.time() - (tmp_path / "alive").stat().st_mtime < 5, "looked hung while retrying"
            assert logged(topics.settings, namespace, hooks[1].webhook_id) == set(), "dead-lettered already"

            assert on_store(topics.settings, namespace, lambda store: store.remove(hooks[1].webhook_id))
            wait_for(lambda: f"webhook {hooks[1].webhook_id} was removed" in log.read_text(), deliverer, log)
            time.sleep(1.0)  # a request under way when it was removed may still come
            tried = down.requests
            time.sleep(2.0)
            assert down.requests == tried, "retried after its webhook was removed"
            # Its consumer group is deleted, not left for Kafka to expire; the other one stays.
            removed_group = topics.settings.webhook_part_group(namespace, hooks[1].webhook_id)
            kept_group = topics.settings.webhook_part_group(namespace, hooks[0].webhook_id)
            wait_for(lambda: removed_group not in groups(topics.settings), deliverer, log)
            assert kept_group in groups(topics.settings)
        finally:
            assert stopped(deliverer, 30) == 0
    for customer in ("c-0", "c-1", "c-2"):
        expected = [c["change_id"] for c in changes if c["customer_id"] == customer]
        assert [c for c, _, _ in up.received if c in expected] == expected
    assert logged(topics.settings, namespace, hooks[0].webhook_id) == {c["change_id"] for c in changes}


def test_a_webhook_starts_at_its_registration_and_older_ones_where_the_shared_group_stopped(
    tmp_path: Path, topics: Topics
) -> None:
    """Where a webhook with no committed position starts (services/webhooks/starts.py):

    - registered before the first deliverer with one group per webhook: where the group that deliverers of
      earlier versions shared had committed (the upgrade re-sends nothing it delivered, skips nothing it did
      not);
    - registered later: at the first change written after its registration, not at the end of the topic
      when its part starts."""
    namespace = f"wh-{uuid.uuid4().hex[:6]}"
    env = {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": namespace,
        "RAPPORT_WEBHOOKS__REFRESH_S": "0.5",
        "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
    }
    changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 3}", "segment": "vip"} for i in range(14)]
    older, newer = Receiver(200), Receiver(200)
    with serving(older) as older_url, serving(newer) as newer_url:
        send_changes(topics, changes[:6])
        commit_shared_group_at_the_end(topics, namespace)  # an earlier deliverer sent those six
        send_changes(topics, changes[6:10])
        (older_hook,) = register(topics.settings, namespace, older_url)
        log = tmp_path / "deliver.log"
        deliverer = start_deliverer(env, log)
        try:
            wait_for(lambda: len(older.received) == 4, deliverer, log)
            send_changes(topics, changes[10:12])
            time.sleep(0.05)  # the registration comes after those two changes' timestamps
            register(topics.settings, namespace, newer_url)
            send_changes(topics, changes[12:])
            wait_for(lambda: len(older.received) == 8 and len(newer.received) == 2, deliverer, log)
            time.sleep(2.0)  # nothing more comes
        finally:
            assert stopped(deliverer, 30) == 0
    assert sorted(c for c, _, _ in older.received) == sorted(c["change_id"] for c in changes[6:])
    assert sorted(c for c, _, _ in newer.received) == ["ch-12", "ch-13"]
    assert logged(topics.settings, namespace, older_hook.webhook_id) == {c["change_id"] for c in changes[6:]}


def test_a_batch_is_cut_at_its_budget_and_its_rest_read_again_in_order(tmp_path: Path, topics: Topics) -> None:
    """An endpoint that answers in 0.15 s and a batch budget of 0.5 s: each fetched batch is cut after a few
    changes, what was delivered logged and committed, the rest read again. Every change arrives once, in
    order. Before, a batch ran to its end however long it took: past aiokafka's max_poll_interval (300 s)
    the deliverer left its group."""
    namespace = f"wh-{uuid.uuid4().hex[:6]}"
    env = from_the_earliest(topics, namespace, RAPPORT_WEBHOOKS__BATCH_BUDGET_S="0.5")
    changes = [{"change_id": f"ch-{i}", "customer_id": "c-0", "segment": "vip"} for i in range(16)]
    slow = Receiver(200, delay_s=0.15)
    log = tmp_path / "deliver.log"
    deliver_all(topics, namespace, env, slow, changes, log, then_s=1.0)
    assert [c for c, _, _ in slow.received] == [c["change_id"] for c in changes]
    assert log.read_text().count("batch cut at its budget") >= 3, log.read_text()


def test_a_webhooks_partitions_are_sent_at_once_each_in_its_order(tmp_path: Path, topics: Topics) -> None:
    """One deliverer, one webhook, an endpoint that answers in 0.2 s: the changes of customers in different
    partitions are in flight together, each customer's arrive in order, each once. Until 2026-12-07 a part sent
    one change at a time, so such an endpoint got at most five changes a second."""
    namespace = f"wh-{uuid.uuid4().hex[:6]}"
    env = from_the_earliest(topics, namespace)
    changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 12}", "segment": "vip"} for i in range(48)]
    receiver = Receiver(200, delay_s=0.2)
    deliver_all(topics, namespace, env, receiver, changes, tmp_path / "deliver.log")
    assert_each_once_in_order(receiver, changes)
    partitions = {_partition_of(topics, c["customer_id"]) for c in changes}
    assert len(partitions) >= 2, "the customers are in one partition: the test shows nothing"
    assert receiver.most_busy >= 2, receiver.most_busy


def deliver_all(
    topics: Topics,
    namespace: str,
    env: dict[str, str],
    receiver: Receiver,
    changes: list[dict[str, str]],
    log: Path,
    *,
    then_s: float = 0.0,
) -> None:
    """One webhook to ``receiver``, ``changes`` sent, a deliverer run until it has logged every one of them,
    and ``then_s`` longer (for anything that should not come), then stopped."""
    with serving(receiver) as url:
        (hook,) = register(topics.settings, namespace, url)
        send_changes(topics, changes)
        deliverer = start_deliverer(env, log)
        try:
            every = {c["change_id"] for c in changes}
            wait_for(lambda: logged(topics.settings, namespace, hook.webhook_id) == every, deliverer, log)
            time.sleep(then_s)
        finally:
            assert stopped(deliverer, 30) == 0


def assert_each_once_in_order(receiver: Receiver, changes: list[dict[str, str]]) -> None:
    """Every change arrived exactly once, each customer's in the topic's order."""
    received = [c for c, _, _ in receiver.received]
    assert sorted(received) == sorted(c["change_id"] for c in changes)
    for customer in {c["customer_id"] for c in changes}:
        expected = [c["change_id"] for c in changes if c["customer_id"] == customer]
        assert [c for c in received if c in expected] == expected, customer


def _partition_of(topics: Topics, customer_id: str) -> int:
    """The partition of ``segments.changes`` a customer's changes are in (Kafka's default partitioner)."""
    consumer = make_consumer(topics.settings, "test-partitions")
    try:
        count = len(topic_partitions(consumer, topics.names["segments.changes"]))
    finally:
        consumer.close()
    return key_partition(customer_id.encode(), count)


def test_deliverers_that_join_and_leave_share_a_webhook_and_lose_no_change(tmp_path: Path, topics: Topics) -> None:
    """A second deliverer joins while the first is sending (the webhook's partitions are shared between them,
    mid-batch), then the first is stopped (its partitions move to the second). The batch budget outlasts the
    whole run, so only the hand-over at the revocation keeps the new owner from starting at the last commit
    while the old one is still sending. Every change arrives exactly once, each customer's in order, and both
    exit 0."""
    namespace = f"wh-{uuid.uuid4().hex[:6]}"
    env = from_the_earliest(topics, namespace, RAPPORT_WEBHOOKS__BATCH_BUDGET_S="120")
    changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 6}", "segment": "vip"} for i in range(90)]
    receiver = Receiver(200, delay_s=0.1)
    logs = [tmp_path / "deliver-first.log", tmp_path / "deliver-second.log"]
    with serving(receiver) as url:
        (hook,) = register(topics.settings, namespace, url)
        send_changes(topics, changes)
        first = start_deliverer(env, logs[0])
        second = None
        try:
            wait_for(lambda: len(receiver.received) >= 10, first, logs[0])
            second = start_deliverer(env, logs[1])
            wait_for(lambda: len(receiver.received) >= 50, second, logs[1])
            assert stopped(first, 30) == 0, logs[0].read_text()
            every = {c["change_id"] for c in changes}
            wait_for(lambda: logged(topics.settings, namespace, hook.webhook_id) == every, second, logs[1])
        finally:
            assert stopped(first, 30) == 0
            if second is not None:
                assert stopped(second, 30) == 0, logs[1].read_text()
    assert_each_once_in_order(receiver, changes)
    text = logs[0].read_text() + logs[1].read_text()
    assert "Traceback" not in text, text
    assert "Setting newly assigned partitions" in logs[1].read_text()


def test_a_rewound_webhook_gets_its_changes_again_from_the_instant_given(tmp_path: Path, topics: Topics) -> None:
    """``rapport webhooks rewind ID --to T`` while a deliverer runs: the webhook is paused until the deliverer has
    left its group (Kafka moves a group's position only while it has no members), moved, and resumed: the
    deliverer sends again every change written from T on, and only those. Until 2026-12-07 the deliverers had
    to be stopped first. A member that does not leave (a deliverer of an earlier version) makes the rewind
    fail, and the webhook is resumed all the same; a webhook that was paused stays paused. ``--to now`` skips
    what was not sent yet; an unknown webhook is refused."""
    namespace = f"wh-{uuid.uuid4().hex[:6]}"
    env = {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": namespace,
        "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
        "RAPPORT_WEBHOOKS__REFRESH_S": "0.5",
        "RAPPORT_WEBHOOKS__TIMEOUT_S": "1",
    }
    changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 2}", "segment": "vip"} for i in range(9)]
    receiver = Receiver(200)
    log = tmp_path / "deliver.log"

    def received() -> list[str]:
        return [c for c, _, _ in receiver.received]

    def paused() -> str | None:
        found = on_store(topics.settings, namespace, lambda store: store.get(hook.webhook_id))
        assert found is not None
        return None if found[1] is None else found[1].reason

    with serving(receiver) as url:
        (hook,) = register(topics.settings, namespace, url)
        send_changes(topics, changes[:3])
        time.sleep(0.05)
        instant = datetime.now(UTC).isoformat()
        time.sleep(0.05)
        send_changes(topics, changes[3:6])
        deliverer = start_deliverer(env, log)
        try:
            wait_for(lambda: len(receiver.received) == 6, deliverer, log)
            rewound = rapport("webhooks", "rewind", hook.webhook_id, "--to", instant, "--yes", env=env)
            assert rewound.returncode == 0, rewound.stderr
            assert "3 changes held from there" in rewound.stdout
            assert paused() is None, "not resumed"
            wait_for(lambda: len(receiver.received) == 9, deliverer, log)
            time.sleep(1.0)  # nothing more comes
        finally:
            assert stopped(deliverer, 30) == 0
        assert sorted(received()[6:]) == ["ch-3", "ch-4", "ch-5"]
        unknown = rapport("webhooks", "rewind", "wh_none", "--to", instant, "--yes", env=env)
        assert unknown.returncode == 1
        assert f"no webhook 'wh_none' in namespace {namespace!r}" in unknown.stderr

        # A member that does not follow pauses: refused after the wait, and resumed.
        stuck = make_consumer(
            topics.settings, "test-stuck", group_id=topics.settings.webhook_part_group(namespace, hook.webhook_id)
        )
        try:
            stuck.subscribe([topics.names["segments.changes"]])
            while not stuck.assignment():
                stuck.poll(timeout_ms=200)
            refused = rapport("webhooks", "rewind", hook.webhook_id, "--to", "earliest", "--yes", env=env)
        finally:
            stuck.close()
        assert refused.returncode == 1, refused.stdout
        assert "still has members after" in refused.stderr
        assert paused() is None

        # Paused beforehand: skipped to now, and still paused with its own reason.
        send_changes(topics, changes[6:8])  # while no deliverer runs
        assert on_store(topics.settings, namespace, lambda store: store.pause(hook.webhook_id, "maintenance"))
        skipped = rapport("webhooks", "rewind", hook.webhook_id, "--to", "now", "--yes", env=env)
        assert skipped.returncode == 0, skipped.stderr
        assert "0 changes held from there" in skipped.stdout
        assert paused() == "maintenance"
        assert on_store(topics.settings, namespace, lambda store: store.resume(hook.webhook_id))
        deliverer = start_deliverer(env, log)
        try:
            send_changes(topics, changes[8:])
            wait_for(lambda: "ch-8" in received(), deliverer, log)
            time.sleep(1.0)
        finally:
            assert stopped(deliverer, 30) == 0
    assert received()[9:] == ["ch-8"]
    assert received().count("ch-3") == 2


def test_an_endpoint_that_answers_gone_pauses_its_webhook_until_it_is_resumed(tmp_path: Path, topics: Topics) -> None:
    """410 Gone: the webhook is paused at that change, which is neither retried nor dead-lettered; the other
    webhook goes on. Resumed (``POST …/resume``), it gets every change from there, in order. Paused through the
    API, it gets nothing until resumed, then what came meanwhile. Before 2026-12-07 a 410 was retried
    ``max_attempts`` times per change, then dead-lettered, change after change."""
    namespace = f"wh-{uuid.uuid4().hex[:6]}"
    env = {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": namespace,
        "RAPPORT_API__KEY_CACHE_S": "0",
        "RAPPORT_WEBHOOKS__START_FROM": "earliest",
        "RAPPORT_WEBHOOKS__BACKOFF_BASE_S": "0.05",
        "RAPPORT_WEBHOOKS__REFRESH_S": "0.5",
        "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
    }
    token = create_key(env, "--name", "wh", "--scopes", "segments:admin", "--rate-limit", "1000")
    changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 3}", "segment": "vip"} for i in range(15)]
    gone, up = Receiver(410), Receiver(200)
    log = tmp_path / "deliver.log"
    with serving(gone) as gone_url, serving(up) as up_url, running_api(env, tmp_path / "api.log") as base:
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        gone_id = http.post("/v1/webhooks", json={"url": gone_url}).json()["webhook_id"]
        http.post("/v1/webhooks", json={"url": up_url})
        for action in ("pause", "resume"):
            missing = http.post(f"/v1/webhooks/wh_0123456789abcdef/{action}")
            assert (missing.status_code, missing.json()["error"]["code"]) == (404, "webhook_not_found")

        def paused() -> dict[str, str] | None:
            hooks = {h["webhook_id"]: h for h in http.get("/v1/webhooks").json()["webhooks"]}
            pause: dict[str, str] | None = hooks[gone_id]["paused"]
            return pause

        def deliveries() -> list[dict[str, object]]:
            entries: list[dict[str, object]] = http.get(f"/v1/webhooks/{gone_id}/deliveries").json()["deliveries"]
            return entries

        send_changes(topics, changes[:10])
        deliverer = start_deliverer(env, log)
        try:
            wait_for(lambda: len(up.received) == 10 and paused() is not None, deliverer, log)
            wait_for(lambda: running_parts(topics.settings, namespace) == 1, deliverer, log)  # its part ended
            # The first change of each partition was sent at once; nothing more is sent to it.
            asked = gone.requests
            time.sleep(1.0)
            assert 1 <= asked <= len({_partition_of(topics, c["customer_id"]) for c in changes}), asked
            assert gone.requests == asked
            pause = paused()
            assert pause is not None
            assert pause["reason"].startswith("the endpoint answered 410 Gone to change ch-"), pause
            assert deliveries() == [], "neither delivered nor dead-lettered"
            listed = rapport("webhooks", "list", env=env)
            assert listed.returncode == 0, listed.stderr
            assert gone_id in listed.stdout
            assert "410 Gone" in listed.stdout

            with gone.lock:
                gone.status = 200
            resumed = http.post(f"/v1/webhooks/{gone_id}/resume")
            assert (resumed.status_code, resumed.json()["paused"]) == (200, None)
            wait_for(lambda: len(gone.received) == 10, deliverer, log)

            assert http.post(f"/v1/webhooks/{gone_id}/pause").json()["paused"]["reason"] == "paused through the API"
            wait_for(lambda: f"webhook {gone_id} is paused" in log.read_text(), deliverer, log)
            send_changes(topics, changes[10:])
            wait_for(lambda: len(up.received) == 15, deliverer, log)
            time.sleep(1.0)
            assert len(gone.received) == 10, "sent to while paused"
            assert http.post(f"/v1/webhooks/{gone_id}/resume").json()["paused"] is None
            wait_for(lambda: len({c for c, _, _ in gone.received}) == 15, deliverer, log)
        finally:
            assert stopped(deliverer, 30) == 0
        assert {d["status"] for d in deliveries()} == {"delivered"}

        # The same from the command line, for an operator with no API key.
        assert rapport("webhooks", "pause", gone_id, env=env).returncode == 0
        by_hand = paused()
        assert by_hand is not None
        assert by_hand["reason"] == "paused from the command line (rapport webhooks pause)"
        resumed_here = rapport("webhooks", "resume", gone_id, env=env)
        assert (resumed_here.returncode, paused()) == (0, None)
        assert f"webhook {gone_id!r} resumed" in resumed_here.stdout
        for command in ("pause", "resume"):
            unknown = rapport("webhooks", command, "wh_0123456789abcdef", env=env)
            assert unknown.returncode == 1
            assert "no webhook 'wh_0123456789abcdef'" in unknown.stderr
    for customer in ("c-0", "c-1", "c-2"):
        expected = [c["change_id"] for c in changes if c["customer_id"] == customer]
        assert list(dict.fromkeys(c for c, _, _ in gone.received if c in expected)) == expected
    assert "Traceback" not in log.read_text()


def on_store(settings: Settings, namespace: str, action: Callable[[WebhookStore], Awaitable[T]]) -> T:
    """``action`` run on the namespace's webhook store, with a Redis client of its own."""

    async def run() -> T:
        redis = make_redis(settings)
        try:
            return await action(WebhookStore(redis, namespace))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def register(settings: Settings, namespace: str, *urls: str) -> list[Webhook]:
    async def each(store: WebhookStore) -> list[Webhook]:
        return [await store.register(url, []) for url in urls]

    return on_store(settings, namespace, each)


def groups(settings: Settings) -> set[str]:
    with admin_client(settings) as admin:
        return {group["group_id"] for group in admin.list_groups()}


def running_parts(settings: Settings, namespace: str) -> int:
    """How many webhook parts of ``namespace`` are members of their groups."""
    return len([g for g in running_writers(settings, namespace) if g.startswith(settings.webhook_group_of(namespace))])


def commit_shared_group_at_the_end(topics: Topics, namespace: str) -> None:
    """Commit the end of segments.changes for the group deliverers shared until 2026-12-07, as one would have."""
    consumer = make_consumer(topics.settings, "test-shared-group")
    try:
        ends = consumer.end_offsets(topic_partitions(consumer, topics.names["segments.changes"]))
    finally:
        consumer.close()
    with admin_client(topics.settings) as admin:
        failed = admin.alter_group_offsets(
            topics.settings.webhook_group_of(namespace),
            {tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()},
        )
    assert all(error is NoError for error in failed.values()), failed


def test_webhooks_to_addresses_that_are_not_public_are_refused_at_registration(tmp_path: Path, topics: Topics) -> None:
    """The default: only public targets. Names are judged where the deliverer connects, not here
    (tests/unit/test_webhook_targets.py). And one webhook past ``webhooks.max_registered`` is refused, 409."""
    env = {
        **topics.env,
        "RAPPORT_PROFILE__NAMESPACE": f"wh-{uuid.uuid4().hex[:6]}",
        "RAPPORT_API__KEY_CACHE_S": "0",
        "RAPPORT_WEBHOOKS__MAX_REGISTERED": "2",
    }
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

        second = http.post("/v1/webhooks", json={"url": "https://crm.example/other"})
        assert second.status_code == 201
        third = http.post("/v1/webhooks", json={"url": "https://crm.example/third"})
        assert third.status_code == 409, third.text
        assert (third.json()["error"]["code"], third.json()["error"]["details"]) == ("too_many_webhooks", {"limit": 2})
        assert http.delete(f"/v1/webhooks/{second.json()['webhook_id']}").status_code == 204
        assert http.post("/v1/webhooks", json={"url": "https://crm.example/third"}).status_code == 201


def test_a_deliverer_waits_out_a_redis_outage_and_skips_no_change(tmp_path: Path, topics: Topics) -> None:
    """Redis killed (SIGKILL) while changes keep coming: the deliverer keeps running with a fresh liveness file
    and pauses (at the delivery log) instead of skipping or dead-lettering; stopped during the outage, it exits
    at once; once Redis is back from its AOF, a new deliverer sends every change (at least once: nothing whose
    outcome was not logged was committed)."""
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
                # The changes that came during the outage were sent; their outcomes could not be logged.
                assert "delivery paused" in (tmp_path / "deliver.log").read_text(), "the outage was never met"
                redis.start()
                deliverer = start_deliverer(env, tmp_path / "deliver-again.log")
                expected = {c["change_id"] for c in changes}
                again = tmp_path / "deliver-again.log"
                hook = (own.settings, env["RAPPORT_PROFILE__NAMESPACE"], created.json()["webhook_id"])
                wait_for(lambda: logged(*hook) == expected, deliverer, again)
                assert {c for c, _, _ in receiver.received} == expected
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
    change, those produced after the outage too. Then a deliverer started while the broker is down, and a
    webhook registered meanwhile, wait for it (their parts cannot connect), and deliver once it is back."""
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

            later = Receiver(200)
            with serving(later) as later_url:
                kafka.kill()
                third = tmp_path / "deliver-third.log"
                deliverer = start_deliverer({**env, "RAPPORT_WEBHOOKS__REFRESH_S": "0.5"}, third)
                try:
                    (added,) = register(own.settings, env["RAPPORT_PROFILE__NAMESPACE"], later_url)
                    waiting = {
                        f"webhook {w}: connecting paused" for w in (created.json()["webhook_id"], added.webhook_id)
                    }
                    wait_for(lambda: all(w in third.read_text() for w in waiting), deliverer, third)
                    time.sleep(2.0)
                    assert deliverer.poll() is None, "exited on the outage: " + third.read_text()
                    kafka.start()
                    more = [{"change_id": f"ch-{i}", "customer_id": "c-0", "segment": "vip"} for i in range(30, 35)]
                    send_changes(own, more)
                    everything = expected | {c["change_id"] for c in more}
                    wait_for(lambda: {c for c, _, _ in later.received} == everything, deliverer, third)
                    wait_for(lambda: {c for c, _, _ in receiver.received} == everything, deliverer, third)
                finally:
                    assert stopped(deliverer, 30) == 0
    logs = "".join((tmp_path / name).read_text() for name in ("deliver.log", "deliver-again.log", "deliver-third.log"))
    assert "dead-lettered" not in logs
    assert "Traceback" not in logs, logs


def logged(settings: Settings, namespace: str, webhook_id: str) -> set[str]:
    """The change ids the webhook's delivery log holds as delivered."""
    deliveries = on_store(settings, namespace, lambda store: store.deliveries(webhook_id, 1000))
    return {d.change_id for d in deliveries if d.status == "delivered"}


def wait_for(done: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
