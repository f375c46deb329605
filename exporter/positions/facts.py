"""Risk facts positions need from the exchanges besides the account: tiers and settled funding.

Each poll, for every instrument a position (or its perp hedge) is on: the maintenance tiers when
due (hourly; Binance's brackets need the key, a failure is counted with the account reads), and
the settled funding since the earliest opening that needs it (the whole holding period, paged
through: a long downtime or a back-dated opening is accrued in full, each settlement at its own mark
where the exchange's history gives one), then only what is new. Both through the exchange
adapters, so paced and counted like market data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

from exporter.model import Exchange
from exporter.positions.accounts import Accounts
from exporter.positions.ledger import FundingLedger
from exporter.positions.model import Position
from exporter.positions.tiers import TierBook
from exporter.rest.accounts import AccountError, ExchangeAccount

log = logging.getLogger("exporter.positions")

HISTORY_AHEAD_S = 86400.0  # a settlement carries its scheduled time; a forced one may be ahead of ours


class RiskFacts:
    def __init__(self, accounts: Accounts, tiers: TierBook, ledger: FundingLedger) -> None:
        self.accounts = accounts
        self.tiers = tiers
        self.ledger = ledger
        self._history_from: dict[tuple[Exchange, str], float] = {}

    async def poll(self, positions: Iterable[Position], opened: Callable[[Position], float], now: float) -> bool:
        """Read what is due for ``positions``; True when new tiers arrived."""
        wanted: dict[tuple[Exchange, str, str], float] = {}  # -> earliest opening that needs its funding
        for p in positions:
            legs = [(p.exchange, p.instrument, p.margin_mode)]
            if p.hedge is not None and p.hedge.kind == "perp" and p.hedge.exchange and p.hedge.instrument:
                legs.append((p.hedge.exchange, p.hedge.instrument, "isolated"))
            for k in legs:
                wanted[k] = min(wanted.get(k, math.inf), opened(p))
        changed = False
        for (ex, inst, mode), since in sorted(wanted.items()):
            acct = self.accounts.adapter(ex)
            key = self.tiers.key(ex, inst, mode)
            if self.tiers.due(key):
                try:
                    changed |= self.tiers.put(key, await acct.tiers(inst, mode))
                except AccountError as exc:
                    if acct.facts.tiers_need_key:  # a signed read: counted with the account reads
                        self.accounts.failures[(ex.value, exc.reason)] += 1
                    log.warning("maintenance tiers for %s %s: %s", ex.value, inst, exc)
            await self._history(acct, inst, since, now)
        return changed

    async def _history(self, acct: ExchangeAccount, inst: str, opened: float, now: float) -> None:
        k = (acct.exchange, inst)
        need = opened  # the whole holding period (was capped at 32 days: realised APY then undercounted)
        covered = self._history_from.get(k)
        last = self.ledger.last_history_time(*k)
        start = need if covered is None or need < covered or last is None else max(need, last)
        try:
            self.ledger.add_history(await acct.funding_history(inst, start, now + HISTORY_AHEAD_S))
        except AccountError as exc:
            log.warning("funding history for %s %s: %s", acct.exchange.value, inst, exc)
            return
        self._history_from[k] = need if covered is None else min(covered, need)
