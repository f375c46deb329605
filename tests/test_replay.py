"""Record the simulator through the exporter (with a cascade), replay the recording as fast as
possible, and compare: at every live scrape the replayed series equal what was scraped.

The simulator and the exporter share one VirtualClock that the test moves tick by tick (60 s of
market time in under two seconds of wall time): after each tick it waits until the exporter has
received every frame the simulator sent and every REST answer it asked for, so frames and answers
are stamped at the tick they belong to.

A live scrape is the exporter's registry rendered in the event loop (what /metrics serves), between
two frames: it is taken after exactly N recorded lines (the recorder's queue is counted), so the
replay renders after the same N lines with the clock moved to the scrape's time and must show the
same values (relative tolerance 1e-9, float formatting only). Compared: prices, funding, z-scores,
open interest, liquidation counters and notional, stream message counts, failed REST calls (a 503
and a 429 injected), and the dated futures' curve (mark, basis, annualised basis, implied funding).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import needs_tool, wait_until
from test_app_sim import make_config

from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.feeds import dated
from exporter.feeds.connection import FeedConnection
from exporter.metrics import catalog as m
from exporter.model import Exchange
from exporter.replay import OpenMetricsSeries, Replay, ReplayStats, parse_step, replay_to_openmetrics
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

pytestmark = pytest.mark.slow(seconds=7)  # the file: a minute of market recorded live, then replayed

TICK = 0.5  # the simulator's model step: the test moves the clock by one tick at a time
MARKET_SECONDS = 60.0
SCRAPE_EVERY = 5.0
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
    m.REST_FAILURES,
    m.FUTURE_MARK_PRICE,
    m.BASIS,
    m.BASIS_ANNUALIZED,
    m.IMPLIED_FUNDING,
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


@dataclass
class Live:
    sim: Any
    exporter: Exporter
    clock: VirtualClock
    http: httpx.AsyncClient
    http_in_flight: int = 0  # the exporter's REST requests sent and not yet answered
    scrapes: list[tuple[float, int, Series]] = field(default_factory=list)

    @property
    def lines(self) -> int:
        """Lines handed to the recorder so far (frames, REST and meta lines)."""
        recorder = self.exporter.recorder
        return recorder.handed() if recorder is not None else 0

    def delivered(self) -> bool:
        """Every frame the simulator sent has been read by the exporter: each connection's writer waits
        on its empty queue (no frame between the queue and the socket), and the counts agree."""
        servers = self.sim.servers.values()
        if any(c.queue.qsize() or not c.queue._getters for srv in servers for c in srv.conns):  # type: ignore[attr-defined]
            return False
        if self.http_in_flight:
            return False  # a REST answer is stamped at the tick it was asked in, as a frame is
        sent = sum(srv.frames_sent for srv in servers)
        return sum(h.messages for h in self.exporter.state.streams.values()) >= sent

    async def tick(self, seconds: float = TICK) -> None:
        # quiet before the clock moves too: a REST call sent late in a tick is answered in that tick
        await wait_until(self.delivered, 30, interval=0.001, what="the exporter to read every answer due")
        await self.sim.advance(seconds)
        await wait_until(self.delivered, 30, interval=0.001, what="the exporter to read every frame sent")

    def scrape(self) -> Series:
        """/metrics as served, rendered in the loop between two frames, with the lines recorded so far."""
        s = series(self.exporter.registry.render().decode())
        self.scrapes.append((self.clock.time(), self.lines, s))
        return s


@contextlib.asynccontextmanager
async def live_exporter(
    recording: Path | None = None,
    setup: Callable[[Any, httpx.AsyncClient], Awaitable[None]] | None = None,
    **overrides: Any,
) -> AsyncIterator[Live]:
    """The simulator and the exporter on one VirtualClock, started (the clock moved tick by tick until
    the exporter serves). ``setup(sim, http)`` runs before the exporter starts (e.g. a clock skew);
    ``overrides`` go to the exporter's configuration; ``recording``: record to that directory."""
    clock = VirtualClock(float(int(time.time())))
    sim = sim_main.Simulator(
        seed=11, base_port=0, tick_seconds=TICK, options=sim_server.SimOptions(okx_funding_push_s=5.0), clock=clock
    )
    await sim.start()
    if recording is not None:
        overrides["recording"] = {"dir": str(recording), "rotate_seconds": 20.0}
    config = make_config(
        sim,
        # four days of settlements (12 at 8 h) give z-scores; the backfill fits in the REST budgets at once
        analytics={"zscore_window_seconds": 4 * 86400.0},
        rest_budget={"fraction": 1.0},
        **overrides,
    )
    exporter = Exporter(config, clock=clock)
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with httpx.AsyncClient(timeout=10.0) as http:
        live = Live(sim, exporter, clock, http)
        send = httpx.AsyncClient.send

        async def counted_send(client: httpx.AsyncClient, *a: Any, **kw: Any) -> httpx.Response:
            live.http_in_flight += 1  # the test's own requests are awaited before a tick: never counted then
            try:
                return await send(client, *a, **kw)
            finally:
                live.http_in_flight -= 1

        httpx.AsyncClient.send = counted_send  # type: ignore[method-assign]
        task: asyncio.Task[None] | None = None
        try:
            if setup is not None:
                await setup(sim, http)
            task = asyncio.create_task(exporter.run(stop, ready.set_result))
            # the connections open and the first values arrive as market time passes: move it meanwhile
            for _ in range(400):
                if ready.done() or task.done():
                    break
                await live.tick()
            await asyncio.wait_for(asyncio.shield(ready), 30)
            yield live
        finally:
            stop.set()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 30)
            httpx.AsyncClient.send = send  # type: ignore[method-assign]
            await sim.stop()


