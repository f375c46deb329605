"""Funding analytics: checked against independent computations, on real settlement history."""

from __future__ import annotations

import bisect
import csv
import statistics
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from support.clock import ManualClock as Clock

from exporter.analytics import funding as fa
from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import EIGHT_HOURS, SECONDS_PER_YEAR, Exchange, InstrumentInfo, MarketUpdate
from exporter.state import MarketState
from exporter.views import _InInterval

# the file: years of real funding history, incremental against fresh regressions
pytestmark = pytest.mark.slow(seconds=8)

T0 = 1_700_000_000.0


def load_history(path: Path) -> list[tuple[float, float]]:
    """(UTC settlement time, rate) rows; the file's clock is UTC+3 with millisecond jitter."""
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            local = datetime.fromisoformat(r["Date"]).replace(tzinfo=UTC)
            t = round((local - timedelta(hours=3)).timestamp())
            rows.append((float(t), float(r["Funding Rate"])))
    rows.sort()
    return rows


def labels(ex: str = "binance", inst: str = "BTCUSDT", base: str = "BTC", quote: str = "USDT", **extra: str):
    return {"exchange": ex, "instrument": inst, "base": base, "quote": quote, **extra}


@pytest.mark.parametrize(
    "name",
    [
        "BTC-USDT_binance_2020-01-01_2024-01-01_funding_history.csv",
        "BTC-USDT_bybit_2021-01-01_2024-01-01_funding_history.csv",
    ],
)
def test_zscore_matches_independent_computation_on_real_history(shared_dir: Path, name: str) -> None:
    history = load_history(shared_dir / "data" / "funding-history" / name)
    assert len(history) > 3000
    clock = Clock(history[0][0])
    cfg = Config()
    window = cfg.analytics.zscore_window_seconds
    min_obs = cfg.analytics.zscore_min_observations
    state = MarketState(clock=clock)
    st = state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    reg = build_registry(cfg, state)
    times = [ts for ts, _ in history]
    rates = [r for _, r in history]
    assert times == sorted(times)  # the window below is a slice of the time-ordered history
    checked = none_seen = 0
    for i, (t, rate) in enumerate(history[:-1]):
        state.add_settlements(st, [(t, rate)])
        clock.t = t + 60.0
        current = history[i + 1][1]  # the predicted rate for the next settlement
        state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=current))
        if i % 5:
            continue
        # one collection per check (get_sample_value collects the whole registry per call)
        lbl = labels()
        values = {x.name: x.value for fam in reg.collect() for x in fam.samples if x.labels == lbl}
        got = values.get("fr_funding_zscore")
        win = rates[bisect.bisect_right(times, clock.t - window, 0, i + 1) : i + 1]  # ts > clock.t - window
        if len(win) < min_obs or len(set(win)) == 1:
            assert got is None
            none_seen += 1
            continue
        expected = (current - statistics.fmean(win)) / statistics.stdev(win)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), (i, t)
        mom = values.get("fr_funding_momentum")
        assert mom == pytest.approx(current - statistics.fmean(win), rel=1e-9, abs=1e-15)
        acc = values.get("fr_funding_acceleration")
        assert acc == pytest.approx((win[-1] - win[-2]) - (win[-2] - win[-3]), abs=1e-15)
        checked += 1
    assert checked > 500
    assert none_seen >= 1  # the first settlements: fewer than min_observations


def test_window_expires_with_time_without_new_settlements(shared_dir: Path) -> None:
    """The cached window must still shrink as time passes when no settlement arrives."""
    history = load_history(
        shared_dir / "data" / "funding-history" / "BTC-USDT_binance_2020-01-01_2024-01-01_funding_history.csv"
    )[:400]
    clock = Clock(history[-1][0] + 60)
    cfg = Config()
    state = MarketState(clock=clock)
    st = state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    state.add_settlements(st, history)
    cache = fa.WindowCache()
    window = cfg.analytics.zscore_window_seconds
    for days in (0, 3, 10, 20, 29):
        clock.t = history[-1][0] + 60 + days * 86400
        stats = cache.settlement_stats(st.key, st.settlements_version, st, clock.t - window)
        win = [r for (ts, r) in history if ts > clock.t - window]
        assert stats is not None and stats.n == len(win)
        assert stats.mean == pytest.approx(statistics.fmean(win), rel=1e-12)
        if len(set(win)) > 1:
            assert stats.std == pytest.approx(statistics.stdev(win), rel=1e-9)
        else:
            assert stats.std is None  # pinned at one value: no spread, no z-score
    clock.t += 40 * 86400
    assert cache.settlement_stats(st.key, st.settlements_version, st, clock.t - window) is None


