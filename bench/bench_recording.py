"""Recording and replay benchmarks (issue 12).

1. Recording cost: the CPU of ingesting frames (parse -> state, the live connection path) with and
   without the recorder (queue append on the loop, JSON lines + compression in the writer thread,
   all threads' CPU counted: ``time.process_time``), for two shapes: N Binance all-market
   mark-price arrays (random-walk prices as the exchange sends them; ``--regular``: the former,
   far too compressible frames) and one-instrument Bybit ticker frames. The frames are handed over
   as the connection layer hands them, the bytes received (``ws.recv(decode=False)``);
   ``--hand-over str``: as before, websockets' decode to str on the loop (timed as part of ingest),
   the writer encoding back to UTF-8 (``both``: the two interleaved). To compare with older code,
   run this script against another checkout (its ``exporter`` package first on ``sys.path``).
   The runs are interleaved (without, with / with, without; the shapes and hand-overs in
   alternating order: drift and a neighbour's load fall on all) and each figure is the median of
   the runs' shares. Target: recording <= 10 % of ingest CPU. ``--socket``: the frames come from
   another process through a loopback websocket to ``FeedConnection.run`` (the exporter's own
   connect options), so websockets' receive and the connection loop are in the ingest CPU, as the
   exporter runs: the plain socket (no permessage-deflate, no TLS: the former figure), then
   permessage-deflate as each exchange answers the exporter's offer (``EXCHANGE_DEFLATE``: Binance
   yes; Bybit UNVERIFIED, both measured; sources in docs/recording.md); ``--tls`` adds the same
   over TLS (a certificate made for the run). ``--levels 1,-3``: compression levels compared in
   the same runs, interleaved, each with the disk it takes an hour at the exchanges' rate
   (arrays: one a second; tickers: ``--ticker-hz`` a second per instrument).
2. Replay speed: a recording of the same frames replayed as fast as possible through
   ``exporter.replay.Replay`` (virtual clock, parsers, connection path, state). Prints instrument
   updates per second on one core. Target: >= 200,000. Then the other shape, one instrument a frame
   (Bybit linear ticker snapshots and deltas): frames per second.

Run: ``.venv/bin/python bench/bench_recording.py [--instruments 200] [--frames 2000] [--runs 7]
[--compression zstd|gzip] [--level N | --levels N,M,...] [--hand-over bytes|str|both] [--regular] [--no-replay]
[--socket [--tls] [--transports tls]] [--ticker-hz 1] [--shape arrays|tickers]``; parts only: ``--writer-parts`` (the
writer's CPU a line: Python, compression), ``--loop-parts`` (the loop thread's extra CPU a frame),
``--zstd-params`` (zstd's parameters at -3: ns a byte, ratio, disk an hour).
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import math
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.feeds.base import Feed, FeedContext, WsPlan
from exporter.feeds.binance import BinanceFeed
from exporter.feeds.bybit import BybitFeed
from exporter.feeds.connection import FeedConnection
from exporter.model import Exchange, InstrumentInfo
from exporter.recording import Recorder
from exporter.replay import Replay
from exporter.sink import StreamHealth
from exporter.state import MarketState

T0 = 1_765_541_474.0


def infos(n: int) -> list[InstrumentInfo]:
    return [
        InstrumentInfo(Exchange.BINANCE, f"B{k:04d}USDT", f"B{k:04d}", "USDT", funding_interval_s=28800.0)
        for k in range(n)
    ]


def frames(n_inst: int, n_frames: int, *, regular: bool = False) -> list[bytes]:
    """The frames' bytes as they come off the socket (what the connection layer hands over).

    As Binance sends them: its field order, prices at its 8 decimals on a random walk (mark, index
    and estimated settle each moving), a funding rate that drifts. ``regular``: the frames of the
    former figures (4 decimals, one price moving by a cent a second, index and settle constant):
    about ten times more compressible than the exchange's, so compression looked 4x cheaper."""
    out = []
    if regular:
        for f in range(n_frames):
            e = int((T0 + f) * 1000)
            items = ",".join(
                f'{{"e":"markPriceUpdate","E":{e},"s":"B{k:04d}USDT","p":"{100 + k + f * 0.01:.4f}",'
                f'"i":"{100 + k:.4f}","P":"{100 + k:.4f}","r":"0.00010000","T":{e + 3_600_000}}}'
                for k in range(n_inst)
            )
            out.append(f'{{"stream":"!markPrice@arr@1s","data":[{items}]}}'.encode())
        return out
    rng = random.Random(12)
    mark = [10 ** rng.uniform(-2, 4.8) for _ in range(n_inst)]
    rate = [rng.gauss(1e-4, 5e-5) for _ in range(n_inst)]
    for f in range(n_frames):
        e = int((T0 + f) * 1000)
        parts = []
        for k in range(n_inst):
            mark[k] *= 1 + rng.gauss(0, 2e-4)
            rate[k] += rng.gauss(0, 2e-7)
            m = mark[k]
            parts.append(
                f'{{"e":"markPriceUpdate","E":{e},"s":"B{k:04d}USDT","p":"{m:.8f}",'
                f'"P":"{m * (1 + rng.gauss(0, 1e-4)):.8f}","i":"{m * (1 + rng.gauss(0, 3e-4)):.8f}",'
                f'"r":"{rate[k]:.8f}","T":{e + 3_600_000}}}'
            )
        out.append(f'{{"stream":"!markPrice@arr@1s","data":[{",".join(parts)}]}}'.encode())
    return out


