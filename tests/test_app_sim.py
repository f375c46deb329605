"""The whole exporter (run_exporter) against the in-process simulator, over real loopback sockets.

Values are compared with the simulator's /_sim/truth; faults are injected through /_sim/fault.
Stale limits and poll intervals are short so that staleness and recovery show within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until

from exporter.app import Exporter, fallback_instrument, run_exporter, select_instruments
from exporter.clock import VirtualClock
from exporter.config import Config, ExchangeConfig
from exporter.model import Exchange, InstrumentInfo
from exporter.sim import main as sim_main
from exporter.sim import server as sim_server

pytestmark = pytest.mark.slow(seconds=20)  # a simulator and exporter per test (tests/conftest.py)

Sample = tuple[dict[str, str], float]


@dataclass
class Env:
    sim: Any
    port: int
    http: httpx.AsyncClient

    async def scrape(self) -> dict[str, list[Sample]]:
        r = await self.http.get(f"http://127.0.0.1:{self.port}/metrics")
        assert r.status_code == 200
        out: dict[str, list[Sample]] = {}
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out

    async def truth(self, ex: Exchange) -> dict[str, Any]:
        r = await self.http.get(self.sim.urls(ex)[1] + "/_sim/truth")
        return dict(r.json())

    async def control(self, ex: Exchange, what: str, body: dict[str, Any] | None = None) -> None:
        r = await self.http.post(self.sim.urls(ex)[1] + f"/_sim/{what}", json=body or {})
        assert r.status_code == 200, r.text

    async def wait_metrics(
        self, cond: Callable[[dict[str, list[Sample]]], bool], timeout: float = 10.0
    ) -> dict[str, list[Sample]]:
        async def met() -> dict[str, list[Sample]] | None:
            m = await self.scrape()
            return m if cond(m) else None

        return await wait_until(met, timeout, interval=0.05, what="a metrics condition")


def get(m: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` whose labels include ``labels``; None if absent."""
    found = [v for lbl, v in m.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def total(m: dict[str, list[Sample]], name: str, **labels: str) -> float:
    return sum(v for lbl, v in m.get(name, []) if all(lbl.get(k) == x for k, x in labels.items()))


def make_config(sim: Any, **overrides: Any) -> Config:
    exchanges: dict[str, Any] = {}
    for ex in Exchange:
        ws, rest = sim.urls(ex)
        exchanges[ex.value] = {
            "ws_url": ws,
            "rest_url": rest,
            "stale": {
                "stream_seconds": 1.5,
                "price_seconds": 1.5,
                "funding_seconds": 4.0,
                "open_interest_seconds": 10.0,
            },
            "poll": {"open_interest_seconds": 1.0, "long_short_ratio_seconds": 2.0, "insurance_fund_seconds": 5.0},
        }
    data: dict[str, Any] = {
        "listen_address": "127.0.0.1:0",
        "exchanges": exchanges,
        # start-up is the backfill, paced by the request budget: four days of funding history (12
        # settlements of 8 h: a z-score on the first scrape) and an hour of anchor candles on the
        # whole published limit (the simulator enforces it) load in a third of the time of the defaults
        "analytics": {"zscore_window_seconds": 4 * 86400.0, "anchor_window_seconds": 3600.0},
        "rest_budget": {"fraction": 1.0},
    }
    for key, value in overrides.items():
        if key in {e.value for e in Exchange}:  # per-exchange settings: bybit={...}
            exchanges[key].update(value)
        else:
            data[key] = value
    return Config.model_validate(data)


# No dated futures (their lists, streams and pushes) where no test reads them: the term structure is
# test_term_sim's.
NO_FUTURES: dict[str, Any] = {ex.value: {"futures": {"enabled": False}} for ex in Exchange}
# For tests of what follows the start, also no funding-history or candle backfill (half the start's CPU;
# the first-scrape test and the others that read backfilled values keep it).
LEAN: dict[str, Any] = {ex.value: {"backfill": False, "futures": {"enabled": False}} for ex in Exchange}


@contextlib.asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[Env]:
    options = sim_server.SimOptions(okx_funding_push_s=1.0)
    sim = sim_main.Simulator(seed=7, base_port=0, tick_seconds=0.1, options=options)
    await sim.start()
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_exporter(make_config(sim, **overrides), stop, ready.set_result))
    try:
        port = await asyncio.wait_for(asyncio.shield(ready), 30)
        async with httpx.AsyncClient(timeout=5.0) as http:
            yield Env(sim, port, http)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await sim.stop()


