"""The profile view's contract: what ``rapport profile get`` prints and the API serves (``docs/profile.md``).

Exported as ``schemas/json/profile.schema.json``; a test decodes rendered profiles with these types, so
the renderer and the contract cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

Timestamp = Annotated[str, Meta(description="RFC 3339 UTC with milliseconds, e.g. 2025-03-14T18:02:11.520Z.")]
Amount = Annotated[float, Meta(description="Base-currency major units, rounded to cents.")]
Rate = Annotated[float, Meta(ge=0, description="Rounded half away from zero to 4 decimals.")]
WindowName = Literal["1h", "24h", "7d", "30d", "90d"]
JourneyStage = Literal["awareness", "consideration", "decision", "retention", "lapsed"]


class _View(Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class TraitValue(_View):
    value: Any
    updated_at: Timestamp


class MergeRecord(_View):
    anonymous_id: str
    at: Timestamp
    event_id: str


class ConflictRecord(_View):
    anonymous_id: str
    claimed_by: Annotated[str, Meta(description="The customer already holding the anonymous id.")]
    at: Timestamp
    event_id: str
    attempts: Annotated[int, Meta(description="Identifies that made this claim; at and event_id are the earliest's.")]


class LinksRefused(_View):
    """Identifies whose ids were not made the customer's, past its link limits (docs/profile.md)."""

    anonymous_ids: Annotated[int, Meta(description="Not linked: the customer held profile.max_anonymous_ids.")]
    emails: Annotated[int, Meta(description="Neither listed nor linked: the customer had named profile.max_emails.")]


class Behaviour(_View):
    clicks: dict[str, int]
    sessions: int
    first_seen: Timestamp | None
    last_seen: Timestamp | None


class Transactions(_View):
    orders: int
    refunds: int
    gross_spend: Amount
    refunded: Amount
    spend: Amount
    aov: Amount | None
    first_purchase_at: Timestamp | None
    last_purchase_at: Timestamp | None
    items: int
    spend_by_category: dict[str, Amount]


class Rfm(_View):
    recency_days: int
    frequency: int
    monetary: Amount
    r_score: Annotated[int, Meta(ge=1, le=5)] | None
    f_score: Annotated[int, Meta(ge=1, le=5)] | None
    m_score: Annotated[int, Meta(ge=1, le=5)] | None


class EmailEngagement(_View):
    actions: dict[str, int]
    open_rate: Rate | None
    click_through_rate: Rate | None
    last_open_at: Timestamp | None


class Social(_View):
    mentions: int
    sentiment_mean: Annotated[float, Meta(ge=-1, le=1)] | None
    sentiment_last: Annotated[float, Meta(ge=-1, le=1)] | None
    negative_mentions: int


class WindowMetrics(_View):
    clicks: int
    product_views: int
    add_to_carts: int
    orders: int
    spend: Amount
    email_opens: int
    email_clicks: int
    mentions: int


class ProfileMeta(_View):
    events_applied: int
    last_event_at: Timestamp | None
    updated_at: Annotated[Timestamp | None, Meta(description="Processing time of the last write.")]
    watermark: Annotated[int | None, Meta(description="Applied position in the profile's events.resolved partition.")]
    schema_version: int
    as_of: Timestamp
    computed_at: Annotated[
        Timestamp | None, Meta(description="When this view was computed (the reader's clock); None offline.")
    ] = None


class ProfileView(_View):
    """One customer's consolidated profile at ``meta.as_of``."""

    profile_id: Annotated[str, Meta(description="The customer id, or anon:<anonymous_id> for a visitor.")]
    customer_id: str | None
    anonymous_ids: list[str]
    emails: list[str]
    merged_from: list[MergeRecord]
    identity_conflicts: list[ConflictRecord]
    links_refused: LinksRefused
    traits: dict[str, TraitValue]
    behaviour: Behaviour
    transactions: Transactions
    rfm: Rfm | None
    email: EmailEngagement
    social: Social
    affinity: dict[str, float]
    journey_stage: JourneyStage
    windows: dict[WindowName, WindowMetrics]
    meta: ProfileMeta
