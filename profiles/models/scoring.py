"""The scores of a profile at an ``as_of`` instant, from the loaded models. Pure given the models.

A score comes from the model when its latest snapshot has learned from at least the spec's
``min_examples`` labelled examples, and otherwise from the spec's documented heuristic, flagged
``cold_start`` (with the model's version when there is one, so a reader sees it is still warming up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from profiles.config import FoldConfig
from profiles.features import features
from profiles.models.snapshots import ModelSnapshot
from profiles.models.specs import ModelSpec
from profiles.models.trainer import ModelTrainer, restore
from profiles.state import ProfileState


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model as a serving process holds it: the trainer of a verified snapshot, and its version."""

    version: int
    trainer: ModelTrainer


def served_model(snapshot: ModelSnapshot, spec: ModelSpec) -> ServedModel:
    """What a serving process keeps after loading ``snapshot`` (``load_snapshot``) for ``spec``."""
    return ServedModel(snapshot.meta.version, restore(snapshot, spec))


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    model: str
    model_version: int | None  # None: no snapshot of the model exists yet
    as_of_ms: int
    computed_at_ms: int | None  # the reader's clock, like the profile's meta.computed_at; None offline
    cold_start: bool


def score(
    spec: ModelSpec,
    feats: dict[str, float],
    model: ServedModel | None,
    *,
    as_of_ms: int,
    computed_at_ms: int | None = None,
) -> Score:
    """The score of ``spec`` for ``feats`` (the profile's features at ``as_of_ms``).

    >>> from profiles.models.specs import default_specs
    >>> spec = default_specs()["email_open"]
    >>> score(spec, {"email_delivered": 0.0, "email_open_rate": 0.0}, None, as_of_ms=0)
    Score(value=0.25, model='email_open', model_version=None, as_of_ms=0, computed_at_ms=None, cold_start=True)
    """
    if model is None or model.trainer.cold_start:
        return Score(
            value=spec.cold_start(feats, spec.horizon_days),
            model=spec.name,
            model_version=None if model is None else model.version,
            as_of_ms=as_of_ms,
            computed_at_ms=computed_at_ms,
            cold_start=True,
        )
    return Score(
        value=model.trainer.predict(feats),
        model=spec.name,
        model_version=model.version,
        as_of_ms=as_of_ms,
        computed_at_ms=computed_at_ms,
        cold_start=False,
    )


def score_all(
    state: ProfileState,
    as_of_ms: int,
    config: FoldConfig,
    specs: Mapping[str, ModelSpec],
    models: Mapping[str, ServedModel],
    *,
    computed_at_ms: int | None = None,
) -> dict[str, Score]:
    """Every spec's score for one profile at ``as_of_ms``, from one computation of its features."""
    feats = features(state, as_of_ms, config)
    return {
        name: score(spec, feats, models.get(name), as_of_ms=as_of_ms, computed_at_ms=computed_at_ms)
        for name, spec in specs.items()
    }


def score_values(
    state: ProfileState,
    as_of_ms: int,
    config: FoldConfig,
    specs: Mapping[str, ModelSpec],
    models: Mapping[str, ServedModel],
) -> dict[str, float]:
    """Just the values of ``score_all``: what segment rules read as ``scores.<name>``."""
    return {name: s.value for name, s in score_all(state, as_of_ms, config, specs, models).items()}