INSTRUMENTS = {
    Exchange.BINANCE: ("BTCUSDT", "ETHUSDT"),
    Exchange.BYBIT: ("BTCUSDT", "ETHUSDT"),
    Exchange.OKX: ("BTC-USDT-SWAP", "ETH-USDT-SWAP"),
    Exchange.DERIBIT: ("BTC-PERPETUAL", "ETH-PERPETUAL"),
}


def within(value: float | None, a: float, b: float, rel: float) -> bool:
    """value lies between two truth reads (taken before and after the scrape), widened by ``rel``."""
    if value is None:
        return False
    lo, hi = min(a, b), max(a, b)
    pad = rel * max(abs(lo), abs(hi), 1e-12)
    return lo - pad <= value <= hi + pad


async def test_first_scrape_and_values_agree_with_truth() -> None:
    async with running(**NO_FUTURES) as env:
        first = await env.scrape()
        # backfill happened before ready(): the z-score is there on the very first scrape
        for ex, insts in INSTRUMENTS.items():
            assert get(first, "fr_up", exchange=ex.value) == 1.0, ex
            for inst in insts:
                assert get(first, "fr_funding_zscore", exchange=ex.value, instrument=inst) is not None, (ex, inst)
                assert get(first, "fr_mark_price", exchange=ex.value, instrument=inst) is not None, (ex, inst)

        # a few more pushes on every exchange's streams
        sent0 = {ex: total(first, "fr_stream_messages_total", exchange=ex.value) for ex in Exchange}
        # truth before the pushes too: on a loaded machine the last funding push the exporter holds may
        # predate the read just before the scrape, so the value must lie within the whole span
        early = {ex: await env.truth(ex) for ex in Exchange}
        await env.wait_metrics(
            lambda m: all(total(m, "fr_stream_messages_total", exchange=ex.value) >= sent0[ex] + 8 for ex in Exchange)
        )
        before = {ex: await env.truth(ex) for ex in Exchange}
        m = await env.scrape()
        after = {ex: await env.truth(ex) for ex in Exchange}
        for ex, insts in INSTRUMENTS.items():
            for inst in insts:
                tb, ta = before[ex]["instruments"][inst], after[ex]["instruments"][inst]
                lbl = {"exchange": ex.value, "instrument": inst}
                assert get(m, "fr_funding_interval_seconds", **lbl) == ta["funding_interval_seconds"], lbl
                # a push may be up to ~1 s older than the first truth read: small relative slack
                assert within(get(m, "fr_mark_price", **lbl), tb["mark"], ta["mark"], 2e-3), (lbl, tb["mark"])
                rate = get(m, "fr_funding_rate", **lbl)
                truth_rate = "funding_rate_8h" if ex is Exchange.DERIBIT else "funding_rate"
                assert rate is not None
                te = early[ex]["instruments"][inst][truth_rate]
                lo, hi = min(te, tb[truth_rate]), max(te, tb[truth_rate])
                assert (
                    within(rate, lo, ta[truth_rate], 0.05)
                    or within(rate, hi, ta[truth_rate], 0.05)
                    or abs(rate - ta[truth_rate]) < 2e-6
                ), (lbl, rate, te, tb[truth_rate], ta[truth_rate])

        # liquidations: a cascade, then calm; the exporter's counts catch up with what was published
        base_m = await env.scrape()
        base_t = {ex: await env.truth(ex) for ex in Exchange}
        for ex in Exchange:
            await env.control(ex, "scenario", {"name": "cascade", "seconds": 0.5})  # short build-up, then the crash
        await env.control(Exchange.BINANCE, "advance", {"seconds": 4.0})  # the market is shared: all four
        for ex in Exchange:
            await env.control(ex, "scenario", {"name": "calm"})

        def sent(ex: Exchange, inst: str, side: str) -> int:
            return int(env.sim.market.truth(ex)["instruments"][inst]["liquidations"][side]["count"])

        def caught_up(m: dict[str, list[Sample]]) -> bool:
            return all(
                total(m, "fr_liquidations_total", exchange=ex.value, instrument=inst, side=side)
                - total(base_m, "fr_liquidations_total", exchange=ex.value, instrument=inst, side=side)
                >= sent(ex, inst, side) - base_t[ex]["instruments"][inst]["liquidations"][side]["count"]
                for ex, insts in INSTRUMENTS.items()
                for inst in insts
                for side in ("long", "short")
            )

        await env.wait_metrics(caught_up, timeout=15)  # the exporter has counted what was published
        t1 = {ex: await env.truth(ex) for ex in Exchange}
        m1 = await env.scrape()
        t2 = {ex: await env.truth(ex) for ex in Exchange}
        grew = 0
        for ex, insts in INSTRUMENTS.items():
            for inst in insts:
                for side in ("long", "short"):
                    lbl = {"exchange": ex.value, "instrument": inst, "side": side}
                    seen = total(m1, "fr_liquidations_total", **lbl) - total(base_m, "fr_liquidations_total", **lbl)
                    sent0 = base_t[ex]["instruments"][inst]["liquidations"][side]["count"]
                    lo = t1[ex]["instruments"][inst]["liquidations"][side]["count"] - sent0
                    hi = t2[ex]["instruments"][inst]["liquidations"][side]["count"] - sent0
                    # after the calm-down nothing is in flight; the slack covers a stray calm-market liquidation
                    assert lo - 2 <= seen <= hi + 2, (lbl, seen, lo, hi)
                    grew += seen > 0
        assert grew > 0  # the cascade did produce liquidations to compare