@dataclass(eq=False)  # a dict key by identity
class Shape:
    """A stream as the connection layer sees it: its feed, instruments and frames."""

    name: str
    exchange: Exchange
    stream: str
    feed: Callable[[], Feed]
    instruments: list[InstrumentInfo]
    frames: list[bytes]
    dt: float  # receive time between frames
    updates: int  # instrument updates in the frames


@dataclass(frozen=True)
class Transport:
    """How the frames reach the connection over the loopback socket: permessage-deflate negotiated
    or not, TLS or not (the exchanges' streams are wss)."""

    deflate: bool
    tls: bool

    @property
    def label(self) -> str:
        return f"{'deflate' if self.deflate else 'no deflate'}, {'TLS' if self.tls else 'no TLS'}"


PLAIN = Transport(deflate=False, tls=False)  # the figures before session 5 (the old "--socket")

# Whether each exchange's server accepts the permessage-deflate that the exporter offers
# (websockets' default: exporter/feeds/connection.py passes no ``compression``): True, False, or
# None when it is not known (UNVERIFIED: both measured). Sources: docs/recording.md.
EXCHANGE_DEFLATE: dict[Exchange, bool | None] = {
    Exchange.BINANCE: True,  # answers with server_max_window_bits=15 (coder/websocket#351, ccxt/go-binance#430)
    Exchange.BYBIT: None,  # UNVERIFIED for v5 (a bad answer on the old endpoints: websockets#1068)
    Exchange.OKX: None,  # UNVERIFIED for v5 (v3 did not answer the offer: boostorg/beast#1813)
    Exchange.DERIBIT: None,  # UNVERIFIED (nothing found)
}


TRANSPORT_NAMES = {"plain": PLAIN, "deflate": Transport(True, False), "deflate+tls": Transport(True, True)}
TRANSPORT_NAMES["tls"] = Transport(False, True)


def transports(exchange: Exchange, tls: bool, only: list[Transport] | None = None) -> list[Transport]:
    """The plain socket (the former figure), then the exporter's path as the exchange serves it;
    ``only``: those of them (``--transports``)."""
    known = EXCHANGE_DEFLATE.get(exchange)
    deflates = [True, False] if known is None else [known]
    out = [PLAIN]
    for d in deflates:
        for t in (False, True) if tls else (False,):
            tr = Transport(d, t)
            if tr not in out:
                out.append(tr)
    return out if only is None else [t for t in out if t in only]


def serve_frames(shapes: list[Shape], kinds: list[Transport], cert: tuple[bytes, bytes] | None, ports: Any) -> None:
    """A child process: one loopback websocket server per transport, sending shape N's frames, as text
    frames, to a client that connects to /N and sends anything (its subscribe frame). With deflate
    the server answers the client's offer as Binance does (``server_max_window_bits=15``) and
    compresses each frame here, in this process (the client's inflate is what the bench counts);
    with TLS it serves the run's self-signed certificate."""
    import ssl

    from websockets.asyncio.server import ServerConnection, serve
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    async def handler(ws: ServerConnection) -> None:
        shape = shapes[int(ws.request.path.strip("/")) if ws.request else 0]
        await ws.recv()
        for fr in shape.frames:
            await ws.send(fr, text=True)
        await ws.wait_closed()

    async def main() -> None:
        servers = []
        for k, tr in enumerate(kinds):
            ctx = None
            if tr.tls:
                assert cert is not None
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                with tempfile.NamedTemporaryFile() as f:  # load_cert_chain reads a file
                    f.write(cert[0] + cert[1])
                    f.flush()
                    ctx.load_cert_chain(f.name)
            ext = [ServerPerMessageDeflateFactory(server_max_window_bits=15)] if tr.deflate else None
            srv = await serve(
                handler, "127.0.0.1", 0, compression=None, extensions=ext, max_size=None, ssl=ctx
            ).__aenter__()
            servers.append(srv)
            ports[k] = srv.sockets[0].getsockname()[1]
        await asyncio.Future()

    asyncio.run(main())


def frame_hook(recorder: Recorder, shape: Shape) -> Any:
    """The connection's recorder hook, as the exporter sets it: one stream's (received_at, frame, it
    parsed); the code before session 6 (an older checkout on ``sys.path``) took the stream at each call."""
    stream_hook = getattr(recorder, "stream_hook", None)
    if stream_hook is not None:
        return stream_hook(shape.exchange, shape.stream)
    ws_hook = recorder.ws_hook  # type: ignore[attr-defined]  # an older checkout's Recorder
    return ws_hook(shape.exchange)


async def ingest_socket(
    shape: Shape, url: str, recorder: Recorder | None, transport: Transport, client_ssl: Any = None
) -> tuple[float, float, float]:
    """As :func:`ingest`, the frames through a real websocket from another process (``FeedConnection.run``:
    websockets' receive and the connection's loop counted too, as the exporter runs). The connection
    is opened with the exporter's own options (it offers permessage-deflate: the server decides);
    with TLS, the client trusts the run's certificate authority."""
    dt = shape.dt
    received: list[StreamHealth] = []

    def clock() -> float:  # receive times as in ingest(): one step a frame
        return T0 + received[0].messages * dt if received else T0

    state = MarketState(clock=clock)
    for i in shape.instruments:
        state.register(i)
    health = state.stream(shape.exchange, shape.stream)
    received.append(health)
    ctx = FeedContext(shape.exchange, {i.instrument: i for i in shape.instruments})
    plan = WsPlan(shape.stream, url, subscribe=("go",))
    kwargs = {"ssl": client_ssl} if transport.tls else {}
    conn = FeedConnection(shape.feed(), plan, ctx, state, clock=clock, connect_kwargs=kwargs)
    if recorder is not None:
        recorder.start()
        conn.recorder = frame_hook(recorder, shape)
    stop = asyncio.Event()
    cpu0 = time.process_time()
    loop0 = time.thread_time()
    task = asyncio.create_task(conn.run(stop))
    n = len(shape.frames)
    while health.messages < n:  # a poll every 2 ms: the same small cost with and without recording
        await asyncio.sleep(0.002)
    loop = time.thread_time() - loop0
    ws = conn._ws
    negotiated = ws is not None and any(e.name == "permessage-deflate" for e in ws.protocol.extensions)
    assert negotiated == transport.deflate, f"permessage-deflate negotiated: {negotiated}, expected {transport.deflate}"
    stop.set()
    await task
    writer = 0.0
    if recorder is not None:
        recorder.close()
        assert recorder.stats.dropped == 0, "queue too small for the benchmark"
        writer = recorder.stats.writer_cpu_s
    assert health.parse_errors == 0 and health.last_parsed_at > 0, "the frames did not parse"
    return time.process_time() - cpu0, loop, writer


