"""The anchor regressions of many instruments advanced over columns (analytics.funding.AnchorColumns,
what a scrape does when a minute closes) against the per-instrument path they replace in the bulk
views (WindowCache.anchors: the same running sums, one instrument at a time): the same slopes bit for
bit, None exactly where it gives None, over random histories of the store's windows (samples a
minute, gaps, bursts of samples between two scrapes, backfills merged in front, windows emptied,
samples out of order or at a repeated time, non-finite values, a premium that stops moving); and
within a stated tolerance of the regression computed afresh (anchor_strength and
anchor_strength_difference): the running sums never present a drifted number."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.analytics import funding as fa
from exporter.state import Window, window_ends, window_storage

T0 = 1_767_225_600.0
WINDOW_S = 6 * 3600.0  # the default anchor window
SPAN_S = WINDOW_S + 60.0  # the store's: the window and one sample period (MarketState._anchor_span)
# The running sums against a fresh regression: they drop at most two digits to cancellation before
# they are recomputed (funding._CONDITION), and the exact recomputation every REBASE points in or out
REL = 1e-7


@dataclass
class Holder:
    anchor_samples: Window


def _slopes(columns: fa.AnchorColumns, i: int) -> tuple[float | None, float | None]:
    level, diff = columns.slopes[i].tolist()
    has = columns.has[i].tolist()
    return (level if has[0] else None, diff if has[1] else None)


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and repr(a) == repr(b))


class Market:
    """Instruments' anchor windows (the store's Window) and what happens to them between scrapes."""

    def __init__(self, rnd: random.Random, k: int, oddity: float, maxlen: int) -> None:
        self.rnd = rnd
        self.oddity = oddity
        self.windows = [Window(3, maxlen, SPAN_S) for _ in range(k)]
        self.level = [rnd.uniform(-2e-4, 4e-4) for _ in range(k)]
        self.premium = [rnd.gauss(0, 5e-4) for _ in range(k)]
        self.now = T0
        for i, w in enumerate(self.windows):  # a window of history, as the start-up backfill leaves it
            n = rnd.choice([0, 3, 50, 360])
            w.extend(self._sample(i, self.now - (n - j) * 60.0) for j in range(n))

    def _sample(self, i: int, t: float) -> tuple[float, float, float]:
        rnd = self.rnd
        if rnd.random() < 0.98:
            self.premium[i] += rnd.gauss(0, 1e-4)
        prem = self.premium[i]
        funding = self.level[i] + 0.5 * prem + rnd.gauss(0, 1e-6)
        if rnd.random() < self.oddity * 0.05:
            funding = rnd.choice([math.inf, -math.inf, math.nan, 1e300])
        return (t, funding, prem)

    def move(self, seconds: float) -> None:
        """Time moves on; each instrument takes its sample of the minute (the sampler), or something
        odd happens to its window."""
        rnd, odd = self.rnd, self.oddity
        self.now += seconds
        now = self.now
        for i, w in enumerate(self.windows):
            last = w.last_time()
            r = rnd.random()
            if r < odd * 0.04:  # a backfill merged in front of the live samples (Sampler.backfill_anchor)
                live = list(w)
                first = live[0][0] if live else now
                past = [self._sample(i, first - 60.0 * (j + 1)) for j in range(rnd.randint(1, 30))]
                w.replace([*sorted(past), *live])
            elif r < odd * 0.06:
                w.clear()
            elif r < odd * 0.09:  # a sample out of order, or at a time already there
                t = (last if last is not None else now) - rnd.choice([0.0, 0.0, 30.0, 600.0])
                w.append(self._sample(i, t))
            elif r < odd * 0.15:  # a burst: more samples than a step reads at the window's end
                w.extend(self._sample(i, now - 60.0 * (5 - j) + 0.5) for j in range(rnd.randint(2, 6)))
            elif rnd.random() < 0.9 and (last is None or now - last >= 60.0):
                w.append(self._sample(i, now))


def _scrape(
    market: Market, columns: fa.AnchorColumns, cache: fa.WindowCache, start: float, race: bool
) -> list[tuple[int, tuple[float | None, float | None], tuple[float | None, float | None]]]:
    """One scrape as the bulk views take it (the windows that moved, stepped together) against the
    per-instrument path (WindowCache.anchors). ``race``: a sample arrives between the read of the
    windows' counts and the step, as the event loop may append while a scrape thread reads."""
    windows = market.windows
    ends = np.array(window_ends(windows, False), dtype=np.float64).reshape(-1, 2)
    at = np.arange(len(windows))
    pub = columns.published(at)
    moved = np.flatnonzero(
        ~((pub[:, 0] <= start) & (start < pub[:, 1]) & (pub[:, 2] == ends[:, 1]) & (pub[:, 3] == ends[:, 0]))
    )
    if race and len(moved):
        w = windows[int(moved[0])]
        last = w.last_time()
        w.append(market._sample(int(moved[0]), (last if last is not None else market.now) + 60.0))
    columns.advance(moved, window_storage([windows[j] for j in moved.tolist()]), ends[moved, 0], start)
    out = []
    for i, w in enumerate(windows):
        want = cache.anchors(i, Holder(w), start) if len(w) else (None, None)
        out.append((i, _slopes(columns, i), want))
    return out