async def test_dropped_connection_reconnects_and_resubscribes() -> None:
    async with running(**LEAN) as env:
        m0 = await env.scrape()
        r0 = total(m0, "fr_stream_reconnects_total", exchange="bybit")
        msgs0 = total(m0, "fr_stream_messages_total", exchange="bybit")
        await env.control(Exchange.BYBIT, "fault", {"kind": "drop"})
        m1 = await env.wait_metrics(lambda m: total(m, "fr_stream_reconnects_total", exchange="bybit") > r0)
        msgs1 = total(m1, "fr_stream_messages_total", exchange="bybit")
        # values flow again: more messages after the reconnect, i.e. the subscription was renewed
        await env.wait_metrics(lambda m: total(m, "fr_stream_messages_total", exchange="bybit") > msgs1 + 5)
        assert msgs1 >= msgs0
        m2 = await env.wait_metrics(lambda m: get(m, "fr_up", exchange="bybit") == 1.0)
        assert get(m2, "fr_mark_price", exchange="bybit", instrument="BTCUSDT") is not None


async def test_malformed_frames_counted_values_unchanged() -> None:
    async with running(**LEAN) as env:
        m0 = await env.scrape()
        e0 = total(m0, "fr_parse_errors_total", exchange="binance")
        await env.control(Exchange.BINANCE, "fault", {"kind": "malformed", "count": 2})
        await env.control(Exchange.BINANCE, "fault", {"kind": "truncated", "count": 1})
        m1 = await env.wait_metrics(lambda m: total(m, "fr_parse_errors_total", exchange="binance") >= e0 + 3)
        assert total(m1, "fr_parse_errors_total", exchange="binance") == e0 + 3
        assert total(m1, "fr_stream_reconnects_total", exchange="binance") == 0  # bad frames cost no connection
        # the values are still the exchange's values, not garbage (a symbol whose frame was dropped may
        # be stale for a moment under the test's 1.5 s limit: wait for its next good frame)
        m2 = await env.wait_metrics(
            lambda m: all(
                get(m, "fr_mark_price", exchange="binance", instrument=i) is not None
                for i in INSTRUMENTS[Exchange.BINANCE]
            )
        )
        t = await env.truth(Exchange.BINANCE)
        for inst in INSTRUMENTS[Exchange.BINANCE]:
            mark = get(m2, "fr_mark_price", exchange="binance", instrument=inst)
            assert mark is not None and abs(mark / t["instruments"][inst]["mark"] - 1) < 5e-3
        assert total(m2, "fr_parse_errors_total", exchange="binance") == e0 + 3


