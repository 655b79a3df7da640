"""Identity resolution: which profile an event belongs to, and what an identify links. Pure.

The resolver stage gathers, for a batch, the facts this needs from Redis — the outcome of each identify's
claim on its anonymous id (first claim wins) and the customers already linked to the batch's anonymous
ids — and this module turns them into ``events.resolved`` records.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from msgspec import Struct

from profiles.state import anonymous_profile_id
from schemas.events import AnyEvent, IdentifyEvent
from schemas.resolved import LinkDecision, RawSource, Resolved

ClaimOutcome = Literal["linked", "already", "conflict"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The result of an identify's claim: ``linked`` (this identify made the link, also when retried),
    ``already`` (an earlier identify linked it to the same customer) or ``conflict`` (another customer
    holds it); ``owner`` is who holds the anonymous id afterwards."""

    outcome: ClaimOutcome
    owner: str


class Arrival(Struct, frozen=True):
    """A valid event as it arrived on a raw topic (a struct: one per event, created 7x faster than a frozen
    dataclass)."""

    source: RawSource
    raw: bytes
    event: AnyEvent
    ingested_ms: int | None = None


def claims(arrivals: Sequence[Arrival]) -> list[tuple[str, str, str]]:
    """``(anonymous_id, customer_id, event_id)`` of every identify that links an anonymous id, in order."""
    return [
        (a.event.anonymous_id, a.event.customer_id, a.event.event_id)
        for a in arrivals
        if isinstance(a.event, IdentifyEvent) and a.event.anonymous_id is not None
    ]


def emails(arrivals: Sequence[Arrival]) -> dict[str, str]:
    """Lower-cased email → customer, from identify traits: the first in the batch to name it (an email
    keeps its first owner, so batching must not decide who that is)."""
    out: dict[str, str] = {}
    for a in arrivals:
        if isinstance(a.event, IdentifyEvent) and a.event.traits.email is not None:
            out.setdefault(a.event.traits.email.lower(), a.event.customer_id)
    return out


def anonymous_only(arrivals: Sequence[Arrival]) -> list[str]:
    """The anonymous ids of events without a customer id (each once): these need a link lookup."""
    seen = {a.event.anonymous_id for a in arrivals if a.event.customer_id is None and a.event.anonymous_id}
    return sorted(seen)


def linked_after(
    before: Mapping[str, str], claimed: Sequence[tuple[str, str, str]], outcomes: Sequence[Claim]
) -> dict[str, str]:
    """The links as they stand after a batch's claims: those looked up before, updated with each claim's owner.

    >>> linked_after({"a-1": "c-1"}, [("a-2", "c-2", "e9")], [Claim("linked", "c-2")])
    {'a-1': 'c-1', 'a-2': 'c-2'}
    """
    out = dict(before)
    for (anonymous_id, _, _), claim in zip(claimed, outcomes, strict=True):
        out[anonymous_id] = claim.owner
    return out


def claim_in_memory(links: dict[str, tuple[str, str]], claimed: Sequence[tuple[str, str, str]]) -> list[Claim]:
    """The outcomes of ``claims`` against an in-memory link table (anonymous id → (customer, linking event
    id)), which they update: first claim wins, as ``ProfileStore.link`` decides in Redis.

    >>> links = {}
    >>> [c.outcome for c in claim_in_memory(links, [("a-1", "c-1", "e1"), ("a-1", "c-2", "e2"), ("a-1", "c-1", "e3")])]
    ['linked', 'conflict', 'already']
    >>> claim_in_memory(links, [("a-1", "c-1", "e1")])  # the linking identify again
    [Claim(outcome='linked', owner='c-1')]
    """
    out = []
    for anonymous_id, customer_id, event_id in claimed:
        owner, by = links.setdefault(anonymous_id, (customer_id, event_id))
        if owner != customer_id:
            out.append(Claim("conflict", owner))
        else:
            out.append(Claim("linked" if by == event_id else "already", owner))
    return out


def resolve(arrivals: Sequence[Arrival], outcomes: Sequence[Claim], linked: Mapping[str, str]) -> list[Resolved]:
    """The ``events.resolved`` records for a batch, given its claims' outcomes (in ``claims`` order) and
    the customers linked to its anonymous ids after the claims (``linked_after``)."""
    out: list[Resolved] = []
    pending: Iterator[Claim] = iter(outcomes)
    for arrival in arrivals:
        event = arrival.event
        link = None
        if isinstance(event, IdentifyEvent) and event.anonymous_id is not None:
            claim = next(pending)
            if claim.outcome == "linked":
                link = LinkDecision(event.anonymous_id)
                out.append(
                    Resolved(
                        kind="merge_out",
                        profile_id=anonymous_profile_id(event.anonymous_id),
                        other_profile=event.customer_id,
                    )
                )
            elif claim.outcome == "conflict":
                link = LinkDecision(event.anonymous_id, conflict_with=claim.owner)
        out.append(
            Resolved(
                kind="event",
                profile_id=profile_of(event, linked),
                event=arrival.raw,
                source=arrival.source,
                link=link,
                ingested_ms=arrival.ingested_ms,
            )
        )
    return out


def profile_of(event: AnyEvent, linked: Mapping[str, str]) -> str:
    """The customer id when the event has one; else the customer its anonymous id is linked to; else the
    anonymous profile."""
    if event.customer_id is not None:
        return event.customer_id
    anonymous_id = event.anonymous_id or ""
    return linked.get(anonymous_id) or anonymous_profile_id(anonymous_id)