def _fresh(window: Window, start: float) -> tuple[float | None, float | None]:
    rows = [(t, f, p) for t, f, p in window]
    return fa.anchor_strength(rows, start), fa.anchor_strength_difference(rows, start)


def _in_order_and_finite(window: Window) -> bool:
    """A window as the sampler writes it: times strictly increasing, values finite. (The change
    detection both paths share reads a window's count and newest time: a sample that repeats the
    newest time while one is cut from the front changes neither, and the kept slopes stand; the
    sampler never repeats a time. Out of order, the running sums search the window as it is.)"""
    rows = list(window)
    return all(math.isfinite(f) and math.isfinite(p) for _, f, p in rows) and all(
        b[0] > a[0] for a, b in pairwise(rows)
    )


def _close(got: float | None, fresh: float | None) -> bool:
    if got is None or fresh is None:
        return got is fresh
    return math.isclose(got, fresh, rel_tol=REL, abs_tol=REL * 1e-3)


@settings(max_examples=int(os.environ.get("ANCHOR_EXAMPLES", 60)), deadline=None)
@given(
    seed=st.integers(0, 2**32),
    k=st.integers(1, 12),
    oddity=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]),
    maxlen=st.sampled_from([2000, 2000, 40]),
    steps=st.integers(1, 40),
    rate=st.sampled_from([15.0, 15.0, 60.0, 7.0]),
)
def test_columns_equal_the_per_instrument_running_sums_bit_for_bit(
    seed: int, k: int, oddity: float, maxlen: int, steps: int, rate: float
) -> None:
    rnd = random.Random(seed)
    market = Market(rnd, k, oddity, maxlen)
    columns = fa.AnchorColumns(k)
    cache = fa.WindowCache()
    for step in range(steps):
        odd = rnd.random() < 0.03 * (1 + 10 * oddity)
        # now and then no time, a clock read earlier, a gap
        market.move(rnd.choice([0.0, -3.0, 1800.0, 7 * 3600.0]) if odd else rate)
        start = market.now - WINDOW_S
        race = rnd.random() < 0.1 * oddity
        with np.errstate(all="ignore"):
            for i, got, want in _scrape(market, columns, cache, start, race):
                assert _same(got[0], want[0]) and _same(got[1], want[1]), (step, i, got, want)
                if _in_order_and_finite(market.windows[i]):
                    fresh = _fresh(market.windows[i], start)
                    assert _close(got[0], fresh[0]) and _close(got[1], fresh[1]), (step, i, got, fresh)


def test_a_minute_of_full_windows_is_stepped_over_columns_not_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common case (a sample in and one out per window, at a 15 s scrape interval) never takes the
    per-instrument path after the first step; every window that moved is stepped, bit for bit as the
    per-instrument path (the test above)."""
    rnd = random.Random(3)
    market = Market(rnd, 50, 0.0, 2000)
    for w in market.windows:
        w.clear()
        w.extend(market._sample(0, market.now - (360 - j) * 60.0) for j in range(360))
    columns = fa.AnchorColumns(50)
    cache = fa.WindowCache()
    one_by_one: list[int] = []
    real = fa.AnchorColumns._one

    def counted(self: fa.AnchorColumns, i: int, *args: object) -> None:
        one_by_one.append(i)
        real(self, i, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(fa.AnchorColumns, "_one", counted)
    _scrape(market, columns, cache, market.now - WINDOW_S, False)
    assert sorted(one_by_one) == list(range(50))  # the first step: every window read whole
    one_by_one.clear()
    for _ in range(40):
        market.move(15.0)
        for i, got, want in _scrape(market, columns, cache, market.now - WINDOW_S, False):
            assert _same(got[0], want[0]) and _same(got[1], want[1]), (i, got, want)
            assert got[0] is not None and got[1] is not None
    assert one_by_one == []
    assert (columns.updates > 0).all()  # every window's sums moved by the steps over columns
