"""First-passage probability: the closed form against a Monte Carlo of the same model, the
Student-t tail function against known values, realised volatility on synthetic prices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from exporter.analytics.risk import (
    LiqInput,
    Tier,
    Volatility,
    betainc,
    hit_probability,
    liq_gap_pct,
    liq_hit_probability,
    normal_sf,
    realised_volatility,
    stress,
    student_t_sf,
)
from exporter.model import Exchange, Side


def test_student_t_tail_known_values() -> None:
    assert student_t_sf(1.0, 1.0) == pytest.approx(0.25, abs=1e-12)  # Cauchy
    assert student_t_sf(2.0, 5.0) == pytest.approx(0.0509697394, rel=1e-8)
    assert student_t_sf(0.0, 7.0) == pytest.approx(0.5)
    assert student_t_sf(-2.0, 5.0) == pytest.approx(1 - 0.0509697394, rel=1e-8)
    assert student_t_sf(1.5, 1e6) == pytest.approx(normal_sf(1.5), rel=1e-4)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 - (1-x)^4 - 4x(1-x)^3


def _monte_carlo(b: float, sigma: float, horizon: float, nu: float | None, paths: int, steps: int, seed: int) -> float:
    """Hit frequency of the model: per path a volatility from the inverse-gamma mixture, then a
    Brownian path; discrete monitoring corrected with the Broadie-Glasserman shift 0.5826 sigma sqrt(dt)."""
    rng = np.random.default_rng(seed)
    dt = horizon / steps
    if nu is None:
        vol = np.full(paths, sigma)
    else:
        scale = sigma * math.sqrt((nu - 2.0) / nu)
        vol = scale * np.sqrt(nu / rng.chisquare(nu, size=paths))
    hits = 0
    chunk = 2000
    for start in range(0, paths, chunk):
        v = vol[start : start + chunk]
        z = rng.standard_normal((len(v), steps))
        path = np.cumsum(z, axis=1) * (v[:, None] * math.sqrt(dt))
        barrier = b - 0.5826 * v * math.sqrt(dt)
        hits += int(np.count_nonzero(path.max(axis=1) >= barrier))
    return hits / paths


@pytest.mark.parametrize(
    ("b", "nu"),
    [(0.02, None), (0.03, 4.0), (0.05, 3.5), (0.015, 8.0)],
)
def test_closed_form_matches_monte_carlo(b: float, nu: float | None) -> None:
    sigma = 0.6 / math.sqrt(365 * 86400)  # 60 % a year, per sqrt(second)
    horizon = 8 * 3600.0
    paths = 20_000
    expected = hit_probability(b, sigma, horizon, nu)
    mc = _monte_carlo(b, sigma, horizon, nu, paths=paths, steps=400, seed=7)
    se = math.sqrt(max(expected * (1 - expected), 1e-4) / paths)
    assert abs(mc - expected) <= 4 * se + 0.004, (mc, expected)


def test_fat_tails_raise_far_probabilities_and_horizon_orders() -> None:
    sigma = 0.5 / math.sqrt(365 * 86400)
    far = 0.08
    assert hit_probability(far, sigma, 3600.0, 3.5) > hit_probability(far, sigma, 3600.0, None)
    assert hit_probability(far, sigma, 8 * 3600.0, 4.0) > hit_probability(far, sigma, 3600.0, 4.0)
    assert hit_probability(0.0, sigma, 3600.0, 4.0) == 1.0


def test_liq_hit_probability_uses_the_side() -> None:
    vol = Volatility(0.5 / math.sqrt(365 * 86400), 5.0, 100)
    # already past the liquidation price -> 1
    assert liq_hit_probability(Side.LONG, 90.0, 95.0, vol, 3600.0) == 1.0
    assert liq_hit_probability(Side.SHORT, 100.0, 95.0, vol, 3600.0) == 1.0
    p_long = liq_hit_probability(Side.LONG, 100.0, 95.0, vol, 3600.0)
    p_short = liq_hit_probability(Side.SHORT, 100.0, 100.0 * 100.0 / 95.0, vol, 3600.0)
    assert p_long is not None and p_long == pytest.approx(p_short)  # same log distance
    assert liq_hit_probability(Side.SHORT, 100.0, None, vol, 3600.0) == 0.0


def test_realised_volatility_recovers_sigma_and_tails() -> None:
    rng = np.random.default_rng(3)
    sigma = 2e-4  # per sqrt(second)
    t = np.cumsum(rng.uniform(5.0, 15.0, 5000))
    dt = np.diff(t, prepend=t[0] - 10.0)
    gauss = np.exp(np.cumsum(rng.standard_normal(5000) * sigma * np.sqrt(dt))) * 100.0
    v = realised_volatility(list(zip(t.tolist(), gauss.tolist(), strict=True)))
    assert v is not None
    assert v.sigma_per_sqrt_s == pytest.approx(sigma, rel=0.05)
    assert v.nu >= 20.0  # near-Gaussian
    nu = 5.0
    tz = rng.standard_t(nu, 5000) * math.sqrt((nu - 2) / nu)
    fat = np.exp(np.cumsum(tz * sigma * np.sqrt(dt))) * 100.0
    vf = realised_volatility(list(zip(t.tolist(), fat.tolist(), strict=True)))
    assert vf is not None
    assert vf.sigma_per_sqrt_s == pytest.approx(sigma, rel=0.1)
    assert 3.0 <= vf.nu <= 12.0
    assert realised_volatility([(0.0, 1.0), (1.0, 1.1)]) is None  # too few returns


def test_short_with_an_exchange_zero_liquidation_price_is_safe_not_a_crash() -> None:
    # Bybit/OKX may report "0" for a position no price liquidates; for a short that is no finite
    # price, not a price already crossed (and log(0) must not be taken).
    vol = Volatility(0.5 / math.sqrt(365 * 86400), 5.0, 100)
    assert liq_hit_probability(Side.SHORT, 100.0, 0.0, vol, 3600.0) == 0.0
    assert liq_gap_pct(Side.SHORT, 100.0, 0.0) is None
    p = LiqInput(Exchange.BYBIT, Side.SHORT, 1.0, 100.0, 1000.0, [Tier(0.0, float("inf"), 0.005)])
    assert all(s.survives for s in stress(p, 100.0, 0.0, [-10.0, 10.0]))
