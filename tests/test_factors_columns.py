"""Realised volatility of many series at once (analytics.factors.realized_volatility_columns, what a
scrape computes when a minute closes) against the reference function series by series: the same
float bit for bit, NaN exactly where the reference gives None, over random windows of minute closes
with gaps, backfilled stretches, points off the minute grid, bad closes, a minute in progress and
``now`` anywhere in a minute."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.analytics.factors import (
    MINUTE,
    VOLATILITY_WINDOWS,
    latest_at_or_before,
    realized_volatility,
    realized_volatility_columns,
    realized_volatility_rows,
)

T0 = 1_767_225_600.0


@st.composite
def series(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """One store window: minute starts in order (runs of minutes, gaps between, now and then a point
    off the grid as a backfill may bring; rarely a time repeated or one that goes back, which the
    reference searches as it is), closes a random walk, sometimes zero, negative or NaN. Hypothesis
    draws the shape (length, how often each oddity comes, the start); the points come from a seeded
    generator (drawing each of thousands of points would make an example slow)."""
    n = draw(st.integers(0, 300))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    p_gap = draw(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.4]))
    p_off = draw(st.sampled_from([0.0, 0.0, 0.05]))
    p_back = draw(st.sampled_from([0.0, 0.0, 0.0, 0.01]))
    p_bad = draw(st.sampled_from([0.0, 0.0, 0.0, 0.002, 0.05]))
    t = T0
    px = draw(st.floats(1e-3, 1e5))
    times: list[float] = []
    closes: list[float] = []
    for _ in range(n):
        if rnd.random() < p_back:
            gap = rnd.choice([0, -17])  # out of order
        elif rnd.random() < p_gap:
            gap = rnd.choice([2, 3, 10, 11, 15])
        else:
            gap = 1
        t += 60.0 * gap
        off = rnd.choice([0.5, 30.0, 59.999]) if rnd.random() < p_off else 0.0
        px *= math.exp(rnd.uniform(-0.01, 0.01))
        times.append(t + off)
        closes.append(rnd.choice([0.0, -1.0, math.nan]) if rnd.random() < p_bad else px)
    # every series ending within a few minutes of T0, as the instruments of one store do
    shift = (T0 + 60.0 * draw(st.integers(-3, 3))) - (t if times else T0)
    return [x + shift for x in times], closes


@settings(max_examples=80, deadline=None)
@given(
    many=st.lists(series(), min_size=1, max_size=8),
    in_progress=st.lists(st.booleans(), min_size=8, max_size=8),
    minutes_after=st.sampled_from([-2, -1, 0, 0, 1, 1, 1, 2, 3, 5, 12]),
    second=st.floats(0.0, 59.999),
    extra=st.sampled_from([120.0, 300.0, 600.0, 60.0, 3590.0]),
)
def test_columns_equal_the_reference_series_by_series(
    many: list[tuple[list[float], list[float]]],
    in_progress: list[bool],
    minutes_after: int,
    second: float,
    extra: float,
) -> None:
    ends = [ts[-1] for ts, _ in many if ts]
    last = max(ends) if ends else T0
    now = math.floor(last / MINUTE) * MINUTE + MINUTE * minutes_after + second
    windows = (VOLATILITY_WINDOWS["1h"], VOLATILITY_WINDOWS["4h"], extra)
    rows: list[tuple[list[float], list[float]]] = []
    for (ts, cs), more in zip(many, in_progress, strict=False):
        ts, cs = list(ts), list(cs)
        cur = math.floor(now / MINUTE) * MINUTE
        if more and (not ts or cur > ts[-1]):  # the minute in progress, as the views add it
            ts.append(cur)
            cs.append(cs[-1] if cs else 1.0)
        rows.append((ts, cs))
    got = realized_volatility_columns(
        np.array([t for ts, _ in rows for t in ts], dtype=float),
        np.array([c for _, cs in rows for c in cs], dtype=float),
        np.array([len(ts) for ts, _ in rows]),
        now,
        windows,
    )
    assert got.shape == (len(rows), len(windows))
    for k, (ts, cs) in enumerate(rows):
        for w, window in enumerate(windows):
            want = realized_volatility(ts, cs, now, window)
            if want is None:
                assert math.isnan(got[k, w]), (k, window)
            else:
                assert got[k, w] == want, (k, window, got[k, w], want)  # bit for bit


def test_full_windows_of_thousands_of_series_equal_the_reference() -> None:
    """Full 4 h windows as a steady exporter holds them, many series in one call (the rows reduced
    together): every value equal to the reference's, and every one present."""
    rng = np.random.default_rng(7)
    k, m = 300, 248
    now = T0 + 17.0
    times = np.tile(T0 - MINUTE * np.arange(m, 0, -1), k)
    closes = np.exp(np.cumsum(rng.normal(0, 1e-3, size=(k, m)), axis=1)).ravel() * 50.0
    got = realized_volatility_columns(times, closes, np.full(k, m), now, (3600.0, 14400.0))
    for j in range(k):
        ts, cs = times[j * m : (j + 1) * m], closes[j * m : (j + 1) * m]
        assert got[j, 0] == realized_volatility(ts, cs, now, 3600.0)
        assert got[j, 1] == realized_volatility(ts, cs, now, 14400.0)


