"""Recognising re-sent events: a bounded memory of recently applied event ids per source stream. Pure.

A re-sent event (a producer's retry, a client's re-send) is the same event with the same ``event_id``, so
it travels the same *source stream*: the same event type, hence the same raw topic, and the same key, hence
the same partition. Kafka keeps one stream's records in order, so "fewer than ``dedup_memory`` events of
its stream in between" holds whatever the worker's interleaving of partitions is. One memory per profile
did not: a worker catching up a backlog can apply a long slice of one partition (a heavy user's clicks)
between an event of another partition and its re-send, and the re-send was counted twice.

A profile remembers at most ``MAX_STREAMS`` streams; the one it applied an event from least recently is
forgotten first. A recognised re-send changes nothing.

A stream's memory is its ids' 48-bit keys concatenated (``ID_BYTES`` each, oldest first): stored, that is
6 bytes an id where a map of 64-bit integers took 10, and it is copied and encoded as one string. An event
is taken for a re-send when its key is among the (at most ``dedup_memory``) keys of its stream: for an event
that is not one, a chance of at most 64 in 2**48 (one in 4 trillion).
"""

from __future__ import annotations

from typing import Final

from profiles.config import FoldConfig
from profiles.ids import id_digest, id_hash, repeated_id_hash
from profiles.state import ProfileState, recent_event_ids
from schemas.events import EVENT_TYPES, AnyEvent

#: A customer's own five topics and the visitor ids linked to it rarely make more than a handful of streams.
MAX_STREAMS: Final = 16
#: A stream's memory can grow to this many times ``dedup_memory`` when a hand-over brings the same stream.
MERGED_MEMORY_FACTOR: Final = 4
#: The bytes of an id's key: the first 6 of its 64-bit hash (``profiles.ids.id_hash``), so that the ids of
#: the earlier layouts convert exactly.
ID_BYTES: Final = 6


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
    digest = id_digest(event.event_id)
    # Ids remembered before memories were kept per stream: still recognised, and forgotten one per event
    # applied, as the single memory did once full.
    legacy = recent_event_ids(state) if state.recent_ids or state.recent_event_ids else None
    hashed = int.from_bytes(digest, "big") if legacy is not None or state.recent_by_stream else None
    if legacy is not None and hashed in legacy:
        return False
    stream = stream_of(event.type, event.key)
    if state.recent_by_stream:
        # Moved over only for an event to remember: a re-send leaves the stored state as it is.
        if hashed in state.recent_by_stream.get(stream, ()):
            return False
        state.stream_memories = memories_of(state)
        state.recent_by_stream = {}
    key = digest[:ID_BYTES]
    memories = state.stream_memories
    memory = memories.get(stream)
    if memory is None:
        if len(memories) >= MAX_STREAMS:
            del memories[next(iter(memories))]
        memory = key
    elif _holds(memory, key):
        return False  # and nothing changes: a re-send is not a use of its stream
    else:
        del memories[stream]
        memory = (memory + key)[-config.dedup_memory * ID_BYTES :]
    memories[stream] = memory  # last: the most recently used
    if legacy:
        del legacy[next(iter(legacy))]
    return True


def _holds(memory: bytes, key: bytes) -> bool:
    """Whether ``key`` is one of the keys ``memory`` concatenates (a match across two keys does not count).

    >>> _holds(b"abcdefghijkl", b"ghijkl"), _holds(b"abcdefghijkl", b"cdefgh")
    (True, False)
    """
    at = memory.find(key)
    while at >= 0:
        if at % ID_BYTES == 0:
            return True
        at = memory.find(key, at + 1)
    return False


def _keys(memory: bytes) -> list[bytes]:
    return [memory[at : at + ID_BYTES] for at in range(0, len(memory), ID_BYTES)]


def memories_of(state: ProfileState) -> dict[int, bytes]:
    """The state's memories by stream, those of the per-stream layout before ``stream_memories`` included
    (least recently used first, as before).

    >>> from profiles.state import ProfileState
    >>> old = ProfileState(profile_id="c-1", recent_by_stream={7: dict.fromkeys([id_hash("e-1")])})
    >>> memories_of(old)[7] == id_digest("e-1")[:ID_BYTES]
    True
    """
    if not state.recent_by_stream:
        return state.stream_memories
    moved = {
        stream: b"".join(i.to_bytes(8, "big")[:ID_BYTES] for i in ids) for stream, ids in state.recent_by_stream.items()
    }
    return {**moved, **state.stream_memories}


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
    own, brought = memories_of(target), memories_of(source)
    merged = {stream: memory for stream, memory in brought.items() if stream not in own}
    for stream, known in own.items():
        absorbed = b"".join(k for k in _keys(brought.get(stream, b"")) if not _holds(known, k))
        merged[stream] = (absorbed + known)[-MERGED_MEMORY_FACTOR * config.dedup_memory * ID_BYTES :]
    target.stream_memories = dict(list(merged.items())[-MAX_STREAMS:])
    target.recent_by_stream = {}
