"""Field-by-field differences between two sets of profile views, for humans.

``diff_profiles(expected, actual)`` lists missing and extra profiles, then for each common profile every
field path that differs (``c-000001: transactions.spend expected 12.5 got 12.4``), in path order. Numbers (int or float,
not bool) compare with ``math.isclose``; lists compare element by element, in order; dicts by key. The
processing-time fields ``meta.updated_at``, ``meta.computed_at`` and ``meta.watermark`` are skipped.
"""

from __future__ import annotations

import math
from typing import Any, Final

SKIPPED: Final = frozenset({"meta.updated_at", "meta.computed_at", "meta.watermark"})
_MAX_REPR: Final = 300


def diff_profiles(
    expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]], *, rel_tol: float = 1e-9
) -> list[str]:
    """Every difference between ``expected`` and ``actual`` (profile_id → view); empty when they agree."""
    out: list[str] = []
    out.extend(f"{pid}: missing profile (expected, not in actual)" for pid in sorted(expected.keys() - actual.keys()))
    out.extend(
        f"{pid}: unexpected profile (in actual, not expected)" for pid in sorted(actual.keys() - expected.keys())
    )
    for pid in sorted(expected.keys() & actual.keys()):
        _diff(expected[pid], actual[pid], "", pid, out, rel_tol)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _diff(exp: Any, act: Any, path: str, pid: str, out: list[str], rel_tol: float) -> None:
    if path in SKIPPED:
        return
    where = path or "(view)"
    if isinstance(exp, dict) and isinstance(act, dict):
        for key in sorted(exp.keys() | act.keys(), key=str):
            sub = _join(path, key)
            if sub in SKIPPED:
                continue
            if key not in act:
                out.append(f"{pid}: {sub} missing (expected {_show(exp[key])})")
            elif key not in exp:
                out.append(f"{pid}: {sub} unexpected (got {_show(act[key])})")
            else:
                _diff(exp[key], act[key], sub, pid, out, rel_tol)
    elif isinstance(exp, list) and isinstance(act, list):
        if len(exp) != len(act):
            out.append(f"{pid}: {where} expected {_show(exp)} got {_show(act)} (length {len(exp)} vs {len(act)})")
            return
        for i, (e, a) in enumerate(zip(exp, act, strict=True)):
            _diff(e, a, f"{path}[{i}]", pid, out, rel_tol)
    elif _is_number(exp) and _is_number(act):
        if not math.isclose(exp, act, rel_tol=rel_tol, abs_tol=1e-9):
            out.append(f"{pid}: {where} expected {_show(exp)} got {_show(act)}")
    elif type(exp) is not type(act) or exp != act:
        out.append(f"{pid}: {where} expected {_show(exp)} got {_show(act)}")
