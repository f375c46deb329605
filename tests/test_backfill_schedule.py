"""The start-up backfill at scale within the REST budgets: the exporter against the simulator, both on
one VirtualClock, the simulator enforcing the exchanges' per-IP limits on that clock and the
exporter's budgets pacing on it too. Virtual minutes cost a few real seconds, so a start that takes
the budget minutes is checked in full: every instrument's history in, not one request refused."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.feeds import history as H
from exporter.limits import LIMITS
from exporter.model import Candle, Exchange, FundingSettlement, InstrumentInfo
from exporter.rest.client import REQUEST_LANE, RequestBudget, RestError
from exporter.rest.history_store import CandleStore
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

START = 1_767_225_600.0 + 7 * 86400.0 + 1.0


async def _run_until(clock: VirtualClock, work: Any) -> Any:
    """Run ``work`` on ``clock``, jumping to the next sleeper's deadline whenever everything waits."""
    task = asyncio.ensure_future(work)
    while not task.done():
        for _ in range(5):
            await asyncio.sleep(0)
        nxt = clock.next_deadline()
        if nxt is not None and not task.done():
            await clock.advance_async(max(0.0, nxt - clock.time()))
    return task.result()


def test_a_heavier_request_is_not_overtaken_forever_by_lighter_ones() -> None:
    """Binance at 500 instruments: the open-interest poller (weight 1 a request) alone asks more
    than the weight budget gives, and the factor backfill's candle pages (weight 2) wait in the same
    bucket. Served in arrival order, both progress; before, every weight-1 request that came later
    took the tokens first and the candle pages waited for ever (none in 1,900 s)."""
    clock = VirtualClock(1000.0)
    budget = RequestBudget(LIMITS[Exchange.BINANCE], 0.5, now=clock.monotonic, sleep=clock.sleep)
    done = {"/fapi/v1/openInterest": 0, "/fapi/v1/markPriceKlines": 0, "/fapi/v1/fundingRate": 0}
    horizon = 1000.0 + 300.0

    async def caller(path: str) -> None:
        while clock.time() < horizon:
            await budget.acquire(path)
            done[path] += 1

    async def main() -> None:
        tasks = [asyncio.ensure_future(caller(p)) for p in done for _ in range(4)]
        await clock.sleep(horizon - 1000.0)
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(_run_until(clock, main()))
    polls, pages, funding = (done[p] for p in done)

    def allowed(limit: float, window_s: float) -> float:
        """What half of a limit allows in 300 s by docs/rate-limits.md: a burst of a tenth, the rest at
        99 % of the share's rate."""
        mine = 0.5 * limit
        return 0.1 * mine + 0.99 * (mine - 0.1 * mine) / window_s * 300

    weight = allowed(2400, 60)  # Binance's REQUEST_WEIGHT: 2,400 a minute
    assert polls + 2 * pages + funding <= weight + 1  # never above the budget
    assert polls + 2 * pages + funding >= 0.95 * weight  # and the budget was used
    # the weight bucket's turns are shared in arrival order: four callers each, as many requests each
    assert pages >= 0.8 * polls
    # a funding-history call waits in its own slow bucket (500 per 5 min) without holding up the weight bucket
    assert funding == pytest.approx(allowed(500, 300), abs=2)


async def _lane_caller(budget: RequestBudget, path: str, lane: str | None, until: float, done: dict[str, int]) -> None:
    REQUEST_LANE.set(lane)  # this task's requests are the lane's
    key = lane or path
    while budget._now() < until:
        await budget.acquire(path)
        done[key] = done.get(key, 0) + 1


def _contend(guarantee: float | None, others: bool = True) -> dict[str, int]:
    """300 s of Binance's weight bucket at the default share: four open-interest callers in the lane
    ``open_interest`` (guaranteed ``guarantee`` weight/s), and unless ``others`` is False four candle
    callers (weight 2) and four open-interest callers outside the lane."""
    clock = VirtualClock(1000.0)
    budget = RequestBudget(LIMITS[Exchange.BINANCE], 0.5, now=clock.monotonic, sleep=clock.sleep)
    if guarantee is not None:
        budget.guarantee("open_interest", {"weight": guarantee})
    done: dict[str, int] = {}
    callers = [("/fapi/v1/openInterest", "open_interest")]
    if others:
        callers += [("/fapi/v1/markPriceKlines", None), ("/fapi/v1/openInterest", None)]

    async def main() -> None:
        tasks = [
            asyncio.ensure_future(_lane_caller(budget, path, lane, 1300.0, done))
            for path, lane in callers
            for _ in range(4)
        ]
        await clock.sleep(300.0)
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(_run_until(clock, main()))
    return done


