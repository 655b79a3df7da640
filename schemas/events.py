"""The event contract shared by every producer and processor.

An event is one JSON object: an envelope (ids, event time, provenance) plus the fields of its ``type``.
Validation is strict: no type coercion (``"3"`` is not an integer), timestamps need an explicit UTC offset,
and unknown top-level fields are rejected so that a misspelt ``custmer_id`` is caught at the door instead
of silently producing an anonymous profile. Producers that need to carry extra data put it under
``properties``, a free-form object that Rapport keeps but never interprets.

Amounts are JSON numbers in the currency's major unit (``59.9`` is 59.90 EUR); the profile fold converts
them to integer minor units of the base currency, so sums are exact and independent of order.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

SCHEMA_VERSION: Final = 1

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ShortText = Annotated[str, StringConstraints(max_length=2048)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]

ClickAction = Literal["page_view", "product_view", "add_to_cart", "remove_from_cart", "search", "checkout_start"]
EmailAction = Literal["sent", "delivered", "opened", "clicked", "bounced", "unsubscribed", "complained"]
PurchaseAction = Literal["order", "refund"]
EventType = Literal["click", "email", "purchase", "social_mention", "identify"]

CLICK_ACTIONS: Final[tuple[str, ...]] = get_args(ClickAction)
EMAIL_ACTIONS: Final[tuple[str, ...]] = get_args(EmailAction)
PURCHASE_ACTIONS: Final[tuple[str, ...]] = get_args(PurchaseAction)
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, str_strip_whitespace=False)
# The "at least one id" rule, stated for JSON Schema consumers (pydantic enforces it in the validator below).
_ONE_ID_REQUIRED: Final[JsonDict] = {
    "anyOf": [
        {"required": ["customer_id"], "properties": {"customer_id": {"type": "string"}}},
        {"required": ["anonymous_id"], "properties": {"anonymous_id": {"type": "string"}}},
    ]
}


class Envelope(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(**_STRICT, json_schema_extra=_ONE_ID_REQUIRED)

    event_id: Id = Field(
        description="Unique per event; a re-sent event keeps its id, which is how duplicates are caught."
    )
    customer_id: Id | None = Field(None, description="The business's id for a known customer.")
    anonymous_id: Id | None = Field(None, description="A device or cookie id, before or besides identification.")
    timestamp: AwareDatetime = Field(description="Event time, RFC 3339 with an explicit offset.")
    received_at: AwareDatetime | None = Field(None, description="When a collector received it; set by collectors.")
    source: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        "unknown", description="The emitting system, e.g. `web`, `esp`, `shop`, `social`."
    )
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this contract.")
    properties: dict[str, Any] | None = Field(
        None, description="Free-form producer data; kept, never interpreted by Rapport."
    )

    @model_validator(mode="after")
    def _has_an_identity(self) -> Envelope:
        if self.customer_id is None and self.anonymous_id is None:
            raise PydanticCustomError("missing_identity", "customer_id or anonymous_id is required")
        return self

    @property
    def key(self) -> str:
        """The Kafka key of the raw topics: the customer id when known, else the anonymous id."""
        return self.customer_id or self.anonymous_id or ""


class ClickEvent(Envelope):
    type: Literal["click"]
    action: ClickAction
    url: Url
    session_id: Id
    product_id: Id | None = None
    category: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    query: ShortText | None = None
    referrer: Url | None = None
    utm_source: ShortText | None = None
    utm_medium: ShortText | None = None
    utm_campaign: ShortText | None = None
    utm_term: ShortText | None = None
    utm_content: ShortText | None = None


class EmailEvent(Envelope):
    type: Literal["email"]
    action: EmailAction
    campaign_id: Id
    message_id: Id
    link_url: Url | None = None


class LineItem(BaseModel):
    model_config = _STRICT

    product_id: Id
    category: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]
    unit_price: Money


class PurchaseEvent(Envelope):
    type: Literal["purchase"]
    action: PurchaseAction
    order_id: Id
    currency: CurrencyCode = Field(description="ISO 4217 code of `total`, `discount` and item prices.")
    total: Money = Field(description="Amount charged (order) or returned (refund), in the currency's major unit.")
    items: Annotated[list[LineItem], Field(max_length=1000)] = []
    discount: Money | None = None


class SocialMentionEvent(Envelope):
    type: Literal["social_mention"]
    platform: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    text: Annotated[str, StringConstraints(max_length=10_000)]
    url: Url
    author_handle: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    followers: Annotated[int, Field(ge=0)] | None = None


class Traits(BaseModel):
    """Demographic traits an identify call may set; absent traits leave the profile's value unchanged."""

    model_config = _STRICT

    email: Email | None = None
    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    birth_year: Annotated[int, Field(ge=1900, le=2100)] | None = None
    gender: Annotated[str, StringConstraints(max_length=64)] | None = None
    country: CountryCode | None = None
    city: Annotated[str, StringConstraints(max_length=256)] | None = None
    income_band: Annotated[str, StringConstraints(max_length=64)] | None = None
    interests: (
        Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=128)]], Field(max_length=100)] | None
    ) = None
    consent: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], bool] | None = Field(
        None, description="Consent flags by purpose, e.g. {`email_marketing`: true, `personalization`: false}."
    )


class IdentifyEvent(Envelope):
    """Links ``anonymous_id`` (when given) to ``customer_id``, and updates traits."""

    type: Literal["identify"]
    customer_id: Id = Field(description="The known customer being identified.")
    traits: Traits = Traits()


AnyEvent = ClickEvent | EmailEvent | PurchaseEvent | SocialMentionEvent | IdentifyEvent
Event = Annotated[AnyEvent, Field(discriminator="type")]

#: Validates raw JSON bytes straight into an event (pydantic's own parser; no intermediate dict).
EVENT_ADAPTER: Final[TypeAdapter[AnyEvent]] = TypeAdapter(Event)

MODEL_BY_TYPE: Final[dict[str, type[Envelope]]] = {
    "click": ClickEvent,
    "email": EmailEvent,
    "purchase": PurchaseEvent,
    "social_mention": SocialMentionEvent,
    "identify": IdentifyEvent,
}
