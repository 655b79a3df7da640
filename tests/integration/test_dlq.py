"""``rapport dlq summary | redrive`` against the real broker, Redis and worker: dead letters of a fixed cause go
back to their raw topics exactly once, through interruptions, and the worker applies them."""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from kafka.errors import KafkaError

from profiles.config import DAY_MS
from profiles.timeutil import iso
from services.dlq import redrive_keys
from services.topics_admin import admin_client, ensure_topics
from streams.dead_letters import REDRIVEN_FROM
from tests.kafka_support import Topics, rapport
from tests.redis_support import get_key, set_key
from tests.worker_support import run_worker_through, stored_views

pytestmark = pytest.mark.integration

INJECTION = Path(__file__).resolve().parents[1] / "fault_injection"
T0 = 1_793_613_600_000  # 2026-11-02T10:00:00Z
JPY_RATE = 0.0062  # EUR per yen


def purchase(n: int, customer: str, currency: str, total: float) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"p-{n}",
            "type": "purchase",
            "customer_id": customer,
            "action": "order",
            "order_id": f"o-{n}",
            "currency": currency,
            "total": total,
            "timestamp": iso(T0 + n * DAY_MS),
        }
    )


def redrive(env: dict[str, str], *args: str) -> tuple[int, dict[str, object]]:
    done = rapport("dlq", "redrive", *args, "--json", env=env)
    return done.returncode, orjson.loads(done.stdout) if done.returncode == 0 else {"stderr": done.stderr}


def redriven_records(topics: Topics) -> list[bytes]:
    """The values of the records a redrive sent to the purchases topic."""
    records = topics.read_to_end(["events.purchases"])
    return [r.value for r in records if any(name == REDRIVEN_FROM for name, _ in r.headers or ())]


def test_dead_letters_of_a_fixed_cause_are_sent_back_once_and_applied(tmp_path: Path, topics: Topics) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    lines = [
        purchase(1, "c-1", "EUR", 10.0),
        purchase(2, "c-1", "JPY", 1000.0),  # no rate for yen at first
        purchase(3, "c-2", "JPY", 5000.0),
        purchase(4, "c-2", "CHF", 20.0),  # nor for francs, ever, in this test
        b'{"event_id": "x-1", "type": "click", "timestamp": ',  # malformed JSON
    ]
    run_worker_through(topics, namespace, tmp_path, lines)

    shown = rapport("dlq", "summary", "--json", env=topics.env)
    assert shown.returncode == 0, shown.stderr
    rows = {(row["reason"], row["topic"]): (row["records"], row["re_sent"]) for row in orjson.loads(shown.stdout)}
    purchases, clicks = topics.names["events.purchases"], topics.names["events.clicks"]
    assert rows == {("unsupported_currency", purchases): (3, 0), ("malformed_json", clicks): (1, 0)}

    # Nothing fixed yet: nothing would be sent.
    status, report = redrive(topics.env, "unsupported_currency", "--dry-run")
    assert status == 0, report
    assert (report["sent"], report["refused_again"]) == (0, {"unsupported_currency": 3})
    for wrong in ("corrupt_resolved_record", "no_such_reason"):
        refused = rapport("dlq", "redrive", wrong, env=topics.env)
        assert refused.returncode == 2, refused.stderr

    # A rate for yen: the two yen purchases go back, the franc one stays.
    fixed = {**topics.env, "RAPPORT_PROFILE__FX_RATES": orjson.dumps({"EUR": 1.0, "JPY": JPY_RATE}).decode()}
    status, report = redrive(fixed, "unsupported_currency", "--dry-run")
    assert status == 0, report
    assert (report["sent"], report["refused_again"]) == (2, {"unsupported_currency": 1})
    assert redriven_records(topics) == []

    # One redrive at a time: a lock held by a live process (this one) refuses a second.
    lock = redrive_keys(topics.names["events.dlq"]).lock
    holder = f"{socket.gethostname()} {os.getpid()} test"
    set_key(topics.settings, lock, holder)
    busy = rapport("dlq", "redrive", "unsupported_currency", env=fixed)
    assert busy.returncode == 1, busy.stderr
    assert f"another redrive is running: {holder}" in busy.stderr
    set_key(topics.settings, lock, None)

    injected = {**fixed, "PYTHONPATH": os.pathsep.join(filter(None, [str(INJECTION), os.environ.get("PYTHONPATH")]))}
    # Held up past its lock's time to live after its first batch (of one), while another redrive took the
    # lock: it stops before its second batch, and leaves the other's lock as it is.
    other = "another-host 4242 feedface"
    frozen = rapport("dlq", "redrive", "unsupported_currency", env={**injected, "RAPPORT_TEST_REDRIVE_FREEZES": other})
    assert frozen.returncode == 1, frozen.stderr
    assert "another redrive took it: stopped before overlapping with it" in frozen.stderr
    assert "Traceback" not in frozen.stderr
    assert len(redriven_records(topics)) == 1
    assert get_key(topics.settings, lock) == other.encode()
    set_key(topics.settings, lock, None)

    # Dies at its first send, then once its sends are acknowledged but before it records them.
    for moment, expected_sent in (("before_send", 1), ("after_send", 2)):
        died = rapport("dlq", "redrive", "unsupported_currency", env={**injected, "RAPPORT_TEST_REDRIVE_DIES": moment})
        assert died.returncode == 137, died.stderr
        assert len(redriven_records(topics)) == expected_sent, moment

    status, report = redrive(fixed, "unsupported_currency")
    assert status == 0, report
    assert (report["recovered"], report["sent"]) == (1, 0)
    status, report = redrive(fixed, "unsupported_currency")
    assert status == 0, report
    assert (report["already_sent"], report["sent"], report["refused_again"]) == (2, 0, {"unsupported_currency": 1})
    assert sorted(orjson.loads(v)["event_id"] for v in redriven_records(topics)) == ["p-2", "p-3"]

    shown = rapport("dlq", "summary", "--json", env=topics.env)
    rows = {(row["reason"], row["topic"]): (row["records"], row["re_sent"]) for row in orjson.loads(shown.stdout)}
    assert rows[("unsupported_currency", purchases)] == (3, 2)

    # The worker, with the same rate, applies each re-sent purchase once.
    run_worker_through(
        topics, namespace, tmp_path, extra_env={"RAPPORT_PROFILE__FX_RATES": fixed["RAPPORT_PROFILE__FX_RATES"]}
    )
    views = stored_views(topics, namespace, T0 + 10 * DAY_MS)
    spend = {pid: (v["transactions"]["orders"], v["transactions"]["gross_spend"]) for pid, v in views.items()}  # type: ignore[index]
    assert spend == {"c-1": (2, round(10.0 + 1000 * JPY_RATE, 2)), "c-2": (1, round(5000 * JPY_RATE, 2))}


