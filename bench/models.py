"""What the models cost (issue 4): the trainer's examples/s per model, and scoring per customer and per batch
of 100, each beside its baseline measured in the same run. Pure, one core, no stack.

- **Trainer**: ``ModelTrainer.learn`` (predict first for progressive validation, the recency-only and
  base-rate baselines, rolling metrics, drift detection, then learn) over examples whose features are real
  profiles' features (the simulator corpus folded offline) at instants after their last event; labels from a
  simple rule (the figure is about cost, not quality). Baseline: the bare River pipeline's ``learn_one`` on
  the same examples — the ratio is what progressive validation and monitoring add.
- **Models views**: the worker's second fold (``profiles.models.view``), which takes the snapshots and resolves
  the labels, over the corpus's identified events in event-time order: the watermark moves an hour at a time,
  each customer is folded when due, its pending snapshots, view and entries go through their stored forms,
  and only the entries up to the watermark are loaded (``streams.model_stage`` with Redis left out).
  Baseline: the live fold alone (``apply`` into one profile per customer) of the same events.
- **Scoring**: ``score_all`` (features at an instant, then every model's prediction) per customer, with the
  four models trained past their cold start, and for batches of 100 customers (what ``POST /v1/scores/batch``
  computes after its reads). Baseline: ``features()`` alone, which every score needs once.

Best of 3 passes each.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from datetime import UTC, datetime

from bench.harness import Figure, Ratio, best_us, folded_states
from bench.profile_worker import corpus
from profiles.config import DAY_MS, HOUR_MS, FoldConfig
from profiles.features import features
from profiles.fold import apply
from profiles.models.labels import Example, encode_example
from profiles.models.scoring import ServedModel, score_all
from profiles.models.specs import ModelSpec
from profiles.models.tracking import ModelTracking
from profiles.models.trainer import ModelTrainer
from profiles.models.vectors import FEATURE_DIGEST, FEATURE_NAMES
from profiles.models.view import EVENT, Entry, decode_entry, decode_view, encode_entry, encode_view, new_view
from profiles.pending_store import decode_pending, encode_pending
from profiles.state import ProfileState, new_profile
from profiles.timeutil import to_ms
from schemas.events import EVENT_DECODER, AnyEvent
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.settings import Settings

EXAMPLES_PER_MODEL = 5_000
BATCH = 100


def examples_for(
    spec: ModelSpec, states: list[ProfileState], config: FoldConfig, count: int = EXAMPLES_PER_MODEL
) -> list[Example]:
    """``count`` examples of ``spec`` from the profiles' features 0–29 days after their last event, labelled by
    a simple rule (for cost figures, not quality)."""
    out = []
    for i in range(count):
        state = states[i % len(states)]
        at = (state.last_event_ms or 0) + (i % 30) * DAY_MS
        x = features(state, at, config)
        label = float(x[spec.recency_feature] < 5) if spec.task == "binary" else float(i % 50)
        out.append(
            Example(
                example_id=f"{spec.name}-{i}",
                model=spec.name,
                profile_id=state.profile_id,
                trigger="activity",
                taken_at_ms=at,
                horizon_end_ms=at + spec.horizon_ms,
                label_known_ms=at + spec.horizon_ms,
                features=x,
                label=label,
            )
        )
    return out


def customer_events(lines: list[bytes]) -> list[tuple[AnyEvent, bytes]]:
    """The valid events of identified customers, with their JSON, in event-time order."""
    now, limits = datetime.now(UTC), ValidationLimits()
    found = [
        (event, line)
        for line in lines
        if not isinstance(event := validate_event(line, now=now, limits=limits), Rejection)
    ]
    return sorted(
        ((e, line) for e, line in found if e.customer_id is not None), key=lambda pair: to_ms(pair[0].timestamp)
    )


def fold_views(events: list[tuple[AnyEvent, bytes]], specs: Mapping[str, ModelSpec], config: FoldConfig) -> int:
    """The models views of ``events`` as the worker folds them (module docstring); returns the examples."""
    names = {FEATURE_DIGEST: FEATURE_NAMES}
    views: dict[str, bytes] = {}
    pending: dict[str, bytes] = {}
    stored: dict[str, dict[bytes, int]] = {}  # customer → encoded entry → entry time (the sorted set)
    due: dict[str, int] = {}
    index: list[tuple[int, str]] = []  # the due index: (due time, customer), stale pairs skipped
    fold_delay = min(spec.horizon_ms for spec in specs.values())
    times = [to_ms(event.timestamp) for event, _ in events]
    released, i = 0, 0
    watermark, end = times[0], times[-1] + fold_delay
    while watermark < end:
        watermark += HOUR_MS
        while i < len(events) and times[i] <= watermark:
            (event, line), at = events[i], times[i]
            i += 1
            pid = event.customer_id or ""
            stored.setdefault(pid, {})[encode_entry(Entry(at, EVENT, event.event_id, line))] = at
            if at + fold_delay < due.get(pid, end + 1):
                due[pid] = at + fold_delay
                heapq.heappush(index, (at + fold_delay, pid))
        while index and index[0][0] <= watermark:
            at, pid = heapq.heappop(index)
            if due.get(pid) != at:
                continue
            entries = stored.pop(pid, {})
            view = decode_view(views[pid]) if pid in views else new_view(pid)
            ready = [decode_entry(e) for e, at in entries.items() if at <= watermark]
            later = min((at for at in entries.values() if at > watermark), default=None)
            loaded = decode_pending(pid, pending[pid], names)[0] if pid in pending else []
            done = ModelTracking(specs, config, {0: watermark}).fold(view, ready, loaded, watermark, later_ms=later)
            released += len([encode_example(e) for e in done.examples])
            views[pid], pending[pid] = encode_view(done.view), encode_pending(done.pending)
            stored[pid] = {e: at for e, at in entries.items() if at > watermark}
            if done.due is None:
                del due[pid]
            else:
                due[pid] = done.due
                heapq.heappush(index, (done.due, pid))
    return released


def live_fold(events: list[tuple[AnyEvent, bytes]], config: FoldConfig) -> None:
    """The baseline: the same events folded once, into one profile per customer (the live fold's core)."""
    states: dict[str, ProfileState] = {}
    for event, line in events:
        pid = event.customer_id or ""
        state = states.get(pid) or states.setdefault(pid, new_profile(pid, pid))
        apply(state, EVENT_DECODER.decode(line), config)  # decoded again, as the second fold decodes its entries


def run(base: Settings, events: int) -> tuple[list[Figure], list[Ratio]]:
    config = base.profile.fold_config()
    specs = base.models.specs()
    customers = [s for s in folded_states(corpus(events), config) if s.customer_id == s.profile_id]
    figures: list[Figure] = []
    ratios: list[Ratio] = []
    served: dict[str, ServedModel] = {}
    for name, spec in specs.items():
        examples = examples_for(spec, customers, config)
        trainers: list[ModelTrainer] = []

        def learn_all(
            _: object,
            spec: ModelSpec = spec,
            examples: list[Example] = examples,
            trainers: list[ModelTrainer] = trainers,
        ) -> None:
            trainer = ModelTrainer(spec)
            for example in examples:
                trainer.learn(example)
            trainers.append(trainer)

        def bare_all(_: object, spec: ModelSpec = spec, examples: list[Example] = examples) -> None:
            model = spec.build()
            for example in examples:
                model.learn_one(example.features, example.label > 0 if spec.task == "binary" else example.label)

        trainer_us = best_us([None], learn_all) / len(examples)
        bare_us = best_us([None], bare_all) / len(examples)
        figures += [
            Figure(
                f"trainer {name}", 1e6 / trainer_us, "examples/s", f"{len(examples):,} examples, {trainer_us:.0f} µs"
            ),
            Figure(f"bare pipeline {name}", 1e6 / bare_us, "examples/s", f"learn_one alone, {bare_us:.0f} µs"),
        ]
        ratios.append(Ratio(f"trainer / bare pipeline, {name}", f"trainer {name}", f"bare pipeline {name}"))
        served[name] = ServedModel(1, trainers[-1])
    assert all(not m.trainer.cold_start for m in served.values()), "every model must be past its cold start"

    def scored(state: ProfileState) -> object:
        return score_all(state, (state.last_event_ms or 0) + DAY_MS, config, specs, served)

    def featured(state: ProfileState) -> object:
        return features(state, (state.last_event_ms or 0) + DAY_MS, config)

    batches = [customers[i : i + BATCH] for i in range(0, len(customers) - BATCH + 1, BATCH)]
    per_customer = best_us(customers, scored)
    per_batch = best_us(batches, lambda batch: [scored(s) for s in batch])
    features_only = best_us(customers, featured)
    scope = f"{len(customers):,} customer profiles, 4 trained models"
    figures += [
        Figure("score_all per customer", per_customer, "µs", scope),
        Figure(f"score_all per batch of {BATCH}", per_batch, "µs", f"{len(batches)} batches"),
        Figure("features alone per customer", features_only, "µs", "the baseline every score pays once"),
    ]
    ratios.append(Ratio("score_all / features alone", "score_all per customer", "features alone per customer"))
    history = customer_events(corpus(events))
    released: list[int] = []
    views_us = best_us([history], lambda h: released.append(fold_views(h, specs, config))) / len(history)
    fold_us = best_us([history], lambda h: live_fold(h, config)) / len(history)
    figures += [
        Figure(
            "models views per customer event",
            views_us,
            "µs",
            f"{len(history):,} events, {released[-1]:,} examples released, codecs included",
        ),
        Figure("live fold per customer event", fold_us, "µs", "apply alone, the baseline"),
    ]
    ratios.append(Ratio("models views / live fold", "models views per customer event", "live fold per customer event"))
    return figures, ratios
