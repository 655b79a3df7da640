"""What defined segments cost: re-evaluating one profile change against 100 segments, and the worker's
events/s with 0 vs 100 segments (issue 5).

1. Per profile change (pure, one core): the simulator corpus folded offline, then every customer profile
   re-evaluated at its last event (``profiles.segments.membership.reevaluate``: render the view, match every
   rule, excerpts of the transitions, the next timer) with 100 segments, memberships unchanged (the common
   case) and all of them entered (a transition each: excerpt, change id); with none (the render alone, in
   effect; the worker skips the call when no segment is live); and the render alone, the baseline that any
   evaluation pays once. Best of 3 passes.
2. The worker from cold over the same corpus into two namespaces: one with no segment, one with the same
   100 segments defined before it starts (evaluation after every batch, timers, ``segments.changes``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bench.harness import Figure, Ratio, bench_settings, best_us, folded_states, run_namespace
from bench.profile_worker import corpus, raw_ends, topics_of, worker_throughput
from profiles.config import FoldConfig
from profiles.segments.changes import EventCause
from profiles.segments.definitions import save
from profiles.segments.membership import Reevaluation, Segments, reevaluate
from profiles.state import ProfileState
from profiles.view import render
from services.settings import Settings
from tests.kafka_support import produce_raw
from tests.worker_support import define_segments

WINDOWS = ("1h", "24h", "7d", "30d", "90d")
METRICS = ("clicks", "product_views", "add_to_carts", "orders", "spend", "email_opens", "email_clicks", "mentions")


def hundred_rules() -> dict[str, str]:
    """100 rules of the kinds marketing tools define: window thresholds, lifetime figures, stages, and
    combinations of them."""
    rules: dict[str, str] = {}
    for window in WINDOWS:
        for metric in METRICS:
            for threshold in ("1", "3"):
                value = f"{threshold}.0" if metric == "spend" else threshold
                rules[f"w_{window}_{metric}_{threshold}"] = f'windows["{window}"].{metric} >= {value}'
    stages = ("awareness", "consideration", "decision", "retention", "lapsed")
    for stage in stages:
        rules[f"stage_{stage}"] = f'journey_stage == "{stage}"'
    for n in (1, 2, 5):
        rules[f"orders_{n}"] = f"transactions.orders >= {n}"
    rules["recent_buyers"] = "rfm.recency_days < 10"
    rules["big_spenders"] = "transactions.spend > 200.0"
    rules["engaged_buyers"] = 'windows["30d"].clicks >= 5 && transactions.orders >= 1'
    rules["cart_no_order"] = 'windows["7d"].add_to_carts >= 1 && windows["7d"].orders == 0'
    rules["email_fans"] = 'windows["30d"].email_opens >= 2 || windows["30d"].email_clicks >= 1'
    rules["vocal"] = 'windows["90d"].mentions >= 1 && social.negative_mentions >= 1'
    rules["win_back"] = 'journey_stage == "lapsed" && transactions.orders >= 2'
    rules["new_visitors"] = 'behaviour.sessions <= 2 && journey_stage == "awareness"'
    rules["loyal"] = "transactions.orders >= 3 && rfm.recency_days < 30"
    rules["browsers"] = 'windows["24h"].product_views >= 3 && windows["24h"].add_to_carts == 0'
    rules["quiet_buyers"] = 'transactions.orders >= 1 && windows["30d"].clicks == 0'
    rules["readers"] = 'windows["7d"].email_opens >= 1 && windows["7d"].clicks == 0'
    assert len(rules) == 100, len(rules)
    return rules


def _per_change_us(states: list[ProfileState], segments: Segments, config: FoldConfig, *, steady: bool) -> float:
    """µs per re-evaluation; ``steady``: the memberships do not change (the common case), else every one
    is entered (each costs a transition: excerpt, change id)."""
    cause = EventCause("bench")

    def evaluate(state: ProfileState, previous: Mapping[str, int]) -> Reevaluation:
        return reevaluate(state, previous, segments, at_ms=state.last_event_ms or 0, cause=cause, config=config)

    before = {s.profile_id: evaluate(s, {}).memberships if steady else {} for s in states}
    return best_us(states, lambda s: evaluate(s, before[s.profile_id]))


def _render_us(states: list[ProfileState], config: FoldConfig) -> float:
    return best_us(states, lambda s: render(s, s.last_event_ms or 0, config))


def run(base: Settings, events: int) -> tuple[list[Figure], list[Ratio]]:
    lines = corpus(events)
    config = base.profile.fold_config()
    rules = hundred_rules()
    hundred = Segments.of({name: save(None, name, "", rule, now_ms=0) for name, rule in rules.items()})
    states = folded_states(lines, config)
    with_100 = _per_change_us(states, hundred, config, steady=True)
    entering = _per_change_us(states, hundred, config, steady=False)
    with_0 = _per_change_us(states, Segments.of({}), config, steady=True)
    render_only = _render_us(states, config)
    logs = Path(tempfile.mkdtemp(prefix="bench-segment-cost-"))  # kept when a step fails, for post-mortems
    with bench_settings(base) as settings:
        topics = topics_of(settings)
        produce_raw(topics, lines)
        total = sum(raw_ends(settings).values())
        plain = run_namespace(settings, "plain")
        (logs / "plain").mkdir()
        plain_run = worker_throughput(settings, plain, logs / "plain", total)
        defined = run_namespace(settings, "segments")
        define_segments(settings, defined, rules)
        (logs / "segments").mkdir()
        defined_run = worker_throughput(settings, defined, logs / "segments", total)
    shutil.rmtree(logs)
    scope = f"{len(states):,} customer profiles folded from {total:,} simulator lines, best of 3"
    figures = [
        Figure("re-evaluation, 100 segments", with_100, "µs/change", f"{scope}; render + 100 rules + timer"),
        Figure("re-evaluation, 100 segments, all entered", entering, "µs/change", "every membership a transition"),
        Figure("re-evaluation, 0 segments", with_0, "µs/change", "the worker skips the call when none is live"),
        Figure("render of the view alone", render_only, "µs/change", "paid once per evaluation"),
        Figure(
            "worker, 0 segments",
            plain_run.rate,
            "events/s",
            f"{total:,} lines from cold; steady {plain_run.steady:,.0f}/s",
        ),
        Figure("worker, 100 segments", defined_run.rate, "events/s", f"same lines; steady {defined_run.steady:,.0f}/s"),
    ]
    ratios = [
        Ratio("100 segments / render alone", "re-evaluation, 100 segments", "render of the view alone"),
        Ratio("worker 100 / 0 segments", "worker, 100 segments", "worker, 0 segments"),
    ]
    return figures, ratios