async def test_stall_goes_stale_and_recovers() -> None:
    async with running(**LEAN) as env:
        await env.control(Exchange.OKX, "fault", {"kind": "stall", "seconds": 3.5})
        # both in one scrape: they hold only while the stall lasts (2 s past the 1.5 s limits), and two
        # waits in turn could see the first at the end of the window and miss the second (a loaded machine)
        stale = await env.wait_metrics(
            lambda m: (
                get(m, "fr_up", exchange="okx") == 0.0
                and get(m, "fr_mark_price", exchange="okx", instrument="BTC-USDT-SWAP") is None
            )
        )
        assert get(stale, "fr_up", exchange="bybit") == 1.0  # other exchanges unaffected
        back = await env.wait_metrics(
            lambda m: (
                get(m, "fr_up", exchange="okx") == 1.0
                and get(m, "fr_mark_price", exchange="okx", instrument="BTC-USDT-SWAP") is not None
            ),
            timeout=15.0,
        )
        assert get(back, "fr_funding_rate", exchange="okx", instrument="BTC-USDT-SWAP") is not None


async def test_rest_429_backed_off_and_counted() -> None:
    async with running(**LEAN) as env:
        await env.control(Exchange.BINANCE, "fault", {"kind": "rest_429", "count": 1, "seconds": 1})
        lbl = {"exchange": "binance", "reason": "rate_limited"}
        m1 = await env.wait_metrics(lambda m: total(m, "fr_rest_request_failures_total", **lbl) >= 1)
        t_fail = time.time()
        # polling goes on after the Retry-After; open interest keeps being served
        m2 = await env.wait_metrics(
            lambda m: (
                (get(m, "fr_rest_last_success_timestamp_seconds", exchange="binance", endpoint="open_interest") or 0)
                > t_fail
            ),
        )
        assert total(m2, "fr_rest_request_failures_total", **lbl) == total(m1, "fr_rest_request_failures_total", **lbl)
        assert get(m2, "fr_open_interest_usd", exchange="binance", instrument="BTCUSDT") is not None


async def test_rest_unreachable_uses_configured_ids_and_streams_flow(port: int) -> None:
    # nothing listens on `port`: Bybit's instrument list and history fail, its websocket works
    overrides = {**NO_FUTURES, "bybit": {"rest_url": f"http://127.0.0.1:{port}", "futures": {"enabled": False}}}
    async with running(**overrides) as env:
        m = await env.wait_metrics(
            lambda m: get(m, "fr_mark_price", exchange="bybit", instrument="ETHUSDT") is not None
        )
        assert get(m, "fr_up", exchange="bybit") == 1.0
        assert (
            total(m, "fr_rest_request_failures_total", exchange="bybit", endpoint="instruments", reason="connection")
            >= 1
        )
        assert (
            total(
                m, "fr_rest_request_failures_total", exchange="bybit", endpoint="funding_history", reason="connection"
            )
            >= 1
        )
        # the other exchanges' backfill is unaffected
        assert get(m, "fr_funding_zscore", exchange="okx", instrument="BTC-USDT-SWAP") is not None


async def test_positions_service_wired(tmp_path: Any) -> None:
    position = {
        "name": "carry-btc",
        "exchange": "binance",
        "instrument": "BTCUSDT",
        "side": "short",
        "size": 0.5,
        "entry_price": 90000.0,
        "leverage": 5.0,
    }
    # two hours of mark klines for the historical stress, not the default 30 days (43,200 candles to
    # fetch and fit; test_positions_sim and test_stress_positions test the stress itself)
    settings = {"db_path": str(tmp_path / "acc.sqlite"), "stress_period_days": 0.1}
    async with running(positions=[position], position_settings=settings, **LEAN) as env:
        # the first views may wait up to stress_backfill_wait_seconds (10 s) for the klines: a longer guard
        m = await env.wait_metrics(lambda m: get(m, "fr_position_size", position="carry-btc") is not None, 30)
        assert get(m, "fr_position_size", position="carry-btc") == 0.5
        r = await env.http.get(f"http://127.0.0.1:{env.port}/api/state")
        assert [p["position"] for p in r.json()["positions"]] == ["carry-btc"]


# ---- instrument selection (pure) ---------------------------------------------------------------------


def _info(ex: Exchange, inst: str, quote: str = "USDT") -> InstrumentInfo:
    return InstrumentInfo(ex, inst, inst[:3], quote, contract_size=0.01)


