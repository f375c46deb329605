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
import operator
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
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


# What AnchorColumns reads of each window per step: its first and last records (samples leave the
# window at its front and arrive at its end, about one a minute each; a scrape every 15 s)
_EDGE_RECORDS = 4
_EDGES = itemgetter(slice(None, 3 * _EDGE_RECORDS), slice(-3 * _EDGE_RECORDS, None))
# the sums of one regression, one row each (as _Sums holds them)
_N, _X0, _Y0, _SX, _SY, _SXX, _SYY, _SXY = range(8)


class AnchorColumns:
    """The two anchor regressions of many instruments (positions 0..size-1 of the caller's list),
    their running sums kept as columns: what :class:`_AnchorWindow` keeps per instrument, advanced
    for all the instruments whose window moved in a few array operations instead of a copy of each
    window and a Python loop per instrument.

    A step reads only each window's storage object and its first and last ``_EDGE_RECORDS`` records
    (``_EDGES``, one C call: one instant of the window), and applies the samples that left the
    window at its front and those that arrived at its end with the same float operations, in the
    same order, as :meth:`_AnchorWindow.advance`: the slopes are those of the per-instrument path bit
    for bit. That holds because a window's storage is only appended to and cut at its front while it
    stays the same object (``Window.replace``/``clear`` swap it), and its times were strictly
    increasing when last read whole and every record since arrived through the read end, after the
    newest. Everything else goes through :class:`_AnchorWindow` itself, loaded from and stored back
    into the columns, on a copy of the whole window: the first step, another storage object (a
    backfill), times not strictly increasing, more samples in or out than the edges hold, a count
    that does not match the one the caller read (the event loop appended meanwhile), the periodic
    exact recomputation (REBASE) and sums too ill-conditioned to trust."""

    __slots__ = (
        "before",
        "diff",
        "has",
        "level",
        "lock",
        "newest",
        "oldest",
        "ordered",
        "rows",
        "rows_len",
        "slopes",
        "storage",
        "updates",
    )

    def __init__(self, size: int) -> None:
        self.level = np.zeros((8, size))
        self.diff = np.zeros((8, size))
        # what the slopes were computed over (_AnchorWindow.published): NaN, equal to nothing, until then
        self.before = np.full(size, np.nan)
        self.oldest = np.full(size, np.nan)
        self.newest = np.full(size, np.nan)
        self.rows_len = np.full(size, np.nan)
        self.rows = np.zeros(size)  # samples in the level sums; 0: none (the next step recomputes them)
        self.updates = np.zeros(size)
        self.slopes = np.full((size, 2), np.nan)  # level, difference
        self.has = np.zeros((size, 2), dtype=bool)  # which slopes there are (a slope may be NaN)
        self.ordered = np.zeros(size, dtype=bool)  # times strictly increasing when last read whole
        self.storage: list[object] = [None] * size
        # held by a reader from its check of what moved to its read of the slopes: two scrape threads
        # (an HA pair of Prometheus servers, /api/state) must not apply the same samples twice
        self.lock = threading.Lock()

    def take(self, other: AnchorColumns, source: np.ndarray) -> None:
        """Carry ``other``'s sums over to this one's positions: position i takes ``other``'s position
        ``source[i]`` (-1: none, left as never stepped). The instrument list changed (a listing): the
        instruments still in it keep their sums instead of being recomputed from whole windows."""
        with other.lock:
            has = np.flatnonzero(source >= 0)
            src = source[has]
            for name in ("before", "oldest", "newest", "rows_len", "rows", "updates", "ordered"):
                getattr(self, name)[has] = getattr(other, name)[src]
            self.level[:, has] = other.level[:, src]
            self.diff[:, has] = other.diff[:, src]
            self.slopes[has] = other.slopes[src]
            self.has[has] = other.has[src]
            for i, j in zip(has.tolist(), src.tolist(), strict=True):
                self.storage[i] = other.storage[j]

    def published(self, at: np.ndarray) -> np.ndarray:
        """(before, oldest, newest, records) of positions ``at``, as ``WindowCache.anchor_published``:
        the slopes stand while ``before <= start < oldest`` and the window's newest time and count are
        those."""
        return np.column_stack((self.before[at], self.oldest[at], self.newest[at], self.rows_len[at]))

    def advance(
        self,
        at: np.ndarray,
        storages: list[array],
        counts: np.ndarray,
        start: float,
        min_points: int = 10,
        max_gap: float = DIFFERENCE_MAX_GAP_SECONDS,
    ) -> None:
        """Step positions ``at`` (whose windows moved) to the window start ``start``: ``storages`` their
        windows' flat (time, funding, premium) storage objects, ``counts`` the records each held when
        the caller read it. An empty window gives no slopes and leaves its sums as they were."""
        k = len(at)
        if not k:
            return
        at = np.asarray(at, dtype=np.intp)
        counts = np.asarray(counts, dtype=np.float64)
        empty = at[counts == 0]
        self.slopes[empty] = np.nan
        self.has[empty] = False
        heads, tails = zip(*map(_EDGES, storages), strict=True)
        hl = np.fromiter(map(len, heads), dtype=np.intp, count=k) // 3
        tl = np.fromiter(map(len, tails), dtype=np.intp, count=k) // 3
        h = _left_aligned(heads, hl, _EDGE_RECORDS)
        t = _left_aligned(tails, tl, _EDGE_RECORDS)
        ht, tt = h[:, :, 0], t[:, :, 0]
        rows, rows_len = self.rows[at], self.rows_len[at]
        oldest, newest = self.oldest[at], self.newest[at]
        same = np.fromiter(map(operator.is_, storages, (self.storage[i] for i in at.tolist())), dtype=bool, count=k)
        r = np.arange(k)
        cols = np.arange(_EDGE_RECORDS)
        with np.errstate(invalid="ignore"):
            # within the edges read, strictly increasing times (NaN fails)
            inc_h = ((ht[:, 1:] > ht[:, :-1]) | (cols[None, 1:] >= hl[:, None])).all(axis=1)
            inc_t = ((tt[:, 1:] > tt[:, :-1]) | (cols[None, 1:] >= tl[:, None])).all(axis=1)
            ok = same & self.ordered[at] & (rows > 0) & (self.updates[at] < _AnchorWindow.REBASE) & inc_h & inc_t
            ok &= counts > 0
            # where our oldest summed sample is now (bisect_left), how many were cut before it, and how
            # many arrived after our newest
            lo = np.count_nonzero(ht < oldest[:, None], axis=1)
            ok &= (lo < hl) & (ht[r, np.minimum(lo, _EDGE_RECORDS - 1)] == oldest)
            new_count = np.count_nonzero(tt > newest[:, None], axis=1)
            ok &= (new_count < tl) & (tt[r, np.clip(tl - 1 - new_count, 0, _EDGE_RECORDS - 1)] == newest)
            cut = rows_len - rows - lo
            n = rows_len - cut + new_count
            ok &= (cut >= 0) & (n == counts)
            inside = np.count_nonzero(ht <= start, axis=1)  # bisect_right: the first sample inside
            ok &= (inside < hl) | (hl == n)
            ok &= inside >= lo  # rows put in front of the summed ones: recomputed (the reference's rule)
            hi = lo + rows - 1
            out = np.minimum(inside, hi + 1)  # summed [lo, out) left the window
            new = np.maximum(inside, hi + 1)  # [new, n) are new and inside
            low_pairs = np.minimum(inside, hi)  # summed pairs [lo, low_pairs) left
            high_pairs = np.maximum(inside, hi)  # pairs [high_pairs, n - 1) are new
            first_tail = n - tl  # the window position of the tail's first record
            ok &= out <= hl
            ok &= (low_pairs <= lo) | (low_pairs < hl)
            ok &= (new >= n) | (new >= first_tail)
            ok &= (high_pairs >= n - 1) | (high_pairs >= first_tail)
            idx = np.flatnonzero(ok)
            if len(idx):
                self._step(
                    at[idx],
                    h[idx],
                    t[idx],
                    lo[idx],
                    out[idx],
                    new[idx],
                    low_pairs[idx],
                    high_pairs[idx],
                    n[idx],
                    first_tail[idx],
                    max_gap,
                )
                pos = at[idx]
                ins = inside[idx]
                ri = np.arange(len(idx))
                hi_rec = ht[idx]
                self.updates[pos] += 2 * (out[idx] - lo[idx] + n[idx] - new[idx])
                self.rows[pos] = n[idx] - ins
                self.oldest[pos] = np.where(ins < n[idx], hi_rec[ri, np.minimum(ins, _EDGE_RECORDS - 1)], np.inf)
                self.before[pos] = np.where(ins > 0, hi_rec[ri, np.maximum(ins - 1, 0)], -np.inf)
                self.newest[pos] = tt[idx][ri, tl[idx] - 1]
                self.rows_len[pos] = n[idx]
                level, level_stale = _slope_columns(self.level[:, pos], min_points)
                diff, diff_stale = _slope_columns(self.diff[:, pos], min_points)
                self.slopes[pos, 0], self.slopes[pos, 1] = level, diff
                self.has[pos, 0], self.has[pos, 1] = ~np.isnan(level), ~np.isnan(diff)
                stale = level_stale | diff_stale
                ok[idx[stale]] = False  # recomputed exactly, as the reference does
                self.rows[pos[stale]] = 0.0
        # the others one by one, through the reference on a copy of the whole window
        for j in np.flatnonzero(~ok & (counts > 0)).tolist():
            self._one(int(at[j]), storages[j], start, min_points, max_gap)

    def _step(
        self,
        pos: np.ndarray,
        h: np.ndarray,
        t: np.ndarray,
        lo: np.ndarray,
        out: np.ndarray,
        new: np.ndarray,
        low_pairs: np.ndarray,
        high_pairs: np.ndarray,
        n: np.ndarray,
        first_tail: np.ndarray,
        max_gap: float,
    ) -> None:
        """The running sums' removals and additions of :meth:`_AnchorWindow.advance`, in its order
        (each regression's removals by position, then its additions), as masked column operations."""
        level = self.level[:, pos]
        diff = self.diff[:, pos]
        for p in range(_EDGE_RECORDS):  # level: samples that left, at the head's positions
            m = (lo <= p) & (p < out)
            if m.any():
                _apply(level, m, h[:, p, 2], h[:, p, 1], -1.0)
        for q in range(_EDGE_RECORDS):  # level: samples that arrived, at the tail's
            k = first_tail + q
            m = (k >= new) & (k < n)
            if m.any():
                _apply(level, m, t[:, q, 2], t[:, q, 1], 1.0)
        for p in range(_EDGE_RECORDS - 1):  # pairs (p, p + 1) that left
            m = (lo <= p) & (p < low_pairs) & (h[:, p + 1, 0] - h[:, p, 0] <= max_gap)
            if m.any():
                _apply(diff, m, h[:, p + 1, 2] - h[:, p, 2], h[:, p + 1, 1] - h[:, p, 1], -1.0)
        for q in range(_EDGE_RECORDS - 1):  # pairs that arrived
            k = first_tail + q
            m = (k >= high_pairs) & (k < n - 1) & (t[:, q + 1, 0] - t[:, q, 0] <= max_gap)
            if m.any():
                _apply(diff, m, t[:, q + 1, 2] - t[:, q, 2], t[:, q + 1, 1] - t[:, q, 1], 1.0)
        self.level[:, pos] = level
        self.diff[:, pos] = diff

    def _one(self, i: int, storage: array, start: float, min_points: int, max_gap: float) -> None:
        """Position ``i`` through :class:`_AnchorWindow` (loaded from the columns, stored back)."""
        a = storage[:]  # one C-level copy: the event loop may append meanwhile
        if not a:  # emptied meanwhile: no slopes, the sums left as they were (WindowCache.anchors)
            self.slopes[i] = np.nan
            self.has[i] = False
            return
        win = _AnchorWindow()
        if self.rows[i] > 0:
            _load(win.level, self.level[:, i])
            _load(win.diff, self.diff[:, i])
            win.oldest, win.newest = float(self.oldest[i]), float(self.newest[i])
            win.rows, win.updates = int(self.rows[i]), int(self.updates[i])
        level, diff = win.advance(a, start, min_points, max_gap)
        self.level[:, i] = _saved(win.level)
        self.diff[:, i] = _saved(win.diff)
        self.oldest[i], self.newest[i], self.before[i] = win.oldest, win.newest, win.before
        self.rows[i], self.rows_len[i], self.updates[i] = win.rows, win.rows_len, win.updates
        self.slopes[i] = (np.nan if level is None else level, np.nan if diff is None else diff)
        self.has[i] = (level is not None, diff is not None)
        ts = np.frombuffer(a, dtype=np.float64)[0::3]
        with np.errstate(invalid="ignore"):
            self.ordered[i] = bool((ts[1:] > ts[:-1]).all())
        self.storage[i] = storage


