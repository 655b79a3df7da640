"""The worker's side of the models for one apply batch: the customers' entries, their models views, the
snapshots and labels, and the event-time watermark's timers. Pure: the caller loads what a step needs and
stores what it returns.

Per ``events.resolved`` partition the worker keeps an event-time watermark, moved only forward and only
after a batch is folded, to its ``targets`` entry: the caller's promise that no event older than it is still
to be folded in that partition (``profiles.models.progress`` derives it from the progress markers). The
order for one batch:

1. the fold calls ``before`` / ``after`` around each event it applies to a customer profile, and
   ``handed_over`` before merging a visitor into one: each becomes an entry of the customer's
   (``profiles.models.view``), appended to its stored entries; nothing is loaded for it;
2. the watermark advance: every customer whose due time the watermark passed (the due index) is folded
   (``fold``): its view folds its entries up to the new watermark in event-time order, taking census,
   activity and email snapshots and resolving labels on the way, then the examples whose horizon (plus
   lateness) the watermark passed are released;
3. ``fold``'s due time, and ``entry_due`` for a customer that only got entries, for the due index.

Only identified customers are tracked: a visitor's events reach the customer's view through its hand-over
and, after the link, one by one. No snapshot is taken of a visitor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from profiles.config import FoldConfig
from profiles.models.labels import DEFAULT_LATENESS_MS, Example, Pending, expire
from profiles.models.specs import ModelSpec
from profiles.models.view import (
    Entry,
    ModelView,
    event_entry,
    fold_until,
    handover_entry,
    new_view,
    next_due,
)
from profiles.state import ProfileState
from schemas.events import AnyEvent


@dataclass
class Folded:
    """One customer after ``ModelTracking.fold``: what to store, and when it is due next."""

    examples: list[Example]
    pending: list[Pending]
    view: ModelView
    entries: list[Entry]  # the entries given to ``fold`` that are still after the watermark
    due: int | None


class ModelTracking:
    """The entries of one batch's customers, and the watermark of each partition."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        config: FoldConfig,
        watermarks: dict[int, int],
        *,
        targets: Mapping[int, int] | None = None,
        lateness_ms: int = DEFAULT_LATENESS_MS,
    ) -> None:
        self.specs = specs
        self.config = config
        self.watermarks = watermarks
        self.targets: Mapping[int, int] = targets or {}
        self.lateness_ms = lateness_ms
        # A snapshot's horizon ends no earlier than this after its instant: folding may wait that long.
        self.fold_delay_ms = min((s.horizon_ms for s in specs.values()), default=0)
        self.partition = 0  # the partition of the record being folded (set by the caller)
        self.touched: dict[str, int] = {}  # customer id → partition
        self.entries: dict[str, list[Entry]] = {}  # the batch's new entries per customer
        self.new_views: dict[str, ModelView] = {}  # customers seen for the first time in this batch

    def tracked(self, state: ProfileState) -> bool:
        return state.customer_id is not None and state.merged_into is None

    def _touch(self, live: ProfileState) -> None:
        pid = live.profile_id
        self.touched[pid] = self.partition
        if live.last_event_ms is None and live.events_applied == 0 and pid not in self.new_views:
            self.new_views[pid] = new_view(pid)

    def before(self, state: ProfileState, event: AnyEvent) -> None:
        if self.tracked(state):
            self._touch(state)

    def after(self, state: ProfileState, event: AnyEvent, payload: bytes) -> None:
        """``event`` (``payload``: its JSON) was applied to ``state``."""
        if self.tracked(state):
            self.entries.setdefault(state.profile_id, []).append(event_entry(state, event, payload))

    def handed_over(self, state: ProfileState, visitor_id: str, visitor_state: bytes) -> None:
        """The visitor ``visitor_id`` is about to be merged into ``state``."""
        if self.tracked(state):
            self._touch(state)
            self.entries.setdefault(state.profile_id, []).append(handover_entry(state, visitor_id, visitor_state))

    def advanced(self) -> dict[int, tuple[int, int]]:
        """Per partition of the batch whose watermark moves: (old, new)."""
        return {
            p: (old, target)
            for p, old in self.watermarks.items()
            if (target := self.targets.get(p)) is not None and target > old
        }

    def entry_due(self, profile_id: str) -> int | None:
        """When the watermark must reach a customer for the entries this batch gave it."""
        found = self.entries.get(profile_id)
        return min(e.at_ms for e in found) + self.fold_delay_ms if found else None

    def fold(
        self,
        view: ModelView,
        stored: Sequence[Entry],
        pending: list[Pending],
        watermark_ms: int,
        *,
        later_ms: int | None = None,
    ) -> Folded:
        """The watermark of the customer's partition is at ``watermark_ms``: its view folds its stored
        entries and this batch's up to there, then the examples whose horizon has passed are released.
        ``later_ms``: the entry time of the first stored entry after the watermark, if it was not loaded."""
        entries = [*stored, *self.entries.get(view.state.profile_id, [])]
        pending, rest = fold_until(view, entries, pending, until_ms=watermark_ms, specs=self.specs, config=self.config)
        examples, kept = expire(pending, watermark_ms, self.specs, self.lateness_ms)
        entry_times = [e.at_ms for e in rest] + ([] if later_ms is None else [later_ms])
        due = next_due(
            view, entry_times, kept, specs=self.specs, fold_delay_ms=self.fold_delay_ms, lateness_ms=self.lateness_ms
        )
        return Folded(examples, kept, view, rest, due)
