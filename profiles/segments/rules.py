"""Compiling a segment rule: parse (CEL, by ``celpy``'s parser), type-check against the profile, lower.

>>> rule = compile_rule('windows["7d"].orders >= 2 && scores.churn_risk > 0.7')
>>> sorted(rule.reads)
[('scores', 'churn_risk'), ('windows', '7d', 'orders')]
>>> try:
...     compile_rule("transactions.ordrs > 1")
... except RuleError as error:
...     print(error.line, error.column, error.field, "|", error.message.split("?")[0])
1 14 transactions.ordrs | unknown field 'transactions.ordrs'; did you mean 'orders'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from celpy.celparser import CELParseError, CELParser
from lark.exceptions import UnexpectedInput, UnexpectedToken

from profiles.segments.check import Checker, CheckError
from profiles.segments.fields import Path
from profiles.segments.ops import Fn

#: Longer rules are refused before parsing: a rule is a condition, not a program.
MAX_RULE_LENGTH: Final = 2000


class RuleError(ValueError):
    """A rule that cannot be saved: what is wrong, where (0-based offset into the text), and which field."""

    def __init__(self, message: str, position: int, field: str | None, text: str) -> None:
        self.message, self.position, self.field = message, position, field
        before = text[:position]
        self.line = before.count("\n") + 1
        self.column = position - (before.rfind("\n") + 1) + 1
        super().__init__(f"{self.line}:{self.column}: {message}")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    text: str
    #: Every profile field the rule reads, e.g. ``("windows", "7d", "orders")``: the excerpt, and the timers.
    reads: frozenset[Path]
    fn: Fn

    def matches(self, root: Mapping[str, Any]) -> bool:
        """Membership alone, without the excerpt: what a worker needs for every segment on every change."""
        return self.fn(root) is True


@cache
def _parser() -> CELParser:
    """Built at the first rule, not at import: lark builds the grammar's tables in ~0.1 s, which every process
    that merely imports the segments (each ``rapport`` command among them) would pay."""
    return CELParser()


def compile_rule(text: str) -> CompiledRule:
    """Check ``text`` and compile it, or raise ``RuleError`` naming the position and the field."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(
            f"rule too long ({len(text)} characters, at most {MAX_RULE_LENGTH})", MAX_RULE_LENGTH, None, text
        )
    try:
        tree = _parser().parse(text)
    except (CELParseError, UnexpectedInput) as error:
        position = _error_offset(text, error)
        raise RuleError(_syntax_message(text, position), position, None, text) from None
    checker = Checker()
    try:
        typed = checker.check(tree)
    except CheckError as error:
        raise RuleError(error.message, error.position, error.field, text) from None
    if typed.type.kind != "bool":
        raise RuleError(f"a rule must be a condition (bool), not {typed.name()}", 0, None, text)
    return CompiledRule(text, frozenset(checker.reads), typed.fn)


def _syntax_message(text: str, position: int) -> str:
    """celpy's own message is the line with a caret under the column, which the position already says.

    >>> _syntax_message("a >", 3), _syntax_message("a = 1", 2)
    ('syntax error: the rule ends too early', "syntax error near '='")
    """
    if position >= len(text.rstrip()):
        return "syntax error: the rule ends too early"
    return f"syntax error near {text[position]!r}"


def _error_offset(text: str, error: CELParseError | UnexpectedInput) -> int:
    """Where the parser gave up; the end of the text when it ran out of input (lark then names the last token)."""
    cause = error if isinstance(error, UnexpectedInput) else error.__context__
    if isinstance(cause, UnexpectedToken) and cause.token.type == "$END":
        return len(text)
    return _offset(text, error.line, error.column)


def _offset(text: str, line: int | None, column: int | None) -> int:
    lines = text.split("\n")
    line = min(max(line or 1, 1), len(lines))
    return sum(len(s) + 1 for s in lines[: line - 1]) + max((column or 1) - 1, 0)
