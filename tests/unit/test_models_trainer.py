"""Progressive validation on synthetic streams with a known answer: a model that can see the signal must
beat the baselines that cannot, the same examples must give the same model, and a concept flip must be
reported as drift."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

import pytest

from profiles.models.labels import Example
from profiles.models.metrics import RollingMetrics, spearman
from profiles.models.specs import CLV_90D, PURCHASE_PROPENSITY, ModelSpec, default_specs
from profiles.models.trainer import ModelTrainer
from tests.unit.models_support import T0

SPECS = default_specs(min_examples=100)


def stream(
    spec: ModelSpec, n: int, label_of: Callable[[float, random.Random], float], seed: int = 0
) -> Iterator[Example]:
    """Examples whose label depends on ``signal`` only; the recency feature is noise."""
    rng = random.Random(seed)
    for i in range(n):
        signal = rng.gauss(0, 1)
        x = {spec.recency_feature: rng.uniform(0, 60), "signal": signal, "noise": rng.gauss(0, 1)}
        yield Example(
            example_id=f"x-{i}",
            model=spec.name,
            profile_id=f"c-{i}",
            trigger="activity",
            taken_at_ms=T0 + i,
            horizon_end_ms=T0 + i + spec.horizon_ms,
            label_known_ms=T0 + i + spec.horizon_ms,
            features=x,
            label=label_of(signal, rng),
        )


def buys(signal: float, rng: random.Random) -> float:
    return 1.0 if signal + rng.gauss(0, 0.3) > 0.5 else 0.0


def spends(signal: float, rng: random.Random) -> float:
    return max(0.0, math.expm1(2.0 + signal + rng.gauss(0, 0.2)))


def test_a_classifier_that_sees_the_signal_beats_both_baselines() -> None:
    trainer = ModelTrainer(SPECS[PURCHASE_PROPENSITY], window=1000)
    for example in stream(trainer.spec, 4000, buys):
        trainer.learn(example)
    report = trainer.report()
    assert report["roc_auc"] is not None
    assert report["roc_auc"] > 0.9
    assert report["roc_auc"] > (report["base_rate.roc_auc"] or 0) + 0.3
    assert report["roc_auc"] > (report["recency.roc_auc"] or 0) + 0.3
    assert report["log_loss"] is not None
    assert report["log_loss"] < (report["base_rate.log_loss"] or 0)


def test_a_regressor_that_sees_the_signal_ranks_and_estimates_spend_better_than_the_baselines() -> None:
    trainer = ModelTrainer(SPECS[CLV_90D], window=1000)
    for example in stream(trainer.spec, 4000, spends):
        trainer.learn(example)
    report = trainer.report()
    assert report["spearman"] is not None
    assert report["spearman"] > 0.9
    assert report["spearman"] > (report["recency.spearman"] or 0) + 0.5
    assert report["mae"] is not None
    assert report["mae"] < (report["base_rate.mae"] or 0)
    assert report["mae"] < (report["recency.mae"] or 0)


def test_learning_the_same_examples_twice_gives_the_same_model() -> None:
    spec = SPECS[PURCHASE_PROPENSITY]
    first, second = ModelTrainer(spec), ModelTrainer(spec)
    steps_1 = [first.learn(e).prediction for e in stream(spec, 500, buys, seed=3)]
    steps_2 = [second.learn(e).prediction for e in stream(spec, 500, buys, seed=3)]
    assert steps_1 == steps_2
    probe = {spec.recency_feature: 5.0, "signal": 0.7, "noise": 0.0}
    assert first.predict(probe) == second.predict(probe)
    assert first.report() == second.report()


def test_the_prediction_scored_for_an_example_is_made_before_learning_it() -> None:
    spec = SPECS[PURCHASE_PROPENSITY]
    trainer = ModelTrainer(spec)
    example = next(stream(spec, 1, buys))
    before = trainer.predict(example.features)
    assert trainer.learn(example).prediction == before
    assert trainer.predict(example.features) != before


def test_cold_start_lasts_until_the_minimum_number_of_examples() -> None:
    trainer = ModelTrainer(SPECS[PURCHASE_PROPENSITY])
    examples = list(stream(trainer.spec, 100, buys))
    for example in examples[:99]:
        trainer.learn(example)
    assert trainer.cold_start
    trainer.learn(examples[99])
    assert not trainer.cold_start
    assert trainer.examples_seen == 100


def test_a_flipped_concept_is_reported_as_drift() -> None:
    trainer = ModelTrainer(SPECS[PURCHASE_PROPENSITY])
    drifts = [s.drift for s in map(trainer.learn, stream(trainer.spec, 3000, buys)) if s.drift]
    assert drifts == []  # a stable concept raises no alarm, nor does the loss falling while the model learns

    def flipped(signal: float, rng: random.Random) -> float:
        return 1.0 - buys(signal, rng)

    found = [s.drift for s in map(trainer.learn, stream(trainer.spec, 2000, flipped, seed=1)) if s.drift]
    assert found
    assert found[0].model == PURCHASE_PROPENSITY
    assert found[0].loss_after > found[0].loss_before
    assert 3000 < found[0].examples_seen < 3500
    assert trainer.drifts_detected == len(found)


def test_an_example_of_another_model_is_refused() -> None:
    trainer = ModelTrainer(SPECS[PURCHASE_PROPENSITY])
    example = next(stream(SPECS[CLV_90D], 1, spends))
    with pytest.raises(ValueError, match="clv_90d"):
        trainer.learn(example)


def test_rolling_metrics_forget_what_left_the_window_and_say_when_undefined() -> None:
    rolling = RollingMetrics("binary", window=4)
    assert rolling.values() == {"roc_auc": None, "log_loss": None}
    for label, p in [(1, 0.1), (0, 0.5), (1, 0.8), (1, 0.95)]:
        rolling.update(label, p)
    assert rolling.values()["roc_auc"] == pytest.approx(2 / 3)
    for _ in range(4):
        rolling.update(1, 0.9)
    assert rolling.values()["roc_auc"] is None  # one class in the window
    assert rolling.values()["log_loss"] == pytest.approx(-math.log(0.9))


def test_spearman_uses_average_ranks_for_ties() -> None:
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9487, abs=1e-4)
