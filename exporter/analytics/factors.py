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
