"""Resolve and apply a stream of events in memory, with the same pure functions as the live stages.

One process, one ordering: each raw event is resolved (claims against an in-memory link table) and the
records it produces are applied at once, in the order they would be appended. That is one of the
orderings the live system can produce, so the profiles must be the same as live ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from profiles.apply import apply_resolved, new_state_for
from profiles.config import FoldConfig
from profiles.fold import compact
from profiles.identity import Arrival, LinkTable, anonymous_only, claims, named_emails, resolve
from profiles.state import ProfileState
from schemas.resolved import Resolved


class OfflineFolder:
    def __init__(self, config: FoldConfig) -> None:
        self.config = config
        self.states: dict[str, ProfileState] = {}
        self.links = LinkTable(config.link_limits)
        self._offsets: dict[str, int] = {}

    def feed(self, arrivals: Iterable[Arrival]) -> None:
        for arrival in arrivals:
            outcomes, accepted = self.links.claim(claims([arrival])), self.links.name(named_emails([arrival]))
            self._apply_all(resolve([arrival], outcomes, accepted, self.links.linked(anonymous_only([arrival]))))

    def profiles(self) -> dict[str, ProfileState]:
        """The live profiles (merged anonymous tombstones left out), compacted as they would be stored."""
        for state in self.states.values():
            compact(state, self.config)
        return {pid: s for pid, s in self.states.items() if s.merged_into is None}

    def _apply_all(self, records: list[Resolved]) -> None:
        queue = deque(records)
        while queue:
            record = queue.popleft()
            state = self.states.get(record.profile_id) or new_state_for(record.profile_id)
            offset = self._offsets.get(record.profile_id, -1) + 1
            self._offsets[record.profile_id] = offset
            state, outputs = apply_resolved(state, record, partition=0, offset=offset, config=self.config)
            self.states[record.profile_id] = state
            queue.extend(outputs)
