"""Positions service: configured and account positions, funding accrual, risk snapshot.

Runs on the exporter's event loop (``await run(stop)``): reads accounts with read-only keys, reads
public tiers and funding history, accrues funding into SQLite exactly once per settlement, and
rebuilds an immutable snapshot of :class:`PositionView` that the collector and ``/api/state`` read
from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from exporter.analytics.carry import (
    PerpLeg,
    continuous_funding,
    funding_payment,
    net_apy_projected_pct,
    net_apy_realized_pct,
)
from exporter.analytics.risk import (
    DEFAULT_TIERS,
    LiqInput,
    Tier,
    Volatility,
    liq_gap_pct,
    liq_hit_probability,
    liquidation_price,
    realised_volatility,
    stress,
    tiers_from_caps,
)
from exporter.config import Config, read_secret
from exporter.metrics.positions import PositionCollector, PositionView, StressView
from exporter.model import EIGHT_HOURS, Exchange, Side
from exporter.positions.accounts import (
    SOURCES,
    AccountError,
    AccountSource,
    OkxAccount,
    funding_history,
    okx_contract_size,
    public_tiers,
)
from exporter.positions.config_source import PositionConfigError, check_leverage, load_positions
from exporter.positions.model import OKX_CT_VAL_FALLBACK, Position, normalise_adl
from exporter.positions.signing import ApiKey
from exporter.positions.store import AccrualStore
from exporter.state import MarketState

log = logging.getLogger("exporter.positions")

VOL_WINDOW_SECONDS = 24 * 3600.0
TIERS_REFRESH_SECONDS = 3600.0
CONTINUOUS_MIN_PERIOD_SECONDS = 60.0
SETTLEMENT_KEY_SECONDS = 60.0  # settlements are >= 1 h apart; REST times carry a few ms of jitter


def settlement_key(t: float) -> float:
    """One key per settlement whatever source reported it (stream rollover vs REST fundingTime)."""
    return round(t / SETTLEMENT_KEY_SECONDS) * SETTLEMENT_KEY_SECONDS


def _horizon_label(hours: float) -> str:
    return f"{hours:g}h"


class PositionService:
    def __init__(
        self,
        config: Config,
        state: MarketState,
        *,
        clock: Callable[[], float] | None = None,
        client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
        tick_seconds: float = 1.0,
        vol_sample_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.settings = config.position_settings
        self.clock = clock or state.clock
        self.tick_seconds = tick_seconds
        self.vol_sample_seconds = vol_sample_seconds or self.settings.vol_sample_seconds
        self._client = client
        self._own_client = client is None
        try:
            self.store = AccrualStore(self.settings.db_path)
        except (sqlite3.Error, OSError) as exc:
            # keep exporting: accruals then live in memory only (and restart from zero)
            log.error("positions: cannot open %s (%s); funding accruals will not persist", self.settings.db_path, exc)
            self.store = AccrualStore(":memory:")
        self._ct: dict[str, float] = {}
        # accrual caches: the database is the truth, these avoid a query per settlement per tick
        self._accrued: dict[tuple[str, str], set[float]] = {}
        self._last_accrual: dict[tuple[str, str], float] = {}
        self._pnl: dict[str, list[float]] = {k: list(v) for k, v in self.store.aggregates().items()}
        # net funding since the current opening (the realised APY's numerator): an account position
        # that closed and reopened under the same name must not carry the old one's funding
        self._pnl_since: dict[str, tuple[float, float]] = {}
        self._tiers: dict[tuple[Exchange, str, str], list[Tier]] = {}
        self._tiers_at: dict[tuple[Exchange, str, str], float] = {}
        self._history: dict[tuple[Exchange, str], dict[float, tuple[float, float, float | None]]] = {}
        self._marks: dict[tuple[Exchange, str], deque[tuple[float, float]]] = {}
        self._vol: dict[tuple[Exchange, str], tuple[float, Volatility | None]] = {}
        self._account: dict[Exchange, tuple[float, list[Position]]] = {}
        self._last_account_poll = -math.inf
        self._last_public_poll = -math.inf
        self._views: tuple[PositionView, ...] = ()
        self.config_errors: list[PositionConfigError] = []
        self.errors_by_field: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        self._keys = self._read_keys(environ)
        self.positions: list[Position] = self._load_config_positions()
        self._health: tuple[dict[str, int], dict[str, int], dict[tuple[str, str], int]] = (
            dict(self.errors_by_field),
            {},
            {},
        )
        log.info("positions: %d configured, %d skipped", len(self.positions), len(self.config_errors))
        self.collector = PositionCollector(self)

    # ---- setup -----------------------------------------------------------------------------

    def _read_keys(self, environ: Mapping[str, str] | None) -> dict[Exchange, ApiKey]:
        keys: dict[Exchange, ApiKey] = {}
        env = dict(environ) if environ is not None else None
        for ex, ec in self.config.enabled_exchanges().items():
            c = ec.credentials
            if not c.configured():
                continue
            try:
                key = read_secret(c.api_key_env, c.api_key_file, env)
                secret = read_secret(c.api_secret_env, c.api_secret_file, env)
                passphrase = read_secret(c.passphrase_env, c.passphrase_file, env)
            except Exception as exc:  # ConfigError names the file, never its content
                log.error("%s: credentials unreadable: %s", ex.value, exc)
                continue
            _register_secrets(key, secret, passphrase)
            if not key or not secret:
                log.error("%s: credentials configured but the key or secret is empty", ex.value)
                continue
            if ex is Exchange.OKX and not passphrase:
                log.error("okx: credentials need a passphrase (OK-ACCESS-PASSPHRASE)")
                continue
            keys[ex] = ApiKey(key, secret, passphrase)
        return keys

    def _known_instruments(self, ex: Exchange) -> set[str] | None:
        known = {inst for (e, inst) in self.state.instruments if e is ex}
        ec = self.config.exchanges.get(ex)
        if ec is not None and ec.all_perpetuals and not known:
            return None  # the instrument list is loaded later; checked then
        return known | set(self.config.instruments_for(ex))

    def _load_config_positions(self) -> list[Position]:
        good, errors = load_positions(self.config, self._known_instruments, self.tiers_for, self.contract_size)
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

    # ---- lookups ---------------------------------------------------------------------------

    def contract_size(self, ex: Exchange, instrument: str) -> float:
        if ex is not Exchange.OKX:
            return 1.0
        if instrument in self._ct:
            return self._ct[instrument]
        st = self.state.instruments.get((ex, instrument))
        if st is not None and st.info.contract_size and st.info.contract_size != 1.0:
            return st.info.contract_size
        return OKX_CT_VAL_FALLBACK.get(instrument, 1.0)

    def tiers_for(self, p: Position) -> list[Tier]:
        """Account brackets, else published tiers, else configured, else the UNVERIFIED defaults."""
        if p.tiers:
            return p.tiers
        for mode in (p.margin_mode, "any"):
            t = self._tiers.get((p.exchange, p.instrument, mode))
            if t:
                return t
        ec = self.config.exchanges.get(p.exchange)
        rows = ec.maintenance_tiers if ec is not None and ec.maintenance_tiers else None
        tiers = tiers_from_caps(rows) if rows else DEFAULT_TIERS
        if p.exchange is Exchange.OKX:
            # configured/default tiers are in USD notional; OKX tiers count contracts
            per_contract = p.contract_size * p.entry_price
            tiers = [
                Tier(t.floor / per_contract, t.cap / per_contract, t.mmr, t.max_leverage, t.deduction) for t in tiers
            ]
        return tiers

    def _fresh_mark(self, ex: Exchange, instrument: str) -> float | None:
        st = self.state.instruments.get((ex, instrument))
        if st is None or st.mark_price is None:
            return None
        ec = self.config.exchanges.get(ex)
        limit = ec.stale.price_seconds if ec is not None else 30.0
        return st.mark_price if self.clock() - st.price_at <= limit else None

    def _fresh_rate(self, ex: Exchange, instrument: str) -> tuple[float, float] | None:
        """(rate per interval, interval seconds); Deribit: (8 h-equivalent rate, 28800)."""
        st = self.state.instruments.get((ex, instrument))
        if st is None or st.funding_rate is None:
            return None
        ec = self.config.exchanges.get(ex)
        limit = ec.stale.funding_seconds if ec is not None else 120.0
        if self.clock() - st.funding_at > limit:
            return None
        if ex is Exchange.DERIBIT:
            r8 = MarketState.funding_rate_8h(st)
            return (r8, EIGHT_HOURS) if r8 is not None else None
        interval = st.interval_s
        return (st.funding_rate, interval) if interval else None

    # ---- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
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
            if self._own_client and self._client is not None:
                await self._client.aclose()
                self._client = None
            self.store.close()

    async def step(self) -> None:
        """One cycle: account and public reads when due, then accrue and rebuild the snapshot."""
        now = self.clock()
        if now - self._last_account_poll >= self.settings.poll_seconds:
            self._last_account_poll = now
            if self.settings.from_accounts:
                await self.poll_accounts()
        if now - self._last_public_poll >= self.settings.poll_seconds:
            self._last_public_poll = now
            try:
                await self.poll_public()
            except Exception as exc:  # an odd public body must not freeze the snapshot (stale gaps)
                log.warning("positions: public read failed (%s)", type(exc).__name__)
        self.tick()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
            self._own_client = True
        return self._client

    def _source(self, ex: Exchange) -> AccountSource:
        base = self.config.urls_for(ex)[1]
        cls = SOURCES[ex]
        if cls is OkxAccount:
            return OkxAccount(
                base,
                self._keys[ex],
                self._http(),
                self.clock,
                contract_size=lambda inst: self.contract_size(Exchange.OKX, inst),
            )
        return cls(base, self._keys[ex], self._http(), self.clock)

    async def poll_accounts(self) -> None:
        for ex in self._keys:
            self.reads[ex.value] += 1
            src = self._source(ex)
            try:
                got = await src.positions()
                if ex is Exchange.OKX:
                    # sizes come in contracts: convert with the instrument's real ctVal once it is known
                    await self._load_okx_contract_sizes([p.instrument for p in got])
                    for p in got:
                        ct = self.contract_size(ex, p.instrument)
                        if ct != p.contract_size:
                            p.size, p.contract_size = p.size / p.contract_size * ct, ct
                if ex is Exchange.BINANCE:
                    for p in got:
                        p.tiers = await self._binance_brackets(p.instrument, src)
            except AccountError as exc:
                self.failures[(ex.value, exc.reason)] += 1
                log.warning("%s", exc)
                continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # a body we cannot read: count it; the message names the exception type only
                self.failures[(ex.value, "invalid_response")] += 1
                log.warning("%s account read failed: invalid_response (%s)", ex.value, type(exc).__name__)
                continue
            before = {p.name for p in self._account.get(ex, (0.0, []))[1]}
            now_names = {p.name for p in got}
            for gone in before - now_names:
                log.info("account position closed: %s", gone)
                self.store.forget_first_seen(gone)
            self._account[ex] = (self.clock(), got)

    async def _binance_brackets(self, instrument: str, src: AccountSource) -> list[Tier] | None:
        k = (Exchange.BINANCE, instrument, "any")
        if k in self._tiers and self.clock() - self._tiers_at.get(k, 0.0) < TIERS_REFRESH_SECONDS:
            return self._tiers[k]
        tiers = await src.tiers(instrument)
        if tiers:
            self._tiers[k] = tiers
            self._tiers_at[k] = self.clock()
        return tiers

    async def _load_okx_contract_sizes(self, instruments: Sequence[str]) -> None:
        for inst in instruments:
            if inst in self._ct:
                continue
            try:
                ct = await okx_contract_size(self._http(), self.config.urls_for(Exchange.OKX)[1], inst)
            except AccountError:
                ct = None
            if ct:
                self._ct[inst] = ct

    async def poll_public(self) -> None:
        """Published tiers (hourly) and funding history (each poll) for every position's instruments."""
        wanted: set[tuple[Exchange, str, str]] = set()
        for p in self.all_positions():
            wanted.add((p.exchange, p.instrument, p.margin_mode))
            if p.hedge is not None and p.hedge.kind == "perp" and p.hedge.exchange and p.hedge.instrument:
                wanted.add((p.hedge.exchange, p.hedge.instrument, "isolated"))
        client = self._http()
        okx = [inst for ex, inst, _ in wanted if ex is Exchange.OKX]
        if okx:
            await self._load_okx_contract_sizes(okx)
        tiers_changed = False
        if Exchange.BINANCE in self._keys:
            # Binance publishes no tiers: its brackets need the (read-only) key, for configured positions too
            src = self._source(Exchange.BINANCE)
            for inst in sorted({i for ex, i, _ in wanted if ex is Exchange.BINANCE}):
                had = (Exchange.BINANCE, inst, "any") in self._tiers
                try:
                    got = await self._binance_brackets(inst, src)
                except AccountError as exc:
                    self.failures[(Exchange.BINANCE.value, exc.reason)] += 1
                    log.warning("leverage brackets for %s: %s", inst, exc)
                    continue
                tiers_changed |= bool(got) and not had
        for ex, inst, mode in sorted(wanted):
            base = self.config.urls_for(ex)[1]
            key = (ex, inst, mode)
            if ex in (Exchange.BYBIT, Exchange.OKX) and (
                key not in self._tiers or self.clock() - self._tiers_at.get(key, 0.0) >= TIERS_REFRESH_SECONDS
            ):
                try:
                    t = await public_tiers(client, ex, base, inst, mode)
                except AccountError as exc:
                    log.warning("public tiers for %s %s: %s", ex.value, inst, exc)
                    t = None
                if t:
                    self._tiers[key] = t
                    self._tiers_at[key] = self.clock()
                    tiers_changed = True
            if ex is not Exchange.DERIBIT:
                try:
                    hist = await funding_history(client, ex, base, inst)
                except AccountError as exc:
                    log.warning("funding history for %s %s: %s", ex.value, inst, exc)
                    continue
                known = self._history.setdefault((ex, inst), {})
                for t_s, rate, price in hist:
                    known[settlement_key(t_s)] = (t_s, rate, price)
        if tiers_changed:
            self._recheck_leverage()

    def _recheck_leverage(self) -> None:
        """Published tiers arrived: a configured leverage above the real tier maximum is an error too."""
        keep = []
        for p in self.positions:
            problem = check_leverage(p, self.tiers_for(p))
            if problem:
                idx = next((i for i, pc in enumerate(self.config.positions) if pc.name == p.name), -1)
                self._config_error(PositionConfigError(idx, p.name, "leverage", problem))
            else:
                keep.append(p)
        self.positions = keep

    # ---- accrual and snapshot --------------------------------------------------------------

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

    def _settlements(self, ex: Exchange, inst: str) -> dict[float, tuple[float, float, float | None]]:
        out: dict[float, tuple[float, float, float | None]] = {}
        st = self.state.instruments.get((ex, inst))
        if st is not None and ex is not Exchange.DERIBIT:
            for t, rate in st.settlement_window():
                out[settlement_key(t)] = (t, rate, None)
        out.update(self._history.get((ex, inst), {}))  # REST carries the settlement's mark price (Binance)
        return out

    def _accrue_leg(
        self,
        p: Position,
        leg: str,
        ex: Exchange,
        inst: str,
        side: Side,
        size: float,
        opened: float,
        now: float,
        fallback_price: float,
    ) -> None:
        if ex is Exchange.DERIBIT:
            self._accrue_continuous(p, leg, ex, inst, side, size, now, fallback_price)
            return
        done = self._accrued.get((p.name, leg))
        if done is None:
            done = self._accrued[(p.name, leg)] = self.store.keys(p.name, leg)
        for key_t, (t, rate, price) in sorted(self._settlements(ex, inst).items()):
            if t <= opened or key_t in done:
                continue
            px = price or self._fresh_mark(ex, inst) or fallback_price
            amount = funding_payment(side, size * px, rate)
            done.add(key_t)
            if self.store.accrue(p.name, leg, ex.value, inst, key_t, rate, px, size, amount, now):
                self._count(p.name, amount)
                log.info("funding accrued: %s %s %s at %.0f rate %g: %.4f USD", p.name, leg, inst, t, rate, amount)

    def _accrue_continuous(
        self, p: Position, leg: str, ex: Exchange, inst: str, side: Side, size: float, now: float, fallback: float
    ) -> None:
        # Funding before the exporter first saw the position is unknown here; start there.
        last = self._last_accrual.get((p.name, leg))
        if last is None:
            last = self.store.last_time(p.name, leg) or 0.0
            self._last_accrual[(p.name, leg)] = last
        # first_seen restarts when a closed account position reappears: its closed period is not accrued
        start = max(last, p.opened_at or 0.0, self.store.first_seen(p.name, now))
        if now - start < CONTINUOUS_MIN_PERIOD_SECONDS:
            return
        rate = self._fresh_rate(ex, inst)
        if rate is None:
            return
        px = self._fresh_mark(ex, inst) or fallback
        amount = continuous_funding(side, size * px, rate[0], now - start)
        if self.store.accrue(p.name, leg, ex.value, inst, now, rate[0], px, size, amount, now, period_start=start):
            self._count(p.name, amount)
        self._last_accrual[(p.name, leg)] = now

    def _count(self, name: str, amount: float) -> None:
        agg = self._pnl.setdefault(name, [0.0, 0.0, 0.0, 0])
        if name in self._pnl_since:  # every new accrual is after the current opening
            opened, net = self._pnl_since[name]
            self._pnl_since[name] = (opened, net + amount)
        agg[0] += amount
        agg[1] += max(amount, 0.0)
        agg[2] += max(-amount, 0.0)
        agg[3] += 1

    def _sample_marks(self, now: float) -> None:
        keys = {(p.exchange, p.instrument) for p in self.all_positions()}
        for key in keys:
            mark = self._fresh_mark(*key) or self._account_mark(*key)
            if mark is None:
                continue
            dq = self._marks.setdefault(key, deque())
            if not dq or now - dq[-1][0] >= self.vol_sample_seconds:
                dq.append((now, mark))
            while dq and dq[0][0] < now - VOL_WINDOW_SECONDS:
                dq.popleft()

    def add_mark_samples(self, ex: Exchange, instrument: str, samples: Sequence[tuple[float, float]]) -> None:
        """Seed the volatility window (tests, or a backfill of mark prices)."""
        dq = self._marks.setdefault((ex, instrument), deque())
        dq.extend(samples)
        self._vol.pop((ex, instrument), None)

    def _volatility(self, ex: Exchange, instrument: str, now: float) -> Volatility | None:
        cached = self._vol.get((ex, instrument))
        if cached is not None and now - cached[0] < self.vol_sample_seconds:
            return cached[1]
        vol = realised_volatility(list(self._marks.get((ex, instrument), ())))
        self._vol[(ex, instrument)] = (now, vol)
        return vol

    def _account_mark(self, ex: Exchange, instrument: str) -> float | None:
        for p in self.account_positions(ex):
            if p.instrument == instrument and p.mark_price:
                return p.mark_price
        return None

    def _recheck_instruments(self) -> None:
        """Exchanges following all perpetuals: check configured instruments once the list is loaded."""
        keep = []
        for p in self.positions:
            ec = self.config.exchanges.get(p.exchange)
            known = {inst for (e, inst) in self.state.instruments if e is p.exchange}
            if (
                ec is not None
                and ec.all_perpetuals
                and known
                and p.instrument not in known | set(self.config.instruments_for(p.exchange))
            ):
                idx = next((i for i, pc in enumerate(self.config.positions) if pc.name == p.name), -1)
                msg = f"unknown instrument {p.instrument!r} on {p.exchange.value}"
                self._config_error(PositionConfigError(idx, p.name, "instrument", msg))
            else:
                keep.append(p)
        self.positions = keep

    def tick(self) -> None:
        now = self.clock()
        if any(
            ec.all_perpetuals for ex, ec in self.config.exchanges.items() if ex in {p.exchange for p in self.positions}
        ):
            self._recheck_instruments()
        self._sample_marks(now)
        views = []
        for p in self.all_positions():
            try:
                views.append(self._view(p, now))
            except Exception:
                log.exception("position %s: cannot compute", p.name)
        self._views = tuple(views)
        self._health = (dict(self.errors_by_field), dict(self.reads), dict(self.failures))

    def _view(self, p: Position, now: float) -> PositionView:
        opened = self._opened(p, now)
        mark = self._fresh_mark(p.exchange, p.instrument) or (p.mark_price if p.source == "account" else None)
        self._accrue_leg(p, "main", p.exchange, p.instrument, p.side, p.size, opened, now, mark or p.entry_price)
        h = p.hedge
        if h is not None and h.kind == "perp" and h.exchange is not None and h.instrument:
            hmark = self._fresh_mark(h.exchange, h.instrument) or h.entry_price
            self._accrue_leg(p, "hedge", h.exchange, h.instrument, h.side, h.size, opened, now, hmark)
        pnl, received, paid, n_accruals = self._pnl.get(p.name, (0.0, 0.0, 0.0, 0))

        liq_in = None
        liq_computed = None
        if p.margin_usd is not None and p.size > 0 and p.entry_price > 0:
            fee = 0.0
            if p.exchange is Exchange.OKX:
                ec = self.config.exchanges.get(p.exchange)
                fee = (ec.fees.taker_bp if ec is not None else 5.0) / 1e4
            liq_in = LiqInput(
                p.exchange,
                p.side,
                p.size,
                p.entry_price,
                p.margin_usd,
                self.tiers_for(p),
                p.contract_size,
                fee,
                p.inverse,
            )
            liq_computed = liquidation_price(liq_in)
        liq = p.exchange_liq_price if p.exchange_liq_price is not None else liq_computed
        gap = liq_gap_pct(p.side, mark, liq) if mark is not None else None

        hit: dict[str, float] = {}
        vol = self._volatility(p.exchange, p.instrument, now)
        # Published only when the liquidation price is known, or our formula ran and found none (a
        # position that cannot be liquidated: 0). Unknown (no figure, no margin to compute it) is absent.
        if mark is not None and vol is not None and (liq is not None or liq_in is not None):
            for hours in self.settings.hit_horizons_hours:
                prob = liq_hit_probability(p.side, mark, liq, vol, hours * 3600.0)
                if prob is not None:
                    hit[_horizon_label(hours)] = prob

        stress_views: list[StressView] = []
        if liq_in is not None and mark is not None:
            stress_views = [
                StressView(s.shock_pct, s.equity_usd, s.survives)
                for s in stress(liq_in, mark, liq, self.settings.shocks_pct)
            ]

        capital = p.capital_usd()
        fees = p.fees_usd + (h.fees_usd if h is not None else 0.0)
        apy_real = None
        apy_proj = None
        if capital:
            since = self._pnl_since.get(p.name)
            if since is None or since[0] != opened:
                since = self._pnl_since[p.name] = (opened, self.store.net_since(p.name, opened))
            apy_real = net_apy_realized_pct(since[1], fees, p.gas_usd, p.borrow_apr, capital, now - opened)
            legs = []
            r = self._fresh_rate(p.exchange, p.instrument)
            if r is not None and mark is not None:
                legs.append(PerpLeg(p.side, p.size * mark, r[0], r[1]))
                if h is not None and h.kind == "perp" and h.exchange is not None and h.instrument:
                    hr = self._fresh_rate(h.exchange, h.instrument)
                    hm = self._fresh_mark(h.exchange, h.instrument)
                    if hr is None or hm is None:
                        legs = []  # a half-known hedge would overstate the carry
                    else:
                        legs.append(PerpLeg(h.side, h.size * hm, hr[0], hr[1]))
            if legs:
                hold = self.config.analytics.holding_period_hours * 3600.0
                apy_proj = net_apy_projected_pct(legs, fees, p.gas_usd, p.borrow_apr, capital, hold)

        return PositionView(
            position=p.name,
            exchange=p.exchange.value,
            instrument=p.instrument,
            side=p.side.value,
            source=p.source,
            size=p.size,
            entry_price=p.entry_price,
            mark_price=mark,
            notional_usd=p.size * mark if mark is not None else None,
            liq_exchange=p.exchange_liq_price,
            liq_computed=liq_computed,
            liq_gap_pct=gap,
            hit_probability=hit,
            adl_rank=normalise_adl(p.exchange, p.adl_raw),
            adl_raw=p.adl_raw,
            funding_pnl_usd=pnl,
            funding_received_usd=received,
            funding_paid_usd=paid,
            settlements=int(n_accruals),
            apy_realized_pct=apy_real,
            apy_projected_pct=apy_proj,
            locked_capital_usd=capital,
            stress=tuple(stress_views),
        )

    # ---- readers (any thread) --------------------------------------------------------------

    def views(self) -> Sequence[PositionView]:
        return self._views

    def health(self) -> tuple[Mapping[str, int], Mapping[str, int], Mapping[tuple[str, str], int]]:
        return self._health  # copies made on the event loop, so a scrape never iterates a changing dict

    def api_rows(self) -> list[dict[str, Any]]:
        """Rows for /api/state "positions" (no secrets: only what /metrics shows)."""
        rows = []
        for v in self._views:
            rows.append(
                {
                    "position": v.position,
                    "exchange": v.exchange,
                    "instrument": v.instrument,
                    "side": v.side,
                    "source": v.source,
                    "size": v.size,
                    "entry_price": v.entry_price,
                    "mark_price": v.mark_price,
                    "notional_usd": v.notional_usd,
                    "liquidation_price": v.liquidation_price,
                    "liquidation_price_computed": v.liq_computed,
                    "liquidation_price_source": "exchange"
                    if v.liq_exchange is not None
                    else ("computed" if v.liq_computed is not None else None),
                    "liq_gap_pct": v.liq_gap_pct,
                    "liq_hit_probability": dict(v.hit_probability),
                    "adl_rank": v.adl_rank,
                    "funding_pnl_usd": v.funding_pnl_usd,
                    "funding_settlements": v.settlements,
                    "net_apy_pct": {"realized": v.apy_realized_pct, "projected": v.apy_projected_pct},
                    "locked_capital_usd": v.locked_capital_usd,
                    "stress": [
                        {"shock_pct": s.shock_pct, "equity_usd": s.equity_usd, "survives": s.survives} for s in v.stress
                    ],
                }
            )
        return rows


def _register_secrets(*values: str | None) -> None:
    try:
        from exporter.redact import register_secret
    except ImportError:  # redaction is a safety net; the service never logs secrets itself
        return
    for v in values:
        register_secret(v)


__all__ = ["PositionService", "settlement_key"]
