"""Factor signals of the multi-factor model desks run: open-interest change and realised volatility.

Pure functions of time-ordered samples (no state, no clock): the view layer hands them the windows
the store keeps (1-minute mark closes, open-interest samples) and the time now.

* :func:`realized_volatility`: the standard deviation (sample, n - 1) of the 1-minute log returns of
  the mark over the window's complete minutes, scaled by sqrt(minutes in the window): the typical
  move over the window, as a fraction, **not** annualised. A minute without a mark takes the close
  before it (a zero return); too few minutes with their own close (< ``min_coverage``) or no close
  within ``max_gap_s`` before the window: None.
* :func:`oi_change`: open interest now over its value at the latest sample at or before
  ``now - window`` (none within ``tolerance_s`` of that time: None), minus 1.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

MINUTE = 60.0
# The published windows (the ``window`` label) and their length in seconds.
OI_CHANGE_WINDOWS: dict[str, float] = {"1h": 3600.0, "4h": 14400.0}
VOLATILITY_WINDOWS: dict[str, float] = {"1h": 3600.0, "4h": 14400.0}


def realized_volatility(
    times: Sequence[float] | np.ndarray,
    closes: Sequence[float] | np.ndarray,
    now: float,
    window_s: float,
    *,
    step_s: float = MINUTE,
    min_coverage: float = 0.8,
    max_gap_s: float = 600.0,
) -> float | None:
    """Realised volatility over the ``window_s`` of complete ``step_s`` periods before ``now``.

    ``times``/``closes``: period start times (sorted) and the last price of each period.
    """
    n = round(window_s / step_s)
    if n < 2 or len(times) < 2:
        return None
    t = np.asarray(times, dtype=float)
    c = np.asarray(closes, dtype=float)
    current = math.floor(now / step_s) * step_s  # the period in progress is not in the window
    grid = current - step_s * np.arange(n + 1, 0, -1)  # n + 1 closes -> n returns
    idx = np.searchsorted(t, grid, side="right") - 1
    if idx[0] < 0 or t[idx[0]] < grid[0] - max_gap_s:
        return None
    own = np.count_nonzero(t[idx] == grid)
    if own < min_coverage * (n + 1):
        return None
    px = c[idx]
    if not np.all(px > 0.0):
        return None
    r = np.diff(np.log(px))
    return float(np.std(r, ddof=1) * math.sqrt(n))


def realized_volatility_columns(
    times: np.ndarray,
    closes: np.ndarray,
    lengths: np.ndarray,
    now: float,
    windows_s: Sequence[float],
    *,
    step_s: float = MINUTE,
    min_coverage: float = 0.8,
    max_gap_s: float = 600.0,
) -> np.ndarray:
    """:func:`realized_volatility` of many series at once, over each of ``windows_s``: a (series,
    windows) array, NaN where :func:`realized_volatility` gives None, else the same float.

    ``times``/``closes``: the series one after another (each sorted by time, as the store keeps its
    windows; one that is not is handed to the reference function), ``lengths`` how many points each
    has. Every window's grid of period starts is the end of the longest one's (the same ``now``), so
    where each grid point falls in every series is found in one pass: each time's first grid point at
    or after it (one search over all points), counted per series and grid point; the position of the
    latest point at or before a grid point is that count minus one. The rest is the reference's own
    steps over rows (the same operations on the same numbers: gather, log, diff, std with ddof=1 along
    each row)."""
    k = len(lengths)
    out = np.full((k, len(windows_s)), np.nan)
    ns = [round(w / step_s) for w in windows_s]
    if k == 0 or not any(n >= 2 for n in ns):
        return out
    lengths = np.asarray(lengths, dtype=np.intp)
    t = np.asarray(times, dtype=float)
    c = np.asarray(closes, dtype=float)
    big = max(ns)
    current = math.floor(now / step_s) * step_s
    grid = current - step_s * np.arange(big + 1, 0, -1)
    g = len(grid)
    # slot: the first grid point at or after each time (g: after every one); per series, the number of
    # its times at or before grid point j is the cumulative count of its slots up to j
    seg = np.repeat(np.arange(k, dtype=np.intp), lengths)
    slot = np.searchsorted(grid, t, side="left")
    counts = np.bincount(seg * (g + 1) + slot, minlength=k * (g + 1)).reshape(k, g + 1)
    at_or_before = np.cumsum(counts, axis=1)[:, :g]
    offsets = np.cumsum(lengths) - lengths
    last = max(len(t) - 1, 0)
    # a series out of order (or with a NaN time) is searched as the reference searches it: on its own
    odd = out_of_order(t, seg)
    for w, n in enumerate(ns):
        if n < 2 or not len(t):
            continue
        sub = grid[g - (n + 1) :]
        local = at_or_before[:, g - (n + 1) :] - 1  # -1: no point at or before it
        ok = (lengths >= 2) & (local[:, 0] >= 0)
        idx = np.minimum(offsets[:, None] + np.maximum(local, 0), last)
        ts = t[idx]
        with np.errstate(invalid="ignore"):
            ok &= ~(ts[:, 0] < sub[0] - max_gap_s)
            ok &= ~(np.count_nonzero(ts == sub, axis=1) < min_coverage * (n + 1))
            px = c[idx]
            ok &= np.all(px > 0.0, axis=1)
        rows = np.flatnonzero(ok)
        if not len(rows):
            continue
        r = np.diff(np.log(px[rows]), axis=1)
        out[rows, w] = np.std(r, axis=1, ddof=1) * math.sqrt(n)
    for j in odd:
        part = slice(int(offsets[j]), int(offsets[j] + lengths[j]))
        for w, window in enumerate(windows_s):
            v = realized_volatility(
                t[part], c[part], now, window, step_s=step_s, min_coverage=min_coverage, max_gap_s=max_gap_s
            )
            out[j, w] = np.nan if v is None else v
    return out


def realized_volatility_rows(
    times: np.ndarray,
    closes: np.ndarray,
    now: float,
    windows_s: Sequence[float],
    *,
    step_s: float = MINUTE,
    min_coverage: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`realized_volatility` of series of one length, given as rows (``times``/``closes``:
    (series, points), views of the store's windows read together), for the rows whose last points
    are the longest window's grid itself: every period's own close, in order, and the points before
    them in order too (the common case: a window of minute closes with none missing). There the
    latest close at or before each grid point is the grid point's own, so no search is needed: the
    reference's steps on the same numbers (log, diff, std with ddof=1 along each row). Returns the
    values (NaN where :func:`realized_volatility` gives None) and which rows they are; every other
    row is left NaN, for :func:`realized_volatility_columns`."""
    k, length = times.shape
    out = np.full((k, len(windows_s)), np.nan)
    ns = [round(w / step_s) for w in windows_s]
    big = max(ns, default=0)
    g = big + 1
    if k == 0 or big < 2 or length < g or min_coverage > 1.0:
        return out, np.zeros(k, dtype=bool)
    current = math.floor(now / step_s) * step_s
    grid = current - step_s * np.arange(big + 1, 0, -1)
    with np.errstate(invalid="ignore"):
        regular = (times[:, length - g :] == grid).all(axis=1)
        if length > g:  # the points before the grid in order too: the reference's search is a search
            regular &= (times[:, 1 : length - g + 1] > times[:, : length - g]).all(axis=1)
        rows = np.flatnonzero(regular)
        px_all = closes[rows, length - g :]
        positive = px_all > 0.0
        logs = np.log(np.where(positive, px_all, 1.0))  # a bad close's row gives None below
    for w, n in enumerate(ns):
        if n < 2:
            continue
        ok = positive[:, g - (n + 1) :].all(axis=1)
        r = np.diff(logs[ok, g - (n + 1) :], axis=1)
        out[rows[ok], w] = np.std(r, axis=1, ddof=1) * math.sqrt(n)
    return out, regular


