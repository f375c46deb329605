"""Per-instrument funding analytics: pure functions over values read from state.

Rates are fractions per the instrument's own funding interval, exactly as the exchange delivers
them. Everything that compares instruments first scales to an 8 h interval (:func:`rate_8h`), so a
1 h instrument and an 8 h instrument paying the same per 8 h compare equal.

The only object with memory here is :class:`WindowCache`, a memo of window statistics keyed by
``InstrumentState.settlements_version``: it never touches state, it only spares a scrape the
recomputation of windows that have not changed.
"""

from __future__ import annotations

import math
import threading
from array import array
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


def settlement_columns(flat: array, interval_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(times, rates) of the state's flat (time, rate, interval) settlement records, every rate
    rescaled to ``interval_s`` as ``InstrumentState.settlement_window_in`` does (an interval of 0:
    unknown, kept as settled). Views on ``flat``: pass a copy."""
    arr = np.frombuffer(flat, dtype=np.float64).reshape(-1, 3)
    times, rates, intervals = arr[:, 0], arr[:, 1], arr[:, 2]
    if interval_s and ((intervals != interval_s) & (intervals != 0.0)).any():
        known = intervals != 0.0
        rates = np.where(known, rates * interval_s / np.where(known, intervals, 1.0), rates)
    return times, rates


def window_stats(times: Sequence[float], rates: Sequence[float], start: float) -> WindowStats | None:
    """Stats over the settlements with ``time > start``. ``times`` must be sorted ascending."""
    i = bisect_right(times, start)
    return _stats(np.asarray(rates[i:], dtype=np.float64))


def _stats(window: np.ndarray) -> WindowStats | None:
    n = int(window.size)
    if n == 0:
        return None
    # numpy's mean and std(ddof=1) step by step, the same operations (bit-identical results) without
    # their Python wrappers: the first render computes every instrument's window
    total = window.sum()
    mean = float(total / n)
    std: float | None = None
    # An exactly constant window has no spread: the float mean of equal values can leave a ~1e-20
    # residue that would turn into an absurd z-score, so test equality, not std == 0.
    if n >= 2 and float(window.max()) != float(window.min()):
        d = window - total / n
        std = math.sqrt(float((d * d).sum()) / (n - 1))
    acc = None
    if n >= 3:
        acc = float((window[-1] - window[-2]) - (window[-2] - window[-3]))
    return WindowStats(n, mean, std, acc)


def zscore(current: float, stats: WindowStats | None, min_observations: int) -> float | None:
    """(current - window mean) / window sample std; None with too few observations or no spread."""
    if stats is None or stats.n < min_observations or stats.std is None:
        return None
    return (current - stats.mean) / stats.std


def zscore_columns(current: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """:func:`zscore` over columns, where it is defined (enough observations, a spread): the same
    operations, so the same floats."""
    with np.errstate(all="ignore"):
        return (current - mean) / std


def momentum_columns(current: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """:func:`momentum` over columns, where it is defined."""
    return current - mean


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


class _Sums:
    """Least-squares sums of (x, y) points, shifted by a reference point of the window.

    The reference is the point nearest the window's mean at the last exact computation, so the sums
    stay well conditioned; when the window has drifted so far from it that the centred sums would
    lose more than two digits to cancellation, :meth:`slope` asks for an exact recomputation.
    """

    __slots__ = ("n", "sx", "sxx", "sxy", "sy", "syy", "x0", "y0")

    def __init__(self) -> None:
        self.n = 0
        self.x0 = self.y0 = self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def reset(self, x: np.ndarray, y: np.ndarray) -> None:
        self.n = int(x.size)
        if not self.n:
            self.x0 = self.y0 = self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0
            return
        # A value of the window itself (not its float mean): equal values then give exactly zero spread.
        # (sum / n and the methods, not np.mean/np.argmin: their Python wrappers cost more than the
        # arithmetic at a few hundred points, and the first render does this for every instrument)
        n = self.n
        self.x0 = float(x[int(abs(x - float(x.sum()) / n).argmin())])
        self.y0 = float(y[int(abs(y - float(y.sum()) / n).argmin())])
        dx, dy = x - self.x0, y - self.y0
        self.sx, self.sy = float(dx.sum()), float(dy.sum())
        self.sxx, self.syy, self.sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)

    def add(self, x: float, y: float) -> None:
        x -= self.x0
        y -= self.y0
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.syy += y * y
        self.sxy += x * y

    def remove(self, x: float, y: float) -> None:
        x -= self.x0
        y -= self.y0
        self.n -= 1
        self.sx -= x
        self.sy -= y
        self.sxx -= x * x
        self.syy -= y * y
        self.sxy -= x * y

    def slope(self, min_points: int, exact: bool) -> float | _Stale | None:
        """The OLS slope of y on x, None with fewer than ``min_points`` points or no spread in x,
        STALE when the running sums are too ill-conditioned to trust (``exact``: they were just
        recomputed, so trust them)."""
        n = self.n
        if n < min_points:
            return None
        sxx = self.sxx
        if sxx == 0.0:  # every x equals the reference exactly: no spread
            return None
        sxx_c = sxx - self.sx * self.sx / n
        syy_c = self.syy - self.sy * self.sy / n
        if not exact and (sxx_c < _CONDITION * sxx or syy_c < _CONDITION * self.syy):
            return STALE
        if sxx_c <= 0.0:
            return None
        slope = (self.sxy - self.sx * self.sy / n) / sxx_c
        if not exact and not math.isfinite(slope):
            # A non-finite sample stays in running sums after it left the window (NaN - NaN is NaN):
            # recompute from the window as it is now.
            return STALE
        return slope


class _Stale:
    """The marker of running sums that need an exact recomputation."""


STALE = _Stale()
# Centred sums at least this share of the raw (shifted) ones: at most two digits lost to cancellation.
_CONDITION = 1e-2


def _flat(samples: _Samples) -> array:
    """The samples as one flat array (t, funding, premium, t, ...), copied in one C call where the
    source is the state's Window (the event loop may append meanwhile)."""
    raw = getattr(samples, "raw", None)
    if raw is not None:
        flat: array = raw()
        return flat
    return array("d", chain.from_iterable(tuple(samples)))


def _last_time(samples: _Samples) -> float:
    last = getattr(samples, "last_time", None)
    if last is not None:
        t: float = last()
        return t
    return samples[-1][0]


class _AnchorWindow:
    """Running sums of one instrument's two anchor regressions over its trailing window.

    ``level``: funding on premium, one point per sample with time > start. ``difference``: the change
    of funding on the change of premium, one point per pair of consecutive samples inside the window
    at most ``max_gap`` apart. A sample that arrives or leaves the window adds or removes its point
    and its pair in O(1), instead of a 360-point regression of each.

    The sums are recomputed exactly (vectorised) every REBASE points in or out, when they grow
    ill-conditioned, and whenever the source changed in a way they cannot follow: samples summed but
    dropped from the source, rows put in front of the summed ones (the start-up backfill merged in
    after live samples), or a window start that moved back (two scrape threads read the clock a
    little apart). No copy of the rows is kept, only the first and last summed sample's times.
    """

    REBASE = 1440  # points in or out: about once a window at one sample a minute

    __slots__ = ("before", "diff", "level", "newest", "oldest", "published", "rows", "rows_len", "slopes", "updates")

    def __init__(self) -> None:
        self.level = _Sums()
        self.diff = _Sums()
        self.newest = self.oldest = -np.inf  # times of the newest and oldest sample in the sums
        self.before = np.inf  # time of the newest sample before the window (-inf: none)
        self.rows = 0  # samples in the level sums (the window), 0 forces an exact computation
        self.rows_len = 0  # rows in the source when last seen (a backfill adds rows, newest unchanged)
        self.updates = 0
        self.slopes: tuple[float | None, float | None] = (None, None)
        # (before, oldest, newest, rows_len, slopes) set in one assignment: what a scrape thread reads
        # without the lock sees the slopes of the window it checks, never a half-updated mix
        self.published: tuple[float, float, float, int, tuple[float | None, float | None]] = (
            np.inf,
            -np.inf,
            -np.inf,
            0,
            self.slopes,
        )

    def _rebuild(self, a: array, inside: int, max_gap: float) -> None:
        arr = np.frombuffer(a, dtype=np.float64).reshape(-1, 3)[inside:]
        self.level.reset(arr[:, 2], arr[:, 1])
        d = arr[1:] - arr[:-1]  # np.diff, without its Python wrapper
        d = d[d[:, 0] <= max_gap]
        self.diff.reset(d[:, 2], d[:, 1])
        self.updates = 0

    def advance(self, a: array, start: float, min_points: int, max_gap: float) -> tuple[float | None, float | None]:
        ts = a[0::3]
        n = len(ts)
        inside = bisect_right(ts, start)  # first sample inside the window
        exact = True
        if self.rows == 0 or self.updates >= self.REBASE:
            self._rebuild(a, inside, max_gap)
        else:
            lo = bisect_left(ts, self.oldest)  # our oldest summed sample in the source
            hi = lo + self.rows - 1  # our newest one, if the source still holds every summed sample
            if inside < lo or hi >= n or ts[lo] != self.oldest or ts[hi] != self.newest:
                self._rebuild(a, inside, max_gap)
            else:
                exact = False
                level, diff = self.level, self.diff
                out = min(inside, hi + 1)  # summed samples [lo, out) left the window
                new = max(inside, hi + 1)  # samples [new, n) are new and inside
                for k in range(lo, out):
                    level.remove(a[3 * k + 2], a[3 * k + 1])
                for k in range(new, n):
                    level.add(a[3 * k + 2], a[3 * k + 1])
                # pair k is (k, k + 1): summed pairs [lo, hi), now [inside, n - 1)
                for k in range(lo, min(inside, hi)):
                    j = 3 * k
                    if a[j + 3] - a[j] <= max_gap:
                        diff.remove(a[j + 5] - a[j + 2], a[j + 4] - a[j + 1])
                for k in range(max(inside, hi), n - 1):
                    j = 3 * k
                    if a[j + 3] - a[j] <= max_gap:
                        diff.add(a[j + 5] - a[j + 2], a[j + 4] - a[j + 1])
                self.updates += 2 * (out - lo + n - new)
        self.rows = n - inside
        self.oldest = ts[inside] if inside < n else np.inf
        self.before = ts[inside - 1] if inside else -np.inf
        self.newest = ts[n - 1] if n else -np.inf
        self.rows_len = n
        level_s = self.level.slope(min_points, exact)
        diff_s = self.diff.slope(min_points, exact)
        if level_s is STALE or diff_s is STALE:
            self._rebuild(a, inside, max_gap)
            level_s = self.level.slope(min_points, True)
            diff_s = self.diff.slope(min_points, True)
        assert not isinstance(level_s, _Stale) and not isinstance(diff_s, _Stale)
        self.slopes = (level_s, diff_s)
        self.published = (self.before, self.oldest, self.newest, n, self.slopes)
        return self.slopes


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
            columns = getattr(settlements, "settlement_columns", None)
            if columns is not None:  # straight from the state's flat storage, no tuple per settlement
                times, rates = columns()
                k = int(np.searchsorted(times, start, side="right"))
                times, rates = times[k:].copy(), rates[k:].copy()
            elif pairs := settlements.settlement_window():
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

    def anchors(
        self, key: Hashable, samples: _AnchorSource, start: float, min_points: int = 10
    ) -> tuple[float | None, float | None]:
        """(level, difference) anchor slopes over the samples after ``start``: :func:`anchor_strength`
        and :func:`anchor_strength_difference`, kept up to date by running sums (O(1) a sample)."""
        dq = samples.anchor_samples
        if not len(dq):
            return None, None
        win = self._anchor.get(key)
        if win is not None:
            before, oldest, newest, rows_len, slopes = win.published
            if before <= start < oldest and _last_time(dq) == newest and len(dq) == rows_len:
                # Nothing arrived, nothing left the window, and no sample before it entered it (a
                # window start read a little earlier by another scrape thread): no copy needed.
                return slopes
        flat = _flat(dq)  # one C-level copy: the writer thread may append meanwhile
        if not flat:
            return None, None
        with self._lock:
            win = self._anchor.get(key)
            if win is None:
                win = self._anchor[key] = _AnchorWindow()
            return win.advance(flat, start, min_points, DIFFERENCE_MAX_GAP_SECONDS)

    def anchor_published(self, key: Hashable) -> tuple[float, float, float, int] | None:
        """What :meth:`anchors` of ``key`` last computed its slopes over: the newest sample before the
        window, the oldest and newest inside it, the samples the source held (None: nothing yet).
        The slopes stand while ``before <= start < oldest`` and the source's newest time and length
        are those: a reader of many instruments checks that over columns and asks only the others."""
        win = self._anchor.get(key)
        return None if win is None else win.published[:4]

    def settlement_oldest(self, key: Hashable) -> float:
        """The time of the oldest settlement in the window :meth:`settlement_stats` of ``key`` last
        computed (inf: none, or never computed): its statistics stand, for the same version, while
        the window's start stays before it."""
        hit = self._settle.get(key)
        return np.inf if hit is None else hit[1]

    def anchor(self, key: Hashable, samples: _AnchorSource, start: float, min_points: int = 10) -> float | None:
        """:func:`anchor_strength` (method level), kept up to date as in :meth:`anchors`."""
        return self.anchors(key, samples, start, min_points)[0]

    def anchor_difference(
        self, key: Hashable, samples: _AnchorSource, start: float, min_points: int = 10
    ) -> float | None:
        """:func:`anchor_strength_difference` (method difference), kept up to date as in :meth:`anchors`."""
        return self.anchors(key, samples, start, min_points)[1]

    def forget(self, live_keys: set[Hashable]) -> None:
        """Drop entries of instruments that are no longer in state (bounded memory)."""
        with self._lock:
            for d in (self._settle, self._anchor):
                for k in [k for k in d if k not in live_keys]:
                    del d[k]

    def __len__(self) -> int:
        return len(self._settle)
