"""Segments: named CEL rules over the profile view, their memberships, and the changes between them. Pure.

``rules`` compiles and type-checks a rule, ``evaluate`` applies it to a rendered view and scores,
``changes`` turns a new evaluation into a ``segments.changes`` record, ``timing`` says when time alone can
change the answer, ``definitions`` names and versions rules. See ``docs/segments.md``.
"""

from profiles.segments.changes import (
    Cause,
    DefinitionCause,
    ErasureCause,
    EventCause,
    ModelCause,
    PromotionCause,
    SegmentChange,
    TimerCause,
    erasure_exits,
    promotion_changes,
    transition,
)
from profiles.segments.definitions import DefinitionError, SegmentDefinition, save
from profiles.segments.evaluate import Evaluation, context, evaluate, evaluate_in
from profiles.segments.rules import CompiledRule, RuleError, compile_rule
from profiles.segments.timing import next_time_change

__all__ = [
    "Cause",
    "CompiledRule",
    "DefinitionCause",
    "DefinitionError",
    "ErasureCause",
    "Evaluation",
    "EventCause",
    "ModelCause",
    "PromotionCause",
    "RuleError",
    "SegmentChange",
    "SegmentDefinition",
    "TimerCause",
    "compile_rule",
    "context",
    "erasure_exits",
    "evaluate",
    "evaluate_in",
    "next_time_change",
    "promotion_changes",
    "save",
    "transition",
]
