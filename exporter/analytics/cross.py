"""Cross-exchange funding analytics per base asset: pure functions over per-instrument points.

Every rate here is already normalised to an 8 h interval, so instruments with different funding
intervals (Binance 4 h, OKX 8 h, Bybit 1 h...) compare in the same unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

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


class FundingColumns(NamedTuple):
    """The cross-exchange inputs as columns, one row per fresh instrument (a :class:`FundingPoint`
    each): base and exchange as codes into ``bases`` and ``exchanges``, each sorted, so that code
    order is name order. What a scrape of thousands of instruments hands the column functions below
    instead of an object per instrument."""

    bases: list[str]
    exchanges: list[str]
    base: np.ndarray  # int codes into bases
    exchange: np.ndarray  # int codes into exchanges
    rate_8h: np.ndarray
    open_interest_usd: np.ndarray  # NaN: unknown or stale
    fee_bp: np.ndarray

    @classmethod
    def from_points(cls, points: Sequence[FundingPoint]) -> FundingColumns:
        bases = sorted({p.base for p in points})
        exchanges = sorted({p.exchange for p in points})
        bi = {b: k for k, b in enumerate(bases)}
        ei = {e: k for k, e in enumerate(exchanges)}
        n = len(points)
        return cls(
            bases,
            exchanges,
            np.fromiter((bi[p.base] for p in points), dtype=np.intp, count=n),
            np.fromiter((ei[p.exchange] for p in points), dtype=np.intp, count=n),
            np.array([p.rate_8h for p in points], dtype=np.float64).reshape(n),
            np.array([p.open_interest_usd for p in points], dtype=np.float64).reshape(n),  # None: NaN
            np.array([p.fee_bp for p in points], dtype=np.float64).reshape(n),
        )


def oi_weighted_columns(c: FundingColumns) -> tuple[np.ndarray, np.ndarray]:
    """:func:`oi_weighted_funding` over columns: (the codes of the bases with a value, ascending,
    their values). Each base's sums run over its rows in order from 0.0, as the loop does, so the
    values are the same floats."""
    oi = c.open_interest_usd
    with np.errstate(invalid="ignore"):
        ok = oi > 0.0  # NaN (unknown) is not
    base = c.base[ok]
    nb = len(c.bases)
    num = np.bincount(base, weights=c.rate_8h[ok] * oi[ok], minlength=nb)
    den = np.bincount(base, weights=oi[ok], minlength=nb)
    codes = np.flatnonzero(np.bincount(base, minlength=nb))
    return codes, num[codes] / den[codes]


def _first_by_group(group: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (ascending), the index of its first row by ``key`` (ties: the earlier row)."""
    order = np.lexsort((np.arange(len(group)), key, group))
    g = group[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return g[first], order[first]


def spreads_columns(
    c: FundingColumns, holding_period_hours: float, top_n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`funding_spreads` over columns: (base, long exchange, short exchange codes, gross bp,
    net bp) in the same order (bases in name order, each base's best net first, ties by the
    exchanges' names) and the same floats (the same legs: the highest rate per base and exchange,
    its earliest row on ties, the lowest likewise; the same operations)."""
    ne = max(len(c.exchanges), 1)
    group = c.base * ne + c.exchange
    rate = c.rate_8h
    hi_g, hi_i = _first_by_group(group, -rate)  # the short leg: highest rate
    _, lo_i = _first_by_group(group, rate)  # the long leg: lowest rate (the same groups, same order)
    base, ex = hi_g // ne, hi_g % ne
    # every ordered pair of distinct exchanges within a base: groups sorted by base, so each base's
    # groups are a run; pair each group with every group of its run
    starts = np.flatnonzero(np.r_[True, base[1:] != base[:-1]])
    sizes = np.diff(np.r_[starts, len(base)])
    run = np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    s_idx = np.repeat(np.arange(len(base)), size)  # short leg: each group, once per group of its base
    offset = np.arange(len(s_idx)) - np.repeat(np.cumsum(size) - size, size)
    l_idx = np.repeat(run, size) + offset  # long leg: each group of the same base
    keep = s_idx != l_idx
    s_idx, l_idx = s_idx[keep], l_idx[keep]
    gross = (rate[hi_i[s_idx]] - rate[lo_i[l_idx]]) * BP
    pos = gross > 0.0
    s_idx, l_idx, gross = s_idx[pos], l_idx[pos], gross[pos]
    net = gross - spread_fee_bp_per_8h(c.fee_bp[lo_i[l_idx]], c.fee_bp[hi_i[s_idx]], holding_period_hours)
    b, long_ex, short_ex = base[s_idx], ex[l_idx], ex[s_idx]
    order = np.lexsort((short_ex, long_ex, -net, b))
    b, long_ex, short_ex, gross, net = b[order], long_ex[order], short_ex[order], gross[order], net[order]
    # at most top_n per base: the rank of each row within its base's run
    first = np.flatnonzero(np.r_[True, b[1:] != b[:-1]]) if len(b) else np.empty(0, dtype=np.intp)
    rank = np.arange(len(b)) - np.repeat(first, np.diff(np.r_[first, len(b)]))
    top = rank < top_n
    return b[top], long_ex[top], short_ex[top], gross[top], net[top]
