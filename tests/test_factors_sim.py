"""The factor signals end to end: the exporter against the simulator over real loopback sockets, on one
shared VirtualClock. The backfill reads the exchanges' mark candles and open-interest history, so
fr_price_volatility_ratio and fr_open_interest_change_ratio are on the very first scrape, equal to
what the simulator computes from its own minute tape (truth ``?factors=1``) to the wire's rounding.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until
from support.clock import InstantClock

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.model import Exchange
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

pytestmark = pytest.mark.slow(seconds=3)  # the file: the exporter's start-up against the simulator

INSTRUMENTS = {
    Exchange.BINANCE: ["BTCUSDT", "ETHUSDT"],
    Exchange.BYBIT: ["BTCUSDT", "ETHUSDT"],
    Exchange.OKX: ["BTC-USDT-SWAP", "ETH-USDT-SWAP"],
    Exchange.DERIBIT: ["BTC-PERPETUAL", "ETH-PERPETUAL"],
}
START = 1_767_225_600.0 + 7 * 86400.0 + 1.0  # one second into a minute: the first scrape stays in it


def config(sim: Any) -> Config:
    exchanges = {}
    for ex, insts in INSTRUMENTS.items():
        ws, rest = sim.urls(ex)
        exchanges[ex.value] = {
            "ws_url": ws,
            "rest_url": rest,
            "instruments": insts,
            "futures": {"enabled": False},
            # market time stands still between steps: nothing may go stale while the test looks
            "stale": {"price_seconds": 120, "funding_seconds": 120, "open_interest_seconds": 600},
            "poll": {"open_interest_seconds": 600},
        }
    return Config.model_validate({"listen_address": "127.0.0.1:0", "exchanges": exchanges})


def samples(text: str, name: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[(s.labels["exchange"], s.labels["instrument"], s.labels.get("window", ""))] = s.value
    return out


@pytest.mark.timeout(90)
async def test_backfilled_factor_signals_are_on_the_first_scrape_and_equal_the_truth() -> None:
    clock = VirtualClock(START)
    # the backfill's reads paced on an instant clock, the simulator enforcing no limit (its windows are
    # wall time): the start-up at full speed; the pacing is test_rate_limits' and test_backfill_schedule's
    options = sim_server.SimOptions(okx_funding_push_s=1.0, rate_limits=False)
    sim = sim_main.Simulator(seed=9, base_port=0, tick_seconds=0.5, options=options, clock=clock)
    await sim.start()
    exporter = Exporter(config(sim), clock=clock, budget_clock=InstantClock())
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run(stop, ready.set_result))
    try:
        # market time moves a second at a time until the exporter serves (first prices and funding)
        async def served() -> bool:
            if ready.done():
                return True
            if clock.time() < START + 40:
                await sim.advance(1.0)
            return False

        await wait_until(served, 60, interval=0.05, what="the exporter to serve")
        now = clock.time()
        assert math.floor(now / 60) == math.floor(START / 60)  # still the start minute: all closes are history
        async with httpx.AsyncClient(timeout=10.0) as http:
            text = (await http.get(f"http://127.0.0.1:{ready.result()}/metrics")).text
            truth = {ex: (await http.get(sim.urls(ex)[1] + "/_sim/truth?factors=1")).json() for ex in Exchange}
        assert all(t["time"] == now for t in truth.values())  # the market stood still since the scrape
        vol = samples(text, "fr_price_volatility_ratio")
        oic = samples(text, "fr_open_interest_change_ratio")
        oi_now = samples(text, "fr_open_interest_usd")
        for ex, insts in INSTRUMENTS.items():
            for sym in insts:
                t = truth[ex]["instruments"][sym]
                for w in ("1h", "4h"):
                    got = vol.get((ex.value, sym, w))
                    want = t["price_volatility_ratio"][w]
                    assert want is not None and want > 0
                    # the wire rounds prices (Bybit to 2 decimals more than the tick): relative 1e-4
                    assert got == pytest.approx(want, rel=1e-4), (ex, sym, w)
                    if ex is Exchange.DERIBIT:
                        assert (ex.value, sym, w) not in oic  # Deribit publishes no open-interest history
                        continue
                    # OI(now - w): the simulator's tape at the 5-minute step at or before it (read here,
                    # not through the exporter); the exporter's current OI is its own fr_open_interest_usd
                    start = math.floor((now - (3600 if w == "1h" else 14400)) / 300) * 300
                    inst = sim.market.get(ex, sym)
                    assert inst is not None
                    (point,) = sim.market.tape.open_interest(inst, 300, start, start)
                    current = oi_now[(ex.value, sym, "")]
                    # pushed every few seconds (Binance: read at start): the market moved a little since
                    assert current == pytest.approx(t["open_interest_usd"], rel=2e-2)
                    assert oic[(ex.value, sym, w)] == pytest.approx(current / point[1] - 1, rel=1e-5, abs=1e-9)
                    # and the truth's ratio differs only by what the current value lags: (current - truth) / point
                    lag = abs(current - t["open_interest_usd"]) / point[1]
                    assert (
                        abs(oic[(ex.value, sym, w)] - t["open_interest_change_ratio"][w]) <= lag + 1e-6
                    )  # and the wire's rounding
        # /api/state carries the same figures
        async with httpx.AsyncClient(timeout=10.0) as http:
            doc = (await http.get(f"http://127.0.0.1:{ready.result()}/api/state")).json()
        rows = {(r["exchange"], r["instrument"]): r for r in doc["instruments"]}
        row = rows[("binance", "BTCUSDT")]
        assert row["price_volatility_ratio"]["1h"] == vol[("binance", "BTCUSDT", "1h")]
        assert row["price_volatility_ratio"]["4h"] == vol[("binance", "BTCUSDT", "4h")]
        # the open interest may have been polled again since the scrape: the row agrees with its own value
        inst = sim.market.get(Exchange.BINANCE, "BTCUSDT")
        assert inst is not None
        start = math.floor((now - 14400) / 300) * 300
        (point,) = sim.market.tape.open_interest(inst, 300, start, start)
        got = row["open_interest_change_ratio"]["4h"]
        assert got == pytest.approx(row["open_interest_usd"] / point[1] - 1, rel=1e-5, abs=1e-9)

        # live minutes extend the history: two minutes later the window has moved on and still agrees
        await wait_until(lambda: all(h.connected for h in exporter.state.streams.values()), 10, what="streams")
        for _ in range(125):
            await sim.advance(1.0)
            await asyncio.sleep(0.002)
        st = exporter.state.instruments[(Exchange.OKX, "BTC-USDT-SWAP")]
        await wait_until(lambda: st.mark_minute >= math.floor(clock.time() / 60) * 60, 10, what="the live minute")
        assert st.mark_minutes.last_time() == math.floor(clock.time() / 60) * 60 - 60  # live closes appended
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await sim.stop()