def test_cache_reuses_unchanged_windows_and_recomputes_on_new_version() -> None:
    state = MarketState(clock=Clock())
    st = state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    state.add_settlements(st, [(T0 - i * EIGHT_HOURS, 1e-4 * (i % 7)) for i in range(1, 50)])
    cache = fa.WindowCache()
    start = T0 - 30 * 86400
    a = cache.settlement_stats(st.key, st.settlements_version, st, start)
    b = cache.settlement_stats(st.key, st.settlements_version, st, start)
    assert a is b  # same object: nothing recomputed
    state.add_settlements(st, [(T0, 5e-4)])
    c = cache.settlement_stats(st.key, st.settlements_version, st, start)
    assert c is not a and c is not None and c.n == a.n + 1  # type: ignore[union-attr]


def test_constant_window_gives_no_zscore_and_few_observations_none() -> None:
    rates = np.full(50, 1e-4)
    stats = fa._stats(rates)
    assert stats is not None and stats.std is None
    assert fa.zscore(2e-4, stats, 10) is None
    assert fa.momentum(2e-4, stats, 10) == pytest.approx(1e-4)
    few = fa._stats(np.array([1e-4, 2e-4, 3e-4]))
    assert fa.zscore(2e-4, few, 10) is None
    assert fa.zscore(2e-4, few, 3) == pytest.approx(0.0, abs=1e-9)


def test_interval_awareness_same_per_8h_rate_annualises_identically() -> None:
    clock = Clock()
    state = MarketState(clock=clock)
    r8 = 0.0003
    for inst, interval in (("A8H", 8 * 3600.0), ("B4H", 4 * 3600.0), ("C1H", 3600.0)):
        state.register(InstrumentInfo(Exchange.BINANCE, inst, inst, "USDT", funding_interval_s=interval))
        state.apply(MarketUpdate(Exchange.BINANCE, inst, funding_rate=r8 * interval / EIGHT_HOURS))
    reg = build_registry(Config(), state)
    anns = [
        reg.get_sample_value("fr_funding_rate_annualized_ratio", labels(inst=i, base=i)) for i in ("A8H", "B4H", "C1H")
    ]
    assert anns[0] == pytest.approx(r8 * 3 * 365)
    assert anns[1] == pytest.approx(anns[0]) and anns[2] == pytest.approx(anns[0])
    assert reg.get_sample_value("fr_funding_interval_seconds", labels(inst="C1H", base="C1H")) == 3600.0
    # A 1 h instrument pays 8 times per 8 h: its per-interval rate is one eighth, its annual rate the same.
    assert reg.get_sample_value("fr_funding_rate", labels(inst="C1H", base="C1H")) == pytest.approx(r8 / 8)


def test_deribit_continuous_exported_as_8h() -> None:
    clock = Clock()
    state = MarketState(clock=clock)
    state.register(
        InstrumentInfo(Exchange.DERIBIT, "BTC-PERPETUAL", "BTC", "USD", inverse=True, funding_interval_s=EIGHT_HOURS)
    )
    state.apply(
        MarketUpdate(
            Exchange.DERIBIT, "BTC-PERPETUAL", funding_rate_8h=1.742e-05, mark_price=92281.78, index_price=92263.55
        )
    )
    reg = build_registry(Config(), state)
    lb = labels("deribit", "BTC-PERPETUAL", "BTC", "USD")
    assert reg.get_sample_value("fr_funding_interval_seconds", lb) == 28800.0
    assert reg.get_sample_value("fr_funding_rate", lb) == 1.742e-05
    assert reg.get_sample_value("fr_funding_rate_annualized_ratio", lb) == pytest.approx(1.742e-05 * 1095)
    assert reg.get_sample_value("fr_next_funding_timestamp_seconds", lb) is None


def test_annualize_and_rate_8h() -> None:
    assert fa.annualize(0.0001, EIGHT_HOURS) == pytest.approx(0.1095)
    assert fa.annualize(0.0001, 3600.0) == pytest.approx(0.876)
    assert fa.rate_8h(0.0001, 3600.0) == pytest.approx(0.0008)
    assert fa.intervals_per_year(4 * 3600.0) == pytest.approx(SECONDS_PER_YEAR / 14400)