def test_a_guaranteed_lane_gets_its_rate_and_the_turns_share_the_rest() -> None:
    budget = RequestBudget(LIMITS[Exchange.BINANCE], 0.5)
    rate = budget.rate("weight")
    window = 0.1 * 1200 + rate * 300  # the burst (a tenth of the share) and 300 s of refill
    lane = _contend(8.0)
    assert lane["open_interest"] >= 0.98 * 8.0 * 300  # at least its guarantee, whatever else waits
    used = lane["open_interest"] + 2 * lane["/fapi/v1/markPriceKlines"] + lane["/fapi/v1/openInterest"]
    assert 0.95 * window <= used <= window + 1  # the one pool: never above the budget, nothing idle
    # the others share what is left by turns: the candle pages are not starved
    assert lane["/fapi/v1/markPriceKlines"] >= 0.8 * lane["/fapi/v1/openInterest"] > 0
    # without the guarantee, the same callers by turns alone: the lane gets far less than 8/s
    turns = _contend(None)
    assert turns["open_interest"] < 0.75 * 8.0 * 300
    # and a lane alone takes the whole bucket, not only its guarantee
    alone = _contend(8.0, others=False)
    assert alone["open_interest"] >= 0.95 * window


def test_guarantees_cannot_promise_more_than_the_bucket() -> None:
    budget = RequestBudget(LIMITS[Exchange.BINANCE], 0.5)
    half = budget.rate("weight") / 2
    budget.guarantee("a", {"weight": half})
    budget.guarantee("b", {"weight": half})
    with pytest.raises(ValueError, match="weight"):
        budget.guarantee("c", {"weight": 0.1})
    budget.guarantee("b", {})  # withdrawn: room again
    budget.guarantee("c", {"weight": half})
    assert (budget.guaranteed("b", "weight"), budget.guaranteed("c", "weight")) == (0.0, half)


async def test_a_cancelled_request_hands_its_turn_on() -> None:
    clock = VirtualClock(1000.0)
    budget = RequestBudget(LIMITS[Exchange.BINANCE], 0.5, now=clock.monotonic, sleep=clock.sleep)
    for _ in range(25):  # the funding bucket's burst (a tenth of 250) spent: the next call waits
        await budget.acquire("/fapi/v1/fundingRate")
    first = asyncio.ensure_future(budget.acquire("/fapi/v1/fundingRate"))
    second = asyncio.ensure_future(budget.acquire("/fapi/v1/fundingRate"))
    for _ in range(5):
        await asyncio.sleep(0)
    first.cancel()  # it holds the bucket's turn, waiting for tokens
    await asyncio.gather(first, return_exceptions=True)
    await clock.advance_async(10.0)
    await asyncio.wait_for(second, 30)
    assert first.cancelled() and budget.requests == 26


def _config(sim: sim_main.Simulator, n: int, oi_poll_s: float) -> Config:
    exchanges = sim.exporter_exchanges(
        n,
        futures={"enabled": False},
        # market time moves in steps the test makes: nothing may go stale while it looks
        stale={"price_seconds": 3600, "funding_seconds": 3600, "open_interest_seconds": 3600},
        poll={"open_interest_seconds": oi_poll_s},
    )  # the simulator runs Binance only: the others disabled
    # a tenth of the limits: the same contention as 500 instruments at the default share, at 40
    return Config.model_validate(
        {"listen_address": "127.0.0.1:0", "exchanges": exchanges, "rest_budget": {"fraction": 0.1}}
    )