def out_of_order(times: np.ndarray, seg: np.ndarray) -> list[int]:
    """The series (numbers in ``seg``, one per point, the series one after another) with a point
    earlier than the one before it, or a NaN time: a binary search over them is not a search."""
    with np.errstate(invalid="ignore"):
        back = np.flatnonzero(~(times[1:] >= times[:-1])) + 1  # a point before the one ahead of it, or NaN
    back = back[seg[back] == seg[back - 1]]  # within a series (a series may start earlier than the last ended)
    odd: list[int] = np.unique(seg[back]).tolist()
    return odd


def latest_at_or_before(
    times: np.ndarray, lengths: np.ndarray, targets: Sequence[float]
) -> tuple[np.ndarray, list[int]]:
    """Per series and target, the position in ``times`` of the series' latest point at or before the
    target (the point ``bisect_right(series, target) - 1`` picks), -1 where there is none; and the
    series out of order (:func:`out_of_order`), whose positions are not searched (the caller searches
    them as the reference does). ``times``: the series one after another, ``lengths`` their sizes."""
    lengths = np.asarray(lengths, dtype=np.intp)
    k = len(lengths)
    seg = np.repeat(np.arange(k, dtype=np.intp), lengths)
    offsets = np.cumsum(lengths) - lengths
    out = np.empty((k, len(targets)), dtype=np.intp)
    for j, x in enumerate(targets):
        count = np.bincount(seg[times <= x], minlength=k)  # of a sorted series: bisect_right
        out[:, j] = np.where(count > 0, offsets + count - 1, -1)
    return out, out_of_order(times, seg)


def oi_change(
    times: Sequence[float],
    values: Sequence[float],
    oi_now: float,
    now: float,
    window_s: float,
    *,
    tolerance_s: float = 600.0,
) -> float | None:
    """``oi_now / OI(now - window_s) - 1`` with OI at a time the latest sample at or before it."""
    target = now - window_s
    i = bisect_right(times, target) - 1
    if i < 0 or times[i] < target - tolerance_s:
        return None
    then = values[i]
    if not then > 0.0:
        return None
    return oi_now / then - 1.0


def oi_change_columns(
    then_times: np.ndarray,
    then_values: np.ndarray,
    oi_now: np.ndarray,
    now: float,
    window_s: float,
    *,
    tolerance_s: float = 600.0,
) -> np.ndarray:
    """:func:`oi_change` of many instruments at once, each given the sample it picks (the latest at or
    before ``now - window_s``; NaN time: none): NaN where :func:`oi_change` gives None, else the
    same float (the same operations)."""
    target = now - window_s
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ok = ~np.isnan(then_times) & ~(then_times < target - tolerance_s) & (then_values > 0.0)
        return np.where(ok, oi_now / then_values - 1.0, np.nan)
