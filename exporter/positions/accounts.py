"""The exchanges as positions see them: one adapter per exchange, the account reads and their counts.

Holds the per-exchange :class:`~exporter.rest.accounts.ExchangeAccount` adapters (on the exporter's
shared REST clients, or on its own for an exchange it was not given), the read-only keys, the last
positions each account reported (stale after ``3 x poll_seconds``, min 60 s) and the
``fr_position_account_reads_total`` / ``..._failures_total`` counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping

from exporter.config import Config
from exporter.feeds import feed_for
from exporter.feeds.account_facts import facts_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, base_of
from exporter.positions.model import OKX_CT_VAL_FALLBACK, Position, from_account
from exporter.rest.accounts import ACCOUNT_CLASSES, AccountError, ExchangeAccount
from exporter.rest.client import RestClient
from exporter.rest.endpoints import ExchangeRest, rest_api_for
from exporter.rest.signing import ApiKey
from exporter.state import MarketState

log = logging.getLogger("exporter.positions")


class Accounts:
    def __init__(
        self,
        config: Config,
        state: MarketState,
        keys: Mapping[Exchange, ApiKey],
        rest: Mapping[Exchange, ExchangeRest],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.state = state
        self.keys = dict(keys)
        self.clock = clock
        self._rest = dict(rest)
        self._own_clients: list[RestClient] = []
        self._adapters: dict[Exchange, ExchangeAccount] = {}
        self._read: dict[Exchange, tuple[float, list[Position]]] = {}
        self.stale_after = max(3 * config.position_settings.poll_seconds, 60.0)
        self.reads: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        # sharded exporters: an account position belongs to the shard of its base (None: all)
        self.owns: Callable[[str], bool] | None = None

    def adapter(self, ex: Exchange) -> ExchangeAccount:
        acct = self._adapters.get(ex)
        if acct is None:
            api = self._rest.get(ex)
            if api is None:
                client = RestClient(ex, self.config.urls_for(ex)[1], self.state, clock=self.clock)
                self._own_clients.append(client)
                api = rest_api_for(ex, client, feed_for(ex), FeedContext(exchange=ex, instruments={}))
            acct = self._adapters[ex] = ACCOUNT_CLASSES[ex](api, self.keys.get(ex), self.clock)
        return acct

    async def aclose(self) -> None:
        for client in self._own_clients:
            await client.aclose()
        self._own_clients.clear()
        self._adapters.clear()

    def contract_size(self, ex: Exchange, instrument: str) -> float:
        """Base coin per contract where positions count contracts (OKX ctVal), else 1."""
        if not facts_for(ex).sizes_in_contracts:
            return 1.0
        acct = self._adapters.get(ex)
        if acct is not None and instrument in acct.contract_sizes:
            return acct.contract_sizes[instrument]
        st = self.state.instruments.get((ex, instrument)) or self.state.futures.get((ex, instrument))
        if st is not None and st.info.contract_size and st.info.contract_size != 1.0:
            return st.info.contract_size
        return OKX_CT_VAL_FALLBACK.get(instrument, 1.0)

    async def poll(self, closed: Callable[[str], None]) -> None:
        """Read every account with a key; ``closed(name)`` for a position the account no longer has."""
        for ex in self.keys:
            self.reads[ex.value] += 1

            def size(inst: str, ex: Exchange = ex) -> float:
                return self.contract_size(ex, inst)

            try:
                read = await self.adapter(ex).positions(size)
            except AccountError as exc:
                self.failures[(ex.value, exc.reason)] += 1
                log.warning("%s", exc)
                continue
            self.put(ex, self.clock(), [from_account(a) for a in read], closed)

    def put(self, ex: Exchange, at: float, got: list[Position], closed: Callable[[str], None] | None = None) -> None:
        owns = self.owns
        if owns is not None:
            got = [p for p in got if owns(self._base(p))]
        for gone in {p.name for p in self._read.get(ex, (0.0, []))[1]} - {p.name for p in got}:
            log.info("account position closed: %s", gone)
            if closed is not None:
                closed(gone)
        self._read[ex] = (at, got)

    def _base(self, p: Position) -> str:
        st = self.state.instruments.get((p.exchange, p.instrument))
        return st.info.base if st is not None else base_of(p.exchange, p.instrument)[0]

    def positions(self, ex: Exchange | None = None) -> list[Position]:
        """Positions of the accounts read recently enough (all exchanges, or ``ex``)."""
        out: list[Position] = []
        for e, (at, ps) in self._read.items():
            if (ex is None or e is ex) and self.clock() - at <= self.stale_after:
                out.extend(ps)
        return out

    def mark(self, ex: Exchange, instrument: str) -> float | None:
        """The mark an account reported with a position on the instrument (when the stream has none)."""
        return next((p.mark_price for p in self.positions(ex) if p.instrument == instrument and p.mark_price), None)
