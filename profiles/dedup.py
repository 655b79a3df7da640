"""Recognising re-sent events: a bounded memory of recently applied event ids per source stream. Pure.

A re-sent event (a producer's retry, a client's re-send) is the same event with the same ``event_id``, so
it travels the same *source stream*: the same event type, hence the same raw topic, and the same key, hence
the same partition. Kafka keeps one stream's records in order, so "fewer than ``dedup_memory`` events of
its stream in between" holds whatever the worker's interleaving of partitions is. One memory per profile
did not: a worker catching up a backlog can apply a long slice of one partition (a heavy user's clicks)
between an event of another partition and its re-send, and the re-send was counted twice.

A profile remembers at most ``MAX_STREAMS`` streams; the one it applied an event from least recently is
forgotten first. A recognised re-send changes nothing.
"""

from __future__ import annotations

from typing import Final

from profiles.config import FoldConfig
from profiles.ids import id_hash, repeated_id_hash
from profiles.state import ProfileState, recent_event_ids
from schemas.events import EVENT_TYPES, AnyEvent

#: A customer's own five topics and the visitor ids linked to it rarely make more than a handful of streams.
MAX_STREAMS: Final = 16
#: A stream's memory can grow to this many times ``dedup_memory`` when a hand-over brings the same stream.
MERGED_MEMORY_FACTOR: Final = 4


#: Streams of one key differ by their event type: a salt per type keeps hashing to one cached hash per key.
_TYPE_SALTS: Final = {event_type: id_hash(event_type) for event_type in EVENT_TYPES}


def stream_of(event_type: str, key: str) -> int:
    """The identity of the stream that an event and its re-sends travel.

    >>> stream_of("click", "c-1") == stream_of("click", "c-1") != stream_of("email", "c-1")
    True
    """
    return repeated_id_hash(key) ^ _TYPE_SALTS[event_type]


def remember(state: ProfileState, event: AnyEvent, config: FoldConfig) -> bool:
    """Remember ``event`` as applied; False if it is a re-send of one remembered.

    >>> from datetime import UTC, datetime
    >>> from profiles.state import new_profile
    >>> from schemas.events import EmailEvent
    >>> state = new_profile("c-1", "c-1")
    >>> email = EmailEvent(event_id="e-1", customer_id="c-1", timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    ...     action="delivered", campaign_id="k", message_id="m")
    >>> remember(state, email, FoldConfig()), remember(state, email, FoldConfig())
    (True, False)
    """
    key = id_hash(event.event_id)
    # Ids remembered before memories were kept per stream: still recognised, and forgotten one per event
    # applied, as the single memory did once full.
    legacy = recent_event_ids(state) if state.recent_ids or state.recent_event_ids else None
    if legacy is not None and key in legacy:
        return False
    streams = state.recent_by_stream
    stream = stream_of(event.type, event.key)
    ids = streams.get(stream)
    if ids is None:
        ids = {}
        if len(streams) >= MAX_STREAMS:
            del streams[next(iter(streams))]
    elif key in ids:
        return False  # and nothing changes: a re-send is not a use of its stream
    else:
        del streams[stream]
    streams[stream] = ids  # last: the most recently used
    ids[key] = None
    if len(ids) > config.dedup_memory:
        del ids[next(iter(ids))]
    if legacy:
        del legacy[next(iter(legacy))]
    return True


def merge_memories(target: ProfileState, source: ProfileState, config: FoldConfig) -> None:
    """Add ``source``'s memories to ``target``'s, keeping ``target``'s own whole.

    A hand-over that arrives late (its partition's worker was down) must not push out the customer's own
    recent ids, whose re-sends may still be on their way; the visitor's are kept too, since its events'
    re-sends may still come, forwarded. So a stream both remember keeps both memories (up to
    ``MERGED_MEMORY_FACTOR`` times the usual), and the visitor's other streams go before the customer's,
    the first forgotten.
    """
    mine = recent_event_ids(target)
    theirs = [i for i in recent_event_ids(source) if i not in mine]
    target.recent_event_ids = dict.fromkeys([*theirs, *mine][-MERGED_MEMORY_FACTOR * config.dedup_memory :])
    # Copies: the source's dicts must not become the target's, which the fold goes on to change.
    merged = {
        stream: dict(ids) for stream, ids in source.recent_by_stream.items() if stream not in target.recent_by_stream
    }
    for stream, known in target.recent_by_stream.items():
        absorbed = [i for i in source.recent_by_stream.get(stream, ()) if i not in known]
        merged[stream] = dict.fromkeys([*absorbed, *known][-MERGED_MEMORY_FACTOR * config.dedup_memory :])
    target.recent_by_stream = dict(list(merged.items())[-MAX_STREAMS:])