def test_no_series_and_empty_series() -> None:
    empty = np.array([], dtype=float)
    assert realized_volatility_columns(empty, empty, np.array([], dtype=int), T0, (3600.0,)).shape == (0, 1)
    got = realized_volatility_columns(empty, empty, np.array([0, 0]), T0, (3600.0, 14400.0))
    assert got.shape == (2, 2) and np.isnan(got).all()


def test_the_edges_of_the_rules_series_by_series() -> None:
    """Each rule at its edge, all in one call: the latest close before the window at exactly the
    largest gap allowed and a second beyond it, coverage at exactly 80 % and one minute under, a
    close of zero, a close at a grid point's very time and a hair after it."""
    now = T0 + 61 * MINUTE + 5.0  # the window: closes at T0 + 0 .. T0 + 60 minutes
    grid = [T0 + MINUTE * j for j in range(61)]
    full = [100.0 * math.exp(0.001 * math.sin(j)) for j in range(61)]
    cases: list[tuple[list[float], list[float]]] = []
    for before in (600.0, 601.0, 599.5):  # only a close this long before the window's start, then the rest
        cases.append(([T0 - before, *grid[1:]], full))
    need = math.ceil(0.8 * 61)
    for own in (need, need - 1):  # closes of their own at the first `own` grid points only
        cases.append((grid[:own], full[:own]))
    cases.append((grid, [*full[:30], 0.0, *full[31:]]))
    cases.append(([grid[0] + 1e-6, *grid[1:]], full))
    cases.append(([grid[0] - 1e-6, *grid[1:]], full))
    got = realized_volatility_columns(
        np.array([t for ts, _ in cases for t in ts]),
        np.array([c for _, cs in cases for c in cs]),
        np.array([len(ts) for ts, _ in cases]),
        now,
        (3600.0,),
    )
    present = []
    for k, (ts, cs) in enumerate(cases):
        want = realized_volatility(ts, cs, now, 3600.0)
        present.append(want is not None)
        assert (math.isnan(got[k, 0]) and want is None) or got[k, 0] == want, k
    assert present == [True, False, True, True, False, False, False, True]


@settings(max_examples=80, deadline=None)
@given(
    many=st.lists(series(), min_size=1, max_size=8),
    targets=st.lists(st.integers(-60, 400).map(lambda m: T0 + 60.0 * m + (m % 7) * 0.5), min_size=1, max_size=3),
)
def test_latest_at_or_before_is_what_bisect_picks(
    many: list[tuple[list[float], list[float]]], targets: list[float]
) -> None:
    """The open-interest change's sample search over many windows at once against ``bisect_right``
    window by window (the reference's search): the same position for every sorted window and target,
    and every window out of order reported, none in order."""
    times = np.array([t for ts, _ in many for t in ts], dtype=float)
    pos, odd = latest_at_or_before(times, np.array([len(ts) for ts, _ in many]), targets)
    offset = 0
    for k, (ts, _) in enumerate(many):
        ordered = all(b >= a for a, b in pairwise(ts))
        assert (k in odd) is (not ordered)
        if ordered:
            for j, x in enumerate(targets):
                i = bisect_right(ts, x) - 1
                assert pos[k, j] == (offset + i if i >= 0 else -1)
        offset += len(ts)


