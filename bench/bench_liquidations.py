"""Liquidation benchmark: the cost of one liquidation in the state store, by instruments followed.

For 100 / 2,000 / 8,000 instruments (a quarter per exchange, every base on all four exchanges), a
stream of 1,000 liquidations per (simulated) second on random instruments, a quarter of them on the
largest base (a cascade), goes through ``MarketState.apply``: counters, the 1 h flow window and the
per-base threshold event. A minute of that stream is applied first, so every window is full.
Prints CPU microseconds per liquidation (median of runs) and what 1,000 liquidations/s cost at
that size as a share of one core (target: at most 5 % at 8,000 instruments).

Run: ``.venv/bin/python bench/bench_liquidations.py [--sizes 100,2000,8000] [--count 20000] [--runs 3]``.
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import time

from exporter.model import Exchange, InstrumentInfo, Liquidation, Side
from exporter.state import MarketState

T0 = 1_765_541_474.0
RATE = 1000.0  # liquidations per second of the simulated stream
TARGET_SHARE = 0.05  # of one core, at 8,000 instruments and 1,000 liquidations/s


def build(n: int) -> tuple[MarketState, list[InstrumentInfo], list[float]]:
    clock = [T0]
    state = MarketState(clock=lambda: clock[0])
    infos = []
    per_exchange = max(1, n // 4)
    for ex in Exchange:
        for k in range(per_exchange):
            base = f"B{k:04d}"
            info = InstrumentInfo(ex, f"{base}USDT", base, "USDT", funding_interval_s=28800.0)
            state.register(info)
            infos.append(info)
    return state, infos, clock


def stream(infos: list[InstrumentInfo], count: int, t_start: float, rng: random.Random) -> list[Liquidation]:
    top = [i for i in infos if i.base == "B0000"]
    out = []
    for j in range(count):
        info = rng.choice(top) if rng.random() < 0.25 else rng.choice(infos)
        t = t_start + j / RATE
        usd = rng.lognormvariate(9.5, 1.2)  # median ~ 13k USD, a long tail
        side = Side.LONG if rng.random() < 0.6 else Side.SHORT
        out.append(Liquidation(info.exchange, info.instrument, t, side, 100.0, usd / 100.0, usd))
    return out


def per_liquidation_us(n: int, count: int, rng: random.Random) -> tuple[float, int]:
    state, infos, clock = build(n)
    warm = stream(infos, int(60 * RATE), T0, rng)  # one minute: the threshold window is full
    for liq in warm:
        clock[0] = liq.event_time or clock[0]
        state.apply(liq, clock[0])
    t_start = T0 + 60.0
    liqs = stream(infos, count, t_start, rng)
    gc.collect()
    gc.freeze()  # as the exporter runs: long-lived objects frozen once, the collector on
    try:
        c0 = time.process_time()
        for liq in liqs:
            state.apply_many((liq,), liq.event_time)  # one liquidation a frame, the connection's call
        cpu = time.process_time() - c0
    finally:
        gc.unfreeze()  # the next size's state is built from scratch
    events = sum(1 for e in state.events if e.kind == "liquidation")
    return cpu / count * 1e6, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,2000,8000", help="instrument counts, comma-separated")
    ap.add_argument("--count", type=int, default=20000, help="liquidations timed per run (20 s of the stream)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(7)
    print(f"machine: {platform.processor() or platform.machine()}, CPython {platform.python_version()}")
    print(f"{'instruments':>11}  {'us/liquidation':>14}  {'min':>7}  {'max':>7}  {'share of a core at 1,000/s':>26}")
    share_8k = None
    for n in (int(x) for x in args.sizes.split(",")):
        costs = []
        for _ in range(args.runs):
            us, _events = per_liquidation_us(n, args.count, rng)
            costs.append(us)
        med = statistics.median(costs)
        share = med * RATE / 1e6
        if n == 8000:
            share_8k = share
        print(f"{n:>11,}  {med:>14.2f}  {min(costs):>7.2f}  {max(costs):>7.2f}  {share * 100:>25.2f}%")
    if share_8k is not None:
        verdict = "met" if share_8k <= TARGET_SHARE else "NOT met"
        print(f"target <= {TARGET_SHARE:.0%} of a core at 8,000 instruments and 1,000 liquidations/s: {verdict}")


if __name__ == "__main__":
    main()
