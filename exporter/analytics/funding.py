"""Per-instrument funding analytics: pure functions over values read from state.

Rates are fractions per the instrument's own funding interval, exactly as the exchange delivers
them. Everything that compares instruments first scales to an 8 h interval (:func:`rate_8h`), so a
1 h instrument and an 8 h instrument paying the same per 8 h compare equal.

The only object with memory here is :class:`WindowCache`, a memo of window statistics keyed by
``InstrumentState.settlements_version``: it never touches state, it only spares a scrape the
recomputation of windows that have not changed.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from exporter.model import EIGHT_HOURS, SECONDS_PER_YEAR

BP = 1e4  # basis points per unit fraction


def intervals_per_year(interval_s: float) -> float:
    return SECONDS_PER_YEAR / interval_s


def annualize(rate: float, interval_s: float) -> float:
    """Simple (not compounded) annual rate: the per-interval rate times intervals per year."""
    return rate * SECONDS_PER_YEAR / interval_s


def rate_8h(rate: float, interval_s: float) -> float:
    """The per-interval rate scaled to an 8 h interval (same money per unit of time)."""
    return rate * EIGHT_HOURS / interval_s


def receiving_side(rate: float) -> str:
    """The position side that receives funding: shorts when the rate is positive (longs pay).

    A zero rate is attributed to shorts: nobody is paid, and the edge then shows the bare fee cost.
    """
    return "long" if rate < 0 else "short"


def amortised_fee_bp(fee_bp: float, interval_s: float, holding_period_hours: float) -> float:
    """Round-trip fee (open + close = 2 x fee_bp) spread evenly over the holding period, per interval."""
    intervals_held = holding_period_hours * 3600.0 / interval_s
    return 2.0 * fee_bp / intervals_held


def edge_bp(rate: float, interval_s: float, fee_bp: float, holding_period_hours: float) -> float:
    """Funding received over one interval minus the amortised round-trip fee, in basis points.

    edge = |rate| x 1e4 - 2 x fee_bp x interval_s / (holding_period_hours x 3600)
    """
    return abs(rate) * BP - amortised_fee_bp(fee_bp, interval_s, holding_period_hours)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of the settled rates inside a trailing time window."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (ddof=1); None when n < 2 or all rates are equal
    acceleration: float | None  # (r[-1] - r[-2]) - (r[-2] - r[-3]) over the last three settlements


def window_stats(times: Sequence[float], rates: Sequence[float], start: float) -> WindowStats | None:
    """Stats over the settlements with ``time > start``. ``times`` must be sorted ascending."""
    i = bisect_right(times, start)
    return _stats(np.asarray(rates[i:], dtype=np.float64))


def _stats(window: np.ndarray) -> WindowStats | None:
    n = int(window.size)
    if n == 0:
        return None
    mean = float(window.mean())
    std: float | None = None
    # An exactly constant window has no spread: the float mean of equal values can leave a ~1e-20
    # residue that would turn into an absurd z-score, so test equality, not std == 0.
    if n >= 2 and float(window.max()) != float(window.min()):
        std = float(window.std(ddof=1))
    acc = None
    if n >= 3:
        acc = float((window[-1] - window[-2]) - (window[-2] - window[-3]))
    return WindowStats(n, mean, std, acc)


def zscore(current: float, stats: WindowStats | None, min_observations: int) -> float | None:
    """(current - window mean) / window sample std; None with too few observations or no spread."""
    if stats is None or stats.n < min_observations or stats.std is None:
        return None
    return (current - stats.mean) / stats.std


def momentum(current: float, stats: WindowStats | None, min_observations: int) -> float | None:
    """Current rate minus the window mean (fraction per interval)."""
    if stats is None or stats.n < min_observations:
        return None
    return current - stats.mean


def ols_slope(xs: np.ndarray, ys: np.ndarray, min_points: int = 10) -> float | None:
    """Least-squares slope of ys on xs; None with too few points or no spread in xs."""
    if xs.size < min_points:
        return None
    dx = xs - xs.mean()
    sxx = float(dx @ dx)
    if sxx <= 0.0 or float(xs.max()) == float(xs.min()):
        return None
    return float(dx @ (ys - ys.mean())) / sxx


def anchor_strength(samples: Sequence[tuple[float, float, float]], start: float, min_points: int = 10) -> float | None:
    """Rolling OLS slope of funding rate on premium over the (time, funding, premium) samples after start."""
    if not samples:
        return None
    arr = np.asarray(samples, dtype=np.float64)
    arr = arr[arr[:, 0] > start]
    return ols_slope(arr[:, 2], arr[:, 1], min_points)


class WindowCache:
    """Memo of per-instrument window statistics.

    The settlement window is recomputed only when the instrument's ``settlements_version`` changes
    or when time pushes an old settlement out of the trailing window; the anchor regression only
    when a new sample arrived or one left the window. Safe to share between scrape threads: a race
    at worst computes the same value twice.
    """

    def __init__(self) -> None:
        # key -> (version, window times, window rates, stats)
        self._settle: dict[Hashable, tuple[int, np.ndarray, np.ndarray, WindowStats | None]] = {}
        # key -> (newest sample time, oldest sample time in window, slope)
        self._anchor: dict[Hashable, tuple[float, float, float | None]] = {}
        self._lock = threading.Lock()

    def settlement_stats(
        self, key: Hashable, version: int, settlements: _SettlementSource, start: float
    ) -> WindowStats | None:
        hit = self._settle.get(key)
        if hit is not None and hit[0] == version:
            _, times, rates, stats = hit
            k = int(np.searchsorted(times, start, side="right"))
            if k == 0:
                return stats
            # Only expiry since the last computation: the window shrank from the left.
            times, rates = times[k:], rates[k:]
        else:
            # Read the version before the data: a concurrent write then only causes a recompute later.
            pairs = settlements.settlement_window()
            if pairs:
                arr = np.asarray(pairs, dtype=np.float64)
                times, rates = arr[:, 0], arr[:, 1]
                k = int(np.searchsorted(times, start, side="right"))
                times, rates = times[k:].copy(), rates[k:].copy()
            else:
                times = rates = np.empty(0)
        stats = _stats(rates)
        with self._lock:
            self._settle[key] = (version, times, rates, stats)
        return stats

    def anchor(self, key: Hashable, samples: _AnchorSource, start: float, min_points: int = 10) -> float | None:
        dq = samples.anchor_samples
        if not dq:
            return None
        newest = dq[-1][0]
        hit = self._anchor.get(key)
        if hit is not None and hit[0] == newest and hit[1] > start:
            return hit[2]
        window = tuple(dq)
        arr = np.asarray(window, dtype=np.float64)
        arr = arr[arr[:, 0] > start]
        slope = ols_slope(arr[:, 2], arr[:, 1], min_points) if arr.size else None
        oldest = float(arr[0, 0]) if arr.size else float("inf")
        with self._lock:
            self._anchor[key] = (float(window[-1][0]), oldest, slope)
        return slope

    def forget(self, live_keys: set[Hashable]) -> None:
        """Drop entries of instruments that are no longer in state (bounded memory)."""
        with self._lock:
            for d in (self._settle, self._anchor):
                for k in [k for k in d if k not in live_keys]:
                    del d[k]

    def __len__(self) -> int:
        return len(self._settle)


class _SettlementSource:
    """Structural type: what :meth:`WindowCache.settlement_stats` reads (an InstrumentState)."""

    def settlement_window(self) -> tuple[tuple[float, float], ...]: ...


class _AnchorSource:
    anchor_samples: Sequence[tuple[float, float, float]]
