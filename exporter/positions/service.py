"""Positions service: orchestration of account reads, funding accrual and the views.

Runs on the exporter's event loop (``await run(stop)``). Each cycle: read the accounts with
read-only keys (``accounts.py``) and the risk facts, tiers and settled funding (``facts.py``),
all through the exchange adapters of ``rest/accounts.py`` (the market data's REST clients,
rate-limit gates and ``fr_rest_*`` counts); accrue funding in the ledger (``ledger.py``); rebuild
an immutable snapshot of views (``view.py``) that the collector (``metrics/positions.py``) and
``/api/state`` read from any thread. Where things are: docs/positions.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from exporter.config import Config
from exporter.feeds.account_facts import adl_rank, facts_for
from exporter.model import EIGHT_HOURS, Exchange, Tier
from exporter.positions.accounts import Accounts
from exporter.positions.config_source import ConfiguredPositions, PositionConfigError
from exporter.positions.credentials import read_keys
from exporter.positions.facts import RiskFacts
from exporter.positions.history import CandleSource, StressHistory
from exporter.positions.ledger import FundingLedger
from exporter.positions.market import MarketReader
from exporter.positions.model import Position
from exporter.positions.store import AccrualStore
from exporter.positions.tiers import TierBook
from exporter.positions.view import PositionView, ViewInputs, ViewSettings, api_row, build_view
from exporter.rest.endpoints import ExchangeRest
from exporter.state import MarketState

log = logging.getLogger("exporter.positions")


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
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """``rest``: the exporter's REST endpoints per exchange (shared clients and gates); the
        service makes its own for any exchange not given (tests, tools). ``owns``: whether this
        (sharded) exporter follows a base; account positions of other bases are another shard's
        (configured ones are filtered by the caller)."""
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
        self.accounts = Accounts(config, state, read_keys(config, environ), rest or {}, self.clock)
        self.accounts.owns = owns
        self.facts = RiskFacts(self.accounts, self.tiers, self.ledger)
        an = config.analytics
        self.view_settings = ViewSettings(
            s.hit_horizons_hours, s.shocks_pct, an.holding_period_hours, an.points_bp, tuple(s.stress_confidences)
        )
        self.history = StressHistory(s.stress_windows_seconds, s.stress_period_days * 86400.0, self.clock)
        self._history_started = False
        self._refresh: asyncio.Task[None] | None = None
        self._last_poll = -math.inf
        self._views: tuple[PositionView, ...] = ()
        self.configured = ConfiguredPositions(config, self._listed, self.tiers_for, self.accounts.contract_size)
        self._health: tuple[dict[str, int], dict[str, int], dict[tuple[str, str], int]] = (
            dict(self.configured.by_field),
            {},
            {},
        )
        log.info("positions: %d configured, %d skipped", len(self.positions), len(self.config_errors))

    @property
    def positions(self) -> list[Position]:
        """The configured positions that passed their checks."""
        return self.configured.positions

    @property
    def config_errors(self) -> list[PositionConfigError]:
        return self.configured.errors

    def _listed(self, ex: Exchange) -> set[str]:
        # perpetuals and the dated futures followed (term structure) may both be held
        return {inst for (e, inst) in (*self.state.instruments, *self.state.futures) if e is ex}

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
        self.history.cancel()
        if self._refresh is not None:
            self._refresh.cancel()
        await self.accounts.aclose()
        self.store.close()

    async def step(self) -> None:
        """One cycle: account and public reads when due, then accrue and rebuild the snapshot."""
        now = self.clock()
        if now - self._last_poll >= self.settings.poll_seconds:
            self._last_poll = now
            if self.settings.from_accounts:
                await self.accounts.poll(closed=self.store.forget_first_seen)
            try:
                if await self.facts.poll(self.all_positions(), lambda p: self._opened(p, now), now):
                    self.configured.recheck_leverage(self.tiers_for)
            except Exception as exc:  # an odd public body must not freeze the snapshot (stale gaps)
                log.warning("positions: public read failed (%s)", type(exc).__name__)
        await self.update_history(now)
        self.tick()

    async def update_history(self, now: float) -> None:
        """Hold the stress history of exactly the instruments positions hold: backfill a new one from
        the exchange's mark candles, then recompute what is due (in a worker thread).

        At start the first views wait a bounded time (``stress_backfill_wait_seconds``) for the klines
        and the figures, so the first scrape carries them. Afterwards nothing here holds the cycle
        (gaps, buffers, PnL) longer than a tick: a position added later is backfilled in the
        background, and a recomputation that takes longer (many instruments' fits) goes on in the
        background and is published when done."""
        first = not self._history_started
        self._history_started = True
        self.history.hold((p.exchange, p.instrument) for p in self.all_positions())
        started = self.history.start_backfills(self.candle_source, now)
        wait = self.settings.stress_backfill_wait_seconds if first else self.tick_seconds
        deadline = asyncio.get_running_loop().time() + wait
        if started and first:
            await asyncio.wait(started, timeout=wait)
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self.history.refresh(now), name="stress-refresh")
        remaining = max(0.0, deadline - asyncio.get_running_loop().time()) if first else self.tick_seconds
        await asyncio.wait({self._refresh}, timeout=remaining)

    def candle_source(self, ex: Exchange) -> CandleSource | None:
        """The exchange's REST endpoints (shared client, budget and counts) if they serve price candles."""
        return self.accounts.adapter(ex).api

    # ---- accrual and snapshot ----------------------------------------------------------------

    def all_positions(self) -> list[Position]:
        return [*self.positions, *self.accounts.positions()]

    def _opened(self, p: Position, now: float) -> float:
        seen = self.store.first_seen(p.name, now)
        return p.opened_at if p.opened_at is not None else seen

    def add_mark_samples(self, ex: Exchange, instrument: str, samples: Sequence[tuple[float, float]]) -> None:
        """Seed the volatility window (tests, or a backfill of mark prices)."""
        self.market.add_samples(ex, instrument, samples)

    def tick(self) -> None:
        now = self.clock()
        self.configured.recheck_instruments()
        held = {(p.exchange, p.instrument) for p in self.all_positions()}
        self.market.sample(held, now, self.accounts.mark)
        for key in held:  # the live extension of the stress history (the minute's last mark is its close)
            mark = self.market.mark(*key) or self.accounts.mark(*key)
            if mark is not None:
                self.history.put_mark(key, now, mark)
        views = []
        for p in self.all_positions():
            try:
                views.append(self._view(p, now))
            except Exception:
                log.exception("position %s: cannot compute", p.name)
        self._views = tuple(views)
        self._health = (dict(self.configured.by_field), dict(self.accounts.reads), dict(self.accounts.failures))

    def _accrue(self, p: Position, opened: float, now: float, mark: float | None) -> None:
        """Both perp legs: one payment per settlement, or continuous (Deribit) at the 8 h-equivalent."""
        legs = [("main", p.exchange, p.instrument, p.side, p.size, mark or p.entry_price)]
        h = p.hedge
        if h is not None and h.kind == "perp" and h.exchange is not None and h.instrument:
            legs.append(("hedge", h.exchange, h.instrument, h.side, h.size, h.entry_price))
        for leg, ex, inst, side, size, fallback in legs:
            price = self.market.mark(ex, inst) or fallback
            if facts_for(ex).has_funding_history:
                settled = self.ledger.settlements(ex, inst, self.market.stream_settlements(ex, inst))
                self.ledger.accrue_settled(p.name, leg, ex, inst, side, size, opened, now, settled, price)
            else:
                r = self.market.rate(ex, inst)
                rate_8h = r[0] * EIGHT_HOURS / r[1] if r is not None else None
                self.ledger.accrue_continuous(p.name, leg, ex, inst, side, size, p.opened_at, now, rate_8h, price)

    def _view(self, p: Position, now: float) -> PositionView:
        opened = self._opened(p, now)
        mark = self.market.mark(p.exchange, p.instrument) or (p.mark_price if p.source == "account" else None)
        self._accrue(p, opened, now, mark)
        ec = self.config.exchanges.get(p.exchange)
        taker_fee = (ec.fees.taker_bp if ec is not None else 5.0) / 1e4
        inputs = ViewInputs(
            now=now,
            opened=opened,
            mark=mark,
            tiers=self.tiers_for(p),
            taker_fee=taker_fee if facts_for(p.exchange).liq_includes_taker_fee else 0.0,
            volatility=self.market.volatility(p.exchange, p.instrument, now),
            funding=self.ledger.totals(p.name),
            net_since_opening=self.ledger.net_since(p.name, opened),
            legs=self.market.carry_legs(p, mark),
            adl_rank=adl_rank(p.exchange, p.adl_raw),
            hedge_mark=self.market.hedge_mark(p),
            history=self.history.figures((p.exchange, p.instrument), now),
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
