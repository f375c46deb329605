"""End to end: simulator (cascade scenario) -> exporter process -> sidecar baseline.

The baseline's probability for BTC must rise during the build-up, before the crash, and fall after
the cascade once the market has calmed (the sidecar's memories are shortened to the simulator's
time scale through configuration: volatility and flow half-lives of seconds, not hours).

The simulator and the sidecar share a clock running SCALE times faster than wall time (ScaledClock):
the sidecar's half-lives, volatility and its poll and schedule periods are in market seconds (its
loops sleep on that clock); this test's sampling is divided by SCALE. The same course of events,
sampled as often, in a SCALE-th of the wall time.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import ROOT, free_port, wait_until

import exporter.app  # noqa: F401  # the exporter process needs it: fail here, not in the subprocess
from exporter.clock import ScaledClock
from exporter.config import Config, SidecarConfig
from exporter.model import Exchange
from exporter.sidecar.main import Sidecar
from exporter.sim import main as sim_main

pytestmark = pytest.mark.slow(seconds=10)  # scheduled first (tests/conftest.py)

SCALE = 6.0  # market seconds per wall second
BTC_8H = ("baseline", "BTC", 8.0)  # the published answer followed: (model, base, horizon hours)


class MarketClock(ScaledClock):
    """The simulator's scaled clock, also callable: the sidecar takes a ``() -> float`` clock."""

    def __call__(self) -> float:
        return self.time()


def _exporter_config(sim: object, port: int, path: Path) -> None:
    # a short backfill on the whole published limit: the start-up is the paced funding-history load
    lines = [f"listen_address: 127.0.0.1:{port}", "log_level: WARNING", "analytics:"]
    lines += ["  zscore_window_seconds: 345600", "  anchor_window_seconds: 3600"]
    lines += ["rest_budget:", "  fraction: 1.0", "exchanges:"]
    for ex in Exchange:
        ws, rest = sim.urls(ex)  # type: ignore[attr-defined]
        lines += [
            f"  {ex.value}:",
            f"    ws_url: {ws}",
            f"    rest_url: {rest}",
            "    poll:",
            "      open_interest_seconds: 1",
            "    futures:",  # the sidecar reads no dated future: their lists and streams are not started
            "      enabled: false",
        ]
    path.write_text("\n".join(lines) + "\n")


async def _wait_state(url: str, timeout: float) -> None:
    async with httpx.AsyncClient() as client:

        async def serves_btc() -> bool:
            try:
                doc = (await client.get(f"{url}/api/state")).json()
            except (httpx.HTTPError, ValueError):
                return False
            return any(i.get("base") == "BTC" and i.get("mark_price") for i in doc.get("instruments", []))

        await wait_until(serves_btc, timeout, interval=0.05, what="the exporter to serve BTC in /api/state")