@pytest.mark.slow(seconds=8)
@pytest.mark.timeout(120)
async def test_binance_factor_backfill_completes_while_the_open_interest_poller_saturates_the_budget() -> None:
    n = 40
    clock = VirtualClock(START)
    sim = sim_main.Simulator(
        seed=5,
        base_port=0,
        tick_seconds=1.0,
        instruments_per_exchange=n,
        exchanges=(Exchange.BINANCE,),
        options=sim_server.SimOptions(okx_funding_push_s=5.0),
        clock=clock,
    )
    for srv in sim.servers.values():  # the limits judged in the same (virtual) seconds the budget paces in
        assert srv.limiter is not None
        srv.limiter.clock = clock.monotonic
    await sim.start()
    # 40 instruments polled every 5 s at a tenth of the limits: 8 weight/s asked of a 3.6/s budget
    exporter = Exporter(
        _config(sim, n, oi_poll_s=5.0), clock=clock, budget_clock=clock, serve=False, startup_budget_s=0
    )
    assert exporter.budget_share == pytest.approx(0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(exporter.run(stop))
    try:

        def complete() -> bool:
            sts = [st for (ex, _), st in exporter.state.instruments.items() if ex is Exchange.BINANCE]
            return len(sts) == n and all(len(st.mark_minutes) >= 200 and len(st.oi_samples) >= 40 for st in sts)

        limiter = sim.servers[Exchange.BINANCE].limiter
        assert limiter is not None

        def sent() -> int:
            return sum(h.requests for (ex, _), h in exporter.state.rest.items() if ex is Exchange.BINANCE)

        async def stepped() -> bool:
            """Time moves to the next sleeper's deadline only once every request sent has reached the
            simulator (and a moment for its answer): a request takes no virtual time, as on a real
            network it takes little next to the budget's spacing."""
            if complete() or clock.time() >= START + 600:
                return True
            await wait_until(lambda: limiter.accepted + limiter.refused + limiter.banned >= sent(), 10, 0.0005)
            await asyncio.sleep(0.002)
            nxt = clock.next_deadline()
            await clock.advance_async(min(1.0, max(0.0, nxt - clock.time())) if nxt is not None else 1.0)
            return False

        await wait_until(stepped, 110, interval=0.0, what="600 virtual seconds")
        took = clock.time() - START
        assert complete(), f"the backfill was not complete after {took:.0f} virtual seconds"
        # every request the one client counted has reached the simulator (time stands still now: the
        # budget soon has no tokens left and nothing more leaves), and not one was refused
        await wait_until(lambda: limiter.accepted + limiter.refused + limiter.banned == sent(), 10, 0.001)
        assert (limiter.refused, limiter.banned) == (0, 0) and limiter.accepted > 0
        polls = exporter.state.rest[(Exchange.BINANCE, "open_interest")].requests
        assert polls > 3 * n  # the poller ran all along, several rounds
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 15)
        await sim.stop()


# ---- one read of the 1-minute mark candles for the factor and the anchor backfills ----------------

SHARED = (Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX)  # Deribit has no anchor backfill: one reader
PARSE = {Exchange.BINANCE: H.binance_klines, Exchange.BYBIT: H.bybit_klines, Exchange.OKX: H.okx_candles}


class _Frozen:
    """A clock that stands still and whose sleeps return at once."""

    def time(self) -> float:
        return START

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


async def _backfilled(shared: bool) -> tuple[dict[Any, Any], dict[Any, Any], dict[tuple[Exchange, str], int]]:
    """One start-up's backfills against a fresh simulator at the same instant: the windows they leave in
    the state, the mark candles the exchange sent per (exchange, params' instrument) (open times, from
    the bodies themselves) and every request by (exchange, endpoint)."""
    clock = VirtualClock(START)
    # counting, not pacing, is judged here: no limits, and the budget's waits take no time (they count
    # as slept on a clock that stands still), so the start-up reads run at once
    options = sim_server.SimOptions(rate_limits=False)
    sim = sim_main.Simulator(seed=8, base_port=0, tick_seconds=1.0, exchanges=SHARED, clock=clock, options=options)
    await sim.start()
    exchanges = sim.exporter_exchanges(2, futures={"enabled": False})  # SHARED followed, the others disabled
    cfg = Config.model_validate({"listen_address": "127.0.0.1:0", "exchanges": exchanges})
    exporter = Exporter(cfg, clock=clock, serve=False, budget_clock=_Frozen())
    exporter.shared_reads = shared
    sent: dict[Any, list[float]] = {}
    try:
        for ex, ecfg in cfg.enabled_exchanges().items():
            exporter.state.register_exchange(ex)
            rt = exporter.runtimes[ex] = exporter._runtime(ex, ecfg)

            def record(
                _s: float, _r: float, endpoint: str, _p: str, params: Any, body: bytes, ex: Exchange = ex
            ) -> None:
                # the 1-minute marks (Bybit also reads 5-minute marks to convert its open-interest history)
                if endpoint == "mark_candles" and params.get("interval", params.get("bar")) in ("1", "1m"):
                    inst = params.get("symbol") or params.get("instId")
                    sent.setdefault((ex, inst), []).extend(c.open_time for c in PARSE[ex](body, "mark"))

            rt.client.recorder = record
        await asyncio.gather(*(exporter._start_exchange(rt) for rt in exporter.runtimes.values()))
    finally:
        await exporter.shutdown()
        await sim.stop()
    windows = {
        key: (tuple(st.mark_minutes), tuple(st.anchor_samples)) for key, st in exporter.state.instruments.items()
    }
    requests = {key: h.requests for key, h in exporter.state.rest.items()}
    return windows, sent, requests


