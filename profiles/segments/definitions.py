"""Segment definitions: a named, versioned rule. Saving validates the name and compiles the rule.

The version is what change events carry (``segment_version``), so it moves on every saved change and only
then: saving the same description and rule again is a no-op, which keeps an API ``PUT`` idempotent.

>>> first = save(None, "active_7d", "Bought twice this week", 'windows["7d"].orders >= 2', now_ms=0)
>>> first.version, first.updated_at
(1, '1970-01-01T00:00:00.000Z')
>>> save(first, "active_7d", "Bought twice this week", 'windows["7d"].orders >= 2', now_ms=5) is first
True
>>> edited = save(first, "active_7d", "Bought twice this week", 'windows["7d"].orders >= 3', now_ms=5)
>>> edited.version, edited.first_version
(2, 1)
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from msgspec import Meta, Struct

from profiles.segments.rules import compile_rule
from profiles.timeutil import iso

#: A slug: safe in URLs, Redis keys, Kafka headers and webhook filters without escaping.
NAME_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,63}$"
MAX_DESCRIPTION: Final = 1000
_NAME: Final = re.compile(NAME_PATTERN)


class DefinitionError(ValueError):
    """A segment that cannot be saved for a reason other than its rule (that is a ``RuleError``)."""


class SegmentDefinition(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=NAME_PATTERN)]
    description: Annotated[str, Meta(max_length=MAX_DESCRIPTION)]
    rule: str
    version: Annotated[int, Meta(ge=1)]
    updated_at: Annotated[str, Meta(description="When this version was saved (RFC 3339 UTC).")]
    #: The version this segment was created at. A name deleted and created again keeps counting versions,
    #: and a membership entered under a version before this one belongs to the deleted segment.
    first_version: Annotated[int, Meta(ge=1)] = 1

    def holds(self, entered_version: int) -> bool:
        """Whether a membership entered under ``entered_version`` is one of this segment's.

        >>> again = SegmentDefinition(name="vip", description="", rule="true", version=4, updated_at="",
        ...                           first_version=3)
        >>> again.holds(2), again.holds(3)
        (False, True)
        """
        return entered_version >= self.first_version


def validate_name(name: str) -> str:
    """
    >>> validate_name("churn-risk_high")
    'churn-risk_high'
    >>> validate_name("Big Spenders")
    Traceback (most recent call last):
    ...
    profiles.segments.definitions.DefinitionError: segment name 'Big Spenders' must be a slug: ...
    """
    if not _NAME.fullmatch(name):
        raise DefinitionError(
            f"segment name {name!r} must be a slug: a lower-case letter, then up to 63 of a-z, 0-9, '_' and '-'"
        )
    return name


def save(
    current: SegmentDefinition | None, name: str, description: str, rule: str, *, now_ms: int
) -> SegmentDefinition:
    """The definition after saving ``description`` and ``rule`` over ``current`` (None: a new segment).

    Raises ``DefinitionError`` or ``RuleError``; ``now_ms`` is the saving clock's time, passed in so this
    stays pure.
    """
    validate_name(name)
    if current is not None and current.name != name:
        raise DefinitionError(f"cannot save segment {name!r} over {current.name!r}")
    if len(description) > MAX_DESCRIPTION:
        raise DefinitionError(f"description too long ({len(description)} characters, at most {MAX_DESCRIPTION})")
    compile_rule(rule)
    if current is not None and (current.description, current.rule) == (description, rule):
        return current
    version = 1 if current is None else current.version + 1
    updated_at = iso(now_ms)
    assert updated_at is not None
    return SegmentDefinition(
        name=name,
        description=description,
        rule=rule,
        version=version,
        updated_at=updated_at,
        first_version=version if current is None else current.first_version,
    )
