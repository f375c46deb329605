"""How long the factor-history backfill takes per exchange at N instruments, within the REST budgets
(default share 0.5), against the simulator (which refuses what goes beyond the limits): when every
instrument of an exchange has its 4 h of marks, and its open-interest history."""

from __future__ import annotations

import asyncio
import sys
import time

import httpx

from exporter.app import Exporter
from exporter.config import Config
from exporter.model import Exchange
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
LIMIT_S = float(sys.argv[2]) if len(sys.argv) > 2 else 1500


async def main() -> None:
    sim = sim_main.Simulator(
        seed=11,
        base_port=0,
        tick_seconds=1.0,
        instruments_per_exchange=N,
        options=sim_server.SimOptions(okx_funding_push_s=5.0),
    )
    await sim.start()
    exchanges: dict[str, dict[str, object]] = {}
    for ex in Exchange:
        ws, rest = sim.urls(ex)
        exchanges[ex.value] = {
            "ws_url": ws,
            "rest_url": rest,
            "instruments": [],
            "all_perpetuals": True,
            "max_instruments": N,
            "futures": {"enabled": False},
        }
    cfg = Config.model_validate({"listen_address": "127.0.0.1:0", "exchanges": exchanges})
    exp = Exporter(cfg, serve=False)
    t0 = time.monotonic()
    stop = asyncio.Event()
    task = asyncio.create_task(exp.run(stop))
    marks: dict[str, float] = {}
    oi: dict[str, float] = {}
    while time.monotonic() - t0 < LIMIT_S and (len(marks) < 4 or len(oi) < 3):
        await asyncio.sleep(1)
        for ex in Exchange:
            sts = [st for (e, _), st in exp.state.instruments.items() if e is ex]
            if len(sts) < N:
                continue
            if ex.value not in marks and all(len(st.mark_minutes) >= 200 for st in sts):
                marks[ex.value] = time.monotonic() - t0
            if ex is not Exchange.DERIBIT and ex.value not in oi and all(len(st.oi_samples) >= 40 for st in sts):
                oi[ex.value] = time.monotonic() - t0
    async with httpx.AsyncClient() as http:
        truths = {ex.value: (await http.get(sim.urls(ex)[1] + "/_sim/truth")).json() for ex in Exchange}
    refused = {k: t["rate_limits"]["refused"] for k, t in truths.items()}

    def fmt(d: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.0f} s" for k, v in sorted(d.items(), key=lambda x: x[1]))

    print(
        f"N={N}/exchange (limit {LIMIT_S:.0f} s): every instrument's 4 h of marks: {fmt(marks)}; "
        f"its open-interest history: {fmt(oi)}; refused: {refused}"
    )
    stop.set()
    await asyncio.wait_for(task, 60)
    await sim.stop()


asyncio.run(main())
