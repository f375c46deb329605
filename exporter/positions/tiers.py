"""Maintenance tiers per instrument: read from the exchange, else configured, else defaults.

Order of preference for a position: tiers read with it from the account, tiers read from the
exchange (Binance brackets with the key, Bybit/OKX published tables; refreshed hourly), the
exchange's ``maintenance_tiers`` from the configuration, else the built-in defaults (Binance's
published BTCUSDT brackets).
Configured and default tiers are by USD notional; where the exchange's tiers count contracts
(OKX) they are converted at the position's entry price.
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.analytics.risk import DEFAULT_TIERS, tiers_from_caps
from exporter.config import Config
from exporter.feeds.account_facts import facts_for
from exporter.model import Exchange, Tier
from exporter.positions.model import Position

TIERS_REFRESH_SECONDS = 3600.0

TierKey = tuple[Exchange, str, str]  # exchange, instrument, margin mode ("any": not per mode)


class TierBook:
    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self._tiers: dict[TierKey, list[Tier]] = {}
        self._at: dict[TierKey, float] = {}

    @staticmethod
    def key(ex: Exchange, instrument: str, margin_mode: str) -> TierKey:
        return (ex, instrument, margin_mode if facts_for(ex).tiers_per_margin_mode else "any")

    def due(self, key: TierKey) -> bool:
        return key not in self._tiers or self.clock() - self._at.get(key, 0.0) >= TIERS_REFRESH_SECONDS

    def put(self, key: TierKey, tiers: list[Tier] | None) -> bool:
        """Store tiers read from the exchange; False when there were none."""
        if not tiers:
            return False
        self._tiers[key] = tiers
        self._at[key] = self.clock()
        return True

    def for_position(self, p: Position) -> list[Tier]:
        if p.tiers:
            return p.tiers
        for mode in (p.margin_mode, "any"):
            t = self._tiers.get((p.exchange, p.instrument, mode))
            if t:
                return t
        ec = self.config.exchanges.get(p.exchange)
        rows = ec.maintenance_tiers if ec is not None and ec.maintenance_tiers else None
        tiers = tiers_from_caps(rows) if rows else DEFAULT_TIERS
        if facts_for(p.exchange).sizes_in_contracts:
            per_contract = p.contract_size * p.entry_price
            tiers = [
                Tier(t.floor / per_contract, t.cap / per_contract, t.mmr, t.max_leverage, t.deduction) for t in tiers
            ]
        return list(tiers)
