"""Webhook delivery as the number of registered webhooks grows: one ``rapport deliver`` process, N webhooks,
every one wanting every change. Each webhook has a consumer group and a part of its own
(docs/decisions.md, "Each webhook has its own consumer group"), so N webhooks are N Kafka consumers.

``CHANGES`` segment changes are written to ``segments.changes`` once. Then, for each N of ``COUNTS``, in a
fresh namespace: N webhooks registered (``start_from=earliest``) to one loopback receiver
(``bench.webhook_receiver``, a bare ASGI app under uvicorn in its own process, answering 204), the
deliverer started, and measured:

- **ready**: from the deliverer's start until every webhook has had a change delivered (its part started,
  joined its group and placed its partitions);
- **deliveries/s**: N × ``CHANGES`` over the time from the start (start-up included) until the receiver has
  them all;
- **idle CPU**: the deliverer's CPU time over ``IDLE_S`` seconds once everything is delivered, as a share
  of one core: what N consumers' heartbeats and empty fetches cost with nothing to send;
- **RSS** of the deliverer then;
- **broker idle CPU**: the local stack's Kafka broker over the same seconds (N groups' heartbeats and fetches).

Then one webhook whose endpoint answers in ``SLOW_MS``: its deliveries/s once sending (after its first
change), which one change at a time would hold at 1,000 / ``SLOW_MS``. The changes are 50 customers', spread
over the topic's partitions.

The baseline is N = 1 in the same run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import httpx

from bench.harness import Figure, Ratio, bench_settings, run_namespace
from bench.profile_worker import topics_of
from deploy.localstack import LocalStack
from services.redis_client import make_redis
from services.settings import Settings
from services.webhooks.store import WebhookStore
from tests.api_support import free_port, stopped
from tests.kafka_support import send_changes

COUNTS = (1, 30, 100, 300, 1000)
SLOW_MS = 50  # the endpoint of the last measurement answers in this long
CHANGES = 200
IDLE_S = 10.0
TIMEOUT_S = 300.0


class Measured(NamedTuple):
    ready_s: float
    deliveries_per_s: float
    sending_per_s: float  # once every webhook had its first change
    idle_cpu: float  # share of one core
    rss_mb: float
    broker_idle_cpu: float


def run(base: Settings) -> tuple[list[Figure], list[Ratio]]:
    figures: list[Figure] = []
    logs = tempfile.mkdtemp(prefix="bench-webhooks-")  # kept if the run fails: its deliverers' logs
    with bench_settings(base) as settings, _receiver() as url:
        changes = [{"change_id": f"ch-{i}", "customer_id": f"c-{i % 50}", "segment": "vip"} for i in range(CHANGES)]
        send_changes(topics_of(settings), changes)
        for count in COUNTS:
            got = _measure(settings, url, count, Path(logs) / f"deliver-{count}.log")
            figures += [
                Figure(f"ready, {count} webhooks", got.ready_s, "s", "start → every webhook had a delivery"),
                Figure(f"deliveries/s, {count} webhooks", got.deliveries_per_s, "/s", f"{count} x {CHANGES} changes"),
                Figure(f"idle CPU, {count} webhooks", got.idle_cpu * 100, "% of a core", f"over {IDLE_S:.0f} s"),
                Figure(f"RSS, {count} webhooks", got.rss_mb, "MB", "the deliverer, once idle"),
                Figure(f"broker idle CPU, {count} webhooks", got.broker_idle_cpu * 100, "% of a core", "same seconds"),
            ]
        slow = _measure(settings, f"{url}?delay_ms={SLOW_MS}", 1, Path(logs) / "deliver-slow.log")
        figures.append(
            Figure(
                f"deliveries/s, 1 webhook answering in {SLOW_MS} ms",
                slow.sending_per_s,
                "/s",
                f"once sending; one change at a time would be at most {1000 / SLOW_MS:.0f}/s",
            )
        )
    shutil.rmtree(logs)
    top = COUNTS[-1]
    ratios = [
        Ratio(f"deliveries/s, {top} vs 1 webhook", f"deliveries/s, {top} webhooks", "deliveries/s, 1 webhooks"),
        Ratio(f"idle CPU, {top} vs 1 webhook", f"idle CPU, {top} webhooks", "idle CPU, 1 webhooks"),
        Ratio(f"RSS, {top} vs 1 webhook", f"RSS, {top} webhooks", "RSS, 1 webhooks"),
        Ratio(
            f"broker idle CPU, {top} vs 1 webhook", f"broker idle CPU, {top} webhooks", "broker idle CPU, 1 webhooks"
        ),
    ]
    return figures, ratios


def _measure(settings: Settings, url: str, count: int, log: Path) -> Measured:
    namespace = run_namespace(settings, f"wh{count}")
    asyncio.run(_register(settings, namespace, url, count))
    before = _received(url)
    env = {
        **os.environ,
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RAPPORT_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "RAPPORT_REDIS__URL": settings.redis.url,
        "RAPPORT_PROFILE__NAMESPACE": namespace,
        "RAPPORT_WEBHOOKS__START_FROM": "earliest",
        "RAPPORT_WEBHOOKS__PRIVATE_TARGETS": "true",
    }
    with log.open("wb") as out:
        deliverer = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "deliver"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        started = time.monotonic()
        ready_at = done_at = None
        deadline = started + TIMEOUT_S
        while done_at is None:
            if deliverer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{count} webhooks: not delivered within {TIMEOUT_S} s; log in {log}")
            requests, webhooks = _received(url)
            if ready_at is None and webhooks - before[1] >= count:
                ready_at = time.monotonic()
            if requests - before[0] >= count * CHANGES:
                done_at = time.monotonic()
            time.sleep(0.05)
        broker = next(node.pid for node in LocalStack(settings).nodes if node.name == "kafka")
        assert broker is not None
        cpu_before, broker_before = _cpu_s(deliverer.pid), _cpu_s(broker)
        time.sleep(IDLE_S)
        idle_cpu = (_cpu_s(deliverer.pid) - cpu_before) / IDLE_S
        broker_idle_cpu = (_cpu_s(broker) - broker_before) / IDLE_S
        rss_mb = _rss_mb(deliverer.pid)
        extra = _received(url)[0] - before[0] - count * CHANGES
        if extra:
            raise RuntimeError(f"{count} webhooks: {extra} deliveries more than sent; log in {log}")
    finally:
        code = stopped(deliverer, 60)
    if code != 0:
        raise RuntimeError(f"{count} webhooks: the deliverer exited {code}; log in {log}")
    assert ready_at is not None
    sending = (count * CHANGES - count) / max(done_at - ready_at, 1e-3)
    return Measured(
        ready_at - started, count * CHANGES / (done_at - started), sending, idle_cpu, rss_mb, broker_idle_cpu
    )


async def _register(settings: Settings, namespace: str, url: str, count: int) -> None:
    redis = make_redis(settings)
    try:
        store = WebhookStore(redis, namespace)
        for _ in range(count):
            await store.register(url, [])
    finally:
        await redis.aclose()


@contextmanager
def _receiver() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "bench.webhook_receiver:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
        ],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/hook"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _received(url)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        stopped(server, 10)


def _received(url: str) -> tuple[int, int]:
    """(requests, distinct webhooks) the receiver has had."""
    counts = httpx.get(url, timeout=5).json()
    return int(counts["requests"]), int(counts["webhooks"])


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
