"""Issue 14: margin buffer, basis and total PnL of a position (the pure view builder), each value
against a hand computation from the exchange's rule."""

from __future__ import annotations

import pytest

from exporter.analytics.risk import tiers_from_caps
from exporter.model import Exchange, Side, Tier
from exporter.positions.model import Hedge, Position
from exporter.positions.view import ViewInputs, ViewSettings, build_view

SETTINGS = ViewSettings(hit_horizons_hours=(1.0,), shocks_pct=(-10.0, 10.0), holding_period_hours=168.0)
FLAT = [Tier(0.0, float("inf"), 0.004, 125.0, 0.0)]


def inputs(mark: float | None, *, net: float = 0.0, hedge_mark: float | None = None, tiers=FLAT) -> ViewInputs:  # type: ignore[no-untyped-def]
    return ViewInputs(
        now=1_000_000.0,
        opened=900_000.0,
        mark=mark,
        tiers=tiers,
        taker_fee=0.0,
        volatility=None,
        funding=(net, max(net, 0.0), max(-net, 0.0), 3),
        net_since_opening=net,
        legs=[],
        adl_rank=None,
        hedge_mark=hedge_mark,
    )


def test_margin_buffer_of_an_isolated_binance_long() -> None:
    p = Position("btc", Exchange.BINANCE, "BTCUSDT", Side.LONG, 1.0, 20_000.0, margin_usd=400.0)
    v = build_view(p, inputs(19_900.0), SETTINGS)
    # equity = margin + uPnL = 400 - 100; maintenance = 19 900 x 0.4 %
    assert v.equity_usd == pytest.approx(300.0)
    assert v.maintenance_margin_usd == pytest.approx(79.6)
    assert v.margin_buffer_ratio == pytest.approx((300.0 - 79.6) / 300.0)


def test_margin_buffer_uses_the_tier_of_the_notional_at_the_mark() -> None:
    # 3 BTC at 100 000 = 300 000 notional: Binance's published bracket 3 (1 %, amount 1 300)
    tiers = tiers_from_caps([(50_000, 0.004, 125), (250_000, 0.005, 100), (1_000_000, 0.01, 50)])
    p = Position("btc", Exchange.BINANCE, "BTCUSDT", Side.SHORT, 3.0, 100_000.0, margin_usd=15_000.0)
    v = build_view(p, inputs(100_000.0, tiers=tiers), SETTINGS)
    assert v.maintenance_margin_usd == pytest.approx(300_000 * 0.01 - 1_300)
    assert v.margin_buffer_ratio == pytest.approx((15_000 - 1_700) / 15_000)


def test_buffer_goes_negative_past_liquidation_and_is_absent_without_equity() -> None:
    p = Position("btc", Exchange.BINANCE, "BTCUSDT", Side.LONG, 1.0, 20_000.0, margin_usd=400.0)
    past = build_view(p, inputs(19_650.0), SETTINGS)  # equity 50 < maintenance 78.6
    assert past.margin_buffer_ratio is not None and past.margin_buffer_ratio < 0
    assert past.margin_buffer_ratio == pytest.approx((50.0 - 19_650 * 0.004) / 50.0)
    gone = build_view(p, inputs(19_500.0), SETTINGS)  # equity -100: no ratio means anything
    assert gone.equity_usd == pytest.approx(-100.0) and gone.margin_buffer_ratio is None
    unknown = build_view(p, inputs(None), SETTINGS)
    assert unknown.equity_usd is None and unknown.margin_buffer_ratio is None


def test_basis_and_total_pnl_of_a_spot_hedged_short() -> None:
    hedge = Hedge("spot", Side.LONG, 1.0, 19_990.0, fees_usd=2.0)
    p = Position(
        "carry", Exchange.BINANCE, "BTCUSDT", Side.SHORT, 1.0, 20_000.0, margin_usd=2_000.0, fees_usd=3.0, hedge=hedge
    )
    v = build_view(p, inputs(21_000.0, net=25.0, hedge_mark=20_980.0), SETTINGS)
    # perp short: -(21 000 - 20 000) = -1 000; spot long: 20 980 - 19 990 = 990
    assert v.basis_pnl_usd == pytest.approx(-10.0)
    assert v.total_pnl_usd == pytest.approx(-10.0 + 25.0 - (3.0 + 2.0))
    # the hedge's price unknown: no half-carry figure
    half = build_view(p, inputs(21_000.0, net=25.0, hedge_mark=None), SETTINGS)
    assert half.basis_pnl_usd is None and half.total_pnl_usd is None


def test_a_maker_rebate_adds_to_total_pnl() -> None:
    p = Position("naked", Exchange.BYBIT, "BTCUSDT", Side.SHORT, 2.0, 30_000.0, margin_usd=3_000.0, fees_usd=-4.0)
    v = build_view(p, inputs(29_000.0, net=10.0), SETTINGS)
    assert v.basis_pnl_usd == pytest.approx(2_000.0)
    assert v.total_pnl_usd == pytest.approx(2_000.0 + 10.0 + 4.0)