@pytest.mark.slow(seconds=3)
async def test_the_mark_candles_are_read_once_for_both_backfills_and_give_the_same_windows() -> None:
    shared_windows, shared_sent, shared_requests = await _backfilled(shared=True)
    own_windows, own_sent, own_requests = await _backfilled(shared=False)
    assert len(shared_windows) == 2 * len(SHARED) and set(shared_sent) == set(own_sent) == set(shared_windows)
    for key, (marks, anchors) in shared_windows.items():
        # both consumers got what their own reads gave them: the 4 h of closes and the 6 h of anchor samples
        assert (marks, anchors) == own_windows[key], key
        assert len(marks) >= 240 and len(anchors) >= 300, (key, len(marks), len(anchors))
        # each minute's mark candle came over the wire once; with a read each, the 4 h came twice
        assert len(shared_sent[key]) == len(set(shared_sent[key])), key
        assert len(own_sent[key]) - len(set(own_sent[key])) >= 240, key
    for ex in SHARED:
        # one read saves its requests (the one REST client counts each) and nothing else changes
        assert shared_requests[(ex, "mark_candles")] < own_requests[(ex, "mark_candles")], ex
        others = {k: v for k, v in shared_requests.items() if k[0] is ex and k[1] != "mark_candles"}
        assert others == {k: v for k, v in own_requests.items() if k[0] is ex and k[1] != "mark_candles"}, ex


