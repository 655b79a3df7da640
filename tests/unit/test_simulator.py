"""The simulator: reproducible, valid, faulty in exactly the advertised ways, and consistent with its truth."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer

from schemas.events import Envelope
from schemas.validation import Reason, Rejection, ValidationLimits, validate_event
from services.cli.simulate import default_truth_path, simulate
from services.simulator import Simulation, SimulationConfig, SimulationStats
from services.simulator.faults import MALFORMED_WEIGHTS, Faults, applicable_reasons
from services.simulator.sampling import seeded_rng
from services.simulator.texts import mention_text

CUSTOMERS = 80
DAYS = 28
SEED = 12
START = datetime(2025, 1, 1, tzinfo=UTC)
NOW = START + timedelta(days=DAYS + 1)
LIMITS = ValidationLimits()
BAD_ID = re.compile(rb'"event_id":"(bad-\d+-\d+-([a-z_]+))"')
CUSTOMER_INITIATED = {"opened", "clicked", "unsubscribed", "complained"}


@dataclass
class Run:
    stats: SimulationStats
    lines: list[bytes]
    truth: list[dict[str, Any]]
    valid: list[tuple[bytes, Envelope]] = field(default_factory=list)  # first occurrences, in output order
    copies: list[bytes] = field(default_factory=list)  # repeated valid lines
    malformed: list[tuple[bytes, str, Rejection | Envelope]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw, _ in self.valid]


def _generate(config: SimulationConfig) -> tuple[Simulation, list[bytes], list[bytes]]:
    sim = Simulation(config)
    lines = list(sim.lines())
    return sim, lines, list(sim.truth_lines())


@pytest.fixture(scope="module")
def run() -> Run:
    config = SimulationConfig(
        customers=CUSTOMERS, days=DAYS, seed=SEED, duplicate_rate=0.03, late_rate=0.03, malformed_rate=0.03
    )
    sim, lines, truth = _generate(config)
    out = Run(sim.stats, lines, [orjson.loads(t) for t in truth])
    seen: set[str] = set()
    for raw in lines:
        bad = BAD_ID.search(raw)
        result = validate_event(raw, now=NOW, limits=LIMITS)
        if bad:
            out.malformed.append((raw, bad.group(2).decode(), result))
            continue
        assert isinstance(result, Envelope), (raw[:300], result)
        if result.event_id in seen:
            out.copies.append(raw)
        else:
            seen.add(result.event_id)
            out.valid.append((raw, result))
    return out


def _ms(ts: datetime) -> float:
    return ts.timestamp() * 1000


# --- reproducibility -------------------------------------------------------------------------------------------


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not() -> None:
    config = SimulationConfig(customers=25, days=7, seed=5)
    _, lines_a, truth_a = _generate(config)
    _, lines_b, truth_b = _generate(config)
    assert lines_a == lines_b
    assert truth_a == truth_b
    _, lines_c, truth_c = _generate(SimulationConfig(customers=25, days=7, seed=6))
    assert lines_c != lines_a
    assert truth_c != truth_a


def test_fault_rates_change_arrivals_but_not_the_events() -> None:
    def events(rate: float | None) -> set[tuple[str, str]]:
        config = SimulationConfig(customers=25, days=7, seed=5)
        if rate is not None:
            config = replace(config, duplicate_rate=rate, late_rate=rate, malformed_rate=rate)
        _, lines, _ = _generate(config)
        out = set()
        for raw in lines:
            event = validate_event(raw, now=START + timedelta(days=8), limits=LIMITS)
            if isinstance(event, Envelope) and not event.event_id.startswith("bad-"):
                out.add((event.event_id, event.timestamp.isoformat()))
        return out

    assert events(None) == events(0.0) == events(0.1)


# --- validity and faults -------------------------------------------------------------------------------------


def test_every_event_validates_and_carries_the_envelope(run: Run) -> None:
    assert run.stats.events == len(run.valid) > 3000
    for raw, event in run.valid:
        assert event.schema_version == 1
        assert event.source in {"web", "esp", "shop", "social"}
        assert event.received_at is not None
        assert event.timestamp.utcoffset() is not None
        assert re.fullmatch(r"ev-12-\d+-\d+", event.event_id)
        assert re.search(rb'"timestamp":"[^"]+\.\d{3}(Z|[+-]\d{2}:\d{2})"', raw)


def test_sources_use_their_own_offsets(run: Run) -> None:
    offsets: dict[str, set[str]] = defaultdict(set)
    for raw, event in run.valid:
        ts = orjson.loads(raw)["timestamp"]
        offsets[event.source].add("Z" if ts.endswith("Z") else ts[-6:])
    assert offsets["shop"] == {"Z"}
    assert offsets["esp"] == {"Z"}
    assert offsets["social"] <= {"-08:00"}
    assert {"+01:00", "+00:00"} <= offsets["web"]


def test_every_malformed_line_is_rejected_for_its_advertised_reason(run: Run) -> None:
    counts: Counter[str] = Counter()
    for raw, reason, result in run.malformed:
        assert isinstance(result, Rejection), raw[:200]
        assert result.code.value == reason, (raw[:300], result.as_dict())
        counts[reason] += 1
    assert counts == run.stats.malformed
    assert len(counts) >= 12  # the rare classes are covered exhaustively below


@pytest.mark.parametrize("reason", list(MALFORMED_WEIGHTS))
def test_each_defect_is_rejected_with_its_reason_for_every_event_type(run: Run, reason: Reason) -> None:
    faults = Faults(1, duplicate_rate=0.0, late_rate=0.0, malformed_rate=0.0)
    samples: dict[str, dict[str, Any]] = {}
    for event in run.events():
        samples.setdefault(event["type"], event)
    assert set(samples) == {"click", "email", "purchase", "social_mention", "identify"}
    for kind, event in samples.items():
        if reason not in applicable_reasons(event):
            assert reason in {Reason.UNKNOWN_ACTION, Reason.MISSING_IDENTITY}
            assert kind in {"identify", "social_mention"}
            continue
        raw = faults.malform(event, reason, 7)
        result = validate_event(raw, now=datetime(2030, 1, 1, tzinfo=UTC), limits=LIMITS)
        assert isinstance(result, Rejection), (kind, raw[:300])
        assert result.code is reason, (kind, result.as_dict())
        assert b"bad-1-7-" + reason.value.encode() in raw


def test_duplicates_are_byte_identical_copies_of_an_earlier_line(run: Run) -> None:
    first_raw = {event.event_id: raw for raw, event in run.valid}
    assert len(run.copies) == run.stats.duplicates > 0
    copied = Counter(orjson.loads(copy)["event_id"] for copy in run.copies)
    for event_id, n in copied.items():
        assert n == 1
        assert first_raw[event_id] in run.copies


def test_late_events_arrive_an_hour_or_more_after_they_happened(run: Run) -> None:
    delays = [_ms(event.received_at) - _ms(event.timestamp) for _, event in run.valid if event.received_at]
    late = [d for d in delays if d >= 3_600_000]
    assert len(late) == run.stats.late > 0
    assert max(late) <= 3 * 86_400_000
    assert all(0 <= d <= 10_000 for d in delays if d < 3_600_000)


def test_output_is_in_arrival_order(run: Run) -> None:
    received = [event.received_at for _, event in run.valid]
    assert all(a is not None and b is not None and a <= b for a, b in pairwise(received))
    assert run.stats.lines == len(run.lines)


# --- identities ----------------------------------------------------------------------------------------------


def _identifies(run: Run) -> dict[str, Envelope]:
    out: dict[str, Envelope] = {}
    for _, event in run.valid:
        if event.type == "identify":
            assert event.anonymous_id is not None
            assert event.anonymous_id not in out, "a device is identified once"
            out[event.anonymous_id] = event
    return out


def test_anonymous_browsing_comes_before_identify_and_identified_browsing_after(run: Run) -> None:
    identifies = _identifies(run)
    anonymous_before = 0
    for _, event in run.valid:
        if event.type != "click":
            continue
        assert event.anonymous_id is not None
        link = identifies.get(event.anonymous_id)
        if event.customer_id is None:
            assert link is None or event.timestamp < link.timestamp
            anonymous_before += link is not None
        else:
            assert link is not None
            assert event.customer_id == link.customer_id
            assert event.timestamp > link.timestamp
    assert anonymous_before > 0
    anonymous_only = {e.anonymous_id for _, e in run.valid if e.anonymous_id and e.anonymous_id not in identifies}
    assert anonymous_only, "some visitors never identify"
    devices = Counter(link.customer_id for link in identifies.values())
    assert max(devices.values()) == 2, "some customers identify a second device"


def test_customer_events_come_only_after_the_customer_identified(run: Run) -> None:
    first_identify: dict[str, datetime] = {}
    for link in _identifies(run).values():
        assert link.customer_id is not None
        prior = first_identify.get(link.customer_id)
        first_identify[link.customer_id] = link.timestamp if prior is None else min(prior, link.timestamp)
    kinds: Counter[str] = Counter()
    for _, event in run.valid:
        kind = event.type
        if kind in {"purchase", "email", "social_mention"}:
            assert event.customer_id is not None
            assert event.anonymous_id is None
            assert event.timestamp > first_identify[event.customer_id]
            kinds[kind] += 1
    assert kinds["purchase"] > 0
    assert kinds["email"] > 0


# --- purchases -----------------------------------------------------------------------------------------------


def test_orders_have_items_and_consistent_totals(run: Run) -> None:
    currency: dict[str, str] = {}
    orders = 0
    for event in run.events():
        if event["type"] != "purchase" or event["action"] != "order":
            continue
        orders += 1
        assert 1 <= len(event["items"]) <= 5
        assert len({item["product_id"] for item in event["items"]}) == len(event["items"])
        gross = sum(item["quantity"] * item["unit_price"] for item in event["items"])
        assert event["total"] == pytest.approx(round(gross - event.get("discount", 0.0), 2), abs=0.005)
        assert event["total"] > 0
        assert currency.setdefault(event["customer_id"], event["currency"]) == event["currency"]
    assert orders > 20
    assert set(currency.values()) <= {"EUR", "USD", "GBP"}


def test_refunds_reference_an_earlier_order_of_the_same_customer(run: Run) -> None:
    orders: dict[str, dict[str, Any]] = {}
    refunds = []
    for event in run.events():
        if event["type"] == "purchase":
            if event["action"] == "order":
                assert event["order_id"] not in orders
                orders[event["order_id"]] = event
            else:
                refunds.append(event)
    assert refunds
    for refund in refunds:
        order = orders[refund["order_id"]]
        assert order["customer_id"] == refund["customer_id"]
        assert order["currency"] == refund["currency"]
        assert 0 < refund["total"] <= order["total"]
        refund_ms = _ms(datetime.fromisoformat(refund["timestamp"]))
        order_ms = _ms(datetime.fromisoformat(order["timestamp"]))
        assert 86_400_000 <= refund_ms - order_ms <= 14 * 86_400_000


def test_email_clicks_start_sessions_tagged_with_the_campaign(run: Run) -> None:
    campaigns = {e["campaign_id"] for e in run.events() if e["type"] == "email"}
    tagged = [e for e in run.events() if e["type"] == "click" and e.get("utm_source") == "email"]
    assert tagged
    assert {e["utm_campaign"] for e in tagged} <= campaigns
    assert all(e["customer_id"] is not None for e in tagged)


# --- ground truth --------------------------------------------------------------------------------------------

TRUTH_SERIES = ("p_order", "expected_orders", "expected_spend", "p_active", "p_open", "engagement", "hazard")


def test_truth_has_one_record_per_person_with_the_promised_fields(run: Run) -> None:
    assert [t["index"] for t in run.truth] == list(range(CUSTOMERS))
    for t in run.truth:
        for key in ("customer_id", "anonymous_ids", "identified_at", "churn_day", "churned_at", "traits"):
            assert key in t
        for name in (*TRUTH_SERIES, "orders", "gross", "refunded"):
            assert len(t[name]) == DAYS + 90, name
        for name in ("p_order", "p_active", "p_open", "hazard"):
            assert all(0.0 <= p <= 1.0 for p in t[name]), name
        traits = t["traits"]
        for key in ("activity", "purchase_propensity", "churn_hazard", "spend_level", "p_open", "p_click",
                    "sentiment_tendency", "mention_rate", "category_prefs", "currency"):  # fmt: skip
            assert key in traits
        assert sum(traits["category_prefs"].values()) == pytest.approx(1.0)
        if t["customer_id"] is None:
            assert t["identify_traits"] is None
            assert not any(t["p_order"])
        else:
            assert t["customer_id"] == f"c-{t['index']:06d}"
            assert t["identify_traits"]["email"] == f"c{t['index']}@example.com"
    assert any(t["customer_id"] is None for t in run.truth)
    assert any(t["churn_day"] is not None for t in run.truth)


def test_truth_matches_the_stream(run: Run) -> None:
    by_id = {t["customer_id"]: t for t in run.truth if t["customer_id"]}
    anonymous = {a: t for t in run.truth for a in t["anonymous_ids"]}
    orders: Counter[str] = Counter()
    gross: defaultdict[str, float] = defaultdict(float)
    first_identify: dict[str, str] = {}
    last_active: dict[int, datetime] = {}
    for event in run.events():
        who = by_id[event["customer_id"]] if event.get("customer_id") else anonymous[event["anonymous_id"]]
        if event.get("anonymous_id"):
            assert anonymous[event["anonymous_id"]] is who
        if event["type"] == "purchase" and event["action"] == "order":
            orders[event["customer_id"]] += 1
            gross[event["customer_id"]] += event["total"]
        if event["type"] == "identify":
            ts = event["timestamp"]
            prior = first_identify.get(event["customer_id"])
            if prior is None or datetime.fromisoformat(ts) < datetime.fromisoformat(prior):
                first_identify[event["customer_id"]] = ts
        if event["type"] in {"click", "identify", "social_mention"} or event.get("action") in CUSTOMER_INITIATED:
            ts_dt = datetime.fromisoformat(event["timestamp"])
            last_active[who["index"]] = max(last_active.get(who["index"], ts_dt), ts_dt)
    for cid, t in by_id.items():
        assert sum(t["orders"][:DAYS]) == orders[cid]
        assert sum(t["gross"][:DAYS]) == pytest.approx(gross[cid], abs=0.01)
        if cid in first_identify:
            assert datetime.fromisoformat(t["identified_at"]) == datetime.fromisoformat(first_identify[cid])
        else:
            assert t["identified_at"] is None
    for t in run.truth:
        if t["churned_at"] is not None and t["index"] in last_active:
            assert last_active[t["index"]] < datetime.fromisoformat(t["churned_at"]), "churned people stay silent"
        if t["churn_day"] is not None:
            assert not any(t["p_active"][t["churn_day"] :])


def test_truth_probabilities_are_calibrated_on_the_stream(run: Run) -> None:
    """The oracle quantities drive generation, so observed counts sit within a few standard deviations."""
    owner = {a: t["index"] for t in run.truth for a in t["anonymous_ids"]}
    owner.update({t["customer_id"]: t["index"] for t in run.truth if t["customer_id"]})
    active: set[tuple[int, int]] = set()
    for event in run.events():
        if event["type"] in {"click", "identify", "social_mention"} or event.get("action") in CUSTOMER_INITIATED:
            day = int((datetime.fromisoformat(event["timestamp"]) - START) / timedelta(days=1))
            active.add((owner[event.get("customer_id") or event["anonymous_id"]], day))
    p_active = [p for t in run.truth for p in t["p_active"][:DAYS]]
    expected = sum(p_active)
    sd = math.sqrt(sum(p * (1 - p) for p in p_active))
    assert abs(len(active) - expected) < 5 * sd + 5
    expected_orders = sum(x for t in run.truth for x in t["expected_orders"])
    realised = sum(x for t in run.truth for x in t["orders"])
    assert abs(realised - expected_orders) < 5 * math.sqrt(expected_orders) + 5


# --- texts, CLI, other starts --------------------------------------------------------------------------------


def test_mention_texts_follow_the_sentiment_tendency() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: PLC0415

    analyzer = SentimentIntensityAnalyzer()
    rng = seeded_rng("test-texts")

    def mean_compound(tendency: float) -> float:
        scores = [analyzer.polarity_scores(mention_text(rng, tendency, k % 12)[1])["compound"] for k in range(150)]
        assert all("Rapport Shop" in mention_text(rng, tendency, 0)[1] for _ in range(5))
        return float(sum(scores) / len(scores))

    assert mean_compound(0.9) > 0.4
    assert mean_compound(-0.9) < -0.3
    assert -0.3 < mean_compound(0.0) < 0.3


def test_any_start_instant_keeps_events_inside_the_simulated_window() -> None:
    start = datetime.fromisoformat("2025-03-10T15:42:17.250+01:00")
    sim, lines, _ = _generate(SimulationConfig(customers=30, days=5, seed=2, start=start))
    end = start + timedelta(days=5)
    n = 0
    for raw in lines:
        event = validate_event(raw, now=end + timedelta(minutes=1), limits=LIMITS)
        if isinstance(event, Envelope):
            assert start <= event.timestamp < end
            n += 1
    assert n == sim.stats.events + sim.stats.duplicates > 0


def test_cli_writes_events_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "traffic.jsonl"
    simulate(customers=15, days=4, seed=3, out=out)
    truth = tmp_path / "traffic.truth.jsonl"
    assert default_truth_path(out) == truth
    assert len(truth.read_bytes().splitlines()) == 15
    lines = out.read_bytes().splitlines()
    assert lines
    sim = Simulation(SimulationConfig(customers=15, days=4, seed=3))
    assert lines == list(sim.lines())
    assert "15 people" in capsys.readouterr().err

    other = tmp_path / "x" / "truth"
    simulate(customers=5, days=2, seed=3, out=tmp_path / "x" / "events", truth=other, rate=1e9)
    assert len(other.read_bytes().splitlines()) == 5


def test_cli_needs_exactly_one_destination_and_an_aware_start(tmp_path: Path) -> None:
    with pytest.raises(typer.BadParameter):
        simulate(customers=5, days=2)
    with pytest.raises(typer.BadParameter):
        simulate(customers=5, days=2, out=tmp_path / "a.jsonl", to_kafka=True)
    with pytest.raises(typer.BadParameter):
        simulate(customers=5, days=2, out=tmp_path / "a.jsonl", start="2025-01-01T00:00:00")


def test_invalid_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SimulationConfig(customers=0, days=1)
    with pytest.raises(ValueError, match="offset"):
        SimulationConfig(customers=1, days=1, start=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="rate"):
        Simulation(SimulationConfig(customers=1, days=1, late_rate=1.5))
    sim = Simulation(SimulationConfig(customers=1, days=1))
    with pytest.raises(RuntimeError):
        next(sim.truth_lines())


def test_each_timed_line_comes_with_its_received_at_in_arrival_order() -> None:
    """What ``--real-time`` holds each line until (``held_until_arrival``): its arrival, as the line says."""
    config = SimulationConfig(customers=15, days=4, seed=3, late_rate=0.2, duplicate_rate=0.1, malformed_rate=0.0)
    timed = list(Simulation(config).timed_lines())
    assert [arrival for arrival, _ in timed] == sorted(arrival for arrival, _ in timed)
    seen: set[bytes] = set()
    for arrival, line in timed:
        received = round(datetime.fromisoformat(orjson.loads(line)["received_at"]).timestamp() * 1000)
        # A duplicate is the same bytes sent again later: its received_at is the first one's.
        assert arrival > received if line in seen else arrival == received
        seen.add(line)
    assert len(seen) < len(timed), "duplicates are in it: the check above can fail"
    assert [line for _, line in timed] == list(Simulation(config).lines())


def test_real_time_writes_the_lines_of_the_past_unchanged(tmp_path: Path) -> None:
    """2025 is past: nothing is held (``held_until_arrival``'s doctest holds lines of the future)."""
    simulate(customers=15, days=4, seed=3, out=tmp_path / "live.jsonl", real_time=True)
    simulate(customers=15, days=4, seed=3, out=tmp_path / "plain.jsonl")
    assert (tmp_path / "live.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