def summary_rows(env: dict[str, str], *args: str) -> dict[tuple[str, str], tuple[int, int]]:
    shown = rapport("dlq", "summary", *args, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return {(row["reason"], row["topic"]): (row["records"], row["re_sent"]) for row in orjson.loads(shown.stdout)}


def recreate(topics: Topics, logical: str) -> None:
    """Delete the topic and create it again (empty, offsets from 0, a new topic id)."""
    name = topics.names[logical]
    with admin_client(topics.settings) as admin:
        admin.delete_topics([name])
    deadline = time.monotonic() + 60
    while True:
        try:
            ensure_topics(topics.settings)
        except KafkaError:  # the deletion is still under way
            pass
        else:
            with admin_client(topics.settings) as admin:
                if name in admin.list_topics():
                    return
        assert time.monotonic() < deadline, f"{name} was not created again"
        time.sleep(0.5)


def test_a_re_created_dead_letter_topic_is_not_taken_for_the_deleted_one(tmp_path: Path, topics: Topics) -> None:
    """Re-created, the topic's offsets start again: a new dead letter at a position re-sent from the deleted
    topic is still sent, once; and ``--since`` leaves out what was refused before it."""
    namespace = f"t{uuid.uuid4().hex[:8]}"
    yen = {"RAPPORT_PROFILE__FX_RATES": orjson.dumps({"EUR": 1.0, "JPY": JPY_RATE}).decode()}
    fixed = {
        **topics.env,
        "RAPPORT_PROFILE__FX_RATES": orjson.dumps({"EUR": 1.0, "JPY": JPY_RATE, "CHF": 1.05}).decode(),
    }
    purchases = topics.names["events.purchases"]
    run_worker_through(topics, namespace, tmp_path, [purchase(1, "c-1", "JPY", 1000.0)])
    status, report = redrive(fixed, "unsupported_currency")
    assert (status, report["sent"]) == (0, 1), report

    recreate(topics, "events.dlq")
    assert summary_rows(topics.env) == {}
    between = datetime.now(UTC)
    time.sleep(0.01)  # the dead letter below is refused after ``between``, by this machine's clock
    # The worker applies the yen purchase sent back, and refuses a franc one of the same key: the new topic's
    # first dead letter, at the position of the deleted topic's first.
    run_worker_through(topics, namespace, tmp_path, [purchase(2, "c-1", "CHF", 20.0)], extra_env=yen)
    assert summary_rows(topics.env) == {("unsupported_currency", purchases): (1, 0)}

    status, report = redrive(fixed, "unsupported_currency", "--dry-run")
    assert (status, report["sent"], report["already_sent"]) == (0, 1, 0), report
    status, report = redrive(fixed, "unsupported_currency")
    assert (status, report["forgotten"], report["sent"], report["already_sent"]) == (0, 1, 1, 0), report
    status, report = redrive(fixed, "unsupported_currency")
    assert (status, report["forgotten"], report["sent"], report["already_sent"]) == (0, 0, 0, 1), report
    assert sorted(orjson.loads(v)["event_id"] for v in redriven_records(topics)) == ["p-1", "p-2"]

    assert summary_rows(topics.env, "--since", between.isoformat()) == {("unsupported_currency", purchases): (1, 1)}
    assert summary_rows(topics.env, "--since", "now") == {}
    status, report = redrive(fixed, "unsupported_currency", "--since", "yesterday")
    assert status == 2, report
    assert "RFC 3339" in str(report["stderr"]), report
