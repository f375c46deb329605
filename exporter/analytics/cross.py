"""Cross-exchange funding analytics per base asset: pure functions over per-instrument points.

Every rate here is already normalised to an 8 h interval, so instruments with different funding
intervals (Binance 4 h, OKX 8 h, Bybit 1 h...) compare in the same unit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from exporter.analytics.funding import BP
from exporter.model import EIGHT_HOURS


class FundingPoint(NamedTuple):
    """One fresh instrument's funding, as the cross-exchange functions need it.

    A NamedTuple: 2,000 are built per scrape, and a frozen dataclass costs several times as much."""

    base: str
    exchange: str
    instrument: str
    rate_8h: float  # fraction per 8 h
    open_interest_usd: float | None  # None when unknown or stale
    fee_bp: float  # configured fee per side on that exchange


class Spread(NamedTuple):
    base: str
    long_exchange: str
    short_exchange: str
    gross_bp: float  # per 8 h
    net_bp: float  # per 8 h, after the amortised round-trip fees of both legs


def oi_weighted_funding(points: Iterable[FundingPoint]) -> dict[str, float]:
    """Per base: sum(rate_8h x OI) / sum(OI) over instruments with a known, positive OI."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for p in points:
        oi = p.open_interest_usd
        if oi is None or not oi > 0.0:
            continue
        num[p.base] = num.get(p.base, 0.0) + p.rate_8h * oi
        den[p.base] = den.get(p.base, 0.0) + oi
    return {b: num[b] / den[b] for b in num}


def spread_fee_bp_per_8h(fee_long_bp: float, fee_short_bp: float, holding_period_hours: float) -> float:
    """Open and close on both legs (2 x fee per exchange), amortised over the holding period, per 8 h."""
    return 2.0 * (fee_long_bp + fee_short_bp) * EIGHT_HOURS / (holding_period_hours * 3600.0)


def funding_spreads(points: Iterable[FundingPoint], holding_period_hours: float, top_n: int) -> list[Spread]:
    """Best long/short exchange pairs per base.

    For each base and ordered pair of distinct exchanges, short the instrument with the highest
    8 h rate on ``short_exchange`` and long the one with the lowest on ``long_exchange``:
    gross = (rate_short - rate_long) x 1e4 bp per 8 h; net = gross - :func:`spread_fee_bp_per_8h`.
    Only pairs with a positive gross spread are kept, at most ``top_n`` per base, best net first.
    """
    hi: dict[tuple[str, str], FundingPoint] = {}  # (base, exchange) -> highest rate (the short leg)
    lo: dict[tuple[str, str], FundingPoint] = {}  # (base, exchange) -> lowest rate (the long leg)
    for p in points:
        k = (p.base, p.exchange)
        if k not in hi or p.rate_8h > hi[k].rate_8h:
            hi[k] = p
        if k not in lo or p.rate_8h < lo[k].rate_8h:
            lo[k] = p
    by_base: dict[str, list[str]] = {}
    for base, ex in hi:
        by_base.setdefault(base, []).append(ex)
    per_base: dict[str, list[Spread]] = {}
    for base, exchanges in by_base.items():
        for short_ex in exchanges:
            s = hi[(base, short_ex)]
            for long_ex in exchanges:
                if long_ex == short_ex:
                    continue
                lg = lo[(base, long_ex)]
                gross = (s.rate_8h - lg.rate_8h) * BP
                if gross <= 0.0:
                    continue
                net = gross - spread_fee_bp_per_8h(lg.fee_bp, s.fee_bp, holding_period_hours)
                per_base.setdefault(base, []).append(Spread(base, long_ex, short_ex, gross, net))
    out: list[Spread] = []
    for base in sorted(per_base):
        ranked = sorted(per_base[base], key=lambda x: (-x.net_bp, x.long_exchange, x.short_exchange))
        out.extend(ranked[:top_n])
    return out
