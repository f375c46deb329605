"""The anchor regressions on the first scrape, against the simulator (real loopback sockets).

The simulator and the exporter run on frozen VirtualClocks at the same time, so the market does not
move: the window the exporter shows on its first scrape is what it rebuilt from the simulator's
one-minute candles (plus at most one live sample, equal to the simulator's truth). The expected
slopes are computed here independently, from the simulator's own minute tape, with numpy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until
from support.clock import InstantClock

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.model import EIGHT_HOURS, Exchange
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

pytestmark = pytest.mark.slow(seconds=5)  # the file: the start-up backfill of 6 h of candles

WINDOW = 6 * 3600.0
BACKFILLED = (Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX)


def _config(sim: Any) -> Config:
    exchanges = {}
    for ex in Exchange:
        ws, rest = sim.urls(ex)
        exchanges[ex.value] = {"ws_url": ws, "rest_url": rest}
    # a short z-score window and the whole published limit: the start-up backfill ahead of the
    # anchor's candles takes a fraction of the default's time (the anchor window is the default 6 h)
    return Config.model_validate(
        {
            "listen_address": "127.0.0.1:0",
            "exchanges": exchanges,
            "analytics": {"zscore_window_seconds": 4 * 86400.0},
            "rest_budget": {"fraction": 1.0},
        }
    )


async def _expected_rows(
    exporter: Exporter, ex: Exchange, symbol: str, iv: float, now: float, cap: float | None, floor: float | None
) -> list[tuple[float, float, float]]:
    """(close time, funding per 8 h, premium) a minute over (now - 6 h, now]: the predicted rate by
    the documented formula from the interval-to-date weighted premium index, the premium from the
    mark and index closes of the same minute. The candles are read off the simulator's wire (its
    decimals are what the exporter sees); the rest is computed here with numpy."""
    rest = exporter.runtimes[ex].rest
    start = now - WINDOW
    first = math.floor((start - 60.0) / iv) * iv
    pidx = await rest.price_candles("premium", symbol, 60, first, now)
    mark = {c.open_time: c.close for c in await rest.price_candles("mark", symbol, 60, first, now)}
    index = {c.open_time: c.close for c in await rest.price_candles("index", symbol, 60, first, now)}
    opens = np.array([c.open_time for c in pidx])
    closes = np.array([c.close for c in pidx])
    interest = 1e-4 * iv / EIGHT_HOURS
    out = []
    for t in opens:
        if not start < t + 60.0 <= now:
            continue
        s = math.floor(t / iv) * iv
        sel = (opens >= s) & (opens <= t)
        avg = float(np.average(closes[sel], weights=(opens[sel] - s) / 60.0 + 1.0))
        f = avg + min(5e-4, max(-5e-4, interest - avg))
        if cap is not None:
            f = min(cap, f)
        if floor is not None:
            f = max(floor, f)
        out.append((float(t) + 60.0, f * EIGHT_HOURS / iv, (mark[t] - index[t]) / index[t]))
    assert WINDOW / 60.0 - 1 <= len(out) <= WINDOW / 60.0, len(out)
    return out


def _slopes(rows: list[tuple[float, float, float]]) -> tuple[float, float]:
    arr = np.array(rows)
    level = float(np.polyfit(arr[:, 2], arr[:, 1], 1)[0])
    pairs = [(b[2] - a[2], b[1] - a[1]) for a, b in itertools.pairwise(rows) if b[0] - a[0] <= 300.0]
    d = np.array(pairs)
    return level, float(np.polyfit(d[:, 0], d[:, 1], 1)[0])


async def _scrape(http: httpx.AsyncClient, port: int) -> str:
    return (await http.get(f"http://127.0.0.1:{port}/metrics")).text


async def test_both_methods_on_the_first_scrape_equal_an_independent_regression() -> None:
    # half a minute past a minute: the one second the test moves the clock closes no minute and
    # moves the window start past no sample
    t0 = math.floor(time.time() / 60.0) * 60.0 + 30.25
    clock = VirtualClock(t0)
    # the start-up's REST reads paced on an instant clock, the simulator enforcing no limit: the backfill
    # at full speed (the pacing is test_rate_limits' and test_backfill_schedule's)
    sim = sim_main.Simulator(seed=11, base_port=0, clock=clock, options=sim_server.SimOptions(rate_limits=False))
    await sim.start()
    exporter = Exporter(_config(sim), clock=clock, budget_clock=InstantClock())
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run(stop, ready.set_result))
    try:
        port = await asyncio.wait_for(asyncio.shield(ready), 60)
        # the candles as the exporter read them at start, before the market moves (the simulator's
        # generated last part-hour bends toward the live price: after a tick its minutes differ)
        expected: dict[tuple[Exchange, str], list[tuple[float, float, float]]] = {}
        for (ex, symbol), st in exporter.state.instruments.items():
            if ex in BACKFILLED:
                iv = sim.market.get(ex, symbol).spec.interval_s
                expected[(ex, symbol)] = await _expected_rows(
                    exporter, ex, symbol, iv, t0, st.funding_cap, st.funding_floor
                )
        async with httpx.AsyncClient(timeout=10.0) as http:
            first = await _scrape(http, port)
            truths = [{ex: (await http.get(sim.urls(ex)[1] + "/_sim/truth")).json() for ex in BACKFILLED}]
            # Binance pushes its mark price on market time: one tick of it, the same for everyone
            await sim.advance(1.0)
            truths.append({ex: (await http.get(sim.urls(ex)[1] + "/_sim/truth")).json() for ex in BACKFILLED})

            async def all_funding() -> str | None:
                text = await _scrape(http, port)
                n = sum(1 for line in text.splitlines() if line.startswith("fr_funding_rate{"))
                return text if n == 8 else None

            text = await wait_until(all_funding, 30, what="funding of every instrument")
        shown: dict[tuple[str, str, str], float] = {}
        for fam in text_string_to_metric_families(text):
            if fam.name == "fr_effective_anchor_strength":
                for s in fam.samples:
                    shown[(s.labels["exchange"], s.labels["instrument"], s.labels["method"])] = s.value
        now = clock.time()
        # the very first scrape already has both methods wherever funding has arrived (Bybit and OKX
        # push it at once; Binance on its next tick of market time)
        on_first = {
            (s.labels["exchange"], s.labels["method"])
            for fam in text_string_to_metric_families(first)
            if fam.name == "fr_effective_anchor_strength"
            for s in fam.samples
        }
        assert {(e, m) for e in ("bybit", "okx") for m in ("level", "difference")} <= on_first
        checked = 0
        for (ex, symbol), rows_expected in expected.items():
            st = exporter.state.instruments[(ex, symbol)]
            iv = sim.market.get(ex, symbol).spec.interval_s
            got = list(st.anchor_samples)
            by_time = {r[0]: r for r in rows_expected}
            rebuilt = [r for r in got if r[0] in by_time]
            live = [r for r in got if r[0] not in by_time]
            # the rebuilt samples are the independent ones; at most the newest minute gave way to a
            # live sample (one a minute)
            assert np.allclose(rebuilt, [by_time[r[0]] for r in rebuilt], rtol=1e-9, atol=1e-15)
            assert len(rebuilt) >= len(rows_expected) - 1
            assert len(live) <= 1
            rows = [by_time[r[0]] for r in rebuilt]
            if live:
                # the one live sample (the sampler has its own tests): taken from the stream at start,
                # near what the simulator published around then (its premium noise moves tick by tick)
                (t_live, f_live, p_live) = live[0]
                assert t0 <= t_live <= now
                for truth in truths:
                    tr = truth[ex]["instruments"][symbol]
                    assert f_live == pytest.approx(tr["funding_rate"] * EIGHT_HOURS / iv, abs=2e-5)
                    assert p_live == pytest.approx((tr["mark"] - tr["index"]) / tr["index"], abs=2e-4)
                rows.append(live[0])
            level, diff = _slopes(rows)
            assert shown[(ex.value, symbol, "level")] == pytest.approx(level, rel=1e-6)
            assert shown[(ex.value, symbol, "difference")] == pytest.approx(diff, rel=1e-6)
            checked += 1
        assert checked >= 6  # two instruments on each of the three exchanges
        # Deribit publishes no index or premium history: its window fills from live samples only
        assert not [k for k in shown if k[0] == Exchange.DERIBIT.value]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await sim.stop()
