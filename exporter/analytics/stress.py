"""Historical stress of a position's instrument: the worst mark move over a window, and parametric moves.

Pure functions on a series of mark prices at a fixed step (the positions service keeps one per held
instrument, ``positions/history.py``). The series holds *closes*: the last mark of each step (a
1-minute mark-price candle's close when backfilled, the last live mark of the minute afterwards),
``NaN`` where no price is known. Closes rather than the candles' high/low, because the live extension
samples the mark at points and both parts of the history must mean the same thing; a move inside a
minute between two closes is therefore not seen (docs/positions.md says how much that can hide).

* **Worst move** over a window of ``lag`` steps: for a long, the largest fall from any close to any
  later close at most ``lag`` steps after it, ``min_{0 < j - i <= lag} p_j / p_i - 1`` (peak to
  trough inside the window, not only the end-to-end return); for a short the largest rise, ``max``
  of the same ratio. Computed as ``p_j / max(p_{j-lag..j-1}) - 1``: O(n * lag) with numpy.
* **Parametric moves**: the window's log returns ``r_i = log p_{i+lag} - log p_i`` (every
  overlapping window of the history) fitted by a normal law (sample mean and standard deviation) and
  by a location-scale Student-t law (maximum likelihood: EM for location and scale at a given nu, nu
  by a golden-section search of the profile likelihood over nu in [1, 1000]). scipy is not a
  dependency and the whole fit is a few dozen numpy passes, so it is written here; the normal quantile
  comes from :class:`statistics.NormalDist`, the t quantile inverts :func:`risk.student_t_sf`. The move
  at confidence ``c`` is ``exp(Q(1 - c)) - 1`` for a long (lower tail) and ``exp(Q(c)) - 1`` for a
  short.

Moves are signed ratios of the mark: negative for a long (a fall), positive for a short (a rise), so
the stressed price is ``mark * (1 + move)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from exporter.analytics.risk import student_t_sf
from exporter.model import Side

Distribution = Literal["normal", "student_t"]
FloatArray = npt.NDArray[np.float64]

MIN_RETURNS = 30  # fewer window returns fit nothing worth publishing
NU_BOUNDS = (1.0, 1000.0)  # Student-t degrees of freedom searched (1: Cauchy; 1000: normal to 1e-3)


@dataclass(frozen=True, slots=True)
class WorstMoves:
    long: float  # worst fall, p_j / p_i - 1 <= 0
    short: float  # worst rise, >= 0
    pairs: int  # (i, j) pairs with both prices known that were compared


def worst_moves(closes: Sequence[float] | FloatArray, lag: int) -> WorstMoves | None:
    """Worst fall and rise between any two closes at most ``lag`` steps apart (NaN: unknown).

    None when no two known closes are within ``lag`` steps of each other.
    """
    if lag < 1:
        raise ValueError("lag must be at least one step")
    p = _prices(closes)
    n = len(p)
    if n < 2:
        return None
    padded = np.concatenate((np.full(lag, np.nan), p))
    hi = np.full(n, np.nan)
    lo = np.full(n, np.nan)
    known = np.zeros(n)
    for d in range(1, lag + 1):
        prev = padded[lag - d : lag - d + n]  # p[j - d]
        np.fmax(hi, prev, out=hi)  # fmax/fmin skip NaN: an unknown close is no peak or trough
        np.fmin(lo, prev, out=lo)
        known += ~np.isnan(prev)
    valid = ~np.isnan(p) & ~np.isnan(hi)
    if not valid.any():
        return None
    fall = float(np.min(p[valid] / hi[valid])) - 1.0
    rise = float(np.max(p[valid] / lo[valid])) - 1.0
    return WorstMoves(long=min(fall, 0.0), short=max(rise, 0.0), pairs=int(known[~np.isnan(p)].sum()))


def window_returns(closes: Sequence[float] | FloatArray, lag: int) -> FloatArray:
    """Log returns over every window of ``lag`` steps whose two ends are known (overlapping windows)."""
    if lag < 1:
        raise ValueError("lag must be at least one step")
    logp = np.log(_prices(closes))
    if len(logp) <= lag:
        return np.empty(0)
    r = logp[lag:] - logp[:-lag]
    return r[~np.isnan(r)]


# ---- fits ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReturnFit:
    """A fitted law of window log returns."""

    distribution: Distribution
    loc: float
    scale: float  # normal: standard deviation; Student-t: scale (sd = scale * sqrt(nu / (nu - 2)))
    nu: float | None  # Student-t degrees of freedom
    observations: int

    def quantile(self, p: float) -> float:
        """The log return below which a share ``p`` of the law lies."""
        if not 0.0 < p < 1.0:
            raise ValueError("p must be in (0, 1)")
        if self.scale == 0.0:
            return self.loc
        if self.distribution == "normal":
            return self.loc + self.scale * NormalDist().inv_cdf(p)
        assert self.nu is not None
        return self.loc + self.scale * student_t_ppf(p, self.nu)

    def move(self, side: Side, confidence: float) -> float:
        """The adverse move of the mark (signed ratio) not exceeded with probability ``confidence``."""
        p = 1.0 - confidence if side is Side.LONG else confidence
        return math.expm1(self.quantile(p))


def fit_normal(returns: FloatArray) -> ReturnFit | None:
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < MIN_RETURNS:
        return None
    return ReturnFit("normal", float(r.mean()), float(r.std(ddof=1)), None, len(r))


def fit_student_t(returns: FloatArray) -> ReturnFit | None:
    """Maximum-likelihood location-scale Student-t fit (profile likelihood over nu, EM inside)."""
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    if n < MIN_RETURNS:
        return None
    loc0 = float(np.median(r))
    mad = float(np.median(np.abs(r - loc0)))
    if mad == 0.0 and float(r.std()) == 0.0:
        return ReturnFit("student_t", loc0, 0.0, NU_BOUNDS[1], n)
    warm = [loc0, (mad * 1.4826) ** 2 or float(r.var())]
    cache: dict[float, tuple[float, float, float]] = {}

    def profile(log_nu: float) -> float:
        nu = math.exp(log_nu)
        loc, s2 = _em(r, nu, warm[0], warm[1])
        warm[:] = [loc, s2]  # the search's next nu is close: start its EM from this one's answer
        ll = _t_loglik(r, nu, loc, s2)
        cache[log_nu] = (loc, s2, ll)
        return ll

    a, b = math.log(NU_BOUNDS[0]), math.log(NU_BOUNDS[1])
    best = _golden_max(profile, a, b, tol=1e-3)
    loc, s2, _ = cache[best]
    return ReturnFit("student_t", loc, math.sqrt(s2), math.exp(best), n)


def _em(r: FloatArray, nu: float, loc: float, s2: float, iterations: int = 500) -> tuple[float, float]:
    """Location and squared scale of a t law with ``nu`` degrees of freedom (EM: the t as a normal
    variance mixture; each step raises the likelihood)."""
    n = len(r)
    for _ in range(iterations):
        dev = r - loc
        w = (nu + 1.0) / (nu + dev * dev / s2)
        new_loc = float(np.dot(w, r) / w.sum())
        dev = r - new_loc
        new_s2 = float(np.dot(w, dev * dev) / n)
        done = abs(new_s2 - s2) <= 1e-10 * s2 and abs(new_loc - loc) <= 1e-10 * math.sqrt(s2)
        loc, s2 = new_loc, max(new_s2, 1e-300)
        if done:
            break
    return loc, s2


def _t_loglik(r: FloatArray, nu: float, loc: float, s2: float) -> float:
    n = len(r)
    z2 = (r - loc) ** 2 / s2
    const = math.lgamma((nu + 1.0) / 2.0) - math.lgamma(nu / 2.0) - 0.5 * math.log(nu * math.pi * s2)
    return n * const - (nu + 1.0) / 2.0 * float(np.log1p(z2 / nu).sum())


def _golden_max(f: Callable[[float], float], a: float, b: float, tol: float) -> float:
    """The argument in [a, b] maximising the unimodal ``f`` (golden-section search, ends included)."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    best, fbest = (c, fc) if fc >= fd else (d, fd)
    for end in (a, b):  # a maximum at a bound (nu -> 1000: a normal sample) is found too
        fe = f(end)
        if fe > fbest:
            best, fbest = end, fe
    return best