@st.composite
def full_windows(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """Windows of one length as the store holds them when full (248 minute closes, the last at the
    last complete minute), most without a missing minute; now and then one with an oddity the rows'
    path must leave to the search (a minute missing, a point off the grid, a time repeated or out of
    order before the grid, a window a minute behind), or a bad close (zero, negative, NaN), which it
    must answer as the reference does. Shape drawn, points from a seeded generator."""
    k = draw(st.integers(1, 40))
    m = draw(st.sampled_from([248, 248, 242, 241, 300]))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    p_odd = draw(st.sampled_from([0.0, 0.1, 0.5]))
    p_bad = draw(st.sampled_from([0.0, 0.0, 0.02, 0.3]))
    second = draw(st.floats(0.0, 59.999))
    now = T0 + second
    times = np.tile(T0 - MINUTE * np.arange(m, 0, -1), (k, 1))
    closes = 50.0 * np.exp(np.cumsum(np.array([[rnd.gauss(0, 1e-3) for _ in range(m)] for _ in range(k)]), axis=1))
    for j in range(k):
        if rnd.random() < p_odd:
            at = rnd.randrange(m)
            kind = rnd.choice(["gap", "off", "repeat", "back", "behind"])
            if kind == "gap":  # a minute missing: the points before it a minute earlier
                times[j, :at] -= MINUTE
            elif kind == "off":
                times[j, at] += rnd.choice([0.5, 30.0, -1e-6])
            elif kind == "repeat" and at:
                times[j, at] = times[j, at - 1]
            elif kind == "back":
                times[j, rnd.randrange(min(8, m))] = T0 + MINUTE * rnd.choice([-3.0, 5.0])
            else:
                times[j] -= MINUTE
        if rnd.random() < p_bad:
            closes[j, rnd.randrange(m)] = rnd.choice([0.0, -1.0, math.nan])
    return times, closes, now


@settings(max_examples=80, deadline=None)
@given(windows=full_windows(), extra=st.sampled_from([120.0, 60.0, 3590.0, 3600.0]))
def test_rows_equal_the_reference_where_they_answer(
    windows: tuple[np.ndarray, np.ndarray, float], extra: float
) -> None:
    """realized_volatility_rows: every row it answers equal to the reference bit for bit (NaN where
    it gives None); the rows it leaves are NaN; it answers exactly the windows without a missing
    minute and in order (the common case: the other test below has only those)."""
    times, closes, now = windows
    spans = (VOLATILITY_WINDOWS["1h"], VOLATILITY_WINDOWS["4h"], extra)
    # the same rows as views of (time, close) records, as the views hand them over
    records = np.stack((times, closes), axis=2)
    got, done = realized_volatility_rows(records[:, :, 0], records[:, :, 1], now, spans)
    grid = T0 - MINUTE * np.arange(241, 0, -1)
    for j in range(len(times)):
        ts, cs = times[j].tolist(), closes[j].tolist()
        # the last 241 points (the 4 h window's grid) the grid itself, every point in order
        regular = ts[-241:] == grid.tolist() and all(b > a for a, b in pairwise(ts))
        assert done[j] == regular, j
        for w, window in enumerate(spans):
            if not done[j]:
                assert math.isnan(got[j, w])
                continue
            want = realized_volatility(ts, cs, now, window)
            if want is None:
                assert math.isnan(got[j, w]), (j, window)
            else:
                assert got[j, w] == want, (j, window, got[j, w], want)  # bit for bit


def test_rows_answer_every_full_window_without_a_missing_minute() -> None:
    rng = np.random.default_rng(3)
    k, m = 200, 248
    times = np.tile(T0 - MINUTE * np.arange(m, 0, -1), (k, 1))
    closes = np.exp(np.cumsum(rng.normal(0, 1e-3, size=(k, m)), axis=1)) * 50.0
    got, done = realized_volatility_rows(times, closes, T0 + 31.0, (3600.0, 14400.0))
    assert done.all() and not np.isnan(got).any()
    assert got[17, 1] == realized_volatility(times[17], closes[17], T0 + 31.0, 14400.0)
    # the point just before the grid later than the grid's first: out of order, left to the search
    times[5, m - 242] = times[5, m - 241] + 30.0
    got, done = realized_volatility_rows(times, closes, T0 + 31.0, (3600.0, 14400.0))
    assert done.sum() == k - 1 and not done[5] and np.isnan(got[5]).all()


def test_rows_with_a_bad_close_at_a_window_edge_and_a_coverage_above_one() -> None:
    """A bad close at the 1 h window's first point (both windows None) and just before it (the 1 h
    value stands, the 4 h one is None), as the reference says; a coverage above one: no window ever
    has enough closes."""
    rng = np.random.default_rng(4)
    m = 248
    times = np.tile(T0 - MINUTE * np.arange(m, 0, -1), (3, 1))
    closes = np.exp(np.cumsum(rng.normal(0, 1e-3, size=(3, m)), axis=1)) * 50.0
    closes[0, m - 61] = 0.0
    closes[1, m - 62] = -1.0
    now = T0 + 2.0
    got, done = realized_volatility_rows(times, closes, now, (3600.0, 14400.0))
    assert done.all()
    for j in range(3):
        for w, window in enumerate((3600.0, 14400.0)):
            want = realized_volatility(times[j], closes[j], now, window)
            assert (want is None and math.isnan(got[j, w])) or got[j, w] == want
    assert np.isnan(got[:2, 1]).all() and np.isnan(got[0, 0]) and not np.isnan(got[1, 0])
    got, done = realized_volatility_rows(times, closes, now, (3600.0,), min_coverage=1.01)
    assert not done.any() and np.isnan(got).all()
    assert realized_volatility(times[2], closes[2], now, 3600.0, min_coverage=1.01) is None
