"""A person's evolving state: what the start of each day conditions on."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.simulator.population import Person
from services.simulator.sampling import seeded_rng
from services.simulator.truth import PersonTruth


@dataclass(slots=True, eq=False)
class Customer:
    """Latent traits (``person``), mutable state, the truth being recorded and a private generator."""

    person: Person
    truth: PersonTruth
    rng: random.Random
    event_prefix: str
    log_engagement: float
    device_identified: list[bool]
    alive: bool = True
    identified_day: int | None = None
    primary_device: int = 0  # the device identified first; email links open there
    last_order_day: int | None = None
    last_abandon_day: int | None = None
    email_suppressed: bool = False  # unsubscribed, complained or hard-bounced
    n_events: int = 0
    n_sessions: int = 0
    n_orders: int = 0

    @classmethod
    def new(cls, person: Person, seed: int, total_days: int) -> Customer:
        return cls(
            person=person,
            truth=PersonTruth(total_days),
            rng=seeded_rng(seed, person.index, "behaviour"),
            event_prefix=f"ev-{seed}-{person.index}-",
            log_engagement=person.initial_engagement,
            device_identified=[False] * len(person.anonymous_ids),
        )

    def next_id(self) -> str:
        """The next event id of this person: ``ev-<seed>-<person>-<n>``."""
        self.n_events += 1
        return f"{self.event_prefix}{self.n_events}"
