"""The fold: applying one event to a profile state. Pure: no I/O, no clock.

``apply`` mutates the state it is given (the worker folds a batch into a freshly decoded state, so
copying per event would only cost time) and returns whether the event was applied or recognised as a
duplicate. Every update is commutative (counters, integer cents, min/max times, per-bucket sums,
tie-broken "latest" values), which is why the profile does not depend on arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

from profiles.config import BUCKET_RETENTION_HOURS, DAY_MS, FoldConfig
from profiles.dedup import remember
from profiles.ids import repeated_id_hash
from profiles.money import line_cents, to_cents
from profiles.sentiment import NEGATIVE_AT_OR_BELOW, compound_units
from profiles.state import (
    BUCKET_WIDTH,
    CLICK_ACTION_INDEX,
    EMAIL_ACTION_INDEX,
    W_ADD_TO_CARTS,
    W_CHECKOUTS,
    W_CLICKS,
    W_EMAIL_CLICKS,
    W_MENTIONS,
    W_OPENS,
    W_ORDERS,
    W_PRODUCT_VIEWS,
    W_SEARCHES,
    W_SPEND,
    Conflict,
    Merge,
    ProfileState,
    Trait,
)
from profiles.timeutil import bucket_of, to_ms
from schemas.events import (
    AnyEvent,
    ClickEvent,
    EmailEvent,
    IdentifyEvent,
    PurchaseEvent,
    SocialMentionEvent,
)

AFFINITY_WEIGHTS = {"product_view": 1.0, "add_to_cart": 3.0}
PURCHASE_AFFINITY_WEIGHT = 5.0
_TRAIT_NAMES = ("email", "name", "birth_year", "gender", "country", "city", "income_band", "interests", "consent")


@dataclass(frozen=True, slots=True)
class Link:
    """What identity resolution decided for an identify: link its anonymous id, record a conflict, or
    count a link refused because the customer holds as many anonymous ids as it may."""

    anonymous_id: str
    conflict_with: str | None = None
    limited: bool = False


def apply(
    state: ProfileState, event: AnyEvent, config: FoldConfig, link: Link | None = None, email_refused: bool = False
) -> bool:
    """Fold ``event`` into ``state``; False if it is a re-send of a recently applied event. ``link`` and
    ``email_refused``: what identity resolution decided for an identify."""
    if not remember(state, event, config):
        return False
    fold_new(state, event, config, link, email_refused)
    return True


def fold_new(
    state: ProfileState, event: AnyEvent, config: FoldConfig, link: Link | None = None, email_refused: bool = False
) -> None:
    """Fold ``event``, known not to be a re-send, into ``state``: ``apply`` without the duplicate check.

    The models views fold only events that the live fold found new, one entry each (``profiles.models
    .view``); checking them again took 3.8% of a worker's handler time (docs/benchmarks.md).
    """
    ts = to_ms(event.timestamp)
    state.events_applied += 1
    if state.last_event_ms is None or ts > state.last_event_ms:
        state.last_event_ms = ts
    if isinstance(event, ClickEvent):
        _click(state, event, ts, config)
    elif isinstance(event, EmailEvent):
        _email(state, event, ts)
    elif isinstance(event, PurchaseEvent):
        _purchase(state, event, ts, config)
    elif isinstance(event, SocialMentionEvent):
        _mention(state, event, ts)
    else:
        _identify(state, event, ts, config, link=link, email_refused=email_refused)


def _seen(state: ProfileState, ts: int) -> None:
    """A customer-initiated event: it moves first/last seen."""
    if state.first_seen_ms is None or ts < state.first_seen_ms:
        state.first_seen_ms = ts
    if state.last_seen_ms is None or ts > state.last_seen_ms:
        state.last_seen_ms = ts


def _bucket(state: ProfileState, ts: int) -> list[int] | None:
    """The hourly bucket of ``ts``, or None when it is older than the retained 90 days (totals only)."""
    bucket = bucket_of(ts)
    latest = bucket_of(state.last_event_ms) if state.last_event_ms is not None else bucket
    if bucket <= latest - BUCKET_RETENTION_HOURS:
        return None
    counters = state.buckets.get(bucket)
    if counters is None:
        counters = state.buckets[bucket] = [0] * BUCKET_WIDTH
    return counters


def _add_affinity(state: ProfileState, category: str, weight: float, ts: int, config: FoldConfig) -> None:
    ref = state.affinity_ref_ms
    half_life = config.affinity_half_life_ms
    if ref is None:
        ref = state.affinity_ref_ms = ts
    elif ts > ref:
        # Keep scores as of the newest contribution, so adding never raises a tiny number to a huge power.
        factor = 2.0 ** (-(ts - ref) / half_life)
        for name in state.affinity:
            state.affinity[name] *= factor
        ref = state.affinity_ref_ms = ts
    if ts < ref:  # a late contribution, decayed to the reference time (else its factor is exactly 1)
        weight *= 2.0 ** (-(ref - ts) / half_life)
    score = state.affinity.get(category)
    state.affinity[category] = weight if score is None else score + weight
    if score is None and len(state.affinity) > config.affinity_categories_max:
        forget_weakest_categories(state, config)


def forget_weakest_categories(state: ProfileState, config: FoldConfig) -> None:
    """Keep the categories of highest affinity: three quarters of ``affinity_categories_max``, so that a
    profile gaining new categories sorts them once per quarter of the cap, not once per category.

    Without a cap a client that sends a new category with each click (a bot, or a bug that puts a URL or a
    product id in the field) grows the profile by up to ~270 bytes a click, and each newer contribution
    rescales every score. The scores share one reference time, so they compare as they are; ties are kept
    by name, so the same events always keep the same categories.

    >>> from profiles.state import new_profile
    >>> state = new_profile("c-1", "c-1")
    >>> state.affinity = {f"k{n:02}": float(n // 4) for n in range(20)}  # five scores, four categories each
    >>> forget_weakest_categories(state, FoldConfig(affinity_categories_max=12))  # keeps 9
    >>> sorted(state.affinity)
    ['k11', 'k12', 'k13', 'k14', 'k15', 'k16', 'k17', 'k18', 'k19']
    """
    keep = config.affinity_categories_max - config.affinity_categories_max // 4
    state.affinity = dict(sorted(state.affinity.items(), key=lambda item: (item[1], item[0]))[-keep:])


def _click(state: ProfileState, event: ClickEvent, ts: int, config: FoldConfig) -> None:
    _seen(state, ts)
    state.clicks[CLICK_ACTION_INDEX[event.action]] += 1
    session = repeated_id_hash(event.session_id)
    horizon = (state.last_event_ms or ts) - config.session_memory_days * DAY_MS
    last = state.session_seen.get(session)
    if last is None or last < horizon:
        state.sessions += 1
    if last is None or ts > last:
        state.session_seen[session] = ts
        if last is None and len(state.session_seen) > config.session_memory_max:
            forget_oldest_sessions(state, config)
    counters = _bucket(state, ts)
    if counters is not None:
        counters[W_CLICKS] += 1
        if event.action == "product_view":
            counters[W_PRODUCT_VIEWS] += 1
        elif event.action == "add_to_cart":
            counters[W_ADD_TO_CARTS] += 1
        elif event.action == "checkout_start":
            counters[W_CHECKOUTS] += 1
        elif event.action == "search":
            counters[W_SEARCHES] += 1
    weight = AFFINITY_WEIGHTS.get(event.action)
    if weight is not None and event.category:
        _add_affinity(state, event.category, weight, ts, config)


def forget_oldest_sessions(state: ProfileState, config: FoldConfig) -> None:
    """Keep the sessions seen last: three quarters of ``session_memory_max``, so that a profile gaining new
    sessions sorts its memory once per quarter of the cap, not once per session.

    Without a cap a crawler or a client that starts a session per click grows its profile by 18 bytes a
    click for 90 days. Ties are kept by session hash, so the same events always keep the same sessions.

    >>> from profiles.state import new_profile
    >>> state = new_profile("c-1", "c-1")
    >>> state.session_seen = {session: 1_000 + session for session in range(20)}
    >>> forget_oldest_sessions(state, FoldConfig(session_memory_max=16))
    >>> sorted(state.session_seen) == list(range(8, 20))
    True
    """
    keep = config.session_memory_max - config.session_memory_max // 4
    state.session_seen = dict(sorted(state.session_seen.items(), key=lambda item: (item[1], item[0]))[-keep:])


def _email(state: ProfileState, event: EmailEvent, ts: int) -> None:
    state.email_actions[EMAIL_ACTION_INDEX[event.action]] += 1
    if event.action not in ("opened", "clicked"):
        return
    _seen(state, ts)
    counters = _bucket(state, ts)
    if event.action == "opened":
        if state.last_open_ms is None or ts > state.last_open_ms:
            state.last_open_ms = ts
        if counters is not None:
            counters[W_OPENS] += 1
    elif counters is not None:
        counters[W_EMAIL_CLICKS] += 1


def _purchase(state: ProfileState, event: PurchaseEvent, ts: int, config: FoldConfig) -> None:
    cents = to_cents(event.total, event.currency, config)
    sign = 1 if event.action == "order" else -1
    for item in event.items:
        line = line_cents(item.quantity, item.unit_price, event.currency, config)
        state.category_cents[item.category] = state.category_cents.get(item.category, 0) + sign * line
    counters = _bucket(state, ts)
    if counters is not None:
        counters[W_SPEND] += sign * cents
    if event.action == "refund":
        state.refunds += 1
        state.refunded_cents += cents
        return
    _seen(state, ts)
    state.orders += 1
    state.gross_cents += cents
    state.items += sum(item.quantity for item in event.items)
    if state.first_purchase_ms is None or ts < state.first_purchase_ms:
        state.first_purchase_ms = ts
    if state.last_purchase_ms is None or ts > state.last_purchase_ms:
        state.last_purchase_ms = ts
    if counters is not None:
        counters[W_ORDERS] += 1
    for item in event.items:
        _add_affinity(state, item.category, PURCHASE_AFFINITY_WEIGHT * item.quantity, ts, config)


def _mention(state: ProfileState, event: SocialMentionEvent, ts: int) -> None:
    _seen(state, ts)
    score = compound_units(event.text)
    state.mentions += 1
    state.sentiment_sum += score
    if score <= NEGATIVE_AT_OR_BELOW:
        state.negative_mentions += 1
    if state.last_mention_ms is None or (ts, event.event_id) > (state.last_mention_ms, state.last_mention_id):
        state.last_mention_ms, state.last_mention_id, state.last_sentiment = ts, event.event_id, score
    counters = _bucket(state, ts)
    if counters is not None:
        counters[W_MENTIONS] += 1


def _identify(
    state: ProfileState, event: IdentifyEvent, ts: int, config: FoldConfig, *, link: Link | None, email_refused: bool
) -> None:
    _seen(state, ts)
    traits = event.traits
    for name in _TRAIT_NAMES:
        value = getattr(traits, name)
        if value is None:
            continue
        current = state.traits.get(name)
        if current is None or (ts, event.event_id) > (current.updated_ms, current.event_id):
            state.traits[name] = Trait(value, ts, event.event_id)
    if email_refused:
        state.emails_refused += 1
    elif traits.email is not None:
        email = traits.email.lower()
        if email not in state.emails:
            state.emails.append(email)
            state.emails.sort()
    if link is None:
        return
    if link.limited:
        state.links_refused += 1
        return
    if link.conflict_with is not None:
        claim = Conflict(link.anonymous_id, link.conflict_with, ts, event.event_id)
        state.conflicts = combine_conflicts(config.max_anonymous_ids, state.conflicts, [claim])
        return
    if link.anonymous_id not in state.anonymous_ids:
        state.anonymous_ids.append(link.anonymous_id)
        state.anonymous_ids.sort()
    if all(m.anonymous_id != link.anonymous_id for m in state.merged_from):
        state.merged_from.append(Merge(link.anonymous_id, ts, event.event_id))
        state.merged_from.sort(key=lambda m: (m.at_ms, m.event_id))


def combine_conflicts(limit: int, *groups: Iterable[Conflict]) -> list[Conflict]:
    """One entry per anonymous id and the customer holding it, however often it was claimed: a customer who
    logs in every day on a device someone else's login claimed first stays one entry. The entry keeps the
    earliest identify and adds up the attempts; sorted by (event time, event id). Entries written one per
    identify, before attempts were counted, are combined the same way.

    At most ``limit`` entries, the earliest: a support agent's or a test account's login on thousands of
    devices other customers claimed first must not grow its profile without bound. The earliest ``limit``
    of a set do not depend on the order its members come in, so neither do the entries kept; an attempt
    on an id no longer kept, earlier than a kept one, comes back counting from 1.

    >>> a = Conflict("a-1", "c-1", 20, "e2")
    >>> combined = combine_conflicts(9, [a], [Conflict("a-1", "c-1", 10, "e1"), Conflict("a-2", "c-1", 15, "e3")])
    >>> [(c.anonymous_id, c.at_ms, c.event_id, c.attempts) for c in combined]
    [('a-1', 10, 'e1', 2), ('a-2', 15, 'e3', 1)]
    >>> [c.anonymous_id for c in combine_conflicts(1, combined)]
    ['a-1']
    """
    combined: dict[tuple[str, str], Conflict] = {}
    for conflict in chain.from_iterable(groups):
        key = (conflict.anonymous_id, conflict.claimed_by)
        kept = combined.get(key)
        if kept is None:
            combined[key] = conflict
            continue
        first = min(kept, conflict, key=lambda c: (c.at_ms, c.event_id))
        combined[key] = Conflict(*key, first.at_ms, first.event_id, kept.attempts + conflict.attempts)
    return sorted(combined.values(), key=lambda c: (c.at_ms, c.event_id))[:limit]


def compact(state: ProfileState, config: FoldConfig) -> None:
    """Forget what the definition no longer needs: buckets past 90 days, sessions past their memory.

    Called before a profile is stored. Reads already treat these entries as absent, so when compaction
    runs does not change any field.
    """
    if state.last_event_ms is None:
        return
    # The min() checks run in C; most writes have nothing to drop and skip the Python-level scans.
    oldest_bucket = bucket_of(state.last_event_ms) - BUCKET_RETENTION_HOURS
    if state.buckets and min(state.buckets) <= oldest_bucket:
        for bucket in [b for b in state.buckets if b <= oldest_bucket]:
            del state.buckets[bucket]
    horizon = state.last_event_ms - config.session_memory_days * DAY_MS
    if state.session_seen and min(state.session_seen.values()) < horizon:
        for session in [s for s, seen in state.session_seen.items() if seen < horizon]:
            del state.session_seen[session]
