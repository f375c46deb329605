"""Effective anchor (l) by levels and by differences, in 8 h units: checked against numpy's polyfit
and a hand-computed case, through the state's one-a-minute sampler and the collector."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np
import pytest
from support.clock import ManualClock as Clock

from exporter.analytics import anchor as an
from exporter.analytics import funding as fa
from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import EIGHT_HOURS, AnchorBackfill, Exchange, InstrumentInfo, MarketUpdate
from exporter.state import MarketState, Window

T0 = 1_700_000_000.0
WINDOW = 6 * 3600.0


def _labels(ex: str, inst: str, base: str, quote: str, method: str) -> dict[str, str]:
    return {"exchange": ex, "instrument": inst, "base": base, "quote": quote, "method": method}


def _polyfit_of_differences(samples: list[tuple[float, float, float]], start: float, max_gap: float) -> float:
    """The independent computation: pairs built one by one, slope by numpy.polyfit."""
    inside = [s for s in samples if s[0] > start]
    dp, df = [], []
    for a, b in itertools.pairwise(inside):
        if b[0] - a[0] <= max_gap:
            dp.append(b[2] - a[2])
            df.append(b[1] - a[1])
    return float(np.polyfit(dp, df, 1)[0])


def test_difference_slope_is_polyfit_of_the_changes_inside_the_window() -> None:
    rng = np.random.default_rng(11)
    ts = T0 - np.arange(600)[::-1] * 60.0  # 10 h of one-a-minute samples
    ts[400:] += 900.0  # a 15-minute hole: the change across it is no one-minute change
    ts -= ts[-1] - T0
    prem = np.cumsum(rng.normal(0, 1e-4, ts.size))
    fund = 0.4 * prem + np.cumsum(rng.normal(0, 1e-5, ts.size))
    samples = list(zip(ts.tolist(), fund.tolist(), prem.tolist(), strict=True))
    start = T0 - WINDOW
    expected = _polyfit_of_differences(samples, start, 300.0)
    assert fa.anchor_strength_difference(samples, start) == pytest.approx(expected, rel=1e-9)
    # the gap is really excluded: differencing across it gives another slope
    with_gap = _polyfit_of_differences(samples, start, 1e9)
    assert with_gap != pytest.approx(expected, rel=1e-6)
    assert fa.anchor_strength_difference(samples[:8], start - 1e9) is None  # 7 differences < 10
    flat = [(t, f, 1e-4) for t, f, _ in samples]
    assert fa.anchor_strength_difference(flat, start) is None  # no spread in the premium changes
    assert fa.anchor_strength_difference([], start) is None


def test_hand_computed_case_where_levels_and_differences_disagree() -> None:
    """funding_k = 0.5 x premium_k + 1e-5 x k (a trend in funding the premium does not share),
    premium alternating around a rising line: every change of funding is 0.5 x the change of
    premium plus the constant 1e-5, so the difference slope is exactly 0.5 (the intercept takes
    the constant); the levels carry the trend and give another slope."""
    prem = [1e-4 * k + (2e-4 if k % 2 else -2e-4) for k in range(20)]
    fund = [0.5 * p + 1e-5 * k for k, p in enumerate(prem)]
    samples = [(T0 + 60.0 * k, f, p) for k, (f, p) in enumerate(zip(fund, prem, strict=True))]
    assert fa.anchor_strength_difference(samples, T0 - 1.0) == pytest.approx(0.5, rel=1e-9)
    level = fa.anchor_strength(samples, T0 - 1.0)
    assert level is not None and abs(level - 0.5) > 0.01


@pytest.mark.parametrize("maxlen", [2000, 200])
def test_cached_difference_matches_a_fresh_regression_at_every_scrape(maxlen: int) -> None:
    rng = np.random.default_rng(5)

    class Holder:
        def __init__(self) -> None:
            self.anchor_samples: deque[tuple[float, float, float]] = deque(maxlen=maxlen)

    h = Holder()
    cache = fa.WindowCache()
    t = now = T0
    checked = 0
    for i in range(1500):
        t += float(rng.choice([60.0, 61.0, 400.0, 3 * 3600.0], p=[0.8, 0.17, 0.02, 0.01]))
        beta = 0.3 if i < 700 else -1.0  # a regime change the window must forget
        x = float(rng.normal(0, 4e-4))
        h.anchor_samples.append((t, beta * x + float(rng.normal(0, 1e-5)), x))
        for _ in range(int(rng.integers(0, 3))):
            now = max(now, t) + float(rng.uniform(0, 120))
            got = cache.anchor_difference("k", h, now - WINDOW)
            rows = list(h.anchor_samples)
            pairs = sum(1 for a, b in itertools.pairwise(rows) if a[0] > now - WINDOW and b[0] - a[0] <= 300)
            if pairs < 10:
                assert got is None
                continue
            assert got == pytest.approx(_polyfit_of_differences(rows, now - WINDOW, 300.0), rel=1e-7)
            checked += 1
    assert checked > 300
    cache.forget(set())
    assert cache.anchor_difference("k", Holder(), T0) is None  # empty source, forgotten key


def _feed(state: MarketState, clock: Clock, ex: Exchange, inst: str, per_interval: list[tuple[float, float]]) -> None:
    """One update a minute (and a second) with the given (funding per interval, premium) pairs."""
    for f, p in per_interval:
        clock.t += 61.0
        state.apply(MarketUpdate(ex, inst, mark_price=100.0 * (1 + p), index_price=100.0, funding_rate=f))


def test_both_methods_in_8h_units_through_state_and_collector() -> None:
    """A 1 h instrument whose hourly rate is 0.5/8 of the premium (0.5 per 8 h) shows 0.5 for both
    methods, as does an 8 h instrument at 0.5 and Deribit (rate already per 8 h) at 0.5."""
    clock = Clock(T0)
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.BYBIT, "BTCUSDT", "BTC", "USDT", funding_interval_s=3600.0))
    state.register(InstrumentInfo(Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    state.register(InstrumentInfo(Exchange.DERIBIT, "BTC-PERPETUAL", "BTC", "USD", inverse=True))
    rng = np.random.default_rng(2)
    prem = np.cumsum(rng.normal(0, 3e-4, 60)).tolist()
    for p in prem:
        clock.t += 61.0
        for ex, inst, f in (
            (Exchange.BYBIT, "BTCUSDT", 0.5 / 8.0 * p + 1e-5),
            (Exchange.OKX, "BTC-USDT-SWAP", 0.5 * p + 1e-4),
            (Exchange.DERIBIT, "BTC-PERPETUAL", 0.5 * p),
        ):
            state.apply(MarketUpdate(ex, inst, mark_price=100.0 * (1 + p), index_price=100.0, funding_rate=f))
    reg = build_registry(Config(), state)
    for ex, inst, quote in (
        ("bybit", "BTCUSDT", "USDT"),
        ("okx", "BTC-USDT-SWAP", "USDT"),
        ("deribit", "BTC-PERPETUAL", "USD"),
    ):
        for method in ("level", "difference"):
            got = reg.get_sample_value("fr_effective_anchor_strength", _labels(ex, inst, "BTC", quote, method))
            assert got == pytest.approx(0.5, rel=1e-6), (ex, method)


def test_an_interval_change_inside_the_window_keeps_8h_units() -> None:
    """Samples keep the 8 h scaling of the interval they were taken under: after an 8 h -> 1 h
    switch at the same per-8 h relation the slope stays 0.5."""
    clock = Clock(T0)
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    rng = np.random.default_rng(4)
    prem = rng.normal(0, 5e-4, 60).tolist()
    _feed(state, clock, Exchange.BINANCE, "BTCUSDT", [(0.5 * p, p) for p in prem[:30]])
    state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_interval_s=3600.0))
    _feed(state, clock, Exchange.BINANCE, "BTCUSDT", [(0.5 / 8.0 * p, p) for p in prem[30:]])
    st = state.instruments[(Exchange.BINANCE, "BTCUSDT")]
    rows = list(st.anchor_samples)
    assert [r[1] for r in rows] == pytest.approx([0.5 * r[2] for r in rows], rel=1e-9, abs=1e-15)
    reg = build_registry(Config(), state)
    for method in ("level", "difference"):
        got = reg.get_sample_value("fr_effective_anchor_strength", _labels("binance", "BTCUSDT", "BTC", "USDT", method))
        assert got == pytest.approx(0.5, rel=1e-6)


def test_no_sample_without_an_interval_and_none_shown() -> None:
    clock = Clock(T0)
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.BINANCE, "ETHUSDT", "ETH", "USDT"))  # interval unknown
    rng = np.random.default_rng(8)
    _feed(state, clock, Exchange.BINANCE, "ETHUSDT", [(0.5 * p, p) for p in rng.normal(0, 5e-4, 20).tolist()])
    assert len(state.instruments[(Exchange.BINANCE, "ETHUSDT")].anchor_samples) == 0
    reg = build_registry(Config(), state)
    for method in ("level", "difference"):
        lb = _labels("binance", "ETHUSDT", "ETH", "USDT", method)
        assert reg.get_sample_value("fr_effective_anchor_strength", lb) is None


# ---- the backfill: past samples rebuilt from one-minute candles ----------------------------------


@dataclass(frozen=True)
class _Candle:
    open_time: float
    close: float


def test_predicted_rate_hand_computed() -> None:
    """F = clamp(P + clamp(I - P, -0.05 %, 0.05 %), floor, cap), I = 0.01 % per 8 h."""
    assert an.predicted_rate(0.0002, EIGHT_HOURS, None, None) == pytest.approx(0.0001)  # within the band: I
    assert an.predicted_rate(0.001, EIGHT_HOURS, None, None) == pytest.approx(0.0005)  # 0.001 - 0.0005
    assert an.predicted_rate(-0.001, EIGHT_HOURS, None, None) == pytest.approx(-0.0005)  # -0.001 + 0.0005
    assert an.predicted_rate(0.0, 3600.0, None, None) == pytest.approx(0.0001 / 8)  # 1 h: an eighth
    assert an.predicted_rate(0.01, EIGHT_HOURS, 0.003, -0.003) == pytest.approx(0.003)  # capped
    assert an.predicted_rate(-0.01, EIGHT_HOURS, 0.003, -0.003) == pytest.approx(-0.003)  # floored


def test_backfill_samples_against_an_independent_weighted_average() -> None:
    """4 h instrument, window 6 h: the premium-index average restarts at every 4 h boundary and
    weighs the k-th minute of the interval k; funding is scaled to 8 h; premium from mark/index."""
    rng = np.random.default_rng(21)
    iv = 4 * 3600.0
    end = 1_700_006_400.0 + 3 * 3600.0 + 600.0  # 10 min past an hour, inside a 4 h interval
    start = end - WINDOW
    first = np.floor(start / iv) * iv  # the premium index from the start of the first interval
    opens = np.arange(first, end - 59.0, 60.0)
    pidx = rng.normal(2e-4, 4e-4, opens.size)
    idx = 100.0 + np.cumsum(rng.normal(0, 0.05, opens.size))
    prem = rng.normal(0, 5e-4, opens.size)
    mark = idx * (1 + prem)
    skip = 200  # one minute without a mark candle: no sample, but the weights run on
    cand_p = [_Candle(float(t), float(v)) for t, v in zip(opens, pidx, strict=True)]
    cand_m = [_Candle(float(t), float(v)) for k, (t, v) in enumerate(zip(opens, mark, strict=True)) if k != skip]
    cand_i = [_Candle(float(t), float(v)) for t, v in zip(opens, idx, strict=True)]
    got = an.backfill_samples(cand_p, cand_m, cand_i, iv, start, end, cap=0.003, floor=-0.003)
    expected = []
    for k, t in enumerate(opens):
        close_t = float(t) + 60.0
        if not (start < close_t <= end) or k == skip:
            continue
        s = np.floor(t / iv) * iv
        inside = (opens >= s) & (opens <= t)
        weights = (opens[inside] - s) / 60.0 + 1.0
        avg = float(np.average(pidx[inside], weights=weights))
        interest = 1e-4 / 2.0  # 0.01 % per 8 h over a 4 h interval
        f = min(0.003, max(-0.003, avg + min(5e-4, max(-5e-4, interest - avg))))
        expected.append((close_t, f * 2.0, (mark[k] - idx[k]) / idx[k]))
    assert len(got) == len(expected) == int(WINDOW / 60) - 1
    assert [r[0] for r in got] == [r[0] for r in expected]
    assert np.allclose([r[1:] for r in got], [r[1:] for r in expected], rtol=1e-9, atol=1e-15)


def test_a_known_settlement_restarts_the_average() -> None:
    """A settlement off the grid (the interval changed) starts a new interval there."""
    opens = [T0 + 60.0 * k for k in range(10)]
    cand = [_Candle(t, 1e-3 if k < 5 else -1e-3) for k, t in enumerate(opens)]
    ones = [_Candle(t, 100.0) for t in opens]
    settle = [T0 + 300.0]
    rows = an.backfill_samples(cand, ones, ones, EIGHT_HOURS, T0, T0 + 600.0, settlements=settle)
    assert rows[5][1] == pytest.approx(-0.0005)  # the new interval sees only -0.1 % premiums
    rows_grid = an.backfill_samples(cand, ones, ones, EIGHT_HOURS, T0, T0 + 600.0)
    assert rows_grid[5][1] != pytest.approx(-0.0005)


def test_backfill_goes_in_front_of_live_samples_only() -> None:
    clock = Clock(T0)
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.BYBIT, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    _feed(state, clock, Exchange.BYBIT, "BTCUSDT", [(1e-4, 1e-4 * k) for k in range(3)])
    st = state.instruments[(Exchange.BYBIT, "BTCUSDT")]
    live = list(st.anchor_samples)
    # rebuilt rows reach into the live samples' time: those are dropped, the older ones kept
    rebuilt = tuple((live[0][0] - 60.0 * k, 2e-4, 3e-4) for k in range(30, -3, -1))
    state.apply(AnchorBackfill(Exchange.BYBIT, "BTCUSDT", rebuilt))
    rows = list(st.anchor_samples)
    assert rows[-3:] == live
    assert [r[0] for r in rows[:-3]] == [live[0][0] - 60.0 * k for k in range(30, 0, -1)]
    state.apply(AnchorBackfill(Exchange.BYBIT, "NOPE", rebuilt))
    assert state.unknown_instrument_updates == 1


def test_a_backfill_after_live_samples_is_seen_by_the_next_scrape() -> None:
    """The backfill may finish after the first live samples and scrapes: the cached regressions must
    not keep the slope of the live samples alone (no new sample arrives to invalidate them)."""
    clock = Clock(T0)
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    rng = np.random.default_rng(9)
    prem = rng.normal(0, 5e-4, 15).tolist()
    _feed(state, clock, Exchange.OKX, "BTC-USDT-SWAP", [(0.2 * p, p) for p in prem])
    reg = build_registry(Config(), state)
    lb = {m: _labels("okx", "BTC-USDT-SWAP", "BTC", "USDT", m) for m in ("level", "difference")}
    assert reg.get_sample_value("fr_effective_anchor_strength", lb["level"]) == pytest.approx(0.2, rel=1e-6)
    st = state.instruments[(Exchange.OKX, "BTC-USDT-SWAP")]
    first = st.anchor_samples[-len(st.anchor_samples)][0]
    past = tuple((first - 60.0 * k, 1.5 * p, p) for k, p in enumerate(rng.normal(0, 5e-4, 100).tolist(), 1))
    state.apply(AnchorBackfill(Exchange.OKX, "BTC-USDT-SWAP", tuple(sorted(past))))
    rows = list(st.anchor_samples)
    assert len(rows) == 115
    start = clock.t - WINDOW
    want = {"level": fa.anchor_strength(rows, start), "difference": fa.anchor_strength_difference(rows, start)}
    for method in ("level", "difference"):
        got = reg.get_sample_value("fr_effective_anchor_strength", lb[method])
        assert got == pytest.approx(want[method], rel=1e-9)
        assert got != pytest.approx(0.2, rel=1e-3)


# ---- the running sums behind both methods ---------------------------------------------------------


def _polyfit_of_levels(samples: list[tuple[float, float, float]], start: float) -> float:
    inside = np.array([s for s in samples if s[0] > start])
    return float(np.polyfit(inside[:, 2], inside[:, 1], 1)[0])


@pytest.mark.parametrize(
    ("seed", "offset", "drift"), [(1, 0.0, 0.0), (2, 5e-3, 0.0), (3, 0.0, 2e-5), (4, -2e-3, -1e-5)]
)
def test_running_sums_equal_polyfit_on_the_state_window(
    seed: int, offset: float, drift: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both methods from the running sums, over the state's own Window (span-trimmed as in the
    exporter), equal numpy's polyfit within 1e-9 relative at every scrape: samples about one a
    minute with gaps around and beyond 5 minutes, premium levels far from zero (offset) or trending
    (drift: the sums' reference point falls behind the window), regime changes, backfills merged in
    front of the live samples, scrapes whose window start moves back a little. And the sums are
    really running: exact recomputations are few."""
    rebuilds = 0
    rebuild = fa._AnchorWindow._rebuild

    def counting(self: fa._AnchorWindow, *args: object) -> None:
        nonlocal rebuilds
        rebuilds += 1
        rebuild(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(fa._AnchorWindow, "_rebuild", counting)
    rng = np.random.default_rng(seed)

    class Holder:
        anchor_samples = Window(3, 2000, WINDOW + 60.0)

    h = Holder()
    cache = fa.WindowCache()
    t = now = T0
    level_x = offset
    checked = {"level": 0, "difference": 0}
    steps = 3000
    for i in range(steps):
        t += float(rng.choice([60.0, 60.5, 300.0, 301.0, 900.0, 3 * 3600.0], p=[0.6, 0.3, 0.04, 0.03, 0.02, 0.01]))
        beta = 0.3 if (i // 700) % 2 == 0 else -1.2  # regimes the window must forget
        level_x += drift + float(rng.normal(0, 2e-5))
        x = level_x + float(rng.normal(0, 4e-5))
        h.anchor_samples.append((t, 1e-4 + beta * x + float(rng.normal(0, 2e-6)), x))
        if i % 997 == 500:  # a backfill lands: rebuilt rows in front of the live ones
            rows = list(h.anchor_samples)
            first = rows[0][0]
            past = [(first - 60.0 * k, 1e-4 + 0.7 * x + float(rng.normal(0, 1e-6)), x) for k in range(40, 0, -1)]
            h.anchor_samples.replace([*past, *rows])
        for _ in range(int(rng.integers(0, 3))):
            now = max(now, t) + float(rng.uniform(0, 90))
            start = now - WINDOW - (float(rng.uniform(0, 30)) if rng.random() < 0.05 else 0.0)
            level, diff = cache.anchors("k", h, start)
            rows = list(h.anchor_samples)
            n_level = sum(1 for r in rows if r[0] > start)
            n_diff = sum(1 for a, b in itertools.pairwise(rows) if a[0] > start and b[0] - a[0] <= 300.0)
            if n_level < 10:
                assert level is None
            else:
                assert level == pytest.approx(_polyfit_of_levels(rows, start), rel=1e-9), i
                checked["level"] += 1
            if n_diff < 10:
                assert diff is None
            else:
                assert diff == pytest.approx(_polyfit_of_differences(rows, start, 300.0), rel=1e-9), i
                checked["difference"] += 1
    assert checked["level"] > 1500 and checked["difference"] > 1500
    assert rebuilds < steps / 10, rebuilds


def test_running_sums_without_spread_show_no_slope() -> None:
    """A premium constant over the window (mark = index on a quiet contract) has no slope by either
    method, also after samples with spread left the window (their rounding must not look like one)."""

    class Holder:
        anchor_samples = Window(3, 2000, 3600.0 + 60.0)

    h = Holder()
    cache = fa.WindowCache()
    rng = np.random.default_rng(6)
    for k in range(60):
        x = float(rng.normal(3e-4, 1e-4))
        h.anchor_samples.append((T0 + 60.0 * k, 0.5 * x, x))
    assert all(s is not None for s in cache.anchors("k", h, T0 + 60.0 * 59 - 3600.0))
    for k in range(60, 200):
        h.anchor_samples.append((T0 + 60.0 * k, 1e-4 + 1e-6 * float(rng.normal()), 2.5e-4))
        level, diff = cache.anchors("k", h, T0 + 60.0 * k - 3600.0)
        if k >= 120:  # every sample with spread has left
            assert level is None and diff is None, k


# numpy warns on the NaN put in on purpose while the window holds it; the slope is checked absent
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_non_finite_sample_leaves_the_running_sums_with_the_window() -> None:
    """A NaN or infinite sample makes the slopes non-finite while it is inside the window (the views
    then leave the series out and count it); once it has left, both slopes are polyfit's again."""

    class Holder:
        anchor_samples = Window(3, 2000, 3600.0 + 60.0)

    h = Holder()
    cache = fa.WindowCache()
    rng = np.random.default_rng(14)
    window = 3600.0
    for k in range(200):
        x = float(rng.normal(0, 4e-4))
        y = float("nan") if k == 50 else (float("inf") if k == 70 else 0.4 * x + float(rng.normal(0, 1e-5)))
        h.anchor_samples.append((T0 + 60.0 * k, y, x))
        start = T0 + 60.0 * k - window
        level, diff = cache.anchors("k", h, start)
        rows = list(h.anchor_samples)
        if k >= 70 + 60:  # both bad samples have left the window (start = the 70th sample's time)
            assert level == pytest.approx(_polyfit_of_levels(rows, start), rel=1e-9), k
            assert diff == pytest.approx(_polyfit_of_differences(rows, start, 300.0), rel=1e-9), k
        elif k >= 60:
            assert level is not None and not np.isfinite(level), k
