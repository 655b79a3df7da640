"""The worker's side of the models for one apply batch: the customers' models views, snapshots, labels,
and the event-time watermark's timers. Pure: the caller loads the pending snapshots, the views and the
watermarks, and stores what this returns.

Per ``events.resolved`` partition the worker keeps an event-time watermark, moved only forward and only
after a batch is folded, to its ``targets`` entry: the caller's promise that no event older than it is still
to be folded in that partition (``profiles.models.progress`` derives it from the progress markers). The
order for one batch:

1. the fold calls ``before`` / ``after`` around each event it applies to a customer profile, and
   ``handed_over`` before merging a visitor into one: each enters the customer's view
   (``profiles.models.view``);
2. the watermark advance (``advance``), for every customer folded in the batch and every customer whose
   next due time the watermark passed: the view folds its entries up to the new watermark in event-time
   order, taking census, activity and email snapshots and resolving labels on the way, then the examples
   whose horizon (plus lateness) the watermark passed are released;
3. ``next_due``: when the customer needs the watermark again (its next entry, census instant or expiry),
   for the partition's due index.

Only identified customers are tracked: a visitor's events reach the customer's view through its hand-over
and, after the link, one by one. No snapshot is taken of a visitor.
"""

from __future__ import annotations

from collections.abc import Mapping

from profiles.config import FoldConfig
from profiles.models.labels import DEFAULT_LATENESS_MS, Example, Pending, expire
from profiles.models.policy import census_instants
from profiles.models.specs import ModelSpec
from profiles.models.view import (
    ModelView,
    add,
    census_after,
    event_entry,
    fold_until,
    handover_entry,
    new_view,
    next_entry_ms,
    view_of,
)
from profiles.state import ProfileState
from schemas.events import AnyEvent


class ModelTracking:
    """Pending snapshots and views of the customers of one batch, and the watermark of each partition."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        config: FoldConfig,
        pending: dict[str, list[Pending]],
        watermarks: dict[int, int],
        *,
        views: dict[str, ModelView] | None = None,
        targets: Mapping[int, int] | None = None,
        lateness_ms: int = DEFAULT_LATENESS_MS,
    ) -> None:
        self.specs = specs
        self.config = config
        self.pending = pending
        self.views: dict[str, ModelView] = {} if views is None else views
        self.watermarks = watermarks
        self.targets: Mapping[int, int] = targets or {}
        self.lateness_ms = lateness_ms
        self.partition = 0  # the partition of the record being folded (set by the caller)
        self.touched: dict[str, int] = {}  # profile id → partition
        self.dirty: set[str] = set()  # customers whose pending snapshots or view changed (to be written)

    def tracked(self, state: ProfileState) -> bool:
        return state.customer_id is not None and state.merged_into is None

    def _view(self, live: ProfileState) -> ModelView:
        """The customer's view, from the live profile before it changes if the customer has none yet."""
        pid = live.profile_id
        view = self.views.get(pid)
        if view is None:
            if live.last_event_ms is None:
                view = new_view(pid)
            else:
                watermark = self.watermarks.get(self.partition, 0)
                view = view_of(live, max(watermark, live.last_event_ms - 1))
            self.views[pid] = view
        self.touched[pid] = self.partition
        self.dirty.add(pid)
        return view

    def before(self, state: ProfileState, event: AnyEvent) -> None:
        if self.tracked(state):
            self._view(state)

    def after(self, state: ProfileState, event: AnyEvent, payload: bytes) -> None:
        """``event`` (``payload``: its JSON) was applied to ``state``."""
        if self.tracked(state):
            view, pid = self._view(state), state.profile_id
            self.pending[pid] = add(
                view, event_entry(state, event, payload), self.pending.get(pid, []), self.specs, self.config
            )

    def handed_over(self, state: ProfileState, visitor_id: str, visitor_state: bytes) -> None:
        """The visitor ``visitor_id`` is about to be merged into ``state``."""
        if self.tracked(state):
            view, pid = self._view(state), state.profile_id
            entry = handover_entry(state, visitor_id, visitor_state)
            self.pending[pid] = add(view, entry, self.pending.get(pid, []), self.specs, self.config)

    def advanced(self) -> dict[int, tuple[int, int]]:
        """Per partition of the batch whose watermark moves: (old, new)."""
        return {
            p: (old, target)
            for p, old in self.watermarks.items()
            if (target := self.targets.get(p)) is not None and target > old
        }

    def advance(self, profile_id: str, watermark_ms: int) -> list[Example]:
        """The watermark of the customer's partition is at ``watermark_ms``: its view folds what that
        passed, then the examples whose horizon has passed are released."""
        view = self.views.get(profile_id)
        pending = self.pending.get(profile_id, [])
        if view is not None:
            pending = fold_until(view, watermark_ms, pending, self.specs, self.config)
        examples, kept = expire(pending, watermark_ms, self.specs, self.lateness_ms)
        self.pending[profile_id] = kept
        self.dirty.add(profile_id)
        return examples

    def next_due(self, profile_id: str) -> int | None:
        """When the watermark must next reach this customer: its next entry, census instant or expiry."""
        due = [p.horizon_end_ms + self.lateness_ms for p in self.pending.get(profile_id, [])]
        view = self.views.get(profile_id)
        if view is not None:
            entry = next_entry_ms(view)
            if entry is not None:
                due.append(entry)
            after = census_after(view)
            if after is not None:
                for spec in self.specs.values():
                    if spec.trigger == "activity":
                        due += census_instants(profile_id, spec, after, after + spec.census_every_ms)[:1]
        return min(due, default=None)

    def forget(self, profile_id: str) -> None:
        """The customer was erased: its snapshots and view go."""
        self.pending[profile_id] = []
        self.views.pop(profile_id, None)
        self.dirty.add(profile_id)
