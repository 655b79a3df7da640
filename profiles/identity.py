"""Identity resolution: which profile an event belongs to, and what an identify links. Pure.

The resolver stage gathers, for a batch, the facts this needs from Redis — the outcome of each identify's
claim on its anonymous id (first claim wins) and the customers already linked to the batch's anonymous
ids — and this module turns them into ``events.resolved`` records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from msgspec import Struct

from profiles.config import LinkLimits
from profiles.state import anonymous_profile_id
from schemas.events import AnyEvent, IdentifyEvent
from schemas.resolved import LinkDecision, RawSource, Resolved

ClaimOutcome = Literal["linked", "already", "conflict", "limited"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The result of an identify's claim: ``linked`` (this identify made the link, also when retried),
    ``already`` (an earlier identify linked it to the same customer), ``conflict`` (another customer
    holds it) or ``limited`` (nobody holds it, and the customer already holds as many anonymous ids as a
    customer may); ``owner`` is who holds the anonymous id afterwards."""

    outcome: ClaimOutcome
    owner: str | None


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


def named_emails(arrivals: Sequence[Arrival]) -> list[tuple[str, str]]:
    """``(customer_id, lower-cased email)`` of every identify whose traits name an email, in order."""
    return [
        (a.event.customer_id, a.event.traits.email.lower())
        for a in arrivals
        if isinstance(a.event, IdentifyEvent) and a.event.traits.email is not None
    ]


def email_owners(named: Sequence[tuple[str, str]], accepted: Sequence[bool]) -> dict[str, str]:
    """Email → customer: the first accepted naming in the batch (an email keeps its first owner, so
    batching must not decide who that is).

    >>> email_owners([("c-1", "x@y.z"), ("c-2", "x@y.z"), ("c-2", "w@y.z")], [False, True, True])
    {'x@y.z': 'c-2', 'w@y.z': 'c-2'}
    """
    out: dict[str, str] = {}
    for (customer_id, email), ok in zip(named, accepted, strict=True):
        if ok:
            out.setdefault(email, customer_id)
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
        if claim.owner is not None:
            out[anonymous_id] = claim.owner
    return out


@dataclass(slots=True)
class LinkTable:
    """Identity links in memory, deciding as ``ProfileStore.link`` does in Redis: the first claim of an
    anonymous id wins, and a customer holds at most ``limits.anonymous_ids`` anonymous ids and names at most
    ``limits.emails`` emails (a naming past that is refused: the email is neither listed nor linked).

    >>> table = LinkTable(LinkLimits(anonymous_ids=1, emails=1))
    >>> [c.outcome for c in table.claim([("a-1", "c-1", "e1"), ("a-1", "c-2", "e2"), ("a-1", "c-1", "e3")])]
    ['linked', 'conflict', 'already']
    >>> table.claim([("a-1", "c-1", "e1"), ("a-2", "c-1", "e4")])  # the linking identify again; one too many
    [Claim(outcome='linked', owner='c-1'), Claim(outcome='limited', owner=None)]
    >>> table.name([("c-1", "x@y.z"), ("c-1", "w@y.z"), ("c-1", "x@y.z")])
    [True, False, True]
    """

    limits: LinkLimits
    #: anonymous id → (customer, the identify that linked it)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)  # customer → anonymous ids linked to it
    named: dict[str, set[str]] = field(default_factory=dict)  # customer → emails it named, accepted

    def claim(self, claimed: Sequence[tuple[str, str, str]]) -> list[Claim]:
        """The outcomes of ``claims``, in order, which update the table."""
        out = []
        for anonymous_id, customer_id, event_id in claimed:
            current = self.links.get(anonymous_id)
            if current is None:
                if self.held.get(customer_id, 0) >= self.limits.anonymous_ids:
                    out.append(Claim("limited", None))
                    continue
                current = self.links[anonymous_id] = (customer_id, event_id)
                self.held[customer_id] = self.held.get(customer_id, 0) + 1
            owner, by = current
            if owner != customer_id:
                out.append(Claim("conflict", owner))
            else:
                out.append(Claim("linked" if by == event_id else "already", owner))
        return out

    def name(self, named: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each ``named_emails`` naming is accepted, in order, which update the table."""
        out = []
        for customer_id, email in named:
            emails = self.named.setdefault(customer_id, set())
            accepted = email in emails or len(emails) < self.limits.emails
            if accepted:
                emails.add(email)
            out.append(accepted)
        return out

    def linked(self, anonymous_ids: Iterable[str]) -> dict[str, str]:
        """The customers these anonymous ids are linked to (unlinked ones left out)."""
        return {a: self.links[a][0] for a in anonymous_ids if a in self.links}


def resolve(
    arrivals: Sequence[Arrival], outcomes: Sequence[Claim], accepted: Sequence[bool], linked: Mapping[str, str]
) -> list[Resolved]:
    """The ``events.resolved`` records for a batch, given its claims' outcomes (in ``claims`` order),
    whether each email naming was accepted (in ``named_emails`` order) and the customers linked to its
    anonymous ids after the claims (``linked_after``)."""
    out: list[Resolved] = []
    pending: Iterator[Claim] = iter(outcomes)
    namings: Iterator[bool] = iter(accepted)
    for arrival in arrivals:
        event = arrival.event
        link, email_refused = None, False
        if isinstance(event, IdentifyEvent):
            email_refused = event.traits.email is not None and not next(namings)
            if event.anonymous_id is not None:
                link = _link_decision(event, event.anonymous_id, next(pending), out)
        out.append(
            Resolved(
                kind="event",
                profile_id=profile_of(event, linked),
                event=arrival.raw,
                source=arrival.source,
                link=link,
                ingested_ms=arrival.ingested_ms,
                email_refused=email_refused,
            )
        )
    return out


def _link_decision(event: IdentifyEvent, anonymous_id: str, claim: Claim, out: list[Resolved]) -> LinkDecision | None:
    """What the identify's record carries about its claim; a link made also tells the visitor's profile to
    hand its state over (a ``merge_out`` appended to ``out``, before the identify's own record)."""
    if claim.outcome == "linked":
        out.append(
            Resolved(kind="merge_out", profile_id=anonymous_profile_id(anonymous_id), other_profile=event.customer_id)
        )
        return LinkDecision(anonymous_id)
    if claim.outcome == "conflict":
        return LinkDecision(anonymous_id, conflict_with=claim.owner)
    if claim.outcome == "limited":
        return LinkDecision(anonymous_id, limited=True)
    return None


def profile_of(event: AnyEvent, linked: Mapping[str, str]) -> str:
    """The customer id when the event has one; else the customer its anonymous id is linked to; else the
    anonymous profile."""
    if event.customer_id is not None:
        return event.customer_id
    anonymous_id = event.anonymous_id or ""
    return linked.get(anonymous_id) or anonymous_profile_id(anonymous_id)
