"""`rapport produce` and `simulate --to-kafka` against the real broker.

Every valid line arrives exactly as often as it was sent, byte for byte, in order per key; every malformed
line is refused with the reason the simulator meant it to have, and reaches Kafka only when asked to
(``--send-malformed``).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from schemas.topics import RAW_EVENT_TOPICS, TOPIC_BY_EVENT_TYPE
from schemas.validation import Reason, Rejection, ValidationLimits, validate_event
from services.simulator import Simulation, SimulationConfig
from tests.kafka_support import Topics, rapport
from tests.unit.test_contract import CLICK, MALFORMED

pytestmark = pytest.mark.integration

RAW = [spec.name for spec in RAW_EVENT_TOPICS]
# The simulator names each malformed line after the defect it injected: an oracle independent of the validator.
DECLARED_DEFECT = re.compile(rb"bad-\d+-\d+-([a-z_]+)")


def split_valid(lines: list[bytes]) -> tuple[list[tuple[str, str, bytes]], list[bytes]]:
    """(logical topic, key, line) of each valid line, and the rejected lines."""
    now = datetime.now(UTC)
    valid, rejected = [], []
    for line in lines:
        result = validate_event(line, now=now, limits=ValidationLimits())
        if isinstance(result, Rejection):
            rejected.append(line)
        else:
            valid.append((TOPIC_BY_EVENT_TYPE[result.type].name, result.key, line))
    return valid, rejected


def test_produce_delivers_every_valid_line_once_in_order_per_key(tmp_path: Path, topics: Topics) -> None:
    events_file, rejects_file = tmp_path / "sim.jsonl", tmp_path / "rejects.jsonl"
    sim = rapport(
        "simulate", "--customers", "150", "--days", "30", "--seed", "11", "--out", str(events_file), env=topics.env
    )
    assert sim.returncode == 0, sim.stderr
    lines = [line for line in events_file.read_bytes().splitlines() if line.strip()]
    assert len(lines) >= 10_000
    valid, rejected = split_valid(lines)
    assert rejected, "the simulator injects malformed events"
    assert len(set(valid)) < len(valid), "the simulator injects duplicates"

    produced = rapport("produce", str(events_file), "--rejects", str(rejects_file), env=topics.env)
    assert produced.returncode == 0, produced.stderr
    assert f"sent {len(valid):,}" in produced.stderr

    # Refused: exactly the lines the simulator broke, each for the reason it broke it.
    rejects = [orjson.loads(r) for r in rejects_file.read_bytes().splitlines()]
    declared = [DECLARED_DEFECT.search(line) for line in lines]
    assert sorted(r["line"] for r in rejects) == [i for i, m in enumerate(declared, start=1) if m]
    for reject in rejects:
        match = declared[reject["line"] - 1]
        assert match is not None
        assert reject["code"] == match.group(1).decode(), reject
        assert reject["problems"]

    records = topics.read(RAW, expected=len(valid))
    # Exactly once, byte for byte, in the topic of its type under its key.
    assert Counter((r.topic, r.key.decode(), r.value) for r in records) == Counter(
        (topics.names[topic], key, line) for topic, key, line in valid
    )
    # Per key, the file's order.
    got_order: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        got_order[(r.topic, r.key.decode())].append(r.value)
    want_order: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for topic, key, line in valid:
        want_order[(topics.names[topic], key)].append(line)
    assert got_order == want_order
    # One key, one partition.
    partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for r in records:
        partitions[(r.topic, r.key)].add(r.partition)
    assert all(len(p) == 1 for p in partitions.values())


def test_simulate_to_kafka_sends_exactly_the_simulated_valid_events(tmp_path: Path, topics: Topics) -> None:
    truth = tmp_path / "truth.jsonl"
    sim = rapport(
        "simulate",
        "--customers",
        "20",
        "--days",
        "5",
        "--seed",
        "4",
        "--to-kafka",
        "--truth",
        str(truth),
        env=topics.env,
    )
    assert sim.returncode == 0, sim.stderr

    expected = list(Simulation(SimulationConfig(customers=20, days=5, seed=4)).lines())
    valid, rejected = split_valid(expected)
    assert rejected
    records = topics.read(RAW, expected=len(valid))
    assert Counter(r.value for r in records) == Counter(line for _, _, line in valid)
    assert len(truth.read_bytes().splitlines()) == 20


def test_simulate_to_kafka_sends_the_malformed_lines_too_when_asked(tmp_path: Path, topics: Topics) -> None:
    # What the demo does, so that the worker has malformed records to dead-letter.
    sim = rapport(
        "simulate", "--customers", "20", "--days", "5", "--seed", "4", "--to-kafka", "--send-malformed",
        "--truth", str(tmp_path / "truth.jsonl"), env=topics.env,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert "(sent anyway)" in sim.stderr

    expected = list(Simulation(SimulationConfig(customers=20, days=5, seed=4)).lines())
    _, rejected = split_valid(expected)
    assert rejected
    records = topics.read(RAW, expected=len(expected))
    assert Counter(r.value for r in records) == Counter(expected)


def test_produce_refuses_every_malformed_class_with_its_reason(tmp_path: Path, topics: Topics) -> None:
    events_file, rejects_file = tmp_path / "bad.jsonl", tmp_path / "rejects.jsonl"
    good = orjson.dumps(CLICK)
    events_file.write_bytes(b"\n".join([good, *(raw for _, raw, _, _ in MALFORMED), good.replace(b"ev-1", b"ev-2")]))

    produced = rapport("produce", str(events_file), "--rejects", str(rejects_file), env=topics.env)
    assert produced.returncode == 0, produced.stderr
    rejects = [orjson.loads(r) for r in rejects_file.read_bytes().splitlines()]
    assert [(r["code"], r["path"]) for r in rejects] == [(code.value, path) for _, _, code, path in MALFORMED]
    assert {r["code"] for r in rejects} == {reason.value for reason in Reason}
    for reason in Reason:
        assert f"rejected {reason.value}:" in produced.stderr

    records = topics.read(RAW, expected=2)
    sent = sorted((orjson.loads(r.value) for r in records), key=lambda e: e["event_id"])
    # The collector stamps arrival time on events that lack it, and changes nothing else.
    assert all(datetime.fromisoformat(e.pop("received_at")).tzinfo is not None for e in sent)
    assert sent == [CLICK, {**CLICK, "event_id": "ev-2"}]
