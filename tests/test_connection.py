"""The reconnecting websocket loop against small websocket servers on 127.0.0.1.

The feed here is a test double with a tiny JSON protocol, so these tests exercise only the
connection layer: subscription, resubscription, watchdog, heartbeats, rotation, backoff, errors.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import pytest
from support import wait_until
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.http11 import Response

from exporter.feeds.base import FeedContext, WsPlan
from exporter.feeds.connection import BackoffPolicy, FeedConnection, backoff_delay, classify_error
from exporter.model import (
    Exchange,
    HeartbeatRequest,
    InstrumentInfo,
    MarketUpdate,
    ParseError,
    Record,
    SubscriptionError,
)
from exporter.recording import Recorder, read_lines, recording_files
from exporter.state import MarketState

EX = Exchange.BYBIT
SUB = '{"op":"subscribe","args":["tickers.BTCUSDT"]}'
FAST = BackoffPolicy(initial_s=0.02, max_s=0.1, healthy_after_s=60.0, fatal_retry_s=30.0)


class JsonFeed:
    """Frames: {"mark": x} -> mark price; {"index": x} -> index price; {"hb": text} -> heartbeat
    request; {"suberr": msg} -> subscription error; {"boom": 1} -> a parser bug (KeyError);
    "pong" -> nothing; anything else -> ParseError."""

    exchange = EX

    def __init__(self, setup: tuple[str, ...] = ()) -> None:
        self.setup = setup
        self.seen: list[str | bytes] = []  # every frame as the connection handed it over

    def ws_plans(self, ws_base_url: str, instruments: Sequence[InstrumentInfo]) -> list[WsPlan]:
        return [WsPlan("tickers", ws_base_url, subscribe=(SUB,))]

    def heartbeat_setup(self) -> tuple[str, ...]:
        return self.setup

    def parse_ws(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        self.seen.append(frame)
        if frame == b"pong" or frame == "pong":
            return []
        try:
            msg = json.loads(frame)
        except ValueError:
            raise ParseError("not JSON") from None
        if not isinstance(msg, dict):
            raise ParseError("not an object")
        if "boom" in msg:
            return [msg["missing"]]  # KeyError: a parser bug must not end the connection
        if "mark" in msg:
            return [MarketUpdate(EX, "BTCUSDT", mark_price=float(msg["mark"]))]
        if "index" in msg:
            return [MarketUpdate(EX, "BTCUSDT", index_price=float(msg["index"]))]
        if "hb" in msg:
            return [HeartbeatRequest(EX, msg["hb"])]
        if "suberr" in msg:
            return [SubscriptionError(EX, msg["suberr"])]
        raise ParseError("unknown message")

    def parse_instruments(self, body: bytes) -> list[InstrumentInfo]:
        return []

    def parse_funding_history(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []

    def parse_long_short_ratio(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[Any]:
        return []


class Server:
    """Records every connection: the frames it received and when it opened and closed."""

    def __init__(self, behaviour: Callable[[ServerConnection, int, Server], Awaitable[None]]) -> None:
        self.behaviour = behaviour
        self.connections: list[dict[str, Any]] = []
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        rec: dict[str, Any] = {"opened": time.monotonic(), "closed": None, "frames": []}
        self.connections.append(rec)
        n = len(self.connections)
        try:
            await self.behaviour(ws, n, self)
        except ConnectionClosed:
            pass
        finally:
            rec["closed"] = time.monotonic()

    async def recv(self, ws: ServerConnection, n: int) -> str:
        frame = await ws.recv()
        assert isinstance(frame, str)
        self.connections[n - 1]["frames"].append(frame)
        return frame

    async def drain(self, ws: ServerConnection, n: int) -> None:
        """Record everything the client sends until it closes."""
        while True:
            await self.recv(ws, n)


def make_state() -> MarketState:
    st = MarketState()
    st.register(InstrumentInfo(EX, "BTCUSDT", "BTC", "USDT"))
    return st


class Running:
    """A server plus a FeedConnection task; stops both cleanly."""

    def __init__(
        self,
        behaviour: Any,
        plan_kw: dict[str, Any] | None = None,
        feed: JsonFeed | None = None,
        backoff: BackoffPolicy = FAST,
        process_request: Any = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.server = Server(behaviour)
        self.plan_kw = plan_kw or {}
        self.feed = feed or JsonFeed()
        self.backoff = backoff
        self.process_request = process_request
        self.rand = rand
        self.state = make_state()
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Running:
        self._serve = serve(self.server.handler, "127.0.0.1", 0, process_request=self.process_request)
        srv = await self._serve.__aenter__()
        self.server.port = srv.sockets[0].getsockname()[1]
        kw = {"subscribe": (SUB,), "silence_timeout_s": 5.0, **self.plan_kw}
        self.plan = WsPlan("tickers", f"ws://127.0.0.1:{self.server.port}/ws", **kw)
        self.conn = FeedConnection(
            self.feed, self.plan, FeedContext(EX), self.state, backoff=self.backoff, rand=self.rand
        )
        self.task = asyncio.create_task(self.conn.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)
        await self._serve.__aexit__(None, None, None)

    @property
    def health(self) -> Any:
        return self.state.stream(EX, "tickers")

    @property
    def btc(self) -> Any:
        return self.state.instruments[(EX, "BTCUSDT")]


# ---- behaviour over real sockets ----------------------------------------------------------------


async def test_reconnects_and_resubscribes_after_server_close() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)  # the subscribe frame
        await ws.send(json.dumps({"mark": 100.0 * n}))
        if n == 1:
            await ws.close()  # the exchange drops us
            return
        await srv.drain(ws, n)

    async with Running(behaviour) as r:
        await wait_until(lambda: r.btc.mark_price == 200.0)
        assert len(r.server.connections) == 2
        # resubscription: each connection starts with the plan's subscribe frame
        assert [c["frames"][0] for c in r.server.connections] == [SUB, SUB]
        assert r.health.reconnects == 1
        assert r.health.connected is True
        assert r.health.messages == 2
    assert r.health.connected is False


async def test_frames_are_handed_over_and_recorded_as_the_bytes_received(tmp_path: Path) -> None:
    # No UTF-8 decoding to str on the loop and no encoding back in the recorder: the parser and the
    # recorder get the frame's bytes, text frames (non-ASCII included) and binary ones alike.
    text = json.dumps({"mark": 101.0, "note": "caf\u00e9 \u2192"}, ensure_ascii=False)
    binary = json.dumps({"index": 99.0}).encode()

    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(text)
        await ws.send(binary)
        await ws.send("pong")
        await srv.drain(ws, n)

    rec = Recorder(tmp_path)
    rec.start()
    async with Running(behaviour) as r:
        r.conn.recorder = rec.stream_hook(EX, r.conn.plan.stream)  # before the connection task first runs
        await wait_until(lambda: r.health.messages == 3)
        assert r.feed.seen == [text.encode(), binary, b"pong"]
        assert (r.btc.mark_price, r.btc.index_price, r.health.parse_errors) == (101.0, 99.0, 0)
    rec.close()
    lines = list(read_lines(tmp_path))
    assert [d["data"] for d in lines] == [text.encode(), binary, "pong"]  # JSON frames embedded as they came
    assert pd.read_json(recording_files(tmp_path)[0], lines=True)["data"].iloc[0]["note"] == "caf\u00e9 \u2192"


async def test_silence_watchdog_reconnects() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"mark": float(n)}))
        await srv.drain(ws, n)  # then silent, but the socket stays open

    async with Running(behaviour, {"silence_timeout_s": 0.3}) as r:
        await wait_until(lambda: len(r.server.connections) >= 2)
        await wait_until(lambda: r.btc.mark_price == 2.0)
        assert r.conn.silence_reconnects >= 1
        assert r.health.reconnects >= 1
        # the silent connection was closed by us, not left dangling
        await wait_until(lambda: r.server.connections[0]["closed"] is not None)


async def test_malformed_frame_is_counted_and_changes_nothing() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"mark": 100.0}))
        await ws.send('{"mark": 1.0')  # truncated
        await ws.send('{"boom": 1}')  # parser bug
        await ws.send(json.dumps({"index": 99.0}))
        await srv.drain(ws, n)

    async with Running(behaviour) as r:
        await wait_until(lambda: r.health.messages == 4)
        assert r.health.parse_errors == 2
        assert r.btc.mark_price == 100.0
        assert r.btc.index_price == 99.0  # frames after the bad ones still apply
        assert len(r.server.connections) == 1  # bad input does not cost the connection


async def test_heartbeat_request_answered_and_setup_sent() -> None:
    replies: list[str] = []

    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)  # subscribe
        await srv.recv(ws, n)  # heartbeat setup
        await ws.send(json.dumps({"hb": "test-reply-1"}))
        replies.append(await srv.recv(ws, n))
        await srv.drain(ws, n)

    feed = JsonFeed(setup=('{"method":"public/set_heartbeat"}',))
    async with Running(behaviour, feed=feed) as r:
        await wait_until(lambda: bool(replies))
        assert r.server.connections[0]["frames"][:2] == [SUB, '{"method":"public/set_heartbeat"}']
        assert replies == ["test-reply-1"]


async def test_subscription_error_counted() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"suberr": "unknown symbol FOOUSDT"}))
        await srv.drain(ws, n)

    async with Running(behaviour) as r:
        await wait_until(lambda: r.health.subscription_errors == 1)
        assert r.health.parse_errors == 0


async def test_application_ping_sent_when_idle() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        while True:
            if await srv.recv(ws, n) == "ping":
                await ws.send("pong")

    # The server sends nothing but pongs. The connection is watched past its silence timeout (20 pings
    # at 0.1 s: 2 s against 1.5 s; 3 pings took 0.3 s, inside a 0.5 s timeout that a loaded machine's
    # pause of the process alone could exceed, as a 50-800 ms pause emulation showed)
    async with Running(behaviour, {"ping_frame": "ping", "ping_interval_s": 0.1, "silence_timeout_s": 1.5}) as r:
        await wait_until(
            lambda: bool(r.server.connections) and r.server.connections[0]["frames"].count("ping") >= 20, 30
        )
        # pongs count as frames: the watchdog never fired
        assert len(r.server.connections) == 1
        assert r.conn.silence_reconnects == 0


async def test_planned_lifetime_reconnect_opens_new_before_closing_old() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        i = 0
        while True:
            i += 1
            await ws.send(json.dumps({"mark": n * 1000.0 + i}))
            await asyncio.sleep(0.02)

    async with Running(behaviour, {"max_lifetime_s": 0.4}) as r:
        await wait_until(lambda: len(r.server.connections) >= 2 and r.server.connections[0]["closed"] is not None)
        first, second = r.server.connections[0], r.server.connections[1]
        assert second["opened"] <= first["closed"]  # make before break
        assert second["frames"][0] == SUB
        assert r.conn.rotations >= 1
        await wait_until(lambda: (r.btc.mark_price or 0) > 2000.0)


async def test_fatal_handshake_status_is_not_retried_fast() -> None:
    def reject(conn: ServerConnection, request: Any) -> Response:
        return conn.respond(403, "forbidden\n")

    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        raise AssertionError("handshake must be refused")

    async with Running(behaviour, process_request=reject) as r:
        await wait_until(lambda: r.conn.last_error is not None)
        await asyncio.sleep(0.3)  # FAST backoff would have retried ~10 times by now
        assert isinstance(r.conn.last_error, InvalidStatus)
        assert r.conn.connections_opened == 0
        assert r.health.connected is False
        assert r.task.done() is False  # still alive, waiting fatal_retry_s


async def test_retryable_handshake_status_is_retried() -> None:
    attempts: list[float] = []

    def unavailable(conn: ServerConnection, request: Any) -> Response | None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            return conn.respond(503, "busy\n")
        return None

    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"mark": 5.0}))
        await srv.drain(ws, n)

    async with Running(behaviour, process_request=unavailable) as r:
        await wait_until(lambda: r.btc.mark_price == 5.0)
        assert len(attempts) == 3
        assert r.health.reconnects == 0  # the first connection that worked is not a *re*connect


async def test_refused_connection_retries_until_server_appears(port: int) -> None:
    state = make_state()
    stop = asyncio.Event()
    plan = WsPlan("tickers", f"ws://127.0.0.1:{port}/ws", subscribe=(SUB,))
    conn = FeedConnection(JsonFeed(), plan, FeedContext(EX), state, backoff=FAST)
    task = asyncio.create_task(conn.run(stop))
    await wait_until(lambda: conn.last_error is not None)
    assert classify_error(conn.last_error) == "retry"

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(json.dumps({"mark": 7.0}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", port):
        await wait_until(lambda: state.instruments[(EX, "BTCUSDT")].mark_price == 7.0)
        stop.set()
        await asyncio.wait_for(task, 30)
    assert state.stream(EX, "tickers").connected is False


async def test_cancel_closes_socket() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await srv.drain(ws, n)

    async with Running(behaviour) as r:
        await wait_until(lambda: r.health.connected and bool(r.server.connections))
        r.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await r.task
        await wait_until(lambda: r.server.connections[0]["closed"] is not None)
        r.task = asyncio.create_task(asyncio.sleep(0))  # for __aexit__


async def test_backoff_grows_while_connections_fail_fast_and_resets_when_healthy() -> None:
    async def accept_then_close(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.close()

    grow = BackoffPolicy(initial_s=0.01, factor=2.0, max_s=0.04, healthy_after_s=60.0)
    async with Running(accept_then_close, backoff=grow, rand=lambda: 1.0) as r:
        await wait_until(lambda: len(r.conn.backoff_delays) >= 5)
        assert list(r.conn.backoff_delays)[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]  # doubling, then capped
        assert r.health.reconnects >= 4

    healthy = BackoffPolicy(initial_s=0.01, factor=2.0, max_s=0.04, healthy_after_s=0.0, short_session_s=0.0)
    async with Running(accept_then_close, backoff=healthy, rand=lambda: 1.0) as r:
        await wait_until(lambda: len(r.conn.backoff_delays) >= 4)
        assert list(r.conn.backoff_delays)[:4] == [0.01] * 4  # every session counted as healthy: reset


# ---- pure policy ---------------------------------------------------------------------------------


def test_backoff_grows_and_is_capped() -> None:
    p = BackoffPolicy(initial_s=0.5, factor=2.0, max_s=30.0)
    ceilings = [backoff_delay(a, p, rand=lambda: 1.0) for a in range(10)]
    assert ceilings[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert ceilings[7:] == [30.0, 30.0, 30.0]
    assert backoff_delay(10_000, p, rand=lambda: 1.0) == 30.0  # no overflow
    assert backoff_delay(3, p, rand=lambda: 0.0) == 0.0
    with pytest.raises(ValueError):
        backoff_delay(-1, p)


def test_backoff_is_full_jitter() -> None:
    p = BackoffPolicy(initial_s=0.5, factor=2.0, max_s=30.0)
    rng = random.Random(42)
    samples = [backoff_delay(8, p, rand=rng.random) for _ in range(2000)]
    assert all(0.0 <= s <= 30.0 for s in samples)
    assert len(set(samples)) > 1900  # spread, not a fixed delay
    # uniform over [0, cap]: about half below the midpoint
    assert 0.4 < sum(s < 15.0 for s in samples) / len(samples) < 0.6


def test_classify_error() -> None:
    def status(code: int) -> InvalidStatus:
        return InvalidStatus(Response(code, "x", Headers()))

    assert classify_error(ConnectionRefusedError()) == "retry"
    assert classify_error(TimeoutError()) == "retry"
    assert classify_error(status(503)) == "retry"
    assert classify_error(status(429)) == "retry"
    assert classify_error(status(403)) == "fatal"
    assert classify_error(status(404)) == "fatal"
    assert classify_error(InvalidURI("htp://x", "bad scheme")) == "fatal"