def test_select_instruments_configured_unknown_and_fallback() -> None:
    listed = [_info(Exchange.OKX, "BTC-USDT-SWAP"), _info(Exchange.OKX, "ETH-USDT-SWAP")]
    cfg = ExchangeConfig()
    chosen, unknown = select_instruments(Exchange.OKX, cfg, ["BTC-USDT-SWAP", "DOGE-USDT-SWAP"], listed)
    assert [i.instrument for i in chosen] == ["BTC-USDT-SWAP"]
    assert chosen[0].contract_size == 0.01  # the exchange's facts, not a guess
    assert unknown == ["DOGE-USDT-SWAP"]
    # list unavailable: follow the configured ids with guessed facts
    chosen, unknown = select_instruments(Exchange.OKX, cfg, ["BTC-USD-SWAP"], None)
    assert chosen == [fallback_instrument(Exchange.OKX, "BTC-USD-SWAP")]
    assert chosen[0].inverse and chosen[0].base == "BTC" and unknown == []


def test_select_all_perpetuals_capped_usdt_only() -> None:
    listed = [_info(Exchange.BINANCE, f"C{k:02d}USDT") for k in range(10)]
    listed.insert(3, _info(Exchange.BINANCE, "BTCUSDC", "USDC"))
    cfg = ExchangeConfig(all_perpetuals=True, max_instruments=4)
    chosen, unknown = select_instruments(Exchange.BINANCE, cfg, ["C07USDT"], listed)
    assert [i.instrument for i in chosen] == ["C07USDT", "C00USDT", "C01USDT", "C02USDT"]
    assert unknown == []


async def test_stop_during_startup_and_listen_error() -> None:
    # an exchange that accepts connections and never answers: startup would wait for its budget
    accepted: list[int] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.read()  # until the exporter hangs up
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"127.0.0.1:{port}"
    only = {ex.value: {"enabled": ex is Exchange.BYBIT} for ex in Exchange}
    only["bybit"].update({"ws_url": f"ws://{url}", "rest_url": f"http://{url}"})
    config = Config.model_validate({"listen_address": "127.0.0.1:0", "exchanges": only})
    stop = asyncio.Event()
    ready: list[int] = []
    task = asyncio.create_task(run_exporter(config, stop, ready.append))
    await wait_until(lambda: accepted, 10, what="the exporter to connect during startup")
    stop.set()
    await asyncio.wait_for(task, 10)  # deadlock guard, not a speed claim
    assert ready == []  # never served

    # the listen port is taken: a clear error, raised to the caller
    config.listen_address = f"127.0.0.1:{port}"
    config.exchanges[Exchange.BYBIT].enabled = False
    with pytest.raises(OSError):
        await asyncio.wait_for(run_exporter(config, asyncio.Event()), 10)
    server.close()
    await server.wait_closed()


async def test_pollers_and_state_run_on_the_exporters_clock() -> None:
    """The REST pollers wait on the exporter's Clock, and the state stamps what it receives with it: on a
    VirtualClock a 10-minute open-interest period passes when the test advances it, not before."""
    sim = sim_main.Simulator(seed=7, base_port=0)
    await sim.start()
    clock = VirtualClock(time.time())
    cfg = make_config(sim, binance={"poll": {"open_interest_seconds": 600.0}})
    for ex in Exchange:
        cfg.exchanges[ex].enabled = ex is Exchange.BINANCE
    exporter = Exporter(cfg, clock=clock)
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run(stop, ready.set_result))
    try:
        await asyncio.wait_for(asyncio.shield(ready), 30)
        oi = exporter.state.rest_endpoint(Exchange.BINANCE, "open_interest")
        st = exporter.state.instruments[(Exchange.BINANCE, "BTCUSDT")]
        # the start-up backfill's read and the first poll (one per instrument each), stamped by the virtual clock
        await wait_until(lambda: oi.requests == 4, what="the backfill's read and the first open-interest poll")
        assert st.oi_at == clock.time()
        t_poll = clock.time()
        await wait_until(lambda: t_poll + 600.0 in clock.deadlines(), what="the poller asleep on the clock")
        assert oi.requests == 4  # nothing more until the clock moves
        clock.advance(599.0)
        await asyncio.sleep(0.05)  # not due: give a wrongly woken poller the chance to show itself
        assert oi.requests == 4
        clock.advance(1.0)
        await wait_until(lambda: oi.requests == 6, what="the second poll, once 600 s have passed on the clock")
        await wait_until(lambda: st.oi_at == clock.time(), what="the new value, stamped at the new time")
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await sim.stop()
