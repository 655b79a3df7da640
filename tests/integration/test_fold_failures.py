"""A record whose fold raises (a defect: it passed validation) must not stall its partition. The live worker
dead-letters it as ``fold_error`` and applies the rest of its batch, its envelope included, from the stored
states; a replay sets it aside and counts it; both end with the same namespace. Before 2026-12-05 the
worker retried such a batch without end: every customer of the partition stopped updating.

The defect is injected into the subprocesses (``tests/fault_injection/sitecustomize.py``): folding the
poisoned event changes the profile in place, then raises.

A record whose resolution raises (the resolve stage, before the fold) is refused alone as ``resolve_error``.
The same holds for the models' fold of a customer up to the watermark (``streams.model_stage``, shared by
the worker and ``replay --retrain``): the customer is set aside and tried again later, the others' examples
are released as without the defect. Tested through a retraining replay in this process, where the defect is
patched in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from profiles import pending_store
from profiles.config import HOUR_MS
from profiles.models.labels import Example
from profiles.models.tracking import ModelTracking
from profiles.models.view import Entry, ModelView, decode_entry, decode_view
from schemas.resolved import DECODER
from services.simulator import Simulation, SimulationConfig
from tests.integration.test_corrupt_resolved import click
from tests.kafka_support import Topics, produce_raw, rapport
from tests.model_support import replayed_examples
from tests.worker_support import Worker, run_worker_through, stored_views, wait_until_caught_up

pytestmark = pytest.mark.integration

INJECTION = Path(__file__).resolve().parents[1] / "fault_injection"


def test_a_record_whose_fold_raises_is_dead_lettered_and_the_rest_applied(topics: Topics, tmp_path: Path) -> None:
    run = _poisoned_run(topics, tmp_path, "RAPPORT_TEST_UNFOLDABLE_EVENT")
    live, replayed, lines, fault, poison = run.live, run.replayed, run.lines, run.fault, run.poison
    assert "raised (a defect): it is dead-lettered as fold_error" in run.log, run.troubles

    views = stored_views(topics, live, views_instant(run))
    assert views["c-poisoned"]["meta"]["events_applied"] == 4  # type: ignore[index]
    assert views["c-poisoned"]["behaviour"]["clicks"]["page_view"] == 4  # type: ignore[index]
    assert {f"c-{i}" for i in range(20)} <= views.keys()

    dead = [r for r in topics.read(["events.dlq"], expected=1) if dict(r.headers)["rapport.reason"] == b"fold_error"]
    assert len(dead) == 1, dead
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["rapport.source.topic"] == topics.names["events.resolved"]
    assert headers["rapport.path"].startswith("records[")
    assert headers["rapport.message"] == "ZeroDivisionError: injected defect"
    envelope = DECODER.decode(dead[0].value)
    assert [(r.kind, r.profile_id) for r in envelope.records] == [("event", "c-poisoned")]
    assert poison.encode() in (envelope.records[0].event or b"")

    # A replay of the same topics under the same defect sets the record aside, says so, and rebuilds what
    # the worker kept.
    out = rapport("replay", "--into", replayed, "--quiet", env={**topics.env, **fault})
    assert out.returncode == 0, out.stderr
    assert "1 records set aside: their fold raised" in out.stdout, out.stdout
    assert f"{len(lines) - 1} events applied" in out.stdout, out.stdout
    assert "raised (a defect): it is set aside" in out.stderr
    hashes = {rapport("namespace", "hash", ns, env=topics.env).stdout.split()[0] for ns in (live, replayed)}
    assert len(hashes) == 1, hashes

    _redriven_once_fixed(topics, tmp_path, run, "fold_error")
    fixed = stored_views(topics, live, views_instant(run))["c-poisoned"]
    assert fixed["behaviour"]["clicks"]["page_view"] == 5  # type: ignore[index]


def test_a_record_whose_resolution_raises_is_dead_lettered_and_the_rest_resolved(
    topics: Topics, tmp_path: Path
) -> None:
    """The resolve stage's counterpart: the record is refused alone as ``resolve_error`` (its batch is
    resolved again in halves), its batch's other records are resolved and applied, and a replay under the
    same defect refuses the same record and ends with the same namespace."""
    run = _poisoned_run(topics, tmp_path, "RAPPORT_TEST_UNRESOLVABLE_EVENT")
    live, replayed, lines, fault, poison = run.live, run.replayed, run.lines, run.fault, run.poison
    assert "raised (a defect): it is refused as resolve_error" in run.log, run.troubles

    views = stored_views(topics, live, views_instant(run))
    assert views["c-poisoned"]["meta"]["events_applied"] == 4  # type: ignore[index]
    assert {f"c-{i}" for i in range(20)} <= views.keys()
    dead = topics.read(["events.dlq"], expected=1)
    assert [dict(r.headers)["rapport.reason"] for r in dead] == [b"resolve_error"]
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["rapport.source.topic"] == topics.names["events.clicks"]
    assert headers["rapport.message"] == "ZeroDivisionError: injected defect"
    assert dead[0].value == next(line for line in lines if poison.encode() in line)

    out = rapport("replay", "--into", replayed, "--quiet", env={**topics.env, **fault})
    assert out.returncode == 0, out.stderr
    assert f"{len(lines) - 1} events applied, 1 rejected" in out.stdout, out.stdout
    hashes = {rapport("namespace", "hash", ns, env=topics.env).stdout.split()[0] for ns in (live, replayed)}
    assert len(hashes) == 1, hashes

    _redriven_once_fixed(topics, tmp_path, run, "resolve_error")


def _redriven_once_fixed(topics: Topics, tmp_path: Path, run: _PoisonedRun, reason: str) -> None:
    """The defect fixed (no injection), ``rapport dlq redrive`` sends the poisoned event back to the clicks
    topic, and a worker applies it: the customer has all five events, the others are untouched."""
    before = stored_views(topics, run.live, views_instant(run))
    sent = rapport("dlq", "redrive", reason, "--json", env=topics.env)
    assert sent.returncode == 0, sent.stderr
    assert orjson.loads(sent.stdout)["sent_by_topic"] == {topics.names["events.clicks"]: 1}
    run_worker_through(topics, run.live, tmp_path)
    after = stored_views(topics, run.live, views_instant(run))
    assert after["c-poisoned"]["meta"]["events_applied"] == 5  # type: ignore[index]
    assert {pid: v for pid, v in after.items() if pid != "c-poisoned"} == {
        pid: v for pid, v in before.items() if pid != "c-poisoned"
    }
    again = rapport("dlq", "redrive", reason, "--json", env=topics.env)
    assert (orjson.loads(again.stdout)["sent"], orjson.loads(again.stdout)["already_sent"]) == (0, 1)


def views_instant(run: _PoisonedRun) -> int:
    """An instant after every event of the run."""
    return (int(run.start.timestamp() * 1000) // HOUR_MS + 4) * HOUR_MS


@dataclass
class _PoisonedRun:
    poison: str
    fault: dict[str, str]
    live: str
    replayed: str
    start: datetime
    lines: list[bytes]
    log: str
    troubles: str


def _poisoned_run(topics: Topics, tmp_path: Path, injection: str) -> _PoisonedRun:
    """Five events of one customer, the third poisoned through ``injection`` (an environment variable of
    ``tests/fault_injection``), and twenty of others, through a worker under the defect until caught up.
    One customer's events share a raw partition, so they are resolved into the same envelope: the poisoned
    record's neighbours in it must be applied."""
    poison = f"ev-poison-{uuid.uuid4().hex[:6]}"
    fault = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(INJECTION), os.environ.get("PYTHONPATH")])),
        injection: poison,
    }
    live, replayed = (f"t{uuid.uuid4().hex[:8]}" for _ in range(2))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    lines = [
        click(f"ev-{i}" if i != 2 else poison, start + timedelta(minutes=i), "c-poisoned", "a-poisoned")
        for i in range(5)
    ]
    lines += [click(f"ev-other-{i}", start + timedelta(minutes=i), f"c-{i}", f"a-{i}") for i in range(20)]
    produce_raw(topics, lines)
    worker = Worker(topics, live, tmp_path, extra_env=fault)
    worker.start()
    try:
        wait_until_caught_up(topics, live, worker)
        assert worker.alive()
    finally:
        worker.stop()
    log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
    return _PoisonedRun(poison, fault, live, replayed, start, lines, log, worker.troubles())