async def ingest(shape: Shape, recorder: Recorder | None, *, as_str: bool = False) -> tuple[float, float, float]:
    """(process CPU, the loop thread's CPU, the writer thread's CPU) of ingesting the frames.

    ``as_str``: the former hand-over, each frame decoded to str on the loop as websockets did."""
    clock = [T0]
    state = MarketState(clock=lambda: clock[0])
    for i in shape.instruments:
        state.register(i)
    ctx = FeedContext(shape.exchange, {i.instrument: i for i in shape.instruments})
    plan = WsPlan(shape.stream, "ws://bench")
    conn = FeedConnection(shape.feed(), plan, ctx, state, clock=lambda: clock[0])
    if recorder is not None:
        recorder.start()
        conn.recorder = frame_hook(recorder, shape)
    dt = shape.dt
    cpu0 = time.process_time()  # every thread of the process: the writer's compression included
    loop0 = time.thread_time()
    if as_str:
        for k, fr in enumerate(shape.frames):
            clock[0] = T0 + k * dt
            await conn.handle_frame(fr.decode("utf-8"), clock[0])
    else:
        for k, fr in enumerate(shape.frames):
            clock[0] = T0 + k * dt
            await conn.handle_frame(fr, clock[0])
    loop = time.thread_time() - loop0
    writer = 0.0
    if recorder is not None:
        recorder.close()  # the writer finishes what was queued: its CPU belongs to the figure
        assert recorder.stats.dropped == 0, "queue too small for the benchmark"
        writer = recorder.stats.writer_cpu_s
    health = state.streams[(shape.exchange, shape.stream)]
    assert health.parse_errors == 0 and health.last_parsed_at > 0, "the frames did not parse"
    return time.process_time() - cpu0, loop, writer


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); with fewer than two values, the value thrice."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