def live_recording(directory: Path) -> contextlib.AbstractAsyncContextManager[Live]:
    return live_exporter(directory)


async def replay_at_the_scrapes(live: Live, rec_dir: Path) -> tuple[list[tuple[float, Series, Series]], ReplayStats]:
    """Replay as fast as possible, rendering after exactly the lines each live scrape had seen:
    (time, live series, replayed series) per scrape."""
    replay = Replay(live.exporter.config, rec_dir)
    pending = sorted(live.scrapes, key=lambda s: s[1])
    replayed: list[tuple[float, Series, Series]] = []
    applied = 0

    def catch_up() -> None:
        while pending and pending[0][1] == applied:
            at, _, live_series = pending.pop(0)
            replay.advance_to(at)
            replayed.append((at, live_series, series(replay.registry.render().decode())))

    def before_line(t: float) -> None:
        nonlocal applied
        catch_up()
        applied += 1

    stats = await replay.run(on_line=before_line)
    catch_up()
    assert not pending, "scrapes after more lines than were recorded"
    assert stats.lines == applied == live.lines
    return replayed, stats


async def test_replay_equals_the_live_scrapes_at_the_same_moments(tmp_path: Path) -> None:
    rec_dir = tmp_path / "rec"
    async with live_recording(rec_dir) as live:
        t_start = live.clock.time()
        n = 0
        while live.clock.time() - t_start < MARKET_SECONDS:
            if n == 3:  # a cascade on every exchange (the market is shared)
                for ex in Exchange:
                    url = live.sim.urls(ex)[1]
                    r = await live.http.post(url + "/_sim/scenario", json={"name": "cascade", "seconds": 3.0})
                    assert r.status_code == 200, r.text
            if n == 5:  # failed REST calls: replayed into fr_rest_request_failures_total as live counted them
                for ex, kind in ((Exchange.BINANCE, "rest_5xx"), (Exchange.BYBIT, "rest_429")):
                    r = await live.http.post(live.sim.urls(ex)[1] + "/_sim/fault", json={"kind": kind, "count": 2})
                    assert r.status_code == 200, r.text
            live.scrape()
            n += 1
            for _ in range(round(SCRAPE_EVERY / TICK)):
                await live.tick()
        live.scrape()
        exporter = live.exporter
    # after the exporter stopped: the recorder has written everything it was given
    stats = exporter.recorder.snapshot() if exporter.recorder is not None else {}
    assert stats["frames_ws"] > 100 and stats["dropped"] == 0
    scrapes = live.scrapes
    last = scrapes[-1][2]
    assert sum(v for (name, _), v in last.items() if name == m.LIQUIDATIONS.name) > 0, "the cascade liquidated nothing"
    assert any(k[0] == m.FUNDING_ZSCORE.name for k in last)
    failed = {dict(labels)["reason"] for (name, labels), v in last.items() if name == m.REST_FAILURES.name and v > 0}
    assert {"http_5xx", "rate_limited"} <= failed, failed
    curve = {dict(labels)["exchange"] for name, labels in last if name == m.BASIS.name}
    assert curve == {ex.value for ex in Exchange}, f"dated futures on the curve of {curve} only"

    replayed, stats_r = await replay_at_the_scrapes(live, rec_dir)
    assert stats_r.frames == stats["frames_ws"]
    compared = 0
    mismatched: list[Any] = []
    for at, live_series, rep in replayed:
        for key, value in live_series.items():
            compared += 1
            got = rep.get(key)
            if got is None or abs(got - value) > 1e-9 * max(1.0, abs(value)):
                mismatched.append((at, key, value, got))
        missing = set(rep) - set(live_series)
        assert not missing, ("replayed series the live scrape did not have", at, sorted(missing)[:5])
    assert compared > 500
    assert not mismatched, mismatched[:10]
    # liquidation counters, z-scores and the curve were among them
    assert {m.LIQUIDATIONS.name, m.FUNDING_ZSCORE.name, m.BASIS.name} <= {k[0] for k in last}

    # --- OpenMetrics with timestamps, into Prometheus blocks (e2e below) ---
    out = tmp_path / "replay.om"
    _, n_samples = await replay_to_openmetrics(exporter.config, rec_dir, out, parse_step("15s"))
    text = out.read_text()
    assert text.endswith("# EOF\n") and n_samples > 100