class _CountingRest:
    """Candles 60 s apart over any window; counts the reads; the first ``fail`` reads fail."""

    candle_kinds = frozenset({"mark"})

    def __init__(self, fail: int = 0) -> None:
        self.reads: list[tuple[float, float]] = []
        self.fail = fail

    async def price_candles(self, kind: str, instrument: str, interval_seconds: int, start: float, end: float) -> Any:
        self.reads.append((start, end))
        await asyncio.sleep(0)  # the second reader arrives while the first read is under way
        if len(self.reads) <= self.fail:
            raise RestError("http_5xx", "down")
        first = -(-start // 60) * 60
        return [Candle(t, t, t, t, t + 0.5) for t in range(int(first), int(end) + 1, 60)]


async def test_the_store_reads_a_planned_window_once_and_anything_else_directly() -> None:
    rest = _CountingRest()
    store = CandleStore(rest)  # type: ignore[arg-type]
    store.plan("mark", "X", 60, 0.0, 6000.0, readers=2)
    a, b = await asyncio.gather(
        store.price_candles("mark", "X", 60, 1200.0, 6000.0), store.price_candles("mark", "X", 60, 0.0, 3000.0)
    )
    assert rest.reads == [(0.0, 6000.0)]  # one read of the planned window for both
    assert [c.open_time for c in a] == list(range(1200, 6001, 60)) and a[0] == Candle(1200, 1200, 1200, 1200, 1200.5)
    assert [c.open_time for c in b] == list(range(0, 3001, 60))
    assert store.holding() == 0  # both planned readers have read: nothing held
    # a third read (not planned), a window beyond the plan, another instrument: read directly
    await store.price_candles("mark", "X", 60, 0.0, 600.0)
    store.plan("mark", "Y", 60, 0.0, 600.0, readers=2)
    await store.price_candles("mark", "Y", 60, 0.0, 1200.0)
    assert rest.reads[1:] == [(0.0, 600.0), (0.0, 1200.0)] and store.direct == 2


async def test_a_failed_shared_read_fails_its_readers_and_a_later_one_reads_anew() -> None:
    rest = _CountingRest(fail=1)
    store = CandleStore(rest)  # type: ignore[arg-type]
    store.plan("mark", "X", 60, 0.0, 600.0, readers=3)
    got = await asyncio.gather(*(store.price_candles("mark", "X", 60, 0.0, 600.0) for _ in range(2)),
                               return_exceptions=True)  # fmt: skip
    assert [type(g) for g in got] == [RestError, RestError] and len(rest.reads) == 1
    later = await store.price_candles("mark", "X", 60, 0.0, 600.0)
    assert len(later) == 11 and len(rest.reads) == 2
    store.plan("mark", "Z", 60, 0.0, 600.0, readers=2)
    await store.price_candles("mark", "Z", 60, 0.0, 600.0)
    assert store.holding() == 11  # one planned reader still to come
    store.clear()
    assert store.holding() == 0


# ---- the pollers' guaranteed share while the backfill runs (2,000 Binance instruments) -------------


@pytest.mark.slow(seconds=6)
@pytest.mark.timeout(240)
async def test_open_interest_never_goes_stale_at_2000_binance_instruments_while_the_backfill_runs() -> None:
    """2,000 Binance instruments at the default share, scaled: 40 instruments at a fiftieth of it (0.01
    of each limit), the same requests per unit of budget. The open-interest poller asks 3.7 times the
    weight bucket (2,000 every 30 s of 17.8 weight/s) while the funding-history backfill runs for about
    50 minutes: with the bucket served only by turns, an open-interest round lasted longer than the
    series' 300 s staleness limit. Every gap between two values of an instrument's open interest (and
    from the start to its first) is measured in virtual seconds, and the backfill must still complete
    without one refused request."""
    n, share = 40, 0.01
    clock = VirtualClock(START)
    sim = sim_main.Simulator(
        seed=7,
        base_port=0,
        tick_seconds=5.0,
        instruments_per_exchange=n,
        exchanges=(Exchange.BINANCE,),
        options=sim_server.SimOptions(okx_funding_push_s=30.0),
        clock=clock,
    )
    limiter = sim.servers[Exchange.BINANCE].limiter
    assert limiter is not None
    limiter.clock = clock.monotonic
    await sim.start()
    # prices and funding never go stale between the steps; open interest keeps its default limit
    stale = {"price_seconds": 86400, "funding_seconds": 86400}
    exchanges = sim.exporter_exchanges(n, futures={"enabled": False}, stale=stale)
    cfg = Config.model_validate(
        {"listen_address": "127.0.0.1:0", "exchanges": exchanges, "rest_budget": {"fraction": share}}
    )
    limit = cfg.exchanges[Exchange.BINANCE].stale.open_interest_seconds
    assert limit == 300.0 and cfg.exchanges[Exchange.BINANCE].poll.open_interest_seconds == 30.0
    exporter = Exporter(cfg, clock=clock, budget_clock=clock, serve=False, startup_budget_s=0)
    stop = asyncio.Event()
    task = asyncio.create_task(exporter.run(stop))
    answered = [0]

    def answer(*_: object) -> None:
        answered[0] += 1

    last: dict[str, float] = {}  # instrument -> when its open interest last arrived (START before any)
    gaps: dict[str, float] = {}  # instrument -> the longest time without a new value

    def watch() -> None:
        now = clock.time()
        for (ex, inst), st in exporter.state.instruments.items():
            if ex is not Exchange.BINANCE:
                continue
            at = st.oi_at
            prev = last.get(inst, START)
            if at > prev:
                gaps[inst] = max(gaps.get(inst, 0.0), at - prev)
                last[inst] = prev = at
            gaps[inst] = max(gaps.get(inst, 0.0), now - prev)

    def complete() -> bool:
        sts = [st for (ex, _), st in exporter.state.instruments.items() if ex is Exchange.BINANCE]
        return len(sts) == n and all(
            len(st.settlements) >= 20
            and len(st.anchor_samples) >= 300
            and len(st.mark_minutes) >= 200
            and len(st.oi_samples) >= 40
            for st in sts
        )

    def sent() -> int:
        return sum(h.requests for (ex, _), h in exporter.state.rest.items() if ex is Exchange.BINANCE)

    try:
        await wait_until(lambda: Exchange.BINANCE in exporter.runtimes, 10, 0.001)
        client = exporter.runtimes[Exchange.BINANCE].client
        client.recorder = answer
        client.failure_recorder = answer

        async def step() -> None:
            # time moves only once every request sent is answered and its answer applied
            await wait_until(lambda: answered[0] >= sent(), 10, 0.0)
            for _ in range(5):
                await asyncio.sleep(0)
            watch()
            nxt = clock.next_deadline()
            await clock.advance_async(min(1.0, max(0.0, nxt - clock.time())) if nxt is not None else 1.0)

        def published() -> dict[str, float]:
            """The split as /metrics shows it: each poller's period and its part of the bucket that holds it."""
            text = exporter.registry.render(names={"fr_rest_poll_period_seconds", "fr_rest_poll_budget_ratio"})
            out = {}
            for fam in text_string_to_metric_families(text.decode()):
                for sm in fam.samples:
                    key = sm.labels["poller"] + (f" {sm.labels['bucket']}" if "bucket" in sm.labels else "")
                    out[key] = sm.value
            return out

        while clock.time() < START + 600:
            await step()
        during = published()
        while not complete() and clock.time() < START + 4500:
            await step()
        took = clock.time() - START
        watch()
        assert complete(), f"the backfill was not complete after {took:.0f} virtual seconds"
        assert took > 1800  # the funding history's pace: the pollers ran beside it for most of an hour
        worst = max(gaps.values())
        late = sorted(i for i, g in gaps.items() if g > limit)
        assert len(gaps) == n and not late, f"{len(late)} instrument(s) without open interest for up to {worst:.0f} s"
        await wait_until(lambda: answered[0] >= sent(), 10, 0.001)
        assert (limiter.refused, limiter.banned) == (0, 0) and limiter.accepted >= sent()
        # the split was published: the open-interest round as the guarantee allows it (within 0.9 of the
        # limit, which stays), the long/short round stretched and its staleness limit following it
        budget = exporter.runtimes[Exchange.BINANCE].client.budget
        oi_period, ls_period = during["open_interest"], during["long_short_ratio"]
        # n requests of weight 1 at the guaranteed part of the weight bucket's rate make one round
        assert oi_period == pytest.approx(n / (during["open_interest weight"] * budget.rate("weight")))
        assert 30.0 < oi_period <= 0.9 * limit and worst <= oi_period + 30.0
        assert ls_period > 0.9 * 1800.0
        stale = exporter.config.exchanges[Exchange.BINANCE].stale
        followed = stale.long_short_ratio_seconds
        assert stale.open_interest_seconds == limit and followed == pytest.approx(ls_period / 0.9)
        # the backfills done, the split is made again: long/short's round fits its own limit now, which
        # comes back down one span of it later (values read under the old split never go absent at once)
        rt = exporter.runtimes[Exchange.BINANCE]
        while rt.backfilling and clock.time() < START + 4600:
            await step()
        assert not rt.backfilling
        after = published()
        assert after["long_short_ratio"] <= 0.9 * 1800.0 < ls_period
        assert stale.long_short_ratio_seconds == followed
        switched = clock.time()
        while clock.time() < switched + 1800.0 + 5.0:
            await step()
        assert stale.long_short_ratio_seconds == 1800.0 and stale.open_interest_seconds == limit
        assert max(gaps.values()) <= limit  # and open interest stayed fresh throughout
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 15)
        await sim.stop()


