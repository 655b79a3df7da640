"""The live profile worker against the independent oracle, through the real broker and Redis."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from profiles.config import HOUR_MS
from schemas.validation import Rejection, ValidationLimits, validate_event
from tests.kafka_support import Topics, rapport
from tests.oracle import OracleSettings, build_profiles, diff_profiles
from tests.worker_support import run_worker_through, stored_views

pytestmark = pytest.mark.integration

DECLARED_DEFECT = re.compile(rb"bad-\d+-\d+-([a-z_]+)")


def test_every_profile_equals_the_oracle_and_the_dlq_holds_exactly_the_malformed(
    tmp_path: Path, topics: Topics
) -> None:
    events_file = tmp_path / "events.jsonl"
    sim = rapport(
        "simulate", "--customers", "700", "--days", "60", "--seed", "21", "--out", str(events_file), env=topics.env
    )
    assert sim.returncode == 0, sim.stderr
    lines = [line for line in events_file.read_bytes().splitlines() if line.strip()]
    now = datetime.now(UTC)
    valid = [
        line for line in lines if not isinstance(validate_event(line, now=now, limits=ValidationLimits()), Rejection)
    ]
    malformed = [line for line in lines if DECLARED_DEFECT.search(line)]
    assert len(lines) >= 100_000
    assert len(valid) + len(malformed) == len(lines)
    assert len({orjson.loads(v)["event_id"] for v in valid}) < len(valid), "duplicates are part of the test"

    namespace = f"t{uuid.uuid4().hex[:8]}"
    # The oracle drops every repeat of an event id; the worker remembers the last 64 of each source stream
    # (docs/profile.md, "Bounded memory"). Here a repeat follows at most 7 events of its stream.
    run_worker_through(topics, namespace, tmp_path, lines)  # malformed lines included

    latest = max(orjson.loads(v)["timestamp"] for v in valid)
    as_of = (-(-int(datetime.fromisoformat(latest).timestamp() * 1000) // HOUR_MS) + 1) * HOUR_MS
    expected = build_profiles([orjson.loads(v) for v in valid], as_of_ms=as_of, settings=OracleSettings())
    assert diff_profiles(expected, stored_views(topics, namespace, as_of)) == []

    # The read path: any known id finds the canonical profile, at any as_of from its last event on.
    merged = next(v for v in expected.values() if v["anonymous_ids"] and v["emails"] and v["customer_id"])
    env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": namespace}
    as_of_iso = datetime.fromtimestamp(as_of / 1000, UTC).isoformat()
    for any_id in (merged["customer_id"], merged["anonymous_ids"][0], merged["emails"][0].upper()):
        shown = rapport("profile", "get", str(any_id), "--as-of", as_of_iso, env=env)
        assert shown.returncode == 0, shown.stderr
        assert diff_profiles({"p": expected[str(merged["profile_id"])]}, {"p": orjson.loads(shown.stdout)}) == []
    assert rapport("profile", "get", "nobody-at-all", env=env).returncode == 1
    too_early = rapport("profile", "get", str(merged["customer_id"]), "--as-of", "2000-01-01T00:00:00Z", env=env)
    assert too_early.returncode == 2
    assert "before the profile's last event" in too_early.stderr

    # The dead-letter topic: exactly the malformed lines, byte for byte, each with its declared reason.
    dead = topics.read(["events.dlq"], expected=len(malformed))
    assert Counter(r.value for r in dead) == Counter(malformed)
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        match = DECLARED_DEFECT.search(record.value)
        assert match is not None
        assert headers["rapport.reason"] == match.group(1).decode()
        assert headers["rapport.source.topic"].startswith(topics.settings.kafka.topic_prefix)
        assert int(headers["rapport.source.offset"]) >= 0
