"""The exporter's HTTP server under the abuse of issue 9: back-to-back keep-alive requests, many
clients connecting at once, and half-open connections holding slots.

Prints: keep-alive request latency (p50/p99/max) on one connection; for N clients opening a
connection and scraping at once, p50/p99/max and failures; for H half-open connections, the
server's connection threads and whether a normal scrape still gets an answer (at the cap it is a
fast 503, not a hang), and how long the half-open ones are held.

Run: ``.venv/bin/python bench/bench_http.py [--clients 50] [--half-open 300]``. Not a test.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, MarketUpdate
from exporter.server import DEFAULT_LIMITS, start_server
from exporter.state import MarketState


def _state() -> MarketState:
    state = MarketState()
    now = time.time()
    for i in range(200):
        inst = f"X{i}USDT"
        state.register(InstrumentInfo(Exchange.BINANCE, inst, f"X{i}", "USDT", funding_interval_s=EIGHT_HOURS))
        state.apply(
            MarketUpdate(
                Exchange.BINANCE, inst, mark_price=100.0 + i, index_price=100.0, funding_rate=1e-4,
                next_funding_time=now + 600, open_interest_usd=1e8,
            )
        )  # fmt: skip
    return state


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keepalive", type=int, default=300)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--half-open", type=int, default=300)
    args = ap.parse_args()
    state = _state()
    cfg = Config(listen_address="127.0.0.1:0")
    h = start_server(cfg, state, build_registry(cfg, state))
    url = h.url
    try:
        with httpx.Client() as c:
            c.get(url + "/metrics")
            lat = []
            for _ in range(args.keepalive):
                t0 = time.perf_counter()
                c.get(url + "/healthz")
                lat.append((time.perf_counter() - t0) * 1e3)
        print(
            f"keep-alive, {args.keepalive} back-to-back /healthz on one connection: "
            f"p50 {_pct(lat, 0.5):.2f} ms  p99 {_pct(lat, 0.99):.2f} ms  max {max(lat):.2f} ms"
        )

        def one(_: int) -> float | None:
            t0 = time.perf_counter()
            try:
                with httpx.Client(timeout=10) as cl:
                    cl.get(url + "/metrics").raise_for_status()
            except httpx.HTTPError:
                return None
            return (time.perf_counter() - t0) * 1e3

        alone = []
        for _ in range(10):
            t0 = time.perf_counter()
            httpx.get(url + "/metrics")
            alone.append((time.perf_counter() - t0) * 1e3)
        print(f"reference: one /metrics scrape alone (new connection) {statistics.median(alone):.1f} ms")
        with ThreadPoolExecutor(args.clients) as pool:
            res = list(pool.map(one, range(args.clients)))
        ok = [r for r in res if r is not None]
        print(
            f"{args.clients} clients connecting and scraping /metrics at once: p50 {_pct(ok, 0.5):.0f} ms  "
            f"p99 {_pct(ok, 0.99):.0f} ms  max {max(ok):.0f} ms  failed {len(res) - len(ok)}"
        )

        before = threading.active_count()
        held = [socket.create_connection(("127.0.0.1", h.port)) for _ in range(args.half_open)]
        time.sleep(0.5)
        threads = threading.active_count() - before
        t0 = time.perf_counter()
        r = httpx.get(url + "/healthz", timeout=10)
        answer_ms = (time.perf_counter() - t0) * 1e3
        print(
            f"{args.half_open} half-open connections: {threads} connection threads "
            f"(cap {DEFAULT_LIMITS.max_connections}); a scrape meanwhile: HTTP {r.status_code} in {answer_ms:.1f} ms"
        )
        t0 = time.monotonic()
        while h.active_connections and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        print(
            f"half-open connections dropped after {time.monotonic() - t0 + 0.5:.1f} s "
            f"(read deadline {DEFAULT_LIMITS.request_read_timeout_s:g} s)"
        )
        for s in held:
            s.close()
    finally:
        h.stop()


if __name__ == "__main__":
    main()
