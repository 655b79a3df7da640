"""The canonical content of a profile and of a namespace, for ``rapport namespace hash | diff``. Pure.

Two namespaces built from the same events hold the same customers with the same numbers, but not the same
bytes: processing-time fields (``updated_at``, the ``events.resolved`` watermark), internal bookkeeping
(stream marks, merged-away tombstones) and the last bits of decayed floats depend on how the events were
batched. The canonical view keeps what a reader of the profile sees, at the profile's own last event
(so it does not depend on the clock), with floats rounded to 9 significant digits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from profiles.config import FoldConfig
from profiles.state import ProfileState
from profiles.view import render

PROCESSING_FIELDS: Final = ("updated_at", "watermark", "as_of")
_DIGITS: Final = 9


def is_canonical(state: ProfileState) -> bool:
    """Whether the state is a profile a reader can get (not the tombstone of a merged visitor)."""
    return state.merged_into is None


def canonical_view(state: ProfileState, config: FoldConfig) -> dict[str, Any]:
    """The profile as served, at its last event, without processing-time fields, floats rounded.

    >>> from profiles.state import new_profile
    >>> view = canonical_view(new_profile("c-1", "c-1"), FoldConfig())
    >>> view["profile_id"], "updated_at" in view["meta"]
    ('c-1', False)
    """
    view = render(state, state.last_event_ms or 0, config)
    for name in PROCESSING_FIELDS:
        view["meta"].pop(name, None)
    rounded: dict[str, Any] = _round(view)
    return rounded


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def profile_digest(state: ProfileState, config: FoldConfig) -> bytes:
    """SHA-256 of the canonical view (keys sorted)."""
    return hashlib.sha256(orjson.dumps(canonical_view(state, config), option=orjson.OPT_SORT_KEYS)).digest()


def namespace_digest(profile_digests: Iterable[bytes], memberships: Mapping[str, Iterable[str]]) -> str:
    """One hash of a namespace, independent of the order profiles and members are read in.

    >>> a, b = b"\\x01" * 32, b"\\x02" * 32
    >>> namespace_digest([a, b], {"vip": ["c-2", "c-1"]}) == namespace_digest([b, a], {"vip": ["c-1", "c-2"]})
    True
    >>> namespace_digest([a], {}) == namespace_digest([a], {"vip": []})
    False
    """
    h = hashlib.sha256()
    for digest in sorted(profile_digests):
        h.update(digest)
    for segment in sorted(memberships):
        h.update(b"\x00segment\x00" + segment.encode())
        for member in sorted(memberships[segment]):
            h.update(b"\x00" + member.encode())
    return h.hexdigest()


def field_differences(a: Mapping[str, Any], b: Mapping[str, Any], path: str = "") -> list[str]:
    """The paths (``transactions.spend``, ``windows.7d.orders``) where two canonical views differ.

    >>> field_differences({"x": {"y": 1, "z": [1]}}, {"x": {"y": 2, "z": [1]}, "w": 0})
    ['w', 'x.y']
    """
    out: list[str] = []
    for key in sorted(a.keys() | b.keys(), key=str):
        sub = f"{path}.{key}" if path else str(key)
        left, right = a.get(key), b.get(key)
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            out.extend(field_differences(left, right, sub))
        elif key not in a or key not in b or left != right:
            out.append(sub)
    return out
