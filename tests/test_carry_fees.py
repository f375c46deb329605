"""Issue 14: maker rebates (negative fees) and points income in fr_edge_bp and fr_net_apy_pct."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from test_metrics_market import BTC, populated, value
from test_positions_margin import inputs

from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import Exchange, Side
from exporter.positions.model import Position
from exporter.positions.view import ViewSettings, build_view


def test_a_maker_maker_carry_with_rebate_and_points_has_an_edge_above_the_bare_rate() -> None:
    _, state = populated()  # Binance BTCUSDT, 8 h funding at 2e-4 (2 bp)
    cfg = Config.model_validate(
        {
            "exchanges": {"binance": {"fees": {"maker_bp": -0.5, "taker_bp": 4.0}}},
            "analytics": {"fee_kind": "maker", "points_bp": 0.25, "holding_period_hours": 168},
        }
    )
    edge = value(build_registry(cfg, state), "fr_edge_bp", {**BTC, "side": "short"})
    # effective fee per side = -0.5 - 0.25 = -0.75 bp; round trip over 168 h, per 8 h interval:
    # 2 bp - 2 x (-0.75) x 8 / 168 = 2 + 1.5 / 21
    assert edge == pytest.approx(2.0 + 1.5 / 21.0)
    plain = value(build_registry(Config(), state), "fr_edge_bp", {**BTC, "side": "short"})
    assert plain == pytest.approx(2.0 - 2 * 5.0 * 8 / 168)  # the default taker 5 bp: below the bare rate


def test_fees_config_accepts_a_rebate_and_refuses_nonsense() -> None:
    assert (
        Config.model_validate({"exchanges": {"okx": {"fees": {"maker_bp": -1.0}}}})
        .exchanges[Exchange.OKX]
        .fees.maker_bp
        == -1.0
    )
    with pytest.raises(ValidationError):
        Config.model_validate({"exchanges": {"okx": {"fees": {"maker_bp": -500.0}}}})
    with pytest.raises(ValidationError):
        Config.model_validate({"analytics": {"points_bp": -1.0}})


def test_rebates_and_points_raise_the_realised_apy() -> None:
    settings = ViewSettings((1.0,), (), 168.0)
    with_points = ViewSettings((1.0,), (), 168.0, points_bp=1.0)

    def apy(fees: float, s: ViewSettings) -> float:
        p = Position(
            "c", Exchange.BINANCE, "BTCUSDT", Side.SHORT, 1.0, 20_000.0, margin_usd=2_000.0, fees_usd=fees,
            locked_capital_usd=10_000.0,
        )  # fmt: skip
        v = build_view(p, inputs(20_000.0, net=30.0), s)
        assert v.apy_realized_pct is not None
        return v.apy_realized_pct

    year = 365 * 86400.0
    held = 100_000.0  # inputs(): now - opened
    # (net funding - fees) / capital, annualised over the time held
    assert apy(10.0, settings) == pytest.approx((30.0 - 10.0) / 10_000 * year / held * 100, rel=1e-9)
    assert apy(-4.0, settings) == pytest.approx((30.0 + 4.0) / 10_000 * year / held * 100, rel=1e-9)
    # 1 bp of points on the 20 000 opening trade: 2 USD of income
    assert apy(10.0, with_points) == pytest.approx((30.0 - 8.0) / 10_000 * year / held * 100, rel=1e-9)