def test_edge_formula_and_receiving_side() -> None:
    # 3 bp per 8 h, 5 bp taker per side, 7 days held: 21 intervals share 10 bp of fees.
    assert fa.edge_bp(0.0003, EIGHT_HOURS, 5.0, 168.0) == pytest.approx(3.0 - 10.0 / 21.0)
    # Negative rates pay the longs the same amount.
    assert fa.edge_bp(-0.0003, EIGHT_HOURS, 5.0, 168.0) == pytest.approx(3.0 - 10.0 / 21.0)
    # A 1 h interval spreads the fee over 168 intervals.
    assert fa.edge_bp(0.0001, 3600.0, 5.0, 168.0) == pytest.approx(1.0 - 10.0 / 168.0)
    assert fa.edge_bp(0.00001, EIGHT_HOURS, 5.0, 24.0) < 0  # the carry does not pay its fees
    assert fa.receiving_side(0.0001) == "short"
    assert fa.receiving_side(-0.0001) == "long"


def test_edge_series_uses_configured_fee_kind_and_side() -> None:
    clock = Clock()
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.OKX, "ETH-USDT-SWAP", "ETH", "USDT", funding_interval_s=EIGHT_HOURS))
    state.apply(MarketUpdate(Exchange.OKX, "ETH-USDT-SWAP", funding_rate=-0.0005))
    cfg = Config.model_validate(
        {
            "analytics": {"fee_kind": "maker", "holding_period_hours": 48},
            "exchanges": {"okx": {"fees": {"maker_bp": 2.0, "taker_bp": 5.0}}},
        }
    )
    reg = build_registry(cfg, state)
    lb = labels("okx", "ETH-USDT-SWAP", "ETH")
    assert reg.get_sample_value("fr_edge_bp", {**lb, "side": "long"}) == pytest.approx(5.0 - 4.0 / 6.0)
    assert reg.get_sample_value("fr_edge_bp", {**lb, "side": "short"}) is None


def test_anchor_strength_is_the_ols_slope_over_the_window() -> None:
    rng = np.random.default_rng(7)
    now = T0
    ts = now - np.arange(600)[::-1] * 60.0  # 10 h of one-a-minute samples
    prem = rng.normal(0, 5e-4, ts.size)
    fund = 0.3 * prem + 1e-4 + rng.normal(0, 2e-5, ts.size)
    fund[:240] = -2.0 * prem[:240]  # an older regime, outside a 6 h window
    samples = list(zip(ts.tolist(), fund.tolist(), prem.tolist(), strict=True))
    start = now - 6 * 3600.0
    m = ts > start
    expected = np.polyfit(prem[m], fund[m], 1)[0]
    assert fa.anchor_strength(samples, start) == pytest.approx(expected, rel=1e-9)

    class Holder:
        anchor_samples = samples

    cache = fa.WindowCache()
    assert cache.anchor("k", Holder(), start) == pytest.approx(expected, rel=1e-9)
    assert cache.anchor("k", Holder(), start) == pytest.approx(expected, rel=1e-9)  # cached path
    assert fa.anchor_strength(samples[:5], start - 1e9) is None  # too few points
    flat = [(t, f, 1e-4) for t, f, _ in samples]
    assert fa.anchor_strength(flat, start) is None  # no spread in premium


@pytest.mark.parametrize("maxlen", [2000, 200])  # 200 < a 6 h window of minutes: the source drops rows
def test_incremental_anchor_matches_a_fresh_regression_at_every_step(maxlen: int) -> None:
    """Samples arrive about one a minute, with gaps, and leave the 6 h window; scrapes come at odd
    times, sometimes with no new sample. The running sums must equal polyfit every time."""
    rng = np.random.default_rng(3)

    class Holder:
        def __init__(self) -> None:
            self.anchor_samples: deque[tuple[float, float, float]] = deque(maxlen=maxlen)

    h = Holder()
    cache = fa.WindowCache()
    window = 6 * 3600.0
    t = now = T0
    checked = 0
    for i in range(2500):
        gap = float(
            rng.choice(
                [60.0, 60.0, 60.0, 61.5, 600.0, 3 * 3600.0, 7 * 3600.0], p=[0.5, 0.2, 0.15, 0.1, 0.03, 0.015, 0.005]
            )
        )
        t += gap
        beta = 0.2 if i < 1200 else -1.5  # a regime change the window must forget
        x = float(rng.normal(3e-4, 4e-4))
        h.anchor_samples.append((t, beta * x + 1e-4 + float(rng.normal(0, 1e-5)), x))
        for _ in range(int(rng.integers(0, 3))):  # zero, one or two scrapes, at times of their own
            now = max(now, t) + float(rng.uniform(0, 120))
            got = cache.anchor("k", h, now - window)
            arr = np.array(h.anchor_samples)
            arr = arr[arr[:, 0] > now - window]
            if len(arr) < 10:
                assert got is None, i
                continue
            assert got == pytest.approx(np.polyfit(arr[:, 2], arr[:, 1], 1)[0], rel=1e-7), i
            checked += 1
    assert checked > 1000


