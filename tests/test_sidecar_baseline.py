"""The local baseline: its distribution maths against independent computations, its monotonic
response to stress, and a synthetic build-up -> cascade -> calm replayed through the sidecar."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import free_port
from support.fakes import FakeExporter, instrument, state

from exporter.clock import VirtualClock
from exporter.config import Config, SidecarConfig
from exporter.sidecar import baseline
from exporter.sidecar.features import snapshots
from exporter.sidecar.main import Sidecar
from exporter.sidecar.schema import RiskAnswer


def _t4_pdf(x: Any) -> Any:
    return (3.0 / 8.0) * (1.0 + x * x / 4.0) ** -2.5  # Gamma(5/2) / (sqrt(4 pi) Gamma(2)) = 3/8


def test_student_t4_cdf_matches_numerical_integration() -> None:
    grid = np.linspace(-200.0, 0.0, 2_000_001)
    left_tail = float(np.trapezoid(_t4_pdf(grid), grid))
    assert left_tail == pytest.approx(0.5, abs=1e-4)
    for t in (0.0, 0.5, 1.0, 2.0, 4.0, -1.5):
        xs = np.linspace(0.0, t, 20001) if t >= 0 else np.linspace(t, 0.0, 20001)
        part = float(np.trapezoid(_t4_pdf(xs), xs))
        expected = 0.5 + part if t >= 0 else 0.5 - part
        assert baseline.student_t4_cdf(t) == pytest.approx(expected, abs=1e-6)


def test_move_probability_is_reflection_of_unit_variance_t4() -> None:
    # P(max >= d) = 2 * P(sigma sqrt(H) * T/sqrt(2) >= ln(1+d)), T ~ t(4): checked by simulation of T
    rng = np.random.default_rng(11)
    t = rng.standard_t(4, 400_000) / math.sqrt(2.0)
    d, vol, h = 0.02, 0.006, 8.0
    expected = 2.0 * float(np.mean(t * vol * math.sqrt(h) >= math.log1p(d)))
    assert baseline.move_probability(d, vol, h) == pytest.approx(expected, abs=0.01)
    assert baseline.move_probability(0.5, 0.006, 8.0) < baseline.move_probability(0.05, 0.006, 8.0)
    assert baseline.move_probability(0.05, 0.006, 24.0) > baseline.move_probability(0.05, 0.006, 1.0)


def test_realised_vol_recovers_the_simulated_sigma_and_ignores_a_jump() -> None:
    rng = np.random.default_rng(5)
    sigma = 0.005
    r = rng.standard_t(4, 3000) / math.sqrt(2.0) * sigma * math.sqrt(1 / 60)
    prices = list(zip(np.arange(3001) * 60.0, 50_000 * np.exp(np.concatenate([[0.0], np.cumsum(r)])), strict=True))
    vol, n = baseline.realised_vol(prices, prices[-1][0], 1e9, 600)
    assert n == 3000 and vol == pytest.approx(sigma, rel=0.1)
    jumped = [*prices[:-5], *((t, p * 0.9) for t, p in prices[-5:])]  # a 10 % cascade in the last minutes
    vol_j, _ = baseline.realised_vol(jumped, prices[-1][0], 1e9, 600)
    assert vol_j == pytest.approx(vol, rel=0.05)


def _snap(**kw: Any) -> Any:
    rows = [instrument("binance", "BTCUSDT", **kw), instrument("bybit", "BTCUSDT", **kw)]
    return snapshots(state(rows), 0.0)["BTC"]


def _p(snap: Any, flow: float = 0.0, vol: float | None = 0.005, horizon: float = 8.0) -> float:
    f = baseline.features_of(snap, vol_per_sqrt_hour=vol, returns=100, decayed_flow_usd=flow)
    # the mechanics, with the judgement constants (the fitted ones switch the flow term off: docs/sidecar.md)
    return baseline.parts(f, baseline.JUDGEMENT, horizon_hours=horizon, threshold_usd=1e7).probability


def test_every_term_depends_on_the_horizon() -> None:
    # a 15-minute question and an 8-hour question must not get the same answer, nor the same flow term
    for kw in ({}, {"zscore": 3.5}, {"oi_change_1h": 0.12}):
        ps = [_p(_snap(**kw), flow=5e6, horizon=h) for h in (0.25, 1.0, 4.0, 8.0)]
        assert ps == sorted(ps) and ps[0] < ps[-1]
    params = baseline.Params(flow_scale=0.8, flow_persistence_seconds=1200.0, flow_half_life_seconds=600.0)
    f = baseline.features_of(_snap(), vol_per_sqrt_hour=0.005, returns=100, decayed_flow_usd=4e6)
    for h in (0.25, 4.0):
        # independent: a steady rate r has decayed sum r*T/ln2; it fades with tau: r*tau*(1-exp(-H/tau)) within H
        rate = 4e6 * math.log(2) / 600.0
        expected = 0.8 * rate * 1200.0 * (1 - math.exp(-h * 3600 / 1200.0))
        parts = baseline.parts(f, params, horizon_hours=h, threshold_usd=1e7)
        assert parts.expected_flow_usd == pytest.approx(expected, rel=1e-9)
        assert parts.flow_probability == pytest.approx((expected / 1e7) / (1 + expected / 1e7), rel=1e-9)


def test_probability_rises_with_each_stress_input_and_is_deterministic() -> None:
    calm = _p(_snap())
    assert _p(_snap(zscore=3.5)) > calm
    assert _p(_snap(funding_8h=0.0015)) > calm
    assert _p(_snap(funding_8h=-0.0015)) > calm  # crowded shorts are as fragile
    assert _p(_snap(oi_change_1h=0.12)) > calm
    assert _p(_snap(oi_change_1h=-0.12)) < calm  # deleveraged
    assert _p(_snap(), flow=2e7) > calm
    assert _p(_snap(), vol=0.02) > calm
    assert _p(_snap(zscore=3.5)) == _p(_snap(zscore=3.5))


def test_prediction_is_a_valid_answer() -> None:
    snap = _snap(zscore=4.0, funding_8h=0.002)
    f = baseline.features_of(snap, vol_per_sqrt_hour=None, returns=0, decayed_flow_usd=5e7)
    assert baseline.Features.from_dict(f.to_dict()).decayed_flow_usd == 5e7
    a = baseline.predict(snap, f, baseline.JUDGEMENT, horizon_hours=8, threshold_usd=1e7)
    again = RiskAnswer.model_validate_json(a.to_json())  # round-trips through the strict schema
    assert again == a
    assert a.risk_level.value in ("high", "critical") and a.action.value in ("reduce", "close")
    assert any("(default)" in f for f in a.key_factors)  # says it had no volatility history yet


J = baseline.JUDGEMENT
JUDGEMENT_CONFIG: dict[str, Any] = {
    "cascade_distance_ratio": J.calm_distance,
    "distance_decay": J.distance_decay,
    "stress_weight": J.stress_weight,
    "flow_scale": J.flow_scale,
    "flow_persistence_seconds": J.flow_persistence_seconds,
    "background_rate_per_hour": J.background_rate_per_hour,
}


def _phase_state(price: float, phase: str, cum_liq: float) -> dict[str, Any]:
    params = {
        "calm": {"zscore": 0.3, "funding_8h": 0.0001, "oi_change_1h": 0.01},
        "buildup": {"zscore": 3.5, "funding_8h": 0.0012, "oi_change_1h": 0.10},
        "cascade": {"zscore": 1.5, "funding_8h": 0.0004, "oi_change_1h": -0.15},
        "after": {"zscore": 0.4, "funding_8h": 0.0001, "oi_change_1h": -0.08},
    }[phase]
    kw: dict[str, Any] = dict(params)
    rows = [
        instrument("binance", "BTCUSDT", mark=price, liq_long_usd=cum_liq * 0.6, **kw),
        instrument("bybit", "BTCUSDT", mark=price * 1.0002, liq_long_usd=cum_liq * 0.4, **kw),
    ]
    return state(rows)


async def test_synthetic_buildup_cascade_calm_through_the_sidecar(tmp_path: Path) -> None:
    """Hours of synthetic /api/state replayed at one read per simulated minute."""
    now = [1_700_000_000.0]
    async with FakeExporter() as exp:
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=tmp_path / "b.sqlite",
                event_threshold_usd=10_000_000,
                **JUDGEMENT_CONFIG,
            )
        )
        clock = VirtualClock(now[0])
        sc = Sidecar(cfg, clock=clock)
        rng = random.Random(3)
        price, cum = 50_000.0, 0.0
        timeline: dict[str, list[float]] = {}
        plan = [("calm", 90), ("buildup", 60), ("cascade", 10), ("after", 150)]
        try:
            for phase, minutes in plan:
                for _ in range(minutes):
                    price *= math.exp(rng.gauss(0, 0.005 / math.sqrt(60)))
                    if phase == "cascade":
                        price *= 0.992
                        cum += 6_000_000
                    exp.state = _phase_state(price, phase, cum)
                    clock.advance(60)
                    await sc.read_state()
                    sc.trigger(["BTC"], "test")
                    await sc.wait_idle()
                    timeline.setdefault(phase, []).append(
                        sc.metrics.latest[("baseline", "BTC", 8.0)].answer.liquidation_probability
                    )
        finally:
            await sc.close()
        calm, build, casc, after = (timeline[p] for p in ("calm", "buildup", "cascade", "after"))
        assert max(calm[-30:]) < 0.1  # calm market: low
        assert min(build[-10:]) > 2 * max(calm[-30:])  # rises before the cascade ...
        assert build[-1] > 0.15
        assert max(casc) > build[-1]  # ... higher while it happens ...
        assert after[-1] < build[-1] / 2  # ... and falls after it
        assert after[-1] < 0.1
