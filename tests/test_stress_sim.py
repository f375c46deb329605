"""Historical stress end to end: the exporter against the in-process simulator over loopback sockets.

A configured position's historical and parametric stress series are on the first scrape that shows
the position, and equal what this test computes itself from the simulator's own 1-minute mark-price
klines (fetched and parsed here, over Binance's wire shape): brute force over every pair of closes
for the worst moves, the sample mean and deviation of the 5-minute log returns for the normal law,
the moved mark against the published liquidation price for survival.

Simulator and exporter share a VirtualClock that the test moves only until the exporter serves,
within the minute it started in: the completed minutes the figures use are then all the
simulator's klines, the same ones this test reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.model import Exchange
from exporter.sim import main as sim_main

DAY_MINUTES = 1440


def config(sim: Any, tmp: Path, mark: float) -> Config:
    exchanges: dict[str, Any] = {ex.value: {"enabled": False} for ex in Exchange}
    ws, rest = sim.urls(Exchange.BINANCE)
    exchanges["binance"] = {"ws_url": ws, "rest_url": rest, "backfill": False, "stale": {"price_seconds": 3600}}
    position = {"exchange": "binance", "instrument": "BTCUSDT", "size": 1.0, "entry_price": round(mark, 1)}
    return Config.model_validate(
        {
            "listen_address": "127.0.0.1:0",
            "exchanges": exchanges,
            "positions": [
                {**position, "name": "short-3x", "side": "short", "leverage": 3},
                {**position, "name": "long-100x", "side": "long", "leverage": 100},
            ],
            "position_settings": {"db_path": str(tmp / "acc.sqlite"), "poll_seconds": 1, "stress_period_days": 1},
        }
    )


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def one(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    (value,) = [v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    return value


async def sim_mark_closes(http: httpx.AsyncClient, rest: str, start_ms: int, end_ms: int) -> dict[int, float]:
    """Minute -> close of the simulator's BTCUSDT mark klines, paged here (Binance: [openTime, o, h, l, c, ...])."""
    closes: dict[int, float] = {}
    cursor = start_ms
    while cursor <= end_ms:
        params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": cursor, "endTime": end_ms, "limit": 1500}
        rows = (await http.get(rest + "/fapi/v1/markPriceKlines", params=params)).json()
        for row in rows:
            closes[int(row[0]) // 60_000] = float(row[4])
        if len(rows) < 1500:
            break
        cursor = int(rows[-1][0]) + 1
    return closes


@pytest.mark.timeout(120)
async def test_a_configured_position_has_its_historical_stress_on_the_first_scrape(tmp_path: Path) -> None:
    start = math.floor(time.time() / 60.0) * 60.0 + 1.0  # a second into a minute: the test stays in it
    clock = VirtualClock(start)
    sim = sim_main.Simulator(seed=11, base_port=0, tick_seconds=0.5, clock=clock)
    await sim.start()
    rest = sim.urls(Exchange.BINANCE)[1]
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            truth = (await http.get(rest + "/_sim/truth")).json()
            exporter = Exporter(config(sim, tmp_path, float(truth["instruments"]["BTCUSDT"]["mark"])), clock=clock)
            ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(exporter.run(stop, ready.set_result))

            async def serving() -> bool:
                if not ready.done():
                    await sim.advance(1.0)  # frames come as market time moves
                    assert clock.time() < start + 55.0, "the exporter did not serve within the minute"
                return ready.done()

            await wait_until(serving, 30, interval=0.05, what="the exporter to serve")
            port = ready.result()

            # market time stands still from here: the first scrape with the positions on it
            async def first_position_scrape() -> dict[str, list[tuple[dict[str, str], float]]] | None:
                m = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
                return m if "fr_position_size" in m else None

            m = await wait_until(first_position_scrape, 60, interval=0.05, what="the positions on /metrics")
            minute = int(clock.time() // 60)
            assert minute == int(start // 60)

        async with httpx.AsyncClient(timeout=10.0) as http:
            lo, hi = minute - DAY_MINUTES, minute - 1  # the completed minutes of the trailing day
            closes = await sim_mark_closes(http, rest, lo * 60_000, hi * 60_000)
            mark = float((await http.get(rest + "/_sim/truth")).json()["instruments"]["BTCUSDT"]["mark"])
        assert len(closes) == DAY_MINUTES

        fall = min(closes[j] / closes[i] - 1 for j in range(lo, hi + 1) for i in range(max(lo, j - 5), j))
        rise = max(closes[j] / closes[i] - 1 for j in range(lo, hi + 1) for i in range(max(lo, j - 5), j))
        r = [math.log(closes[i + 5] / closes[i]) for i in range(lo, hi - 4)]
        mean = sum(r) / len(r)
        sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))

        worst, survives = "fr_position_historical_worst_move_ratio", "fr_position_historical_stress_survives"
        assert one(m, worst, position="long-100x", window="5m") == pytest.approx(fall, rel=1e-9)
        assert one(m, worst, position="short-3x", window="5m") == pytest.approx(rise, rel=1e-9)
        for name, move, long in (("long-100x", fall, True), ("short-3x", rise, False)):
            liq = one(m, "fr_liquidation_price", position=name)
            moved = mark * (1 + move)
            assert one(m, survives, position=name, window="5m") == float(moved > liq if long else moved < liq)
            for c in (0.99, 0.999):
                z = NormalDist().inv_cdf(c)
                expected = math.expm1(mean - z * sd if long else mean + z * sd)
                got = one(
                    m, "fr_position_parametric_move_ratio", position=name, confidence=f"{c:g}", distribution="normal"
                )
                assert got == pytest.approx(expected, rel=1e-9)
                t = one(
                    m, "fr_position_parametric_move_ratio", position=name, confidence=f"{c:g}", distribution="student_t"
                )
                assert (t < 0) if long else (t > 0)
        assert one(m, survives, position="short-3x", window="5m") == 1.0  # a 33 % rise liquidates it
    finally:
        stop.set()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 20)
        await sim.stop()
