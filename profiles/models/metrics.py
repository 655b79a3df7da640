"""Rolling progressive-validation metrics over the last N examples.

Classifiers: ROC AUC (River's ``RollingROCAUC``: exact within the window and rank-based, so a baseline
whose score is not a calibrated probability is measured the same way) and log loss. Regressors: MAE and
Spearman's rank correlation. A metric that is undefined on the current window (AUC with one class, a
correlation of constants) is ``None``, not a number that looks like a result.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from profiles.models.specs import Task

#: Probabilities are clamped like River's log loss does, so one confident mistake costs 34.5, not infinity.
PROBA_EPS: Final = 1e-15


def log_loss(label: bool, p: float) -> float:
    """Binary log loss of one prediction.

    >>> round(log_loss(True, 0.9), 4), round(log_loss(False, 0.9), 4)
    (0.1054, 2.3026)
    """
    p = min(1 - PROBA_EPS, max(PROBA_EPS, p))
    return -math.log(p if label else 1 - p)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None when either side is constant.

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 45]), spearman([1, 2, 3], [3, 2, 1]), spearman([1, 1], [1, 2])
    (1.0, -1.0, None)
    """
    rx, ry = _ranks(xs), _ranks(ys)
    n = len(rx)
    mx, my = sum(rx) / n if n else 0.0, sum(ry) / n if n else 0.0
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


class RollingMetrics:
    """The metrics of one predictor over its last ``window`` (label, prediction) pairs."""

    def __init__(self, task: Task, window: int) -> None:
        from river import metrics, utils  # noqa: PLC0415  (why here: profiles.models.specs)

        self.task = task
        self.pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self._auc: Any = metrics.RollingROCAUC(window_size=window) if task == "binary" else None
        self._loss: Any = utils.Rolling(metrics.LogLoss if task == "binary" else metrics.MAE, window_size=window)

    def update(self, label: float, prediction: float) -> None:
        self.pairs.append((label, prediction))
        if self._auc is not None:
            self._auc.update(bool(label), prediction)
            self._loss.update(bool(label), prediction)
        else:
            self._loss.update(label, prediction)

    def values(self) -> dict[str, float | None]:
        """``roc_auc`` and ``log_loss`` for a classifier, ``mae`` and ``spearman`` for a regressor."""
        if not self.pairs:
            return {"roc_auc": None, "log_loss": None} if self._auc is not None else {"mae": None, "spearman": None}
        if self._auc is not None:
            positives = sum(1 for label, _ in self.pairs if label)
            both = 0 < positives < len(self.pairs)
            return {"roc_auc": float(self._auc.get()) if both else None, "log_loss": float(self._loss.get())}
        labels = [label for label, _ in self.pairs]
        predictions = [prediction for _, prediction in self.pairs]
        return {"mae": float(self._loss.get()), "spearman": spearman(labels, predictions)}
