"""Scores on read: the heuristic, flagged, until a model has learned enough; then the model's value and
version; every score of a profile from one feature computation, at an ``as_of`` the profile allows."""

from __future__ import annotations

import pytest

from profiles.config import DAY_MS
from profiles.features import FeaturesBeforeLastEventError, features
from profiles.models.labels import Example
from profiles.models.scoring import ServedModel, score, score_all
from profiles.models.specs import CHURN_RISK, PURCHASE_PROPENSITY, default_specs
from profiles.models.trainer import ModelTrainer
from tests.unit.models_support import CONFIG, T0, click, folded, order

SPECS = default_specs(min_examples=3)
STATE = folded([click(1, T0), order(2, T0 + DAY_MS)])
AS_OF = T0 + 3 * DAY_MS
FEATS = features(STATE, AS_OF, CONFIG)


def trained(n: int) -> ModelTrainer:
    spec = SPECS[PURCHASE_PROPENSITY]
    trainer = ModelTrainer(spec)
    for i in range(n):
        trainer.learn(
            Example(
                example_id=f"x-{i}",
                model=spec.name,
                profile_id="c-1",
                trigger="census",
                taken_at_ms=T0,
                horizon_end_ms=T0 + spec.horizon_ms,
                label_known_ms=T0 + spec.horizon_ms,
                features=FEATS,
                label=float(i % 2),
            )
        )
    return trainer


def test_without_a_model_the_score_is_the_heuristic_and_says_so() -> None:
    spec = SPECS[PURCHASE_PROPENSITY]
    result = score(spec, FEATS, None, as_of_ms=AS_OF, computed_at_ms=AS_OF + 5)
    assert result.cold_start
    assert result.model_version is None
    assert result.value == spec.cold_start(FEATS, spec.horizon_days)
    assert (result.as_of_ms, result.computed_at_ms) == (AS_OF, AS_OF + 5)


def test_a_model_below_the_minimum_still_serves_the_heuristic_but_names_its_version() -> None:
    spec = SPECS[PURCHASE_PROPENSITY]
    result = score(spec, FEATS, ServedModel(4, trained(2)), as_of_ms=AS_OF)
    assert (result.cold_start, result.model_version) == (True, 4)
    assert result.value == spec.cold_start(FEATS, spec.horizon_days)


def test_a_warm_model_serves_its_own_prediction() -> None:
    trainer = trained(3)
    result = score(SPECS[PURCHASE_PROPENSITY], FEATS, ServedModel(5, trainer), as_of_ms=AS_OF)
    assert (result.cold_start, result.model_version, result.value) == (False, 5, trainer.predict(FEATS))


def test_score_all_scores_every_spec_of_a_profile() -> None:
    models = {PURCHASE_PROPENSITY: ServedModel(5, trained(3))}
    scores = score_all(STATE, AS_OF, CONFIG, SPECS, models)
    assert sorted(scores) == sorted(SPECS)
    assert not scores[PURCHASE_PROPENSITY].cold_start
    assert scores[CHURN_RISK].cold_start
    assert all(s.as_of_ms == AS_OF for s in scores.values())
    with pytest.raises(FeaturesBeforeLastEventError):
        score_all(STATE, T0, CONFIG, SPECS, models)
