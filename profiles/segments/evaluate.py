"""Evaluating a compiled rule on a rendered profile view and the customer's scores. Pure.

A rule whose value is CEL's error value (it ordered a null, read a key the profile does not have, divided
by zero, and ``&&``/``||`` did not absorb it) selects nobody: membership needs a definite ``true``.

>>> from profiles.segments.rules import compile_rule
>>> view = {"transactions": {"orders": 3, "aov": None}, "journey_stage": "retention"}
>>> evaluate(compile_rule("transactions.orders >= 2 && scores.churn_risk > 0.5"), view, {"churn_risk": 0.9})
Evaluation(member=True, excerpt={'scores': {'churn_risk': 0.9}, 'transactions': {'orders': 3}})
>>> evaluate(compile_rule("transactions.aov > 10.0 || journey_stage == 'lapsed'"), view, {}).member
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from profiles.segments.fields import SCORE_NAMES
from profiles.segments.ops import ERR, read
from profiles.segments.rules import CompiledRule


@dataclass(frozen=True, slots=True)
class Evaluation:
    member: bool
    #: The fields the rule read, nested as in the view; a missing key or a field under a null shows as null.
    excerpt: dict[str, Any]


def context(view: Mapping[str, Any], scores: Mapping[str, float]) -> dict[str, Any]:
    """What rules read: the view, and every known score (null until the model has one for the customer).

    Build it once per profile change when evaluating many segments.
    """
    return {**view, "scores": {name: scores.get(name) for name in SCORE_NAMES}}


def evaluate(rule: CompiledRule, view: Mapping[str, Any], scores: Mapping[str, float]) -> Evaluation:
    return evaluate_in(rule, context(view, scores))


def evaluate_in(rule: CompiledRule, root: Mapping[str, Any]) -> Evaluation:
    return Evaluation(member=rule.matches(root), excerpt=excerpt(rule, root))


def excerpt(rule: CompiledRule, root: Mapping[str, Any]) -> dict[str, Any]:
    """Exactly the fields ``rule`` reads, with their values in ``root``.

    >>> from profiles.segments.rules import compile_rule
    >>> excerpt(compile_rule("rfm.recency_days < 30 || affinity.shoes > 1.0"), {"rfm": None, "affinity": {}})
    {'affinity': {'shoes': None}, 'rfm': None}
    """
    out: dict[str, Any] = {}
    for path in sorted(rule.reads):
        node = out
        for depth, step in enumerate(path[:-1]):
            parent = read(root, path[: depth + 1])
            if parent is None or parent is ERR:
                node[step] = None
                break
            if not isinstance(node.get(step), dict):
                node[step] = {}
            node = node[step]
        else:
            value = read(root, path)
            node[path[-1]] = None if value is ERR else value
    return out
