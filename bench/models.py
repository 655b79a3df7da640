"""What the models cost (issue 4): the trainer's examples/s per model, and scoring per customer and per batch
of 100, each beside its baseline measured in the same run. Pure, one core, no stack.

- **Trainer**: ``ModelTrainer.learn`` (predict first for progressive validation, the recency-only and
  base-rate baselines, rolling metrics, drift detection, then learn) over examples whose features are real
  profiles' features (the simulator corpus folded offline) at instants after their last event; labels from a
  simple rule (the figure is about cost, not quality). Baseline: the bare River pipeline's ``learn_one`` on
  the same examples — the ratio is what progressive validation and monitoring add.
- **Scoring**: ``score_all`` (features at an instant, then every model's prediction) per customer, with the
  four models trained past their cold start, and for batches of 100 customers (what ``POST /v1/scores/batch``
  computes after its reads). Baseline: ``features()`` alone, which every score needs once.

Best of 3 passes each.
"""

from __future__ import annotations

from bench.harness import Figure, Ratio, best_us, folded_states
from bench.profile_worker import corpus
from profiles.config import DAY_MS, FoldConfig
from profiles.features import features
from profiles.models.labels import Example
from profiles.models.scoring import ServedModel, score_all
from profiles.models.specs import ModelSpec
from profiles.models.trainer import ModelTrainer
from profiles.state import ProfileState
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
    return figures, ratios
