"""Run the four simulated exchanges: ``fr-exporter simulate`` (via the lead's CLI) or programmatically.

>>> sim = Simulator(seed=1, base_port=0)      # doctest: +SKIP
>>> await sim.start(); sim.urls(Exchange.BINANCE)   # ('ws://127.0.0.1:PORT', 'http://127.0.0.1:PORT')

Market time comes from a :class:`~exporter.clock.Clock`: wall time by default, N times faster with
``time_scale`` (``--time-scale N``), or a :class:`~exporter.clock.VirtualClock` that a test drives.
``await sim.advance(dt)`` (or ``POST /_sim/advance {"seconds": dt}`` on any exchange's port) moves
market time forward at once, so a cascade or a settlement happens in milliseconds of test time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
from typing import Any

import orjson
from aiohttp import web

from exporter.clock import SYSTEM_CLOCK, Clock, ScaledClock, VirtualClock
from exporter.model import Exchange
from exporter.sim import futures_wire
from exporter.sim.binance import BinanceServer
from exporter.sim.bybit import BybitServer
from exporter.sim.deribit import DeribitServer
from exporter.sim.market import MarketModel, Scenario
from exporter.sim.okx import OkxServer
from exporter.sim.server import ExchangeServer, SimOptions

log = logging.getLogger("exporter.sim")

SERVERS: dict[Exchange, type[ExchangeServer]] = {
    Exchange.BINANCE: BinanceServer,
    Exchange.BYBIT: BybitServer,
    Exchange.OKX: OkxServer,
    Exchange.DERIBIT: DeribitServer,
}
PORT_OFFSET = {Exchange.BINANCE: 0, Exchange.BYBIT: 1, Exchange.OKX: 2, Exchange.DERIBIT: 3}
MAX_ADVANCE_STEPS = 2_000  # model steps one advance() may take (an 8 h jump: 14.4 s steps)


class Simulator:
    """The market model plus one aiohttp server per exchange, stepped by one ticker task."""

    def __init__(
        self,
        seed: int = 1,
        host: str = "127.0.0.1",
        base_port: int = 18001,
        scenario: str = Scenario.CALM,
        instruments_per_exchange: int = 2,
        tick_seconds: float = 0.25,
        options: SimOptions | None = None,
        exchanges: tuple[Exchange, ...] = tuple(Exchange),
        clock: Clock | None = None,
        time_scale: float = 1.0,
        futures_short_seconds: float | None = None,
    ) -> None:
        self.host = host
        self.base_port = base_port
        self.tick_seconds = tick_seconds
        self.exchanges = exchanges
        if clock is None:
            clock = SYSTEM_CLOCK if time_scale == 1.0 else ScaledClock(time_scale)
        self.clock = clock
        self._ahead = 0.0  # market time jumped ahead of the clock by advance() (clocks a test cannot move)
        self.market = MarketModel(
            seed=seed,
            instruments_per_exchange=instruments_per_exchange,
            start_time=clock.time(),
            exchanges=exchanges,
            futures_short_seconds=futures_short_seconds,
        )
        if scenario != Scenario.CALM:
            self.market.set_scenario(scenario)
        self.options = options or SimOptions()
        self.servers: dict[Exchange, ExchangeServer] = {ex: SERVERS[ex](self.market, self.options) for ex in exchanges}
        for srv in self.servers.values():
            srv.advance_hook = self.advance
            srv.live_now = self.now  # server time between ticks (a tick-old stamp would read as clock skew)
        self.ports: dict[Exchange, int] = {}
        self._runners: list[web.AppRunner] = []
        self._task: asyncio.Task[None] | None = None

    def urls(self, exchange: Exchange) -> tuple[str, str]:
        port = self.ports[exchange]
        return f"ws://{self.host}:{port}", f"http://{self.host}:{port}"

    def exporter_exchanges(self, max_instruments: int, **settings: Any) -> dict[str, dict[str, Any]]:
        """The exporter's ``exchanges:`` settings that follow every perpetual this simulator lists (up to
        ``max_instruments`` an exchange) on the exchanges it runs, the others disabled; ``settings`` are
        added to each followed exchange."""
        out: dict[str, dict[str, Any]] = {ex.value: {"enabled": False} for ex in Exchange}
        for ex in self.exchanges:
            ws, rest = self.urls(ex)
            out[ex.value] = {"ws_url": ws, "rest_url": rest, "instruments": [], "all_perpetuals": True,
                             "max_instruments": max_instruments, **settings}  # fmt: skip
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "simulator": {
                ex.value: {"ws": self.urls(ex)[0], "rest": self.urls(ex)[1], "port": self.ports[ex]}
                for ex in self.exchanges
            }
        }

    async def start(self) -> None:
        for ex in self.exchanges:
            runner = web.AppRunner(self.servers[ex].make_app(), access_log=None, handle_signals=False)
            await runner.setup()
            port = 0 if self.base_port == 0 else self.base_port + PORT_OFFSET[ex]
            site = web.TCPSite(runner, self.host, port)
            await site.start()
            self._runners.append(runner)
            server = site._server  # the bound port when 0 (ephemeral) was asked for
            sockets = getattr(server, "sockets", None) or []
            self.ports[ex] = int(sockets[0].getsockname()[1]) if sockets else port
        self._task = asyncio.get_running_loop().create_task(self._ticker())

    def now(self) -> float:
        """Market time: the clock's, plus what advance() jumped."""
        return self.clock.time() + self._ahead

    def _step(self, dt: float) -> None:
        try:
            self.market.step(dt, now=self.now())
            for srv in self.servers.values():
                srv.on_tick(self.market.now + srv.stamp_shift_s)  # frames stamped on the exchange's clock
                futures_wire.publish(srv, self.market.now)
        except Exception:  # a bug in one step must not stop the market
            log.exception("simulator step failed")

    async def _ticker(self) -> None:
        clock = self.clock
        virtual = isinstance(clock, VirtualClock)
        last = next_at = clock.monotonic()
        dt = self.tick_seconds
        while True:
            next_at += self.tick_seconds
            self._step(dt)
            delay = next_at - clock.monotonic()
            if delay < -5 * self.tick_seconds:
                next_at = clock.monotonic()  # fell far behind (huge universe): do not try to catch up
                delay = 0.0
            await clock.sleep(max(0.0, delay))
            # on a VirtualClock the model moves by the time elapsed (one step of advance()); on wall or
            # scaled time by one tick, as before (a starved loop slows the market, it does not jump)
            now = clock.monotonic()
            if virtual:
                dt = max(now - last, 1e-6)
            last = now

    async def advance(self, seconds: float) -> None:
        """Move market time forward by ``seconds`` now, tick by tick (every step publishes as live).

        On a VirtualClock the clock itself advances (everything sharing it sees the same time). On wall
        or scaled time the model is stepped at once and stays that far ahead of its clock. Steps are a
        tick, or ``seconds / MAX_ADVANCE_STEPS`` for long jumps (hours stay cheap; the model's decays are
        exact for any step, a crash is coarser).
        """
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError(f"advance needs a finite number of seconds >= 0, not {seconds!r}")
        n = math.ceil(seconds / max(self.tick_seconds, seconds / MAX_ADVANCE_STEPS) - 1e-9)
        virtual = self.clock if isinstance(self.clock, VirtualClock) else None
        t0, ahead0 = self.clock.time(), self._ahead
        for k in range(1, n + 1):
            done = seconds * k / n  # from the start, not summed: the jump ends exactly at +seconds
            if virtual is not None:
                virtual.set_time(t0 + done)  # wakes the ticker (and whatever else shares the clock)
                for _ in range(3):
                    await asyncio.sleep(0)  # the ticker steps the model by the step, writers send
            else:
                dt = ahead0 + done - self._ahead
                self._ahead = ahead0 + done
                self._step(dt)
                await asyncio.sleep(0)  # let the connections' writers send what the step published

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for srv in self.servers.values():
            await srv.close_all()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=18001,
        help="binance port; bybit +1, okx +2, deribit +3; 0 = ephemeral ports (printed)",
    )
    parser.add_argument("--seed", type=int, default=1, help="market model seed")
    parser.add_argument("--scenario", choices=Scenario.ALL, default=Scenario.CALM)
    parser.add_argument(
        "--instruments-per-exchange",
        type=int,
        default=2,
        help="2 = BTC and ETH; more adds SOL, XRP, ... then numbered synthetic symbols",
    )
    parser.add_argument("--tick-seconds", type=float, default=0.25, help="model step (seconds)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="market time runs N times faster than wall time (scenarios, settlements); default 1",
    )
    parser.add_argument(
        "--max-lifetime-seconds",
        type=float,
        default=24 * 3600.0,
        help="Binance closes connections after this long (default 24 h)",
    )
    parser.add_argument(
        "--ping-interval-seconds", type=float, default=180.0, help="Binance server ping frame interval (default 3 min)"
    )
    parser.add_argument(
        "--deribit-min-heartbeat",
        type=float,
        default=10.0,
        help="smallest public/set_heartbeat interval accepted (Deribit: 10 s)",
    )
    parser.add_argument(
        "--futures-short-seconds",
        type=float,
        default=None,
        help="also list BTC dated futures this many seconds apart (the first expires that soon after start): "
        "a test watches an expiry and a roll",
    )
    parser.add_argument(
        "--okx-funding-push-seconds", type=float, default=30.0, help="OKX funding-rate push period (real: 30-90 s)"
    )
    parser.add_argument(
        "--skew",
        action="append",
        default=[],
        metavar="EXCHANGE=SECONDS",
        help="the exchange's clock runs this far ahead (server time and stamps); repeatable",
    )
    parser.add_argument(
        "--delay",
        action="append",
        default=[],
        metavar="EXCHANGE=SECONDS",
        help="the exchange's frames are stamped this long before they are sent; repeatable",
    )