def _left_aligned(parts: Sequence[array], lengths: np.ndarray, k: int) -> np.ndarray:
    """Records of (time, funding, premium), up to ``k`` per part, as a (parts, k, 3) array, each
    part's records first and NaN after them."""
    flat = np.frombuffer(b"".join(parts), dtype=np.float64).reshape(-1, 3)
    if (lengths == k).all():
        return flat.reshape(-1, k, 3)
    out = np.full((len(parts), k, 3), np.nan)
    seg = np.repeat(np.arange(len(parts)), lengths)
    within = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[seg, within] = flat
    return out


def _apply(s: np.ndarray, m: np.ndarray, x: np.ndarray, y: np.ndarray, sign: float) -> None:
    """:meth:`_Sums.add` (``sign`` 1) or :meth:`_Sums.remove` (-1) of (x, y) where ``m``, over columns:
    the same operations on the same floats."""
    x = x - s[_X0]
    y = y - s[_Y0]
    if sign > 0:
        upd = (s[_N] + 1.0, s[_SX] + x, s[_SY] + y, s[_SXX] + x * x, s[_SYY] + y * y, s[_SXY] + x * y)
    else:
        upd = (s[_N] - 1.0, s[_SX] - x, s[_SY] - y, s[_SXX] - x * x, s[_SYY] - y * y, s[_SXY] - x * y)
    for row, value in zip((_N, _SX, _SY, _SXX, _SYY, _SXY), upd, strict=True):
        s[row] = np.where(m, value, s[row])


