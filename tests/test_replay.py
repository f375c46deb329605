"""Record the simulator through the exporter (with a cascade), replay the recording as fast as
possible, and compare: at every live scrape the replayed series equal what was scraped.

The exporter, the simulator and the replay share one clock: the simulator's market time at 6x
(60 s of market time in about 10 s of wall time). Tolerance: a live scrape is read while frames keep
arriving, so a live value must equal a replayed value at some instant inside the scrape's window
[clock before the request, clock after the answer] (relative 1e-9); outside the window no match.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import needs_tool
from test_app_sim import make_config

from exporter.app import Exporter
from exporter.clock import ScaledClock
from exporter.metrics import catalog as m
from exporter.model import Exchange
from exporter.replay import OpenMetricsSeries, Replay, parse_step, replay_to_openmetrics
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

SCALE = 6.0
MARKET_SECONDS = 60.0
COMPARED = [
    m.MARK_PRICE,
    m.INDEX_PRICE,
    m.FUNDING_RATE,
    m.FUNDING_ZSCORE,
    m.NEXT_FUNDING_TIMESTAMP,
    m.OPEN_INTEREST,
    m.LIQUIDATIONS,
    m.LIQUIDATED_NOTIONAL,
    m.STREAM_MESSAGES,
]

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(text: str) -> Series:
    names = {d.name for d in COMPARED}
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in names:
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


@contextlib.asynccontextmanager
async def live_recording(directory: Path) -> AsyncIterator[tuple[Any, Exporter, ScaledClock, httpx.AsyncClient, int]]:
    clock = ScaledClock(SCALE)
    sim = sim_main.Simulator(
        seed=11, base_port=0, tick_seconds=0.25, options=sim_server.SimOptions(okx_funding_push_s=5.0), clock=clock
    )
    await sim.start()
    config = make_config(sim, recording={"dir": str(directory), "rotate_seconds": 20.0})
    exporter = Exporter(config, clock=clock)
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run(stop, ready.set_result))
    try:
        port = await asyncio.wait_for(asyncio.shield(ready), 60)
        async with httpx.AsyncClient(timeout=10.0) as http:
            yield sim, exporter, clock, http, port
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        await sim.stop()


async def test_replay_equals_the_live_scrapes_at_the_same_moments(tmp_path: Path) -> None:
    rec_dir = tmp_path / "rec"
    scrapes: list[tuple[float, float, Series]] = []
    async with live_recording(rec_dir) as (sim, exporter, clock, http, port):
        t_start = clock.time()

        async def scrape() -> None:
            a = clock.time()
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
            b = clock.time()
            assert r.status_code == 200
            scrapes.append((a, b, series(r.text)))

        n = 0
        while clock.time() - t_start < MARKET_SECONDS:
            if n == 3:  # a cascade on every exchange (the market is shared)
                for ex in Exchange:
                    url = sim.urls(ex)[1]
                    await http.post(url + "/_sim/scenario", json={"name": "cascade", "seconds": 3.0})
            await scrape()
            n += 1
            await clock.sleep(5.0)  # a scrape every 5 s of market time
    # after the exporter stopped: the recorder has written everything it was given
    stats = exporter.recorder.snapshot() if exporter.recorder is not None else {}
    assert stats["frames_ws"] > 100 and stats["dropped"] == 0
    liq_live = sum(v for (name, _), v in scrapes[-1][2].items() if name == m.LIQUIDATIONS.name)
    assert liq_live > 0, "the cascade liquidated nothing"

    # replay as fast as possible; render at every line inside a scrape's window
    replay = Replay(exporter.config, rec_dir)
    windows = sorted(scrapes, key=lambda s: s[0])
    seen: list[list[Series]] = [[] for _ in windows]

    def before_line(t: float) -> None:
        current: Series | None = None
        for i, (a, b, _) in enumerate(windows):
            # the state as it stands now (every line before t applied) holds at instants in [prev, t)
            if t > a and (not seen[i] or t <= b + 1.0):
                if current is None:
                    current = series(replay.registry.render().decode())
                seen[i].append(current)

    stats_r = await replay.run(on_line=before_line)
    assert stats_r.frames == stats["frames_ws"]
    compared = mismatched = 0
    for (a, b, live), replays in zip(windows, seen, strict=True):
        assert replays, (a, b)
        for key, value in live.items():
            compared += 1
            if not any(key in r and abs(r[key] - value) <= 1e-9 * max(1.0, abs(value)) for r in replays):
                mismatched += 1
                print("mismatch", a, b, key, value, [r.get(key) for r in replays][:5])
    assert compared > 200
    assert mismatched == 0
    # liquidation counters and z-scores were among them
    assert any(k[0] == m.LIQUIDATIONS.name and v > 0 for k, v in windows[-1][2].items())
    assert any(k[0] == m.FUNDING_ZSCORE.name for k in windows[-1][2])

    # --- OpenMetrics with timestamps, into Prometheus blocks (e2e below) ---
    out = tmp_path / "replay.om"
    _, n_samples = await replay_to_openmetrics(exporter.config, rec_dir, out, parse_step("15s"))
    text = out.read_text()
    assert text.endswith("# EOF\n") and n_samples > 100
    pytest.shared_openmetrics = (out, windows)  # type: ignore[attr-defined]


def test_openmetrics_series_keeps_each_family_together_in_time_order() -> None:
    om = OpenMetricsSeries()
    one = '# HELP a A.\n# TYPE a counter\na_total{x="1"} 1.0\n# HELP g G.\n# TYPE g gauge\ng 5.0\n# EOF\n'
    two = '# HELP a A.\n# TYPE a counter\na_total{x="1"} 2.0\n# HELP g G.\n# TYPE g gauge\ng 6.0\n# EOF\n'
    om.add(one, 100.0)
    om.add(two, 115.0)
    import io

    buf = io.StringIO()
    assert om.write(buf) == 4
    assert buf.getvalue() == (
        "# HELP a A.\n# TYPE a counter\n"
        'a_total{x="1"} 1.0 100.000\na_total{x="1"} 2.0 115.000\n'
        "# HELP g G.\n# TYPE g gauge\ng 5.0 100.000\ng 6.0 115.000\n# EOF\n"
    )


@pytest.mark.parametrize(("text", "seconds"), [("15s", 15.0), ("1m", 60.0), ("500ms", 0.5), ("2h", 7200.0), ("3", 3.0)])
def test_step(text: str, seconds: float) -> None:
    assert parse_step(text) == seconds


def test_bad_step() -> None:
    for bad in ("0s", "-1m", "soon", "infs"):
        with pytest.raises(ValueError):
            parse_step(bad)


def _mark_frame(symbol: str, price: float, e_ms: int) -> str:
    return (
        f'{{"stream":"{symbol.lower()}@markPrice@1s","data":{{"e":"markPriceUpdate","E":{e_ms},"s":"{symbol}",'
        f'"p":"{price:.2f}","i":"{price:.2f}","P":"{price:.2f}","r":"0.00010000","T":{e_ms + 3_600_000}}}}}'
    )


@pytest.mark.e2e
@needs_tool("promtool", "prometheus", package="prometheus")
async def test_openmetrics_backfill_into_prometheus_returns_the_recorded_values(tmp_path: Path) -> None:
    import time
    import urllib.parse

    from exporter.config import Config
    from exporter.model import InstrumentInfo
    from exporter.recording import Recorder
    from mixin.stack import http_json, run_prometheus

    # five minutes of BTCUSDT mark prices, one a second, an hour ago (inside Prometheus' retention)
    t0 = float(int(time.time()) - 3600)
    rec = Recorder(tmp_path / "rec")
    rec.start()
    info = InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0)
    rec.meta(t0 - 1.0, Exchange.BINANCE, "followed", [info])
    prices = {i: 50_000.0 + i for i in range(300)}
    hook = rec.ws_hook(Exchange.BINANCE)
    for i, price in prices.items():
        hook(t0 + i + 0.02, "markPrice", _mark_frame("BTCUSDT", price, int((t0 + i) * 1000)))
    rec.close()
    out = tmp_path / "backfill.om"
    _, n = await replay_to_openmetrics(Config(), tmp_path / "rec", out, 15.0)
    assert n > 0
    data = tmp_path / "prom-data"
    done = subprocess.run(
        [shutil.which("promtool") or "promtool", "tsdb", "create-blocks-from", "openmetrics", str(out), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    with run_prometheus(tmp_path, config) as prom:
        for k in (1, 5, 10, 19):  # steps of 15 s from the first line: the price of that second
            at = t0 - 1.0 + 15.0 * k
            expected = prices[int(at - t0) - 1] if at - t0 >= 1 else None  # last frame received before `at`
            q = urllib.parse.urlencode({"query": f'{m.MARK_PRICE}{{instrument="BTCUSDT"}}', "time": f"{at:.3f}"})

            def answer(q: str = q) -> list[Any] | None:
                body = http_json(f"{prom}/api/v1/query?{q}")
                return list(body["data"]["result"]) or None

            result = await asyncio.to_thread(wait_until_sync, answer)
            assert float(result[0]["value"][1]) == pytest.approx(expected), (k, at)


def wait_until_sync(fn: Any, timeout: float = 30.0) -> Any:
    from mixin.stack import wait_for

    return wait_for(fn, timeout, what="a query answer")