def test_incremental_anchor_survives_a_window_start_that_moves_back() -> None:
    """Two scrape threads (/metrics and /api/state) read the clock a little apart, so one may ask
    for a window starting earlier than the last one did. A sample already subtracted from the
    running sums must not be counted as inside them: that corrupted the slope until the next
    rebase (500 updates, ~8 h of one-a-minute samples)."""
    rng = np.random.default_rng(5)

    class Holder:
        def __init__(self) -> None:
            self.anchor_samples: deque[tuple[float, float, float]] = deque(maxlen=2000)

    def add(t: float) -> None:
        x = float(rng.normal(3e-4, 4e-4))
        h.anchor_samples.append((t, 0.3 * x + 1e-4 + float(rng.normal(0, 1e-5)), x))

    def fresh(start: float) -> float:
        arr = np.array(h.anchor_samples)
        arr = arr[arr[:, 0] > start]
        return float(np.polyfit(arr[:, 2], arr[:, 1], 1)[0])

    h = Holder()
    cache = fa.WindowCache()
    window = 3600.0
    for i in range(120):
        add(T0 + 60.0 * i)
    now = T0 + 60.0 * 119 + 30.0
    cache.anchor("k", h, now - window)
    # Thread B, a little later: the oldest sample leaves the window.
    later = now + 40.0
    assert cache.anchor("k", h, later - window) == pytest.approx(fresh(later - window), rel=1e-7)
    # A new sample, then thread A with the clock it read before B's.
    add(T0 + 60.0 * 120)
    assert cache.anchor("k", h, now - window) == pytest.approx(fresh(now - window), rel=1e-7)
    # And every scrape after that, with time moving forward again.
    t = T0 + 60.0 * 120
    for _ in range(30):
        t += 60.0
        add(t)
        got = cache.anchor("k", h, t + 5.0 - window)
        assert got == pytest.approx(fresh(t + 5.0 - window), rel=1e-7)


def test_anchor_series_through_state() -> None:
    clock = Clock(T0)
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.BYBIT, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    rng = np.random.default_rng(1)
    xs, ys = [], []
    for _ in range(60):
        clock.t += 61.0
        p = float(rng.normal(0, 1e-3))
        f = 0.5 * p + 1e-4
        xs.append(p)
        ys.append(f)
        state.apply(
            MarketUpdate(Exchange.BYBIT, "BTCUSDT", mark_price=100.0 * (1 + p), index_price=100.0, funding_rate=f)
        )
    reg = build_registry(Config(), state)
    got = reg.get_sample_value("fr_effective_anchor_strength", labels("bybit", method="level"))
    assert got == pytest.approx(0.5, rel=1e-6)
    # The samples the regression saw are exactly the ones state took, one a minute.
    assert len(state.instruments[(Exchange.BYBIT, "BTCUSDT")].anchor_samples) == 60


def test_deribit_interval_is_8h_even_when_state_inferred_hourly_observations() -> None:
    clock = Clock()
    state = MarketState(clock=clock)
    st = state.register(InstrumentInfo(Exchange.DERIBIT, "ETH-PERPETUAL", "ETH", "USD", inverse=True))
    # Hourly observations only: state infers a 1 h spacing when nothing else says otherwise.
    state.add_settlements(st, [(T0 - i * 3600.0, 2e-5) for i in range(1, 5)])
    state.apply(MarketUpdate(Exchange.DERIBIT, "ETH-PERPETUAL", funding_rate_8h=2e-5))
    reg = build_registry(Config(), state)
    lb = labels("deribit", "ETH-PERPETUAL", "ETH", "USD")
    assert reg.get_sample_value("fr_funding_interval_seconds", lb) == 28800.0
    assert reg.get_sample_value("fr_funding_rate_annualized_ratio", lb) == pytest.approx(2e-5 * 1095)