def test_a_settlement_history_merged_at_once_leaves_the_window_record_by_record_does() -> None:
    """Deribit's 30 days of hourly observations behind a live one: merged record by record, every record
    re-sorted the whole window (quadratic); the start-up merges an instrument's page at once. The
    window is the same: order, duplicates at a page boundary, a NaN, two intervals, the live record."""
    cfg = Config.model_validate({"listen_address": "127.0.0.1:0"})
    info = InstrumentInfo(Exchange.DERIBIT, "BTC-PERPETUAL", "BTC", "USD", inverse=True, funding_interval_s=28800)
    t0 = START - 30 * 86400.0
    records = [
        FundingSettlement(Exchange.DERIBIT, info.instrument, t0 + 3600.0 * k, 1e-5 * (k % 7 - 3)) for k in range(720)
    ]
    records[100:100] = [records[99]]  # a page boundary repeated
    records[5] = msgspec.structs.replace(records[5], rate=float("nan"))
    records[6] = msgspec.structs.replace(records[6], interval_s=3600.0)
    records.reverse()  # newest first, as some exchanges page
    windows = []
    for at_once in (False, True):
        exporter = Exporter(cfg, clock=VirtualClock(START), serve=False)
        st = exporter.state.register(info)
        exporter.state.apply(FundingSettlement(Exchange.DERIBIT, info.instrument, START - 60.0, 2e-5))  # live
        if at_once:
            exporter._apply_history(Exchange.DERIBIT, info.instrument, records)
        else:
            exporter.state.apply_many(records)
        windows.append((list(st.settlements), st.funding_interval_s))
    assert windows[0] == windows[1] and len(windows[0][0]) == 720  # 720 times, less the NaN, plus the live one
