"""The contract every model spec meets (in the spirit of River's estimator checks): it builds, learns one
real example, predicts in range, falls back to a heuristic in range, and survives a signed snapshot."""

from __future__ import annotations

import math

import pytest

from profiles.config import DAY_MS, HOUR_MS
from profiles.features import features
from profiles.models.labels import Example
from profiles.models.scoring import score, served_model
from profiles.models.snapshots import dump_snapshot, load_snapshot
from profiles.models.specs import ModelSpec, default_specs
from profiles.models.trainer import ModelTrainer
from profiles.state import new_profile
from tests.unit.models_support import CONFIG, T0, click, email, folded, order

SPECS = default_specs(min_examples=1)
SECRET = b"contract"

RICH = features(
    folded(
        [
            click(1, T0),
            order(2, T0 + HOUR_MS, 80.0),
            email(3, T0 + DAY_MS, "delivered"),
            email(4, T0 + DAY_MS, "opened"),
        ]
    ),
    T0 + 2 * DAY_MS,
    CONFIG,
)
EMPTY = features(new_profile("c-0", "c-0"), T0, CONFIG)


def in_range(spec: ModelSpec, value: float) -> bool:
    return math.isfinite(value) and (0.0 <= value <= 1.0 if spec.task == "binary" else value >= 0.0)


def example(spec: ModelSpec, label: float) -> Example:
    return Example(
        example_id="x",
        model=spec.name,
        profile_id="c-1",
        trigger="activity",
        taken_at_ms=T0,
        horizon_end_ms=T0 + spec.horizon_ms,
        label_known_ms=T0 + spec.horizon_ms,
        features=RICH,
        label=label,
    )


@pytest.fixture(params=sorted(SPECS), ids=str)
def spec(request: pytest.FixtureRequest) -> ModelSpec:
    found: ModelSpec = SPECS[request.param]
    return found


def test_it_builds_fresh_unfitted_pipelines(spec: ModelSpec) -> None:
    first, second = spec.build(), spec.build()
    assert first is not second
    assert spec.recency_feature in RICH


def test_it_learns_one_example_and_predicts_in_range(spec: ModelSpec) -> None:
    trainer = ModelTrainer(spec)
    label = 120.0 if spec.task == "regression" else 1.0
    step = trainer.learn(example(spec, label))
    assert in_range(spec, step.prediction)
    for x in (RICH, EMPTY):
        assert in_range(spec, trainer.predict(x))
    assert trainer.predict(RICH) > step.prediction  # it moved toward the label


def test_its_cold_start_heuristic_is_in_range(spec: ModelSpec) -> None:
    for x in (RICH, EMPTY):
        assert in_range(spec, spec.cold_start(x, spec.horizon_days))


def test_it_round_trips_through_a_signed_snapshot(spec: ModelSpec) -> None:
    trainer = ModelTrainer(spec)
    trainer.learn(example(spec, 0.0 if spec.task == "binary" else 10.0))
    blob = dump_snapshot(trainer.snapshot_meta(version=1, created_at_ms=T0, source_offset=17), trainer, SECRET)
    loaded = load_snapshot(blob, SECRET)
    assert (loaded.meta.examples_seen, loaded.meta.source_offset) == (1, 17)
    served = served_model(loaded, spec)
    assert served.trainer.predict(RICH) == trainer.predict(RICH)
    result = score(spec, RICH, served, as_of_ms=T0)
    assert (result.cold_start, result.model_version, result.value) == (False, 1, trainer.predict(RICH))