@dataclass
class Cost:
    """Per interleaved pair: ingest CPU without and with recording, and the shares."""

    base: list[float] = field(default_factory=list)
    rec: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)  # process CPU with / without
    writer: list[float] = field(default_factory=list)  # the writer thread's CPU / the loop's CPU without recording
    hooked: list[float] = field(default_factory=list)  # the loop thread's extra CPU with recording on
    disk: list[int] = field(default_factory=list)  # compressed bytes written for the frames

    def add(self, b: tuple[float, float, float], r: tuple[float, float, float], disk: int = 0) -> None:
        self.base.append(b[0])
        self.rec.append(r[0])
        self.shares.append(100 * (r[0] - b[0]) / b[0])
        self.writer.append(100 * r[2] / b[1])
        self.hooked.append(100 * (r[1] - b[1]) / b[1])
        self.disk.append(disk)

    def report(self, label: str, updates: int, compression: str, disk_per_hour: float = 0.0, frames: int = 0) -> None:
        """The share as the median of the pairs' shares with its quartiles (half the pairs lie between:
        the spread a neighbour's load leaves) and range, the share of the medians (median CPU with over
        median CPU without: a second estimate, which agrees when the pairs are trustworthy), and the
        extra CPU a frame; and the share of the fastest run with over the fastest without (the runs a
        neighbour disturbed least: a third estimate, the steadiest on a busy machine)."""
        med = statistics.median
        b, r, sh, w, h = med(self.base), med(self.rec), self.shares, self.writer, self.hooked
        print(f"{label}: ingest without recording: {b:.3f} s CPU ({updates / b:,.0f} instrument updates/s)")
        disk = f"; {disk_per_hour / 1e6:,.3g} MB on disk an hour" if disk_per_hour else ""
        q1, q2, q3 = quartiles(sh)
        print(
            f"{label}: ingest with recording ({compression}): {r:.3f} s CPU; recording = {q2:.1f} % of ingest "
            f"CPU (median of {len(sh)} interleaved pairs, quartiles {q1:.1f} to {q3:.1f} %, range {min(sh):.1f} "
            f"to {max(sh):.1f} %; share of the medians {100 * (r - b) / b:.1f} %){disk}"
        )
        if frames:
            extra = [(x - y) / frames * 1e6 for x, y in zip(self.rec, self.base, strict=True)]
            lo = 100 * (min(self.rec) - min(self.base)) / min(self.base)
            print(
                f"{label}:   extra CPU a frame {med(extra):.3f} us (median of the pairs' differences) over "
                f"{b / frames * 1e6:.3f} us of ingest; share of the fastest runs {lo:.1f} %"
            )
        print(
            f"{label}:   of which the writer thread {med(w):.1f} % (range {min(w):.1f} to {max(w):.1f}), "
            f"the loop thread {med(h):+.1f} % (range {min(h):+.1f} to {max(h):+.1f})"
        )
        print(f"{label}:   per run: {', '.join(f'{x:.1f}' for x in sh)} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=200)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--compression", choices=("gzip", "zstd"), default="zstd")
    ap.add_argument(
        "--levels",
        default=None,
        help="compression levels to compare, interleaved in each run (e.g. 1,-1,-3,-5); default: the recorder's",
    )
    ap.add_argument("--level", type=int, default=None, help="one level (as --levels N)")
    ap.add_argument(
        "--hand-over",
        choices=("bytes", "str", "both"),
        default="bytes",
        help="frames as bytes (the connection now), as str (websockets' decode, before), both interleaved",
    )
    ap.add_argument("--no-replay", action="store_true", help="the recording cost only")
    ap.add_argument(
        "--socket",
        action="store_true",
        help="the frames through a loopback websocket from another process: the plain socket (no deflate, "
        "no TLS: the former figure) and permessage-deflate as each exchange answers the exporter's offer",
    )
    ap.add_argument("--tls", action="store_true", help="with --socket: also over TLS (a self-signed certificate)")
    ap.add_argument(
        "--transports",
        default=None,
        help="with --socket: only these, comma-separated, of plain, deflate, deflate+tls, tls (TLS without "
        "deflate: the Bybit tickers' figure of issue 12), so that all the pairs go to the figure asked for",
    )
    ap.add_argument(
        "--ticker-hz",
        type=float,
        default=1.0,
        help="Bybit ticker frames a second per instrument, for the disk an hour (Bybit pushes at most every 100 ms)",
    )
    ap.add_argument("--regular", action="store_true", help="the former, far too compressible frames (both shapes)")
    ap.add_argument(
        "--writer-parts",
        action="store_true",
        help="only the writer's CPU per line in parts (Python by each path, compression) for each shape and level",
    )
    ap.add_argument(
        "--zstd-params",
        action="store_true",
        help="only zstd's parameters at level -3 (match table, minimum match, window) and nearby levels: ns a "
        "byte, ratio and disk an hour on each shape's lines, the variants interleaved",
    )
    ap.add_argument(
        "--loop-parts",
        action="store_true",
        help="only the loop thread's extra CPU a frame, in parts (a hook that does nothing, an append that "
        "keeps nothing, an append that keeps the frames, the recorder), without the socket",
    )
    ap.add_argument("--shape", choices=("arrays", "tickers"), default=None, help="one shape only (default: both)")
    args = ap.parse_args()
    if args.levels is not None:
        levels: list[int | None] = [int(x) for x in args.levels.split(",")]
    else:
        levels = [args.level]
    insts = infos(args.instruments)
    fr = frames(args.instruments, args.frames, regular=args.regular)
    updates = args.instruments * args.frames
    by = bybit_infos(args.instruments)
    by_frames = bybit_frames(by, args.frames, regular=args.regular)
    shapes = [
        Shape("binance array", Exchange.BINANCE, "markPrice", BinanceFeed, insts, fr, 1.0, updates),
        Shape("bybit tickers", Exchange.BYBIT, "tickers", BybitFeed, by, by_frames, 0.001, len(by_frames)),
    ]
    if args.shape is not None:
        shapes = [shapes[0] if args.shape == "arrays" else shapes[1]]
    # frames an hour as the exchanges send them: the all-market array every second; a ticker frame per
    # instrument at --ticker-hz
    per_hour = {"binance array": 3600.0, "bybit tickers": 3600.0 * args.ticker_hz * len(by)}
    print(
        f"python {platform.python_version()}, {args.frames} frames x {args.instruments} instruments, "
        f"{sum(map(len, fr)) / len(fr):,.0f} bytes a frame ({'regular' if args.regular else 'random walk'}); "
        f"{len(by_frames)} Bybit ticker frames of {sum(map(len, by_frames)) / len(by_frames):,.0f} bytes; "
        f"{time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}"
    )
    if args.zstd_params:
        zstd_params(shapes, per_hour, max(3, args.runs))
        return
    if args.loop_parts:
        for shape in shapes:
            loop_parts(shape, max(3, args.runs))
        return
    if args.writer_parts:
        for shape in shapes:
            for lv in levels:
                writer_parts(shape, lv, max(3, args.runs))
        return
    hand = {"bytes": (False,), "str": (True,), "both": (False, True)}[args.hand_over]
    # a mode: (shape, str hand-over, transport or None without the socket)
    modes: list[tuple[Shape, bool, Transport | None]] = [(shape, s, None) for shape in shapes for s in hand]

    server = None
    urls: dict[tuple[int, Transport], str] = {}
    client_ssl = None
    if args.socket:  # the exporter side receives through websockets, as it runs (the frames as sent: bytes)
        kinds: list[Transport] = []
        modes = []
        for shape in shapes:
            only = [TRANSPORT_NAMES[x] for x in args.transports.split(",")] if args.transports else None
            for tr in transports(shape.exchange, args.tls, only):
                modes.append((shape, False, tr))
                if tr not in kinds:
                    kinds.append(tr)
        cert = None
        if args.tls:  # a certificate authority and a certificate for 127.0.0.1, made for this run
            import ssl

            import trustme

            ca = trustme.CA()
            issued = ca.issue_cert("127.0.0.1")
            cert = (issued.private_key_pem.bytes(), b"".join(c.bytes() for c in issued.cert_chain_pems))
            client_ssl = ssl.create_default_context()
            ca.configure_trust(client_ssl)
        ctx = multiprocessing.get_context("fork")
        ports = ctx.Array("i", len(kinds))
        server = ctx.Process(target=serve_frames, args=(shapes, kinds, cert, ports), daemon=True)
        server.start()
        while 0 in ports[:]:
            time.sleep(0.05)
        for k, tr in enumerate(kinds):
            for n, sh in enumerate(shapes):
                urls[(id(sh), tr)] = f"{'wss' if tr.tls else 'ws'}://127.0.0.1:{ports[k]}/{n}"
    costs = {(m, lv): Cost() for m in modes for lv in levels}

    def run(m: tuple[Shape, bool, Transport | None], recorder: Recorder | None) -> tuple[float, float, float]:
        shape, as_str, tr = m
        if tr is not None:
            return asyncio.run(ingest_socket(shape, urls[(id(shape), tr)], recorder, tr, client_ssl))
        return asyncio.run(ingest(shape, recorder, as_str=as_str))

    def recorded(m: tuple[Shape, bool, Transport | None], level: int | None) -> tuple[tuple[float, float, float], int]:
        with tempfile.TemporaryDirectory() as d:
            n = len(m[0].frames) + 10
            recorder = Recorder(Path(d), queue_size=n, compression=args.compression, level=level)
            out = run(m, recorder)
            return out, recorder.stats.bytes

    for k in range(args.runs):
        for m in modes if k % 2 == 0 else modes[::-1]:  # new, old / old, new
            order = levels if k % 2 == 0 else levels[::-1]
            if k % 2 == 0:  # ABBA: without, with / with, without
                b1 = run(m, None)
                recs = {lv: recorded(m, lv) for lv in order}
            else:
                recs = {lv: recorded(m, lv) for lv in order}
                b1 = run(m, None)
            for lv, (r1, disk) in recs.items():
                costs[(m, lv)].add(b1, r1, disk)
    if server is not None:
        server.terminate()
    med = statistics.median
    for shape in shapes:
        for m in modes:
            if m[0] is not shape:
                continue
            _, as_str, via = m
            label = shape.name + (f", websocket ({via.label})" if via is not None else "")
            for lv in levels:
                c = costs[(m, lv)]
                name = f"{args.compression} level {lv if lv is not None else 'default'}"
                hourly = med(c.disk) / len(shape.frames) * per_hour[shape.name]
                c.report(
                    f"{label}, {'str' if as_str else 'bytes'}, {name}", shape.updates, name, hourly, len(shape.frames)
                )
        first = [m for m in modes if m[0] is shape]
        if (
            args.socket and first and first[0][2] == PLAIN
        ):  # what deflate and TLS add to the ingest (the denominator of the share)
            plain = costs[(first[0], levels[0])].base
            for m in first[1:]:
                ratio = [n / o for n, o in zip(costs[(m, levels[0])].base, plain, strict=True)]
                assert m[2] is not None
                print(
                    f"{shape.name}: ingest CPU without recording, {m[2].label} / plain socket: "
                    f"{med(ratio):.3f} (range {min(ratio):.3f} to {max(ratio):.3f})"
                )
        if args.hand_over == "both":
            new, old = costs[(first[0], levels[0])], costs[(first[1], levels[0])]
            ratio = [n / o for n, o in zip(new.base, old.base, strict=True)]
            print(
                f"{shape.name}: ingest without recording, bytes / str hand-over: {med(ratio):.3f} "
                f"(the str decode the loop no longer pays)"
            )

    print(
        "summary: shape | transport | level | recording % of ingest CPU, median (quartiles) [range] | writer "
        "thread % | loop thread +% | ingest updates/s without recording | MB an hour"
    )
    for (m, lv), c in costs.items():
        shape, as_str, via = m
        q1, q2, q3 = quartiles(c.shares)
        print(
            f"  {shape.name} | {via.label if via is not None else ('str' if as_str else 'bytes') + ', no socket'} | "
            f"{lv if lv is not None else 'default'} | {q2:.1f} ({q1:.1f}-{q3:.1f}) "
            f"[{min(c.shares):.1f}, {max(c.shares):.1f}] | "
            f"{med(c.writer):.1f} | {med(c.hooked):+.1f} | {shape.updates / med(c.base):,.0f} | "
            f"{med(c.disk) / len(shape.frames) * per_hour[shape.name] / 1e6:,.3g}"
        )
    print(f"end {time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")

    if args.no_replay:
        return
    rate = replay_rate(Exchange.BINANCE, "markPrice", insts, fr, 1.0, args.runs) * len(insts)
    print(f"replay as fast as possible: {rate:,.0f} instrument updates/s on one core (target >= 200,000)")
    # the other shape: one instrument a frame (Bybit linear tickers, a snapshot then deltas)
    rate = replay_rate(Exchange.BYBIT, "tickers", by, by_frames, 0.001, args.runs)
    print(
        "replay as fast as possible, one instrument a frame (Bybit tickers): "
        f"{rate:,.0f} frames (instrument updates)/s on one core"
    )


