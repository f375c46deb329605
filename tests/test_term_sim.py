"""Term structure against the in-process simulator over real loopback sockets: the four exchanges'
dated futures agree with the simulator's truth, and a short-dated contract expires (leaves /metrics)
while its successor is listed and followed without a restart.

Simulator and exporter share one VirtualClock: market time moves only when the test advances it, a
second at a time and only once the exporter holds the frames of the second before. So a delivery
30 market seconds away happens in a fraction of a second of wall time, and between two steps the
market stands still: what the exporter shows must equal the truth to the wire's rounding.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
from collections.abc import Callable
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
from exporter.sim import server as sim_server

SHORT_S = 30.0  # the simulator's short-dated BTC ladder: one contract delivers every 30 market seconds
DAY = 86400.0
FRAME_PATIENCE_S = 0.25  # wall seconds: see step_until
# what the wire rounds a future's mark to (sim/futures_wire.py): Binance 8 decimals, Bybit and Deribit 2, OKX 1
MARK_ABS = {Exchange.BINANCE: 1e-6, Exchange.BYBIT: 0.006, Exchange.OKX: 0.06, Exchange.DERIBIT: 0.006}

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


def disagreement(ex: Exchange, m: Samples, t: dict[str, Any]) -> str | None:
    """Why the exporter's series of one exchange do not (yet) equal the simulator's truth, or None.

    The expected figures are computed here from the truth's mark, index and expiry (not by the code
    under test): basis (F - S) / S, annualised x 365 / days, implied funding per 8 h basis / (3 days),
    implied minus the same exchange's perpetual funding per 8 h, in basis points."""
    now = t["time"]
    perp_8h = {i["base"]: i["funding_rate_8h"] for i in t["instruments"].values()}
    for sym, f in t["futures"].items():
        key = (ex.value, sym)

        def get(name: str, key: tuple[str, str] = key) -> float | None:
            s = m.get(name, {}).get(key)
            return None if s is None else s[1]

        mark = m.get("fr_future_mark_price", {}).get(key)
        if mark is None or get("fr_basis_ratio") is None:
            return f"{sym}: no mark or basis yet"
        labels, value = mark
        assert labels["base"] == f["base"] and labels["quote"] == f["quote"], labels
        assert get("fr_future_expiry_timestamp_seconds") == pytest.approx(f["expiry"], abs=1e-3)  # ms on the wire
        days = (f["expiry"] - now) / DAY
        assert get("fr_future_days_to_expiry") == pytest.approx(days, abs=1e-9)
        if abs(value - f["mark"]) > MARK_ABS[ex]:
            return f"{sym}: mark {value} != truth {f['mark']}"
        basis = (f["mark"] - f["index"]) / f["index"]
        tol = 2 * MARK_ABS[ex] / f["index"]  # mark and index each rounded on the wire
        if abs(get("fr_basis_ratio") - basis) > tol:  # type: ignore[operator]
            return f"{sym}: basis {get('fr_basis_ratio')} != {basis}"
        ann, implied, diff = (
            get("fr_basis_annualized_ratio"),
            get("fr_implied_funding_rate_8h"),
            get("fr_implied_minus_actual_funding_bp"),
        )
        if days < 1.0:  # under a day: no annualised figures (a few bp over hours would read as %/yr)
            assert ann is None and implied is None and diff is None, (sym, ann, implied, diff)
            continue
        assert ann == pytest.approx(basis * 365.0 / days, abs=tol * 365 / days)
        assert implied == pytest.approx(basis / (3.0 * days), abs=tol / (3 * days))
        assert diff == pytest.approx(
            (basis / (3.0 * days) - perp_8h[f["base"]]) * 1e4, abs=tol / (3 * days) * 1e4 + 0.01
        )
    return None


