"""Property tests of the liquidation model: direction with leverage and size, gap 0 at the
liquidation price, long/short mirror images, stress consistent with the liquidation price."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from exporter.analytics.risk import (
    DEFAULT_TIERS,
    LiqInput,
    Tier,
    equity_usd,
    liq_gap_pct,
    liquidation_price,
    maintenance_margin,
    max_leverage_for,
    stress,
)
from exporter.model import Exchange, Side

OKX_TIERS = [Tier(0, 5_000, 0.004, 125.0), Tier(5_000, 50_000, 0.008, 75.0), Tier(50_000, 1e12, 0.02, 20.0)]
exchanges = st.sampled_from(list(Exchange))
sides = st.sampled_from(list(Side))
sizes = st.floats(0.01, 500.0)
entries = st.floats(1.0, 200_000.0)
leverages = st.floats(1.5, 50.0)


def _inp(ex: Exchange, side: Side, size: float, entry: float, lev: float, inverse: bool = False) -> LiqInput:
    tiers = OKX_TIERS if ex is Exchange.OKX else DEFAULT_TIERS
    return LiqInput(
        ex,
        side,
        size,
        entry,
        size * entry / lev,
        tiers,
        0.01,
        0.0005 if ex is Exchange.OKX else 0.0,
        inverse and ex is Exchange.DERIBIT,
    )


def _lp(p: LiqInput) -> float:
    lp = liquidation_price(p)
    assert lp is not None
    return lp


@settings(max_examples=300, deadline=None)
@given(exchanges, sides, sizes, entries, leverages, st.floats(1.05, 3.0), st.booleans())
def test_more_leverage_moves_liquidation_toward_entry(
    ex: Exchange, side: Side, size: float, entry: float, lev: float, k: float, inverse: bool
) -> None:
    low, high = _inp(ex, side, size, entry, lev, inverse), _inp(ex, side, size, entry, lev * k, inverse)
    # within the tier's maximum leverage (above it the position would be liquidated at once)
    max_lev = max_leverage_for(high.tiers, size / 0.01 if ex is Exchange.OKX else size * entry)
    assume(max_lev is None or lev * k <= max_lev)
    lp_low, lp_high = liquidation_price(low), liquidation_price(high)
    if side is Side.LONG:
        assert lp_low is not None and lp_high is not None
        assert lp_high >= lp_low - 1e-9 * entry
        assert lp_high < entry
    else:
        assert lp_high is not None
        assert lp_low is None or lp_high <= lp_low + 1e-9 * entry
        assert lp_high > entry


@settings(max_examples=300, deadline=None)
@given(exchanges, sides, sizes, entries, st.floats(1_000.0, 1e6), st.floats(1.05, 4.0))
def test_more_size_on_the_same_margin_moves_liquidation_toward_entry(
    ex: Exchange, side: Side, size: float, entry: float, margin: float, k: float
) -> None:
    tiers = OKX_TIERS if ex is Exchange.OKX else DEFAULT_TIERS

    def lp(q: float) -> float | None:
        return liquidation_price(LiqInput(ex, side, q, entry, margin, tiers, 0.01))

    a, b = lp(size), lp(size * k)
    if side is Side.LONG:
        assert a is not None and b is not None and b >= a - 1e-9 * entry
    else:
        assert b is not None and (a is None or b <= a + 1e-9 * entry)


@settings(max_examples=300, deadline=None)
@given(exchanges, sides, sizes, entries, leverages, st.booleans())
def test_at_the_liquidation_price_gap_is_zero_and_equity_meets_maintenance(
    ex: Exchange, side: Side, size: float, entry: float, lev: float, inverse: bool
) -> None:
    p = _inp(ex, side, size, entry, lev, inverse)
    lp = _lp(p)
    assert liq_gap_pct(side, lp, lp) == 0.0
    assert abs(equity_usd(p, lp) - maintenance_margin(p, lp)) <= 1e-6 * size * entry
    # a little safer than the liquidation price: positive gap and equity above maintenance
    safer = lp * (1.001 if side is Side.LONG else 0.999)
    assert liq_gap_pct(side, safer, lp) > 0  # type: ignore[operator]
    assert equity_usd(p, safer) > maintenance_margin(p, safer)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([Exchange.BINANCE, Exchange.OKX, Exchange.DERIBIT]), sizes, entries, leverages)
def test_long_and_short_are_mirror_images_without_maintenance(
    ex: Exchange, size: float, entry: float, lev: float
) -> None:
    # With a zero maintenance rate both sides are liquidated when the margin is gone: EP -/+ M/Q.
    zero = [Tier(0.0, float("inf"), 0.0, None, 0.0)]
    m = size * entry / lev
    long = liquidation_price(LiqInput(ex, Side.LONG, size, entry, m, zero))
    short = liquidation_price(LiqInput(ex, Side.SHORT, size, entry, m, zero))
    assert long is not None and short is not None
    assert abs((entry - long) - (short - entry)) <= 1e-9 * entry


@settings(max_examples=300, deadline=None)
@given(sizes, entries, leverages)
def test_bybit_mirror_with_maintenance(size: float, entry: float, lev: float) -> None:
    long = _lp(_inp(Exchange.BYBIT, Side.LONG, size, entry, lev))
    short = _lp(_inp(Exchange.BYBIT, Side.SHORT, size, entry, lev))
    assert abs((entry - long) - (short - entry)) <= 1e-9 * entry


@settings(max_examples=200, deadline=None)
@given(exchanges, sides, sizes, entries, leverages, st.floats(-30.0, 30.0))
def test_stress_survival_agrees_with_the_liquidation_price(
    ex: Exchange, side: Side, size: float, entry: float, lev: float, shock: float
) -> None:
    p = _inp(ex, side, size, entry, lev)
    lp = _lp(p)
    [res] = stress(p, entry, lp, [shock])
    gap_after = liq_gap_pct(side, res.price, lp)
    assert gap_after is not None
    assert res.survives == (gap_after > 0)
    if res.survives:
        assert res.equity_usd >= maintenance_margin(p, res.price) - 1e-6 * size * entry
