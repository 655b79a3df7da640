"""The replay's merge order against an independent k-way merge, whatever the fetches deliver."""

from __future__ import annotations

import heapq
import random

import pytest
from aiokafka.structs import ConsumerRecord

from streams.handler import RawRecord
from streams.replay_order import MergedOrder


def _partitions(rng: random.Random) -> dict[str, list[RawRecord]]:
    """Partitions of two topics whose timestamps tie often and go backwards at times (producers' clocks)."""
    out: dict[str, list[RawRecord]] = {}
    for topic in ("a", "b"):
        for partition in range(rng.randint(1, 4)):
            start, ts = rng.randint(0, 5), rng.randint(0, 20)
            records = []
            for offset in range(start, start + rng.randint(0, 60)):
                ts = max(0, ts + rng.choice([0, 0, 0, 1, 2, -1]))
                records.append(ConsumerRecord(topic, partition, offset, ts, 0, None, b"", None, 0, 0, ()))
            out[f"{topic}:{partition}"] = records
    return out


def _replayed(parts: dict[str, list[RawRecord]], rng: random.Random) -> tuple[list[RawRecord], MergedOrder]:
    """Every record released, fetching in batches of random sizes and taking random amounts at a time."""
    first = {tp: records[0].offset if records else 0 for tp, records in parts.items()}
    end = {tp: records[-1].offset + 1 + rng.randint(0, 2) if records else first[tp] for tp, records in parts.items()}
    order = MergedOrder(first, end)
    fetched = dict.fromkeys(parts, 0)
    out: list[RawRecord] = []
    while True:
        for tp in order.needy():
            size = rng.randint(0, 7)
            batch = parts[tp][fetched[tp] : fetched[tp] + size]
            fetched[tp] += len(batch)
            position = batch[-1].offset + 1 if batch else order.fetched_to[tp]
            if fetched[tp] == len(parts[tp]):
                position = end[tp]  # what is left past the last record: gaps (markers, compaction)
            order.add(tp, batch, position)
        before = len(out)
        order.release(out, len(out) + rng.randint(1, 40))
        if len(out) == before and not order.needy():
            return out, order


def _key(record: RawRecord) -> tuple[int, str, int, int]:
    return record.timestamp, record.topic, record.partition, record.offset


@pytest.mark.parametrize("seed", range(300))
def test_the_release_order_is_the_k_way_merge_of_the_partitions(seed: int) -> None:
    rng = random.Random(seed)
    parts = _partitions(rng)
    expected = list(heapq.merge(*parts.values(), key=_key))
    released, order = _replayed(parts, rng)
    assert [_key(r) for r in released] == [_key(r) for r in expected]
    assert all(order.finished(tp) for tp in parts)
    assert order.next == order.end


def test_nothing_is_released_while_a_partition_with_more_to_read_has_nothing_buffered() -> None:
    record = ConsumerRecord("a", 0, 0, 1, 0, None, b"", None, 0, 0, ())
    order = MergedOrder({"a:0": 0, "a:1": 0}, {"a:0": 1, "a:1": 5})
    order.add("a:0", [record], 1)
    assert order.release([], 10) == []
    order.add("a:1", [], 5)  # nothing left there after all: a gap to the plan's end
    assert order.release([], 10) == [record]
    assert order.next == {"a:0": 1, "a:1": 5}