def writer_parts(shape: Shape, level: int | None, rounds: int) -> None:
    """The writer's CPU per line, in parts (``time.thread_time`` in this thread, medians of ``rounds``,
    the two paths interleaved): the Python of building and copying the lines (the compressor replaced
    by a writer that drops them), by the batch path and item by item, then the compression of the same
    lines alone, in 1 MiB calls as the recorder makes them."""
    import io

    import exporter.recording as recording

    class Drop(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            return len(b)

    def python(bulk_min: int) -> float:
        saved = recording.BULK_MIN
        recording.BULK_MIN = bulk_min
        try:
            with tempfile.TemporaryDirectory() as d:
                rec = Recorder(Path(d), queue_size=len(shape.frames) + 10, compression="zstd", level=level)
                hook = rec.stream_hook(shape.exchange, shape.stream)
                hook(T0 - 1.0, shape.frames[0], True)
                rec._drain(len(rec.q))  # the file opened and the stream's head made, outside the timing
                for k, f in enumerate(shape.frames):
                    hook(T0 + k * shape.dt, f, True)
                file, rec._file = rec._file, Drop()  # type: ignore[assignment]
                cpu0 = time.thread_time()
                rec._drain(len(rec.q))
                rec._write_chunk()
                cpu = time.thread_time() - cpu0
                rec._file = file
                rec._close_file()
        finally:
            recording.BULK_MIN = saved
        return cpu / len(shape.frames) * 1e9

    import orjson

    head = b',"ex":"%b","kind":"ws","src":"%b","raw":true,"data":' % (
        str(shape.exchange).encode(),
        shape.stream.encode(),
    )
    data = b"".join(b'{"t":%b%b%b}\n' % (orjson.dumps(T0 + k * shape.dt), head, f) for k, f in enumerate(shape.frames))

    def compress() -> tuple[float, float]:
        out = io.BytesIO()
        w = recording._zstd_compressor(level if level is not None else recording.RECORDING_ZSTD_LEVEL)
        sw = w.stream_writer(out, closefd=False)
        cpu0 = time.thread_time()
        for i in range(0, len(data), recording.CHUNK):
            sw.write(data[i : i + recording.CHUNK])
        sw.flush(recording._zstd().FLUSH_FRAME)
        cpu = time.thread_time() - cpu0
        return cpu / len(shape.frames) * 1e9, len(data) / len(out.getvalue())

    batch, each, comp = [], [], []
    for k in range(rounds):
        if k % 2 == 0:
            batch.append(python(recording.BULK_MIN))
            each.append(python(1 << 30))
        else:
            each.append(python(1 << 30))
            batch.append(python(recording.BULK_MIN))
        comp.append(compress())
    med = statistics.median
    line = len(data) / len(shape.frames)
    c = med(x[0] for x in comp)
    print(
        f"writer parts, {shape.name} ({line:,.0f}-byte lines), zstd level {level if level is not None else 'default'}: "
        f"Python {med(batch):,.0f} ns a line by the batch path, {med(each):,.0f} item by item; "
        f"compression {c:,.0f} ns a line ({c / line:.2f} ns a byte, ratio {comp[0][1]:.2f})"
    )


Extend = Callable[[tuple[float, Any, bytes]], None]


class _Tap:
    """What the connection appends to (``extend``, as the recorder's ``StreamTap``): a variant's stand-in."""

    def __init__(self, extend: Extend) -> None:
        self.extend, self.ok, self.bad = extend, ("x", "ws-json", "x"), ("x", "ws", "x")

    def attach(self, health: Any) -> None:
        pass


class _HookOnly:
    """Stands in for the recorder in :func:`loop_parts`: the connection gets ``extend``, nothing is written."""

    def __init__(self, extend: Extend, gc_off: bool = False) -> None:
        self.extend = extend
        self.gc_off = gc_off
        self.stats = type("Stats", (), {"dropped": 0, "writer_cpu_s": 0.0})()

    def start(self) -> None:
        if self.gc_off:
            import gc

            gc.disable()

    def close(self) -> None:
        if self.gc_off:
            import gc

            gc.enable()

    def stream_hook(self, exchange: Exchange, stream: str) -> _Tap:
        return _Tap(self.extend)


def loop_parts(shape: Shape, rounds: int) -> None:
    """The loop thread's extra CPU a frame (``time.thread_time``, :func:`ingest` without the socket,
    the variants interleaved, medians of ``rounds``, with the quartiles): what the connection's call
    costs when it goes to a Python function that does nothing (the hook before session 7), a
    tuple item appended to a deque and kept (the queue before session 7: a tracked tuple a frame,
    which makes the garbage collector's youngest generation run every 700 frames; the same with the
    collector off), the item's three entries added by ``deque.extend`` with nothing kept (a deque of
    63) and kept until the end (the queue now, without a writer), the recorder itself (the writer
    thread beside the loop), and the loop's side of a batch hand-over tried in session 6 and not kept
    (each frame copied into a buffer, its time and end into arrays: :func:`copier`)."""
    from collections import deque

    def nothing(item: tuple[float, Any, bytes]) -> None:
        pass

    def appender() -> Extend:
        return deque[tuple[float, Any, bytes]]().append

    def extender(maxlen: int | None) -> Extend:
        return deque[Any](maxlen=maxlen).extend

    def recorder() -> Recorder:
        return Recorder(Path(tempfile.mkdtemp()), queue_size=len(shape.frames) + 10, compression="zstd")

    def copier(frame: bool, meta: bool) -> Extend:
        """Session 6's "tried and not kept" (docs/recording.md): the loop copies each frame into a batch
        buffer (a bytearray) and/or its receive time and end into arrays, so no frame outlives its
        handling; each batch of 512 frames is dropped on the loop (no writer: the loop's side alone)."""
        st: list[Any] = [bytearray(), array.array("d"), array.array("q")]

        def hook(item: tuple[float, Any, bytes]) -> None:
            t, _, f = item
            if frame:
                buf = st[0]
                buf += f
            if meta:
                st[1].append(t)
                ends = st[2]
                ends.append(len(st[0]))
                if len(ends) >= 512:
                    st[:] = bytearray(), array.array("d"), array.array("q")
            elif len(st[0]) >= 512 * 256:
                st[0] = bytearray()

        return hook

    def busy() -> Any:
        """No recorder; a thread compressing other data (zstd -3, the GIL released) a third of the time."""
        import threading

        import zstandard

        blob = b"".join(shape.frames[:3000])
        done = threading.Event()

        def work() -> None:
            c = zstandard.ZstdCompressor(level=-3)
            while not done.wait(0.0):
                t0 = time.perf_counter()
                c.compress(blob)
                done.wait(2 * (time.perf_counter() - t0))

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return done, thread

    variants: dict[str, Callable[[], Any]] = {
        "without recording": lambda: None,
        "no recorder, a thread compressing other data a third of the time": busy,
        "a Python function that does nothing (the hook's call before session 7)": lambda: _HookOnly(nothing),
        "a tuple item appended, every frame kept (the queue before session 7)": lambda: _HookOnly(appender()),
        "the same, the garbage collector off": lambda: _HookOnly(appender(), gc_off=True),
        "the item's entries extended, nothing kept": lambda: _HookOnly(extender(63)),
        "the item's entries extended, every frame kept (the queue now)": lambda: _HookOnly(extender(None)),
        "the recorder": recorder,
        "the frame copied into a batch buffer (dropped on the loop)": lambda: _HookOnly(copier(True, False)),
        "the time and the frame's end into arrays (dropped on the loop)": lambda: _HookOnly(copier(False, True)),
        "both: the loop's side of a batch the writer would take": lambda: _HookOnly(copier(True, True)),
    }
    got: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, make in list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]:
            rec = make()
            if isinstance(rec, tuple):  # the busy thread: stopped after the run
                got[name].append(asyncio.run(ingest(shape, None))[1])
                rec[0].set()
                rec[1].join()
                continue
            got[name].append(asyncio.run(ingest(shape, rec))[1])
            if isinstance(rec, Recorder):
                import shutil

                shutil.rmtree(rec.directory, ignore_errors=True)
    med = statistics.median
    base = med(got["without recording"])
    n = len(shape.frames)
    print(f"loop parts, {shape.name}: the loop thread {base / n * 1e6:.3f} us a frame without recording; extra:")
    for name in list(variants)[1:]:
        x = med(got[name])
        q1, _, q3 = quartiles([(v - base) / n * 1e6 for v in got[name]])
        print(
            f"  {name}: {(x - base) / n * 1e6:+.3f} us ({100 * (x - base) / base:+.1f} %; "
            f"quartiles {q1:+.3f}, {q3:+.3f})"
        )
    print(f"end {time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")


