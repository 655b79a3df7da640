"""When prediction snapshots are taken. Pure: the worker calls these around its fold and on its timers.

Three kinds of moments, all in event time:

- **activity** (purchase, churn, CLV): after the fold applies a customer-initiated event that is the
  profile's newest, unless the customer already has an activity snapshot of that model less than
  ``activity_gap_ms`` old (a day; a week for CLV). These follow the customer where the action is.
- **census** (the same three models): every customer, once per ``census_every_ms``, at instants
  ``phase + k × census_every_ms`` where the phase is a hash of the profile (the same for every model, so
  that the models' census instants coincide — the periods are multiples of each other — and share one
  computation of the features, which is most of a snapshot's cost): also the quiet and the
  lapsed, so the learner sees long inactivity, which activity snapshots (taken at the moment of an
  activity) never show, and the training population looks like the served one.
- **email_sent** (email open): when the fold applies a ``sent`` email event that is the profile's newest.

Whether a snapshot is taken depends only on what is known at its instant (never on what follows), so the
selection cannot bias the label given the features. A snapshot is only taken from a state that holds no
event after its instant (``features`` refuses otherwise): the worker takes them from the customer's models
view (``profiles.models.view``), which folds the customer's events in event-time order as the watermark
passes them, census instants between them, so that which snapshots are taken, and from what, does not
depend on the order the events arrived in. Per event of a customer, in event-time order
(``pending``: the customer's pending snapshots):

>>> from datetime import datetime, UTC
>>> from profiles.fold import apply
>>> from profiles.state import new_profile
>>> from profiles.models.specs import default_specs
>>> from profiles.models.labels import resolve_on_event
>>> from schemas.events import PurchaseEvent
>>> specs, config, state, pending = default_specs(), FoldConfig(), new_profile("c", "c"), []
>>> event = PurchaseEvent(event_id="o-1", customer_id="c", timestamp=datetime(2025, 3, 1, tzinfo=UTC),
...                       action="order", order_id="o-1", currency="EUR", total=20.0)
>>> if apply(state, event, config):
...     pending = resolve_on_event(pending, event, specs, config)
...     pending += take_snapshots(state, event, pending, specs, config)
>>> sorted(p.model for p in pending)
['churn_risk', 'clv_90d', 'purchase_propensity']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from profiles.config import FoldConfig
from profiles.features import features
from profiles.ids import id_hash
from profiles.models.labels import Pending, SnapshotTrigger, is_activity, snapshot_id
from profiles.models.specs import ModelSpec
from profiles.models.vectors import FeatureVector
from profiles.state import ProfileState
from profiles.timeutil import to_ms
from schemas.events import AnyEvent, EmailEvent

#: A customer's census instants are looked up at every run of its events folded: hash each id once.
_profile_hash = lru_cache(maxsize=1 << 14)(id_hash)


def snapshot(
    state: ProfileState,
    spec: ModelSpec,
    trigger: SnapshotTrigger,
    at_ms: int,
    feats: FeatureVector,
    *,
    message_id: str | None = None,
) -> Pending:
    """A pending snapshot of ``feats`` (the features of ``state`` at ``at_ms``) for ``spec``."""
    return Pending(
        snapshot_id=snapshot_id(spec.name, state.profile_id, trigger, at_ms, message_id or ""),
        model=spec.name,
        profile_id=state.profile_id,
        trigger=trigger,
        taken_at_ms=at_ms,
        horizon_end_ms=at_ms + spec.horizon_ms,
        features=feats,
        message_id=message_id,
    )


def latest_activity(pending: Iterable[Pending]) -> dict[str, int]:
    """Per model, the instant of its newest activity snapshot among ``pending``."""
    latest: dict[str, int] = {}
    for p in pending:
        if p.trigger == "activity" and p.taken_at_ms > latest.get(p.model, p.taken_at_ms - 1):
            latest[p.model] = p.taken_at_ms
    return latest


def take_snapshots(
    state: ProfileState,
    event: AnyEvent,
    pending: Sequence[Pending],
    specs: Mapping[str, ModelSpec],
    config: FoldConfig,
    *,
    latest: dict[str, int] | None = None,
) -> list[Pending]:
    """The activity and email snapshots due after the fold applied ``event`` to ``state``.

    Nothing is taken for an event older than the profile's newest (a late event): the state already holds
    what came after it. Taking again for a redelivered event adds nothing (ids are deterministic).
    ``latest`` is ``latest_activity(pending)``, kept by a caller taking snapshots event after event (this
    updates it), so that the pending snapshots are not scanned for every event.
    """
    ts = to_ms(event.timestamp)
    if state.last_event_ms != ts:
        return []
    activity = is_activity(event)
    if latest is None:
        latest = latest_activity(pending) if activity else {}
    out: list[Pending] = []
    feats: FeatureVector | None = None
    for spec in specs.values():
        if spec.trigger == "activity" and activity:
            newest = latest.get(spec.name)
            if newest is not None and newest > ts - spec.activity_gap_ms:
                continue
            feats = feats if feats is not None else FeatureVector.of(features(state, ts, config))
            candidate = snapshot(state, spec, "activity", ts, feats)
            latest[spec.name] = max(ts, newest) if newest is not None else ts
        elif spec.trigger == "email_sent" and isinstance(event, EmailEvent) and event.action == "sent":
            feats = feats if feats is not None else FeatureVector.of(features(state, ts, config))
            candidate = snapshot(state, spec, "email_sent", ts, feats, message_id=event.message_id)
        else:
            continue
        if all(p.snapshot_id != candidate.snapshot_id for p in pending):
            out.append(candidate)
    return out


def census_instants(profile_id: str, spec: ModelSpec, after_ms: int, until_ms: int) -> list[int]:
    """The profile's census instants for ``spec`` in ``(after_ms, until_ms]``.

    >>> from profiles.models.specs import default_specs
    >>> spec = default_specs()["purchase_propensity"]
    >>> week = spec.census_every_ms
    >>> found = census_instants("c-1", spec, 0, 3 * week)
    >>> len(found), [b - a for a, b in zip(found, found[1:])] == [week, week]
    (3, True)
    """
    every = spec.census_every_ms
    first = after_ms + 1 + (_profile_hash(profile_id) % every - after_ms - 1) % every
    return list(range(first, until_ms + 1, every)) if first <= until_ms else []


def census_between(
    state: ProfileState, after_ms: int, until_ms: int, specs: Mapping[str, ModelSpec], config: FoldConfig
) -> list[Pending]:
    """Census snapshots of ``state`` at its instants in ``(after_ms, until_ms]`` (the caller makes sure none
    is before the state's latest event)."""
    out: list[Pending] = []
    by_instant: dict[int, FeatureVector] = {}
    for spec in specs.values():
        if spec.trigger != "activity":
            continue
        for at in census_instants(state.profile_id, spec, after_ms, until_ms):
            feats = by_instant.get(at)
            if feats is None:
                feats = by_instant[at] = FeatureVector.of(features(state, at, config))
            out.append(snapshot(state, spec, "census", at, feats))
    return out
