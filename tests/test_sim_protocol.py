"""The simulator's four protocol servers over real loopback sockets (websockets client + httpx)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from support import wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

from exporter.clock import VirtualClock
from exporter.model import Exchange
from exporter.sim.main import Simulator
from exporter.sim.server import SimOptions, ms


@pytest.fixture
async def vsim() -> AsyncIterator[Simulator]:
    """The market on a VirtualClock: it moves only by ``POST /_sim/advance`` (deterministic, instant)."""
    s = Simulator(seed=42, base_port=0, tick_seconds=0.1, clock=VirtualClock(1_767_225_600.0 + 600.0))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # market time at 5x: the once-a-second pushes come every 0.2 s (protocol timers stay on wall time)
    s = Simulator(
        seed=42,
        base_port=0,
        tick_seconds=0.1,
        options=SimOptions(deribit_min_heartbeat_s=0.3, okx_funding_push_s=1.0),
        time_scale=5.0,
    )
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def recv_json(ws: Any, timeout: float = 15.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, pred: Any, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.05, end - time.monotonic()))
        if pred(msg):
            return msg


async def post(sim: Simulator, ex: Exchange, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient() as h:
        r = await h.post(sim.urls(ex)[1] + path, json=body or {})
        r.raise_for_status()
        return r.json()


async def truth(sim: Simulator, ex: Exchange) -> Any:
    async with httpx.AsyncClient() as h:
        return (await h.get(sim.urls(ex)[1] + "/_sim/truth")).json()


def test_run_prints_urls_and_serves() -> None:
    """``run`` prints one JSON line with the URLs, then serves until stopped."""
    import argparse
    import contextlib
    import io

    from exporter.sim.main import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--base-port", "0", "--seed", "3", "--instruments-per-exchange", "4"])
    out = io.StringIO()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        with contextlib.redirect_stdout(out):
            task = asyncio.create_task(run(args, stop))
            await wait_until(lambda: out.getvalue().endswith("\n"), what="the line of URLs")
        info = json.loads(out.getvalue().splitlines()[0])
        async with httpx.AsyncClient() as h:
            r = await h.get(info["simulator"]["okx"]["rest"] + "/api/v5/public/instruments?instType=SWAP")
        stop.set()
        await task
        return {"info": info, "n": len(r.json()["data"])}

    res = asyncio.run(main())
    assert set(res["info"]["simulator"]) == {"binance", "bybit", "okx", "deribit"}
    assert res["info"]["simulator"]["binance"]["ws"].startswith("ws://127.0.0.1:")
    assert res["n"] == 4


# ----------------------------------------------------------------------------------------------
# Binance


async def test_binance_combined_stream_live_subscribe_and_raw_mode(sim: Simulator) -> None:
    ws_base, _ = sim.urls(Exchange.BINANCE)
    async with websockets.connect(ws_base + "/market/stream?streams=btcusdt@markPrice@1s") as ws:
        msg = await recv_json(ws)
        assert msg["stream"] == "btcusdt@markPrice@1s"
        assert msg["data"]["e"] == "markPriceUpdate" and msg["data"]["s"] == "BTCUSDT"
        await ws.send(
            json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@markPrice@1s", "!markPrice@arr@1s"], "id": 5})
        )
        ack = await recv_until(ws, lambda m: "id" in m)
        assert ack == {"result": None, "id": 5}
        arr = await recv_until(ws, lambda m: m.get("stream") == "!markPrice@arr@1s")
        assert {d["s"] for d in arr["data"]} == {"BTCUSDT", "ETHUSDT"}
        eth = await recv_until(ws, lambda m: m.get("stream") == "ethusdt@markPrice@1s")
        t = await truth(sim, Exchange.BINANCE)
        assert eth["data"]["T"] == int(t["instruments"]["ETHUSDT"]["next_funding_time"] * 1000)
        assert abs(float(eth["data"]["p"]) / t["instruments"]["ETHUSDT"]["mark"] - 1) < 0.01
    async with websockets.connect(ws_base + "/market/ws/btcusdt@markPrice@1s") as ws:
        msg = await recv_json(ws)
        assert msg["e"] == "markPriceUpdate"  # ws mode: the payload is not wrapped


async def test_binance_force_orders_at_most_one_per_symbol_per_second(vsim: Simulator) -> None:
    ws_base, _ = vsim.urls(Exchange.BINANCE)
    async with websockets.connect(ws_base + "/market/stream?streams=!forceOrder@arr") as ws:
        await post(vsim, Exchange.BINANCE, "/_sim/scenario", {"name": "cascade", "seconds": 0.5})
        await post(vsim, Exchange.BINANCE, "/_sim/advance", {"seconds": 4.5})  # the build-up and 4 s of crash
        t = await truth(vsim, Exchange.BINANCE)
        pushed = sum(v["liquidations"][s]["count"] for v in t["instruments"].values() for s in ("long", "short"))
        got = [await recv_json(ws) for _ in range(pushed)]
        with pytest.raises(TimeoutError):
            await recv_json(ws, 0.2)  # and nothing more: the market stands still
    seconds = [(m["data"]["o"]["s"], m["data"]["E"] // 1000) for m in got]
    assert got and len(seconds) == len(set(seconds))  # <= 1 per symbol per second
    assert {m["data"]["o"]["S"] for m in got} == {"SELL"}  # longs were liquidated in the crash
    sent = sum(v["liquidations"]["long"]["count"] for v in t["instruments"].values())
    every = sum(v["liquidations_all"]["long"]["count"] for v in t["instruments"].values())
    assert len(got) == sent < every  # the stream undercounts; truth reports both


# ----------------------------------------------------------------------------------------------
# Bybit


async def test_bybit_snapshot_then_deltas_with_only_changed_fields(sim: Simulator) -> None:
    ws_base, _ = sim.urls(Exchange.BYBIT)
    async with websockets.connect(ws_base + "/v5/public/linear") as ws:
        await ws.send(json.dumps({"req_id": "r1", "op": "subscribe", "args": ["tickers.BTCUSDT"]}))
        ack = await recv_json(ws)
        assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "r1"
        snap = await recv_json(ws)
        assert snap["topic"] == "tickers.BTCUSDT" and snap["type"] == "snapshot"
        state = dict(snap["data"])
        assert {"markPrice", "indexPrice", "fundingRate", "nextFundingTime", "openInterest"} <= set(state)
        deltas = 0
        partial = False
        last_cs = snap["cs"]
        while deltas < 8:
            m = await recv_json(ws)
            assert m["type"] == "delta" and m["cs"] > last_cs
            last_cs = m["cs"]
            data = m["data"]
            assert data["symbol"] == "BTCUSDT"
            changed = {k: v for k, v in data.items() if k != "symbol"}
            assert changed and all(state[k] != v for k, v in changed.items())  # only changed fields
            partial = partial or len(changed) < len(state) - 1
            state.update(changed)
            deltas += 1
        assert partial
        await ws.send(json.dumps({"req_id": "p", "op": "ping"}))
        pong = await recv_until(ws, lambda x: x.get("op") == "ping")
        assert pong["success"] is True and pong["ret_msg"] == "pong"
        await ws.send(json.dumps({"op": "subscribe", "args": ["tickers.NOPEUSDT"]}))
        err = await recv_until(ws, lambda x: "success" in x)
        assert err["success"] is False
    # REST reflects the same truth (openInterest is both sides, singleOpenInterest one side)
    async with httpx.AsyncClient() as h:
        r = (
            await h.get(
                sim.urls(Exchange.BYBIT)[1] + "/v5/market/tickers", params={"category": "linear", "symbol": "BTCUSDT"}
            )
        ).json()
    t = await truth(sim, Exchange.BYBIT)
    row = r["result"]["list"][0]
    oi = t["instruments"]["BTCUSDT"]["open_interest_base"]
    assert float(row["singleOpenInterest"]) == pytest.approx(oi, rel=1e-3)
    assert float(row["openInterest"]) == pytest.approx(2 * oi, rel=1e-3)


async def test_bybit_all_liquidation_is_complete(vsim: Simulator) -> None:
    ws_base, _ = vsim.urls(Exchange.BYBIT)
    n = 0
    async with websockets.connect(ws_base + "/v5/public/linear") as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": ["allLiquidation.BTCUSDT", "allLiquidation.ETHUSDT"]}))
        assert (await recv_json(ws))["success"] is True
        await post(vsim, Exchange.BYBIT, "/_sim/scenario", {"name": "cascade", "seconds": 0.5})
        await post(vsim, Exchange.BYBIT, "/_sim/advance", {"seconds": 4.5})
        t = await truth(vsim, Exchange.BYBIT)
        published = sum(v["liquidations"][s]["count"] for v in t["instruments"].values() for s in ("long", "short"))
        while n < published:  # read what was published (recv_json's timeout guards a shortfall)
            m = await recv_json(ws)
            assert m["topic"].startswith("allLiquidation.") and m["type"] == "snapshot"
            n += len(m["data"])
        with pytest.raises(TimeoutError):
            await recv_json(ws, 0.2)  # and no more than that
    every = sum(v["liquidations_all"][s]["count"] for v in t["instruments"].values() for s in ("long", "short"))
    sent = sum(v["liquidations"][s]["count"] for v in t["instruments"].values() for s in ("long", "short"))
    assert n > 20 and n == sent
    assert every - sent <= 30  # at most the last half-second batch is still pending


# ----------------------------------------------------------------------------------------------
# OKX


async def test_okx_subscribe_ack_channels_and_text_ping(sim: Simulator) -> None:
    ws_base, _ = sim.urls(Exchange.OKX)
    args = [
        {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
        {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
        {"channel": "index-tickers", "instId": "BTC-USDT"},
        {"channel": "open-interest", "instId": "ETH-USDT-SWAP"},
        {"channel": "liquidation-orders", "instType": "SWAP"},
    ]
    async with websockets.connect(ws_base + "/ws/v5/public") as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": args}))
        seen_acks, seen_data = [], set()
        end = time.monotonic() + 15.0
        while time.monotonic() < end and (len(seen_acks) < 5 or len(seen_data) < 4):
            m = await recv_json(ws)
            if m.get("event") == "subscribe":
                seen_acks.append(m["arg"])
            elif "data" in m:
                seen_data.add(m["arg"]["channel"])
        assert seen_acks == args
        assert seen_data == {"funding-rate", "mark-price", "index-tickers", "open-interest"}
        await ws.send("ping")
        assert await asyncio.wait_for(_next_text(ws, "pong"), 15) == "pong"
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "funding-rate", "instId": "NOPE-SWAP"}]}))
        err = await recv_until(ws, lambda x: x.get("event") == "error")
        assert err["code"] == "60018"
        fr = await recv_until(ws, lambda x: x.get("arg", {}).get("channel") == "funding-rate")
        t = await truth(sim, Exchange.OKX)
        item = fr["data"][0]
        interval_ms = int(item["nextFundingTime"]) - int(item["fundingTime"])
        assert interval_ms == t["instruments"]["BTC-USDT-SWAP"]["funding_interval_seconds"] * 1000
        assert item["maxFundingRate"] == "0.00375"


async def _next_text(ws: Any, want: str) -> str:
    while True:
        m = await ws.recv()
        if m == want:
            return m


# ----------------------------------------------------------------------------------------------
# Deribit


async def test_deribit_subscribe_and_heartbeat(sim: Simulator) -> None:
    ws_base, _ = sim.urls(Exchange.DERIBIT)
    async with websockets.connect(ws_base + "/ws/api/v2") as ws:
        await ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "public/subscribe",
                    "params": {"channels": ["ticker.BTC-PERPETUAL.100ms", "ticker.BTC-PERPETUAL.raw"]},
                }
            )
        )
        res = await recv_until(ws, lambda m: m.get("id") == 1)
        assert res["result"] == ["ticker.BTC-PERPETUAL.100ms"]  # raw needs authorisation
        note = await recv_until(ws, lambda m: m.get("method") == "subscription")
        assert note["params"]["channel"] == "ticker.BTC-PERPETUAL.100ms"
        assert isinstance(note["params"]["data"]["funding_8h"], float)
        await ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 2, "method": "public/set_heartbeat", "params": {"interval": 0.1}})
        )
        assert "error" in await recv_until(ws, lambda m: m.get("id") == 2)  # below the minimum
        await ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 3, "method": "public/set_heartbeat", "params": {"interval": 0.3}})
        )
        assert (await recv_until(ws, lambda m: m.get("id") == 3))["result"] == "ok"
        # answer three test_requests: the connection stays open
        for k in range(3):
            hb = await recv_until(ws, lambda m: m.get("method") == "heartbeat")
            assert hb["params"]["type"] == "test_request"
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 100 + k, "method": "public/test", "params": {}}))
        # stop answering: the server closes the connection
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(15.0):
                while True:
                    await ws.recv()
    assert ws.close_code is not None


async def test_deribit_rest_history_pagination(sim: Simulator) -> None:
    _, rest = sim.urls(Exchange.DERIBIT)
    now_ms = int(sim.market.now * 1000)
    async with httpx.AsyncClient() as h:
        r = (
            await h.get(
                rest + "/api/v2/public/get_funding_rate_history",
                params={
                    "instrument_name": "BTC-PERPETUAL",
                    "start_timestamp": now_ms - 86_400_000,
                    "end_timestamp": now_ms,
                },
            )
        ).json()
        rows = r["result"]
        assert 23 <= len(rows) <= 25
        assert all(b["timestamp"] - a["timestamp"] == 3_600_000 for a, b in itertools.pairwise(rows))
        bad = await h.get(rest + "/api/v2/public/ticker", params={"instrument_name": "NOPE"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == -32602


# ----------------------------------------------------------------------------------------------
# REST pagination on the interval exchanges


async def test_history_pagination_binance_bybit_okx(sim: Simulator) -> None:
    hist = sim.market.instruments[Exchange.BINANCE]["BTCUSDT"].history
    async with httpx.AsyncClient() as h:
        b = sim.urls(Exchange.BINANCE)[1]
        r = (
            await h.get(
                b + "/fapi/v1/fundingRate", params={"symbol": "BTCUSDT", "startTime": hist[0].time_ms, "limit": 50}
            )
        ).json()
        assert [x["fundingTime"] for x in r] == [x.time_ms for x in hist[:50]]
        r = (await h.get(b + "/fapi/v1/fundingRate", params={"symbol": "BTCUSDT", "limit": 1000})).json()
        assert len(r) == len(hist) >= 180
        y = sim.urls(Exchange.BYBIT)[1]
        end = sim.market.instruments[Exchange.BYBIT]["BTCUSDT"].history[-10].time_ms
        r = (
            await h.get(
                y + "/v5/market/funding/history",
                params={"category": "linear", "symbol": "BTCUSDT", "endTime": end, "limit": 5},
            )
        ).json()
        ts = [int(x["fundingRateTimestamp"]) for x in r["result"]["list"]]
        assert ts[0] == end and ts == sorted(ts, reverse=True) and len(ts) == 5
        r = (
            await h.get(
                y + "/v5/market/funding/history", params={"category": "linear", "symbol": "BTCUSDT", "startTime": end}
            )
        ).json()
        assert r["retCode"] != 0  # startTime alone is an error
        o = sim.urls(Exchange.OKX)[1]
        first = (
            await h.get(o + "/api/v5/public/funding-rate-history", params={"instId": "BTC-USDT-SWAP", "limit": 3})
        ).json()["data"]
        older = (
            await h.get(
                o + "/api/v5/public/funding-rate-history",
                params={"instId": "BTC-USDT-SWAP", "limit": 3, "after": first[-1]["fundingTime"]},
            )
        ).json()["data"]
        assert int(older[0]["fundingTime"]) == int(first[-1]["fundingTime"]) - 8 * 3_600_000


async def test_settle_moves_next_funding_time_and_appends_history(sim: Simulator) -> None:
    before = (await truth(sim, Exchange.BINANCE))["instruments"]["BTCUSDT"]
    await post(sim, Exchange.BINANCE, "/_sim/settle")
    after = (await truth(sim, Exchange.BINANCE))["instruments"]["BTCUSDT"]
    assert after["next_funding_time"] == before["next_funding_time"] + 8 * 3600
    assert after["settlements_count"] == before["settlements_count"] + 1
    async with httpx.AsyncClient() as h:
        last = (
            await h.get(
                sim.urls(Exchange.BINANCE)[1] + "/fapi/v1/fundingRate", params={"symbol": "BTCUSDT", "limit": 1}
            )
        ).json()[0]
    assert last["fundingTime"] == int(before["next_funding_time"] * 1000)
    assert float(last["fundingRate"]) == pytest.approx(after["last_settled_rate"], abs=1e-8)
    # the next mark price push carries the new next funding time
    ws_base, _ = sim.urls(Exchange.BINANCE)
    async with websockets.connect(ws_base + "/market/ws/btcusdt@markPrice@1s") as ws:
        m = await recv_json(ws)
    assert m["T"] == int(after["next_funding_time"] * 1000)


# ----------------------------------------------------------------------------------------------
# faults


async def test_fault_drop_closes_connections(sim: Simulator) -> None:
    ws_base, _ = sim.urls(Exchange.BYBIT)
    async with websockets.connect(ws_base + "/v5/public/linear") as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": ["tickers.BTCUSDT"]}))
        await recv_json(ws)
        await post(sim, Exchange.BYBIT, "/_sim/fault", {"kind": "drop"})
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()
    async with websockets.connect(ws_base + "/v5/public/linear"):
        pass  # reconnecting works


async def test_fault_stall_sends_nothing_then_resumes(sim: Simulator) -> None:
    ws_base, _ = sim.urls(Exchange.OKX)
    srv = sim.servers[Exchange.OKX]
    async with websockets.connect(ws_base + "/ws/v5/public") as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "mark-price", "instId": "BTC-USDT-SWAP"}]}))
        await recv_until(ws, lambda m: "data" in m)
        asked = time.monotonic()
        await post(sim, Exchange.OKX, "/_sim/fault", {"kind": "stall", "seconds": 1.2})
        # Frames are told apart by their stamp (the market time they were built at), not by when this
        # client gets round to reading them: a loaded machine delays the reads, not the stamps. Frames
        # stamped up to now may still be on the wire; any stamped later was built in the stall or after.
        armed_ms = ms(srv.stamp_now())
        stall_end = srv.faults.stall_until  # the simulator's monotonic deadline, as its writers read it
        assert stall_end >= asked + 1.2  # armed by the POST above, for its 1.2 s
        fresh = await recv_until(ws, lambda m: "data" in m and int(m["data"][0]["ts"]) > armed_ms, timeout=10.0)
        # silence while stalled: nothing built in the stall was sent before its end; the socket stayed
        # open and the first frame after it came on it
        assert time.monotonic() >= stall_end
        assert fresh["arg"] == {"channel": "mark-price", "instId": "BTC-USDT-SWAP"}


async def test_fault_malformed_and_truncated_frames(vsim: Simulator) -> None:
    ws_base, _ = vsim.urls(Exchange.BINANCE)
    async with websockets.connect(ws_base + "/market/stream?streams=!markPrice@arr@1s") as ws:
        await wait_until(lambda: any(c.topics for c in vsim.servers[Exchange.BINANCE].conns), what="subscription")
        await post(vsim, Exchange.BINANCE, "/_sim/advance", {"seconds": 1.0})
        await recv_json(ws)  # a good frame; nothing else is on the wire: the market stands still
        await post(vsim, Exchange.BINANCE, "/_sim/fault", {"kind": "malformed", "count": 1})
        await post(vsim, Exchange.BINANCE, "/_sim/fault", {"kind": "truncated", "count": 1})
        await post(vsim, Exchange.BINANCE, "/_sim/advance", {"seconds": 3.0})  # three more frames
        bad = [await asyncio.wait_for(ws.recv(), 15) for _ in range(2)]
        for raw in bad:
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw)
        assert (await recv_json(ws))["stream"] == "!markPrice@arr@1s"  # then normal again


async def test_fault_rest_429_with_retry_after_and_503(sim: Simulator) -> None:
    _, rest = sim.urls(Exchange.BINANCE)
    await post(sim, Exchange.BINANCE, "/_sim/fault", {"kind": "rest_429", "count": 2, "seconds": 3})
    await post(sim, Exchange.BINANCE, "/_sim/fault", {"kind": "rest_5xx", "count": 1})
    async with httpx.AsyncClient() as h:
        codes = []
        for _ in range(4):
            r = await h.get(rest + "/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"})
            codes.append(r.status_code)
            if r.status_code == 429:
                assert r.headers["Retry-After"] == "3"
    assert codes == [429, 429, 503, 200]


async def test_stop_and_start(sim: Simulator) -> None:
    ws_base, rest = sim.urls(Exchange.DERIBIT)
    async with websockets.connect(ws_base + "/ws/api/v2") as ws:
        await post(sim, Exchange.DERIBIT, "/_sim/stop")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()
    with pytest.raises(InvalidStatus) as exc:
        async with websockets.connect(ws_base + "/ws/api/v2"):
            pass
    assert exc.value.response.status_code == 503
    async with httpx.AsyncClient() as h:
        r = await h.get(rest + "/api/v2/public/ticker", params={"instrument_name": "BTC-PERPETUAL"})
        assert r.status_code == 503
        assert (await truth(sim, Exchange.DERIBIT))["down"] is True
        await post(sim, Exchange.DERIBIT, "/_sim/start")
        r = await h.get(rest + "/api/v2/public/ticker", params={"instrument_name": "BTC-PERPETUAL"})
        assert r.status_code == 200 and r.json()["result"]["instrument_name"] == "BTC-PERPETUAL"
    async with websockets.connect(ws_base + "/ws/api/v2") as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "public/test"}))
        assert (await recv_json(ws))["id"] == 9
    # other exchanges were never down
    async with httpx.AsyncClient() as h:
        assert (await h.get(sim.urls(Exchange.OKX)[1] + "/api/v5/public/time")).status_code == 200


async def test_binance_max_lifetime_and_scenario_endpoint() -> None:
    s = Simulator(seed=1, base_port=0, options=SimOptions(max_lifetime_s=0.5, ping_interval_s=0.2))
    await s.start()
    try:
        ws_base, _ = s.urls(Exchange.BINANCE)
        async with websockets.connect(ws_base + "/market/ws/btcusdt@markPrice@1s") as ws:
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):  # a deadlock guard
                    while True:
                        await ws.recv()
            # closed by its lifetime (the reason says which timer), not before it; how soon after it is
            # the loop's timer precision, which a loaded machine stretches
            assert closed.value.rcvd is not None and closed.value.rcvd.reason == "max lifetime"
            assert time.monotonic() - t0 > 0.4
        r = await post(s, Exchange.OKX, "/_sim/scenario", {"name": "funding_spike", "seconds": 5})
        assert r["ok"] and (await truth(s, Exchange.BYBIT))["scenario"] == "funding_spike"
        async with httpx.AsyncClient() as h:
            bad = await h.post(s.urls(Exchange.OKX)[1] + "/_sim/scenario", json={"name": "nope"})
            assert bad.status_code == 400
    finally:
        await s.stop()
