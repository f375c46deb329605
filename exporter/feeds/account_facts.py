"""The account parsers per exchange and their static facts (``FACTS``, ``adl_rank``)."""

from __future__ import annotations

from types import ModuleType

from exporter.feeds import binance_account, bybit_account, deribit_account, okx_account
from exporter.feeds.account_fields import AccountFacts
from exporter.model import Exchange

ACCOUNT_PARSERS: dict[Exchange, ModuleType] = {
    Exchange.BINANCE: binance_account,
    Exchange.BYBIT: bybit_account,
    Exchange.OKX: okx_account,
    Exchange.DERIBIT: deribit_account,
}


def facts_for(exchange: Exchange) -> AccountFacts:
    facts: AccountFacts = ACCOUNT_PARSERS[exchange].FACTS
    return facts


def adl_rank(exchange: Exchange, raw: float | None) -> float | None:
    """The exchange's ADL indicator normalised to 0 (safest) .. 4 (first in line)."""
    rank: float | None = ACCOUNT_PARSERS[exchange].adl_rank(raw)
    return rank
