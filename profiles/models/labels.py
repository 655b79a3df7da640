"""Delayed labels: pending prediction snapshots, their resolution by outcomes, their release as examples.

A pending snapshot holds the features of one customer at ``taken_at`` for one model, and waits for the
outcome over its horizon ``(taken_at, horizon_end]``. Two things happen to it, both by event time only:

- ``resolve_on_event``: an applied event of the customer inside the horizon records what it decides (an
  order: purchase positive; any activity: not churned; an open of the email: opened) or adds to the
  spend; the earliest deciding event time is kept, so the result does not depend on arrival order;
- ``expire``: once the event-time watermark passes ``horizon_end + lateness``, the snapshot becomes an
  example with its final label (no order: 0; no activity: churned; the spend sum).

**Every example waits until its horizon ends**, positives included, and examples are released in order of
``(horizon_end, snapshot_id)``. Releasing a positive as soon as its outcome happens would feed the
learner positives days (for CLV months) ahead of the negatives taken at the same moment: the recent stream
would be enriched with positives, the online model's intercept would drift up, and the rolling metrics
would be computed on a different mix than the one served. Waiting makes the example stream the plain
sequence of snapshots by horizon end, whatever their label, and makes it a function of the snapshots and
the events only: a replay by event-time watermark releases the same examples with the same labels.
The price is latency: a purchase positive reaches the learner after at most H (7 days) instead of at once.

No leakage: a snapshot's features only contain events at or before ``taken_at`` (``policy`` enforces
it), and its label only events after it, so ``taken_at < label_known`` on every example.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import msgspec
from msgspec import Struct
from msgspec.structs import replace

from profiles.config import HOUR_MS, FoldConfig
from profiles.models.specs import ModelSpec
from profiles.models.vectors import FeatureVector
from profiles.money import to_cents
from profiles.timeutil import to_ms
from schemas.events import AnyEvent, ClickEvent, EmailEvent, IdentifyEvent, PurchaseEvent, SocialMentionEvent

#: How long after a horizon ends a late outcome event still counts (the pending snapshot's Redis TTL is
#: its horizon plus this plus a margin).
DEFAULT_LATENESS_MS: Final = HOUR_MS

SnapshotTrigger = Literal["activity", "census", "email_sent"]


class Pending(Struct, array_like=True, frozen=True, kw_only=True):
    """A prediction snapshot waiting for its label."""

    snapshot_id: str
    model: str
    profile_id: str
    trigger: SnapshotTrigger
    taken_at_ms: int
    horizon_end_ms: int
    features: FeatureVector
    message_id: str | None = None  # email_open: the email whose opening is the outcome
    decided: bool = False  # a deciding outcome happened inside the horizon (order, activity, open)
    decided_at_ms: int | None = None  # the earliest such event time
    spend_cents: int = 0  # net_spend: Σ orders − refunds inside the horizon


class Example(Struct, array_like=True, frozen=True, kw_only=True):
    """A labelled example for ``models.examples``: the features at ``taken_at`` and the outcome after it."""

    example_id: str  # the snapshot id: consumers de-duplicate redeliveries by it
    model: str
    profile_id: str
    trigger: SnapshotTrigger
    taken_at_ms: int
    horizon_end_ms: int
    label_known_ms: int  # event time the label became known: the deciding event, or the horizon's end
    features: dict[str, float]
    label: float


def snapshot_id(model: str, profile_id: str, trigger: SnapshotTrigger, taken_at_ms: int, key: str = "") -> str:
    """Deterministic, so that a replay takes snapshots with the same ids.

    >>> snapshot_id("churn_risk", "c-1", "census", 86400000)
    'churn_risk|c-1|census|86400000|'
    """
    return f"{model}|{profile_id}|{trigger}|{taken_at_ms}|{key}"


def is_activity(event: AnyEvent) -> bool:
    """Customer-initiated: the events that move ``last_seen`` (``docs/profile.md``).

    >>> from datetime import datetime, UTC
    >>> at = datetime(2025, 1, 1, tzinfo=UTC)
    >>> is_activity(EmailEvent(event_id="e", customer_id="c", timestamp=at, action="delivered",
    ...                        campaign_id="k", message_id="m"))
    False
    """
    if isinstance(event, EmailEvent):
        return event.action in ("opened", "clicked")
    if isinstance(event, PurchaseEvent):
        return event.action == "order"
    return isinstance(event, ClickEvent | SocialMentionEvent | IdentifyEvent)


def resolve_on_event(
    pending: Sequence[Pending], event: AnyEvent, specs: Mapping[str, ModelSpec], config: FoldConfig
) -> list[Pending]:
    """The customer's pending snapshots after one of its events (call it only for events the fold applied:
    a duplicate must not add its spend twice). Snapshots of unknown models are kept unchanged, and so is a
    snapshot the event does not change (the same object: the caller writes only what changed).

    This runs for every event of a tracked customer over all its pending snapshots (dozens: horizons of up
    to 90 days overlap), so what the event decides is worked out once, not per snapshot."""
    moved = _outcomes_moved(event)
    out = list(pending)
    models = {name for name, spec in specs.items() if spec.outcome in moved}
    if not models:
        return out
    ts = to_ms(event.timestamp)
    # open: an open of this very email (a click implies an open the ESP may not have reported)
    opened = event.message_id if "open" in moved and isinstance(event, EmailEvent) else None
    for i, p in enumerate(out):
        if p.model not in models or not p.taken_at_ms < ts <= p.horizon_end_ms:
            continue
        outcome = specs[p.model].outcome
        if outcome == "net_spend":
            out[i] = _spend(p, event, config)
        elif outcome == "open" and opened != p.message_id:
            continue
        elif not p.decided or p.decided_at_ms is None or p.decided_at_ms > ts:  # else: an earlier event decided it
            first = ts if p.decided_at_ms is None else min(ts, p.decided_at_ms)
            out[i] = replace(p, decided=True, decided_at_ms=first)
    return out


def _outcomes_moved(event: AnyEvent) -> frozenset[str]:
    """The outcomes an event can decide or change (``ModelSpec.outcome``).

    >>> from datetime import datetime, UTC
    >>> at = datetime(2025, 1, 1, tzinfo=UTC)
    >>> sorted(_outcomes_moved(EmailEvent(event_id="e", customer_id="c", timestamp=at, action="clicked",
    ...                                   campaign_id="k", message_id="m")))
    ['no_activity', 'open']
    """
    moved: set[str] = set()
    if isinstance(event, PurchaseEvent):
        moved.add("net_spend")
        if event.action == "order":
            moved.add("order")
    if is_activity(event):
        moved.add("no_activity")
    if isinstance(event, EmailEvent) and event.action in ("opened", "clicked"):
        moved.add("open")
    return frozenset(moved)


def _spend(p: Pending, event: AnyEvent, config: FoldConfig) -> Pending:
    if not isinstance(event, PurchaseEvent):
        return p
    cents = to_cents(event.total, event.currency, config)
    return replace(p, spend_cents=p.spend_cents + (cents if event.action == "order" else -cents))


def expire(
    pending: Iterable[Pending],
    watermark_ms: int,
    specs: Mapping[str, ModelSpec],
    lateness_ms: int = DEFAULT_LATENESS_MS,
) -> tuple[list[Example], list[Pending]]:
    """Examples for the snapshots whose horizon (plus ``lateness_ms``) the event-time watermark has passed,
    in release order, and the snapshots still pending. Snapshots of a model no longer specified are dropped.

    ``watermark_ms`` is the worker's event-time watermark: no event older than it is expected any more.
    """
    released: list[Example] = []
    kept: list[Pending] = []
    for p in pending:
        spec = specs.get(p.model)
        if spec is None:
            continue
        if p.horizon_end_ms + lateness_ms > watermark_ms:
            kept.append(p)
            continue
        label, known = _label(spec, p)
        released.append(
            Example(
                example_id=p.snapshot_id,
                model=p.model,
                profile_id=p.profile_id,
                trigger=p.trigger,
                taken_at_ms=p.taken_at_ms,
                horizon_end_ms=p.horizon_end_ms,
                label_known_ms=known,
                features=p.features.as_dict(),
                label=label,
            )
        )
    released.sort(key=lambda e: (e.horizon_end_ms, e.example_id))
    return released, kept


def _label(spec: ModelSpec, p: Pending) -> tuple[float, int]:
    """The final label and when it became known."""
    if spec.outcome == "net_spend":
        return max(0, p.spend_cents) / 100, p.horizon_end_ms
    known = p.decided_at_ms if p.decided_at_ms is not None else p.horizon_end_ms
    if spec.outcome == "no_activity":
        return (0.0 if p.decided else 1.0), known
    return (1.0 if p.decided else 0.0), known


#: The Kafka header naming the namespace whose worker sent an example: every namespace's worker sends its
#: own, and a namespace's trainer learns only those (records without it predate the header).
NAMESPACE_HEADER: Final = "rapport-namespace"

_EXAMPLE_ENCODER: Final = msgspec.msgpack.Encoder()
_EXAMPLE_DECODER: Final = msgspec.msgpack.Decoder(Example)


def encode_example(example: Example) -> bytes:
    """A ``models.examples`` record's value (msgpack, positional).

    >>> e = Example(example_id="x", model="email_open", profile_id="c-1", trigger="email_sent", taken_at_ms=1,
    ...             horizon_end_ms=2, label_known_ms=2, features={"f": 1.0}, label=0.0)
    >>> decode_example(encode_example(e)) == e
    True
    """
    return _EXAMPLE_ENCODER.encode(example)


def decode_example(value: bytes) -> Example:
    """Raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` for anything else."""
    return _EXAMPLE_DECODER.decode(value)
