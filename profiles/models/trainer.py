"""Progressive validation: for each example, predict, score the prediction, then learn. Pure.

One ``ModelTrainer`` per model. Every prediction it scores was made before the model saw the example's
label, so its rolling metrics estimate how the served scores perform. Two baselines are run the same way,
on the same examples, so the table says whether the model earns its keep:

- ``recency``: the model's own pipeline on one feature, the spec's ``recency_feature`` (a recency-only
  score, calibrated online so that its log loss and MAE mean something too);
- ``base_rate``: the population base rate (classifiers) or mean label (regressors) of the examples so far.

ADWIN watches the model's per-example loss (log loss; for regressors the absolute error on the log1p scale
the model learns on) and a ``DriftEvent`` is reported when its mean changes for the worse. The whole trainer
pickles: a signed snapshot of it (``snapshots``) is both what serving loads and what a restarted trainer
resumes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from profiles.models.labels import Example
from profiles.models.metrics import RollingMetrics, log_loss
from profiles.models.snapshots import ModelSnapshot, SnapshotMeta, SnapshotRejectedError
from profiles.models.specs import ModelSpec, Task

DEFAULT_WINDOW: Final = 1000
BASELINES: Final = ("recency", "base_rate")


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """ADWIN found the mean of the model's loss changed."""

    model: str
    examples_seen: int
    at_ms: int  # event time: the horizon end of the example that revealed it
    loss_before: float  # the mean loss over ADWIN's window before the change
    loss_after: float  # and over the part of it after the change


@dataclass(frozen=True, slots=True)
class Step:
    """What learning one example did: the progressive prediction, its loss, and any drift found."""

    prediction: float
    loss: float
    drift: DriftEvent | None


def predict(task: Task, model: Any, x: dict[str, float]) -> float:
    """A River model's score: P(label = 1) for a classifier, a non-negative amount for a regressor."""
    if task == "binary":
        # An unfitted PriorClassifier knows no class yet and returns {}.
        return float(model.predict_proba_one(x).get(True, 0.5))
    return max(0.0, float(model.predict_one(x)))


def _learn(task: Task, model: Any, x: dict[str, float], label: float) -> None:
    model.learn_one(x, bool(label) if task == "binary" else label)


def unlearnable(example: Example, spec: ModelSpec) -> str | None:
    """Why ``spec``'s model must not learn ``example`` (None: it may). One NaN or infinite value would make a
    linear model's weights NaN, and every score after it; Rapport's own features are finite, so such an
    example comes from another producer or a bug, and the trainer skips it with this reason.

    >>> from profiles.models.specs import default_specs
    >>> churn = default_specs()["churn_risk"]
    >>> def example(features: dict[str, float], label: float) -> Example:
    ...     return Example(example_id="e", model="churn_risk", profile_id="c-1", trigger="census", taken_at_ms=0,
    ...                    horizon_end_ms=1, label_known_ms=1, features=features, label=label)
    >>> unlearnable(example({"days_since_last_seen": 3.0}, 1.0), churn) is None
    True
    >>> unlearnable(example({"days_since_last_seen": float("nan")}, 1.0), churn)
    'non-finite features: days_since_last_seen'
    >>> unlearnable(example({"days_since_last_seen": 3.0}, 0.5), churn)
    'label 0.5 for a binary model'
    >>> unlearnable(example({"sessions": 1.0}, 0.0), churn)
    'no days_since_last_seen feature'
    """
    if spec.recency_feature not in example.features:
        return f"no {spec.recency_feature} feature"
    if not math.isfinite(example.label) or (spec.task == "binary" and example.label not in (0.0, 1.0)):
        return f"label {example.label!r} for a {spec.task} model"
    bad = sorted(name for name, value in example.features.items() if not math.isfinite(value))
    if bad:
        return f"non-finite features: {', '.join(bad[:5])}"
    return None


