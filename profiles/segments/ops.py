"""The runtime side of the rule language: CEL's operators over plain view values, with CEL's error value.

A rule is type-checked when it is saved, so at run time operands have their declared types, or are null,
or are missing (a map key the profile does not have). CEL gives those cases an *error value* rather than
an exception: ``&&`` and ``||`` absorb it when the other side decides the result (``false && err`` is
false, ``true || err`` is true), everything else propagates it, and a rule whose result is the error value
selects nobody. ``ERR`` is that value.

>>> false, true, err = (lambda _: False), (lambda _: True), (lambda _: ERR)
>>> conj(false, err, {}), disj(err, true, {}), conj(true, err, {}) is ERR
(False, True, True)
>>> less(None, 3) is ERR, equal(None, 3), equal(None, None)
(True, False, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from profiles.segments.fields import Path


class _Err:
    """CEL's error value: what ordering null, a missing key or dividing by zero gives."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ERR"


ERR: Final = _Err()
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: A compiled rule node: its value given the evaluation context (the view plus ``scores``).
Fn = Callable[[Mapping[str, Any]], Any]


def read(root: Any, path: Path) -> Any:
    """The value at ``path``; ERR when a step is missing or crosses a null (the leaf itself may be null).

    >>> read({"rfm": None}, ("rfm", "recency_days")), read({"rfm": None}, ("rfm",)), read({"a": {}}, ("a", "b"))
    (ERR, None, ERR)
    """
    value = root
    try:
        for step in path:
            value = value[step]
    except (KeyError, TypeError):  # a missing key, or a step into null, a number or a string
        return ERR
    return value


def conj(left: Fn, right: Fn, root: Mapping[str, Any]) -> Any:
    a = left(root)
    if a is False:
        return False
    b = right(root)
    if b is False:
        return False
    return True if a is True and b is True else ERR


def disj(left: Fn, right: Fn, root: Mapping[str, Any]) -> Any:
    a = left(root)
    if a is True:
        return True
    b = right(root)
    if b is True:
        return True
    return False if a is False and b is False else ERR


def negate(a: Any) -> Any:
    return ERR if a is ERR else not a


def equal(a: Any, b: Any) -> Any:
    """CEL equality: defined for null too (null equals only null); numbers compare across int and double."""
    if a is ERR or b is ERR:
        return ERR
    return a == b


def not_equal(a: Any, b: Any) -> Any:
    result = equal(a, b)
    return result if result is ERR else not result


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def op(a: Any, b: Any) -> Any:
        if a is ERR or b is ERR or a is None or b is None:
            return ERR
        return compare(a, b)

    return op


less = _ordered(lambda a, b: a < b)
less_equal = _ordered(lambda a, b: a <= b)
greater = _ordered(lambda a, b: a > b)
greater_equal = _ordered(lambda a, b: a >= b)


def contained(a: Any, b: Any) -> Any:
    """``a in b``: membership in a list, or key presence in a map."""
    if a is ERR or b is ERR or b is None:
        return ERR
    return a in b


def _int(value: int) -> Any:
    """CEL integers are 64-bit: overflow is an error, not a big number."""
    return value if INT64_MIN <= value <= INT64_MAX else ERR


def _arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is ERR or b is ERR or a is None or b is None:
            return ERR
        result = op(a, b)
        return _int(result) if type(result) is int else result

    return apply


def _divide(a: Any, b: Any) -> Any:
    if isinstance(a, float):
        if b == 0:  # IEEE 754, as CEL's doubles: ±inf, or NaN for 0/0
            return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    if b == 0:
        return ERR
    quotient = abs(a) // abs(b)  # CEL truncates toward zero; Python's // floors
    return quotient if (a < 0) == (b < 0) else -quotient


def _modulo(a: int, b: int) -> Any:
    if b == 0:
        return ERR
    return a - b * _divide(a, b)  # the sign of the dividend, as CEL (and C) define it


add = _arith(lambda a, b: a + b)
subtract = _arith(lambda a, b: a - b)
multiply = _arith(lambda a, b: a * b)
divide = _arith(_divide)
modulo = _arith(_modulo)


def minus(a: Any) -> Any:
    if a is ERR or a is None:
        return ERR
    return _int(-a) if type(a) is int else -a


def _unary(op: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(a: Any) -> Any:
        return ERR if a is ERR or a is None else op(a)

    return apply


def _method(op: Callable[[str, str], bool]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        return ERR if a is ERR or b is ERR or a is None or b is None else op(a, b)

    return apply


size = _unary(len)
to_double = _unary(float)
STRING_METHODS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "startsWith": _method(str.startswith),
    "endsWith": _method(str.endswith),
    "contains": _method(str.__contains__),
}


def choose(condition: Any, then: Fn, otherwise: Fn, root: Mapping[str, Any]) -> Any:
    if condition is ERR:
        return ERR
    return then(root) if condition else otherwise(root)
