"""The simulator answers the exporter's permessage-deflate offer per exchange (SimOptions.ws_deflate)."""

from __future__ import annotations

import asyncio
import json

import websockets

from exporter.clock import VirtualClock
from exporter.model import Exchange
from exporter.sim.main import Simulator
from exporter.sim.server import WS_DEFLATE, SimOptions


def _deflate(ws: websockets.ClientConnection) -> bool:
    return any(e.name == "permessage-deflate" for e in ws.protocol.extensions)


async def test_each_exchange_accepts_deflate_as_set_and_frames_arrive_either_way() -> None:
    assert WS_DEFLATE["binance"] is True  # Binance answers the offer (docs/recording.md, with sources)
    options = SimOptions(rate_limits=False, ws_deflate={"binance": True, "bybit": False})
    sim = Simulator(seed=3, base_port=0, clock=VirtualClock(1_767_225_600.0), options=options)
    await sim.start()
    try:
        binance, _ = sim.urls(Exchange.BINANCE)
        async with websockets.connect(binance + "/market/stream?streams=btcusdt@markPrice@1s") as ws:
            assert _deflate(ws)  # websockets offers it by default, as the exporter's connection does
            await sim.advance(1.0)
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"]["s"] == "BTCUSDT"
        bybit, _ = sim.urls(Exchange.BYBIT)
        async with websockets.connect(bybit + "/v5/public/linear") as ws:
            assert not _deflate(ws)
            await ws.send(json.dumps({"req_id": "r1", "op": "subscribe", "args": ["tickers.BTCUSDT"]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["success"] is True
        okx, _ = sim.urls(Exchange.OKX)  # not in the options' map: accepts, as before
        async with websockets.connect(okx + "/ws/v5/public") as ws:
            assert _deflate(ws)
    finally:
        await sim.stop()
