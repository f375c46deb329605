"""Wiring: instruments, backfill, websocket tasks, REST pollers -> record sink (MarketState); HTTP server.

Start order (why): instruments first (the streams and parsers need contract sizes); websocket
tasks next, so prices flow while the funding history is backfilled; the HTTP server and
``ready(port)`` only once the backfill is done (or its startup budget is spent), so the very first
scrape already carries a z-score built from the full window. Everything runs on one event loop,
the only writer of :class:`~exporter.state.MarketState`; the server thread only reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter.analytics import anchor as anchor_analytics
from exporter.analytics import factors
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config, ExchangeConfig
from exporter.feeds import dated
from exporter.feeds.base import Feed, FeedContext, WsPlan
from exporter.feeds.connection import BackoffPolicy, FeedConnection
from exporter.limits import LIMITS
from exporter.metrics.positions import PositionCollector
from exporter.model import AnchorBackfill, Candle, Exchange, FundingSettlement, HistoryBackfill, InstrumentInfo, base_of
from exporter.positions.service import PositionService
from exporter.recording import Recorder
from exporter.rest.client import REQUEST_LANE, RequestBudget, RestClient, RestError, RestPolicy, budget_share
from exporter.rest.endpoints import LONG_SHORT_RATIO, OPEN_INTEREST, CandleKind, ExchangeRest, rest_api_for
from exporter.rest.history_store import CandleStore
from exporter.rest.split import POLLERS_CAP, POLLERS_CAP_AFTER_BACKFILL, PollDemand, PollShare, describe, split
from exporter.shard import Coverage, Shard, left_out_by_limit
from exporter.sink import RecordSink
from exporter.state import InstrumentState, MarketState

log = logging.getLogger(__name__)

STARTUP_BUDGET_S = 20.0  # instruments + backfill before the server answers; the rest continues behind
FIRST_DATA_WAIT_S = 5.0  # after backfill: wait this long at most for the first stream values
INSTRUMENTS_RETRY_S = 30.0  # instrument list unavailable at start: try again this soon
ANCHOR_CANDLE_KINDS = frozenset({"premium", "mark", "index"})  # what the anchor backfill reads
ANCHOR_CANDLE_S = anchor_analytics.CANDLE_SECONDS
OI_HISTORY_STEP_S = 300  # the open-interest history's step (5 minutes: every exchange's finest)
BACKFILL_CONCURRENCY = 4  # per exchange; funding-history buckets are small (Binance 500 / 5 min)
POLL_CONCURRENCY = 4
POSITIONS_STOP_S = 3.0
FUTURES_AFTER_EXPIRY_S = 1.0  # reread the futures list this long after a delivery (the successor is listed)
RELAYOUT_PERIOD_S = 60.0  # how often the records follow a stream's order (a relayout only when it changed)


class CandleSource(Protocol):
    """Where a backfill reads candles: the exchange's endpoints, or the start-up's shared reads of them."""

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]: ...


async def anchor_backfill(rest: CandleSource, st: InstrumentState, start: float, end: float) -> AnchorBackfill | None:
    """The instrument's anchor samples over (start, end] rebuilt from its one-minute candles, or None
    where they cannot be (interval unknown, continuous funding, no candles). The premium index is
    read from the start of the funding interval that contains ``start``: the average runs from there."""
    info = st.info
    iv = st.interval_s
    if not iv or info.exchange is Exchange.DERIBIT:
        return None
    settlements = [t for t, _ in st.settlement_window()]
    from_ = min(start, anchor_analytics.interval_start(start, iv, settlements)) - ANCHOR_CANDLE_S
    minute = int(ANCHOR_CANDLE_S)
    premium = await rest.price_candles("premium", info.instrument, minute, from_, end)
    marks = await rest.price_candles("mark", info.instrument, minute, start - ANCHOR_CANDLE_S, end)
    indexes = await rest.price_candles("index", info.instrument, minute, start - ANCHOR_CANDLE_S, end)
    rows = anchor_analytics.backfill_samples(
        premium, marks, indexes, iv, start, end, st.funding_cap, st.funding_floor, settlements
    )
    if not rows:
        return None
    return AnchorBackfill(info.exchange, info.instrument, tuple(rows))


@dataclass(slots=True)
class ExchangeRuntime:
    """Everything the exporter holds for one enabled exchange."""

    exchange: Exchange
    cfg: ExchangeConfig
    feed: Feed
    ctx: FeedContext
    client: RestClient
    rest: ExchangeRest
    ws_base: str
    configured: list[str]
    instruments: list[InstrumentInfo] = field(default_factory=list)
    listed: bool = False  # True once the exchange's own instrument list was applied
    unknown: list[str] = field(default_factory=list)  # configured ids the exchange does not list
    left_out_logged: bool = False  # the max_instruments cut is logged once
    next_ws_open: float = 0.0  # clock.monotonic() before which no new websocket connection is opened
    streams: dict[WsPlan, asyncio.Task[None]] = field(default_factory=dict)
    futures: list[InstrumentInfo] = field(default_factory=list)  # dated futures followed (term structure)
    candles: CandleStore | None = None  # during the start-up's backfills: their shared candle reads
    budget_split: list[PollShare] = field(default_factory=list)  # the pollers' guaranteed shares (rest/split.py)
    stale_configured: dict[str, float] = field(default_factory=dict)  # staleness limits before any followed a round
    backfilling: bool = False  # the start-up's backfills are under way: the pollers get at most half a bucket


@dataclass(frozen=True, slots=True)
class Poller:
    name: str
    period_s: float
    job: Callable[[], Awaitable[None]]
    lane: str | None = None  # its guaranteed share of the budget (the split); None: the common share


# per-instrument pollers: lane (endpoint label) -> the staleness limit of the series each refreshes
POLLED_SERIES = {OPEN_INTEREST: "open_interest_seconds", LONG_SHORT_RATIO: "long_short_ratio_seconds"}


def fallback_instrument(exchange: Exchange, instrument: str) -> InstrumentInfo:
    """Static facts guessed from the id when the instrument list cannot be read."""
    base, quote = base_of(exchange, instrument)
    inverse = quote == "USD" and exchange in (Exchange.OKX, Exchange.DERIBIT)
    return InstrumentInfo(exchange=exchange, instrument=instrument, base=base, quote=quote, inverse=inverse)


def _of_kind(exchange: Exchange, info: InstrumentInfo) -> bool:
    # "every USDT perpetual"; Deribit lists no USDT-margined perpetuals, so take all of its
    return exchange is Exchange.DERIBIT or info.quote == "USDT"


def _candidates(
    exchange: Exchange, cfg: ExchangeConfig, configured: Sequence[str], listed: Sequence[InstrumentInfo]
) -> list[InstrumentInfo]:
    """Configured ids the exchange lists, then (all_perpetuals) every other listed one of the kind."""
    by_id = {i.instrument: i for i in listed}
    chosen = [by_id[i] for i in configured if i in by_id]
    if cfg.all_perpetuals:
        seen = {i.instrument for i in chosen}
        chosen += [i for i in listed if i.instrument not in seen and _of_kind(exchange, i)]
    return chosen


def select_instruments(
    exchange: Exchange, cfg: ExchangeConfig, configured: Sequence[str], listed: Sequence[InstrumentInfo] | None
) -> tuple[list[InstrumentInfo], list[str]]:
    """The instruments to follow and the configured ids the exchange does not list.

    ``listed`` None means the list could not be read: follow the configured ids as given. This is
    the selection from the full listing; a shard takes its bases from it afterwards.
    """
    if not listed:
        return [fallback_instrument(exchange, i) for i in configured], []
    by_id = {i.instrument: i for i in listed}
    unknown = [i for i in configured if i not in by_id]
    chosen = _candidates(exchange, cfg, configured, listed)
    if cfg.all_perpetuals:
        chosen = chosen[: cfg.max_instruments]
    return chosen, unknown


def coverage_of(
    exchange: Exchange,
    cfg: ExchangeConfig,
    configured: Sequence[str],
    listed: Sequence[InstrumentInfo] | None,
    selected: Sequence[InstrumentInfo],
    followed: Sequence[InstrumentInfo],
) -> Coverage:
    """Listed (of the kind followed), selected and followed counts, and what max_instruments cut."""
    if not listed:
        return Coverage(listed=0, selected=len(selected), followed=len(followed))
    candidates = _candidates(exchange, cfg, configured, listed)
    kind = {i.instrument for i in listed if _of_kind(exchange, i)} | {i.instrument for i in candidates}
    return Coverage(
        listed=len(kind),
        selected=len(selected),
        followed=len(followed),
        left_out=left_out_by_limit(candidates, selected),
    )


def market_state(config: Config, clock: Clock) -> MarketState:
    """The state store as the configuration's analytics want it (the exporter and replay share it)."""
    a = config.analytics
    return MarketState(
        clock=clock.time,
        funding_event_rate_8h=a.funding_event_rate_8h,
        liquidation_event_usd_per_minute=a.liquidation_event_usd_per_minute,
        settlement_span_seconds=a.zscore_window_seconds + 86400.0,
        anchor_span_seconds=a.anchor_window_seconds,
    )


