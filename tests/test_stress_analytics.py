"""Historical stress analytics (exporter/analytics/stress.py) against independent computations:
brute-force pair loops for the worst move, published quantile tables and closed forms for the laws,
known parameters for the fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from exporter.analytics.stress import (
    fit_normal,
    fit_student_t,
    historical_stress,
    student_t_ppf,
    window_returns,
    worst_moves,
)
from exporter.model import Side

pytestmark = pytest.mark.slow(seconds=5)  # the file: Student-t fits on large samples


def _brute_worst(p: list[float], lag: int) -> tuple[float, float]:
    fall, rise = 0.0, 0.0
    for j in range(len(p)):
        for i in range(max(0, j - lag), j):
            if p[i] > 0 and p[j] > 0 and not math.isnan(p[i]) and not math.isnan(p[j]):
                fall = min(fall, p[j] / p[i] - 1.0)
                rise = max(rise, p[j] / p[i] - 1.0)
    return fall, rise


def test_worst_move_by_hand() -> None:
    # pairs at most 2 steps apart: 100->110->99 falls 10 % (from 110), 99->120 rises 21.2 %
    w = worst_moves([100.0, 110.0, 99.0, 120.0], lag=2)
    assert w is not None
    assert w.long == pytest.approx(99.0 / 110.0 - 1.0)
    assert w.short == pytest.approx(120.0 / 99.0 - 1.0)
    # a fall spread over more steps than the window is not one window's move
    w1 = worst_moves([100.0, 95.0, 90.0, 85.0], lag=1)
    assert w1 is not None and w1.long == pytest.approx(85.0 / 90.0 - 1.0) and w1.short == 0.0


@pytest.mark.parametrize("lag", [1, 3, 5, 12])
def test_worst_move_equals_brute_force_with_gaps(lag: int) -> None:
    rng = np.random.default_rng(lag)
    p = list(100.0 * np.exp(np.cumsum(rng.standard_t(3, 600) * 0.002)))
    for k in rng.choice(600, 60, replace=False):  # missing minutes, and a bad price
        p[int(k)] = math.nan
    p[7] = -1.0
    w = worst_moves(p, lag)
    assert w is not None
    fall, rise = _brute_worst(p, lag)
    assert w.long == pytest.approx(fall, rel=1e-12)
    assert w.short == pytest.approx(rise, rel=1e-12)
    assert w.long < 0 < w.short


def test_worst_move_none_without_a_pair_in_the_window() -> None:
    assert worst_moves([100.0, math.nan, math.nan, 101.0], lag=2) is None
    assert worst_moves([100.0], lag=5) is None
    assert worst_moves([], lag=5) is None
    with pytest.raises(ValueError):
        worst_moves([1.0, 2.0], lag=0)


def test_window_returns_brute_force() -> None:
    p = [100.0, 101.0, math.nan, 99.0, 98.0, 102.0]
    r = window_returns(p, 2)
    expected = [math.log(p[i + 2] / p[i]) for i in range(4) if not math.isnan(p[i]) and not math.isnan(p[i + 2])]
    assert list(r) == pytest.approx(expected)


# Student-t quantiles: closed forms (nu = 1: Cauchy, tan(pi(p - 1/2)); nu = 2: (2p - 1)/sqrt(2p(1 - p)))
# and published table values (t_{0.99}, t_{0.999}).
@pytest.mark.parametrize("p", [0.9, 0.99, 0.999, 0.01])
def test_t_quantile_closed_forms(p: float) -> None:
    assert student_t_ppf(p, 1.0) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert student_t_ppf(p, 2.0) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


@pytest.mark.parametrize(
    ("nu", "p", "table"),
    [(3, 0.99, 4.540703), (4, 0.99, 3.746947), (4, 0.999, 7.173182), (10, 0.999, 4.143700), (30, 0.99, 2.457262)],
)
def test_t_quantile_table(nu: float, p: float, table: float) -> None:
    assert student_t_ppf(p, nu) == pytest.approx(table, abs=2e-6)
    assert student_t_ppf(1 - p, nu) == pytest.approx(-table, abs=2e-6)


def test_normal_fit_moves_use_the_sample_moments_and_the_normal_quantiles() -> None:
    rng = np.random.default_rng(7)
    r = rng.normal(0.0002, 0.003, 5000)
    f = fit_normal(r)
    assert f is not None
    mean, sd = float(np.mean(r)), float(np.std(r, ddof=1))
    # z_{0.99} = 2.326348, z_{0.999} = 3.090232 (tables)
    assert f.move(Side.LONG, 0.99) == pytest.approx(math.exp(mean - 2.326348 * sd) - 1, rel=1e-5)
    assert f.move(Side.SHORT, 0.99) == pytest.approx(math.exp(mean + 2.326348 * sd) - 1, rel=1e-5)
    assert f.move(Side.LONG, 0.999) == pytest.approx(math.exp(mean - 3.090232 * sd) - 1, rel=1e-5)


def test_student_t_fit_recovers_known_parameters() -> None:
    rng = np.random.default_rng(11)
    loc, scale, nu = 0.0001, 0.002, 4.0
    r = loc + scale * rng.standard_t(nu, 40000)
    f = fit_student_t(r)
    assert f is not None and f.nu is not None
    assert f.nu == pytest.approx(nu, rel=0.1)
    assert f.scale == pytest.approx(scale, rel=0.03)
    assert f.loc == pytest.approx(loc, abs=0.05 * scale)
    # the 99.9 % short move against the true law's (t_{0.999}(4) = 7.173182, table)
    assert f.move(Side.SHORT, 0.999) == pytest.approx(math.expm1(loc + scale * 7.173182), rel=0.08)
    # fat tails: the t law's 99.9 % move is beyond the normal fit's
    n = fit_normal(r)
    assert n is not None and f.move(Side.LONG, 0.999) < n.move(Side.LONG, 0.999)


def _loglik(r: np.ndarray, loc: float, scale: float, nu: float) -> float:
    z = (r - loc) / scale
    c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi) - math.log(scale)
    return float(np.sum(c - (nu + 1) / 2 * np.log1p(z * z / nu)))


def test_student_t_fit_is_a_likelihood_maximum() -> None:
    rng = np.random.default_rng(3)
    r = 0.001 * rng.standard_t(2.5, 3000)
    f = fit_student_t(r)
    assert f is not None and f.nu is not None
    best = _loglik(r, f.loc, f.scale, f.nu)
    for dl, ds, dn in [(1e-5, 0, 0), (-1e-5, 0, 0), (0, 0.02, 0), (0, -0.02, 0), (0, 0, 0.05), (0, 0, -0.05)]:
        assert best >= _loglik(r, f.loc + dl, f.scale * (1 + ds), f.nu * (1 + dn)) - 1e-6


def test_student_t_fit_of_normal_data_is_near_normal() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0.0, 0.001, 20000)
    f = fit_student_t(r)
    assert f is not None and f.nu is not None and f.nu > 30
    assert f.move(Side.LONG, 0.99) == pytest.approx(math.expm1(-2.326348 * float(np.std(r))), rel=0.03)


def test_degenerate_histories() -> None:
    flat = [100.0] * 200
    s = historical_stress(flat, 5)
    assert s is not None
    assert s.worst_move(Side.LONG) == 0.0 and s.worst_move(Side.SHORT) == 0.0
    assert [f.move(Side.LONG, 0.999) for f in s.fits] == [0.0, 0.0]
    few = historical_stress([100.0, 101.0, 99.0, 100.5] * 5, 5)  # 15 returns: no fit
    assert few is not None and few.fits == ()
    assert historical_stress([math.nan] * 50, 5) is None
    assert fit_normal(np.array([0.1] * 10)) is None and fit_student_t(np.array([0.1] * 10)) is None