def per_exchange_seconds(items: list[str], what: str) -> dict[str, float]:
    """``["binance=0.4", ...]`` -> ``{"binance": 0.4}`` (ValueError naming the bad item)."""
    out: dict[str, float] = {}
    names = {e.value for e in Exchange}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not sep or name not in names or seconds != seconds or abs(seconds) > 3600.0:
            raise ValueError(f"--{what} {item!r}: expected EXCHANGE=SECONDS with EXCHANGE one of {sorted(names)}")
        out[name] = seconds
    return out


async def run(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    options = SimOptions(
        ping_interval_s=getattr(args, "ping_interval_seconds", 180.0) or None,
        max_lifetime_s=getattr(args, "max_lifetime_seconds", 24 * 3600.0) or None,
        deribit_min_heartbeat_s=getattr(args, "deribit_min_heartbeat", 10.0),
        okx_funding_push_s=getattr(args, "okx_funding_push_seconds", 30.0),
        skew_s=per_exchange_seconds(getattr(args, "skew", []) or [], "skew"),
        delay_s=per_exchange_seconds(getattr(args, "delay", []) or [], "delay"),
    )
    sim = Simulator(
        seed=args.seed,
        host=args.host,
        base_port=args.base_port,
        scenario=args.scenario,
        instruments_per_exchange=args.instruments_per_exchange,
        tick_seconds=args.tick_seconds,
        options=options,
        time_scale=getattr(args, "time_scale", 1.0),
        futures_short_seconds=getattr(args, "futures_short_seconds", None),
    )
    await sim.start()
    sys.stdout.write(orjson.dumps(sim.describe()).decode() + "\n")
    sys.stdout.flush()
    stop = stop or asyncio.Event()
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    """Standalone entry point (``python -m exporter.sim.main``); stops cleanly on SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="fr-exporter-sim", description="simulated exchanges")
    add_arguments(parser)
    args = parser.parse_args(argv)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
