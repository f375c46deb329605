"""The start-up backfill at scale within the REST budgets: the exporter against the simulator, both on
one VirtualClock, the simulator enforcing the exchanges' per-IP limits on that clock and the
exporter's budgets pacing on it too. Virtual minutes cost a few real seconds, so a start that takes
the budget minutes is checked in full: every instrument's history in, not one request refused."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from support import wait_until

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.limits import LIMITS
from exporter.model import Exchange
from exporter.rest.client import RequestBudget
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
    weight = budget.rate("weight") * 300 + 0.1 * 0.5 * 2400  # the refill over the run and the burst
    assert polls + 2 * pages + funding <= weight + 1  # never above the budget
    assert polls + 2 * pages + funding >= 0.95 * weight  # and the budget was used
    # the weight bucket's turns are shared in arrival order: four callers each, as many requests each
    assert pages >= 0.8 * polls
    # a funding-history call waits in its own slow bucket without holding up the weight bucket
    assert funding == pytest.approx(budget.rate("funding") * 300 + 0.1 * 0.5 * 500, abs=2)


def _config(sim: sim_main.Simulator, n: int, oi_poll_s: float) -> Config:
    ws, rest = sim.urls(Exchange.BINANCE)
    binance = {
        "ws_url": ws,
        "rest_url": rest,
        "instruments": [],
        "all_perpetuals": True,
        "max_instruments": n,
        "futures": {"enabled": False},
        # market time moves in steps the test makes: nothing may go stale while it looks
        "stale": {"price_seconds": 3600, "funding_seconds": 3600, "open_interest_seconds": 3600},
        "poll": {"open_interest_seconds": oi_poll_s},
    }
    others = {ex.value: {"enabled": False} for ex in Exchange if ex is not Exchange.BINANCE}
    # a tenth of the limits: the same contention as 500 instruments at the default share, at 40
    return Config.model_validate(
        {"listen_address": "127.0.0.1:0", "exchanges": {"binance": binance, **others}, "rest_budget": {"fraction": 0.1}}
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
        requests = sum(h.requests for (ex, _), h in exporter.state.rest.items() if ex is Exchange.BINANCE)
        async with httpx.AsyncClient() as http:
            truth = (await http.get(sim.urls(Exchange.BINANCE)[1] + "/_sim/truth")).json()
        assert truth["rate_limits"]["refused"] == 0 and truth["rate_limits"]["banned"] == 0, truth["rate_limits"]
        assert truth["rate_limits"]["accepted"] == requests  # every request counted by the one client
        polls = exporter.state.rest[(Exchange.BINANCE, "open_interest")].requests
        assert polls > 3 * n  # the poller ran all along, several rounds
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 15)
        await sim.stop()
