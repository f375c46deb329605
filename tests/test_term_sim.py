"""Term structure against the in-process simulator over real loopback sockets: the four exchanges'
dated futures agree with the simulator's truth, and a short-dated contract expires (leaves /metrics)
while its successor is listed and followed without a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until

from exporter.app import run_exporter
from exporter.config import Config
from exporter.model import Exchange
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

SHORT_S = 15.0  # the simulator's short-dated BTC ladder: one contract delivers every 15 s

Samples = dict[str, dict[tuple[str, str], tuple[dict[str, str], float]]]


async def scrape(http: httpx.AsyncClient, port: int) -> Samples:
    r = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if "expiry" in s.labels:
                out.setdefault(s.name, {})[(s.labels["exchange"], s.labels["instrument"])] = (dict(s.labels), s.value)
    return out


def config(sim: Any) -> Config:
    exchanges = {}
    for ex in Exchange:
        ws, rest = sim.urls(ex)
        exchanges[ex.value] = {
            "ws_url": ws,
            "rest_url": rest,
            "backfill": False,
            "stale": {"stream_seconds": 3.0, "price_seconds": 3.0},
            "futures": {"bases": ["BTC", "ETH"], "nearest": 4},
        }
    return Config.model_validate({"listen_address": "127.0.0.1:0", "exchanges": exchanges})


@pytest.mark.timeout(120)
async def test_curve_agrees_with_the_simulator_and_rolls_at_expiry() -> None:
    options = sim_server.SimOptions(okx_funding_push_s=1.0)
    sim = sim_main.Simulator(seed=5, base_port=0, tick_seconds=0.1, options=options, futures_short_seconds=SHORT_S)
    await sim.start()
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_exporter(config(sim), stop, ready.set_result))
    try:
        port = await asyncio.wait_for(asyncio.shield(ready), 30)
        async with httpx.AsyncClient(timeout=5.0) as http:

            async def truth(ex: Exchange) -> dict[str, Any]:
                return dict((await http.get(sim.urls(ex)[1] + "/_sim/truth")).json())

            # 1. every exchange's contracts, with values agreeing with the simulator's truth
            async def agreeing() -> Samples | None:
                m = await scrape(http, port)
                for ex in Exchange:
                    t = await truth(ex)
                    for sym, f in t["futures"].items():
                        if f["expiry"] - t["time"] < 3.0:
                            continue  # about to deliver: may be gone by the scrape
                        key = (ex.value, sym)
                        mark = m.get("fr_future_mark_price", {}).get(key)
                        basis = m.get("fr_basis_ratio", {}).get(key)
                        exp = m.get("fr_future_expiry_timestamp_seconds", {}).get(key)
                        if mark is None or basis is None or exp is None:
                            return None
                        assert exp[1] == pytest.approx(f["expiry"], abs=1e-3)  # ms on the wire
                        assert mark[0]["base"] == f["base"] and mark[0]["quote"] == f["quote"]
                        if abs(mark[1] / f["mark"] - 1) > 2e-3 or abs(basis[1] - f["basis"]) > 5e-4:
                            return None  # a price moved between the two reads: read again
                return m

            m = await wait_until(agreeing, 40, interval=0.2, what="dated futures of four exchanges agreeing with truth")
            assert {ex for ex, _ in m["fr_future_mark_price"]} == {e.value for e in Exchange}
            # quarterlies (months out) carry the annualised figures; the short ladder (under a day) does not
            d = await truth(Exchange.DERIBIT)
            quarterly = next(s for s, f in d["futures"].items() if f["days_to_expiry"] > 30)
            ann = m["fr_basis_annualized_ratio"][("deribit", quarterly)][1]
            f = d["futures"][quarterly]
            assert ann == pytest.approx(f["basis"] * 365 / f["days_to_expiry"], abs=2e-3)
            short = next(s for s, f in d["futures"].items() if f["days_to_expiry"] < 1)
            assert ("deribit", short) not in m.get("fr_basis_annualized_ratio", {})

            # 2. on every exchange the nearest short contract delivers: it leaves /metrics; its successor appears
            before: dict[Exchange, tuple[str, set[str]]] = {}
            for ex in Exchange:
                t = await truth(ex)
                before[ex] = (min(t["futures"], key=lambda s: t["futures"][s]["expiry"]), set(t["futures"]))

            async def rolled() -> dict[Exchange, str] | None:
                m = await scrape(http, port)
                successors = {}
                for ex, (nearest, listed) in before.items():
                    t = await truth(ex)
                    new = set(t["futures"]) - listed
                    names = {sym for e, sym in m.get("fr_future_expiry_timestamp_seconds", {}) if e == ex.value}
                    if nearest not in t["expired"] or nearest in names or not new or not new <= names:
                        return None
                    successors[ex] = next(iter(new))
                return successors

            successors = await wait_until(rolled, SHORT_S + 25, interval=0.2, what="expiry and roll on /metrics")
            assert successors[Exchange.BINANCE].startswith("BTCUSDT_")
            assert successors[Exchange.DERIBIT].startswith("BTC-")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sim.stop()
