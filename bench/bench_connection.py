"""Connection-layer overhead: frames through FeedConnection vs a bare websockets recv loop.

A loopback websockets server sends N small frames as fast as it can; the client side is either a
bare ``ws.recv(decode=False)`` loop or the real :class:`FeedConnection` (watchdog deadline per
frame, counting, a parser that returns nothing). Prints client-side CPU microseconds per frame
(median of several runs). Both run in one process, so compare the two numbers side by side.

Run: ``.venv/bin/python bench/bench_connection.py [--frames 50000] [--runs 5]``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from exporter.feeds.base import FeedContext, WsPlan
from exporter.feeds.connection import FeedConnection
from exporter.model import Exchange, InstrumentInfo, Record
from exporter.state import MarketState

FRAME = '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","markPrice":"66666.60"}}'
END = "end"
END_BYTES = END.encode()  # the connection hands frames over as the bytes received


class NullFeed:
    exchange = Exchange.BYBIT

    def __init__(self, done: asyncio.Event) -> None:
        self.done = done

    def ws_plans(self, ws_base_url: str, instruments: Sequence[InstrumentInfo]) -> list[WsPlan]:
        return []

    def heartbeat_setup(self) -> tuple[str, ...]:
        return ()

    def parse_ws(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        if frame in (END_BYTES, END):
            self.done.set()
        return []

    def parse_instruments(self, body: bytes) -> list[Any]:
        return []

    def parse_funding_history(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []

    def parse_long_short_ratio(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []


async def run_once(n: int, mode: str) -> float:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # "go"
        for _ in range(n):
            await ws.send(FRAME)
        await ws.send(END)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        if mode == "bare":
            async with connect(url, compression=None) as ws:
                await ws.send("go")
                t0 = time.process_time()
                while True:  # bytes, as FeedConnection receives them (no UTF-8 decode either side)
                    if await ws.recv(decode=False) == END_BYTES:
                        break
                return (time.process_time() - t0) / n * 1e6
        done = asyncio.Event()
        plan = WsPlan("bench", url, subscribe=("go",), silence_timeout_s=30.0)
        conn = FeedConnection(
            NullFeed(done), plan, FeedContext(Exchange.BYBIT), MarketState(), connect_kwargs={"compression": None}
        )
        stop = asyncio.Event()
        t0 = time.process_time()  # includes connect: negligible against n frames
        task = asyncio.create_task(conn.run(stop))
        await done.wait()
        cpu = time.process_time() - t0
        stop.set()
        await task
        return cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    # the server shares the process: both figures include its sending cost, so compare the difference
    for mode in ("bare", "feedconnection"):
        runs = [asyncio.run(run_once(args.frames, mode)) for _ in range(args.runs)]
        print(f"{mode:15s} {statistics.median(runs):6.2f} us CPU per frame (client+server, median of {args.runs})")


if __name__ == "__main__":
    main()