async def test_a_stream_without_a_frame_yet_is_replayed_as_live_showed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live publishes a stream's counters from the moment its connection is made, at 0 before any
    frame (a slow handshake under load, an exchange that refuses it): the replay shows them from the
    same line, not from the stream's first frame. Here Binance's dated-futures stream never connects."""
    never = asyncio.Event()
    open_ = FeedConnection._open

    async def open_or_hang(conn: FeedConnection, replacing: Any = None) -> Any:
        if conn.exchange is Exchange.BINANCE and conn.plan.stream == dated.STREAM:
            await never.wait()  # cancelled when the exporter stops
        return await open_(conn, replacing)

    monkeypatch.setattr(FeedConnection, "_open", open_or_hang)
    rec_dir = tmp_path / "rec"
    async with live_recording(rec_dir) as live:
        for _ in range(4):
            await live.tick()
        live.scrape()
    key = (m.STREAM_MESSAGES.name, (("exchange", "binance"), ("stream", dated.STREAM)))
    assert live.scrapes[-1][2].get(key) == 0.0, "the stream's counter is not published live before a frame"
    replayed, _ = await replay_at_the_scrapes(live, rec_dir)
    for at, live_series, rep in replayed:
        streams = {k: v for k, v in live_series.items() if k[0] == m.STREAM_MESSAGES.name}
        assert {k: v for k, v in rep.items() if k[0] == m.STREAM_MESSAGES.name} == streams, at
        assert len(streams) > 4  # every exchange's streams, the silent one among them


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
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    for i, price in prices.items():
        hook(t0 + i + 0.02, _mark_frame("BTCUSDT", price, int((t0 + i) * 1000)))
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
