"""Merging an anonymous profile into the customer profile it was linked to. Pure."""

from __future__ import annotations

from profiles.config import FoldConfig
from profiles.dedup import merge_memories
from profiles.fold import combine_conflicts, forget_oldest_sessions, forget_weakest_categories
from profiles.state import ProfileState


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def merge_into(target: ProfileState, source: ProfileState, config: FoldConfig) -> None:
    """Add everything ``source`` counted to ``target``, as if its events had been applied there.

    Merge history (``merged_from``) is written by the identify that caused the link, not here, so that
    a merge and its identify can arrive in either order. Offsets are not merged: the source's watermark
    belongs to a different partition.
    """
    for anonymous_id in source.anonymous_ids:
        if anonymous_id not in target.anonymous_ids:
            target.anonymous_ids.append(anonymous_id)
    target.anonymous_ids.sort()
    target.emails = sorted(set(target.emails) | set(source.emails))
    for name, trait in source.traits.items():
        current = target.traits.get(name)
        if current is None or (trait.updated_ms, trait.event_id) > (current.updated_ms, current.event_id):
            target.traits[name] = trait
    target.conflicts = combine_conflicts(config.max_anonymous_ids, target.conflicts, source.conflicts)
    target.links_refused += source.links_refused
    target.emails_refused += source.emails_refused

    target.clicks = [a + b for a, b in zip(target.clicks, source.clicks, strict=True)]
    target.sessions += source.sessions
    for session, seen in source.session_seen.items():
        # A session seen in both profiles was counted twice; count it once.
        if session in target.session_seen:
            target.sessions -= 1
        target.session_seen[session] = max(seen, target.session_seen.get(session, seen))
    if len(target.session_seen) > config.session_memory_max:
        forget_oldest_sessions(target, config)
    target.first_seen_ms = _min(target.first_seen_ms, source.first_seen_ms)
    target.last_seen_ms = _max(target.last_seen_ms, source.last_seen_ms)

    target.orders += source.orders
    target.refunds += source.refunds
    target.gross_cents += source.gross_cents
    target.refunded_cents += source.refunded_cents
    target.items += source.items
    target.first_purchase_ms = _min(target.first_purchase_ms, source.first_purchase_ms)
    target.last_purchase_ms = _max(target.last_purchase_ms, source.last_purchase_ms)
    for category, cents in source.category_cents.items():
        target.category_cents[category] = target.category_cents.get(category, 0) + cents

    target.email_actions = [a + b for a, b in zip(target.email_actions, source.email_actions, strict=True)]
    target.last_open_ms = _max(target.last_open_ms, source.last_open_ms)

    target.mentions += source.mentions
    target.sentiment_sum += source.sentiment_sum
    target.negative_mentions += source.negative_mentions
    if source.last_mention_ms is not None and (
        target.last_mention_ms is None
        or (source.last_mention_ms, source.last_mention_id) > (target.last_mention_ms, target.last_mention_id)
    ):
        target.last_mention_ms = source.last_mention_ms
        target.last_mention_id = source.last_mention_id
        target.last_sentiment = source.last_sentiment

    _merge_affinity(target, source, config)
    for bucket, counters in source.buckets.items():
        mine = target.buckets.get(bucket)
        target.buckets[bucket] = (
            list(counters) if mine is None else [a + b for a, b in zip(mine, counters, strict=True)]
        )
    merge_memories(target, source, config)
    for stream, offset in source.source_marks.items():
        target.source_marks[stream] = max(offset, target.source_marks.get(stream, offset))
    target.events_applied += source.events_applied
    target.last_event_ms = _max(target.last_event_ms, source.last_event_ms)


def _merge_affinity(target: ProfileState, source: ProfileState, config: FoldConfig) -> None:
    if source.affinity_ref_ms is None:
        return
    if target.affinity_ref_ms is None:
        target.affinity = dict(source.affinity)
        target.affinity_ref_ms = source.affinity_ref_ms
        return
    ref = max(target.affinity_ref_ms, source.affinity_ref_ms)
    half_life = config.affinity_half_life_ms
    mine = 2.0 ** (-(ref - target.affinity_ref_ms) / half_life)
    theirs = 2.0 ** (-(ref - source.affinity_ref_ms) / half_life)
    scores = {name: score * mine for name, score in target.affinity.items()}
    for name, score in source.affinity.items():
        scores[name] = scores.get(name, 0.0) + score * theirs
    target.affinity, target.affinity_ref_ms = scores, ref
    if len(scores) > config.affinity_categories_max:
        forget_weakest_categories(target, config)
