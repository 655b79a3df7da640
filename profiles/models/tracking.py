"""The worker's side of the models for one apply batch: snapshots around the fold, labels, and the
event-time watermark's timers. Pure: the caller loads the pending snapshots and the watermark and stores
what this returns.

Per ``events.resolved`` partition the worker keeps an event-time watermark, moved only forward and only
after a batch is folded, to its ``targets`` entry: the caller's promise that no event older than it is still
to be folded in that partition (``profiles.models.progress`` derives it from the progress markers). The
order for one batch:

1. folding each event of a customer profile (``before`` / ``after``, called by ``profiles.apply``): the
   census instants between the profile's last event and this one (after the watermark), then, if the fold
   applied the event, the labels it decides and the activity or email snapshots it triggers;
2. the watermark advance (``advance``), for every profile folded in the batch and every profile whose next
   due time the watermark passed: census instants at or after the profile's last event, up to the new
   watermark, then the examples whose horizon (plus lateness) the watermark passed;
3. ``next_due``: when the profile needs the watermark again (its next census instant or its first
   expiry), for the partition's due index.

This is ``profiles.models.policy``'s loop with a per-partition watermark: each census instant is taken once,
by ``census_before_event`` or by ``census_on_watermark``. Only identified customers are tracked: an
anonymous visitor's profile is handed over when it identifies, and its pending snapshots would have to
follow it (not built).
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import is_not

from profiles.config import FoldConfig
from profiles.models.labels import DEFAULT_LATENESS_MS, Example, Pending, expire, resolve_on_event
from profiles.models.policy import census_before_event, census_instants, census_on_watermark, take_snapshots
from profiles.models.specs import ModelSpec
from profiles.state import ProfileState
from profiles.timeutil import to_ms
from schemas.events import AnyEvent


class ModelTracking:
    """Pending snapshots of the profiles of one batch, and the watermark of each partition."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        config: FoldConfig,
        pending: dict[str, list[Pending]],
        watermarks: dict[int, int],
        *,
        targets: Mapping[int, int] | None = None,
        lateness_ms: int = DEFAULT_LATENESS_MS,
    ) -> None:
        self.specs = specs
        self.config = config
        self.pending = pending
        self.watermarks = watermarks
        self.targets: Mapping[int, int] = targets or {}
        self.lateness_ms = lateness_ms
        self.partition = 0  # the partition of the record being folded (set by the caller)
        self.touched: dict[str, int] = {}  # profile id → partition
        self.dirty: set[str] = set()  # profiles whose pending snapshots changed (to be written)

    def tracked(self, state: ProfileState) -> bool:
        return state.customer_id is not None and state.merged_into is None

    def before(self, state: ProfileState, event: AnyEvent) -> None:
        if not self.tracked(state):
            return
        ts = to_ms(event.timestamp)
        watermark = self.watermarks.get(self.partition, 0)
        taken = census_before_event(state, ts, watermark, self.specs, self.config)
        if taken:
            self.pending.setdefault(state.profile_id, []).extend(taken)
            self.dirty.add(state.profile_id)
        self.touched[state.profile_id] = self.partition

    def after(self, state: ProfileState, event: AnyEvent) -> None:
        """``event`` was applied to ``state``."""
        if not self.tracked(state):
            return
        before = self.pending.get(state.profile_id, [])
        pending = resolve_on_event(before, event, self.specs, self.config)
        pending += take_snapshots(state, event, pending, self.specs, self.config)
        if len(pending) != len(before) or any(map(is_not, pending, before)):
            self.dirty.add(state.profile_id)
        self.pending[state.profile_id] = pending

    def advanced(self) -> dict[int, tuple[int, int]]:
        """Per partition of the batch whose watermark moves: (old, new)."""
        return {
            p: (old, target)
            for p, old in self.watermarks.items()
            if (target := self.targets.get(p)) is not None and target > old
        }

    def advance(self, state: ProfileState, old_ms: int, new_ms: int) -> list[Example]:
        """The watermark of the profile's partition moves from ``old_ms`` to ``new_ms``: census snapshots
        due in between, then the examples whose horizon has passed."""
        pending = self.pending.get(state.profile_id, [])
        taken = census_on_watermark(state, old_ms, new_ms, self.specs, self.config) if self.tracked(state) else []
        examples, kept = expire(pending + taken, new_ms, self.specs, self.lateness_ms)
        if taken or examples:
            self.dirty.add(state.profile_id)
        self.pending[state.profile_id] = kept
        return examples

    def next_due(self, state: ProfileState, watermark_ms: int) -> int | None:
        """When the watermark must next reach this profile: its first expiry or next census instant."""
        due = [p.horizon_end_ms + self.lateness_ms for p in self.pending.get(state.profile_id, [])]
        if self.tracked(state) and state.last_event_ms is not None:
            # census_on_watermark takes the instants at or after the profile's last event
            after = max(watermark_ms, state.last_event_ms - 1)
            for spec in self.specs.values():
                if spec.trigger == "activity":
                    due += census_instants(state.profile_id, spec, after, after + spec.census_every_ms)[:1]
        return min(due, default=None)
