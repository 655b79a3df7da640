"""Progress markers: the resolve stage's promises and the watermark an apply stage derives from them."""

from __future__ import annotations

from profiles.models.progress import PartitionProgress, watermark_target
from schemas.resolved import DECODER, ENCODER, ApplyMarker, Resolved, SourceMarker, envelopes, marker
from streams.model_stage import SourceProgress


def test_a_partition_waiting_for_its_turn_never_goes_idle() -> None:
    sources = SourceProgress(idle_s=1.0, interval_s=0.5)
    sources.assigned(["clicks:0", "clicks:1"])
    sources.resolved({"clicks:0": 100})
    # clicks:1 has records the consumer has not handed over yet: not at its end, however long it waits.
    for now in (0.0, 5.0, 50.0):
        sources.positions({"clicks:0": False, "clicks:1": False}, now)
    assert sources.idle == set()
    sent = sources.marker(2, 50.0)
    assert sent == SourceMarker(2, {"clicks:0": 100}, [])
    progress = PartitionProgress()
    progress.observe_sources(sent)
    assert progress.input_bound() is None  # clicks:1 has not reported: nothing may advance


def test_idle_after_being_at_the_end_for_idle_s_and_busy_again_on_new_records() -> None:
    sources = SourceProgress(idle_s=1.0, interval_s=0.5)
    sources.assigned(["clicks:0", "clicks:1"])
    sources.resolved({"clicks:0": 100})
    sources.positions({"clicks:0": False, "clicks:1": True}, 10.0)
    sources.positions({"clicks:0": False, "clicks:1": True}, 10.5)
    assert sources.idle == set()
    sources.positions({"clicks:0": False, "clicks:1": True}, 11.0)
    assert sources.idle == {"clicks:1"}
    first = sources.marker(2, 11.0)
    assert first == SourceMarker(2, {"clicks:0": 100}, ["clicks:1"])
    sources.was_sent(first, 11.0)
    assert sources.marker(2, 20.0) is None  # nothing changed
    sources.resolved({"clicks:0": 150})
    assert sources.marker(2, 11.2) is None  # progress alone waits for the interval
    assert sources.marker(2, 11.5) == SourceMarker(2, {"clicks:0": 150}, ["clicks:1"])
    sources.resolved({"clicks:1": 40})  # new records: holds the watermark back again, at once
    assert sources.marker(2, 11.6) == SourceMarker(2, {"clicks:0": 150, "clicks:1": 40}, [])


def test_the_watermark_waits_for_every_partitions_apply_marker() -> None:
    # Partition 1's apply stage is behind: a visitor's straggler it has yet to forward may be older than
    # what partition 0 has read, so partition 0's watermark follows the slower of the two.
    p0 = PartitionProgress()
    p0.observe_sources(SourceMarker(1, {"clicks:0": 1_000}, []))
    assert p0.input_bound() == 1_000
    p0.observe_applied(0, 1_000)
    assert watermark_target(p0, range(2), lag_ms=100) is None
    p0.observe_applied(1, 400)
    assert watermark_target(p0, range(2), lag_ms=100) == 300
    p0.observe_applied(1, 900)
    assert watermark_target(p0, range(2), lag_ms=100) == 800


def test_a_restarted_resolver_reporting_less_does_not_move_the_bound_back() -> None:
    progress = PartitionProgress()
    progress.observe_sources(SourceMarker(1, {"clicks:0": 1_000}, []))
    progress.observe_sources(SourceMarker(1, {"clicks:0": 700}, []))  # re-reading from Kafka's commit
    assert progress.input_bound() == 1_000


def test_markers_travel_in_envelopes_without_records() -> None:
    applied = DECODER.decode(marker("ns", applied=ApplyMarker(3, 42)))
    sources = DECODER.decode(marker("ns", sources=SourceMarker(5, {"t:0": 1}, ["t:1"])))
    assert (applied.records, applied.applied, applied.sources) == ([], ApplyMarker(3, 42), None)
    assert sources.sources == SourceMarker(5, {"t:0": 1}, ["t:1"])


def test_envelopes_name_the_namespace_that_sent_them_and_older_ones_name_none() -> None:
    (packed,) = envelopes([Resolved(kind="merge_out", profile_id="anon:a-1", other_profile="c-1")], "live")
    assert DECODER.decode(packed).namespace == "live"
    assert DECODER.decode(marker("shadow", applied=ApplyMarker(0, 1))).namespace == "shadow"
    # Written before envelopes carried a namespace: three fields.
    older = DECODER.decode(ENCODER.encode([[], None, ApplyMarker(0, 1)]))
    assert (older.namespace, older.applied) == ("", ApplyMarker(0, 1))