def test_zscore_rescales_a_window_that_spans_an_interval_change() -> None:
    """Binance moves a capped symbol from 8 h to 1 h: the 8 h settlements before the switch are
    eight times larger per interval. Compared per the current interval, an hourly rate three times
    the usual level is extreme; mixing per-8 h and per-1 h rates would hide it."""
    from exporter.model import FundingSettlement

    now = T0
    state = MarketState(clock=lambda: now)
    state.register(InstrumentInfo(Exchange.BINANCE, "XUSDT", "X", "USDT", funding_interval_s=EIGHT_HOURS))
    for i in range(40, 0, -1):  # 40 settlements at 8 h, around 8e-4 per 8 h
        state.apply(
            FundingSettlement(
                Exchange.BINANCE, "XUSDT", now - 48 * 3600 - i * EIGHT_HOURS, 8e-4 + 1e-5 * (i % 5), EIGHT_HOURS
            )
        )
    state.apply(MarketUpdate(Exchange.BINANCE, "XUSDT", funding_interval_s=3600.0))  # the switch
    for i in range(47, 0, -1):  # 47 hourly settlements since, around 1e-4 per hour (same 8 h level)
        state.apply(FundingSettlement(Exchange.BINANCE, "XUSDT", now - i * 3600, 1e-4 + 1.25e-6 * (i % 5), 3600.0))
    state.apply(MarketUpdate(Exchange.BINANCE, "XUSDT", mark_price=1.0, index_price=1.0, funding_rate=3e-4))
    reg = build_registry(Config(), state)
    lab = {"exchange": "binance", "instrument": "XUSDT", "base": "X", "quote": "USDT"}
    rescaled = [
        r * 3600 / EIGHT_HOURS if t < now - 47.5 * 3600 else r
        for t, r in state.instruments[(Exchange.BINANCE, "XUSDT")].settlement_window()
    ]
    expected = (3e-4 - statistics.fmean(rescaled)) / statistics.stdev(rescaled)
    z = reg.get_sample_value("fr_funding_zscore", lab)
    assert z is not None and abs(z - expected) < 1e-9
    raw = [r for _, r in state.instruments[(Exchange.BINANCE, "XUSDT")].settlement_window()]
    unscaled = (3e-4 - statistics.fmean(raw)) / statistics.stdev(raw)
    assert z > 2.5 > 1.0 > abs(unscaled)  # the spike shows per the current interval; mixed, it hides
    assert reg.get_sample_value("fr_funding_interval_seconds", lab) == 3600.0


def test_settlement_columns_rescale_to_the_current_interval() -> None:
    """The window read as two arrays (what a scrape reads) equals the pairs rescaled one by one:
    settlements taken under 8 h, 1 h and unknown (0) intervals, read in 1 h and 8 h units."""
    state = MarketState(clock=Clock())
    st = state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=3600.0))
    rows = [(T0 + 3600.0 * k, 1e-4 * (k + 1), (EIGHT_HOURS, 3600.0, 0.0)[k % 3]) for k in range(12)]
    st.settlements.extend(rows)
    for unit in (3600.0, EIGHT_HOURS, None):
        times, rates = fa.settlement_columns(st.settlements.raw(), unit)
        # as the state's settlement_window_in: the rates as settled when nothing needs rescaling
        plain = unit is None or all(iv in (unit, 0.0) for _, _, iv in rows)
        want = [r if plain or not iv else r * unit / iv for _, r, iv in rows]
        assert times.tolist() == [t for t, _, _ in rows]
        assert rates.tolist() == want  # the same float operations: bit for bit
    cache = fa.WindowCache()
    stats = cache.settlement_stats(st.key, 1, _InInterval(st, 3600.0), T0 + 3600.0 * 2.5)
    inside = [r for t, r in st.settlement_window_in(3600.0) if t > T0 + 3600.0 * 2.5]
    assert stats is not None and stats.n == len(inside) == 9
    assert stats.mean == pytest.approx(statistics.fmean(inside), rel=1e-12)


def test_window_stats_equal_numpy_mean_and_sample_std_bit_for_bit() -> None:
    rng = np.random.default_rng(12)
    for _ in range(500):
        w = rng.normal(rng.uniform(-1e-3, 1e-3), 10 ** rng.uniform(-7, -3), int(rng.integers(2, 800)))
        stats = fa._stats(w)
        assert stats is not None and stats.n == w.size
        assert stats.mean == float(np.mean(w)) and stats.std == float(np.std(w, ddof=1))
