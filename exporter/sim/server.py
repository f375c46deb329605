"""The aiohttp application of one simulated exchange: WebSocket + REST on one port, plus /_sim control.

Protocol modules (binance.py, bybit.py, okx.py, deribit.py) subclass :class:`ExchangeServer` and
fill in the WS message handling, the periodic publishing (``on_tick``) and the REST routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from exporter.model import Exchange
from exporter.sim import private
from exporter.sim.faults import Faults
from exporter.sim.market import MarketModel, Scenario
from exporter.sim.ratelimit import RateLimiter, retry_after_header

log = logging.getLogger("exporter.sim")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_ADVANCE_S = 7 * 24 * 3600.0  # largest jump of /_sim/advance


@dataclass(slots=True)
class SimOptions:
    ping_interval_s: float | None = 180.0  # Binance server ping frames (every 3 min)
    max_lifetime_s: float | None = 24 * 3600.0  # Binance closes connections at 24 h
    deribit_min_heartbeat_s: float = 10.0  # Deribit refuses shorter heartbeat intervals
    okx_funding_push_s: float = 30.0  # OKX pushes funding-rate every 30-90 s
    queue_max: int = 50_000  # outgoing frames buffered per connection before it is cut
    rate_limits: bool = True  # enforce the exchanges' per-IP REST limits (429 / Binance 418 / Bybit 403)
    # Per exchange (value -> seconds): its clock runs this far ahead of market time (server-time
    # endpoint and every stamp), and its frames are stamped this long before they are sent (delay).
    skew_s: dict[str, float] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    # Per exchange (value -> bool): whether its websocket accepts the permessage-deflate the client
    # offers (the exporter offers it). Binance does; for Bybit, OKX and Deribit it is UNVERIFIED and
    # the simulator accepts, as before (docs/recording.md "The exporter's receive path").
    ws_deflate: dict[str, bool] = field(default_factory=lambda: dict(WS_DEFLATE))


# What the exchanges answer to a permessage-deflate offer, as far as public sources show (docs/recording.md)
WS_DEFLATE: dict[str, bool] = {"binance": True, "bybit": True, "okx": True, "deribit": True}


@dataclass(eq=False)
class Conn:
    ws: web.WebSocketResponse
    path: str
    opened: float = field(default_factory=time.monotonic)
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex[:20])
    topics: set[str] = field(default_factory=set)
    queue: asyncio.Queue[tuple[str, bool]] = field(default_factory=asyncio.Queue)
    extra: dict[str, Any] = field(default_factory=dict)  # protocol state (Binance wrap mode, Deribit heartbeat)
    sent: int = 0
    closing: bool = False


FACTOR_WINDOWS = {"1h": 3600.0, "4h": 14400.0}


def dumps(obj: Any) -> str:
    # numpy scalars may come from the model; serialise them as plain numbers
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def ms(t: float) -> int:
    return int(t * 1000)


def fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def fmt_g(x: float) -> str:
    """The shortest decimal string of x, without exponent ("0.0001", "-0.00002", "3564190.92")."""
    s = format(Decimal(repr(float(x))), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def query_int(request: web.Request, name: str) -> int | None:
    v = request.query.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise web.HTTPBadRequest(text=f"bad {name}") from None


class ExchangeServer:
    exchange: Exchange
    ws_paths: tuple[str, ...] = ()
    ws_prefixes: tuple[str, ...] = ()  # paths matched by prefix (Binance /market/ws/<streams>)

    def __init__(self, market: MarketModel, options: SimOptions | None = None) -> None:
        self.market = market
        self.options = options or SimOptions()
        self.faults = Faults()
        self.limiter = RateLimiter.for_exchange(self.exchange) if self.options.rate_limits else None
        self.down = False
        self.conns: set[Conn] = set()
        self.frames_sent = 0
        self.counter = itertools.count(1)
        # set by the Simulator: moves the shared market time (POST /_sim/advance)
        self.advance_hook: Callable[[float], Awaitable[None]] | None = None
        self.live_now: Callable[[], float] | None = None  # set by the Simulator: market time right now
        self.skew_s = self.options.skew_s.get(self.exchange.value, 0.0)
        self.delay_s = self.options.delay_s.get(self.exchange.value, 0.0)

    # ------------------------------------------------------------------------------------------
    # the exchange's own clock (feed-quality tests inject skew and delay)

    @property
    def stamp_shift_s(self) -> float:
        """What a frame's stamp differs from market time: the skewed clock, read ``delay_s`` before
        the frame leaves (a frame stamped at the event and delivered that much later)."""
        return self.skew_s - self.delay_s

    def server_now(self) -> float:
        """The exchange's server time (its server-time endpoint): market time plus the skew."""
        return self._now() + self.skew_s

    def stamp_now(self) -> float:
        """The event time stamped on what is published now."""
        return self._now() + self.stamp_shift_s

    def _now(self) -> float:
        return self.live_now() if self.live_now is not None else self.market.now

    # ------------------------------------------------------------------------------------------
    # to implement per exchange

    def rest_routes(self) -> list[tuple[str, Handler]]:
        return []

    async def on_open(self, conn: Conn, request: web.Request) -> None:
        return None

    async def on_text(self, conn: Conn, text: str) -> None:
        return None

    def on_tick(self, now: float) -> None:
        """Called after every model step: publish what is due."""

    def ws_heartbeat(self) -> float | None:
        return None

    def max_lifetime(self) -> float | None:
        return None

    # ------------------------------------------------------------------------------------------
    # sending

    def send(self, conn: Conn, text: str, data: bool = True) -> None:
        """Queue a frame; data frames are subject to malformed/truncated faults when written."""
        if conn.closing:
            return
        if conn.queue.qsize() >= self.options.queue_max:
            # a consumer this slow is cut, as the real exchanges do
            conn.closing = True
            asyncio.get_running_loop().create_task(conn.ws.close(code=1008, message=b"slow consumer"))
            return
        conn.queue.put_nowait((text, data))

    def subscribers(self, topic: str) -> list[Conn]:
        return [c for c in self.conns if topic in c.topics]

    def broadcast(self, topic: str, text: str) -> int:
        n = 0
        for c in self.conns:
            if topic in c.topics:
                self.send(c, text)
                n += 1
        return n

    def publishing(self) -> bool:
        """False while the exchange is down or stalled: what would be pushed is lost."""
        return not self.down and not self.faults.stalled()

    async def _writer(self, conn: Conn) -> None:
        while True:
            text, data = await conn.queue.get()
            if self.faults.stalled():
                continue  # a stalled exchange sends nothing; the frame is lost
            if data:
                text = self.faults.mangle(text)
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return
            conn.sent += 1
            self.frames_sent += 1

    async def close_all(self, code: int = 1001, message: bytes = b"going away") -> None:
        conns = list(self.conns)
        for c in conns:
            c.closing = True
        await asyncio.gather(*(c.ws.close(code=code, message=message) for c in conns), return_exceptions=True)

    # ------------------------------------------------------------------------------------------
    # websocket endpoint

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            return web.Response(status=503, text="exchange down (simulated)")
        deflate = self.options.ws_deflate.get(self.exchange.value, True)
        ws = web.WebSocketResponse(heartbeat=self.ws_heartbeat(), max_msg_size=1 << 22, compress=deflate)
        await ws.prepare(request)
        conn = Conn(ws=ws, path=request.path_qs)
        self.conns.add(conn)
        writer = asyncio.get_running_loop().create_task(self._writer(conn))
        lifetime = self.max_lifetime()
        killer = None
        if lifetime:
            killer = asyncio.get_running_loop().call_later(
                lifetime, lambda: asyncio.ensure_future(ws.close(code=1000, message=b"max lifetime"))
            )
        try:
            await self.on_open(conn, request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if self.down:
                        break
                    await self.on_text(conn, msg.data)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            conn.closing = True
            self.conns.discard(conn)
            if killer is not None:
                killer.cancel()
            await self.on_close(conn)
            # let already-queued frames go out only if the socket is still usable
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if not ws.closed:
                await ws.close()
        return ws

    async def on_close(self, conn: Conn) -> None:
        return None

    # ------------------------------------------------------------------------------------------
    # control API

    async def truth(self, request: web.Request) -> web.Response:
        body = self.market.truth(self.exchange)
        body["down"] = self.down
        body["connections"] = len(self.conns)
        body["frames_sent"] = self.frames_sent
        body["faults"] = self.faults.snapshot()
        body["rate_limits"] = self.limiter.snapshot() if self.limiter is not None else None
        if request.query.get("factors"):  # on request only: it reads hours of tape per instrument
            self._factor_truth(body)
        return web.json_response(body, dumps=dumps)

    def _factor_truth(self, body: dict[str, Any]) -> None:
        """Per instrument, the factor signals computed from the market's own minute tape (sim/tape.py):
        ``open_interest_change_ratio`` and ``price_volatility_ratio`` per window (1h, 4h)."""
        tape, now = self.market.tape, self.market.now
        for sym, row in body["instruments"].items():
            inst = self.market.get(self.exchange, sym)
            if inst is None:
                continue
            row["open_interest_change_ratio"] = {w: tape.oi_change(inst, now, s) for w, s in FACTOR_WINDOWS.items()}
            row["price_volatility_ratio"] = {w: tape.volatility(inst, now, s) for w, s in FACTOR_WINDOWS.items()}

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return data

    async def fault(self, request: web.Request) -> web.Response:
        data = await self._json_body(request)
        kind = str(data.get("kind", ""))
        try:
            if kind == "drop":
                await self.close_all(code=1006 if data.get("abnormal") else 1001)
            else:
                self.faults.set(kind, data.get("seconds"), data.get("count"))
        except (ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "kind": kind, "faults": self.faults.snapshot()})

    async def scenario(self, request: web.Request) -> web.Response:
        data = await self._json_body(request)
        name = str(data.get("name", ""))
        if name not in Scenario.ALL:
            return web.json_response({"ok": False, "error": f"scenario must be one of {Scenario.ALL}"}, status=400)
        seconds = data.get("seconds")
        self.market.set_scenario(name, None if seconds is None else float(seconds))
        return web.json_response({"ok": True, "scenario": name, "params": self.market.scenario_params})

    async def settle(self, request: web.Request) -> web.Response:
        recs = self.market.settle_exchange(self.exchange)
        self.on_settle()
        return web.json_response({"ok": True, "settled": len(recs)})

    async def advance(self, request: web.Request) -> web.Response:
        data = await self._json_body(request)
        try:
            seconds = float(data.get("seconds"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return web.json_response({"ok": False, "error": "seconds must be a number"}, status=400)
        if not 0 <= seconds <= MAX_ADVANCE_S:
            return web.json_response({"ok": False, "error": f"seconds must be in [0, {MAX_ADVANCE_S:g}]"}, status=400)
        if self.advance_hook is None:
            return web.json_response({"ok": False, "error": "no simulator clock to advance"}, status=409)
        await self.advance_hook(seconds)
        return web.json_response({"ok": True, "time": self.market.now})

    async def set_clock(self, request: web.Request) -> web.Response:
        """``{"skew_s": float, "delay_s": float}``: this exchange's clock skew and frame delay."""
        body = await self._json_body(request)
        try:
            skew = float(body.get("skew_s", self.skew_s))
            delay = float(body.get("delay_s", self.delay_s))
        except (TypeError, ValueError):
            return web.json_response({"error": "skew_s and delay_s are numbers"}, status=400)
        if not (abs(skew) < 86400.0 and 0.0 <= delay < 3600.0):
            return web.json_response({"error": "skew_s within a day, 0 <= delay_s < 3600"}, status=400)
        self.skew_s, self.delay_s = skew, delay
        return web.json_response({"skew_s": skew, "delay_s": delay})

    def on_settle(self) -> None:
        """Hook: push what a settlement changes (OKX funding-rate)."""

    async def stop(self, request: web.Request) -> web.Response:
        self.down = True
        await self.close_all(code=1012, message=b"service restart")
        return web.json_response({"ok": True, "down": True})

    async def start(self, request: web.Request) -> web.Response:
        self.down = False
        return web.json_response({"ok": True, "down": False})

    # ------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sim/"):
            return await handler(request)
        if self.down:
            return web.Response(status=503, text="exchange down (simulated)")
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if not is_ws:
            f = self.faults.rest_fault()
            if f is not None:
                status, headers = f
                return web.Response(status=status, headers=headers, text="simulated fault")
            if self.limiter is not None:
                refused = self.limiter.check(path)
                if refused is not None:
                    return web.Response(
                        status=refused.status,
                        headers={"Retry-After": retry_after_header(refused.retry_after_s)},
                        text="too many requests (simulated per-IP limit)",
                    )
        return await handler(request)

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/_sim/truth", self.truth)
        app.router.add_post("/_sim/fault", self.fault)
        app.router.add_post("/_sim/scenario", self.scenario)
        app.router.add_post("/_sim/settle", self.settle)
        app.router.add_post("/_sim/advance", self.advance)
        app.router.add_post("/_sim/clock", self.set_clock)
        app.router.add_post("/_sim/stop", self.stop)
        app.router.add_post("/_sim/start", self.start)
        for p in self.ws_paths:
            app.router.add_get(p, self.ws_handler)
        for p in self.ws_prefixes:
            app.router.add_get(p + "{tail:.*}", self.ws_handler)
        for path, handler in self.rest_routes():
            app.router.add_get(path, handler)
        private.register(app, self.exchange, self.market)
        return app
