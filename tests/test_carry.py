"""Funding accrual signs and the net APY formulas (realised and projected, hedged)."""

from __future__ import annotations

import pytest

from exporter.analytics.carry import (
    PerpLeg,
    annual_funding_usd,
    borrow_interest,
    continuous_funding,
    funding_payment,
    net_apy_projected_pct,
    net_apy_realized_pct,
)
from exporter.model import SECONDS_PER_YEAR, Side

DAY = 86400.0


def test_positive_rate_longs_pay_shorts() -> None:
    assert funding_payment(Side.LONG, 10_000.0, 0.0001) == pytest.approx(-1.0)
    assert funding_payment(Side.SHORT, 10_000.0, 0.0001) == pytest.approx(1.0)
    assert funding_payment(Side.SHORT, 10_000.0, -0.0002) == pytest.approx(-2.0)
    # the notional's sign does not matter, the side does
    assert funding_payment(Side.SHORT, -10_000.0, 0.0001) == pytest.approx(1.0)


def test_continuous_funding_is_pro_rata_of_the_8h_rate() -> None:
    assert continuous_funding(Side.SHORT, 50_000.0, 0.0001, 8 * 3600.0) == pytest.approx(5.0)
    assert continuous_funding(Side.SHORT, 50_000.0, 0.0001, 3600.0) == pytest.approx(5.0 / 8)
    assert continuous_funding(Side.LONG, 50_000.0, 0.0001, -5.0) == 0.0


def test_realized_apy_worked_example() -> None:
    # 30 days: 300 USD funding, 40 fees, 10 gas, 5 % APR on 10 000 capital
    elapsed = 30 * DAY
    borrow = borrow_interest(10_000.0, 0.05, elapsed)
    assert borrow == pytest.approx(10_000 * 0.05 * 30 / 365)
    apy = net_apy_realized_pct(300.0, 40.0, 10.0, 0.05, 10_000.0, elapsed)
    assert apy == pytest.approx((300 - 40 - 10 - borrow) / 10_000 / (30 / 365) * 100)
    assert net_apy_realized_pct(300.0, 0.0, 0.0, 0.0, 10_000.0, 60.0) is None  # too early to annualise
    assert net_apy_realized_pct(300.0, 0.0, 0.0, 0.0, 0.0, elapsed) is None


def test_projected_apy_uses_each_legs_own_interval_and_both_legs() -> None:
    # short perp 1 h at +0.01 %/h (receives), long hedge perp 8 h at +0.02 %/8 h (pays)
    main = PerpLeg(Side.SHORT, 100_000.0, 0.0001, 3600.0)
    hedge = PerpLeg(Side.LONG, 100_000.0, 0.0002, 8 * 3600.0)
    per_year_main = 10.0 * SECONDS_PER_YEAR / 3600.0
    per_year_hedge = -20.0 * SECONDS_PER_YEAR / (8 * 3600.0)
    assert annual_funding_usd([main]) == pytest.approx(per_year_main)
    assert annual_funding_usd([main, hedge]) == pytest.approx(per_year_main + per_year_hedge)
    capital = 40_000.0
    apy = net_apy_projected_pct([main, hedge], 100.0, 20.0, 0.03, capital, 7 * DAY)
    one_off = 120.0 * 365 / 7
    expected = (per_year_main + per_year_hedge - one_off - capital * 0.03) / capital * 100
    assert apy == pytest.approx(expected)
    # an 8 h leg at the same per-interval rate earns an eighth of the 1 h leg
    slow = PerpLeg(Side.SHORT, 100_000.0, 0.0001, 8 * 3600.0)
    assert annual_funding_usd([slow]) == pytest.approx(per_year_main / 8)
