"""Historical stress cost per held instrument: the worst move and the two fits over 30 days of closes.

Builds 30 days of 1-minute closes (Student-t returns, a few gaps) and times
:func:`exporter.analytics.stress.worst_moves`, the window returns, the normal and the Student-t fit
(median of several runs), and prints the memory the ring of one instrument holds.

Run: ``.venv/bin/python bench/bench_stress.py [--days 30] [--window 300] [--runs 5]``. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from exporter.analytics.stress import fit_normal, fit_student_t, window_returns, worst_moves
from exporter.positions.history import STEP_SECONDS, StressHistory


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--window", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    n = int(a.days * 86400 // STEP_SECONDS) + 1
    rng = np.random.default_rng(1)
    closes = 50_000.0 * np.exp(np.cumsum(0.0008 * rng.standard_t(3, n)))
    closes[rng.choice(n, n // 200, replace=False)] = np.nan
    lag = a.window // STEP_SECONDS
    r = window_returns(closes, lag)
    fit = fit_student_t(r)
    print(
        f"closes: {n} ({a.days:g} days), window {a.window} s, {len(r)} window returns, fitted nu {fit and fit.nu:.2f}"
    )
    print(f"worst_moves      {_median_ms(lambda: worst_moves(closes, lag), a.runs):8.1f} ms")
    print(f"window_returns   {_median_ms(lambda: window_returns(closes, lag), a.runs):8.1f} ms")
    print(f"fit_normal       {_median_ms(lambda: fit_normal(r), a.runs):8.1f} ms")
    print(f"fit_student_t    {_median_ms(lambda: fit_student_t(r), a.runs):8.1f} ms")
    h = StressHistory([a.window], a.days * 86400.0)
    print(f"ring per instrument held: {h.bytes_per_instrument} bytes ({h.bytes_per_instrument / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
