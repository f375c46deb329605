"""Liquidation-price formulas per exchange: worked examples, and a brute-force margin simulation.

The worked numbers follow the formulas quoted in the shared protocol reference (sections 2.8,
3.8, 4.8, 5.8); the Bybit one is the reference's own example (1 BTC long at 20 000, 50x, MMR
0.5 % -> 19 700). The brute-force check walks the price from the entry toward the liquidation side
in small steps with an independently written margin model per exchange and stops at the first
price where equity <= maintenance margin; the closed form must land on that step.
"""

from __future__ import annotations

import numpy as np
import pytest

from exporter.analytics.risk import (
    DEFAULT_TIER_ROWS,
    LiqInput,
    Tier,
    binance_liq_price,
    bybit_liq_price,
    deribit_liq_price,
    equity_usd,
    liquidation_price,
    maintenance_margin,
    okx_liq_price,
    tier_for,
    tiers_from_caps,
)
from exporter.model import Exchange, Side

FLAT = [Tier(0.0, float("inf"), 0.005, 100.0, 0.0)]


def test_bybit_reference_example() -> None:
    # IM = 20000/50 = 400, MM = 20000 x 0.5 % = 100 -> LP = 20000 - (400 - 100) / 1 = 19700
    assert bybit_liq_price(Side.LONG, 1.0, 20_000.0, 400.0, FLAT) == pytest.approx(19_700.0)
    assert bybit_liq_price(Side.SHORT, 1.0, 20_000.0, 400.0, FLAT) == pytest.approx(20_300.0)


def test_bybit_extra_margin_and_deduction() -> None:
    # extra margin 100 on top of IM 400; tier MMR 1 % with deduction 50: MM = 200 - 50 = 150
    tiers = [Tier(0.0, 1e9, 0.01, 50.0, 50.0)]
    assert bybit_liq_price(Side.LONG, 1.0, 20_000.0, 500.0, tiers) == pytest.approx(20_000 - (500 - 150))


def test_binance_one_way_isolated_example() -> None:
    # LP = (Pos x EP - WB - cum) / (Pos x (1 - MMR)); bracket 1: MMR 0.4 %, cum 0
    long = binance_liq_price(Side.LONG, 1.0, 20_000.0, 400.0, tiers_from_caps(DEFAULT_TIER_ROWS))
    assert long == pytest.approx((20_000 - 400) / 0.996)
    assert long == pytest.approx(19_678.714859, rel=1e-9)
    short = binance_liq_price(Side.SHORT, 1.0, 20_000.0, 400.0, tiers_from_caps(DEFAULT_TIER_ROWS))
    assert short == pytest.approx((20_000 + 400) / 1.004)


def test_binance_general_formula_with_other_positions() -> None:
    # cross: WB - TMM1 + UPNL1 enters the numerator as one block
    lp = binance_liq_price(Side.LONG, 2.0, 30_000.0, 5_000.0, FLAT, other_mm=300.0, other_upnl=-200.0)
    assert lp == pytest.approx((5_000 - 300 - 200 + 0 - 2 * 30_000) / (2 * 0.005 - 2))


def test_binance_bracket_is_picked_at_the_liquidation_price() -> None:
    tiers = tiers_from_caps(DEFAULT_TIER_ROWS)
    # entry notional 260 000 is bracket 3 (1 %), the liquidation notional falls in bracket 2 (0.5 %)
    size, entry, wb = 10.0, 26_000.0, 13_000.0
    lp = binance_liq_price(Side.LONG, size, entry, wb, tiers)
    assert lp is not None
    b2 = tiers[1]
    assert b2.mmr == 0.005 and b2.deduction == pytest.approx(50.0)  # cum = 50 000 x (0.5 % - 0.4 %)
    assert lp == pytest.approx((size * entry - wb - b2.deduction) / (size * (1 - b2.mmr)))
    assert tier_for(tiers, size * lp) is b2


# Binance's published BTCUSDT brackets (announcement 2021-03-18) with the maintenance amounts its
# FAQ's formula gives (amount_n = floor_n x (MMR_n - MMR_n-1) + amount_n-1), worked by hand here.
PUBLISHED_BTCUSDT = [
    # (floor, cap, MMR, max leverage, maintenance amount)
    (0, 50_000, 0.004, 125, 0),
    (50_000, 250_000, 0.005, 100, 50),
    (250_000, 1_000_000, 0.01, 50, 1_300),
    (1_000_000, 10_000_000, 0.025, 20, 16_300),
    (10_000_000, 20_000_000, 0.05, 10, 266_300),
    (20_000_000, 50_000_000, 0.10, 5, 1_266_300),
    (50_000_000, 100_000_000, 0.125, 4, 2_516_300),
    (100_000_000, 200_000_000, 0.15, 3, 5_016_300),
    (200_000_000, 300_000_000, 0.25, 2, 25_016_300),
    (300_000_000, 500_000_000, 0.50, 1, 100_016_300),
]


