"""How long the exporter's start takes per exchange at N instruments, within the REST budgets (default
share 0.5), against the simulator (which refuses what goes beyond the exchanges' per-IP limits): when
every instrument has its funding history, its anchor samples (6 h), its 4 h of 1-minute marks (the
factor backfill) and its open-interest history, and how many requests the simulator refused.

The whole start runs as in production (instrument list, dated futures, streams, the four backfills,
the pollers from the first second), but on one VirtualClock shared by the simulator's market, its
rate limiter and the exporter's budgets: time moves to the next sleeper's deadline once every request
sent has been answered, so a request takes no simulated time (on a real network it takes a little
next to the budget's spacing) and a 2,000-instrument start that takes the budget 45 minutes runs as
fast as the CPU allows. Each (exchange, N) runs in its own process (their budgets are independent),
``--jobs`` at a time, largest first; the figures are simulated seconds and counts, which neither the
machine's load nor the number of jobs changes. ``cpu`` is the run's own process CPU.

    python bench/bench_history_backfill.py                     # the README's rows (a few minutes on 2 cores)
    python bench/bench_history_backfill.py --sizes 500 --exchanges binance --jobs 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.model import Exchange
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server
from exporter.state import InstrumentState

# the rows the README and docs/history.md quote: Binance at 100, every exchange at 500 and 2,000
DEFAULT_CASES = [(Exchange.BINANCE, 100)] + [(ex, n) for n in (500, 2000) for ex in Exchange]
START = 1_767_225_600.0 + 7 * 86400.0 + 1.0
WHAT = ("funding history", "anchors", "marks 4h", "oi history")
# The market steps (and the streams push) every TICK_S simulated seconds: the REST work measured here
# does not depend on it (the backfills read history, not the streams), and at 2,000 instruments a
# step of the market model costs ~0.1 s of CPU, so a long tick keeps the run to the REST work.
TICK_S = 30.0


def _config(sim: sim_main.Simulator, n: int) -> Config:
    # simulated time moves in steps: nothing goes stale while the start is watched
    stale = {"price_seconds": 86400, "funding_seconds": 86400, "open_interest_seconds": 86400}
    exchanges = sim.exporter_exchanges(n, stale=stale)  # the simulator runs the one exchange measured
    return Config.model_validate({"listen_address": "127.0.0.1:0", "exchanges": exchanges})


async def run(ex: Exchange, n: int, limit_s: float, tick_s: float = TICK_S) -> str:
    clock = VirtualClock(START)
    sim = sim_main.Simulator(
        seed=11,
        base_port=0,
        tick_seconds=tick_s,
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
    runtimes = exporter.runtimes  # filled by start(); read below
    stop = asyncio.Event()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(exporter.run(stop))
    for _ in range(100):  # start() builds the runtimes before its first request
        if ex in runtimes:
            break
        await asyncio.sleep(0)
    answered = [0]  # requests the client has an answer for (success or failure)

    def answer(*_: object) -> None:
        answered[0] += 1

    rt0 = runtimes[ex]
    rt0.client.recorder = answer
    rt0.client.failure_recorder = answer
    done: dict[str, float] = {}
    checks = {
        "funding history": lambda st: len(st.settlements) >= 20,  # 30 days of settlements
        "anchors": lambda st: len(st.anchor_samples) >= 300,
        "marks 4h": lambda st: len(st.mark_minutes) >= 200,
        "oi history": lambda st: len(st.oi_samples) >= 40,
    }
    # Per figure, the instruments in a fixed order and how many of them, from the front, are complete.
    # A complete instrument stays complete (its windows only fill during the start), so "all complete"
    # is the first second the front reaches the end: each second looks at the first incomplete one
    # onwards, not at all of them (the same second as a full scan, at a fraction of its cost).
    order: list[InstrumentState] = []
    front = dict.fromkeys(checks, 0)
    rest = exporter.state.rest
    checked = 0.0
    try:
        while clock.time() - START < limit_s and len(done) < len(WHAT):
            rt = runtimes.get(ex)
            if clock.time() - checked >= 1.0 and rt is not None:  # to the second, not at every step
                checked = clock.time()
                if not rt.rest.candle_kinds >= {"mark", "index", "premium"}:
                    done.setdefault("anchors", float("nan"))  # no anchor backfill on this exchange
                if not rt.rest.has_open_interest_history:
                    done.setdefault("oi history", float("nan"))
                if not order:
                    sts = [st for (e, _), st in exporter.state.instruments.items() if e is ex]
                    if len(sts) == n:
                        order = sts
                for what, ok in checks.items():
                    if what in done or not order:
                        continue
                    i = front[what]
                    while i < n and ok(order[i]):
                        i += 1
                    front[what] = i
                    if i == n:
                        done[what] = clock.time() - START
            # every request sent is answered and its answer used (the next request, if any, is sent or
            # waits on the clock): only then does time move, so a request takes no simulated time
            for _ in range(20000):
                for _ in range(5):
                    await asyncio.sleep(0)
                sent = sum(h.requests for (e, _), h in rest.items() if e is ex)
                if answered[0] >= sent:
                    break
                await asyncio.sleep(0.0002)
            nxt = clock.next_deadline()
            await clock.advance_async(min(1.0, max(0.0, nxt - clock.time())) if nxt is not None else 1.0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        snap = limiter.snapshot()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 60)
        await sim.stop()

    def fmt(what: str) -> str:
        if what not in done:
            return f"not in {limit_s:.0f} s"
        v = done[what]
        return "-" if v != v else f"{v:.0f} s"

    cells = " | ".join(fmt(w) for w in WHAT)
    return (
        f"| {ex.value} | {n} | {cells} | {snap['accepted']:.0f} | {snap['refused']:.0f} / {snap['banned']:.0f} "
        f"| {wall:.0f} s | {cpu:.0f} s |"
    )


def one(case: tuple[Exchange, int, float, float]) -> str:
    """One (exchange, N) in this process (a pool worker): its table row."""
    logging.basicConfig(level=logging.ERROR)
    # the simulator's streams closing under a last compressed frame at the end: not the figures' business
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    ex, n, limit_s, tick_s = case
    return asyncio.run(run(ex, n, limit_s, tick_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", help="instruments per exchange, e.g. 100,500,2000 (default: the README's rows)")
    ap.add_argument("--exchanges", help="e.g. binance,okx (default: the README's rows)")
    ap.add_argument("--limit", type=float, default=4 * 3600.0, help="simulated seconds at most per run [14400]")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once, one process each [CPUs]")
    ap.add_argument("--tick", type=float, default=TICK_S, help=f"the market's step, simulated seconds [{TICK_S:.0f}]")
    args = ap.parse_args()
    if args.sizes or args.exchanges:
        sizes = [int(x) for x in (args.sizes or "100,500,2000").split(",")]
        exchanges = [Exchange(x) for x in (args.exchanges or ",".join(e.value for e in Exchange)).split(",")]
        cases = [(ex, n) for n in sizes for ex in exchanges]
    else:
        cases = DEFAULT_CASES
    header = "\n".join(
        (
            f"start-up per exchange, simulated seconds until every instrument has it (limit {args.limit:.0f} s)",
            f"| exchange | N | {' | '.join(WHAT)} | requests | refused / banned | wall | cpu |",
            "|---|---|---|---|---|---|---|---|---|---|",
        )
    )
    print(header, flush=True)
    # the largest first, so the pool's last minutes are not one long run alone; each row is printed as
    # its run ends, and the whole table in order at the end
    order = sorted(range(len(cases)), key=lambda i: -cases[i][1])
    rows: dict[int, str] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(cases)))) as pool:
        futures = {pool.submit(one, (*cases[i], args.limit, args.tick)): i for i in order}
        for fut in as_completed(futures):
            rows[futures[fut]] = fut.result()
            print(rows[futures[fut]], flush=True)
    print(f"({len(cases)} runs, {args.jobs} at a time: {time.perf_counter() - t0:.0f} s of wall time)\n")
    print(header, "\n".join(rows[i] for i in range(len(cases))), sep="\n")


if __name__ == "__main__":
    main()