# zstd parameter sets compared by --zstd-params: (label, level, parameters over zstd's own for the level)
ZSTD_VARIANTS: list[tuple[str, int, dict[str, int]]] = [
    ("-3 as zstd sets it (hash_log 13, min_match 6; the default until session 6)", -3, {}),
    ("-3 min_match 7", -3, {"min_match": 7}),
    ("-3 hash_log 12", -3, {"hash_log": 12}),
    ("-3 hash_log 12, min_match 7 (session 6's default)", -3, {"hash_log": 12, "min_match": 7}),
    (
        "-3 hash_log 12, min_match 7, window_log 17 (the default since session 7)",
        -3,
        {"hash_log": 12, "min_match": 7, "window_log": 17},
    ),
    ("-3 hash_log 12, min_match 7, window_log 18", -3, {"hash_log": 12, "min_match": 7, "window_log": 18}),
    ("-3 hash_log 11, min_match 7", -3, {"hash_log": 11, "min_match": 7}),
    ("-3 hash_log 12, min_match 5", -3, {"hash_log": 12, "min_match": 5}),
    ("-3 hash_log 12, window_log 17", -3, {"hash_log": 12, "window_log": 17}),
    ("-2 hash_log 12", -2, {"hash_log": 12}),
    ("-5 hash_log 12, min_match 7", -5, {"hash_log": 12, "min_match": 7}),
    ("1 hash_log 12 (the default until session 5)", 1, {"hash_log": 12}),
]


