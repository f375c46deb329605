"""The funding ledger: funding accrued per position and leg, exactly once per settlement.

Two ways funding is charged: at settlements (Binance, Bybit, OKX: one payment per settlement,
``funding_payment`` at that settlement's rate and mark) and continuously (Deribit: pro rata in
time at the 8 h-equivalent rate). The SQLite :class:`~exporter.positions.store.AccrualStore` is the
truth (it survives restarts and refuses a second row per settlement); the dictionaries here only
save a query per settlement per tick.

Settlements come from two sources that must count once: the stream's settlement window in
``MarketState`` and the REST funding history (the same parser as the market backfill, which
also carries Binance's mark price at the settlement). Their times differ by milliseconds, so
both are keyed by :func:`settlement_key`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from exporter.analytics.carry import continuous_funding, funding_payment
from exporter.model import Exchange, FundingSettlement, Side
from exporter.positions.store import AccrualStore

log = logging.getLogger("exporter.positions")

SETTLEMENT_KEY_SECONDS = 60.0  # settlements are >= 1 h apart; REST times carry a few ms of jitter
CONTINUOUS_MIN_PERIOD_SECONDS = 60.0

# (settlement time, rate per interval, mark price at the settlement or None)
Settlement = tuple[float, float, float | None]
Totals = tuple[float, float, float, int]  # net, received, paid, accruals


def settlement_key(t: float) -> float:
    """One key per settlement whatever source reported it (stream rollover vs REST fundingTime)."""
    return round(t / SETTLEMENT_KEY_SECONDS) * SETTLEMENT_KEY_SECONDS


class FundingLedger:
    def __init__(self, store: AccrualStore) -> None:
        self.store = store
        self._accrued: dict[tuple[str, str], set[float]] = {}
        self._last_accrual: dict[tuple[str, str], float] = {}
        self._totals: dict[str, list[float]] = {k: list(v) for k, v in store.aggregates().items()}
        # net funding since the current opening (the realised APY's numerator): an account position
        # that closed and reopened under the same name must not carry the old one's funding
        self._since: dict[str, tuple[float, float]] = {}
        self._history: dict[tuple[Exchange, str], dict[float, Settlement]] = {}

    # ---- settlements -----------------------------------------------------------------------

    def add_history(self, settlements: Iterable[FundingSettlement]) -> None:
        """Settled funding read from REST (kept with the settlement's mark where given)."""
        for s in settlements:
            known = self._history.setdefault((s.exchange, s.instrument), {})
            known[settlement_key(s.funding_time)] = (s.funding_time, s.rate, s.mark_price)

    def last_history_time(self, ex: Exchange, instrument: str) -> float | None:
        known = self._history.get((ex, instrument))
        return max(t for t, _, _ in known.values()) if known else None

    def settlements(
        self, ex: Exchange, instrument: str, stream: Iterable[tuple[float, float]]
    ) -> dict[float, Settlement]:
        """The stream's (time, rate) settlements and REST history, one entry per settlement."""
        out: dict[float, Settlement] = {settlement_key(t): (t, rate, None) for t, rate in stream}
        out.update(self._history.get((ex, instrument), {}))  # REST carries the mark price (Binance)
        return out

    # ---- accrual ---------------------------------------------------------------------------

    def accrue_settled(
        self,
        name: str,
        leg: str,
        ex: Exchange,
        instrument: str,
        side: Side,
        size: float,
        opened: float,
        now: float,
        settlements: dict[float, Settlement],
        price_now: float,
    ) -> None:
        """Every settlement after ``opened`` not yet accrued, at its own mark (else ``price_now``)."""
        done = self._accrued.get((name, leg))
        if done is None:
            done = self._accrued[(name, leg)] = self.store.keys(name, leg)
        for key_t, (t, rate, price) in sorted(settlements.items()):
            if t <= opened or key_t in done:
                continue
            px = price or price_now
            amount = funding_payment(side, size * px, rate)
            done.add(key_t)
            if self.store.accrue(name, leg, ex.value, instrument, key_t, rate, px, size, amount, now):
                self._count(name, amount)
                log.info("funding accrued: %s %s %s at %.0f rate %g: %.4f USD", name, leg, instrument, t, rate, amount)

    def accrue_continuous(
        self,
        name: str,
        leg: str,
        ex: Exchange,
        instrument: str,
        side: Side,
        size: float,
        opened_at: float | None,
        now: float,
        rate_8h: float | None,
        price: float,
    ) -> None:
        """Funding since the last accrual at the current 8 h-equivalent rate (None: unknown, wait)."""
        # Funding before the exporter first saw the position is unknown here; start there.
        last = self._last_accrual.get((name, leg))
        if last is None:
            last = self.store.last_time(name, leg) or 0.0
            self._last_accrual[(name, leg)] = last
        # first_seen restarts when a closed account position reappears: its closed period is not accrued
        start = max(last, opened_at or 0.0, self.store.first_seen(name, now))
        if now - start < CONTINUOUS_MIN_PERIOD_SECONDS or rate_8h is None:
            return
        amount = continuous_funding(side, size * price, rate_8h, now - start)
        if self.store.accrue(
            name, leg, ex.value, instrument, now, rate_8h, price, size, amount, now, period_start=start
        ):
            self._count(name, amount)
        self._last_accrual[(name, leg)] = now

    def _count(self, name: str, amount: float) -> None:
        agg = self._totals.setdefault(name, [0.0, 0.0, 0.0, 0])
        if name in self._since:  # every new accrual is after the current opening
            opened, net = self._since[name]
            self._since[name] = (opened, net + amount)
        agg[0] += amount
        agg[1] += max(amount, 0.0)
        agg[2] += max(-amount, 0.0)
        agg[3] += 1

    # ---- reads -----------------------------------------------------------------------------

    def totals(self, name: str) -> Totals:
        net, received, paid, n = self._totals.get(name, (0.0, 0.0, 0.0, 0))
        return net, received, paid, int(n)

    def net_since(self, name: str, opened: float) -> float:
        """Net funding accrued after ``opened`` (the current opening of the position)."""
        since = self._since.get(name)
        if since is None or since[0] != opened:
            since = self._since[name] = (opened, self.store.net_since(name, opened))
        return since[1]
