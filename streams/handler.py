"""What a batch handler is given and what it must do: the contract between the runtime and the code that
folds events into Redis.

The handler owns the durable state *and* the durable position (the next offset to read per partition); the
runtime only moves records and Kafka offsets around it. See ``streams.batch_consumer`` for the order in
which the runtime calls these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from services.settings import Settings

#: aiokafka's own record, passed through untouched: building another object per record would cost more
#: than the rest of the runtime. Fields: topic, partition, offset, timestamp (ms), timestamp_type, key and
#: value (``bytes | None``), headers (``Sequence[tuple[str, bytes]]``).
RawRecord: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """Consecutive records of one partition.

    ``start`` is the position the handler's store must be at for this batch to follow on: the ``next offset``
    it returned from ``positions()`` or that the previous batch of the partition ended at. It can be below
    ``records[0].offset`` (offsets are not always contiguous: transaction markers, compaction), never above.
    """

    tp: TP
    start: int
    records: Sequence[RawRecord]
    #: The partition's end (next offset to be written) as the fetch saw it; None if unknown.
    highwater: int | None = None

    @property
    def end(self) -> int:
        """The handler's position once this batch is applied."""
        offset: int = self.records[-1].offset
        return offset + 1

    @property
    def reaches_end(self) -> bool:
        """Whether nothing more was in the partition when it was fetched."""
        return self.highwater is not None and self.end >= self.highwater


@dataclass(frozen=True, slots=True)
class Batch:
    """One fetch: a slice of every partition that had records, all from one consumer-group generation."""

    generation: int
    parts: Mapping[TP, PartitionBatch]


class StalePosition(Exception):  # noqa: N818 - a signal to the runtime, not a failure
    """Raised by ``handle`` when the store's position of some partition is not the batch's ``start``.

    The store was rolled back (Redis lost its last writes) or moved on (an earlier attempt of this batch
    was applied but its reply was lost). The runtime drops the batch, calls ``positions()`` again and
    resumes from there. Nothing of the batch may have been written.
    """

    def __init__(self, partitions: set[TP]) -> None:
        super().__init__(f"store position moved for {sorted(partitions)}")
        self.partitions = partitions


class MustStop(Exception):  # noqa: N818 - a signal to the runtime, not a failure
    """Raised by a handler that must not go on (e.g. its namespace is being dropped): the runtime does not
    retry it, the worker stops with it (exit code 1). Nothing of the call may have been written."""


class BatchHandler(Protocol):
    """Application code run by the batch runtime. Calls never overlap."""

    async def on_assigned(self, partitions: set[TP], generation: int) -> None:
        """The worker owns ``partitions`` from now on (e.g. bump a fencing epoch). Called before ``positions``
        and before any batch of this generation; raising retries it with backoff (``MustStop`` stops the
        worker)."""

    async def positions(self, partitions: set[TP]) -> dict[TP, int]:
        """The next offset to read per partition, from the handler's durable store (written by ``handle`` in
        the same atomic write as the effects). A partition left out resumes from its Kafka committed offset,
        or the earliest offset if none was committed."""
        ...

    async def handle(self, batch: Batch) -> None:
        """Apply the batch durably (one atomic write of effects and positions), then return. Raising
        anything but ``StalePosition`` retries the *same* batch with capped, jittered exponential backoff
        while consumption is paused; a batch is never skipped (bad *data* is the handler's to dead-letter).
        The write must be fenced (e.g. by an epoch bumped in ``on_assigned``): a worker expelled from the
        group during a long pause learns it late and may still be writing."""

    async def on_revoked(self, partitions: set[TP]) -> None:
        """The worker no longer owns ``partitions``; the batch in flight has finished or been abandoned.
        Called once, errors are logged: it must not depend on I/O."""

    async def tick(self, now: float, at_end: Mapping[TP, bool]) -> None:
        """For timers: called between batches about every ``stream.tick_interval_s``, idle or not, once the
        assignment was announced (even an empty one); not during a rebalance or while a batch is retried.
        ``now`` is wall-clock seconds; ``at_end`` says, per owned partition, whether everything fetched so
        far was handled and the partition held nothing more at the last fetch. Raising retries like a batch."""


#: Builds the handler for one worker process; entered when the app starts, exited after its last commit.
HandlerFactory: TypeAlias = Callable[[Settings], AbstractAsyncContextManager[BatchHandler]]
