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
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

import numpy as np

from exporter.model import EIGHT_HOURS, SECONDS_PER_YEAR

BP = 1e4  # basis points per unit fraction


class _SettlementSource(Protocol):
    """What :meth:`WindowCache.settlement_stats` reads (an InstrumentState fits)."""

    def settlement_window(self) -> tuple[tuple[float, float], ...]: ...


class _Samples(Protocol):
    """(time, premium, ...) records, newest last: a sequence or the state's Window."""

    def __getitem__(self, index: int, /) -> tuple[float, ...]: ...

    def __iter__(self) -> Iterator[tuple[float, ...]]: ...

    def __len__(self) -> int: ...


class _AnchorSource(Protocol):
    @property
    def anchor_samples(self) -> _Samples: ...


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
    arr = _to_array(tuple(samples), 3)
    arr = arr[arr[:, 0] > start]
    return ols_slope(arr[:, 2], arr[:, 1], min_points)


# Consecutive samples further apart than this are not differenced: a change across a gap in the
# samples (the exporter was down, the feed was silent) is not a one-minute change.
DIFFERENCE_MAX_GAP_SECONDS = 300.0


def anchor_strength_difference(
    samples: Sequence[tuple[float, float, float]],
    start: float,
    min_points: int = 10,
    max_gap: float = DIFFERENCE_MAX_GAP_SECONDS,
) -> float | None:
    """OLS slope of the change of funding on the change of premium (first differences) between
    consecutive (time, funding, premium) samples after ``start`` at most ``max_gap`` apart.

    Levels can share a slow trend (both drift with sentiment) that inflates their slope; the changes
    measure how much of a premium move the funding rate follows minute to minute. Needs
    ``min_points`` differences and spread in the premium changes."""
    if not samples:
        return None
    arr = _to_array(tuple(samples), 3)
    return _difference_slope(arr[arr[:, 0] > start], min_points, max_gap)


def _difference_slope(arr: np.ndarray, min_points: int, max_gap: float) -> float | None:
    if arr.shape[0] < 2:
        return None
    d = np.diff(arr, axis=0)
    d = d[d[:, 0] <= max_gap]
    return ols_slope(d[:, 2], d[:, 1], min_points)


def _to_array(rows: Sequence[tuple[float, ...]], width: int) -> np.ndarray:
    """Rows of floats as an (n, width) array; fromiter is about twice as fast as asarray on tuples."""
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width)
    return flat.reshape(-1, width)


class _AnchorWindow:
    """Running sums of one instrument's anchor regression over its trailing window.

    A new sample a minute and one leaving the window cost O(1) instead of a 360-point regression.
    Values are shifted by a reference sample's (premium, funding) to keep the sums well conditioned,
    and everything is recomputed from scratch every REBASE updates so rounding cannot accumulate.
    It keeps no copy of the rows (only the window's first and last times): leaving samples are found
    again in the instrument's own deque, and a process-wide GC pass has no extra containers to walk.
    """

    REBASE = 500

    __slots__ = ("n", "newest", "oldest", "rows_len", "slope", "sx", "sxx", "sxy", "sy", "updates", "x0", "y0")

    def __init__(self) -> None:
        self.newest = self.oldest = -np.inf  # times of the newest sample seen / oldest one in the sums
        self.updates = self.REBASE  # forces a full computation first
        self.slope: float | None = None
        self.n = 0
        # rows in the source when last seen: more with the same newest sample means rows were put in
        # front (the start-up backfill merged in after live samples), which the running sums cannot follow
        self.rows_len = 0
        self.x0 = self.y0 = self.sx = self.sy = self.sxx = self.sxy = 0.0

    def _add(self, x: float, y: float, sign: int) -> None:
        x -= self.x0
        y -= self.y0
        self.n += sign
        self.sx += sign * x
        self.sy += sign * y
        self.sxx += sign * x * x
        self.sxy += sign * x * y

    def _rebuild(self, rows: tuple[tuple[float, ...], ...], start: float) -> None:
        i = bisect_right(rows, (start, np.inf, np.inf))
        window = rows[i:]
        self.updates = 0
        if not window:
            self.x0 = self.y0 = self.sx = self.sy = self.sxx = self.sxy = 0.0
            self.n, self.oldest = 0, np.inf
            return
        arr = _to_array(window, 3)
        self.x0, self.y0 = window[0][2], window[0][1]
        x = arr[:, 2] - self.x0
        y = arr[:, 1] - self.y0
        self.n = len(window)
        self.sx, self.sy = float(x.sum()), float(y.sum())
        self.sxx, self.sxy = float(x @ x), float(x @ y)
        self.oldest = window[0][0]

    def advance(self, rows: tuple[tuple[float, ...], ...], start: float, min_points: int) -> float | None:
        newest = rows[-1][0]
        same_newest = newest == self.newest
        if same_newest and self.oldest > start and len(rows) == self.rows_len:
            return self.slope  # nothing arrived, nothing left the window
        if (
            self.updates >= self.REBASE
            or newest < self.newest
            or self.n == 0
            or (same_newest and len(rows) != self.rows_len)
        ):
            self._rebuild(rows, start)
        else:
            lo = bisect_left(rows, (self.oldest,))  # our oldest summed sample in the source deque
            inside = bisect_right(rows, (start, np.inf, np.inf))  # first sample inside the window
            if lo >= len(rows) or rows[lo][0] != self.oldest or inside < lo:
                # The source dropped samples we summed, or the window start moved back (two scrape
                # threads read the clock a little apart, or the wall clock stepped back) past samples
                # already subtracted: the running sums cannot follow, start over.
                self._rebuild(rows, start)
            else:
                first_new = bisect_right(rows, (self.newest, np.inf, np.inf))
                for _, y, x in rows[lo : min(inside, first_new)]:  # summed, now outside
                    self._add(x, y, -1)
                for _, y, x in rows[max(first_new, inside) :]:  # new and inside
                    self._add(x, y, 1)
                self.updates += max(0, min(inside, first_new) - lo) + len(rows) - max(first_new, inside)
                self.oldest = rows[inside][0] if inside < len(rows) else np.inf
                if self.n == 0:
                    self.oldest = np.inf
        self.newest = newest
        self.rows_len = len(rows)
        self.slope = self._slope(min_points)
        return self.slope

    def _slope(self, min_points: int) -> float | None:
        n = self.n
        if n < min_points:
            return None
        sxx_c = self.sxx - self.sx * self.sx / n
        # Premiums that are all equal leave only rounding residue here: that is "no spread", not a slope.
        if sxx_c <= 1e-12 * self.sxx or sxx_c <= 0.0:
            return None
        return (self.sxy - self.sx * self.sy / n) / sxx_c


