"""The event contract shared by every producer and processor.

An event is one JSON object: an envelope (ids, event time, provenance) plus the fields of its ``type``.
Validation is strict: no type coercion (``"3"`` is not an integer), timestamps need an explicit UTC offset,
and unknown fields are rejected so that a misspelt ``custmer_id`` is caught at the door instead of
silently producing an anonymous profile. Producers that need to carry extra data put it under
``properties``, a free-form object that Rapport keeps but never interprets.

The types are msgspec structs, not pydantic models: validation runs once per event on every hot path
(the worker, replay, the collector) and msgspec decodes and validates the simulator mix about 2.8x
faster than pydantic v2 on this machine (``docs/decisions.md``).

Amounts are JSON numbers in the currency's major unit (``59.9`` is 59.90 EUR); the profile fold converts
them to integer minor units of the base currency, so sums are exact and independent of order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Literal, get_args

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION: Final = 1

Id = Annotated[str, Meta(min_length=1, max_length=256)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=2048)]
Url = Annotated[str, Meta(min_length=1, max_length=4096)]
#: The largest amount an event may carry, in its currency: far above any real order, and small enough that
#: every amount converts to base-currency cents exactly (``profiles.money``).
MAX_AMOUNT: Final = 1e15
Money = Annotated[float, Meta(ge=0, le=MAX_AMOUNT)]
Timestamp = Annotated[
    datetime, Meta(tz=True, description="RFC 3339 with an explicit offset, e.g. 2025-03-14T19:02:11.520+01:00.")
]
CurrencyCode = Annotated[str, Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. EUR.")]
CountryCode = Annotated[str, Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, e.g. DE.")]
Email = Annotated[str, Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]

ClickAction = Literal["page_view", "product_view", "add_to_cart", "remove_from_cart", "search", "checkout_start"]
EmailAction = Literal["sent", "delivered", "opened", "clicked", "bounced", "unsubscribed", "complained"]
PurchaseAction = Literal["order", "refund"]
EventType = Literal["click", "email", "purchase", "social_mention", "identify"]

CLICK_ACTIONS: Final[tuple[str, ...]] = get_args(ClickAction)
EMAIL_ACTIONS: Final[tuple[str, ...]] = get_args(EmailAction)
PURCHASE_ACTIONS: Final[tuple[str, ...]] = get_args(PurchaseAction)
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)


class Envelope(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Fields every event carries. At least one of ``customer_id`` and ``anonymous_id`` is required."""

    event_id: Annotated[str, Meta(min_length=1, max_length=256, description="Unique per event; re-sends keep it.")]
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    timestamp: Timestamp
    received_at: Timestamp | None = None
    source: Annotated[str, Meta(min_length=1, max_length=128)] = "unknown"
    schema_version: Literal[1] = SCHEMA_VERSION
    properties: dict[str, Any] | None = None

    #: The event's ``type`` tag (msgspec keeps tags out of the fields).
    type: ClassVar[str]

    @property
    def key(self) -> str:
        """The Kafka key of the raw topics: the customer id when known, else the anonymous id."""
        return self.customer_id or self.anonymous_id or ""


class ClickEvent(Envelope, tag="click", frozen=True):
    """Website and app behaviour."""

    type: ClassVar[str] = "click"

    action: ClickAction
    url: Url
    session_id: Id
    product_id: Id | None = None
    category: Name | None = None
    query: Text | None = None
    referrer: Url | None = None
    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None


class EmailEvent(Envelope, tag="email", frozen=True):
    """Email platform engagement."""

    type: ClassVar[str] = "email"

    action: EmailAction
    campaign_id: Id
    message_id: Id
    link_url: Url | None = None


class LineItem(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    product_id: Id
    category: Name
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    unit_price: Money


class PurchaseEvent(Envelope, tag="purchase", frozen=True):
    """An order, or a refund of (part of) one: ``total`` is the amount charged or returned."""

    type: ClassVar[str] = "purchase"

    action: PurchaseAction
    order_id: Id
    currency: CurrencyCode
    total: Money
    items: Annotated[list[LineItem], Meta(max_length=1000)] = []
    discount: Money | None = None


class SocialMentionEvent(Envelope, tag="social_mention", frozen=True):
    """A social-listening mention attributed to a customer."""

    type: ClassVar[str] = "social_mention"

    platform: Annotated[str, Meta(min_length=1, max_length=64)]
    text: Annotated[str, Meta(max_length=10_000)]
    url: Url
    author_handle: Name
    followers: Annotated[int, Meta(ge=0)] | None = None


class Traits(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Demographic traits an identify call may set; absent traits leave the profile's value unchanged."""

    email: Email | None = None
    name: Annotated[str, Meta(max_length=256)] | None = None
    birth_year: Annotated[int, Meta(ge=1900, le=2100)] | None = None
    gender: Annotated[str, Meta(max_length=64)] | None = None
    country: CountryCode | None = None
    city: Annotated[str, Meta(max_length=256)] | None = None
    income_band: Annotated[str, Meta(max_length=64)] | None = None
    interests: Annotated[list[Annotated[str, Meta(min_length=1, max_length=128)]], Meta(max_length=100)] | None = None
    consent: dict[Annotated[str, Meta(min_length=1, max_length=64)], bool] | None = None


class IdentifyEvent(Envelope, tag="identify", frozen=True):
    """Links ``anonymous_id`` (when given) to ``customer_id`` (required here), and updates traits."""

    type: ClassVar[str] = "identify"

    customer_id: Id  # required for identify, optional on the envelope
    traits: Traits = Traits()


AnyEvent = ClickEvent | EmailEvent | PurchaseEvent | SocialMentionEvent | IdentifyEvent

#: Decodes raw JSON bytes straight into a typed event, validating as it parses.
EVENT_DECODER: Final = msgspec.json.Decoder(AnyEvent)

MODEL_BY_TYPE: Final[dict[str, type[Envelope]]] = {
    "click": ClickEvent,
    "email": EmailEvent,
    "purchase": PurchaseEvent,
    "social_mention": SocialMentionEvent,
    "identify": IdentifyEvent,
}
