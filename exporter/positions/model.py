"""A position as the positions service sees it, whether configured or read from an account."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.feeds.account_facts import adl_rank
from exporter.feeds.okx_account import CT_VAL_FALLBACK as OKX_CT_VAL_FALLBACK
from exporter.model import AccountPosition, Exchange, Side, Tier

__all__ = ["OKX_CT_VAL_FALLBACK", "Hedge", "Position", "from_account", "normalise_adl"]


@dataclass(frozen=True, slots=True)
class Hedge:
    kind: str  # "spot" | "perp"
    side: Side  # opposite of the main leg
    size: float  # base coin
    entry_price: float
    fees_usd: float = 0.0
    exchange: Exchange | None = None  # perp hedge only
    instrument: str | None = None


@dataclass(slots=True)
class Position:
    name: str
    exchange: Exchange
    instrument: str
    side: Side
    size: float  # base coin, > 0
    entry_price: float
    margin_mode: str = "isolated"  # "isolated" | "cross"
    margin_usd: float | None = None  # isolated margin, or cross wallet balance; None: unknown
    leverage: float | None = None
    opened_at: float | None = None  # Unix seconds; None: first seen by the service
    fees_usd: float = 0.0
    borrow_apr: float = 0.0
    gas_usd: float = 0.0
    locked_capital_usd: float | None = None
    hedge: Hedge | None = None
    source: str = "config"  # "config" | "account"
    inverse: bool = False  # Deribit BTC-PERPETUAL / ETH-PERPETUAL
    contract_size: float = 1.0  # OKX ctVal (base per contract)
    # read from the account (None for configured positions)
    exchange_liq_price: float | None = None
    adl_raw: float | None = None
    mark_price: float | None = None
    tiers: list[Tier] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.name

    def capital_usd(self) -> float | None:
        """Locked capital: configured, else margin of the perp leg plus the hedge's capital."""
        if self.locked_capital_usd is not None:
            return self.locked_capital_usd
        main = self.margin_usd
        if main is None and self.leverage:
            main = self.size * self.entry_price / self.leverage
        if main is None:
            return None
        if self.hedge is not None:
            notional = self.hedge.size * self.hedge.entry_price
            # a spot hedge ties up its full value; a perp hedge its margin at the main leg's leverage
            main += notional if self.hedge.kind == "spot" else notional / (self.leverage or 1.0)
        return main


def from_account(a: AccountPosition) -> Position:
    """An account position as the service tracks it, named ``exchange:instrument:side``."""
    return Position(
        name=f"{a.exchange.value}:{a.instrument}:{a.side.value}",
        exchange=a.exchange,
        instrument=a.instrument,
        side=a.side,
        size=a.size,
        entry_price=a.entry_price,
        margin_mode=a.margin_mode,
        margin_usd=a.margin_usd,
        leverage=a.leverage,
        opened_at=a.opened_at,
        source="account",
        inverse=a.inverse,
        contract_size=a.contract_size,
        exchange_liq_price=a.liquidation_price,
        adl_raw=a.adl_raw,
        mark_price=a.mark_price,
    )


def normalise_adl(exchange: Exchange, raw: float | None) -> float | None:
    """Each exchange's ADL indicator mapped to 0 (safest) .. 4 (first in line): ``adl_rank`` of its
    account parser (Binance 0..4 as is, Bybit 1..5 minus 1, OKX 0..5 x 4/5, Deribit none)."""
    return adl_rank(exchange, raw)