class ModelTrainer:
    """Progressive validation of one model and its baselines, with drift detection and counters."""

    def __init__(self, spec: ModelSpec, *, window: int = DEFAULT_WINDOW, drift_delta: float = 0.002) -> None:
        from river import drift, dummy, stats  # noqa: PLC0415  (why here: profiles.models.specs)

        self.spec = spec
        self.model: Any = spec.build()
        self.baselines: dict[str, Any] = {
            "recency": spec.build(),
            "base_rate": dummy.PriorClassifier() if spec.task == "binary" else dummy.StatisticRegressor(stats.Mean()),
        }
        self.metrics = RollingMetrics(spec.task, window)
        self.baseline_metrics = {name: RollingMetrics(spec.task, window) for name in BASELINES}
        self.detector: Any = drift.ADWIN(delta=drift_delta)
        self.examples_seen = 0
        self.drifts_detected = 0

    @property
    def cold_start(self) -> bool:
        """Too few labelled examples yet: scores come from the spec's heuristic."""
        return self.examples_seen < self.spec.min_examples

    def predict(self, x: dict[str, float]) -> float:
        return predict(self.spec.task, self.model, x)

    def learn(self, example: Example) -> Step:
        """Predict ``example``, update the metrics and the drift detector, then learn it."""
        if example.model != self.spec.name:
            raise ValueError(f"a {example.model} example given to the {self.spec.name} trainer")
        task, x, label = self.spec.task, example.features, example.label
        prediction = self.predict(x)
        self.metrics.update(label, prediction)
        recency_x = {self.spec.recency_feature: x[self.spec.recency_feature]}
        for name, baseline in self.baselines.items():
            bx = recency_x if name == "recency" else x
            self.baseline_metrics[name].update(label, predict(task, baseline, bx))
            _learn(task, baseline, bx, label)
        _learn(task, self.model, x, label)
        self.examples_seen += 1
        loss = (
            log_loss(bool(label), prediction) if task == "binary" else abs(math.log1p(label) - math.log1p(prediction))
        )
        before = float(self.detector.estimation)
        self.detector.update(loss)
        found = None
        # ADWIN also fires when the loss falls (a model warming up): only a worse model is news.
        if self.detector.drift_detected and float(self.detector.estimation) > before:
            self.drifts_detected += 1
            found = DriftEvent(
                self.spec.name, self.examples_seen, example.horizon_end_ms, before, float(self.detector.estimation)
            )
        return Step(prediction, loss, found)

    def report(self) -> dict[str, float | None]:
        """The rolling metrics, flat: ``roc_auc``, ``log_loss`` (or ``mae``, ``spearman``), the same for each
        baseline prefixed by its name (``recency.roc_auc``, ``base_rate.roc_auc``, …)."""
        out = dict(self.metrics.values())
        for name, rolling in self.baseline_metrics.items():
            out |= {f"{name}.{metric}": value for metric, value in rolling.values().items()}
        return out

    def snapshot_meta(self, version: int, created_at_ms: int, source_offset: int | None = None) -> SnapshotMeta:
        """The metadata of a snapshot of this trainer (``dump_snapshot(meta, trainer, secret)``)."""
        return SnapshotMeta(
            name=self.spec.name,
            version=version,
            created_at_ms=created_at_ms,
            examples_seen=self.examples_seen,
            horizon_ms=self.spec.horizon_ms,
            metrics=self.report(),
            source_offset=source_offset,
        )


def restore(snapshot: ModelSnapshot, spec: ModelSpec) -> ModelTrainer:
    """The trainer in a verified snapshot, checked against the configured ``spec``.

    A model learned for another label (another horizon, say) would serve numbers that mean something else,
    so it is refused. The configured spec replaces the pickled one (its ``min_examples`` may have changed).
    """
    trainer = snapshot.payload
    if not isinstance(trainer, ModelTrainer):
        raise SnapshotRejectedError(f"snapshot {snapshot.meta.name} v{snapshot.meta.version} holds no model trainer")
    held = trainer.spec
    if (held.name, held.task, held.outcome, held.horizon_ms) != (spec.name, spec.task, spec.outcome, spec.horizon_ms):
        raise SnapshotRejectedError(
            f"snapshot {snapshot.meta.name} v{snapshot.meta.version} was trained for another definition of {spec.name}"
        )
    trainer.spec = spec
    return trainer
