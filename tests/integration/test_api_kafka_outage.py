"""The API's segment-change stream (SSE) across a Kafka outage and a stop, against a broker of the test's own."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from tests.api_support import api_process, create_key, stopped
from tests.kafka_support import Topics, private_kafka, send_changes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Subscriber:
    """One ``GET /v1/segment-changes`` connection read in a thread: the change ids as they come, and how the
    stream ended (None while it is open)."""

    def __init__(self, base: str, key: str) -> None:
        self.received: list[str] = []
        self.ended: str | None = None
        self._thread = threading.Thread(target=self._read, args=(base, key), daemon=True)
        self._thread.start()

    def _read(self, base: str, key: str) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        try:
            with httpx.stream(
                "GET", f"{base}/v1/segment-changes", params={"from": "earliest"}, headers=headers, timeout=60
            ) as stream:
                assert stream.status_code == 200, stream.read()
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        self.received.append(orjson.loads(line[6:])["change_id"])
            self.ended = "cleanly"
        except Exception as exc:  # the test reports how it ended
            self.ended = f"{type(exc).__name__}: {exc}"

    def wait_for(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            assert self.ended is None, f"the stream ended: {self.ended}"
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} changes in {timeout_s} s"
            time.sleep(0.1)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


def test_a_segment_change_stream_waits_out_a_kafka_outage_and_ends_cleanly_when_the_api_stops(
    tmp_path: Path, topics: Topics
) -> None:
    """The broker SIGKILLed under an open stream: the stream stays open, a new one is refused with 503
    ``kafka_unavailable``, and once the broker is back the open stream goes on with exactly the changes
    produced since, none twice. Then, the broker down again, SIGTERM: the API ends the stream (a clean end of
    the chunked body, which EventSource clients reconnect after) and exits within seconds, though its collector
    holds an event it could not store. Before session 36 uvicorn waited for the subscriber to disconnect, and
    the collector's producer for the broker, so the process ran until it was killed."""
    with private_kafka(topics.settings, tmp_path) as (kafka, own):
        env = {
            **own.env,
            "RAPPORT_PROFILE__NAMESPACE": f"sse-{uuid.uuid4().hex[:6]}",
            "RAPPORT_API__PRODUCE_TIMEOUT_S": "3",
        }
        key = create_key(env, "--name", "sse", "--scopes", "segments:admin,events:write")
        # One customer: one partition, so the stream's order is the order they were produced in.
        changes = [{"change_id": f"ch-{i}", "customer_id": "c-1", "segment": "vip"} for i in range(10)]
        send_changes(own, changes[:5])
        log = tmp_path / "api.log"
        with api_process(env, log) as (api, base):
            assert _post_click(base, key, "e-1").status_code == 202  # the collector's producer is started
            subscriber = Subscriber(base, key)
            subscriber.wait_for(5)
            kafka.kill()
            refused = httpx.get(f"{base}/v1/segment-changes", headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "kafka_unavailable"
            assert refused.headers["Retry-After"] == "5"
            time.sleep(2)
            assert subscriber.ended is None, f"the stream ended during the outage: {subscriber.ended}"
            kafka.start()
            send_changes(own, changes[5:])
            subscriber.wait_for(10)
            time.sleep(1)  # a change sent twice would arrive by now
            assert subscriber.received == [c["change_id"] for c in changes]
            kafka.kill()
            # The collector's producer keeps this record, unacknowledged, and its stop used to wait for the
            # broker to take it (over a minute): the client was told it was not stored, so it is dropped.
            unstored = _post_click(base, key, "e-2")
            assert (unstored.status_code, unstored.json()["error"]["code"]) == (503, "kafka_unavailable")
            exit_code = stopped(api, 10)
            subscriber.join(5)
        assert subscriber.ended == "cleanly"
        # uvicorn raises the signal it handled again once it has shut down.
        assert exit_code == -signal.SIGTERM, log.read_text()
        text = log.read_text()
        assert "Finished server process" in text, text
        assert "Traceback" not in text, text


def _post_click(base: str, key: str, event_id: str) -> httpx.Response:
    click = {
        "type": "click",
        "event_id": event_id,
        "timestamp": datetime.now(UTC).isoformat(),
        "customer_id": "c-1",
        "action": "page_view",
        "url": "/",
        "session_id": "s-1",
    }
    return httpx.post(f"{base}/v1/events", json=click, headers={"Authorization": f"Bearer {key}"}, timeout=30)
