"""Scrape benchmark: a full /metrics render at 2,000 instruments with full analytics windows.

State: 500 instruments per exchange, every value fresh; settlements covering the whole z-score
window at each instrument's own interval (8 h, 4 h, 1 h; Deribit: hourly observations), six hours
of one-a-minute anchor samples, three hours of OI samples, 20 liquidations each in the last hour.
``--worst`` fills the settlement and anchor deques to their bounds (2,000 each), which is where a
long-running process ends up, since state trims them by count, not by window.

Prints medians of: the first (cold-cache) render, a warm render (state unchanged), a render after
every instrument got a new price/funding update, a quarter a new anchor sample and an eighth a new
settlement (what a real scrape every 15 s sees, pessimistically) without and with gc.freeze() of
the state, OpenMetrics, gzip level 1, and prometheus_client.generate_latest of the same registry,
with the ratio. Target: full render <= 150 ms.

Run: ``.venv/bin/python bench/bench_scrape.py [--per-exchange 500] [--runs 15] [--worst]``.
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import math
import os
import platform
import random
import statistics
import sys
import time

from prometheus_client import generate_latest

from exporter.config import Config
from exporter.metrics import ExporterRegistry, build_registry
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, InsuranceFund, Liquidation, MarketUpdate, Side
from exporter.state import MARK_MINUTES, MAX_SETTLEMENTS, MarketState

T0 = 1_765_541_474.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    return (
        f"machine: {cpu}, {os.cpu_count()} vCPU, {platform.system()} {platform.release()}, "
        f"CPython {platform.python_version()}"
    )


def _symbol(ex: Exchange, n: int) -> tuple[str, str, str]:
    base = f"C{n:03d}"
    if ex is Exchange.OKX:
        return f"{base}-USDT-SWAP", base, "USDT"
    if ex is Exchange.DERIBIT:
        return f"{base}_USDC-PERPETUAL", base, "USDC"
    return f"{base}USDT", base, "USDT"


def _interval(ex: Exchange, n: int) -> float:
    if ex is Exchange.DERIBIT:
        return EIGHT_HOURS
    if ex is Exchange.BYBIT and n % 5 == 0:
        return 3600.0
    if ex is Exchange.BINANCE and n % 4 == 0:
        return 4 * 3600.0
    return EIGHT_HOURS


def build_state(
    per_exchange: int = 500, worst: bool = False, seed: int = 1, t0: float = T0, mark_history: bool = False
) -> tuple[Clock, MarketState, Config]:
    """2,000 instruments with full windows, fresh at ``t0`` (see the module docstring). ``mark_history``:
    each instrument's window of minute closes full too (4 h and the spare, as the start-up backfill
    leaves it), so the realised volatility has every window to compute (without it the windows hold
    only the minutes the run itself closes, and the volatility stays absent)."""
    rng = random.Random(seed)
    hist = random.Random(seed + 1)  # the closes' own: every other value the same with or without them
    clock = Clock(t0)
    state = MarketState(clock=clock)
    cfg = Config()
    window = cfg.analytics.zscore_window_seconds
    now = clock.t
    for ex in Exchange:
        state.register_exchange(ex)
        for n in range(per_exchange):
            sym, base, quote = _symbol(ex, n)
            interval = _interval(ex, n)
            st = state.register(
                InstrumentInfo(
                    ex,
                    sym,
                    base,
                    quote,
                    funding_interval_s=interval,
                    funding_cap=0.003 if ex is not Exchange.DERIBIT else None,
                    funding_floor=-0.003 if ex is not Exchange.DERIBIT else None,
                )
            )
            step = 3600.0 if ex is Exchange.DERIBIT else interval  # Deribit: hourly observations
            count = MAX_SETTLEMENTS if worst else int(window // step)
            level = rng.uniform(-2e-4, 4e-4)
            state.add_settlements(st, [(now - (i + 1) * step, level + rng.gauss(0, 5e-5)) for i in range(count)])
            px = 10 ** rng.uniform(-2, 4.8)
            rate = level + rng.gauss(0, 5e-5)
            n_anchor = (st.anchor_samples.maxlen or 2000) if worst else int(cfg.analytics.anchor_window_seconds // 60)
            st.anchor_samples.extend(
                (now - (n_anchor - i) * 60.0, rate + rng.gauss(0, 2e-5), rng.gauss(0, 5e-4)) for i in range(n_anchor)
            )
            st.oi_samples.extend((now - (180 - i) * 60.0, 1e8 * (1 + 0.001 * i)) for i in range(180))
            if mark_history:
                minute = now // 60.0 * 60.0
                closes = MARK_MINUTES
                walk, x = [], px
                for _ in range(closes):  # a random walk of minute moves of 0.1 %
                    x *= math.exp(hist.gauss(0, 1e-3))
                    walk.append(x)
                st.mark_minutes.extend((minute - (closes - i) * 60.0, walk[i]) for i in range(closes))
            for i in range(20):  # 40,000 liquidations in the last hour across the market: a busy hour
                side = Side.LONG if i % 2 else Side.SHORT
                usd = rng.uniform(1e3, 1e5)
                st.liq_recent.append(Liquidation(ex, sym, now - 3600 + i * 180.0, side, px, usd / px, usd))
                if side is Side.LONG:
                    st.liq_long_count += 1
                    st.liq_long_usd += 5e4
                else:
                    st.liq_short_count += 1
                    st.liq_short_usd += 5e4
            state.apply(
                MarketUpdate(
                    ex,
                    sym,
                    mark_price=px,
                    index_price=px * (1 + rng.gauss(0, 5e-4)),
                    funding_rate=rate,
                    next_funding_time=None if ex is Exchange.DERIBIT else now + 600,
                    open_interest_usd=rng.uniform(1e6, 5e9),
                ),
                now,
            )
        for stream in ("markPrice", "forceOrder", "tickers"):
            h = state.stream(ex, stream)
            h.connected, h.last_message_at, h.last_parsed_at, h.messages = True, now, now, 1000
        for ep in ("openInterest", "fundingRate", "longShortRatio", "exchangeInfo"):
            r = state.rest_endpoint(ex, ep)
            r.requests, r.last_success_at = 100, now
            r.failures["rate_limited"] = 1
        state.apply(InsuranceFund(ex, "USDT", now, 1e9), now)
    return clock, state, cfg


def churn(clock: Clock, state: MarketState, rng: random.Random, settle_share: float = 0.125) -> None:
    """What happens between two 15 s scrapes: every instrument updates (a quarter of them take a new
    anchor sample, one a minute), an eighth settle (pessimistic: real settlements bunch at 8 h marks)."""
    clock.t += 15.0
    for st in state.snapshot():
        info = st.info
        rate = (st.funding_rate or 0.0) + rng.gauss(0, 1e-6)
        state.apply(
            MarketUpdate(info.exchange, info.instrument, mark_price=(st.mark_price or 1.0) * 1.0001, funding_rate=rate),
            clock.t,
        )
        if rng.random() < settle_share:
            state.add_settlements(st, [(clock.t, rate)])


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ms(xs: list[float]) -> str:
    med, lo, hi = statistics.median(xs) * 1e3, min(xs) * 1e3, max(xs) * 1e3
    return f"median {med:7.1f} ms  (min {lo:.1f}, max {hi:.1f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-exchange", type=int, default=500)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--worst", action="store_true", help="settlement and anchor deques at their bounds (2,000 each)")
    args = ap.parse_args()
    print(machine())
    t = time.perf_counter()
    clock, state, cfg = build_state(args.per_exchange, args.worst)
    print(
        f"state: {len(state.instruments)} instruments, built in {time.perf_counter() - t:.1f} s; "
        f"settlements per instrument {statistics.median(len(s.settlements) for s in state.snapshot()):.0f} (median)"
    )
    reg: ExporterRegistry = build_registry(cfg, state)
    rng = random.Random(2)

    t = time.perf_counter()
    body = reg.render()
    cold = time.perf_counter() - t
    samples = sum(1 for ln in body.split(b"\n") if ln and not ln.startswith(b"#"))
    print(f"exposition: {samples} samples, {len(body) / 1e6:.2f} MB text")
    print(f"render text, cold cache (first scrape)       : {cold * 1e3:7.1f} ms")
    warm = timed(reg.render, args.runs)
    print(f"render text, warm (state unchanged)          : {ms(warm)}")

    churned: list[float] = []
    for _ in range(args.runs):
        churn(clock, state, rng)
        churned += timed(reg.render, 1)
    print(f"render text, after updates + 1/8 settlements : {ms(churned)}")
    gc.collect()
    gc.freeze()  # as the app can after backfill: the state's big windows leave the collector's scans
    frozen: list[float] = []
    frozen_cpu: list[float] = []  # the render thread's CPU: on a loaded machine wall holds others' slices
    for _ in range(args.runs):
        churn(clock, state, rng)
        gc.collect()  # as timed()
        t, c = time.perf_counter(), time.thread_time()
        reg.render()
        frozen_cpu.append(time.thread_time() - c)
        frozen.append(time.perf_counter() - t)
    print(f"  same, after gc.freeze() of the state        : {ms(frozen)}")
    print(f"  same, CPU time of the rendering thread      : {ms(frozen_cpu)}")
    om = timed(lambda: reg.render(openmetrics=True), args.runs)
    print(f"render OpenMetrics, warm                     : {ms(om)}")
    gz = timed(lambda: gzip.compress(body, compresslevel=1), args.runs)
    print(
        f"gzip level 1 of the text body                : {ms(gz)}  -> "
        f"{len(gzip.compress(body, compresslevel=1)) / 1e6:.2f} MB"
    )
    # same bytes, so the comparison is like for like (process_* CPU and memory move between two renders)
    moving = (b"process_", b"# HELP process_", b"# TYPE process_")

    def steady(body: bytes) -> list[bytes]:
        return [ln for ln in body.splitlines() if not ln.startswith(moving)]

    assert steady(generate_latest(reg)) == steady(reg.render())
    ref = timed(lambda: generate_latest(reg), max(3, args.runs // 3))
    print(f"prometheus_client.generate_latest, same data : {ms(ref)}")
    print(f"ratio generate_latest / fast render (warm)   : {statistics.median(ref) / statistics.median(warm):5.1f}x")
    print(
        f"per sample: fast {statistics.median(warm) / samples * 1e6:.2f} us, "
        f"generate_latest {statistics.median(ref) / samples * 1e6:.2f} us"
    )
    target = statistics.median(frozen) * 1e3  # as the exporter runs: gc.freeze() after its warm-up render
    print(
        f"target full render <= 150 ms: {'met' if target <= 150 else 'NOT met'} ({target:.1f} ms median, "
        f"churned state, gc.freeze() as the exporter; {statistics.median(frozen_cpu) * 1e3:.1f} ms CPU; "
        f"{statistics.median(churned) * 1e3:.1f} ms without the freeze; load average {os.getloadavg()[0]:.1f})"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
