"""Corrupt ``events.resolved`` records (a foreign producer, a state written by a newer release): the worker
dead-letters each one with its reason, applies the valid records around it, and keeps going. Before
2026-12-05 a ``merge_in`` whose state did not decode raised a decoding error the apply stage retried for
ever (the partition stalled), and one corrupt record dead-lettered its whole envelope, valid records
included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from profiles.config import HOUR_MS
from schemas.resolved import ENCODER, Envelope, RawSource, Resolved
from services.kafka_clients import make_producer
from tests.kafka_support import Topics, produce_raw
from tests.worker_support import Worker, stored_views, wait_until_caught_up

pytestmark = pytest.mark.integration


def click(event_id: str, when: datetime, customer_id: str | None, anonymous_id: str) -> bytes:
    event = {
        "event_id": event_id,
        "type": "click",
        "timestamp": when.isoformat(),
        "source": "web",
        "anonymous_id": anonymous_id,
        "action": "page_view",
        "url": "/",
        "session_id": "s-1",
    }
    return orjson.dumps(event if customer_id is None else {**event, "customer_id": customer_id})


def test_corrupt_resolved_records_are_dead_lettered_one_by_one_and_the_worker_goes_on(
    topics: Topics, tmp_path: Path
) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    worker = Worker(topics, namespace, tmp_path)
    worker.start()
    try:
        produce_raw(topics, [click("ev-before", now, None, "a-before")])
        wait_until_caught_up(topics, namespace, worker)

        raw = topics.names["events.clicks"]
        valid = [
            Resolved(
                kind="event",
                profile_id="c-corrupt",
                event=click(f"ev-{i}", now + timedelta(minutes=i), "c-corrupt", "a-corrupt"),
                source=RawSource(raw, 0, 10_000 + i),
            )
            for i in (1, 2)
        ]
        bad_state = Resolved(kind="merge_in", profile_id="c-corrupt", other_profile="anon:a-x", state=b"\x01garbage")
        no_origin = Resolved(kind="forward", profile_id="c-corrupt", event=valid[0].event)
        envelope = Envelope([valid[0], bad_state, no_origin, valid[1]], namespace=namespace)
        producer = make_producer(topics.settings)
        try:
            resolved = topics.names["events.resolved"]
            producer.send(resolved, key=b"c-corrupt", value=ENCODER.encode(envelope))
            producer.send(resolved, key=b"c-corrupt", value=b"not an envelope")
            producer.flush()
        finally:
            producer.close()

        produce_raw(topics, [click("ev-after", now, None, "a-after")])
        wait_until_caught_up(topics, namespace, worker)
        assert worker.alive()
    finally:
        worker.stop()

    views = stored_views(topics, namespace, (int(now.timestamp() * 1000) // HOUR_MS + 2) * HOUR_MS)
    assert views["c-corrupt"]["meta"]["events_applied"] == 2  # type: ignore[index]
    assert {"anon:a-before", "anon:a-after"} <= views.keys()

    dead = {
        (headers["rapport.reason"], headers["rapport.path"]): (record.value, headers["rapport.message"])
        for record in topics.read(["events.dlq"], expected=3)
        if (headers := {k: v.decode() for k, v in record.headers})["rapport.source.topic"] == resolved
    }
    assert set(dead) == {
        ("corrupt_resolved_record", "records[1]"),
        ("corrupt_resolved_record", "records[2]"),
        ("corrupt_resolved_record", ""),
    }, dead
    assert dead["corrupt_resolved_record", "records[1]"][0] == ENCODER.encode(
        Envelope([bad_state], namespace=namespace)
    )
    assert "state does not decode" in dead["corrupt_resolved_record", "records[1]"][1]
    assert dead["corrupt_resolved_record", "records[2]"][0] == ENCODER.encode(
        Envelope([no_origin], namespace=namespace)
    )
    assert "forwarded from" in dead["corrupt_resolved_record", "records[2]"][1]
    assert dead["corrupt_resolved_record", ""][0] == b"not an envelope"
