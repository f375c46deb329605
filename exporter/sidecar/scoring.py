"""Scores of probability forecasts against binary outcomes (pure functions).

Brier score: mean of (p - o)^2, 0 is perfect, 0.25 is a constant 0.5 forecast.
Log loss: mean of -[o ln p + (1-o) ln(1-p)], with p clipped to [1e-6, 1-1e-6].
Precision / recall at a threshold: a forecast p >= threshold counts as "event predicted".
Undefined ratios (no predicted or no actual events) are None and are not published.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

EPS = 1e-6


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    low: float
    high: float
    count: int
    mean_probability: float | None
    observed_rate: float | None


@dataclass(frozen=True, slots=True)
class Scores:
    count: int
    events: int
    base_rate: float | None
    brier: float | None
    log_loss: float | None
    precision: float | None
    recall: float | None


def brier_score(probs: Sequence[float], outcomes: Sequence[bool]) -> float | None:
    if not probs:
        return None
    return sum((p - float(o)) ** 2 for p, o in zip(probs, outcomes, strict=True)) / len(probs)


def log_loss(probs: Sequence[float], outcomes: Sequence[bool]) -> float | None:
    if not probs:
        return None
    total = 0.0
    for p, o in zip(probs, outcomes, strict=True):
        q = min(1.0 - EPS, max(EPS, p))
        total -= math.log(q) if o else math.log(1.0 - q)
    return total / len(probs)


def precision_recall(
    probs: Sequence[float], outcomes: Sequence[bool], threshold: float = 0.5
) -> tuple[float | None, float | None]:
    tp = sum(1 for p, o in zip(probs, outcomes, strict=True) if p >= threshold and o)
    fp = sum(1 for p, o in zip(probs, outcomes, strict=True) if p >= threshold and not o)
    fn = sum(1 for p, o in zip(probs, outcomes, strict=True) if p < threshold and o)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return precision, recall


def scores(probs: Sequence[float], outcomes: Sequence[bool], threshold: float = 0.5) -> Scores:
    n = len(probs)
    events = sum(1 for o in outcomes if o)
    precision, recall = precision_recall(probs, outcomes, threshold)
    return Scores(
        count=n,
        events=events,
        base_rate=events / n if n else None,
        brier=brier_score(probs, outcomes),
        log_loss=log_loss(probs, outcomes),
        precision=precision,
        recall=recall,
    )


def calibration_table(probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> list[CalibrationBin]:
    """Forecasts grouped in equal-width probability bins (deciles by default); the last bin includes 1.0."""
    groups: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for p, o in zip(probs, outcomes, strict=True):
        groups[min(bins - 1, int(p * bins))].append((p, o))
    table = []
    for i, group in enumerate(groups):
        n = len(group)
        table.append(
            CalibrationBin(
                low=i / bins,
                high=(i + 1) / bins,
                count=n,
                mean_probability=sum(p for p, _ in group) / n if n else None,
                observed_rate=sum(1 for _, o in group if o) / n if n else None,
            )
        )
    return table