def test_binance_default_brackets_are_the_published_table() -> None:
    tiers = tiers_from_caps(DEFAULT_TIER_ROWS)
    got = [(t.floor, t.cap, t.mmr, t.max_leverage, t.deduction) for t in tiers]
    assert len(got) == len(PUBLISHED_BTCUSDT)
    for g, want in zip(got, PUBLISHED_BTCUSDT, strict=True):
        assert g == pytest.approx(want)


def test_binance_faq_example_264k_notional() -> None:
    # The FAQ's example: a 264 000 USDT notional sits at MMR 1 % with maintenance amount 1 300,
    # so the maintenance margin is 264 000 x 1 % - 1 300 = 1 340.
    tiers = tiers_from_caps(DEFAULT_TIER_ROWS)
    t = tier_for(tiers, 264_000.0)
    assert (t.mmr, t.deduction) == pytest.approx((0.01, 1_300.0))
    p = LiqInput(Exchange.BINANCE, Side.LONG, 2.64, 100_000.0, 20_000.0, tiers)
    assert maintenance_margin(p, 100_000.0) == pytest.approx(1_340.0)


def test_binance_10_btc_at_100k_20x() -> None:
    # isolated wallet 1 000 000 / 20 = 50 000; at the liquidation price the notional (~958k) is in
    # the 250k-1M bracket: LP = (50 000 + 1 300 - 10 x 100 000) / (10 x 1 % - 10) = 95 828.28...
    lp = binance_liq_price(Side.LONG, 10.0, 100_000.0, 50_000.0, tiers_from_caps(DEFAULT_TIER_ROWS))
    assert lp == pytest.approx(948_700.0 / 9.9, rel=1e-12)


def test_okx_formula() -> None:
    # 100 contracts x ctVal 0.01 = 1 BTC, margin 400, tier MMR 0.4 %, taker fee 0.05 %
    tiers = [Tier(0, 10_000, 0.004, 125.0), Tier(10_000, 1e9, 0.01, 50.0)]
    lp = okx_liq_price(Side.LONG, 1.0, 20_000.0, 400.0, tiers, contract_size=0.01, taker_fee=0.0005)
    assert lp == pytest.approx((20_000 - 400) / (1 - 0.0045))
    sp = okx_liq_price(Side.SHORT, 1.0, 20_000.0, 400.0, tiers, contract_size=0.01, taker_fee=0.0005)
    assert sp == pytest.approx((20_000 + 400) / (1 + 0.0045))
    # 200 BTC = 20 000 contracts: second tier
    big = okx_liq_price(Side.LONG, 200.0, 20_000.0, 80_000.0, tiers, contract_size=0.01, taker_fee=0.0)
    assert big == pytest.approx((20_000 - 400) / (1 - 0.01))


def test_deribit_inverse_and_linear() -> None:
    # 20 000 USD of BTC-PERPETUAL, 0.1 BTC collateral (2 000 USD at entry), MMR 0.5 %
    lp = deribit_liq_price(Side.LONG, 1.0, 20_000.0, 2_000.0, FLAT, inverse=True)
    assert lp == pytest.approx(20_000 * 1.005 / (0.1 + 1.0))
    sp = deribit_liq_price(Side.SHORT, 1.0, 20_000.0, 2_000.0, FLAT, inverse=True)
    assert sp == pytest.approx(20_000 * 0.995 / (1.0 - 0.1))
    lin = deribit_liq_price(Side.LONG, 1.0, 20_000.0, 2_000.0, FLAT, inverse=False)
    assert lin == pytest.approx(18_000 / 0.995)


def test_no_liquidation_cases() -> None:
    # margin above the notional: a long cannot be liquidated (price 0); an inverse short neither
    assert binance_liq_price(Side.LONG, 1.0, 100.0, 200.0, FLAT) == 0.0
    assert deribit_liq_price(Side.SHORT, 1.0, 100.0, 150.0, FLAT, inverse=True) is None


# ---- brute force ------------------------------------------------------------------------------


def _bf_tier(rows: list[tuple[float, float, float]], value: float) -> tuple[float, float]:
    """(mmr, maintenance amount) by walking the caps; maintenance amount chosen for continuity."""
    amount, prev_mmr, floor = 0.0, None, 0.0
    for cap, mmr, _lev in rows:
        if prev_mmr is not None:
            amount += floor * (mmr - prev_mmr)
        if value < cap:
            return mmr, amount
        floor, prev_mmr = cap, mmr
    return rows[-1][1], amount