async def test_baseline_rises_before_cascade_and_falls_after(tmp_path: Path) -> None:
    clock = MarketClock(SCALE)
    sim = sim_main.Simulator(seed=7, base_port=0, clock=clock)
    await sim.start()
    port = free_port()
    cfg_path = tmp_path / "exporter.yaml"
    _exporter_config(sim, port, cfg_path)
    log_file = (tmp_path / "exporter.log").open("wb")  # a file, not a pipe nobody reads
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "--config", str(cfg_path)],
        cwd=ROOT,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    exporter_url = f"http://127.0.0.1:{port}"
    sc: Sidecar | None = None
    stop = asyncio.Event()
    runner: asyncio.Task[None] | None = None
    try:
        await _wait_state(exporter_url, 60)  # a deadlock guard: the process starts slowly on a loaded machine
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exporter_url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=tmp_path / "sim.sqlite",
                # the sidecar's loops run on its clock: market seconds (0.5 s is 42 ms of wall time)
                interval_seconds=0.5,
                event_poll_seconds=0.25,
                bases=["BTC"],
                vol_half_life_seconds=8.0,
                flow_half_life_seconds=4.0,
                event_threshold_usd=1_000_000.0,
                # the judgement constants on the simulator's seconds-long time scale: the flow term is the
                # decayed flow itself (persistence = half-life / ln 2), as the mechanics this test checks
                cascade_distance_ratio=0.05,
                distance_decay=0.5,
                stress_weight=0.4,
                flow_scale=1.0,
                flow_persistence_seconds=4.0 / math.log(2),
                background_rate_per_hour=0.0,
            )
        )
        sidecar = sc = Sidecar(cfg, clock=clock)
        runner = asyncio.create_task(sc.run(stop))
        # The phases are told by what the sidecar has done, on its clock, not by windows of wall time: on
        # a loaded machine its loops run late and a wall window can end before it has published anything
        # worth comparing (the calm samples were then the prior it starts with, before any volatility).
        await wait_until(lambda: BTC_8H in sidecar.metrics.latest, 30, what="the sidecar's first BTC baseline")
        first_at = sidecar.metrics.latest[BTC_8H].at
        _, rest = sim.urls(Exchange.BINANCE)
        # (wall time, simulator phase, probability, when the sidecar made the answer on its clock)
        samples: list[tuple[float, str, float, float]] = []

        async def sample(client: httpx.AsyncClient) -> str:
            truth = (await client.get(f"{rest}/_sim/truth")).json()
            phase = truth.get("cascade_phase") or ""
            pub = sidecar.metrics.latest.get(BTC_8H)
            if pub is not None:
                samples.append((time.monotonic(), phase, pub.answer.liquidation_probability, pub.at))
            return phase

        def made_since(t: float) -> list[float]:
            return [p for _, _, p, at in samples if at >= t]

        # the polls pace the observation (as a chart's scrape interval); each phase ends on a condition,
        # the timeouts are deadlock guards
        period = 0.25 / SCALE
        async with httpx.AsyncClient() as client:
            # calm warm-up (volatility history): 5 market seconds of the sidecar's baselines, and 8
            # samples of baselines made with its volatility known (10 returns)
            vol_known: list[float] = []

            async def calm_seen() -> bool:
                await sample(client)
                if not vol_known and sidecar.vol("BTC", clock.time())[1] >= 10:
                    vol_known.append(clock.time())
                return bool(vol_known) and clock.time() >= first_at + 5 and len(made_since(vol_known[0])) >= 8

            await wait_until(calm_seen, 60, interval=period, what="a calm warm-up of the sidecar's baselines")
            calm = made_since(vol_known[0])[-8:]
            r = await client.post(f"{rest}/_sim/scenario", json={"name": "cascade", "seconds": 8})
            assert r.status_code == 200, r.text
            build: list[float] = []
            crash_seen = False

            async def cascade_over() -> bool:
                nonlocal crash_seen
                phase = await sample(client)
                if phase == "build":
                    build.append(samples[-1][2])
                elif phase == "crash":
                    crash_seen = True
                elif crash_seen:
                    return True
                return False

            await wait_until(cascade_over, 60, interval=period, what="the simulator's build-up, crash and calm")
            # calm again: flow and volatility memories decay; the answers compared were made 15 market
            # seconds after the crash on the sidecar's clock, however late its loops ran
            calm_again = clock.time() + 15

            async def decayed() -> bool:
                await sample(client)
                return len(made_since(calm_again)) >= 4

            await wait_until(decayed, 60, interval=period, what="the sidecar's baselines after the cascade")
        after = made_since(calm_again)[-4:]
        crash = [p for _, ph, p, _ in samples if ph == "crash"]
        trace = [(round(t - samples[0][0], 1), ph, round(p, 3)) for t, ph, p, _ in samples]
        assert build and crash, trace
        peak_before_crash = max(build[-8:])
        assert peak_before_crash > 2 * max(calm), f"no rise before the cascade: {trace}"
        assert max(after) < peak_before_crash, f"no fall after the cascade: {trace}"
        assert max(after) < 0.8 * max(crash), f"no fall after the cascade: {trace}"
    finally:
        stop.set()
        if runner is not None:
            await asyncio.wait_for(runner, 10)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
        await sim.stop()