@pytest.mark.parametrize("failures", [1, None], ids=["once", "always"])
def test_a_customer_whose_models_fold_raises_is_set_aside_and_holds_no_one_back(
    topics: Topics, failures: int | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``failures``: how many of the customer's folds raise (None: all). Raised once, the customer's examples
    come a little later and are the same; always, it has none and everyone else's are unchanged."""
    lines = list(Simulation(SimulationConfig(customers=60, days=40, seed=7, late_rate=0.0)).lines())
    produce_raw(topics, lines)
    expected = _retrained(topics)
    victim = min(expected, key=lambda e: e.label_known_ms).profile_id  # released early: retried in the history
    calls: Counter[str] = Counter()
    original = ModelTracking.fold

    def defective(self: ModelTracking, view: ModelView, *args: Any, **kwargs: Any) -> Any:
        pid = view.state.profile_id
        if pid == victim and (failures is None or calls[pid] < failures):
            calls[pid] += 1
            original(self, view, *args, **kwargs)  # changes the view in place, as a real defect could
            raise ZeroDivisionError("injected defect")
        return original(self, view, *args, **kwargs)

    monkeypatch.setattr(ModelTracking, "fold", defective)
    with caplog.at_level(logging.ERROR, logger="streams.model_stage"):
        got = _retrained(topics)
    assert calls[victim] >= 1, "the defect never fired"
    assert f"folding the models' entries of {victim} up to" in caplog.text
    if failures is None:
        assert calls[victim] > 1, "never tried again"
        expected = [e for e in expected if e.profile_id != victim]
    assert sorted(got, key=_key) == sorted(expected, key=_key)


def test_a_customer_whose_stored_entries_this_version_cannot_read_is_set_aside_and_holds_no_one_back(
    topics: Topics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rollback past the release that shipped an entry dictionary (docs/decisions.md): the customer's
    entries compressed with it raise when decoded. Until session 38 they were decoded while the batch's
    customers were loaded, so the batch failed, and with it every customer of the partition."""
    original = decode_entry  # what pending_store calls
    refused: Counter[str] = Counter()

    def unreadable(victim: str) -> Callable[[bytes], Entry]:
        def decode(blob: bytes) -> Entry:
            entry = original(blob)
            if f'"{victim}"'.encode() in entry.payload:
                refused[victim] += 1
                raise ValueError("an entry compressed with dictionary 7, which this version does not ship")
            return entry

        return decode

    run = _retrained_with_damage(topics, monkeypatch, caplog, "decode_entry", unreadable, "streams.model_stage")
    assert refused[run.victim] > 1, "never refused, or never tried again"
    assert f"folding the models' entries of {run.victim} up to" in caplog.text
    # Its examples released by folds that read none of its stored entries (the batch's own) are as before.
    assert run.victims().items() < run.victims(expected=True).items()


def test_a_customer_whose_pending_snapshots_are_damaged_is_set_aside_and_holds_no_one_back(
    topics: Topics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Damaged bytes in a customer's stored pending snapshots (the real decoder given them truncated). Until
    2026-12-06 the decoding error failed the batch, and with it every customer of the partition."""
    original = pending_store.decode_pending
    damaged: Counter[str] = Counter()

    def truncated(victim: str) -> Callable[..., Any]:
        def decode(pid: str, blob: bytes, names: Any) -> Any:
            if pid == victim:
                damaged[pid] += 1
                return original(pid, blob[: len(blob) // 2], names)
            return original(pid, blob, names)

        return decode

    run = _retrained_with_damage(topics, monkeypatch, caplog, "decode_pending", truncated, "streams.model_stage")
    assert damaged[run.victim] > 1, "never read, or never tried again"
    assert f"the pending snapshots of '{run.victim}' do not decode" in caplog.text
    assert run.victims().items() < run.victims(expected=True).items()


def test_a_damaged_models_view_is_rebuilt_from_the_profile_and_holds_no_one_back(
    topics: Topics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A customer's models view damaged once (the real decoder given its bytes truncated): it is derived from
    the profile, so it is rebuilt from it and written back, and the customer goes on learning. Until
    2026-12-06 the decoding error failed the batch, and with it every customer of the partition."""
    original = decode_view  # what pending_store calls
    reads: Counter[str] = Counter()

    def truncated_once(victim: str) -> Callable[[bytes], ModelView]:
        def decode(blob: bytes) -> ModelView:
            view = original(blob)
            if view.state.profile_id == victim:
                reads[victim] += 1
                if reads[victim] == 1:
                    return original(blob[: len(blob) // 2])
            return view

        return decode

    run = _retrained_with_damage(topics, monkeypatch, caplog, "decode_view", truncated_once, "profiles.pending_store")
    assert reads[run.victim] > 1, "the victim's view was never read, or not again after it was rebuilt"
    assert f"the models view of {run.victim} does not decode" in caplog.text
    assert "rebuilt from the profile" in caplog.text
    assert run.victims(), "the victim stopped learning"


@dataclass
class _DamagedRetrain:
    victim: str
    expected: list[Example]  # without the damage
    got: list[Example]

    def victims(self, *, expected: bool = False) -> dict[tuple[str, str], Example]:
        return {_key(e): e for e in (self.expected if expected else self.got) if e.profile_id == self.victim}


def _retrained_with_damage(
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    decoder: str,
    damaging: Callable[[str], Callable[..., Any]],
    logger: str,
) -> _DamagedRetrain:
    """A simulated history retrained, then again with ``pending_store``'s ``decoder`` replaced by
    ``damaging(victim)`` (the victim: the customer with the first example released, tried again within the
    history). Everyone else's examples must be those of the first retrain."""
    lines = list(Simulation(SimulationConfig(customers=60, days=40, seed=7, late_rate=0.0)).lines())
    produce_raw(topics, lines)
    expected = _retrained(topics)
    victim = min(expected, key=lambda e: e.label_known_ms).profile_id
    monkeypatch.setattr(pending_store, decoder, damaging(victim))
    with caplog.at_level(logging.ERROR, logger=logger):
        got = _retrained(topics)
    others = sorted((e for e in got if e.profile_id != victim), key=_key)
    assert others == sorted((e for e in expected if e.profile_id != victim), key=_key)
    return _DamagedRetrain(victim, expected, got)


def _retrained(topics: Topics) -> list[Example]:
    examples = asyncio.run(replayed_examples(topics.settings, lag_s=86_400, secret="release-failures", chunk=1_000))
    assert len(examples) > 100, len(examples)
    return examples


def _key(example: Example) -> tuple[str, str]:
    return example.model, example.example_id