class WindowCache:
    """Memo of per-instrument window statistics.

    The settlement window is recomputed only when the instrument's ``settlements_version`` changes
    or when time pushes an old settlement out of the trailing window; the anchor regression only
    when a new sample arrived or one left the window. Safe to share between scrape threads: a race
    at worst computes the same value twice.
    """

    def __init__(self) -> None:
        # key -> (version, oldest time in the window, window times, window rates, stats)
        self._settle: dict[Hashable, tuple[Hashable, float, np.ndarray, np.ndarray, WindowStats | None]] = {}
        self._anchor: dict[Hashable, _AnchorWindow] = {}
        # key -> (newest sample time, oldest sample time inside the window, rows in the source, slope)
        self._anchor_diff: dict[Hashable, tuple[float, float, int, float | None]] = {}
        self._lock = threading.Lock()

    def settlement_stats(
        self, key: Hashable, version: Hashable, settlements: _SettlementSource, start: float
    ) -> WindowStats | None:
        hit = self._settle.get(key)
        if hit is not None and hit[0] == version:
            _, first, times, rates, stats = hit
            if first > start:  # the common case, decided without a numpy call
                return stats
            k = int(np.searchsorted(times, start, side="right"))
            if k == 0:
                return stats
            # Only expiry since the last computation: the window shrank from the left.
            times, rates = times[k:], rates[k:]
        else:
            # Read the version before the data: a concurrent write then only causes a recompute later.
            pairs = settlements.settlement_window()
            if pairs:
                arr = _to_array(pairs, 2)
                times, rates = arr[:, 0], arr[:, 1]
                k = int(np.searchsorted(times, start, side="right"))
                times, rates = times[k:].copy(), rates[k:].copy()
            else:
                times = rates = np.empty(0)
        stats = _stats(rates)
        first = float(times[0]) if times.size else np.inf
        with self._lock:
            self._settle[key] = (version, first, times, rates, stats)
        return stats

    def anchor(self, key: Hashable, samples: _AnchorSource, start: float, min_points: int = 10) -> float | None:
        dq = samples.anchor_samples
        win = self._anchor.get(key)
        try:
            if win is not None and dq[-1][0] == win.newest and win.oldest > start and len(dq) == win.rows_len:
                return win.slope  # nothing arrived, nothing left the window: no copy needed
        except IndexError:  # empty
            return None
        rows = tuple(dq)  # one C-level copy: the writer thread may append meanwhile
        if not rows:
            return None
        with self._lock:
            win = self._anchor.get(key)
            if win is None:
                win = self._anchor[key] = _AnchorWindow()
            return win.advance(rows, start, min_points)

    def anchor_difference(
        self, key: Hashable, samples: _AnchorSource, start: float, min_points: int = 10
    ) -> float | None:
        """:func:`anchor_strength_difference` over the samples after ``start``, recomputed only when a
        sample arrived or one left the window (about once a minute per instrument, one vectorised
        regression of a few hundred points)."""
        dq = samples.anchor_samples
        hit = self._anchor_diff.get(key)
        try:
            if hit is not None and dq[-1][0] == hit[0] and hit[1] > start and len(dq) == hit[2]:
                return hit[3]
        except IndexError:  # empty
            return None
        rows = tuple(dq)  # one C-level copy: the writer thread may append meanwhile
        if not rows:
            return None
        arr = _to_array(rows, 3)
        arr = arr[arr[:, 0] > start]
        slope = _difference_slope(arr, min_points, DIFFERENCE_MAX_GAP_SECONDS)
        oldest = float(arr[0, 0]) if arr.shape[0] else np.inf
        with self._lock:
            self._anchor_diff[key] = (rows[-1][0], oldest, len(rows), slope)
        return slope

    def forget(self, live_keys: set[Hashable]) -> None:
        """Drop entries of instruments that are no longer in state (bounded memory)."""
        with self._lock:
            for d in (self._settle, self._anchor, self._anchor_diff):
                for k in [k for k in d if k not in live_keys]:
                    del d[k]

    def __len__(self) -> int:
        return len(self._settle)
