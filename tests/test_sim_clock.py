"""The simulator's market runs on a Clock: a VirtualClock a test drives, `advance(dt)` in process and over
`POST /_sim/advance`, and a time scale (`--time-scale N`). A cascade or a settlement takes milliseconds."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import pytest
import websockets
from support import wait_until

from exporter.clock import SYSTEM_CLOCK, ScaledClock, VirtualClock
from exporter.model import Exchange
from exporter.sim.main import Simulator, add_arguments, run

T0 = 1_767_225_600.0 + 1234.5  # 2026-01-01, not on an hour


async def _post(sim: Simulator, path: str, body: dict[str, Any], ex: Exchange = Exchange.BINANCE) -> httpx.Response:
    async with httpx.AsyncClient() as h:
        return await h.post(sim.urls(ex)[1] + path, json=body)


async def test_market_time_is_the_virtual_clock_and_moves_only_when_advanced() -> None:
    clock = VirtualClock(T0)
    async with Simulator(seed=5, base_port=0, clock=clock, exchanges=(Exchange.BINANCE,)) as sim:
        assert sim.market.now == T0
        await sim.advance(0)  # the ticker's first step ran at T0; nothing more
        assert sim.market.now == T0 and clock.time() == T0
        await sim.advance(30.0)
        assert clock.time() == T0 + 30.0
        assert sim.market.now == pytest.approx(T0 + 30.0)  # stepped tick by tick up to the clock


async def test_cascade_runs_its_course_in_virtual_time() -> None:
    clock = VirtualClock(T0)
    async with Simulator(seed=7, base_port=0, clock=clock, exchanges=(Exchange.BYBIT,)) as sim:
        liq0 = sum(i.liq_all[s].count for i in sim.market.all_instruments() for s in i.liq_all)
        sim.market.set_scenario("cascade", 8.0)
        phases: list[str] = []
        for _ in range(30):  # build 8 s, crash 12 s, then calm
            await sim.advance(1.0)
            phases.append(sim.market.cascade_phase)
        assert phases[:7] == ["build"] * 7 and "crash" in phases and phases[-1] == ""
        assert phases.index("crash") == 7  # the crash starts when the 8 s build has elapsed, by the clock
        liq1 = sum(i.liq_all[s].count for i in sim.market.all_instruments() for s in i.liq_all)
        assert liq1 > liq0  # the crash liquidated positions
        assert sim.market.scenario == "calm"


async def test_advance_over_http_publishes_the_new_time_and_settles() -> None:
    clock = VirtualClock(T0)
    async with Simulator(seed=3, base_port=0, clock=clock, exchanges=(Exchange.BINANCE,)) as sim:
        inst = sim.market.instruments[Exchange.BINANCE]["BTCUSDT"]
        due, settled0 = inst.next_funding_time, inst.settlements_count
        ws_url = sim.urls(Exchange.BINANCE)[0] + "/market/ws/btcusdt@markPrice@1s"
        async with websockets.connect(ws_url) as ws:
            r = await _post(sim, "/_sim/advance", {"seconds": 5})
            assert r.status_code == 200, r.text
            assert r.json()["time"] == pytest.approx(T0 + 5)
            # every second of the jump is published, with the market's (virtual) timestamps
            stamps = [json.loads(await ws.recv())["E"] / 1000 for _ in range(5)]
        assert stamps == sorted(stamps) and len(set(stamps)) == 5 and stamps[0] >= T0 and stamps[-1] <= T0 + 5
        assert inst.settlements_count == settled0  # not due yet
        r = await _post(sim, "/_sim/advance", {"seconds": due - (T0 + 5) + 1})
        assert r.json()["time"] == pytest.approx(due + 1)
        assert inst.settlements_count == settled0 + 1  # the funding time passed: settled once
        assert inst.next_funding_time == due + inst.spec.interval_s
        assert inst.history[-1].time_ms == int(due * 1000)
        for bad in ({"seconds": -1}, {"seconds": "soon"}, {}):
            assert (await _post(sim, "/_sim/advance", bad)).status_code == 400


async def test_advance_on_wall_time_jumps_ahead_and_stays_ahead() -> None:
    async with Simulator(seed=3, base_port=0, exchanges=(Exchange.OKX,)) as sim:
        assert sim.clock is SYSTEM_CLOCK
        before = sim.market.now
        await sim.advance(3600.0)
        assert sim.market.now >= before + 3600.0
        ahead = sim.market.now - SYSTEM_CLOCK.time()
        assert 3590.0 < ahead <= 3600.0
        # the ticker goes on from there, not back to the wall clock
        t = sim.market.now
        await wait_until(lambda: sim.market.now > t, timeout=10, what="a tick after the jump")
        assert sim.market.now - SYSTEM_CLOCK.time() > 3590.0


async def test_time_scale_option_runs_the_market_on_a_scaled_clock() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--base-port", "0", "--time-scale", "50"])
    assert args.time_scale == 50.0
    sim = Simulator(seed=1, base_port=0, time_scale=args.time_scale, exchanges=(Exchange.DERIBIT,))
    assert isinstance(sim.clock, ScaledClock) and sim.clock.speed == 50.0
    async with sim:
        t0 = sim.market.now
        # 60 s of market time: 1.2 s of wall time at 50x (the timeout is a deadlock guard)
        await wait_until(lambda: sim.market.now >= t0 + 60.0, timeout=30, what="a scaled minute")
    assert callable(run)