def _brute_force(
    exchange: Exchange,
    side: Side,
    size: float,
    entry: float,
    margin: float,
    rows: list[tuple[float, float, float]],
    ct: float = 1.0,
    fee: float = 0.0,
    inverse: bool = False,
) -> tuple[float, float]:
    """Walk from entry toward liquidation; return (first liquidating price, step)."""
    s = 1.0 if side is Side.LONG else -1.0
    step = entry * 2e-6
    n = int(0.999 * entry / step) if side is Side.LONG else int(3 * entry / step)
    prices = entry - s * step * np.arange(1, n + 1)
    if exchange is Exchange.DERIBIT and inverse:
        coin = margin / entry + s * size * entry * (1 / entry - 1 / prices)
        equity = coin * prices
    else:
        equity = margin + s * size * (prices - entry)
    if exchange is Exchange.BINANCE:
        # tier of every walked price, by its notional at that price
        caps = np.array([r[0] for r in rows])
        mmrs = np.array([_bf_tier(rows, lo)[0] for lo in [0.0, *caps[:-1]]])
        amounts = np.array([_bf_tier(rows, lo)[1] for lo in [0.0, *caps[:-1]]])
        idx = np.minimum(np.searchsorted(caps, size * prices, side="right"), len(rows) - 1)
        mm = size * prices * mmrs[idx] - amounts[idx]
    elif exchange is Exchange.BYBIT:
        m, a = _bf_tier(rows, size * entry)
        mm = np.full_like(prices, size * entry * m - a)
    elif exchange is Exchange.OKX:
        m, _ = _bf_tier(rows, size / ct)  # OKX tiers count contracts
        mm = size * prices * (m + fee)
    else:
        m, _ = _bf_tier(rows, size * entry)
        # inverse: mmr on the USD face value, held in coin (S/P coin, worth S in USD at any price)
        mm = np.full_like(prices, size * entry * m) if inverse else size * prices * m
    hit = np.nonzero(equity <= mm)[0]
    assert hit.size, "never liquidated in the walked range"
    return float(prices[hit[0]]), step


ROWS = [(50_000.0, 0.004, 125.0), (250_000.0, 0.005, 100.0), (1_000_000.0, 0.01, 50.0), (1e12, 0.025, 20.0)]
OKX_ROWS = [(500.0, 0.004, 125.0), (2_000.0, 0.008, 75.0), (1e12, 0.015, 20.0)]  # contracts

CASES = [
    # exchange, side, size, entry, leverage
    (Exchange.BINANCE, Side.LONG, 1.0, 20_000.0, 20.0),
    (Exchange.BINANCE, Side.SHORT, 1.0, 20_000.0, 20.0),
    (Exchange.BINANCE, Side.LONG, 12.0, 30_000.0, 10.0),  # crosses brackets on the way down
    (Exchange.BINANCE, Side.SHORT, 8.0, 30_000.0, 4.0),  # crosses brackets on the way up
    (Exchange.BYBIT, Side.LONG, 3.0, 25_000.0, 25.0),
    (Exchange.BYBIT, Side.SHORT, 40.0, 25_000.0, 5.0),
    (Exchange.OKX, Side.LONG, 15.0, 2_000.0, 30.0),
    (Exchange.OKX, Side.SHORT, 150.0, 2_000.0, 10.0),
    (Exchange.DERIBIT, Side.LONG, 0.5, 60_000.0, 10.0),
    (Exchange.DERIBIT, Side.SHORT, 0.5, 60_000.0, 3.0),
]


@pytest.mark.parametrize(
    ("exchange", "side", "size", "entry", "lev", "inverse"),
    [(*c, False) for c in CASES] + [(*c, True) for c in CASES if c[0] is Exchange.DERIBIT],
)
def test_formula_matches_brute_force_walk(
    exchange: Exchange, side: Side, size: float, entry: float, lev: float, inverse: bool
) -> None:
    rows = OKX_ROWS if exchange is Exchange.OKX else ROWS
    ct, fee = (0.1, 0.0005) if exchange is Exchange.OKX else (1.0, 0.0)
    margin = size * entry / lev
    tiers = tiers_from_caps(rows)
    if exchange is Exchange.OKX:
        tiers = [
            Tier(lo, cap, mmr, lev_, 0.0)
            for (lo, (cap, mmr, lev_)) in zip([0.0] + [r[0] for r in rows[:-1]], rows, strict=True)
        ]
    p = LiqInput(exchange, side, size, entry, margin, tiers, ct, fee, inverse)
    lp = liquidation_price(p)
    walked, step = _brute_force(exchange, side, size, entry, margin, rows, ct, fee, inverse)
    assert lp is not None
    assert abs(lp - walked) <= step * 1.01
    # and the service's own equity / maintenance functions agree at that price
    assert equity_usd(p, lp) == pytest.approx(maintenance_margin(p, lp), rel=1e-6, abs=1e-6)