class Exporter:
    """The running exporter; :func:`run_exporter` is the usual entry point."""

    def __init__(
        self,
        config: Config,
        *,
        state: MarketState | None = None,
        feed_factory: Callable[[Exchange], Feed] | None = None,
        rest_policy: RestPolicy | None = None,
        backoff: BackoffPolicy | None = None,
        startup_budget_s: float = STARTUP_BUDGET_S,
        clock: Clock = SYSTEM_CLOCK,
        serve: bool = True,
        budget_clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.clock = clock  # state timestamps, backfill window, poll periods (tests: VirtualClock)
        # what the REST budgets pace on: the exchanges' limits are in real seconds; a test whose
        # simulator limits on its VirtualClock passes that clock, so pacing is judged in virtual time
        self.budget_clock = budget_clock
        self.shared_reads = True  # False: each backfill reads its own candles (the comparison in tests)
        self.state = state or market_state(config, clock)
        # What the streams, the REST client and the pollers write to: only the sink protocol.
        self.sink: RecordSink = self.state
        if feed_factory is None:
            from exporter.feeds import feed_for

            feed_factory = feed_for
        self.feed_factory = feed_factory
        self.rest_policy = rest_policy
        self.backoff = backoff
        self.startup_budget_s = startup_budget_s
        self.runtimes: dict[Exchange, ExchangeRuntime] = {}
        self.shard = Shard(config.shard.index, config.shard.count)
        rb = config.rest_budget
        self.budget_share = budget_share(rb.fraction, self.shard.count, rb.split_between_shards)
        self.coverage: dict[Exchange, Coverage] = {}  # per exchange, read by the shard collector
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self.server: Any = None
        self.registry: Any = None  # what /metrics renders (tests render it in the loop, between frames)
        self.positions: Any = None
        self._positions_task: asyncio.Task[Any] | None = None
        self._facts_refresh: set[Exchange] = set()  # funding-info refreshes under way (one per exchange)
        if isinstance(self.state, MarketState):
            self.state.on_interval_change = self._interval_changed
        self.serve = serve  # False: no HTTP server (fr-exporter record)
        self.recorder: Recorder | None = None
        rec = config.recording
        if rec.dir is not None:
            self.recorder = Recorder(
                rec.dir,
                rotate_seconds=rec.rotate_seconds,
                max_bytes=rec.max_bytes,
                compression=rec.compression,
                queue_size=rec.queue_size,
                level=rec.level,
            )

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: Callable[[int], None] | None = None) -> None:
        starting = asyncio.create_task(self.start(), name="startup")
        stopping = asyncio.create_task(stop.wait())
        try:
            # a stop during the startup (slow exchanges) must not wait for the startup budget
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # startup errors (cannot listen...) propagate
                if ready is not None and self.server is not None:
                    ready(int(self.server.port))
                await stopping
        finally:
            for t in (starting, stopping):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # already raised above
                    await t
            await self.shutdown()

    async def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
            log.info("recording raw frames to %s", self.config.recording.dir)
        for ex, cfg in self.config.enabled_exchanges().items():
            self.state.register_exchange(ex)
            self.runtimes[ex] = self._runtime(ex, cfg)
        # Startup: instruments -> streams (prices flow) -> backfill, all exchanges in parallel.
        t0 = time.monotonic()
        startup = [asyncio.create_task(self._start_exchange(rt)) for rt in self.runtimes.values()]
        self._tasks.extend(startup)  # shutdown cancels them if we are stopped while starting
        done, pending = await asyncio.wait(startup, timeout=self.startup_budget_s) if startup else (set(), set())
        for t in done:
            if t.exception() is not None:
                log.error("startup of an exchange failed: %r", t.exception())
        if pending:
            log.warning(
                "startup still loading after %.0f s (instrument list or funding history); serving now",
                self.startup_budget_s,
            )
        remaining = self.startup_budget_s - (time.monotonic() - t0)
        await self._wait_first_data(min(FIRST_DATA_WAIT_S, max(0.0, remaining)))
        registry = self.registry = self._build_registry()
        # One render before the server answers: label strings, window statistics and the other
        # scrape caches are built now, so the first scrape costs what every later one does.
        try:
            registry.render()
        except Exception:
            log.exception("warm-up render failed; the first scrape will build its caches")
        # Everything loaded so far (modules, backfilled windows) lives for the whole run: moving it
        # out of the collector's reach keeps full collections short, so frames are not held up.
        gc.collect()
        gc.freeze()
        if self.serve:
            self.server = self._start_server(registry)
        for rt in self.runtimes.values():
            self._start_pollers(rt)
        if self.positions is not None:
            self._positions_task = asyncio.create_task(self.positions.run(self._stop), name="positions")

    async def _wait_first_data(self, timeout: float) -> None:
        """Give the streams a moment to deliver a first price and funding rate for every instrument,
        so the first scrape is complete. Bounded: a dead exchange shows as fr_up 0, not as a hang."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = [
                st
                for rt in self.runtimes.values()
                if rt.streams
                for i in rt.instruments
                if (st := self.state.instruments.get((rt.exchange, i.instrument))) is not None
                and (st.price_at == 0.0 or st.funding_at == 0.0)
            ]
            if not missing:
                return
            await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        self._stop.set()
        if self._positions_task is not None:
            # the position service closes its store on stop: give it a moment before cancelling
            with contextlib.suppress(Exception):
                await asyncio.wait({self._positions_task}, timeout=POSITIONS_STOP_S)
        tasks = list(self._tasks)
        if self._positions_task is not None:
            tasks.append(self._positions_task)
            self._positions_task = None
        for rt in self.runtimes.values():
            tasks.extend(rt.streams.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for rt in self.runtimes.values():
            rt.streams.clear()
            with contextlib.suppress(Exception):
                await rt.client.aclose()
        if self.server is not None:
            server, self.server = self.server, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(server.stop)
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        log.info("exporter stopped")

    # ---- per exchange ------------------------------------------------------------------------

    def _runtime(self, ex: Exchange, cfg: ExchangeConfig) -> ExchangeRuntime:
        feed = self.feed_factory(ex)
        ws_base, rest_base = self.config.urls_for(ex)
        # timestamps near now; settled: the one sink (this state) has the settlements passed on already
        ctx = FeedContext(exchange=ex, instruments={}, clock=self.state.clock, settled={})
        bc = self.budget_clock
        budget = RequestBudget(LIMITS[ex], self.budget_share, now=bc.monotonic, sleep=bc.sleep)
        client = RestClient(ex, rest_base, self.sink, policy=self.rest_policy, budget=budget, clock=self.clock.time)
        if self.recorder is not None:
            client.recorder = self.recorder.rest_hook(ex)
            client.failure_recorder = self.recorder.rest_failure_hook(ex)
        rest = rest_api_for(ex, client, feed, ctx)
        return ExchangeRuntime(ex, cfg, feed, ctx, client, rest, ws_base, self.config.instruments_for(ex))

    async def _start_exchange(self, rt: ExchangeRuntime) -> None:
        rt.backfilling = rt.cfg.backfill  # the budget's first split leaves the backfills half of each bucket
        await self._load_instruments(rt)
        await self._load_futures(rt)
        self._sync_streams(rt)
        jobs: list[Awaitable[Any]] = []
        if rt.rest.has_funding_info:
            jobs.append(self._funding_info(rt))
        if rt.cfg.backfill:
            # one time for every backfill's window: the shared reads serve windows that end together
            now = self.clock.time()
            rt.candles = self._plan_shared_reads(rt, now)
            jobs.append(self._backfill(rt, now))
            jobs.append(self._backfill_history(rt, now))
        try:
            if jobs:
                await asyncio.gather(*jobs)
        finally:
            if rt.candles is not None:
                rt.candles.clear()
                rt.candles = None
        if rt.backfilling:  # done: the pollers may have more of the budget
            rt.backfilling = False
            self._split_budget(rt)

    async def _load_instruments(self, rt: ExchangeRuntime) -> None:
        listed: list[InstrumentInfo] | None = None
        try:
            listed = await rt.rest.instruments()
        except RestError as exc:
            log.warning("%s: instrument list unavailable (%s); using the configured ids", rt.exchange, exc)
        if listed is not None and not listed:
            log.warning("%s: the instrument list is empty; using the configured ids", rt.exchange)
            listed = None
        selected, unknown = select_instruments(rt.exchange, rt.cfg, rt.configured, listed)
        # The shard takes its bases from the selection made on the full listing, so the union of
        # the shards never depends on their number.
        chosen = self.shard.select(selected)
        if unknown and unknown != rt.unknown:
            log.error(
                "%s: configured instrument(s) not listed by the exchange, not followed: %s",
                rt.exchange,
                ", ".join(unknown),
            )
        rt.unknown = unknown
        if listed is None and rt.listed:
            return  # a failed refresh keeps what the last good list said
        cov = coverage_of(rt.exchange, rt.cfg, rt.configured, listed, selected, chosen)
        self.coverage[rt.exchange] = cov
        if cov.left_out and not rt.left_out_logged:
            rt.left_out_logged = True
            log.warning(
                "%s: max_instruments=%d leaves %d listed instrument(s) out: %s",
                rt.exchange,
                rt.cfg.max_instruments,
                len(cov.left_out),
                ", ".join(cov.left_out),
            )
        if self.shard.sharded:
            log.info(
                "%s: shard %s follows %d of %d selected instrument(s)",
                rt.exchange,
                self.shard,
                len(chosen),
                len(selected),
            )
        rt.listed = rt.listed or listed is not None
        rt.instruments = chosen
        for info in chosen:
            self.state.register(info)
        # The parsers filter all-symbol streams (Binance !forceOrder@arr) by this mapping: followed only.
        rt.ctx.instruments = {i.instrument: i for i in (*chosen, *rt.futures)}
        self._bind(rt)
        self._record_followed(rt)
        self._split_budget(rt)
        if not chosen:
            log.error("%s: no instrument to follow", rt.exchange)

    def _poll_demands(self, rt: ExchangeRuntime) -> list[PollDemand]:
        """What the per-instrument pollers ask of the budget at their configured periods."""
        poll, stale = rt.cfg.poll, rt.cfg.stale
        periods = {OPEN_INTEREST: poll.open_interest_seconds, LONG_SHORT_RATIO: poll.long_short_ratio_seconds}
        polled = {OPEN_INTEREST: rt.rest.polls_open_interest, LONG_SHORT_RATIO: rt.rest.has_long_short_ratio}
        limits = LIMITS[rt.exchange]
        out = []
        for lane, path in rt.rest.poll_paths.items():
            if polled.get(lane):
                field_ = POLLED_SERIES[lane]
                limit = rt.stale_configured.setdefault(field_, getattr(stale, field_))
                out.append(PollDemand(lane, len(rt.instruments), periods[lane], limit, limits.cost(path)))
        return out

    def _split_budget(self, rt: ExchangeRuntime) -> None:
        """Guarantee each poller its share of the exchange's budget for the instruments followed (the
        backfills take the rest: exporter/rest/split.py); where a round is stretched beyond its series'
        staleness limit, the limit follows it. Logged when it changes (at start, then with the count)."""
        budget = rt.client.budget
        demands = self._poll_demands(rt)
        buckets = {b for d in demands for b, _ in d.weights}
        rates = {b: budget.rate(b) for b in sorted(buckets)}
        shares = split(rates, demands, POLLERS_CAP if rt.backfilling else POLLERS_CAP_AFTER_BACKFILL)
        if shares == rt.budget_split:
            return
        rt.budget_split = shares
        for s in shares:
            budget.guarantee(s.demand.poller, s.guaranteed)
            field_ = POLLED_SERIES[s.demand.poller]
            if s.stale_s >= getattr(rt.cfg.stale, field_):
                setattr(rt.cfg.stale, field_, s.stale_s)
            else:  # values read under the old split may be as old as its limit: lower it a new span later
                self._spawn(self._lower_stale(rt, field_, s.stale_s), f"stale-{rt.exchange}-{field_}")
        if shares:
            after = "" if rt.backfilling or not rt.cfg.backfill else " (the start-up's backfills done)"
            log.info("%s%s", describe(rt.exchange.value, rates, shares), after)

    async def _lower_stale(self, rt: ExchangeRuntime, field_: str, limit: float) -> None:
        """Lower a staleness limit that followed a round, once the new rounds have refreshed every value:
        one span of the new limit later, unless a newer split said otherwise meanwhile."""
        await self.clock.sleep(limit)
        if any(POLLED_SERIES[s.demand.poller] == field_ and s.stale_s == limit for s in rt.budget_split):
            setattr(rt.cfg.stale, field_, limit)

    async def _load_futures(self, rt: ExchangeRuntime) -> None:
        """The dated futures of the configured bases (term structure); a failed read keeps the last list."""
        fc = rt.cfg.futures
        if not fc.enabled:
            return
        try:
            listed = await rt.rest.futures()
        except RestError as exc:
            log.warning("%s: dated futures list unavailable (%s)", rt.exchange, exc)
            return
        held = {p.instrument for p in self.config.positions if p.exchange is rt.exchange}  # followed whatever else
        chosen = dated.select(listed, fc.bases, None if fc.all_expiries else fc.nearest, self.clock.time(), held)
        chosen = self.shard.select(chosen)  # a base's futures live with its perpetuals
        if [i.instrument for i in chosen] != [i.instrument for i in rt.futures]:
            log.info("%s: dated futures followed: %s", rt.exchange, ", ".join(i.instrument for i in chosen) or "none")
        rt.futures = chosen
        self.state.set_futures(rt.exchange, chosen)
        rt.ctx.instruments = {i.instrument: i for i in (*rt.instruments, *chosen)}
        self._bind(rt)
        self._record_followed(rt)

    def _bind(self, rt: ExchangeRuntime) -> None:
        """The context's handles from the state its records go to (MarketState.bind: the parser's
        followed check finds the record, and the store skips its own lookup), after its instruments change."""
        if isinstance(self.state, MarketState) and self.sink is self.state:
            self.state.bind(rt.ctx)

    def _record_followed(self, rt: ExchangeRuntime) -> None:
        """A recording notes what is followed: a replay follows exactly that (all-symbol filters)."""
        if self.recorder is not None:
            self.recorder.meta(self.clock.time(), rt.exchange, "followed", list(rt.ctx.instruments.values()))

    def _sync_streams(self, rt: ExchangeRuntime) -> None:
        """Run exactly one connection task per current WsPlan (plans change with the instrument set)."""
        plans = rt.feed.ws_plans(rt.ws_base, rt.instruments) if rt.instruments else []
        plans += dated.ws_plans(rt.exchange, rt.ws_base, rt.futures)
        for plan, task in list(rt.streams.items()):
            if plan not in plans or task.done():
                task.cancel()
                del rt.streams[plan]
        # Connection opens are spaced within the exchange's per-IP limit on new connections (our share).
        spacing = 1.0 / (LIMITS[rt.exchange].ws_opens_per_s * self.budget_share)
        new = [plan for plan in plans if plan not in rt.streams]
        if new and self.recorder is not None:
            # each stream's counters are published from here on, before its first frame (which may
            # never come): a replay registers them at this line too, not at the stream's first frame
            self.recorder.meta(self.clock.time(), rt.exchange, "streams", [p.stream for p in new])
        for plan in new:
            if plan not in rt.streams:
                conn = FeedConnection(rt.feed, plan, rt.ctx, self.sink, backoff=self.backoff, clock=self.clock.time)
                if self.recorder is not None:
                    conn.recorder = self.recorder.stream_hook(rt.exchange, plan.stream)
                at = max(self.clock.monotonic(), rt.next_ws_open)
                rt.next_ws_open = at + spacing
                rt.streams[plan] = asyncio.create_task(self._open_at(conn, at), name=f"ws-{rt.exchange}-{plan.stream}")

    async def _open_at(self, conn: FeedConnection, at: float) -> None:
        delay = at - self.clock.monotonic()
        if delay > 0:
            await self.clock.sleep(delay)
        await conn.run(self._stop)

    def _interval_changed(self, exchange: Exchange, instrument: str) -> None:
        """A stream showed a funding-interval change: refetch the exchange's funding facts now
        rather than at the next hourly poll (one refresh at a time per exchange)."""
        rt = self.runtimes.get(exchange)
        if rt is None or not rt.rest.has_funding_info or exchange in self._facts_refresh:
            return
        log.info("%s %s: funding interval changed on the stream; refreshing funding info", exchange, instrument)
        self._facts_refresh.add(exchange)

        async def refresh() -> None:
            try:
                await self._funding_info(rt)
            finally:
                self._facts_refresh.discard(exchange)

        self._tasks.append(asyncio.get_running_loop().create_task(refresh(), name=f"facts-{exchange}"))

    async def _funding_info(self, rt: ExchangeRuntime) -> None:
        try:
            self.sink.apply_many(await rt.rest.funding_info())
        except RestError as exc:
            log.warning("%s: funding info unavailable: %s", rt.exchange, exc)

    def _anchors_backfilled(self, rt: ExchangeRuntime) -> bool:
        return rt.rest.candle_kinds >= ANCHOR_CANDLE_KINDS

    def _mark_window(self, now: float) -> float:
        """Where the factor backfill's 1-minute marks start: the longest window's first close and one more."""
        return now // 60.0 * 60.0 - max(factors.VOLATILITY_WINDOWS.values()) - 2 * 60.0

    def _plan_shared_reads(self, rt: ExchangeRuntime, now: float) -> CandleStore | None:
        """The factor and anchor backfills both read the 1-minute mark candles: one read of the window
        that covers both serves them (exporter/rest/history_store.py), the budget spent once."""
        if not self.shared_reads or not self._anchors_backfilled(rt):
            return None
        store = CandleStore(rt.rest)
        start = min(self._mark_window(now), now - self.config.analytics.anchor_window_seconds - ANCHOR_CANDLE_S)
        for info in rt.instruments:
            store.plan("mark", info.instrument, int(ANCHOR_CANDLE_S), start, now, readers=2)
        return store

    async def _backfill(self, rt: ExchangeRuntime, now: float | None = None) -> None:
        """Each instrument's funding history (the z-score's window), then its anchor window: rebuilt
        from one-minute candles where the exchange publishes all three kinds it needs
        (exporter.analytics.anchor), so both methods show on the first scrape; the samples after
        ``now`` come from the live stream. An instrument's anchor follows its own funding history (its
        settlement times say where the funding intervals start), not the whole exchange's: the two are
        paced in different buckets (Binance: 500 funding reads per 5 min, candles by weight), so the
        anchors fill while the funding history is still read, not after it."""
        end = self.clock.time() if now is None else now
        z_start = end - self.config.analytics.zscore_window_seconds
        a_start = end - self.config.analytics.anchor_window_seconds
        anchors = self._anchors_backfilled(rt)
        if not anchors:
            log.info("%s: no premium-index/mark/index candles: the anchor window fills live", rt.exchange)
        sem_f, sem_a = asyncio.Semaphore(BACKFILL_CONCURRENCY), asyncio.Semaphore(BACKFILL_CONCURRENCY)
        failed: dict[str, list[str]] = {"funding history": [], "anchor": []}

        async def funding(info: InstrumentInfo) -> None:
            async with sem_f:
                try:
                    records = await rt.rest.funding_history(info.instrument, z_start, end)
                except RestError as exc:
                    failed["funding history"].append(info.instrument)
                    log.debug("%s %s: backfill failed: %s", rt.exchange, info.instrument, exc)
                    return
                self._apply_history(rt.exchange, info.instrument, records)

        async def anchor(info: InstrumentInfo) -> None:
            st = self.state.instruments.get((rt.exchange, info.instrument))
            if st is None:
                return
            async with sem_a:
                try:
                    record = await anchor_backfill(rt.candles or rt.rest, st, a_start, end)
                except RestError as exc:
                    failed["anchor"].append(info.instrument)
                    log.debug("%s %s: anchor backfill failed: %s", rt.exchange, info.instrument, exc)
                    return
            if record is not None:
                self.sink.apply(record)

        async def one(info: InstrumentInfo) -> None:
            await funding(info)
            if anchors:
                await anchor(info)

        await asyncio.gather(*(one(i) for i in rt.instruments))
        for what, names in failed.items():
            if names:
                shown = ", ".join(names[:10])
                log.warning("%s: %s backfill failed for %d instrument(s): %s", rt.exchange, what, len(names), shown)
        if not failed["funding history"]:
            log.info("%s: funding history backfilled for %d instrument(s)", rt.exchange, len(rt.instruments))

    def _apply_history(self, exchange: Exchange, instrument: str, records: Sequence[FundingSettlement]) -> None:
        """One instrument's settlement history merged into its window at once, per funding interval,
        not record by record: behind a live settlement each record merged alone re-sorts the whole
        window, quadratic in its length (Deribit's 720 hourly observations of 30 days: the start at 100
        instruments took 8.3 s of CPU, 1.4 s at once). Leaves the window :meth:`MarketState.apply_many`
        of the records leaves: each record's interval resolved as it would be (its own, else the
        instrument's as the records before it set it), a time already seen kept from its first record."""
        st = self.state.instruments.get((exchange, instrument))
        if (
            st is None
            or not isinstance(self.state, MarketState)
            or any(r.exchange is not exchange or r.instrument != instrument for r in records)
        ):
            self.sink.apply_many(records)
            return
        by_interval: dict[float | None, list[tuple[float, float]]] = {}
        seen: set[float] = set()
        for r in records:
            if r.interval_s and st.funding_interval_s is None:
                st.funding_interval_s = r.interval_s
            iv = r.interval_s or st.funding_interval_s or st.info.funding_interval_s
            if iv is None:  # the merge would infer the interval from the spacing as it goes: one by one
                self.sink.apply_many(records)
                return
            if r.funding_time not in seen and r.rate == r.rate:  # a NaN rate is dropped, its time left free
                seen.add(r.funding_time)
                by_interval.setdefault(iv, []).append((r.funding_time, r.rate))
        for iv, pairs in by_interval.items():
            self.state.add_settlements(st, pairs, iv)

    async def _backfill_history(self, rt: ExchangeRuntime, now: float | None = None) -> None:
        """The factor signals' past (docs/history.md): 1-minute mark closes for the realised volatility
        and 5-minute open interest for its change, so both are right on the first scrape; where open
        interest is polled (Binance) its current value too. Paced by the exchange's budget like all REST.

        Marks and open interest are two independent passes: they are paced in different buckets
        (Binance's open-interest history shares `futures_data` with the long/short poller and takes
        far longer at scale), so the volatility of every instrument does not wait for it."""
        if now is None:
            now = self.clock.time()
        mark_start = self._mark_window(now)
        oi_start = now - max(factors.OI_CHANGE_WINDOWS.values()) - OI_HISTORY_STEP_S - 600.0
        rest = rt.rest
        failed: dict[str, list[str]] = {"mark candles": [], "open-interest history": []}

        async def marks(info: InstrumentInfo, sem: asyncio.Semaphore) -> None:
            async with sem:
                try:
                    candles = await (rt.candles or rest).price_candles("mark", info.instrument, 60, mark_start, now)
                    if rest.polls_open_interest:
                        updates = await rest.open_interest(info.instrument)
                        st = self.state.instruments.get((rt.exchange, info.instrument))
                        if st is not None and st.mark_price is None and candles:
                            # no mark from the stream yet to convert the coin figure: the candle in
                            # progress closes at the latest mark (the next poll converts with the stream's)
                            px = candles[-1].close
                            for u in updates:
                                if u.open_interest_base is not None and u.open_interest_usd is None:
                                    u.open_interest_usd = u.open_interest_base * px
                        self.sink.apply_many(updates)
                except RestError as exc:
                    failed["mark candles"].append(info.instrument)
                    log.debug("%s %s: mark history backfill failed: %s", rt.exchange, info.instrument, exc)
                    return
            closes = tuple((c.open_time, c.close) for c in candles)
            if closes:
                self.sink.apply(HistoryBackfill(rt.exchange, info.instrument, mark_closes=closes))

        async def open_interest(info: InstrumentInfo, sem: asyncio.Semaphore) -> None:
            async with sem:
                try:
                    points = await rest.open_interest_history(info.instrument, OI_HISTORY_STEP_S, oi_start, now)
                except RestError as exc:
                    failed["open-interest history"].append(info.instrument)
                    log.debug("%s %s: open-interest history backfill failed: %s", rt.exchange, info.instrument, exc)
                    return
            oi = tuple((p.time, p.open_interest_usd) for p in points)
            if oi:
                self.sink.apply(HistoryBackfill(rt.exchange, info.instrument, open_interest=oi))

        jobs: list[Awaitable[None]] = []
        if "mark" in rest.candle_kinds or rest.polls_open_interest:
            sem_m = asyncio.Semaphore(BACKFILL_CONCURRENCY)
            jobs.extend(marks(i, sem_m) for i in rt.instruments)
        if rest.has_open_interest_history:
            sem_o = asyncio.Semaphore(BACKFILL_CONCURRENCY)
            jobs.extend(open_interest(i, sem_o) for i in rt.instruments)
        await asyncio.gather(*jobs)
        for what, names in failed.items():
            if names:
                shown = ", ".join(names[:10])
                log.warning("%s: %s backfill failed for %d instrument(s): %s", rt.exchange, what, len(names), shown)

    # ---- pollers -----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def pollers(self, rt: ExchangeRuntime) -> list[Poller]:
        """The periodic REST jobs of one exchange (what has no stream), for this shard."""
        poll = rt.cfg.poll
        ex = rt.exchange
        out: list[Poller] = []
        if rt.rest.polls_open_interest:
            out.append(
                Poller(
                    f"{ex} open interest",
                    poll.open_interest_seconds,
                    lambda: self._per_instrument(rt, rt.rest.open_interest),
                    OPEN_INTEREST,
                )
            )
        if rt.rest.has_long_short_ratio:
            out.append(
                Poller(
                    f"{ex} long/short ratio",
                    poll.long_short_ratio_seconds,
                    lambda: self._per_instrument(rt, rt.rest.long_short_ratio),
                    LONG_SHORT_RATIO,
                )
            )
        if rt.rest.has_insurance_fund and self.shard.exchange_wide:  # one shard publishes exchange-wide series
            out.append(Poller(f"{ex} insurance fund", poll.insurance_fund_seconds, lambda: self._insurance(rt)))
        return out

    def _start_pollers(self, rt: ExchangeRuntime) -> None:
        for p in self.pollers(rt):
            self._spawn(self._every(p.period_s, p.job, p.name, p.lane), f"poll {p.name}")
        self._spawn(self._refresh_instruments(rt), f"poll-{rt.exchange}-instruments")
        if rt.cfg.futures.enabled:
            self._spawn(self._refresh_futures(rt), f"poll-{rt.exchange}-futures")
        self._spawn(
            self._every(rt.cfg.poll.server_time_seconds, lambda: self._server_time(rt), f"{rt.exchange} server time"),
            f"poll-{rt.exchange}-time",
        )
        if isinstance(self.state, MarketState):
            self._spawn(
                self._every(RELAYOUT_PERIOD_S, lambda: self._relayout(rt), f"{rt.exchange} record layout"),
                f"housekeeping-{rt.exchange}-layout",
            )

    async def _relayout(self, rt: ExchangeRuntime) -> None:
        """Housekeeping: the state's records laid out in the order the exchange's array frames send
        the instruments (Binance's all-market array; docs/scaling.md), when that order changed, and the
        parser's instruments in that order, keyed by the state's own key strings (a listing refresh
        assigns them in the listing's order: the next round puts them back). The parser keeps the
        frames of one period (FeedContext.array_frames); nothing on the hot path."""
        order = rt.ctx.take_array_order()
        if order and isinstance(self.state, MarketState):
            self.state.relayout(rt.exchange, order)
            rt.ctx.follow_order(self.state.record_ids(rt.exchange))

    async def _server_time(self, rt: ExchangeRuntime) -> None:
        sent, server, received = await rt.rest.server_time()
        self.sink.exchange_clock(rt.exchange).sample(sent, server, received)

    async def _every(
        self, period: float, job: Callable[[], Awaitable[None]], what: str, lane: str | None = None
    ) -> None:
        # this task's requests (and those of the tasks its rounds start) are served from the lane's share
        REQUEST_LANE.set(lane)
        while True:
            started = self.clock.monotonic()
            try:
                await job()
            except RestError:
                pass  # counted by the client; the last good values stay until they go stale
            except Exception:
                log.exception("%s poll failed", what)
            # one start per period; a round that took longer (the budget) starts the next at once
            await self.clock.sleep(max(0.0, period - (self.clock.monotonic() - started)))

    async def _per_instrument(self, rt: ExchangeRuntime, fetch: Callable[[str], Awaitable[Sequence[Any]]]) -> None:
        """One request per instrument. The REST client's budget spreads them: beyond its burst they
        leave at the budget's rate, queued behind the backfill and the other pollers of the bucket."""
        sem = asyncio.Semaphore(POLL_CONCURRENCY)
        instruments = list(rt.instruments)

        async def one(info: InstrumentInfo) -> None:
            async with sem:
                try:
                    records = await fetch(info.instrument)
                except RestError:
                    return
                self.sink.apply_many(records)

        await asyncio.gather(*(one(i) for i in instruments))

    async def _insurance(self, rt: ExchangeRuntime) -> None:
        self.sink.apply_many(await rt.rest.insurance_fund(rt.instruments))

    async def _refresh_instruments(self, rt: ExchangeRuntime) -> None:
        while True:
            period = (
                rt.cfg.poll.instruments_seconds
                if rt.listed
                else min(INSTRUMENTS_RETRY_S, rt.cfg.poll.instruments_seconds)
            )
            await self.clock.sleep(period)
            try:
                await self._load_instruments(rt)
                self._sync_streams(rt)
                if rt.rest.has_funding_info:
                    await self._funding_info(rt)
            except Exception:
                log.exception("%s: instrument refresh failed", rt.exchange)

    async def _refresh_futures(self, rt: ExchangeRuntime) -> None:
        """Reread the dated futures every instrument period, and just after the nearest delivery, so
        an expired contract's successor is followed without a restart."""
        while True:
            period = rt.cfg.poll.instruments_seconds
            now = self.clock.time()
            upcoming = [i.expiry - now for i in rt.futures if i.expiry is not None and i.expiry > now]
            if upcoming:
                period = min(period, min(upcoming) + FUTURES_AFTER_EXPIRY_S)
            await self.clock.sleep(period)
            try:
                await self._load_futures(rt)
                self._sync_streams(rt)
            except Exception:
                log.exception("%s: dated futures refresh failed", rt.exchange)

    # ---- registry, positions, server ---------------------------------------------------------

    def _build_registry(self) -> Any:
        from exporter.metrics import build_registry
        from exporter.metrics.budget import BudgetCollector
        from exporter.metrics.shard import ShardCollector

        registry = build_registry(
            self.config,
            self.state,
            extra_collectors=[
                ShardCollector(self.shard, lambda: dict(self.coverage)),
                BudgetCollector(self._budget_splits),
            ],
            recording=self.recorder.snapshot if self.recorder is not None else None,
        )
        # an invalid position that is the only one still starts the service: it reports and counts it
        if self.config.positions or self.config.position_settings.from_accounts or self.config.position_issues:
            try:
                # the exporter's REST endpoints: account reads share their rate-limit gates and counts
                rest = {ex: rt.rest for ex, rt in self.runtimes.items()}
                self.positions = PositionService(self._shard_config(), self.state, rest=rest, owns=self.shard.owns)
            except Exception as exc:  # e.g. an unwritable accrual database: market data still serves
                log.error("position service cannot start, positions not exported: %s", exc)
            else:
                registry.register(PositionCollector(self.positions, self.config.position_settings.stress_period_days))
        return registry

    def _budget_splits(self) -> dict[Exchange, tuple[list[PollShare], dict[str, float]]]:
        """Per exchange: its pollers' guaranteed shares and its budget's rate in each bucket they use."""
        out = {}
        for ex, rt in self.runtimes.items():
            buckets = {b for s in rt.budget_split for b in s.guaranteed}
            out[ex] = (rt.budget_split, {b: rt.client.budget.rate(b) for b in buckets})
        return out

    def _shard_config(self) -> Config:
        """The configuration with only the positions whose base this shard follows."""
        if not self.shard.sharded:
            return self.config
        kept = [p for p in self.config.positions if self.shard.owns(base_of(p.exchange, p.instrument)[0])]
        out = self.config.model_copy(update={"positions": kept})
        out._position_issues = list(self.config.position_issues)
        return out

    def _start_server(self, registry: Any) -> Any:
        from exporter.server import start_server

        extra_api = self.positions.api_rows if self.positions is not None else None
        # ListenError / ConfigError (web config) propagate: the CLI prints them as one line
        return start_server(self.config, self.state, registry, extra_api=extra_api)


async def run_exporter(config: Config, stop: asyncio.Event, ready: Callable[[int], None] | None = None) -> None:
    """Run the exporter until ``stop`` is set; ``ready(port)`` once /metrics is being served."""
    httpx_log = logging.getLogger("httpx")
    if httpx_log.level == logging.NOTSET:
        httpx_log.setLevel(logging.WARNING)  # one INFO line per poll request is noise; failures are counted
    await Exporter(config).run(stop, ready)
