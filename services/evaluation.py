"""``rapport eval``: how good the models are, against their baselines and against the simulator's truth.

One fixed-seed run: the simulator writes a history and its ground truth; the history goes through Kafka and
a real ``rapport worker`` (snapshots and labels by event-time watermark) into ``models.examples``; the
examples are then learned in their release order with progressive validation (predict, then learn — the
trainer's own ``ModelTrainer``), and each model's predictions, its two baselines' and the oracle's are
scored on the same examples after the first ``warmup`` of them.

The oracle is what the simulator knew: for a snapshot taken on day d, P(≥ 1 order in the next 7 days) =
1 − Π(1 − p_order) over days d+1 … d+7; P(no activity in the next 30 days) = Π(1 − p_active) over days
d+1 … d+30; expected net spend over days d+1 … d+90 (in the base currency); P(open) of the email's day.
Whole days approximate the horizons, so the oracle is a strong reference, not a perfect one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from profiles.config import DAY_MS, FoldConfig
from profiles.models.labels import Example
from profiles.models.metrics import spearman
from profiles.models.specs import ModelSpec
from profiles.models.trainer import BASELINES, ModelTrainer, predict, unlearnable


@dataclass(frozen=True)
class Truth:
    start_ms: int
    people: dict[str, dict[str, Any]]  # customer id → truth record

    @classmethod
    def read(cls, path: str, start_ms: int) -> Truth:
        with open(path, "rb") as f:
            people = [orjson.loads(line) for line in f if line.strip()]
        return cls(start_ms, {p["customer_id"]: p for p in people if p.get("customer_id")})

    def oracle(self, example: Example, config: FoldConfig) -> float | None:
        person = self.people.get(example.profile_id)
        if person is None:
            return None
        day = (example.taken_at_ms - self.start_ms) // DAY_MS
        if example.model == "purchase_propensity":
            days = math.ceil((example.horizon_end_ms - example.taken_at_ms) / DAY_MS)
            return 1 - math.prod(1 - float(p) for p in person["p_order"][day + 1 : day + 1 + days])
        if example.model == "churn_risk":
            days = math.ceil((example.horizon_end_ms - example.taken_at_ms) / DAY_MS)
            return math.prod(1 - float(p) for p in person["p_active"][day + 1 : day + 1 + days])
        if example.model == "clv_90d":
            days = math.ceil((example.horizon_end_ms - example.taken_at_ms) / DAY_MS)
            rate = config.fx_rates.get(person["currency"], 1.0)
            return max(0.0, sum(float(v) for v in person["expected_spend"][day + 1 : day + 1 + days]) * rate)
        return float(person["p_open"][day])


def auc(labels: Sequence[float], scores: Sequence[float]) -> float | None:
    """Exact ROC AUC (Mann–Whitney, ties counted half); None with one class.

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    pairs = sorted(zip(scores, labels, strict=True))
    positives = sum(1 for _, y in pairs if y)
    negatives = len(pairs) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        average = (i + j + 1) / 2  # ranks i+1 … j
        rank_sum += average * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass
class Scored:
    labels: list[float]
    predictions: dict[str, list[float]]  # model, recency, base_rate, oracle


def progressive(
    examples: Sequence[Example], specs: Mapping[str, ModelSpec], truth: Truth, config: FoldConfig, warmup: int
) -> dict[str, Scored]:
    """Per model: the labels and each predictor's prediction made before learning the example."""
    trainers = {name: ModelTrainer(spec) for name, spec in specs.items()}
    out: dict[str, Scored] = defaultdict(lambda: Scored([], defaultdict(list)))
    seen: dict[str, int] = defaultdict(int)
    for example in sorted(examples, key=lambda e: (e.horizon_end_ms, e.example_id)):
        trainer = trainers.get(example.model)
        oracle = truth.oracle(example, config)
        # As the live trainer does (streams.trainer): what it would skip is not learned here either.
        if trainer is None or oracle is None or unlearnable(example, trainer.spec) is not None:
            continue
        spec = trainer.spec
        guesses = {"model": trainer.predict(example.features), "oracle": oracle}
        recency = {spec.recency_feature: example.features[spec.recency_feature]}
        for name in BASELINES:
            x = recency if name == "recency" else example.features
            guesses[name] = predict(spec.task, trainer.baselines[name], x)
        trainer.learn(example)
        seen[example.model] += 1
        if seen[example.model] > warmup:
            scored = out[example.model]
            scored.labels.append(example.label)
            for name, value in guesses.items():
                scored.predictions[name].append(value)
    return dict(out)


def table(scored: Mapping[str, Scored], specs: Mapping[str, ModelSpec]) -> list[dict[str, Any]]:
    rows = []
    for name, s in sorted(scored.items()):
        task = specs[name].task
        row: dict[str, Any] = {"name": name, "examples": len(s.labels)}
        for who, predictions in s.predictions.items():
            if task == "binary":
                row[who] = auc(s.labels, predictions)
            else:
                row[who] = spearman(predictions, s.labels)
                row[f"{who}_mae"] = sum(abs(p - y) for p, y in zip(predictions, s.labels, strict=True)) / len(s.labels)
        row["metric"] = "ROC AUC" if task == "binary" else "Spearman"
        rows.append(row)
    return rows


def start_ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
