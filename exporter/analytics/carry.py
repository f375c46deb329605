"""Funding accrual and net carry (APY) of a position, optionally hedged. Pure functions.

Sign convention on every exchange: a positive funding rate means longs pay shorts. Payments are
from the position holder's point of view: received > 0, paid < 0.

Net APY (percent) = (funding received - funding paid - fees - borrow interest - gas)
                    / locked capital / years, where

* ``realized``: funding actually accrued since the position opened, fees and gas paid so far,
  borrow interest = APR x capital x years open;
* ``projected``: funding for one year at the *current* rate of every perp leg, each scaled with
  its own funding interval (1 h, 4 h, 8 h; Deribit 8 h-equivalent), minus one year of borrow
  interest, minus fees and gas amortised over the holding period (so one-off costs count once
  per holding period, as in ``fr_edge_bp``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exporter.model import EIGHT_HOURS, SECONDS_PER_YEAR, Side


def side_sign(side: Side) -> float:
    return 1.0 if side is Side.LONG else -1.0


def funding_payment(side: Side, notional_usd: float, rate: float) -> float:
    """One settlement: longs pay ``rate x notional`` when the rate is positive, shorts receive it."""
    return -side_sign(side) * abs(notional_usd) * rate


def leg_pnl(side: Side, size: float, entry_price: float, mark: float) -> float:
    """Unrealised PnL (USD) of one leg of ``size`` base coin: ``side x size x (mark - entry)``.

    The same for an inverse contract valued in USD at the mark (its face value is size x entry)."""
    return side_sign(side) * size * (mark - entry_price)


def total_pnl(basis_pnl_usd: float, net_funding_usd: float, fees_usd: float) -> float:
    """A carry's total PnL: basis PnL + net funding - fees (a negative fee, a rebate, adds)."""
    return basis_pnl_usd + net_funding_usd - fees_usd


def continuous_funding(side: Side, notional_usd: float, rate_8h: float, seconds: float) -> float:
    """Deribit: funding accrues continuously at the 8 h-equivalent rate, pro rata in time."""
    return funding_payment(side, notional_usd, rate_8h) * max(seconds, 0.0) / EIGHT_HOURS


def borrow_interest(capital_usd: float, apr: float, seconds: float) -> float:
    return capital_usd * apr * max(seconds, 0.0) / SECONDS_PER_YEAR


def net_apy_realized_pct(
    funding_pnl_usd: float,
    fees_usd: float,
    gas_usd: float,
    borrow_apr: float,
    capital_usd: float,
    elapsed_s: float,
    min_elapsed_s: float = 3600.0,
) -> float | None:
    """Realised net APY in percent; ``None`` before ``min_elapsed_s`` (annualising minutes is noise)."""
    if capital_usd <= 0 or elapsed_s < min_elapsed_s:
        return None
    years = elapsed_s / SECONDS_PER_YEAR
    net = funding_pnl_usd - fees_usd - gas_usd - borrow_interest(capital_usd, borrow_apr, elapsed_s)
    return net / capital_usd / years * 100.0


@dataclass(frozen=True, slots=True)
class PerpLeg:
    """One perp leg for the projection: its side, USD notional, current rate and own interval."""

    side: Side
    notional_usd: float
    rate: float  # per funding interval (Deribit: the 8 h-equivalent rate)
    interval_s: float  # Deribit: 28800


def annual_funding_usd(legs: Sequence[PerpLeg]) -> float:
    total = 0.0
    for leg in legs:
        if leg.interval_s > 0:
            total += funding_payment(leg.side, leg.notional_usd, leg.rate) * SECONDS_PER_YEAR / leg.interval_s
    return total


def net_apy_projected_pct(
    legs: Sequence[PerpLeg],
    fees_usd: float,
    gas_usd: float,
    borrow_apr: float,
    capital_usd: float,
    holding_period_s: float,
) -> float | None:
    if capital_usd <= 0 or holding_period_s <= 0:
        return None
    one_off_per_year = (fees_usd + gas_usd) * SECONDS_PER_YEAR / holding_period_s
    net = annual_funding_usd(legs) - one_off_per_year - capital_usd * borrow_apr
    return net / capital_usd * 100.0
