"""The simulator's market model: determinism, funding formulas and intervals, scenarios, history."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from exporter.model import EIGHT_HOURS, Exchange, Side
from exporter.sim.market import HOUR, MarketModel, Scenario, funding_formula

START = 1_767_225_600.0 + 3 * 3600  # 2026-01-01 03:00 UTC: mid-interval for every schedule


def _fingerprint(m: MarketModel) -> list[tuple[float, ...]]:
    return [
        (i.mark, i.index, i.funding_rate, i.oi_base, i.liq_all[Side.LONG].count, len(i.history))
        for i in m.all_instruments()
    ]


def test_same_seed_same_market_different_seed_different_market() -> None:
    a, b, c = (MarketModel(seed=s, start_time=START) for s in (7, 7, 8))
    for m in (a, b, c):
        m.set_scenario(Scenario.CASCADE, 5.0)
        for _ in range(200):
            m.step(0.25)
    assert _fingerprint(a) == _fingerprint(b)
    assert a.truth(Exchange.BYBIT) == b.truth(Exchange.BYBIT)
    assert _fingerprint(a) != _fingerprint(c)
    # the settled history generated at start is part of the seeded state too
    ha = [h.rate for h in a.instruments[Exchange.OKX]["BTC-USDT-SWAP"].history]
    hc = [h.rate for h in c.instruments[Exchange.OKX]["BTC-USDT-SWAP"].history]
    assert ha != hc


@pytest.mark.parametrize("exchange", [Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX])
def test_interval_funding_formula(exchange: Exchange) -> None:
    cap = 0.003
    # inside the +-0.05 % band around the interest rate the rate is exactly the interest (0.01 %/8 h)
    assert funding_formula(exchange, 0.0003, EIGHT_HOURS, cap, -cap) == pytest.approx(0.0001)
    assert funding_formula(exchange, -0.0003, EIGHT_HOURS, cap, -cap) == pytest.approx(0.0001)
    # outside it: P - 0.05 % (above) / P + 0.05 % (below)
    assert funding_formula(exchange, 0.0012, EIGHT_HOURS, cap, -cap) == pytest.approx(0.0007)
    assert funding_formula(exchange, -0.0012, EIGHT_HOURS, cap, -cap) == pytest.approx(-0.0007)
    # clamped to cap and floor
    assert funding_formula(exchange, 0.02, EIGHT_HOURS, cap, -cap) == cap
    assert funding_formula(exchange, -0.02, EIGHT_HOURS, cap, -cap) == -cap
    # the interest scales with the interval: 1 h -> 0.00125 %, 4 h -> 0.005 %
    assert funding_formula(exchange, 0.0, HOUR, cap, -cap) == pytest.approx(0.0001 / 8)
    assert funding_formula(exchange, 0.0, 4 * HOUR, cap, -cap) == pytest.approx(0.0001 / 2)


def test_deribit_formula_damper_and_cap() -> None:
    f = funding_formula
    assert f(Exchange.DERIBIT, 0.0002, EIGHT_HOURS, 0.005, -0.005) == 0.0  # inside the +-0.025 % damper
    assert f(Exchange.DERIBIT, -0.0002, EIGHT_HOURS, 0.005, -0.005) == 0.0
    assert f(Exchange.DERIBIT, 0.001, EIGHT_HOURS, 0.005, -0.005) == pytest.approx(0.00075)
    assert f(Exchange.DERIBIT, -0.001, EIGHT_HOURS, 0.005, -0.005) == pytest.approx(-0.00075)
    assert f(Exchange.DERIBIT, 0.05, EIGHT_HOURS, 0.005, -0.005) == 0.005


def test_intervals_and_sixty_days_of_history() -> None:
    m = MarketModel(seed=3, instruments_per_exchange=6, start_time=START)
    intervals = {ex: {s: i.spec.interval_s for s, i in m.instruments[ex].items()} for ex in Exchange}
    assert intervals[Exchange.BINANCE]["BTCUSDT"] == EIGHT_HOURS
    assert intervals[Exchange.BYBIT]["ETHUSDT"] == EIGHT_HOURS
    assert 4 * HOUR in intervals[Exchange.BINANCE].values()
    assert HOUR in intervals[Exchange.BINANCE].values()
    assert HOUR in intervals[Exchange.BYBIT].values()
    for inst in m.all_instruments():
        hist = inst.history
        step_ms = int(HOUR * 1000) if inst.spec.continuous else int(inst.spec.interval_s * 1000)
        assert (hist[-1].time_ms - hist[0].time_ms) / 86_400_000 >= 59.9
        assert all(b.time_ms - a.time_ms == step_ms for a, b in itertools.pairwise(hist))
        assert all(h.time_ms % step_ms == 0 for h in hist)  # aligned to the settlement schedule
        assert hist[-1].time_ms <= START * 1000
        assert all(inst.spec.floor <= h.rate <= inst.spec.cap for h in hist)
        # the next settlement is the first schedule point after now
        if not inst.spec.continuous:
            assert inst.next_funding_time - START <= inst.spec.interval_s
            assert inst.next_funding_time == pytest.approx(hist[-1].time_ms / 1000 + inst.spec.interval_s)


def test_history_calibrated_to_real_funding() -> None:
    """Settled 8 h BTC funding looks like the real 2020-2023 record (../shared/data): often pinned at
    exactly 0.01 %, mean around 0.01-0.02 %, strongly autocorrelated between settlements."""
    rates: list[float] = []
    for seed in range(1, 9):
        m = MarketModel(seed=seed, start_time=START)
        rates += [h.rate for h in m.instruments[Exchange.BINANCE]["BTCUSDT"].history]
    r = np.array(rates)
    pinned = float(np.mean(np.isclose(r, 0.0001)))
    assert 0.2 < pinned < 0.85
    assert 0.0 < float(r.mean()) < 0.0004
    assert 0.00005 < float(r.std()) < 0.0008


def test_natural_settlement_and_forced_settle() -> None:
    m = MarketModel(seed=5, start_time=1_767_225_600.0 + EIGHT_HOURS - 1.0)  # 1 s before 08:00
    inst = m.instruments[Exchange.BINANCE]["BTCUSDT"]
    nft, n_hist = inst.next_funding_time, len(inst.history)
    for _ in range(8):
        m.step(0.25)
    assert inst.next_funding_time == nft + EIGHT_HOURS
    assert len(inst.history) == n_hist + 1 and inst.settlements_count == 1
    assert inst.history[-1].time_ms == int(nft * 1000)
    # forced: next funding time moves one interval, history grows, the counter increments
    rec = m.settle(inst)
    assert inst.next_funding_time == nft + 2 * EIGHT_HOURS
    assert inst.history[-1] is rec and inst.settlements_count == 2
    assert -inst.spec.cap <= rec.rate <= inst.spec.cap
    # Deribit: hourly history records (interest_1h / interest_8h)
    d = m.instruments[Exchange.DERIBIT]["BTC-PERPETUAL"]
    before = d.next_funding_time
    m.settle(d)
    assert d.next_funding_time == before + HOUR and d.settlements_count >= 1
    assert d.history[-1].rate == pytest.approx(np.mean([h.interest_1h * 8 for h in d.history[-8:]]), abs=1e-9)


def test_settled_rate_follows_the_interval_average_premium() -> None:
    m = MarketModel(seed=11, start_time=1_767_225_600.0 + EIGHT_HOURS - 600.0)
    inst = m.instruments[Exchange.BYBIT]["BTCUSDT"]
    for _ in range(2400):  # 10 min: through the 08:00 settlement
        m.step(0.25)
    assert inst.settlements_count == 1
    settled = inst.history[-1].rate
    # the formula applied to the model's own premium level
    expect = funding_formula(
        Exchange.BYBIT, inst.asset.sentiment + inst.offset, EIGHT_HOURS, inst.spec.cap, inst.spec.floor
    )
    assert settled == pytest.approx(expect, abs=0.0002)


def test_funding_spike_goes_far_beyond_normal_then_back() -> None:
    m = MarketModel(seed=2, start_time=START)
    calm = max(abs(i.funding_rate * EIGHT_HOURS / i.spec.interval_s) for i in m.all_instruments())
    assert calm < 0.0015
    m.set_scenario(Scenario.FUNDING_SPIKE, 40.0)
    for _ in range(int(30 / 0.25)):
        m.step(0.25)
    for inst in m.all_instruments():
        # Deribit: current_funding jumps; its funding_8h is a trailing 8 h average and moves slowly
        per_8h = inst.funding_rate * EIGHT_HOURS / inst.spec.interval_s
        assert per_8h > 0.0015, inst.spec.symbol
    for _ in range(int(150 / 0.25)):  # spike over at 40 s, back to the previous level after it
        m.step(0.25)
    assert m.scenario == Scenario.CALM
    for inst in m.all_instruments():
        if not inst.spec.continuous:
            assert abs(inst.funding_rate) < 0.0015, inst.spec.symbol


def test_cascade_builds_up_then_liquidates_in_a_burst() -> None:
    m = MarketModel(seed=4, start_time=START)
    dt = 0.25
    for _ in range(120):  # 30 s of calm
        m.step(dt)
    calm_liqs = sum(sum(c.count for c in i.liq_all.values()) for i in m.all_instruments())
    btc = m.instruments[Exchange.BINANCE]["BTCUSDT"]
    oi0, f0, p0 = btc.oi_base, btc.funding_rate, btc.mark
    m.set_scenario(Scenario.CASCADE)
    build = m.scenario_params["build"]
    assert 20.0 <= build <= 40.0
    t = 0.0
    while m.cascade_phase == "build":
        m.step(dt)
        t += dt
    build_liqs = sum(sum(c.count for c in i.liq_all.values()) for i in m.all_instruments()) - calm_liqs
    assert t == pytest.approx(build, abs=0.3)
    assert btc.oi_base > oi0 * 1.02  # open interest built up
    assert btc.funding_rate > max(f0, 0.0) + 0.0003  # funding rising
    peak = btc.mark
    m.drain_liquidations(Exchange.BINANCE)  # calm and build-up ones (a few shorts squeezed on the way up)
    counts: list[int] = []
    for _ in range(int(10 / dt)):
        before = sum(i.liq_all[Side.LONG].count for i in m.all_instruments())
        m.step(dt)
        counts.append(sum(i.liq_all[Side.LONG].count for i in m.all_instruments()) - before)
    burst = sum(counts)
    assert burst > 200 and burst > 20 * (build_liqs + calm_liqs + 1)
    assert max(counts) > 30  # a burst, not a trickle
    assert btc.mark < peak * 0.96 < p0  # the sharp move down (pushed further by forced selling)
    # liquidation events carry the price and size of the liquidated positions
    liqs = m.drain_liquidations(Exchange.BINANCE)
    assert liqs and all(x.side is Side.LONG and x.qty_base > 0 and x.notional_usd > 0 for x in liqs)
    assert all(
        math.isclose(x.notional_usd, x.qty_base * round(x.price, 2), rel_tol=1e-9)
        for x in liqs
        if x.symbol == "BTCUSDT"
    )
    while m.scenario != Scenario.CALM:
        m.step(dt)
    assert m.cascade_phase == ""


def test_many_instruments_for_benchmarks() -> None:
    m = MarketModel(seed=1, instruments_per_exchange=40, start_time=START, history_days=2)
    assert all(len(m.instruments[ex]) == 40 for ex in Exchange)
    assert "SOLUSDT" in m.instruments[Exchange.BINANCE] and "XRP-USDT-SWAP" in m.instruments[Exchange.OKX]
    assert "SOL_USDC-PERPETUAL" in m.instruments[Exchange.DERIBIT]
    assert any(s.startswith("SYN") for s in m.instruments[Exchange.BYBIT])
    m.step(0.25)
    assert all(i.mark > 0 and i.oi_base > 0 for i in m.all_instruments())
