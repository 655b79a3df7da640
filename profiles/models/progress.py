"""How far the input of one ``events.resolved`` partition is complete, in event time: the models' watermark.

Labels are decided by an event-time watermark (``profiles.models.tracking``): a snapshot's horizon is
declared outcome-free once the watermark passes it, so the watermark must never pass an event that is still
to be folded. An event reaches a customer's partition by two paths: from a resolve stage (raw topic →
``events.resolved``), or from another partition's apply stage (a straggler forwarded by a merged visitor, a
visitor's hand-over). Both send *markers* in-stream, to every partition, after the records they cover:

- a resolve stage's ``SourceMarker``: per raw partition it reads, the newest event time it has resolved and
  sent, and which partitions it has read to their end;
- an apply stage's ``ApplyMarker``: the *input bound* of its partition (below), sent after the forwards of
  the batches that reached it.

A partition's apply stage reads both in order, so when it has folded a marker it has folded everything the
marker covers. Its input bound is the slowest raw partition's newest event time among those still being
read (every raw partition must have reported; once all are read to their end, the newest of all). Its
watermark target is the minimum over *every* partition's input bound, as their apply markers reached it,
minus ``models.watermark_lag_s``: forwards from a partition whose apply stage is behind hold it back. The
lag still covers events that arrive late in event time (newer records of a raw partition with older times).

Pure: the worker loads a partition's ``PartitionProgress``, observes the markers of a batch, stores it.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from schemas.resolved import SourceMarker


class PartitionProgress(msgspec.Struct, array_like=True):
    """What the markers folded so far in one ``events.resolved`` partition said.

    >>> p = PartitionProgress()
    >>> p.observe_sources(SourceMarker(2, {"clicks:0": 50}, []))
    >>> p.input_bound() is None  # clicks:1 has not reported yet
    True
    >>> p.observe_sources(SourceMarker(2, {"clicks:1": 30}, []))
    >>> p.input_bound()
    30
    >>> p.observe_sources(SourceMarker(2, {"clicks:1": 35}, ["clicks:1"]))
    >>> p.input_bound()  # clicks:1 is read to its end: the other one decides
    50
    >>> p.observe_sources(SourceMarker(2, {"clicks:0": 60}, ["clicks:0"]))
    >>> p.input_bound()  # everything read: the newest event time of all
    60
    """

    raw_partitions: int = 0
    #: raw partition → (newest event time resolved and sent, -1 if none; read to its end)
    raw: dict[str, tuple[int, bool]] = msgspec.field(default_factory=dict)
    #: events.resolved partition → its input bound, from its apply markers
    upstream: dict[int, int] = msgspec.field(default_factory=dict)

    def observe_sources(self, marker: SourceMarker) -> None:
        # The newest time only grows: a restarted resolve stage re-reads from Kafka's commit and reports less,
        # but everything up to the larger time was already sent before the earlier marker.
        self.raw_partitions = marker.raw_partitions
        idle = set(marker.idle)
        for name, newest in marker.newest.items():
            self.raw[name] = (max(newest, self.raw.get(name, (-1, False))[0]), name in idle)
        for name in idle - marker.newest.keys():
            self.raw[name] = (self.raw.get(name, (-1, True))[0], True)

    def observe_applied(self, partition: int, bound: int) -> None:
        # The latest word counts: a raw partition that has records again can lower a partition's bound.
        self.upstream[partition] = bound

    def input_bound(self) -> int | None:
        """Event time up to which every raw partition's records have reached this partition (None: unknown)."""
        if self.raw_partitions == 0 or len(self.raw) < self.raw_partitions:
            return None
        reading = [newest for newest, idle in self.raw.values() if not idle]
        if reading:
            return min(reading)
        newest = max(newest for newest, _ in self.raw.values())
        return newest if newest >= 0 else None


def watermark_target(progress: PartitionProgress, partitions: Iterable[int], lag_ms: int) -> int | None:
    """Where a partition's watermark may move: every partition's input bound has reached it (through its
    apply marker), minus the lag.

    >>> p = PartitionProgress(upstream={0: 100, 1: 80})
    >>> watermark_target(p, range(2), 10), watermark_target(p, range(3), 10)
    (70, None)
    """
    bounds = [progress.upstream.get(p) for p in partitions]
    if not bounds or any(b is None for b in bounds):
        return None
    return min(b for b in bounds if b is not None) - lag_ms
