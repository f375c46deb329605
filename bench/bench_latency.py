"""Latency benchmark: frame arrival -> value in state, while /metrics is scraped every second.

Three processes, so that only the exporter's own work shares its GIL:
* sender: a loopback websocket server speaking Binance's combined stream: one ``!markPrice@arr@1s``
  frame a second with 500 symbols (about 60 KB, as the real one) plus ``--small-rate`` small
  ``!forceOrder@arr`` frames a second; each frame starts with the wall-clock time it was sent;
* scraper: GET /metrics every second (gzip, as Prometheus does), recording how long each took;
* exporter (this process): 2,000 instruments with full windows (bench_scrape.build_state), the real
  ``FeedConnection`` + Binance parser + ``MarketState.apply_many`` on its asyncio loop, the other
  1,500 instruments updated once a second on the same loop (as their feeds would), and the HTTP
  server in its own thread.

Per frame it records sent -> applied (includes loopback and websocket receive) and received ->
applied (``received_at`` is taken when ``recv()`` returns: parse + apply and any wait for the GIL).
Prints p50/p90/p99/max. Target: p99 < 20 ms.

Run: ``.venv/bin/python bench/bench_latency.py [--seconds 30] [--small-rate 50] [--no-gc-freeze]``.
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scrape import build_state, machine

N_SYMBOLS = 500
SENT_PREFIX = b'{"sent":'


def symbols() -> list[str]:
    return [f"C{n:03d}USDT" for n in range(N_SYMBOLS)]


# ---- sender process ---------------------------------------------------------------------------


def sender_main(port_q: Any, small_rate: float, seconds: float) -> None:
    import orjson
    from websockets.asyncio.server import serve

    rng = random.Random(5)
    syms = symbols()
    prices = {s: 10 ** rng.uniform(-2, 4.8) for s in syms}

    def stamp(payload: bytes) -> bytes:
        # The send time leads the frame at a fixed place: the exporter side reads it without a second parse.
        return SENT_PREFIX + f"{time.time():.6f}".encode() + b"," + payload[1:]

    def mark_frame() -> bytes:
        ms = int(time.time() * 1000)
        rows = []
        for s in syms:
            p = prices[s] = prices[s] * (1 + rng.gauss(0, 1e-4))
            nxt = (ms // 28_800_000 + 1) * 28_800_000
            rows.append(
                {
                    "e": "markPriceUpdate",
                    "E": ms,
                    "s": s,
                    "p": f"{p:.8f}",
                    "i": f"{p * 0.9999:.8f}",
                    "P": f"{p:.8f}",
                    "r": f"{rng.uniform(-3e-4, 5e-4):.8f}",
                    "T": nxt,
                }
            )
        return stamp(orjson.dumps({"stream": "!markPrice@arr@1s", "data": rows}))

    def liq_frame() -> bytes:
        ms = int(time.time() * 1000)
        s = rng.choice(syms)
        p = prices[s]
        q = rng.uniform(0.01, 10)
        o = {
            "s": s,
            "S": rng.choice(("BUY", "SELL")),
            "o": "LIMIT",
            "f": "IOC",
            "q": f"{q:.3f}",
            "p": f"{p:.4f}",
            "ap": f"{p:.4f}",
            "X": "FILLED",
            "l": f"{q:.3f}",
            "z": f"{q:.3f}",
            "T": ms,
        }
        return stamp(orjson.dumps({"stream": "!forceOrder@arr", "data": {"e": "forceOrder", "E": ms, "o": o}}))

    async def handler(ws: Any) -> None:
        loop = asyncio.get_running_loop()
        next_mark = loop.time()
        gap = 1.0 / small_rate if small_rate > 0 else None
        next_small = loop.time() + (gap or 0.0)
        try:
            while True:
                now = loop.time()
                if now >= next_mark:
                    await ws.send(mark_frame())
                    next_mark += 1.0
                if gap is not None and now >= next_small:
                    await ws.send(liq_frame())
                    next_small += rng.expovariate(small_rate)
                nxt = min(next_mark, next_small) if gap is not None else next_mark
                await asyncio.sleep(max(0.0, nxt - loop.time()))
        except Exception:
            return

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
            port_q.put(server.sockets[0].getsockname()[1])
            await asyncio.sleep(seconds + 60)

    asyncio.run(main())


# ---- scraper process --------------------------------------------------------------------------


def scraper_main(url_q: Any, result_q: Any, seconds: float) -> None:
    import httpx

    url = url_q.get()
    durations: list[float] = []
    sizes: list[int] = []
    with httpx.Client(timeout=30) as client:
        end = time.monotonic() + seconds
        nxt = time.monotonic()
        while time.monotonic() < end:
            t = time.perf_counter()
            r = client.get(url, headers={"Accept-Encoding": "gzip"})
            durations.append(time.perf_counter() - t)
            sizes.append(r.num_bytes_downloaded)
            nxt += 1.0
            time.sleep(max(0.0, nxt - time.monotonic()))
    result_q.put((durations, sizes))


# ---- exporter (this process) ------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def line(name: str, xs: list[float]) -> str:
    ms = [x * 1e3 for x in xs]
    return (
        f"{name:34s} p50 {statistics.median(ms):6.2f} ms  p90 {pct(ms, 0.9):6.2f}  p99 {pct(ms, 0.99):6.2f}  "
        f"max {max(ms):6.2f}  (n={len(ms)})"
    )


async def exporter_main(args: argparse.Namespace, port: int, url_q: Any) -> tuple[list[float], list[float], dict]:
    from exporter.config import Config
    from exporter.feeds import feed_for
    from exporter.feeds.base import FeedContext, WsPlan
    from exporter.feeds.connection import FeedConnection
    from exporter.metrics import build_registry
    from exporter.model import Exchange, MarketUpdate
    from exporter.server import start_server

    _clock, state, _ = build_state(t0=time.time())
    if args.gc_freeze:
        gc.collect()
        gc.freeze()  # what the app can do once backfill is done: the big windows leave the GC's scans
    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        elif measuring.is_set():
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    state.clock = time.time  # real time from here on: staleness is judged as in production
    cfg = Config(listen_address="127.0.0.1:0")
    reg = build_registry(cfg, state)
    handle = start_server(cfg, state, reg)
    url_q.put(handle.url + "/metrics")

    measuring = threading.Event()
    sent_to_applied: list[float] = []
    recv_to_applied: list[float] = []
    feed = feed_for(Exchange.BINANCE)

    class TimedFeed:
        """The real Binance feed; it only notes the send time at the head of each frame."""

        exchange = feed.exchange
        last_sent = 0.0
        pending = False  # a parsed frame whose records the connection hands to apply_many next

        def parse_ws(self, frame: str | bytes, ctx: FeedContext) -> list:
            raw = frame if isinstance(frame, bytes) else frame.encode()
            if raw.startswith(SENT_PREFIX):
                end = raw.index(b",", len(SENT_PREFIX))
                self.last_sent = float(raw[len(SENT_PREFIX) : end])
            out = feed.parse_ws(frame, ctx)
            self.pending = True
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(feed, name)

    timed = TimedFeed()
    real_apply_many = state.apply_many

    def apply_many(records: Any, received_at: float | None = None) -> None:
        real_apply_many(records, received_at)
        # only the connection's frames: MarketState.apply (the other feeds below) goes through
        # apply_many too, and counting those measured the time since the last frame was sent
        if not timed.pending:
            return
        timed.pending = False
        if measuring.is_set() and received_at is not None:
            done = time.time()
            sent_to_applied.append(done - timed.last_sent)
            recv_to_applied.append(done - received_at)

    state.apply_many = apply_many  # type: ignore[method-assign]
    instruments = {st.info.instrument: st.info for st in state.snapshot() if st.info.exchange is Exchange.BINANCE}
    plan = WsPlan(
        stream="markPrice",
        url=f"ws://127.0.0.1:{port}/market/stream?streams=!markPrice@arr@1s/!forceOrder@arr",
        silence_timeout_s=30.0,
    )
    conn = FeedConnection(timed, plan, FeedContext(Exchange.BINANCE, instruments), state)  # type: ignore[arg-type]
    stop = asyncio.Event()

    async def other_feeds() -> None:
        """The other 1,500 instruments get an update a second, in batches, like their feeds would give."""
        others = [st for st in state.snapshot() if st.info.exchange is not Exchange.BINANCE]
        rng = random.Random(9)
        k = 0
        while not stop.is_set():
            for st in others[k::10]:
                state.apply(
                    MarketUpdate(
                        st.info.exchange,
                        st.info.instrument,
                        mark_price=(st.mark_price or 1.0) * (1 + rng.gauss(0, 1e-4)),
                        index_price=st.index_price,
                        funding_rate=st.funding_rate,
                    )
                )
            k = (k + 1) % 10
            await asyncio.sleep(0.1)

    task = asyncio.create_task(conn.run(stop))
    others = asyncio.create_task(other_feeds())
    await asyncio.sleep(3.0)  # connect, first frames, first scrape
    measuring.set()
    await asyncio.sleep(args.seconds)
    measuring.clear()
    stop.set()
    await task
    others.cancel()
    info = {
        "messages": state.stream(Exchange.BINANCE, "markPrice").messages,
        "parse_errors": state.stream(Exchange.BINANCE, "markPrice").parse_errors,
        "gc2": pauses,
    }
    handle.stop()
    return sent_to_applied, recv_to_applied, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--small-rate", type=float, default=50.0, help="small liquidation frames per second")
    # the exporter freezes its start-up state (app.py), so that is the default here too
    ap.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="skip the gc.freeze() after building the state (the exporter does it; this shows why)",
    )
    args = ap.parse_args()
    print(machine())
    ctx = mp.get_context("spawn")
    port_q, url_q, result_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    sender = ctx.Process(target=sender_main, args=(port_q, args.small_rate, args.seconds), daemon=True)
    scraper = ctx.Process(target=scraper_main, args=(url_q, result_q, args.seconds + 2), daemon=True)
    sender.start()
    scraper.start()
    port = port_q.get(timeout=60)
    try:
        sent, recv, info = asyncio.run(exporter_main(args, port, url_q))
        durations, sizes = result_q.get(timeout=120)
    finally:
        sender.terminate()
        scraper.terminate()
    print(
        f"frames: {info['messages']} received ({len(sent)} measured over {args.seconds:.0f} s: one 500-symbol "
        f"markPrice array a second + {args.small_rate:g}/s liquidation frames), parse errors {info['parse_errors']}"
    )
    print(line("sent -> value in state", sent))
    print(line("recv() returned -> value in state", recv))
    print(line("scrape GET /metrics (gzip), client", durations))
    print(f"scrape size: {statistics.median(sizes) / 1e6:.2f} MB gzip (median)")
    gc2 = info["gc2"]
    if gc2:
        print(
            f"full (generation 2) GC pauses: {len(gc2)}, median {statistics.median(gc2) * 1e3:.0f} ms, "
            f"max {max(gc2) * 1e3:.0f} ms (gc.freeze() {'on' if args.gc_freeze else 'off'})"
        )
    else:
        print(f"full (generation 2) GC pauses: none (gc.freeze() {'on' if args.gc_freeze else 'off'})")
    p99 = pct(sent, 0.99) * 1e3
    print(f"target p99 < 20 ms: {'met' if p99 < 20 else 'NOT met'} (p99 sent -> state {p99:.2f} ms)")


if __name__ == "__main__":
    main()
