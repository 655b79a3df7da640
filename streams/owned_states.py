"""The profiles this worker wrote last, kept decoded between batches.

Decoding and re-encoding every touched profile on every batch was the largest single cost of the apply
stage. A worker owns its partitions, so the state it wrote is the state in Redis — unless someone else
wrote since, which the compare-and-set on the watermark detects. The rules that keep this exact:

- an entry is stored only after its profile's write succeeded, with the watermark it was written at;
- a batch that fails in any way drops every profile it touched (their states were changed in place but
  not written), so its retry starts again from Redis;
- a moved position (Redis lost writes), a revocation or an assignment drops everything.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from profiles.store import ABSENT, ProfileWrite, Stored, watermark_bytes


class OwnedStates:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Stored] = OrderedDict()

    def split(self, profile_ids: Sequence[str]) -> tuple[dict[str, Stored], list[str]]:
        """The cached profiles among ``profile_ids``, and the ids to load from Redis."""
        cached, missing = {}, []
        for pid in profile_ids:
            hit = self._items.get(pid)
            if hit is None:
                missing.append(pid)
            else:
                cached[pid] = hit
                self._items.move_to_end(pid)
        return cached, missing

    def written(self, writes: Iterable[ProfileWrite]) -> None:
        for write in writes:
            if write.state is None:  # deleted (erased): Redis holds nothing, the next write starts from ABSENT
                self._items[write.profile_id] = Stored(-1, None, ABSENT)
            else:
                self._items[write.profile_id] = Stored(
                    write.watermark, write.state, watermark_bytes(write.watermark), write.encoded
                )
            self._items.move_to_end(write.profile_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def drop(self, profile_ids: Iterable[str]) -> None:
        for pid in profile_ids:
            self._items.pop(pid, None)

    def clear(self) -> None:
        self._items.clear()