def student_t_ppf(p: float, nu: float) -> float:
    """Quantile of the standard Student-t law (bisection on :func:`risk.student_t_sf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if p == 0.5:
        return 0.0
    tail = min(p, 1.0 - p)
    lo, hi = 0.0, 1.0
    while student_t_sf(hi, nu) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_sf(mid, nu) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    x = 0.5 * (lo + hi)
    return x if p > 0.5 else -x


# ---- the figures published per instrument -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StressFigures:
    """What one instrument's history gives every position on it (per side)."""

    worst: WorstMoves
    fits: tuple[ReturnFit, ...]  # normal, then Student-t (absent: too few returns)

    def worst_move(self, side: Side) -> float:
        return self.worst.long if side is Side.LONG else self.worst.short


def historical_stress(closes: Sequence[float] | FloatArray, lag: int) -> StressFigures | None:
    """Worst moves and the two fits of one history (None: no two closes within the window)."""
    worst = worst_moves(closes, lag)
    if worst is None:
        return None
    r = window_returns(closes, lag)
    fits = tuple(f for f in (fit_normal(r), fit_student_t(r)) if f is not None)
    return StressFigures(worst, fits)


def _prices(closes: Sequence[float] | FloatArray) -> FloatArray:
    p = np.array(closes, dtype=np.float64)
    p[~(p > 0.0)] = np.nan  # a non-positive or NaN price is no price
    return p


__all__ = [
    "ReturnFit",
    "StressFigures",
    "WorstMoves",
    "fit_normal",
    "fit_student_t",
    "historical_stress",
    "student_t_ppf",
    "window_returns",
    "worst_moves",
]