def zstd_params(shapes: list[Shape], per_hour: dict[str, float], rounds: int) -> None:
    """Compression alone on each shape's lines as the recorder writes them (1 MiB calls to a stream
    writer, ``time.thread_time``), for each parameter set, the sets interleaved (forward, backward),
    medians of ``rounds``; with the ratio and the disk it takes an hour at the exchanges' rate."""
    import io

    import orjson
    import zstandard

    data = {}
    for shape in shapes:
        head = b',"ex":"%b","kind":"ws","src":"%b","raw":true,"data":' % (
            str(shape.exchange).encode(),
            shape.stream.encode(),
        )
        data[shape.name] = b"".join(
            b'{"t":%b%b%b}\n' % (orjson.dumps(T0 + k * shape.dt), head, f) for k, f in enumerate(shape.frames)
        )

    def run(level: int, tuned: dict[str, int], lines: bytes) -> tuple[float, int]:
        params = zstandard.ZstdCompressionParameters.from_level(level, **tuned)
        out = io.BytesIO()
        w = zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False)
        step = 1 << 20
        cpu0 = time.thread_time()
        for i in range(0, len(lines), step):
            w.write(lines[i : i + step])
        w.flush(zstandard.FLUSH_FRAME)
        return (time.thread_time() - cpu0) / len(lines) * 1e9, len(out.getvalue())

    got: dict[tuple[str, str], list[tuple[float, int]]] = {(v[0], s.name): [] for v in ZSTD_VARIANTS for s in shapes}
    for r in range(rounds):
        for label, level, tuned in ZSTD_VARIANTS if r % 2 == 0 else ZSTD_VARIANTS[::-1]:
            for shape in shapes:
                got[(label, shape.name)].append(run(level, tuned, data[shape.name]))
    med = statistics.median
    for shape in shapes:
        first = med(x[0] for x in got[(ZSTD_VARIANTS[0][0], shape.name)])
        lines = data[shape.name]
        print(f"zstd parameters, {shape.name} ({len(lines) / len(shape.frames):,.0f}-byte lines), medians of {rounds}:")
        for label, _, _ in ZSTD_VARIANTS:
            ns = med(x[0] for x in got[(label, shape.name)])
            size = got[(label, shape.name)][0][1]
            hourly = size / len(shape.frames) * per_hour[shape.name] / 1e6
            print(
                f"  {label}: {ns:.3f} ns a byte (x{ns / first:.2f}), ratio {len(lines) / size:.2f}, "
                f"{hourly:,.1f} MB an hour"
            )
    print(f"end {time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")


