"""Delayed labels: pending prediction snapshots, their resolution by outcomes, their release as examples.

A pending snapshot holds the features of one customer at ``taken_at`` for one model, and waits for the
outcome over its horizon ``(taken_at, horizon_end]``. Two things happen to it, both by event time only:

- ``resolve_on_events``: the applied events of the customer inside the horizon record what they decide (an
  order: purchase positive; any activity: not churned; an open of the email: opened) or add to the
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

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
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
    a duplicate must not add its spend twice): ``resolve_on_events`` with one event."""
    return resolve_on_events(pending, [event], specs, config)


def resolve_on_events(
    pending: Sequence[Pending], events: Iterable[AnyEvent], specs: Mapping[str, ModelSpec], config: FoldConfig
) -> list[Pending]:
    """The customer's pending snapshots after its applied ``events``, in any order: each snapshot keeps the
    earliest deciding event inside its horizon and sums the spend there, so applying events one at a time
    or all at once, in whatever order, gives the same snapshots. Snapshots of unknown models are kept
    unchanged, and so is a snapshot no event changes (the same object: the caller writes only what changed).

    Why at once: a customer holds dozens of pending snapshots (horizons of up to 90 days overlap), and the
    models view folds a customer's events in runs; matching each run's outcomes to each snapshot by
    bisection replaces a pass over every snapshot per event.

    >>> from datetime import datetime, UTC
    >>> from profiles.models.specs import default_specs
    >>> from profiles.models.vectors import FeatureVector
    >>> specs, config = default_specs(), FoldConfig()
    >>> def order(n, day, total):
    ...     return PurchaseEvent(event_id=f"o-{n}", customer_id="c", timestamp=datetime(2025, 3, day, tzinfo=UTC),
    ...                          action="order", order_id=f"o-{n}", currency="EUR", total=total)
    >>> taken, ends = to_ms(datetime(2025, 3, 2, tzinfo=UTC)), to_ms(datetime(2025, 6, 1, tzinfo=UTC))
    >>> clv = Pending(snapshot_id="s", model="clv_90d", profile_id="c", trigger="census", taken_at_ms=taken,
    ...               horizon_end_ms=ends, features=FeatureVector((), b""))
    >>> events = [order(1, 1, 5.0), order(2, 9, 20.0), order(3, 3, 7.5)]
    >>> resolve_on_events([clv], events, specs, config)[0].spend_cents  # the order on day 1 is before it
    2750
    """
    found = _Outcomes(events, config)
    out = list(pending)
    if found.empty:
        return out
    for i, p in enumerate(out):
        spec = specs.get(p.model)
        if spec is None:
            continue
        if spec.outcome == "net_spend":
            cents = found.spend_within(p.taken_at_ms, p.horizon_end_ms)
            if cents is not None:
                out[i] = replace(p, spend_cents=p.spend_cents + cents)
            continue
        if spec.outcome == "open":
            times = found.opens.get(p.message_id) if p.message_id is not None else None
        else:
            times = found.orders if spec.outcome == "order" else found.activity
        first = _first_within(times, p.taken_at_ms, p.horizon_end_ms) if times else None
        if first is None or (p.decided and p.decided_at_ms is not None and p.decided_at_ms <= first):
            continue  # nothing decides it here, or an earlier event did
        earliest = first if p.decided_at_ms is None else min(first, p.decided_at_ms)
        out[i] = replace(p, decided=True, decided_at_ms=earliest)
    return out


class _Outcomes:
    """What a run of a customer's events decides, as sorted event times: orders, activity, opens per
    email, and the net spend (orders − refunds) with running sums."""

    def __init__(self, events: Iterable[AnyEvent], config: FoldConfig) -> None:
        self.orders: list[int] = []
        self.activity: list[int] = []
        self.opens: dict[str, list[int]] = {}
        spend: list[tuple[int, int]] = []
        for event in events:
            ts = to_ms(event.timestamp)
            if isinstance(event, PurchaseEvent):
                cents = to_cents(event.total, event.currency, config)
                spend.append((ts, cents if event.action == "order" else -cents))
                if event.action == "order":
                    self.orders.append(ts)
            if is_activity(event):
                self.activity.append(ts)
            # a click implies an open the ESP may not have reported
            if isinstance(event, EmailEvent) and event.action in ("opened", "clicked"):
                self.opens.setdefault(event.message_id, []).append(ts)
        self.orders.sort()
        self.activity.sort()
        for times in self.opens.values():
            times.sort()
        spend.sort()
        self.spend_times = [ts for ts, _ in spend]
        self.spend_sums = list(accumulate((cents for _, cents in spend), initial=0))
        self.empty = not (self.activity or self.spend_times or self.opens)

    def spend_within(self, after_ms: int, until_ms: int) -> int | None:
        """The net spend of the orders and refunds in ``(after_ms, until_ms]``; None if there are none."""
        lo, hi = bisect_right(self.spend_times, after_ms), bisect_right(self.spend_times, until_ms)
        return self.spend_sums[hi] - self.spend_sums[lo] if hi > lo else None


def _first_within(times: Sequence[int], after_ms: int, until_ms: int) -> int | None:
    """The earliest of the sorted ``times`` in ``(after_ms, until_ms]``."""
    i = bisect_right(times, after_ms)
    return times[i] if i < len(times) and times[i] <= until_ms else None


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
