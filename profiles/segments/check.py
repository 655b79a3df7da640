"""Type-checking a parsed CEL rule against the profile's fields, and lowering it to Python closures.

The tree is the one ``celpy``'s parser (the CEL specification's grammar, with source positions) produces;
this module walks it once. Every node is checked — field names, map keys, operand types — and turned into
a closure over ``ops``, so evaluating a rule costs a few dict lookups and calls, never ``eval`` and never
another parse. Only a subset of CEL is accepted: no macros or comprehensions (a rule's cost is linear in
its length), no message construction, no bytes or unsigned integers.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from celpy.celtypes import DoubleType, IntType
from celpy.evaluation import CEL_ESCAPES_PAT, celstr
from lark import Token, Tree

from profiles.segments import ops
from profiles.segments.fields import BOOL, DOUBLE, INT, NULL, ROOT, STRING, Path, RuleType
from profiles.segments.ops import Fn

#: Parse-tree levels a rule may nest (each parenthesis costs ten; a chain of ``&&`` one per operand): bounds
#: the checker's recursion well inside Python's.
MAX_DEPTH: Final = 150
#: Operators, fields and literals a rule may hold: bounds evaluation cost.
MAX_NODES: Final = 200

_ORDERING: Final = {
    "relation_lt": ("<", ops.less),
    "relation_le": ("<=", ops.less_equal),
    "relation_gt": (">", ops.greater),
    "relation_ge": (">=", ops.greater_equal),
}
_ARITHMETIC: Final = {
    "addition_add": ("+", ops.add),
    "addition_sub": ("-", ops.subtract),
    "multiplication_mul": ("*", ops.multiply),
    "multiplication_div": ("/", ops.divide),
    "multiplication_mod": ("%", ops.modulo),
}
_NUMERIC: Final = frozenset({"int", "double"})


class CheckError(Exception):
    def __init__(self, message: str, position: int, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.position, self.field = message, position, field


@dataclass(frozen=True, slots=True)
class Typed:
    type: RuleType
    fn: Fn
    position: int
    path: Path | None = None  # set when the node is a profile field
    literal: Any = field(default=None)
    is_literal: bool = False

    def name(self) -> str:
        """How messages name the operand: the field, else its type.

        >>> Typed(INT, lambda r: 1, 0, path=("windows", "7d", "orders")).name()
        'windows["7d"].orders'
        """
        return format_path(self.path) if self.path is not None else self.type.describe()


def format_path(path: Path) -> str:
    """A field as a rule would spell it."""
    head, *rest = path
    return head + "".join(f".{s}" if s.isidentifier() and not s[0].isdigit() else f'["{s}"]' for s in rest)


def _literal(value: Any, rule_type: RuleType, position: int) -> Typed:
    return Typed(rule_type, lambda _: value, position, literal=value, is_literal=True)


class Checker:
    def __init__(self) -> None:
        self.reads: set[Path] = set()
        self.nodes = 0

    def fail(self, message: str, position: int, path: Path | None = None) -> NoReturn:
        raise CheckError(message, position, format_path(path) if path is not None else None)

    def check(self, tree: Tree[Token]) -> Typed:
        return self._value(tree, 0)

    # -- plumbing ---------------------------------------------------------------------------------------

    def _expr(self, tree: Tree[Token], depth: int) -> Typed:
        """A node, without recording a field read (its parent may be selecting further into it)."""
        if depth > MAX_DEPTH:
            self.fail(f"rule nested too deeply (more than {MAX_DEPTH} levels)", _pos(tree))
        handler: Callable[[Tree[Token], int], Typed] | None = getattr(self, f"on_{tree.data}", None)
        if handler is None:
            self.fail(f"{tree.data.replace('_', ' ')} is not supported in segment rules", _pos(tree))
        return handler(tree, depth + 1)

    def _value(self, tree: Tree[Token], depth: int) -> Typed:
        """A node used as a value: a profile field read here is one the rule depends on."""
        typed = self._expr(tree, depth)
        if typed.path is not None:
            self.reads.add(typed.path)
        return typed

    def _count(self, position: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.fail(f"rule too complex (more than {MAX_NODES} operators, fields and literals)", position)

    def _pass(self, tree: Tree[Token], depth: int) -> Typed:
        """Grammar levels with a single child (no operator at this level) just pass through."""
        return self._expr(_tree(tree.children[-1]), depth)

    def _binary(self, tree: Tree[Token], depth: int, combine: Callable[[Tree[Token], int], Typed]) -> Typed:
        return self._pass(tree, depth) if len(tree.children) == 1 else combine(tree, depth)

    # -- grammar levels ---------------------------------------------------------------------------------

    def on_expr(self, tree: Tree[Token], depth: int) -> Typed:
        if len(tree.children) == 1:
            return self._pass(tree, depth)
        condition, then, otherwise = (self._value(_tree(c), depth) for c in tree.children)
        self._require(condition, "bool", "the condition of ?:")
        if then.type.kind != otherwise.type.kind or then.type.kind not in {"bool", "int", "double", "string"}:
            self.fail(
                f"both branches of ?: must have one scalar type, not {then.name()} and {otherwise.name()}",
                then.position,
            )
        kind = then.type.with_nullable(then.type.nullable or otherwise.type.nullable)
        c, t, o = condition.fn, then.fn, otherwise.fn
        return Typed(kind, lambda r: ops.choose(c(r), t, o, r), condition.position)

    def on_conditionalor(self, tree: Tree[Token], depth: int) -> Typed:
        return self._binary(tree, depth, lambda t, d: self._logic(t, d, "||", ops.disj))

    def on_conditionaland(self, tree: Tree[Token], depth: int) -> Typed:
        return self._binary(tree, depth, lambda t, d: self._logic(t, d, "&&", ops.conj))

    def _logic(
        self, tree: Tree[Token], depth: int, symbol: str, op: Callable[[Fn, Fn, Mapping[str, Any]], Any]
    ) -> Typed:
        left, right = (self._value(_tree(c), depth) for c in tree.children)
        for side in (left, right):
            self._require(side, "bool", f"an operand of {symbol}")
        lf, rf = left.fn, right.fn
        return Typed(BOOL, lambda r: op(lf, rf, r), left.position)

    def on_relation(self, tree: Tree[Token], depth: int) -> Typed:
        if len(tree.children) == 1:
            return self._pass(tree, depth)
        operator, right_tree = _tree(tree.children[0]), _tree(tree.children[1])
        left = self._value(_tree(operator.children[0]), depth)
        self._count(left.position)
        if operator.data == "relation_in":
            return self._in(left, right_tree, depth)
        right = self._value(right_tree, depth)
        if operator.data in _ORDERING:
            symbol, compare = _ORDERING[operator.data]
            kinds = {left.type.kind, right.type.kind}
            if not (kinds <= _NUMERIC or kinds == {"string"}):
                self.fail(
                    f"cannot order {left.name()} and {right.name()} with {symbol}", left.position, _field(left, right)
                )
            fn: Callable[[Any, Any], Any] = compare
        else:
            self._comparable(left, right)
            fn = ops.equal if operator.data == "relation_eq" else ops.not_equal
        lf, rf = left.fn, right.fn
        return Typed(BOOL, lambda r: fn(lf(r), rf(r)), left.position)

    def on_addition(self, tree: Tree[Token], depth: int) -> Typed:
        return self._binary(tree, depth, self._arithmetic)

    def on_multiplication(self, tree: Tree[Token], depth: int) -> Typed:
        return self._binary(tree, depth, self._arithmetic)

    def _arithmetic(self, tree: Tree[Token], depth: int) -> Typed:
        operator = _tree(tree.children[0])
        left = self._value(_tree(operator.children[0]), depth)
        right = self._value(_tree(tree.children[1]), depth)
        self._count(left.position)
        symbol, fn = _ARITHMETIC[operator.data]
        kind = left.type.kind
        allowed = {"int", "double", "string"} if symbol == "+" else {"int"} if symbol == "%" else _NUMERIC
        if kind != right.type.kind or kind not in allowed:
            hint = (
                " (CEL does not mix int and double: write 2.0, or double(x))"
                if {kind, right.type.kind} == _NUMERIC
                else ""
            )
            self.fail(
                f"cannot apply {symbol} to {left.name()} and {right.name()}{hint}", left.position, _field(left, right)
            )
        result = RuleType(kind, nullable=left.type.nullable or right.type.nullable)
        lf, rf = left.fn, right.fn
        return Typed(result, lambda r: fn(lf(r), rf(r)), left.position)

    def on_unary(self, tree: Tree[Token], depth: int) -> Typed:
        if len(tree.children) == 1:
            return self._pass(tree, depth)
        operator, operand_tree = _tree(tree.children[0]), _tree(tree.children[1])
        operand = self._value(operand_tree, depth)
        self._count(operand.position)
        f = operand.fn
        if operator.data == "unary_not":
            self._require(operand, "bool", "the operand of !")
            return Typed(BOOL, lambda r: ops.negate(f(r)), operand.position)
        if operand.type.kind not in _NUMERIC:
            self.fail(f"cannot negate {operand.name()}", operand.position, operand.path)
        return Typed(operand.type, lambda r: ops.minus(f(r)), operand.position)

    on_member = _pass
    on_primary = _pass

    def on_paren_expr(self, tree: Tree[Token], depth: int) -> Typed:
        return self._value(_tree(tree.children[0]), depth)

    # -- fields -----------------------------------------------------------------------------------------

    def on_ident(self, tree: Tree[Token], depth: int) -> Typed:
        token = _token(tree.children[0])
        return self._select(Typed(ROOT, lambda r: r, token.start_pos or 0, path=()), token, str(token))

    def on_member_dot(self, tree: Tree[Token], depth: int) -> Typed:
        base = self._expr(_tree(tree.children[0]), depth)
        token = _token(tree.children[1])
        return self._select(base, token, str(token))

    def on_member_index(self, tree: Tree[Token], depth: int) -> Typed:
        base = self._expr(_tree(tree.children[0]), depth)
        key = self._value(_tree(tree.children[1]), depth)
        if base.type.kind != "map":
            self.fail(f"{base.name()} cannot be indexed (only maps can)", key.position, base.path)
        if not key.is_literal or not isinstance(key.literal, str):
            self.fail(
                "a map key must be a literal string, so the fields a rule reads are known", key.position, base.path
            )
        return self._select(base, key, key.literal)

    def _select(self, base: Typed, where: Token | Typed, name: str) -> Typed:
        position = where.position if isinstance(where, Typed) else where.start_pos or 0
        if base.path is None or base.type.kind not in {"struct", "map"}:
            self.fail(f"{base.name()} has no field {name!r}", position, base.path)
        path = (*base.path, name)
        self._count(position)
        known = base.type.fields if base.type.kind == "struct" else base.type.entries
        if known is not None and name not in known:
            what = "field" if base.path else "variable"
            guess = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {guess[0]!r}? " if guess else ""
            self.fail(f"unknown {what} {format_path(path)!r}; {hint}known: {', '.join(sorted(known))}", position, path)
        selected = known[name] if known is not None else base.type.item
        assert selected is not None
        # Type errors point at the start of the field expression, unknown names at the name itself.
        start = base.position if base.path else position
        return Typed(selected, lambda r: ops.read(r, path), start, path=path)

    # -- membership, equality and calls -----------------------------------------------------------------

    def _in(self, left: Typed, right_tree: Tree[Token], depth: int) -> Typed:
        right = self._expr(right_tree, depth)
        lf, rf = left.fn, right.fn
        if right.type.kind == "map":
            if left.type.kind != "string":
                self.fail(f"map keys are strings, not {left.name()}", left.position, _field(left, right))
            if right.path is not None:
                # A literal key reads that one entry's presence, not the whole map.
                self.reads.add((*right.path, left.literal) if left.is_literal else right.path)
            if left.is_literal and right.type.entries is not None and left.literal not in right.type.entries:
                self.fail(f"{right.name()} has no key {left.literal!r}", left.position, right.path)
            return Typed(BOOL, lambda r: ops.contained(lf(r), rf(r)), left.position)
        if right.path is not None:
            self.reads.add(right.path)
        if right.type.kind != "list" or right.type.item is None:
            self.fail(f"'in' needs a list or a map on its right, not {right.name()}", right.position, right.path)
        self._comparable(left, Typed(right.type.item, rf, right.position, right.path))
        for value in right.literal if right.is_literal else ():
            self._comparable(left, _literal(value, right.type.item, right.position))
        return Typed(BOOL, lambda r: ops.contained(lf(r), rf(r)), left.position)

    def _comparable(self, left: Typed, right: Typed) -> None:
        """Whether ``left == right`` is meaningful: same kind, or a null test of something that can be null."""
        for a, b in ((left, right), (right, left)):
            if b.type.kind == "null":
                if not a.type.nullable:
                    self.fail(f"{a.name()} is never null", a.position, a.path)
                return
            if a.type.values is not None and b.is_literal and b.literal not in a.type.values:
                options = ", ".join(sorted(a.type.values))
                self.fail(f"{a.name()} is never {b.literal!r}; it is one of: {options}", b.position, a.path)
        kinds = {left.type.kind, right.type.kind}
        if not (kinds <= _NUMERIC or (len(kinds) == 1 and kinds <= {"string", "bool"})):
            self.fail(f"cannot compare {left.name()} with {right.name()}", left.position, _field(left, right))

    def on_ident_arg(self, tree: Tree[Token], depth: int) -> Typed:
        token = _token(tree.children[0])
        position = token.start_pos or 0
        self._count(position)
        if str(token) not in {"size", "double"}:
            self.fail(f"unknown function {token}(); rules may call size(x) and double(x)", position)
        args = self._args(tree.children[1:], depth)
        if len(args) != 1:
            self.fail(f"{token}() takes one argument, not {len(args)}", position)
        (arg,) = args
        f = arg.fn
        if str(token) == "size":
            if arg.type.kind not in {"string", "list", "map"}:
                self.fail(f"size() needs a string, list or map, not {arg.name()}", arg.position, arg.path)
            return Typed(INT.with_nullable(arg.type.nullable), lambda r: ops.size(f(r)), position)
        if arg.type.kind not in _NUMERIC:
            self.fail(f"double() needs a number, not {arg.name()}", arg.position, arg.path)
        return Typed(DOUBLE.with_nullable(arg.type.nullable), lambda r: ops.to_double(f(r)), position)

    def on_member_dot_arg(self, tree: Tree[Token], depth: int) -> Typed:
        receiver = self._value(_tree(tree.children[0]), depth)
        token = _token(tree.children[1])
        position = token.start_pos or 0
        self._count(position)
        method = ops.STRING_METHODS.get(str(token))
        if method is None:
            options = ", ".join(f"{m}(s)" for m in ops.STRING_METHODS)
            self.fail(f"unknown method {token}(); rules may call {options} on strings (no macros)", position)
        args = self._args(tree.children[2:], depth)
        if len(args) != 1:
            self.fail(f"{token}() takes one argument, not {len(args)}", position)
        (arg,) = args
        if receiver.type.kind != "string" or arg.type.kind != "string":
            self.fail(f"{token}() applies to strings, not {receiver.name()} and {arg.name()}", position, receiver.path)
        rf, af = receiver.fn, arg.fn
        return Typed(BOOL, lambda r: method(rf(r), af(r)), position)

    def _args(self, children: list[Tree[Token] | Token], depth: int) -> list[Typed]:
        return [self._value(_tree(e), depth) for c in children for e in _tree(c).children]

    # -- literals ---------------------------------------------------------------------------------------

    def on_list_lit(self, tree: Tree[Token], depth: int) -> Typed:
        items = self._args(tree.children, depth)
        position = _pos(tree)
        if not items or not all(i.is_literal for i in items) or len({i.type.kind for i in items}) != 1:
            self.fail('a list must hold literals of one type, e.g. ["decision", "retention"]', position)
        values = tuple(i.literal for i in items)
        return _literal(values, RuleType("list", item=items[0].type), position)

    def on_literal(self, tree: Tree[Token], depth: int) -> Typed:
        token = _token(tree.children[0])
        position = token.start_pos or 0
        self._count(position)
        if token.type == "INT_LIT":
            try:
                value = int(IntType(token.value))
            except ValueError:  # celpy refuses an int64 overflow with a bare ValueError
                self.fail(f"{token.value} is outside int's range, {ops.INT64_MIN} to {ops.INT64_MAX}", position)
            return _literal(value, INT, position)
        if token.type == "FLOAT_LIT":
            return _literal(float(DoubleType(token.value)), DOUBLE, position)
        if token.type in {"STRING_LIT", "MLSTRING_LIT"}:
            return _literal(_string(token, position), STRING, position)
        if token.type == "BOOL_LIT":
            return _literal(token.value == "true", BOOL, position)
        if token.type == "NULL_LIT":
            return _literal(None, NULL, position)
        kind = token.type.removesuffix("_LIT").lower()
        raise CheckError(f"{kind} literals are not supported in segment rules", position)

    def _require(self, typed: Typed, kind: str, role: str) -> None:
        if typed.type.kind != kind:
            self.fail(f"{role} must be {kind}, not {typed.name()}", typed.position, typed.path)


def _string(token: Token, position: int) -> str:
    """A string literal's value, or a ``CheckError`` at the escape that names no code point (``\\U00110000``,
    beyond ``\\U0010FFFF``; ``\\999``, not octal) where celpy raises a bare ``ValueError`` or ``OverflowError``."""
    try:
        return str(celstr(token))
    except (ValueError, OverflowError):
        pass
    quotes = 3 if token.value[:3] in {'"""', "'''"} else 1
    for escape in CEL_ESCAPES_PAT.finditer(token.value, quotes, len(token.value) - quotes):
        text = escape.group()
        # celpy's own decoding, one escape at a time: the first it cannot decode is the culprit.
        try:
            celstr(Token(token.type, f'"{text}"'))
        except (ValueError, OverflowError):
            raise CheckError(
                f"{text} is not a Unicode code point (\\U escapes end at \\U0010FFFF, octal ones at \\377)",
                position + escape.start(),
            ) from None
    raise CheckError("a string literal holds an escape celpy cannot decode", position)


def _field(left: Typed, right: Typed) -> Path | None:
    return left.path if left.path is not None else right.path


def _tree(node: Tree[Token] | Token) -> Tree[Token]:
    assert isinstance(node, Tree)
    return node


def _token(node: Tree[Token] | Token) -> Token:
    assert isinstance(node, Token)
    return node


def _pos(tree: Tree[Token]) -> int:
    return 0 if tree.meta.empty else tree.meta.start_pos