def _slope_columns(s: np.ndarray, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`_Sums.slope` (not exact) over columns: the slopes (NaN: None) and where the sums are
    too ill-conditioned to trust (STALE)."""
    n, sx, sy, sxx, syy, sxy = s[_N], s[_SX], s[_SY], s[_SXX], s[_SYY], s[_SXY]
    with np.errstate(all="ignore"):
        sxx_c = sxx - sx * sx / n
        syy_c = syy - sy * sy / n
        slope = (sxy - sx * sy / n) / sxx_c
        some = (n >= min_points) & (sxx != 0.0)
        stale = some & ((sxx_c < _CONDITION * sxx) | (syy_c < _CONDITION * syy))
        some &= ~stale & ~(sxx_c <= 0.0)
        stale |= some & ~np.isfinite(slope)
    return np.where(some & ~stale, slope, np.nan), stale


def _load(sums: _Sums, col: np.ndarray) -> None:
    n, sums.x0, sums.y0, sums.sx, sums.sy, sums.sxx, sums.syy, sums.sxy = col.tolist()
    sums.n = int(n)


def _saved(sums: _Sums) -> tuple[float, ...]:
    return (sums.n, sums.x0, sums.y0, sums.sx, sums.sy, sums.sxx, sums.syy, sums.sxy)