@pytest.mark.timeout(60)
async def test_curve_agrees_with_the_simulator_and_rolls_at_expiry() -> None:
    clock = VirtualClock(float(math.floor(time.time())))  # whole seconds: a step lands on the publishing second
    options = sim_server.SimOptions(okx_funding_push_s=1.0)
    sim = sim_main.Simulator(
        seed=5, base_port=0, tick_seconds=0.5, options=options, clock=clock, futures_short_seconds=SHORT_S
    )
    await sim.start()
    exporter = Exporter(config(sim), clock=clock)
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run(stop, ready.set_result))
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:

            async def truth(ex: Exchange) -> dict[str, Any]:
                return dict((await http.get(sim.urls(ex)[1] + "/_sim/truth")).json())

            def behind() -> list[str]:
                """The futures heard of whose frame of this market second the exporter does not hold yet."""
                now = clock.time()
                return [
                    f"{fs.info.exchange.value} {fs.info.instrument} at {fs.event_time}"
                    for fs in exporter.state.futures.values()
                    if fs.event_time is not None and fs.event_time != now and (fs.info.expiry or 0.0) > now
                ]

            def waiting_for() -> str | None:
                """What is still to come before market time moves (None: nothing): the instrument lists,
                the connections due (later ones wait on the clock, spaced within the exchange's limit),
                the frames of this second."""
                runtimes = exporter.runtimes.values()
                if len(runtimes) < len(Exchange) or not all(rt.streams for rt in runtimes):
                    return "instrument lists"
                opening = any(rt.next_ws_open > clock.monotonic() for rt in runtimes)
                closed = [f"{ex.value} {s}" for (ex, s), h in exporter.state.streams.items() if not h.connected]
                if closed and not opening:
                    return f"connections {closed}"
                late = behind()
                return f"frames {late}" if late else None

            async def step_until(check: Callable[[], Any], what: str, market_s: float) -> Any:
                """Advance market time a second at a time, once nothing more is to come, until ``check``.

                A connection that opened (at a roll) after this second's frames went out hears the next
                second's: frames still missing after FRAME_PATIENCE_S of wall time do not hold time up."""
                until = clock.time() + market_s
                last: list[str | None] = [None]
                frames_since: list[float | None] = [None]

                async def done() -> Any:
                    result = check()
                    if result := (await result if inspect.isawaitable(result) else result):
                        return result
                    last[0] = waiting = waiting_for()
                    if waiting is not None and waiting.startswith("frames"):
                        frames_since[0] = frames_since[0] or time.monotonic()
                        if time.monotonic() - frames_since[0] > FRAME_PATIENCE_S:
                            waiting = None
                    if waiting is None:
                        assert clock.time() < until, f"{what}: not within {market_s:g} market seconds"
                        frames_since[0] = None
                        await sim.advance(1.0)
                    return None

                try:
                    return await wait_until(done, 20, interval=0.005, what=what)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; waiting for {last[0]}; last disagreement {reasons[-1:]}") from None

            reasons: list[str] = []  # the last disagreement seen, for a failure message

            # the exporter serves once every perpetual has a first price and funding (frames that
            # come as market time moves): a few market seconds
            await step_until(ready.done, "the exporter to serve", 8)
            port = ready.result()

            # 1. every exchange's contracts, with values equal to the simulator's truth (market frozen)
            async def agreeing() -> Samples | None:
                if behind():
                    return None
                m = await scrape(http, port)
                for ex in Exchange:
                    if (why := disagreement(ex, m, await truth(ex))) is not None:
                        reasons.append(f"{ex.value} {why}")
                        return None
                return m

            m = await step_until(agreeing, "dated futures of four exchanges equal to the truth", 15)
            assert {ex for ex, _ in m["fr_future_mark_price"]} == {e.value for e in Exchange}
            for ex in Exchange:  # the quarterlies carry the annualised figures, the short ladder does not
                t = await truth(ex)
                days = sorted(f["days_to_expiry"] for f in t["futures"].values())
                assert days[0] < 1 and days[-1] > 30, (ex, days)
                assert disagreement(ex, m, t) is None  # the ones checked above, now asserted by name
            assert len(m["fr_basis_annualized_ratio"]) >= 8  # two quarterlies of BTC per exchange at least
            # /api/state lists the same contracts per exchange, from the same views (market frozen)
            doc = (await http.get(f"http://127.0.0.1:{port}/api/state")).json()
            for ex in Exchange:
                t = await truth(ex)
                rows = {r["instrument"]: r for r in doc["futures"][ex.value]}
                assert set(rows) == set(t["futures"])
                for sym, r in rows.items():
                    assert r["mark_price"] == m["fr_future_mark_price"][(ex.value, sym)][1]
                    assert r["basis_ratio"] == pytest.approx(m["fr_basis_ratio"][(ex.value, sym)][1], rel=1e-12)
                    assert r["expiry_timestamp"] == pytest.approx(t["futures"][sym]["expiry"], abs=1e-3)
                    assert r["inverse"] is t["futures"][sym]["inverse"] and r["stale"] is False
                    ann = m["fr_basis_annualized_ratio"].get((ex.value, sym))
                    assert r["basis_annualized"] == (None if ann is None else pytest.approx(ann[1], rel=1e-12))
            # Bybit's inverse quarterlies (BTCUSDH26 style, on /v5/public/inverse) beside its USDT ones
            bybit = (await truth(Exchange.BYBIT))["futures"]
            inverse = {s for s, f in bybit.items() if f["inverse"]}
            assert len(inverse) == 4 and all(bybit[s]["quote"] == "USD" for s in inverse)
            for s in inverse:
                labels, _ = m["fr_future_mark_price"][("bybit", s)]
                assert labels["quote"] == "USD" and labels["base"] == bybit[s]["base"]
                assert ("bybit", s) in m["fr_basis_annualized_ratio"]

            # 2. on every exchange the nearest short contract delivers: it leaves /metrics; its successor appears
            before: dict[Exchange, tuple[str, float, set[str]]] = {}
            for ex in Exchange:
                t = await truth(ex)
                nearest = min(t["futures"], key=lambda s: t["futures"][s]["expiry"])
                before[ex] = (nearest, t["futures"][nearest]["expiry"], set(t["futures"]))
                assert nearest in {s for e, s in m["fr_future_expiry_timestamp_seconds"] if e == ex.value}
            expiry = min(e for _, e, _ in before.values())
            assert expiry > clock.time()

            async def rolled() -> tuple[Samples, dict[Exchange, str]] | None:
                if clock.time() < expiry:
                    return None
                m = await scrape(http, port)
                # the moment the clock passes the delivery the contract is gone from the page
                names = {(e, s) for e, s in m.get("fr_future_expiry_timestamp_seconds", {})}
                assert not {(ex.value, nearest) for ex, (nearest, _, _) in before.items()} & names
                successors = {}
                for ex, (nearest, _, listed) in before.items():
                    t = await truth(ex)
                    new = set(t["futures"]) - listed
                    assert nearest in t["expired"]
                    if not new or not {(ex.value, s) for s in new} <= names or disagreement(ex, m, t) is not None:
                        return None
                    successors[ex] = next(iter(new))
                return m, successors

            m, successors = await step_until(rolled, "expiry and roll on /metrics", SHORT_S + 10)
            assert successors[Exchange.BINANCE].startswith("BTCUSDT_")
            assert successors[Exchange.BYBIT].startswith("BTCUSDT-")
            assert successors[Exchange.OKX].startswith("BTC-USD-")
            assert successors[Exchange.DERIBIT].startswith("BTC-")
            for ex, sym in successors.items():  # the successor is the next rung of the ladder, SHORT_S later
                (labels, exp) = m["fr_future_expiry_timestamp_seconds"][(ex.value, sym)]
                assert exp == pytest.approx(before[ex][1] + 2 * SHORT_S, abs=1e-3)
                assert labels["base"] == "BTC"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        await sim.stop()
