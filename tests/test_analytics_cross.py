"""Cross-exchange analytics: OI-weighted funding and funding spreads."""

from __future__ import annotations

import pytest

from exporter.analytics.cross import FundingPoint, funding_spreads, oi_weighted_funding, spread_fee_bp_per_8h
from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, MarketUpdate
from exporter.state import MarketState

T0 = 1_700_000_000.0


def P(base: str, ex: str, r8: float, oi: float | None = 1e9, fee: float = 5.0, inst: str = "X") -> FundingPoint:
    return FundingPoint(base, ex, inst, r8, oi, fee)


def test_oi_weighted_funding_weights_by_open_interest_per_base() -> None:
    pts = [
        P("BTC", "binance", 1e-4, 3e9),
        P("BTC", "okx", 4e-4, 1e9),
        P("BTC", "bybit", 9.0, None),
        P("BTC", "deribit", 9.0, 0.0),
        P("ETH", "binance", -2e-4, 5e8),
    ]
    got = oi_weighted_funding(pts)
    assert got["BTC"] == pytest.approx((1e-4 * 3e9 + 4e-4 * 1e9) / 4e9)
    assert got["ETH"] == pytest.approx(-2e-4)
    assert set(got) == {"BTC", "ETH"}


def test_spreads_keep_positive_gross_pairs_best_first_with_fees() -> None:
    pts = [P("BTC", "binance", 1e-4, fee=5.0), P("BTC", "okx", 3e-4, fee=4.0), P("BTC", "bybit", 2e-4, fee=5.5)]
    spreads = funding_spreads(pts, holding_period_hours=168.0, top_n=10)
    # 3 exchanges -> 3 pairs with positive gross (the reverse directions are negative).
    assert len(spreads) == 3
    best = spreads[0]
    assert (best.long_exchange, best.short_exchange) == ("binance", "okx")
    assert best.gross_bp == pytest.approx(2.0)
    assert best.net_bp == pytest.approx(2.0 - 2 * (5.0 + 4.0) * 8 / 168)
    assert [s.net_bp for s in spreads] == sorted((s.net_bp for s in spreads), reverse=True)
    assert all(s.gross_bp > 0 for s in spreads)
    assert spread_fee_bp_per_8h(5.0, 4.0, 168.0) == pytest.approx(18 * 8 / 168)


def test_spreads_top_n_per_base_and_best_instrument_per_exchange() -> None:
    pts = [P("BTC", ex, r) for ex, r in (("binance", 1e-4), ("okx", 2e-4), ("bybit", 3e-4), ("deribit", 4e-4))]
    # Two instruments on binance for ETH: the long leg takes the lowest, the short leg the highest.
    pts += [
        P("ETH", "binance", -1e-4, inst="ETHUSDT"),
        P("ETH", "binance", 5e-4, inst="ETHUSDC"),
        P("ETH", "okx", 1e-4),
    ]
    spreads = funding_spreads(pts, 168.0, top_n=2)
    btc = [s for s in spreads if s.base == "BTC"]
    assert len(btc) == 2 and (btc[0].long_exchange, btc[0].short_exchange) == ("binance", "deribit")
    eth = {(s.long_exchange, s.short_exchange): s.gross_bp for s in spreads if s.base == "ETH"}
    assert eth == {("binance", "okx"): pytest.approx(2.0), ("okx", "binance"): pytest.approx(4.0)}


def test_equal_rates_give_no_spread() -> None:
    assert funding_spreads([P("BTC", "binance", 1e-4), P("BTC", "okx", 1e-4)], 168.0, 10) == []


def test_cross_series_normalise_intervals_and_skip_stale() -> None:
    now = [T0]
    state = MarketState(clock=lambda: now[0])
    # Bybit 1 h at 0.5 bp per hour = 4 bp per 8 h; Binance 8 h at 1 bp.
    state.register(InstrumentInfo(Exchange.BYBIT, "BTCUSDT", "BTC", "USDT", funding_interval_s=3600.0))
    state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    state.register(InstrumentInfo(Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    state.apply(MarketUpdate(Exchange.OKX, "BTC-USDT-SWAP", funding_rate=0.01, open_interest_usd=1e9), now[0] - 500)
    state.apply(MarketUpdate(Exchange.BYBIT, "BTCUSDT", funding_rate=0.00005, open_interest_usd=1e9))
    state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=0.0001, open_interest_usd=3e9))
    reg = build_registry(Config(), state)
    assert reg.get_sample_value("fr_oi_weighted_funding_rate", {"base": "BTC"}) == pytest.approx(
        (0.0004 * 1e9 + 0.0001 * 3e9) / 4e9
    )
    lb = {"base": "BTC", "long_exchange": "binance", "short_exchange": "bybit"}
    assert reg.get_sample_value("fr_funding_spread_bp", lb) == pytest.approx(3.0 - 2 * 10 * 8 / 168)
    # OKX's funding is 500 s old (limit 120 s): its absurd rate must not appear in any pair.
    text = reg.render().decode()
    assert 'short_exchange="okx"' not in text and 'long_exchange="okx"' not in text
    assert (
        reg.get_sample_value("fr_funding_spread_bp", {**lb, "long_exchange": "bybit", "short_exchange": "binance"})
        is None
    )


@pytest.mark.parametrize("seed", range(6))
def test_the_column_functions_equal_the_point_functions(seed: int) -> None:
    """oi_weighted_columns and spreads_columns (what a scrape of thousands of instruments runs) give
    what oi_weighted_funding and funding_spreads give, the same floats in the same order: random
    markets with several instruments of a base on one exchange, equal rates (the earliest leg),
    unknown and zero open interest, negative rates, bases on one exchange only."""
    import random

    from exporter.analytics.cross import FundingColumns, oi_weighted_columns, spreads_columns

    rng = random.Random(seed)
    exchanges = ["binance", "bybit", "okx", "deribit"]
    fees = {"binance": 4.0, "bybit": 5.5, "okx": 5.0, "deribit": 0.0}
    points = []
    for k in range(300):
        base = f"B{rng.randrange(60)}"
        ex = rng.choice(exchanges[: rng.randint(1, 4)])
        rate = rng.choice([1e-4, -2e-4, 0.0, 3e-4]) if rng.random() < 0.3 else rng.gauss(1e-4, 2e-4)
        oi = rng.choice([None, 0.0, rng.uniform(1e5, 1e9)])
        points.append(FundingPoint(base, ex, f"{base}-{ex}-{k}", rate, oi, fees[ex]))
    cols = FundingColumns.from_points(points)
    codes, values = oi_weighted_columns(cols)
    want = oi_weighted_funding(points)
    assert [cols.bases[c] for c in codes.tolist()] == sorted(want)
    assert [repr(v) for v in values.tolist()] == [repr(want[b]) for b in sorted(want)]
    for top_n in (1, 3, 12):
        b, lo, sh, gross, net = spreads_columns(cols, 24.0, top_n)
        got = [
            (cols.bases[x], cols.exchanges[y], cols.exchanges[z], repr(g), repr(n))
            for x, y, z, g, n in zip(b.tolist(), lo.tolist(), sh.tolist(), gross.tolist(), net.tolist(), strict=True)
        ]
        expected = [
            (s.base, s.long_exchange, s.short_exchange, repr(s.gross_bp), repr(s.net_bp))
            for s in funding_spreads(points, 24.0, top_n)
        ]
        assert got == expected
        assert len(expected) > 20
