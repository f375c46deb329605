"""How long the exporter's start takes per exchange at N instruments, within the REST budgets (default
share 0.5), against the simulator (which refuses what goes beyond the exchanges' per-IP limits): when
every instrument has its funding history, its anchor samples (6 h), its 4 h of 1-minute marks (the
factor backfill) and its open-interest history, and how many requests the simulator refused.

The whole start runs as in production (instrument list, dated futures, streams, the four backfills,
the pollers from the first second), but on one VirtualClock shared by the simulator's market, its
rate limiter and the exporter's budgets: time moves to the next sleeper's deadline once every request
sent has reached the simulator, so a request takes no simulated time (on a real network it takes a
little next to the budget's spacing) and a 2,000-instrument start that takes the budget an hour runs in
minutes. One exchange at a time (their budgets are independent; one at a time keeps the CPU bounded).

    python bench/bench_history_backfill.py [N,N,...] [exchange,...] [limit_s]
    python bench/bench_history_backfill.py 100,500,2000 binance,bybit,okx,deribit 14400
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.model import Exchange
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

SIZES = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "100,500,2000").split(",")]
EXCHANGES = [Exchange(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "binance,bybit,okx,deribit").split(",")]
LIMIT_S = float(sys.argv[3]) if len(sys.argv) > 3 else 4 * 3600.0
START = 1_767_225_600.0 + 7 * 86400.0 + 1.0
WHAT = ("funding history", "anchors", "marks 4h", "oi history")


def _config(sim: sim_main.Simulator, n: int) -> Config:
    # simulated time moves in steps: nothing goes stale while the start is watched
    stale = {"price_seconds": 86400, "funding_seconds": 86400, "open_interest_seconds": 86400}
    exchanges = sim.exporter_exchanges(n, stale=stale)  # the simulator runs the one exchange measured
    return Config.model_validate({"listen_address": "127.0.0.1:0", "exchanges": exchanges})


async def run(ex: Exchange, n: int) -> str:
    clock = VirtualClock(START)
    # ticks of 5 s: the streams' load stays small beside the REST work measured here
    sim = sim_main.Simulator(
        seed=11,
        base_port=0,
        tick_seconds=5.0,
        instruments_per_exchange=n,
        exchanges=(ex,),
        options=sim_server.SimOptions(okx_funding_push_s=30.0),
        clock=clock,
    )
    limiter = sim.servers[ex].limiter
    assert limiter is not None
    limiter.clock = clock.monotonic  # the limits judged in the seconds the budgets pace in
    await sim.start()
    exporter = Exporter(_config(sim, n), clock=clock, budget_clock=clock, serve=False, startup_budget_s=0.0)
    anchors = exporter.runtimes  # filled by start(); read below
    stop = asyncio.Event()
    wall0 = time.perf_counter()
    task = asyncio.create_task(exporter.run(stop))
    for _ in range(100):  # start() builds the runtimes before its first request
        if ex in exporter.runtimes:
            break
        await asyncio.sleep(0)
    answered = [0]  # requests the client has an answer for (success or failure)

    def answer(*_: object) -> None:
        answered[0] += 1

    rt0 = exporter.runtimes[ex]
    rt0.client.recorder = answer
    rt0.client.failure_recorder = answer
    done: dict[str, float] = {}
    checks = {
        "funding history": lambda st: len(st.settlements) >= 20,  # 30 days of settlements
        "anchors": lambda st: len(st.anchor_samples) >= 300,
        "marks 4h": lambda st: len(st.mark_minutes) >= 200,
        "oi history": lambda st: len(st.oi_samples) >= 40,
    }
    checked = 0.0
    try:
        while clock.time() - START < LIMIT_S and len(done) < len(WHAT):
            rt = anchors.get(ex)
            if clock.time() - checked >= 1.0 and rt is not None:  # to the second, not at every step
                checked = clock.time()
                sts = [st for (e, _), st in exporter.state.instruments.items() if e is ex]
                if not rt.rest.candle_kinds >= {"mark", "index", "premium"}:
                    done.setdefault("anchors", float("nan"))  # no anchor backfill on this exchange
                if not rt.rest.has_open_interest_history:
                    done.setdefault("oi history", float("nan"))
                for what, ok in checks.items():
                    if len(sts) == n and what not in done and all(ok(st) for st in sts):
                        done[what] = clock.time() - START
            # every request sent is answered and its answer used (the next request, if any, is sent or
            # waits on the clock): only then does time move, so a request takes no simulated time
            for _ in range(20000):
                for _ in range(5):
                    await asyncio.sleep(0)
                sent = sum(h.requests for (e, _), h in exporter.state.rest.items() if e is ex)
                if answered[0] >= sent:
                    break
                await asyncio.sleep(0.0002)
            nxt = clock.next_deadline()
            await clock.advance_async(min(1.0, max(0.0, nxt - clock.time())) if nxt is not None else 1.0)
        wall = time.perf_counter() - wall0
        snap = limiter.snapshot()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 60)
        await sim.stop()

    def fmt(what: str) -> str:
        if what not in done:
            return f"not in {LIMIT_S:.0f} s"
        v = done[what]
        return "-" if v != v else f"{v:.0f} s"

    cells = " | ".join(fmt(w) for w in WHAT)
    return (
        f"| {ex.value} | {n} | {cells} | {snap['accepted']:.0f} | {snap['refused']:.0f} / {snap['banned']:.0f} "
        f"| {wall:.0f} s |"
    )


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    print(f"start-up per exchange, simulated seconds until every instrument has it (limit {LIMIT_S:.0f} s)")
    print(f"| exchange | N | {' | '.join(WHAT)} | requests | refused / banned | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in SIZES:
        for ex in EXCHANGES:
            print(await run(ex, n), flush=True)


asyncio.run(main())
