"""The one order in which a replay applies the records of many partitions. Pure: fetching is the caller's.

Records are merged by (timestamp, topic, partition, offset): each partition's records in offset order, the
partitions' heads compared by that key. A record is released only while every partition that has more to
read has a buffered record, so the order does not depend on how fetches happen to arrive, and two replays
of one plan apply the same records in the same order.

>>> from aiokafka.structs import ConsumerRecord
>>> def record(partition: int, offset: int, timestamp: int) -> RawRecord:
...     return ConsumerRecord("t", partition, offset, timestamp, 0, None, b"", None, 0, 0, ())
>>> order = MergedOrder({"t:0": 0, "t:1": 0}, end={"t:0": 2, "t:1": 2})
>>> order.needy()
['t:0', 't:1']
>>> order.add("t:0", [record(0, 0, 5), record(0, 1, 9)], position=2)
>>> order.release([], 10)  # t:1 has more to read and nothing buffered
[]
>>> order.add("t:1", [record(1, 0, 5), record(1, 1, 7)], position=2)
>>> [(r.partition, r.offset) for r in order.release([], 10)]
[(0, 0), (1, 0), (1, 1), (0, 1)]
>>> order.next, order.finished("t:0")
({'t:0': 2, 't:1': 2}, True)
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence

from streams.handler import RawRecord


class MergedOrder:
    """The partitions' buffered records and where each stands. Partitions are named ``"topic:partition"``;
    ``next`` is, per partition, the offset after the last record released (what a checkpoint records)."""

    def __init__(self, next_offsets: dict[str, int], end: dict[str, int]) -> None:
        self.next = dict(next_offsets)
        self.fetched_to = dict(next_offsets)  # the consumer's position per partition
        self.end = end
        self.buffers: dict[str, deque[RawRecord]] = {tp: deque() for tp in next_offsets}
        #: per partition with buffered records, its head's key and the partition's name
        self.heap: list[tuple[int, str, int, int, str]] = []

    def finished(self, tp: str) -> bool:
        return self.next[tp] >= self.end[tp] and not self.buffers[tp]

    def fetched_all(self, tp: str) -> bool:
        return self.fetched_to.get(tp, self.next[tp]) >= self.end[tp]

    def needy(self) -> list[str]:
        """The partitions to fetch before more records can be released: nothing buffered, more to read."""
        return [tp for tp, buf in self.buffers.items() if not buf and not self.fetched_all(tp)]

    def add(self, tp: str, batch: Sequence[RawRecord], position: int) -> None:
        """Buffer a fetched batch of ``tp`` (in offset order; records at or past the plan's end are left out)
        with the consumer's position after it."""
        end = self.end[tp]
        records = batch if not batch or batch[-1].offset < end else [r for r in batch if r.offset < end]
        if records:
            buf = self.buffers[tp]
            if not buf:
                head = records[0]
                heapq.heappush(self.heap, (head.timestamp, head.topic, head.partition, head.offset, tp))
            buf.extend(records)
        self.fetched_to[tp] = position

    def release(self, out: list[RawRecord], n: int) -> list[RawRecord]:
        """Append records in merged order to ``out`` until it holds ``n``, or until a partition must be
        fetched again first (``needy``); returns ``out``."""
        heap = self.heap
        if self.needy():
            return out
        while len(out) < n and heap:
            tp = heap[0][4]
            buf = self.buffers[tp]
            # The head goes, and the records after it that still come before every other partition's head,
            # without a heap operation each: records produced together share a timestamp, so a partition's
            # run is often long.
            newest = self._newest_releasable()
            out.append(buf.popleft())
            while buf and len(out) < n and buf[0].timestamp <= newest:
                out.append(buf.popleft())
            self.next[tp] = out[-1].offset + 1
            if buf:
                head = buf[0]  # replaces the partition's entry: one sift instead of a pop and a push
                heapq.heapreplace(heap, (head.timestamp, head.topic, head.partition, head.offset, tp))
            else:
                heapq.heappop(heap)
                if not self.fetched_all(tp):
                    break
        for tp, buf in self.buffers.items():
            if not buf and self.fetched_all(tp):
                self.next[tp] = self.end[tp]  # gaps at the end (compaction, transaction markers)
        return out

    def _newest_releasable(self) -> float:
        """The latest timestamp up to which the first partition's records come before every other partition's
        head (those heads do not move while it releases records)."""
        heap = self.heap
        if len(heap) == 1:
            return math.inf
        second = heap[1] if len(heap) == 2 else min(heap[1], heap[2])
        # Equal timestamps are ordered by (topic, partition), which differ between partitions.
        return second[0] if heap[0][1:3] < second[1:3] else second[0] - 1
