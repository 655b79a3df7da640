"""What ``rapport dlq`` makes of dead letters, without Kafka: what goes back where, and the summary's counts."""

from __future__ import annotations

import orjson

from schemas.resolved import ENCODER, Envelope, RawSource, Resolved
from services.dlq import Letter, Resend, Summary, resend_of
from streams.dead_letters import DeadLettered

RAW = frozenset({"events.clicks", "events.erasures"})
RESOLVED = "events.resolved"
CLICK = orjson.dumps(
    {
        "event_id": "e-1",
        "type": "click",
        "anonymous_id": "a-1",
        "action": "page_view",
        "url": "/",
        "session_id": "s-1",
        "timestamp": "2026-11-02T10:00:00Z",
    }
)


def letter(reason: str, source: RawSource | None, value: bytes = b"{", *, offset: int = 0) -> Letter:
    return Letter(0, offset, b"k-1", value, DeadLettered(reason, source, "2026-12-05T10:00:00.000+00:00"))


def test_a_record_refused_by_a_resolve_stage_goes_back_as_it_was() -> None:
    refused = letter("malformed_json", RawSource("events.clicks", 3, 17))
    assert resend_of(refused, RAW, RESOLVED) == Resend("events.clicks", b"k-1", b"{")


def test_a_fold_error_sends_the_raw_event_its_record_carries_with_the_event_s_key() -> None:
    record = Resolved(kind="event", profile_id="c-1", event=CLICK, source=RawSource("events.clicks", 2, 40))
    failed = letter("fold_error", RawSource(RESOLVED, 5, 9), ENCODER.encode(Envelope([record])))
    assert resend_of(failed, RAW, RESOLVED) == Resend("events.clicks", b"a-1", CLICK)


def test_what_has_no_raw_record_to_send_is_not_resent() -> None:
    handover = Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1")
    unsendable = [
        letter("fold_error", RawSource(RESOLVED, 5, 9), ENCODER.encode(Envelope([handover]))),
        letter("fold_error", RawSource(RESOLVED, 5, 9), b"not msgpack"),
        letter("corrupt_resolved_record", RawSource(RESOLVED, 5, 9), ENCODER.encode(Envelope([]))),
        letter("malformed_json", RawSource("other-prefix.events.clicks", 0, 1)),  # not this deployment's
        letter("malformed_json", None),  # headers without a source
    ]
    assert [resend_of(dead, RAW, RESOLVED) for dead in unsendable] == [None] * len(unsendable)


def test_the_summary_counts_by_reason_and_source_with_the_re_sent_and_the_refusal_span() -> None:
    letters = [
        letter("malformed_json", RawSource("events.clicks", 0, 1), offset=0),
        letter("malformed_json", RawSource("events.clicks", 0, 2), offset=1),
        letter("resolve_error", RawSource("events.clicks", 0, 3), offset=2),
        Letter(0, 3, None, b"", None),  # not Rapport's
    ]
    summary = Summary(sent={"0:1"})
    for one in letters:
        summary.add(one)
    assert [(r["reason"], r["topic"], r["records"], r["re_sent"]) for r in summary.table()] == [
        ("(no reason header)", None, 1, 0),
        ("malformed_json", "events.clicks", 2, 1),
        ("resolve_error", "events.clicks", 1, 0),
    ]
