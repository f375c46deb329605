"""Online recalibration: a monotone map from a model's raw probability to the observed frequency.

Isotonic regression, fitted with the pool-adjacent-violators algorithm (PAV) on the scored history
of one (model, base, horizon). Why isotonic and not Platt scaling: Platt fits a sigmoid in the
log-odds of the raw probability, which is right when the distortion has that shape; an LLM's
stated probabilities cluster on round numbers and the baseline's distortion comes from its own
simplifications, so the only assumption we can defend is "higher raw means at least as likely".
Isotonic needs more scored predictions than Platt's two parameters, hence a minimum count
(``calibration_min_scored``) before a calibrated value is published.

Predictions between two fitted blocks are interpolated linearly (no cliff between steps), and the
output is kept inside [1/(2(n+1)), 1 - 1/(2(n+1))]: a finite history never justifies 0 or 1.
Hand-written with numpy (30 lines): scikit-learn's IsotonicRegression would bring scipy and joblib
for this one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def pav(values: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Non-decreasing least-squares fit of ``values`` (already ordered by the predictor)."""
    y = np.asarray(values, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    # blocks as a stack: (mean, weight, length); merge while the last two violate monotonicity
    means: list[float] = []
    wts: list[float] = []
    lens: list[int] = []
    for yi, wi in zip(y, w, strict=True):
        means.append(float(yi))
        wts.append(float(wi))
        lens.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, n2 = means.pop(), wts.pop(), lens.pop()
            tw = wts[-1] + w2
            means[-1] = (means[-1] * wts[-1] + m2 * w2) / tw
            wts[-1] = tw
            lens[-1] += n2
    return np.repeat(np.array(means), np.array(lens))


@dataclass(frozen=True, slots=True)
class IsotonicCalibrator:
    """Knots (raw probability, calibrated probability), increasing in both."""

    x: np.ndarray
    y: np.ndarray
    count: int

    @classmethod
    def fit(cls, probs: Sequence[float], outcomes: Sequence[bool]) -> IsotonicCalibrator:
        p = np.asarray(probs, dtype=float)
        o = np.asarray(outcomes, dtype=float)
        if p.size == 0:
            raise ValueError("nothing to fit")
        # equal raw values form one group first (ties must map to one value)
        ux, inv = np.unique(p, return_inverse=True)
        counts = np.bincount(inv).astype(float)
        sums = np.bincount(inv, weights=o)
        fitted = pav(sums / counts, counts)
        # one knot per block: the block's weighted mean raw value and its fitted frequency
        edges = np.flatnonzero(np.diff(fitted)) + 1
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [fitted.size]])
        kx = np.array([np.average(ux[s:e], weights=counts[s:e]) for s, e in zip(starts, ends, strict=True)])
        ky = fitted[starts]
        lo = 1.0 / (2.0 * (p.size + 1))
        return cls(kx, np.clip(ky, lo, 1.0 - lo), int(p.size))

    def __call__(self, probability: float) -> float:
        return float(np.interp(probability, self.x, self.y))

    def map(self, probs: Sequence[float]) -> np.ndarray:
        return np.interp(np.asarray(probs, dtype=float), self.x, self.y)
