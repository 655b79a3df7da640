"""Saving a rule: CEL syntax, type-checked against the profile view's contract, errors with position and field."""

from __future__ import annotations

import pytest

from profiles.segments.check import MAX_NODES
from profiles.segments.rules import MAX_RULE_LENGTH, RuleError, compile_rule


@pytest.mark.parametrize(
    ("text", "line", "column", "field", "says"),
    [
        ('windows["8d"].orders > 1', 1, 9, 'windows["8d"]', "known: 1h, 24h, 30d, 7d, 90d"),
        ("transactions.ordrs > 1", 1, 14, "transactions.ordrs", "did you mean 'orders'"),
        ("behaviour.clicks.pageview > 0", 1, 18, "behaviour.clicks.pageview", "did you mean 'page_view'"),
        ("scores.churn > 0.5", 1, 8, "scores.churn", "did you mean 'churn_risk'"),
        ("custmer_id == 'c-1'", 1, 1, "custmer_id", "unknown variable"),
        ('transactions.orders > 1 && transactions.spend > "a lot"', 1, 28, "transactions.spend", "cannot order"),
        ("transactions.spend + 1 > 3.0", 1, 1, "transactions.spend", "does not mix int and double"),
        ('journey_stage == "lapsd"', 1, 18, "journey_stage", "one of: awareness, consideration"),
        ('journey_stage in ["decision", "retaintion"]', 1, 18, "journey_stage", "never 'retaintion'"),
        ("transactions.orders == null", 1, 1, "transactions.orders", "never null"),
        ("!transactions.orders", 1, 2, "transactions.orders", "must be bool"),
        ("meta.as_of > '2025'", 1, 6, "meta.as_of", "known: events_applied, last_event_at"),
        ("rfm.r_score >= 4", 1, 5, "rfm.r_score", "unknown field"),
        ("traits.country.value == 3", 1, 1, "traits.country.value", "cannot compare"),
        ("traits.nickname.value == 'x'", 1, 8, "traits.nickname", "unknown field"),
        ('"gold" in traits.birth_year.value', 1, 11, "traits.birth_year.value", "'in' needs a list or a map"),
        ("affinity[journey_stage] > 1.0", 1, 10, "affinity", "literal string"),
    ],
)
def test_a_bad_rule_names_the_position_and_the_field(text: str, line: int, column: int, field: str, says: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(text)
    error = caught.value
    assert (error.line, error.column, error.field) == (line, column, field), error
    assert says in error.message
    assert str(error).startswith(f"{line}:{column}: ")


@pytest.mark.parametrize(
    ("text", "line", "column", "says"),
    [
        ("transactions.orders > 1 &&\n  journey_stage = 'decision'", 2, 17, "syntax error near '='"),
        ("transactions.orders >", 1, 22, "syntax error: the rule ends too early"),
        ("(transactions.orders > 1", 1, 25, "syntax error: the rule ends too early"),
        ("transactions.orders > 1 &&", 1, 27, "syntax error: the rule ends too early"),
        ("transactions.orders + 1", 1, 1, "must be a condition (bool), not int"),
        ("emails.exists(e, e.endsWith('@acme.com'))", 1, 8, "no macros"),
        ("has(rfm.recency_days)", 1, 1, "unknown function has()"),
        ("transactions.orders > 1u", 1, 23, "uint literals are not supported"),
        ("Profile{} == null", 1, 1, "not supported"),
    ],
)
def test_syntax_and_unsupported_constructs_are_refused_with_a_position(
    text: str, line: int, column: int, says: str
) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(text)
    assert (caught.value.line, caught.value.column) == (line, column), caught.value
    assert says in caught.value.message
    assert caught.value.field is None


@pytest.mark.parametrize(
    ("outside", "inside", "line", "column", "says"),
    [
        (
            "transactions.orders == 9223372036854775808",
            "transactions.orders == 9223372036854775807",
            1,
            24,
            "9223372036854775808 is outside int's range",
        ),
        (
            "transactions.orders == 0x8000000000000000",
            "transactions.orders == 0x7fffffffffffffff",
            1,
            24,
            "0x8000000000000000 is outside int's range",
        ),
        (
            "transactions.orders > -9223372036854775809",
            "transactions.orders > -9223372036854775808",
            1,
            23,
            "outside int's range, -9223372036854775808 to 9223372036854775807",
        ),
        (
            r'traits.city.value == "Lyon\U00110000"',
            r'traits.city.value == "Lyon\U0010FFFF"',
            1,
            27,
            r"\U00110000 is not a Unicode code point",
        ),
        (r'traits.city.value == "\UFFFFFFFF"', r'traits.city.value == "\U0001F600"', 1, 23, r"\UFFFFFFFF is not"),
        (r'traits.city.value == "\\\999"', r'traits.city.value == "\\\377"', 1, 25, r"\999 is not"),
        ('traits.city.value == """a\nb\\U00110000"""', 'traits.city.value == """a\nb"""', 2, 2, "is not a Unicode"),
    ],
)
def test_a_literal_that_is_no_int64_or_no_code_point_is_refused_at_its_position(
    outside: str, inside: str, line: int, column: int, says: str
) -> None:
    """celpy raises a bare ``ValueError`` or ``OverflowError`` for them, which the API answered with a 500."""
    compile_rule(inside)
    with pytest.raises(RuleError) as caught:
        compile_rule(outside)
    assert (caught.value.line, caught.value.column) == (line, column), caught.value
    assert says in caught.value.message


def test_over_long_and_over_complex_rules_are_refused() -> None:
    with pytest.raises(RuleError, match="too long"):
        compile_rule("transactions.orders > 1 || " * (MAX_RULE_LENGTH // 20) + "true")
    clauses = " || ".join(f"transactions.orders > {i}" for i in range(MAX_NODES // 4 + 1))  # 4 nodes each
    assert len(clauses) < MAX_RULE_LENGTH
    with pytest.raises(RuleError, match="too complex"):
        compile_rule(clauses)
    with pytest.raises(RuleError, match="nested too deeply"):
        compile_rule("(" * 60 + "true" + ")" * 60)


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        (
            'windows["7d"].orders >= 2 && scores.churn_risk > 0.7',
            {("windows", "7d", "orders"), ("scores", "churn_risk")},
        ),
        ('"shoes" in affinity && affinity.shoes > 2.5', {("affinity", "shoes")}),
        ("size(emails) > 1", {("emails",)}),
        ('journey_stage in ["decision", "retention"]', {("journey_stage",)}),
        ("rfm != null && rfm.recency_days <= 30", {("rfm",), ("rfm", "recency_days")}),
        (
            "traits.consent.value.email && traits.country.value.startsWith('D')",
            {("traits", "consent", "value", "email"), ("traits", "country", "value")},
        ),
        (
            'email.actions["opened"] * 2 > email.actions.delivered',
            {("email", "actions", "opened"), ("email", "actions", "delivered")},
        ),
        (
            "double(transactions.items) / 2.0 >= transactions.spend",
            {("transactions", "items"), ("transactions", "spend")},
        ),
        ("true", set()),
    ],
)
def test_a_rule_reads_exactly_the_fields_it_names(text: str, reads: set[tuple[str, ...]]) -> None:
    assert compile_rule(text).reads == reads
