"""Connection behaviour under faults: backoff reset once data flows (but not for connect-then-drop),
fr_up following parsed data rather than any frame, and Bybit's snapshot+delta resync."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from test_connection import FAST, JsonFeed, Running, Server, wait_until
from websockets.asyncio.server import ServerConnection

from exporter.config import Config
from exporter.feeds.bybit import BybitFeed
from exporter.feeds.connection import BackoffPolicy
from exporter.metrics import build_registry
from exporter.model import Exchange, InstrumentInfo, MarketUpdate, Rejected
from exporter.state import MarketState
from exporter.views import exchange_up

EX = Exchange.BYBIT


# ---- backoff -------------------------------------------------------------------------------------


async def test_backoff_resets_once_the_subscription_delivers_data() -> None:
    """A flapping but reachable exchange: each session gets data, lives a little, then drops.
    Before: the backoff only reset after 60 s of life, so it grew to its cap on every flap."""

    async def flap(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"mark": float(n)}))
        await asyncio.sleep(0.15)
        await ws.close()

    policy = BackoffPolicy(initial_s=0.01, factor=2.0, max_s=0.08, healthy_after_s=60.0, short_session_s=0.1)
    async with Running(flap, backoff=policy, rand=lambda: 1.0) as r:
        await wait_until(lambda: len(r.conn.backoff_delays) >= 4)
        assert list(r.conn.backoff_delays)[:4] == [0.01] * 4
        assert r.health.short_sessions == 0


async def test_connect_then_drop_keeps_backing_off_and_is_counted() -> None:
    """Data, then an immediate drop: no reset (else a tight reconnect loop), counted."""

    async def drop(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"mark": float(n)}))
        await ws.close()

    policy = BackoffPolicy(initial_s=0.01, factor=2.0, max_s=0.04, healthy_after_s=60.0, short_session_s=5.0)
    async with Running(drop, backoff=policy, rand=lambda: 1.0) as r:
        await wait_until(lambda: len(r.conn.backoff_delays) >= 4)
        assert list(r.conn.backoff_delays)[:4] == [0.01, 0.02, 0.04, 0.04]
        assert r.health.short_sessions >= 4
        text = build_registry(Config(), r.state).render().decode()
        assert 'fr_stream_short_sessions_total{exchange="bybit",stream="tickers"}' in text


# ---- fr_up follows parsed data -------------------------------------------------------------------


async def test_fr_up_follows_the_last_parsed_message_not_a_flood_of_garbage() -> None:
    async def garbage(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"mark": 100.0}))
        for _ in range(30):
            await asyncio.sleep(0.05)
            await ws.send("{garbage")
        await srv.drain(ws, n)

    async with Running(garbage) as r:
        await wait_until(lambda: r.health.parse_errors >= 30)
        h = r.health
        assert h.last_message_at - h.last_parsed_at > 1.0
        cfg = Config()
        limit = cfg.exchanges[EX].stale.stream_seconds
        now = h.last_parsed_at + limit + 0.5  # within the limit of the last frame, not of the last data
        assert now - h.last_message_at < limit
        assert exchange_up(cfg, r.state, EX, now) is False
        assert exchange_up(cfg, r.state, EX, h.last_parsed_at + 1.0) is True
        text = build_registry(cfg, r.state).render().decode()
        assert 'fr_stream_last_parsed_timestamp_seconds{exchange="bybit",stream="tickers"}' in text
        assert 'fr_parse_errors_by_reason_total{exchange="bybit",reason="bad_shape",stream="tickers"} 30.0' in text


# ---- Bybit snapshot + delta ----------------------------------------------------------------------

# recorded shape (ws_tickers_v5_tardis.jsonl), linear BTCUSDT
TS = 1680673822577
SNAP = {
    "topic": "tickers.BTCUSDT",
    "type": "snapshot",
    "data": {
        "symbol": "BTCUSDT",
        "markPrice": "28560.00",
        "indexPrice": "28566.94",
        "openInterest": "449736676",
        "nextFundingTime": "1680681600000",
        "fundingRate": "0.0001",
    },
    "cs": 20856433578,
    "ts": TS,
}


def snapshot(rate: str) -> str:
    return orjson.dumps({**SNAP, "data": {**SNAP["data"], "fundingRate": rate}}).decode()


def delta(mark: str) -> str:
    return orjson.dumps(
        {"topic": "tickers.BTCUSDT", "type": "delta", "data": {"symbol": "BTCUSDT", "markPrice": mark}, "ts": TS + 100}
    ).decode()


def _bybit_running(behaviour: Any, **plan: Any) -> Running:
    r = Running(behaviour, plan_kw=plan, backoff=FAST)
    r.feed = BybitFeed()  # type: ignore[assignment]
    return r


async def test_bybit_delta_without_this_sessions_snapshot_refreshes_only_its_own_fields() -> None:
    """The first frame after a reconnect (the snapshot) is lost: later deltas must not make the
    funding rate of the previous session look current. Before: every delta refreshed every field."""
    sent_second: list[str] = []

    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        if n == 1:
            await ws.send(snapshot("0.0001"))
            await asyncio.sleep(0.1)
            await ws.close()
            return
        for k in range(6):  # snapshot lost: deltas only
            await asyncio.sleep(0.05)
            sent_second.append(delta(f"2856{k}.00"))
            await ws.send(sent_second[-1])
        await srv.drain(ws, n)

    async with _bybit_running(behaviour) as r:
        await wait_until(lambda: r.btc.funding_rate == 0.0001)
        funding_at = r.btc.funding_at
        await wait_until(lambda: r.btc.mark_price == 28565.0)
        assert r.btc.price_at > funding_at  # the delivered field is fresh ...
        assert r.btc.funding_at == funding_at  # ... the one it left out is not


async def test_bybit_parse_error_asks_for_fresh_snapshots() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(snapshot("0.0001"))
        await asyncio.sleep(0.05)
        await ws.send('{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTC')  # a lost delta
        assert await srv.recv(ws, n) == "UNSUB"
        assert await srv.recv(ws, n) == "RESUB"
        await ws.send(delta("28600.00"))  # before the fresh snapshot: confirms nothing else
        await asyncio.sleep(0.1)
        await ws.send(snapshot("0.0003"))
        await srv.drain(ws, n)

    async with _bybit_running(behaviour, resync=("UNSUB", "RESUB")) as r:
        await wait_until(lambda: r.btc.funding_rate == 0.0001)
        first = r.btc.funding_at
        await wait_until(lambda: r.btc.mark_price == 28600.0)
        assert r.btc.funding_at == first
        await wait_until(lambda: r.btc.funding_rate == 0.0003)
        assert r.btc.funding_at > first
        assert r.health.resyncs == 1 and r.health.parse_errors == 1
        assert len(r.server.connections) == 1  # fresh snapshots without reconnecting


def test_bybit_plans_carry_the_resync_frames() -> None:
    infos = [InstrumentInfo(EX, s, s[:-4], "USDT") for s in ("BTCUSDT", "ETHUSDT")]
    (plan,) = BybitFeed().ws_plans("wss://x", infos)
    frames = [orjson.loads(f) for f in plan.resync]
    assert [f["op"] for f in frames] == ["unsubscribe", "subscribe"]
    assert frames[0]["args"] == frames[1]["args"] == ["tickers.BTCUSDT", "tickers.ETHUSDT"]


def test_next_funding_time_in_the_past_is_stale() -> None:
    now = [1_700_000_000.0]
    state = MarketState(clock=lambda: now[0])
    state.register(InstrumentInfo(EX, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0))
    state.apply(MarketUpdate(EX, "BTCUSDT", mark_price=1.0, funding_rate=1e-4, next_funding_time=now[0] + 30))
    reg = build_registry(Config(), state)
    assert (
        reg.get_sample_value(
            "fr_funding_rate", {"exchange": "bybit", "instrument": "BTCUSDT", "base": "BTC", "quote": "USDT"}
        )
        == 1e-4
    )
    now[0] += 100  # the settlement passed 70 s ago; a delta keeps confirming the old ticker
    state.apply(MarketUpdate(EX, "BTCUSDT", mark_price=1.0, confirms_ticker=True))
    labels = {"exchange": "bybit", "instrument": "BTCUSDT", "base": "BTC", "quote": "USDT"}
    assert reg.get_sample_value("fr_funding_rate", labels) is None
    assert reg.get_sample_value("fr_mark_price", labels) == 1.0


class _BatchFeed(JsonFeed):
    """{"batch": [x, ...]}: one mark price per positive x, a Rejected element for the others."""

    def parse_ws(self, frame: str | bytes, ctx: Any) -> list[Any]:
        msg = json.loads(frame)
        if "batch" not in msg:
            return super().parse_ws(frame, ctx)
        return [
            MarketUpdate(EX, "BTCUSDT", mark_price=float(x)) if x > 0 else Rejected(EX, "price_out_of_range", f"{x}")
            for x in msg["batch"]
        ]


async def test_a_rejected_element_is_counted_and_the_rest_applies() -> None:
    async def behaviour(ws: ServerConnection, n: int, srv: Server) -> None:
        await srv.recv(ws, n)
        await ws.send(json.dumps({"batch": [101.0, 0, 102.0]}))
        await srv.drain(ws, n)

    async with Running(behaviour, feed=_BatchFeed()) as r:
        await wait_until(lambda: r.btc.mark_price == 102.0)
        assert r.health.parse_errors == 1
        assert r.health.parse_error_reasons == {"price_out_of_range": 1}
        assert r.health.last_parsed_at > 0.0