def replay_rate(
    ex: Exchange, stream: str, infos: list[InstrumentInfo], frames: list[bytes], step: float, runs: int
) -> float:
    """Frames replayed per CPU second (median of ``runs``): recorded as the exporter records frames that
    parsed (embedded as JSON), ``step`` seconds apart, then fed through ``Replay`` as fast as possible."""
    with tempfile.TemporaryDirectory() as d:
        recorder = Recorder(Path(d), queue_size=len(frames) + 10)
        recorder.start()
        recorder.meta(T0 - 1.0, ex, "followed", infos)
        hook = recorder.stream_hook(ex, stream)
        for k, f in enumerate(frames):
            hook(T0 + k * step, f, True)
        recorder.close()
        rates = []
        for _ in range(runs):
            replay = Replay(Config(), Path(d))
            cpu0 = time.process_time()
            stats = asyncio.run(replay.run())
            cpu = time.process_time() - cpu0
            assert stats.frames == len(frames)
            health = replay.state.streams[(ex, stream)]
            assert health.parse_errors == 0 and health.last_parsed_at > 0, "the frames did not parse"
            rates.append(len(frames) / cpu)
    return statistics.median(rates)


def bybit_infos(n: int) -> list[InstrumentInfo]:
    return [
        InstrumentInfo(Exchange.BYBIT, f"B{k:04d}USDT", f"B{k:04d}", "USDT", funding_interval_s=28800.0)
        for k in range(n)
    ]


def bybit_frames(instruments: list[InstrumentInfo], n_frames: int, *, regular: bool = False) -> list[bytes]:
    """A snapshot per instrument, then deltas round the instruments (as many updates as a tenth of
    the array frames').

    As Bybit sends them: each delta carries mark, index and funding rate on a random walk at the
    instrument's decimals, and the best bid and ask with their sizes (the fields of a v5 linear
    ticker delta, docs/recording.md), about 300 bytes. ``regular``: the former frames (170 bytes,
    mark and index moving by a cent a round, the funding rate constant): 44:1 under zstd where
    these compress 5-8:1, which made negative levels look four times costlier on disk than they are."""
    out = []
    nft = int((T0 + 3600) * 1000)
    rng = random.Random(13)
    mark = [10 ** rng.uniform(-2, 4.8) for _ in instruments]
    rate = [rng.gauss(1e-4, 5e-5) for _ in instruments]
    dec = [max(1, min(6, 4 - int(math.log10(m)))) for m in mark]  # a tick of about 1e-4 of the price
    for k, info in enumerate(instruments):
        s = info.instrument
        m = f"{mark[k]:.{dec[k]}f}" if not regular else f"{100 + k:.2f}"
        r = f"{rate[k]:.6f}" if not regular else "0.0001"
        out.append(
            f'{{"topic":"tickers.{s}","type":"snapshot","data":{{"symbol":"{s}","markPrice":"{m}",'
            f'"indexPrice":"{m}","fundingRate":"{r}","nextFundingTime":"{nft}",'
            f'"openInterest":"1000","openInterestValue":"100000"}},"cs":1,"ts":{int(T0 * 1000)}}}'.encode()
        )
    for f in range(n_frames * len(instruments) // 10):
        k = f % len(instruments)
        s = instruments[k].instrument
        if regular:
            p = 100 + k + (f // len(instruments)) * 0.01
            out.append(
                f'{{"topic":"tickers.{s}","type":"delta","data":{{"symbol":"{s}","markPrice":"{p:.2f}",'
                f'"indexPrice":"{p:.2f}","fundingRate":"0.0001"}},"cs":{f + 2},"ts":{int(T0 * 1000) + f}}}'.encode()
            )
            continue
        mark[k] *= 1 + rng.gauss(0, 2e-4)
        rate[k] += rng.gauss(0, 2e-7)
        mk, d = mark[k], dec[k]
        out.append(
            f'{{"topic":"tickers.{s}","type":"delta","data":{{"symbol":"{s}","markPrice":"{mk:.{d}f}",'
            f'"indexPrice":"{mk * (1 + rng.gauss(0, 3e-4)):.{d}f}","fundingRate":"{rate[k]:.6f}",'
            f'"bid1Price":"{mk * (1 - 1e-4):.{d}f}","bid1Size":"{rng.uniform(0, 1000):.3f}",'
            f'"ask1Price":"{mk * (1 + 1e-4):.{d}f}","ask1Size":"{rng.uniform(0, 1000):.3f}"}},'
            f'"cs":{f + 2},"ts":{int(T0 * 1000) + f}}}'.encode()
        )
    return out


if __name__ == "__main__":
    main()
