"""Positions service: orchestration of account reads, funding accrual and the views.

Runs on the exporter's event loop (``await run(stop)``). Each cycle: read the accounts with
read-only keys and the risk facts (tiers, funding history) through the exchange adapters
(``rest/accounts.py``: the same REST clients, rate-limit gates and ``fr_rest_*`` counting as the
market data), accrue funding in the ledger (``ledger.py``) and rebuild an immutable snapshot of
views (``view.py``) that the collector (``metrics/positions.py``) and ``/api/state`` read from any
thread. Where things are: docs/positions.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from exporter.config import Config
from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, Side, Tier
from exporter.positions.config_source import (
    PositionConfigError,
    check_leverage,
    load_positions,
    recheck,
    unknown_instrument,
)
from exporter.positions.credentials import read_keys
from exporter.positions.ledger import FundingLedger
from exporter.positions.market import MarketReader
from exporter.positions.model import OKX_CT_VAL_FALLBACK, Position, from_account, normalise_adl
from exporter.positions.store import AccrualStore
from exporter.positions.tiers import TierBook
from exporter.positions.view import PositionView, ViewInputs, ViewSettings, api_row, build_view
from exporter.rest.accounts import ACCOUNT_CLASSES, AccountError, ExchangeAccount
from exporter.rest.client import RestClient
from exporter.rest.endpoints import ExchangeRest, rest_api_for
from exporter.state import MarketState

log = logging.getLogger("exporter.positions")

FUNDING_HISTORY_MAX_S = 32 * 86400.0  # how far back settled funding is read for a new position


class PositionService:
    def __init__(
        self,
        config: Config,
        state: MarketState,
        *,
        clock: Callable[[], float] | None = None,
        rest: Mapping[Exchange, ExchangeRest] | None = None,
        environ: Mapping[str, str] | None = None,
        tick_seconds: float = 1.0,
        vol_sample_seconds: float | None = None,
    ) -> None:
        """``rest``: the exporter's REST endpoints per exchange (shared clients and gates); the
        service makes its own for any exchange not given (tests, tools)."""
        self.config = config
        self.state = state
        self.settings = s = config.position_settings
        self.clock = clock or state.clock
        self.tick_seconds = tick_seconds
        try:
            self.store = AccrualStore(s.db_path)
        except (sqlite3.Error, OSError) as exc:
            # keep exporting: accruals then live in memory only (and restart from zero)
            log.error("positions: cannot open %s (%s); funding accruals will not persist", s.db_path, exc)
            self.store = AccrualStore(":memory:")
        self.ledger = FundingLedger(self.store)
        self.market = MarketReader(config, state, self.clock, vol_sample_seconds or s.vol_sample_seconds)
        self.tiers = TierBook(config, self.clock)
        self.view_settings = ViewSettings(s.hit_horizons_hours, s.shocks_pct, config.analytics.holding_period_hours)
        self._rest = dict(rest or {})
        self._own_clients: list[RestClient] = []
        self._adapters: dict[Exchange, ExchangeAccount] = {}
        self._history_from: dict[tuple[Exchange, str], float] = {}
        self._account: dict[Exchange, tuple[float, list[Position]]] = {}
        self._last_poll = -math.inf
        self._views: tuple[PositionView, ...] = ()
        self.config_errors: list[PositionConfigError] = []
        self.errors_by_field: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        self._keys = read_keys(config, environ)
        self.positions = self._load_config_positions()
        follow_all = {ex for ex, ec in config.exchanges.items() if ec.all_perpetuals}
        self._check_listing = any(p.exchange in follow_all for p in self.positions)
        self._health: tuple[dict[str, int], dict[str, int], dict[tuple[str, str], int]] = (
            dict(self.errors_by_field),
            {},
            {},
        )
        log.info("positions: %d configured, %d skipped", len(self.positions), len(self.config_errors))

    # ---- setup and lookups -------------------------------------------------------------------

    def _load_config_positions(self) -> list[Position]:
        def known(ex: Exchange) -> set[str] | None:
            listed = {inst for (e, inst) in self.state.instruments if e is ex}
            ec = self.config.exchanges.get(ex)
            if ec is not None and ec.all_perpetuals and not listed:
                return None  # the instrument list is loaded later; checked then
            return listed | set(self.config.instruments_for(ex))

        good, errors = load_positions(self.config, known, self.tiers_for, self.contract_size)
        # Entries that failed validation when the file was loaded (negative size...) were left out.
        for issue in self.config.position_issues:
            self._config_error(PositionConfigError(issue.index, issue.name, issue.field, issue.message))
        for e in errors:
            self._config_error(e)
        return good

    def _config_error(self, e: PositionConfigError) -> None:
        self.config_errors.append(e)
        self.errors_by_field[e.field] += 1
        log.error("position skipped: %s", e)

    def _recheck(self, problem: Callable[[Position], tuple[str, str] | None]) -> None:
        self.positions, errors = recheck(self.config, self.positions, problem)
        for e in errors:
            self._config_error(e)

    def adapter(self, ex: Exchange) -> ExchangeAccount:
        acct = self._adapters.get(ex)
        if acct is None:
            api = self._rest.get(ex)
            if api is None:
                client = RestClient(ex, self.config.urls_for(ex)[1], self.state, clock=self.clock)
                self._own_clients.append(client)
                api = rest_api_for(ex, client, feed_for(ex), FeedContext(exchange=ex, instruments={}))
            acct = self._adapters[ex] = ACCOUNT_CLASSES[ex](api, self._keys.get(ex), self.clock)
        return acct

    def contract_size(self, ex: Exchange, instrument: str) -> float:
        if not ACCOUNT_CLASSES[ex].sizes_in_contracts:
            return 1.0
        acct = self._adapters.get(ex)
        if acct is not None and instrument in acct.contract_sizes:
            return acct.contract_sizes[instrument]
        st = self.state.instruments.get((ex, instrument))
        if st is not None and st.info.contract_size and st.info.contract_size != 1.0:
            return st.info.contract_size
        return OKX_CT_VAL_FALLBACK.get(instrument, 1.0)

    def tiers_for(self, p: Position) -> list[Tier]:
        return self.tiers.for_position(p)

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except Exception:  # one bad cycle must not end the service
                    log.exception("positions cycle failed")
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.tick_seconds)
                except TimeoutError:
                    pass
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        for client in self._own_clients:
            await client.aclose()
        self._own_clients.clear()
        self._adapters.clear()
        self.store.close()

    async def step(self) -> None:
        """One cycle: account and public reads when due, then accrue and rebuild the snapshot."""
        now = self.clock()
        if now - self._last_poll >= self.settings.poll_seconds:
            self._last_poll = now
            if self.settings.from_accounts:
                await self.poll_accounts()
            try:
                await self.poll_public()
            except Exception as exc:  # an odd public body must not freeze the snapshot (stale gaps)
                log.warning("positions: public read failed (%s)", type(exc).__name__)
        self.tick()

    async def poll_accounts(self) -> None:
        for ex in self._keys:
            self.reads[ex.value] += 1

            def size(inst: str, ex: Exchange = ex) -> float:
                return self.contract_size(ex, inst)

            try:
                read = await self.adapter(ex).positions(size)
            except AccountError as exc:
                self.failures[(ex.value, exc.reason)] += 1
                log.warning("%s", exc)
                continue
            got = [from_account(a) for a in read]
            for gone in {p.name for p in self._account.get(ex, (0.0, []))[1]} - {p.name for p in got}:
                log.info("account position closed: %s", gone)
                self.store.forget_first_seen(gone)
            self._account[ex] = (self.clock(), got)

    async def poll_public(self) -> None:
        """Maintenance tiers (hourly) and settled funding (each poll) for every position's instruments."""
        now = self.clock()
        wanted: dict[tuple[Exchange, str, str], float] = {}  # -> earliest opening that needs its funding
        for p in self.all_positions():
            legs = [(p.exchange, p.instrument, p.margin_mode)]
            if p.hedge is not None and p.hedge.kind == "perp" and p.hedge.exchange and p.hedge.instrument:
                legs.append((p.hedge.exchange, p.hedge.instrument, "isolated"))
            for k in legs:
                wanted[k] = min(wanted.get(k, math.inf), self._opened(p, now))
        tiers_changed = False
        for (ex, inst, mode), opened in sorted(wanted.items()):
            acct = self.adapter(ex)
            key = self.tiers.key(ex, inst, mode)
            if self.tiers.due(key):
                try:
                    tiers_changed |= self.tiers.put(key, await acct.tiers(inst, mode))
                except AccountError as exc:
                    if acct.tiers_need_key:  # a signed read: counted with the account reads
                        self.failures[(ex.value, exc.reason)] += 1
                    log.warning("maintenance tiers for %s %s: %s", ex.value, inst, exc)
            await self._read_history(acct, inst, opened, now)
        if tiers_changed:  # a configured leverage above the real tier maximum is an error too
            self._recheck(lambda p: ("leverage", m) if (m := check_leverage(p, self.tiers_for(p))) else None)

    async def _read_history(self, acct: ExchangeAccount, inst: str, opened: float, now: float) -> None:
        """Settled funding since the earliest opening that needs it, then only what is new."""
        k = (acct.exchange, inst)
        need = max(opened, now - FUNDING_HISTORY_MAX_S)
        covered = self._history_from.get(k)
        last = self.ledger.last_history_time(*k)
        start = need if covered is None or need < covered or last is None else max(need, last)
        try:
            # end a day ahead: a settlement carries its scheduled time, a forced one may be ahead of ours
            self.ledger.add_history(await acct.funding_history(inst, start, now + 86400.0))
        except AccountError as exc:
            log.warning("funding history for %s %s: %s", acct.exchange.value, inst, exc)
            return
        self._history_from[k] = need if covered is None else min(covered, need)

    # ---- accrual and snapshot ----------------------------------------------------------------

    def account_positions(self, ex: Exchange | None = None) -> list[Position]:
        stale_after = max(3 * self.settings.poll_seconds, 60.0)
        out: list[Position] = []
        for e, (at, ps) in self._account.items():
            if (ex is None or e is ex) and self.clock() - at <= stale_after:
                out.extend(ps)
        return out

    def all_positions(self) -> list[Position]:
        return [*self.positions, *self.account_positions()]

    def _opened(self, p: Position, now: float) -> float:
        seen = self.store.first_seen(p.name, now)
        return p.opened_at if p.opened_at is not None else seen

    def _account_mark(self, ex: Exchange, instrument: str) -> float | None:
        return next(
            (p.mark_price for p in self.account_positions(ex) if p.instrument == instrument and p.mark_price), None
        )

    def add_mark_samples(self, ex: Exchange, instrument: str, samples: Sequence[tuple[float, float]]) -> None:
        """Seed the volatility window (tests, or a backfill of mark prices)."""
        self.market.add_samples(ex, instrument, samples)

    def tick(self) -> None:
        now = self.clock()
        if self._check_listing:
            listed: dict[Exchange, set[str]] = {}
            for e, inst in self.state.instruments:
                listed.setdefault(e, set()).add(inst)
            self._recheck(lambda p: unknown_instrument(self.config, listed.get(p.exchange, set()), p))
        self.market.sample({(p.exchange, p.instrument) for p in self.all_positions()}, now, self._account_mark)
        views = []
        for p in self.all_positions():
            try:
                views.append(self._view(p, now))
            except Exception:
                log.exception("position %s: cannot compute", p.name)
        self._views = tuple(views)
        self._health = (dict(self.errors_by_field), dict(self.reads), dict(self.failures))

    def _accrue(
        self,
        p: Position,
        leg: str,
        ex: Exchange,
        inst: str,
        size: float,
        opened: float,
        now: float,
        price: float,
        side: Side,
    ) -> None:
        if ACCOUNT_CLASSES[ex].has_funding_history:
            settled = self.ledger.settlements(ex, inst, self.market.stream_settlements(ex, inst))
            price_now = self.market.mark(ex, inst) or price
            self.ledger.accrue_settled(p.name, leg, ex, inst, side, size, opened, now, settled, price_now)
        else:  # continuous funding at the 8 h-equivalent of the current rate
            r = self.market.rate(ex, inst)
            rate_8h = r[0] * 8 * 3600.0 / r[1] if r is not None else None
            price_now = self.market.mark(ex, inst) or price
            self.ledger.accrue_continuous(p.name, leg, ex, inst, side, size, p.opened_at, now, rate_8h, price_now)

    def _view(self, p: Position, now: float) -> PositionView:
        opened = self._opened(p, now)
        mark = self.market.mark(p.exchange, p.instrument) or (p.mark_price if p.source == "account" else None)
        self._accrue(p, "main", p.exchange, p.instrument, p.size, opened, now, mark or p.entry_price, p.side)
        h = p.hedge
        if h is not None and h.kind == "perp" and h.exchange is not None and h.instrument:
            hmark = self.market.mark(h.exchange, h.instrument) or h.entry_price
            self._accrue(p, "hedge", h.exchange, h.instrument, h.size, opened, now, hmark, h.side)
        ec = self.config.exchanges.get(p.exchange)
        inputs = ViewInputs(
            now=now,
            opened=opened,
            mark=mark,
            tiers=self.tiers_for(p),
            taker_fee=(ec.fees.taker_bp if ec is not None else 5.0) / 1e4
            if ACCOUNT_CLASSES[p.exchange].liq_includes_taker_fee
            else 0.0,
            volatility=self.market.volatility(p.exchange, p.instrument, now),
            funding=self.ledger.totals(p.name),
            net_since_opening=self.ledger.net_since(p.name, opened) if p.capital_usd() else 0.0,
            legs=self.market.carry_legs(p, mark),
            adl_rank=normalise_adl(p.exchange, p.adl_raw),
        )
        return build_view(p, inputs, self.view_settings)

    # ---- readers (any thread) ----------------------------------------------------------------

    def views(self) -> Sequence[PositionView]:
        return self._views

    def health(self) -> tuple[Mapping[str, int], Mapping[str, int], Mapping[tuple[str, str], int]]:
        return self._health  # copies made on the event loop, so a scrape never iterates a changing dict

    def api_rows(self) -> list[dict[str, Any]]:
        """Rows for /api/state "positions" (no secrets: only what /metrics shows)."""
        return [api_row(v) for v in self._views]


__all__ = ["PositionService"]
