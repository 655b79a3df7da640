"""What a rule can read: a type for every field of the rendered view, derived from the view's contract.

The types come from ``schemas.profile.ProfileView`` through ``msgspec.inspect``, so a field added to the
contract is readable by rules without touching this module, and a field renamed there breaks saved rules
loudly (a type error at save time) instead of silently reading nothing. Where the contract's map types are
looser than the data, the event contract narrows them: click and email action counters list exactly the
event contract's actions, and traits have the types the identify event gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import msgspec.inspect as mi

from schemas.events import CLICK_ACTIONS, EMAIL_ACTIONS, Traits
from schemas.profile import ProfileView

Kind = Literal["bool", "int", "double", "string", "null", "list", "map", "struct"]
#: A field's location in the view: keys and field names from the root, e.g. ``("windows", "7d", "orders")``.
Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleType:
    """The static type of a value in a rule.

    Maps either have known keys, each with its own type (``entries``; ``total`` when the view always lists
    every one of them), or any string key with one value type (``item``).
    """

    kind: Kind
    nullable: bool = False
    item: RuleType | None = None
    fields: Mapping[str, RuleType] | None = None
    entries: Mapping[str, RuleType] | None = None
    total: bool = False
    #: For strings drawn from a fixed set (``journey_stage``): the allowed values.
    values: frozenset[str] | None = None

    def describe(self) -> str:
        """How error messages name the type.

        >>> RuleType("int", nullable=True).describe()
        'int or null'
        """
        name = {"list": "list", "map": "map", "struct": "object"}.get(self.kind, self.kind)
        return f"{name} or null" if self.nullable and self.kind != "null" else name

    def with_nullable(self, nullable: bool) -> RuleType:
        return RuleType(self.kind, nullable, self.item, self.fields, self.entries, self.total, self.values)


BOOL: Final = RuleType("bool")
INT: Final = RuleType("int")
DOUBLE: Final = RuleType("double")
STRING: Final = RuleType("string")
NULL: Final = RuleType("null", nullable=True)

#: The model scores a rule can read as ``scores.<name>``; a customer may have none of them yet.
SCORE_NAMES: Final = ("purchase_propensity", "churn_risk", "clv_90d", "email_open")

# Fields of the view that are not a function of the customer's own events and the evaluation instant, so a
# membership over them could not be replayed or kept exact by the owning worker: processing and reading
# clocks, Kafka positions, the instant itself (rules see time through windows and recency), and the RFM
# scores, which move when *other* customers buy.
EXCLUDED: Final[frozenset[Path]] = frozenset(
    {
        ("meta", "updated_at"),
        ("meta", "computed_at"),
        ("meta", "watermark"),
        ("meta", "as_of"),
        ("meta", "schema_version"),
        ("rfm", "r_score"),
        ("rfm", "f_score"),
        ("rfm", "m_score"),
    }
)


def _from_msgspec(info: mi.Type, path: Path) -> RuleType:  # noqa: PLR0911 - one case per msgspec type
    if isinstance(info, mi.Metadata):
        return _from_msgspec(info.type, path)
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(members) != 1:
            raise TypeError(f"{'.'.join(path)}: only T | None unions are readable by rules")
        return _from_msgspec(members[0], path).with_nullable(len(members) < len(info.types))
    if isinstance(info, mi.BoolType):
        return BOOL
    if isinstance(info, mi.IntType):
        return INT
    if isinstance(info, mi.FloatType):
        return DOUBLE
    if isinstance(info, mi.StrType):
        return STRING
    if isinstance(info, mi.LiteralType):
        return RuleType("string", values=frozenset(str(v) for v in info.values))
    if isinstance(info, mi.ListType):
        return RuleType("list", item=_from_msgspec(info.item_type, path))
    if isinstance(info, mi.DictType):
        value = _from_msgspec(info.value_type, path)
        if isinstance(info.key_type, mi.LiteralType):
            return RuleType("map", entries=dict.fromkeys(sorted(map(str, info.key_type.values)), value), total=True)
        return RuleType("map", item=value)
    if isinstance(info, mi.StructType):
        fields = {f.encode_name: _from_msgspec(f.type, (*path, f.encode_name)) for f in info.fields}
        return RuleType("struct", fields={k: v for k, v in fields.items() if (*path, k) not in EXCLUDED})
    raise TypeError(f"{'.'.join(path)}: {type(info).__name__} is not readable by rules")


def _counters(keys: tuple[str, ...]) -> RuleType:
    return RuleType("map", entries=dict.fromkeys(keys, INT), total=True)


def _traits(info: mi.Type) -> RuleType:
    """Trait name → ``{value, updated_at}``, the value typed as the identify event types that trait."""
    assert isinstance(info, mi.DictType)
    assert isinstance(info.value_type, mi.StructType)
    traits = mi.type_info(Traits)
    assert isinstance(traits, mi.StructType)
    meta = {
        f.encode_name: _from_msgspec(f.type, ("traits", f.encode_name))
        for f in info.value_type.fields
        if f.encode_name != "value"
    }
    entries = {
        f.encode_name: RuleType(
            "struct", fields={"value": _from_msgspec(f.type, ("traits", f.encode_name)).with_nullable(False), **meta}
        )
        for f in traits.fields
    }
    return RuleType("map", entries=entries)


def _profile_type() -> RuleType:
    info = mi.type_info(ProfileView)
    assert isinstance(info, mi.StructType)
    fields = {
        f.encode_name: _traits(f.type) if f.encode_name == "traits" else _from_msgspec(f.type, (f.encode_name,))
        for f in info.fields
    }
    behaviour, email = fields["behaviour"].fields, fields["email"].fields
    assert behaviour is not None
    assert email is not None
    fields["behaviour"] = RuleType("struct", fields={**behaviour, "clicks": _counters(CLICK_ACTIONS)})
    fields["email"] = RuleType("struct", fields={**email, "actions": _counters(EMAIL_ACTIONS)})
    scores = RuleType("struct", fields=dict.fromkeys(SCORE_NAMES, DOUBLE.with_nullable(True)))
    return RuleType("struct", fields={**fields, "scores": scores})


#: The rule language's root: every field of the view, plus ``scores``.
ROOT: Final = _profile_type()
