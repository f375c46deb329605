"""Scores of probability forecasts against binary outcomes (pure functions).

Brier score: mean of (p - o)^2, 0 is perfect, 0.25 is a constant 0.5 forecast.
Brier skill score against climatology: 1 - Brier / Brier(base rate), where the base rate is the
observed event frequency of the same predictions; > 0 means the model adds information beyond
always answering the base rate, 0 none, < 0 worse. Undefined (None) when every outcome is equal.
Log loss: mean of -[o ln p + (1-o) ln(1-p)], with p clipped to [1e-6, 1-1e-6].
Precision / recall / F1 at a threshold: a forecast p >= threshold counts as "event predicted".
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
    brier_climatology: float | None
    brier_skill: float | None
    log_loss: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    threshold: float


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


def f1_score(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def scores(probs: Sequence[float], outcomes: Sequence[bool], threshold: float = 0.5) -> Scores:
    n = len(probs)
    events = sum(1 for o in outcomes if o)
    precision, recall = precision_recall(probs, outcomes, threshold)
    base = events / n if n else None
    brier = brier_score(probs, outcomes)
    # climatology's Brier is base(1-base): always answering the observed rate of these same predictions
    clim = None if base is None else base * (1.0 - base)
    skill = None if brier is None or not clim else 1.0 - brier / clim
    return Scores(
        count=n,
        events=events,
        base_rate=base,
        brier=brier,
        brier_climatology=clim,
        brier_skill=skill,
        log_loss=log_loss(probs, outcomes),
        precision=precision,
        recall=recall,
        f1=f1_score(precision, recall),
        threshold=threshold,
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


def skill_over_time(
    times: Sequence[float], probs: Sequence[float], outcomes: Sequence[bool], window: int
) -> list[tuple[float, float | None, float | None]]:
    """(time, Brier, Brier skill score) over the last ``window`` predictions, at every prediction."""
    out: list[tuple[float, float | None, float | None]] = []
    for i in range(len(probs)):
        lo = max(0, i + 1 - window)
        sc = scores(probs[lo : i + 1], outcomes[lo : i + 1])
        out.append((times[i], sc.brier, sc.brier_skill))
    return out
