"""REST client and endpoints against a local aiohttp server on 127.0.0.1.

Timing assertions are about the *recorded request times* on the server (the client must not ask
again before Retry-After has passed), never about how fast we are.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, InstrumentInfo
from exporter.rest.client import RestClient, RestError, RestPolicy, parse_retry_after
from exporter.rest.endpoints import rest_api_for
from exporter.state import MarketState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FAST = RestPolicy(timeout_s=2.0, attempts=3, retry_initial_s=0.01, retry_max_s=0.05, rate_limit_default_s=0.2)


class Fake:
    """An aiohttp app whose routes the test sets; records (time, path, query) of every request."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.calls: list[tuple[float, str, dict[str, str]]] = []
        self.routes: dict[str, Handler] = {}
        self.app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        self.url = ""

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.calls.append((time.monotonic(), request.path, dict(request.query)))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no route")
        return await handler(request)

    def times(self, path: str) -> list[float]:
        return [t for t, p, _ in self.calls if p == path]


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    f = Fake()
    runner = web.AppRunner(f.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    f.url = f"http://{host}:{port}"
    yield f
    await runner.cleanup()


def jr(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json", headers=headers)


def client_for(
    fake: Fake, ex: Exchange = Exchange.BINANCE, policy: RestPolicy = FAST
) -> tuple[RestClient, MarketState]:
    state = MarketState()
    return RestClient(ex, fake.url, state, policy=policy), state


# ---- client: counting, rate limits, retries ------------------------------------------------------


async def test_429_retry_after_is_honoured_and_counted(fake: Fake) -> None:
    n = {"calls": 0}

    async def h(request: web.Request) -> web.Response:
        n["calls"] += 1
        if n["calls"] == 1:
            return jr({"code": -1003}, 429, {"Retry-After": "1"})
        return jr({"ok": True})

    fake.routes["/x"] = h
    client, state = client_for(fake)
    body = await client.get("ep", "/x")
    assert json.loads(body) == {"ok": True}
    t = fake.times("/x")
    assert len(t) == 2
    assert t[1] - t[0] >= 1.0  # the retry waited the full Retry-After
    h_ = state.rest_endpoint(Exchange.BINANCE, "ep")
    assert h_.requests == 2
    assert h_.failures == {"rate_limited": 1}
    assert h_.last_success_at > 0
    await client.aclose()


async def test_rate_limit_gate_holds_other_endpoints_back(fake: Fake) -> None:
    async def limited(request: web.Request) -> web.Response:
        return jr({}, 429, {"Retry-After": "0.6"})

    async def fine(request: web.Request) -> web.Response:
        return jr([])

    fake.routes["/a"] = limited
    fake.routes["/b"] = fine
    client, _ = client_for(fake, policy=RestPolicy(attempts=1))
    with pytest.raises(RestError) as err:
        await client.get("a", "/a")
    assert err.value.reason == "rate_limited"
    await client.get("b", "/b")  # limits are per IP: this one waits at the gate too
    assert fake.times("/b")[0] - fake.times("/a")[0] >= 0.6
    await client.aclose()


async def test_retry_after_http_date_and_418_ban(fake: Fake) -> None:
    n = {"calls": 0}

    async def h(request: web.Request) -> web.Response:
        n["calls"] += 1
        if n["calls"] == 1:
            # HTTP dates have 1 s resolution: 2 s ahead means at least 1 s of waiting
            return jr({}, 418, {"Retry-After": formatdate(time.time() + 2.0, usegmt=True)})
        return jr({"ok": 1})

    fake.routes["/x"] = h
    client, state = client_for(fake)
    await client.get("ep", "/x")
    t = fake.times("/x")
    assert t[1] - t[0] >= 1.0
    assert state.rest_endpoint(Exchange.BINANCE, "ep").failures == {"rate_limited": 1}
    await client.aclose()


async def test_retry_after_too_far_fails_fast_and_cap_applies(fake: Fake) -> None:
    async def h(request: web.Request) -> web.Response:
        return jr({}, 429, {"Retry-After": "100000"})

    fake.routes["/x"] = h
    policy = RestPolicy(attempts=3, retry_after_cap_s=120.0, max_wait_in_call_s=5.0)
    client, _ = client_for(fake, policy=policy)
    with pytest.raises(RestError) as err:
        await client.get("ep", "/x")
    assert err.value.reason == "rate_limited"
    assert len(fake.calls) == 1  # no hammering while banned
    assert client.gate_until - time.time() <= 120.0 + 1.0  # capped
    await client.aclose()


async def test_418_ban_retry_after_is_not_capped_like_a_429(fake: Fake) -> None:
    # exchanges.md 2.9: a 418 is an IP ban of 2 minutes up to 3 days; its Retry-After says when it
    # ends, and asking before then only prolongs it. The 429 cap must not shorten it.
    async def h(request: web.Request) -> web.Response:
        return jr({}, 418, {"Retry-After": "7200"})

    fake.routes["/x"] = h
    policy = RestPolicy(attempts=3, retry_after_cap_s=120.0, max_wait_in_call_s=5.0)
    client, _ = client_for(fake, policy=policy)
    with pytest.raises(RestError) as err:
        await client.get("ep", "/x")
    assert err.value.reason == "rate_limited"
    assert len(fake.calls) == 1
    assert client.gate_until - time.time() >= 7200.0 - 5.0
    with pytest.raises(RestError):
        await client.get("other", "/x")  # still banned: no request at all
    assert len(fake.calls) == 1
    await client.aclose()


async def test_bybit_403_access_too_frequent_closes_the_gate_for_10_minutes(fake: Fake) -> None:
    # exchanges.md 3.9: Bybit "403, access too frequent" => stop and wait >= 10 minutes
    async def h(request: web.Request) -> web.Response:
        return web.Response(status=403, text="access too frequent")

    fake.routes["/v5/market/tickers"] = h
    client, state = client_for(fake, Exchange.BYBIT, policy=RestPolicy(attempts=3, max_wait_in_call_s=5.0))
    with pytest.raises(RestError) as err:
        await client.get("ep", "/v5/market/tickers")
    assert err.value.reason == "rate_limited"
    assert len(fake.calls) == 1
    assert client.gate_until - time.time() >= 600.0 - 5.0
    assert state.rest_endpoint(Exchange.BYBIT, "ep").failures == {"rate_limited": 1}
    await client.aclose()


async def test_bybit_retcode_10006_is_a_rate_limit_not_a_body(fake: Fake) -> None:
    # exchanges.md 3.9: retCode 10006 = too many visits (sent with HTTP 200)
    n = {"calls": 0}
    reset_ms = {"v": 0}

    async def h(request: web.Request) -> web.Response:
        n["calls"] += 1
        if n["calls"] == 1:
            reset_ms["v"] = int((time.time() + 1.0) * 1000)
            return jr(
                {"retCode": 10006, "retMsg": "Too many visits!", "result": {}},
                headers={"X-Bapi-Limit-Reset-Timestamp": str(reset_ms["v"])},
            )
        return jr({"retCode": 0, "retMsg": "OK", "result": {"list": []}})

    fake.routes["/v5/market/tickers"] = h
    client, state = client_for(fake, Exchange.BYBIT)
    body = await client.get("ep", "/v5/market/tickers")
    assert json.loads(body)["retCode"] == 0
    t = fake.times("/v5/market/tickers")
    assert len(t) == 2 and t[1] - t[0] >= 0.9  # waited for the reset time
    assert state.rest_endpoint(Exchange.BYBIT, "ep").failures == {"rate_limited": 1}
    # a Binance body that happens to contain 10006 is just a body
    n["calls"] = 1
    bclient, _ = client_for(fake, Exchange.BINANCE)
    assert json.loads(await bclient.get("ep", "/v5/market/tickers"))["retCode"] == 0
    await client.aclose()
    await bclient.aclose()


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("nan", now) is None


async def test_5xx_counted_and_previous_value_kept(fake: Fake) -> None:
    status = {"code": 200}

    async def oi(request: web.Request) -> web.Response:
        if status["code"] != 200:
            return web.Response(status=status["code"], text="busy")
        return jr({"symbol": "BTCUSDT", "openInterest": "1234.5", "time": 1700000000000})

    fake.routes["/fapi/v1/openInterest"] = oi
    client, state = client_for(fake)
    st = state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT"))
    ctx = FeedContext(Exchange.BINANCE, {"BTCUSDT": st.info})
    api = rest_api_for(Exchange.BINANCE, client, feed_for(Exchange.BINANCE), ctx)

    state.apply_many(await api.open_interest("BTCUSDT"))
    assert st.open_interest_base == 1234.5
    seen_at = st.oi_at

    status["code"] = 503
    with pytest.raises(RestError) as err:
        state.apply_many(await api.open_interest("BTCUSDT"))
    assert err.value.reason == "http_5xx"
    h = state.rest_endpoint(Exchange.BINANCE, "open_interest")
    assert h.requests == 1 + FAST.attempts
    assert h.failures == {"http_5xx": FAST.attempts}
    assert st.open_interest_base == 1234.5 and st.oi_at == seen_at  # nothing changed
    await client.aclose()


async def test_4xx_not_retried_and_parse_failure_counted(fake: Fake) -> None:
    async def bad_request(request: web.Request) -> web.Response:
        return jr({"code": -1121, "msg": "Invalid symbol."}, 400)

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>")

    fake.routes["/fapi/v1/openInterest"] = bad_request
    fake.routes["/fapi/v1/exchangeInfo"] = garbage
    client, state = client_for(fake)
    api = rest_api_for(Exchange.BINANCE, client, feed_for(Exchange.BINANCE), FeedContext(Exchange.BINANCE))
    with pytest.raises(RestError) as err:
        await api.open_interest("NOPEUSDT")
    assert err.value.reason == "http_4xx"
    assert len(fake.times("/fapi/v1/openInterest")) == 1
    with pytest.raises(RestError) as err:
        await api.instruments()
    assert err.value.reason == "parse"
    assert state.rest_endpoint(Exchange.BINANCE, "instruments").failures == {"parse": 1}
    assert state.rest_endpoint(Exchange.BINANCE, "open_interest").failures == {"http_4xx": 1}
    await client.aclose()


async def test_timeout_and_connection_errors_counted(fake: Fake, port: int) -> None:
    import asyncio

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return jr({})

    fake.routes["/slow"] = slow
    policy = RestPolicy(timeout_s=0.2, attempts=2, retry_initial_s=0.01, retry_max_s=0.02)
    client, state = client_for(fake, policy=policy)
    with pytest.raises(RestError) as err:
        await client.get("slow", "/slow")
    assert err.value.reason == "timeout"
    assert state.rest_endpoint(Exchange.BINANCE, "slow").failures == {"timeout": 2}
    await client.aclose()

    dead = RestClient(Exchange.BINANCE, f"http://127.0.0.1:{port}", state, policy=policy)  # nothing listens
    with pytest.raises(RestError) as err:
        await dead.get("dead", "/x")
    assert err.value.reason == "connection"
    assert state.rest_endpoint(Exchange.BINANCE, "dead").failures == {"connection": 2}
    await dead.aclose()


# ---- funding-history pagination --------------------------------------------------------------------

HOUR_MS = 3_600_000
T0_MS = 1_700_000_000_000 - (1_700_000_000_000 % HOUR_MS)


async def test_binance_history_pages_forward(fake: Fake) -> None:
    rows = [
        {
            "symbol": "BTCUSDT",
            "fundingRate": f"{k * 1e-6:.8f}",
            "fundingTime": T0_MS + k * 8 * HOUR_MS,
            "markPrice": "1",
        }
        for k in range(2500)
    ]

    async def h(request: web.Request) -> web.Response:
        q = request.query
        start, end, limit = int(q["startTime"]), int(q["endTime"]), min(int(q["limit"]), 1000)
        page = [r for r in rows if start <= r["fundingTime"] <= end][:limit]  # ascending, like Binance
        return jr(page)

    fake.routes["/fapi/v1/fundingRate"] = h
    client, _ = client_for(fake)
    api = rest_api_for(Exchange.BINANCE, client, feed_for(Exchange.BINANCE), FeedContext(Exchange.BINANCE))
    got = await api.funding_history("BTCUSDT", T0_MS / 1000, (T0_MS + 3000 * 8 * HOUR_MS) / 1000)
    assert [s.funding_time for s in got] == [r["fundingTime"] / 1000 for r in rows]
    assert len(fake.calls) == 3  # 1000 + 1000 + 500
    assert all(q["limit"] == "1000" for _, _, q in fake.calls)
    await client.aclose()


async def test_bybit_history_pages_backward(fake: Fake) -> None:
    rows = [
        {"symbol": "BTCUSDT", "fundingRate": "0.0001", "fundingRateTimestamp": str(T0_MS + k * 8 * HOUR_MS)}
        for k in range(450)
    ]

    async def h(request: web.Request) -> web.Response:
        q = request.query
        start, end, limit = int(q["startTime"]), int(q["endTime"]), min(int(q["limit"]), 200)
        sel = [r for r in rows if start <= int(r["fundingRateTimestamp"]) <= end]
        page = sorted(sel, key=lambda r: -int(r["fundingRateTimestamp"]))[:limit]  # newest first
        return jr({"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": page}})

    fake.routes["/v5/market/funding/history"] = h
    client, _ = client_for(fake, Exchange.BYBIT)
    api = rest_api_for(Exchange.BYBIT, client, feed_for(Exchange.BYBIT), FeedContext(Exchange.BYBIT))
    start, end = (T0_MS + 50 * 8 * HOUR_MS) / 1000, (T0_MS + 10_000 * 8 * HOUR_MS) / 1000
    got = await api.funding_history("BTCUSDT", start, end)
    assert sorted(s.funding_time for s in got) == [int(r["fundingRateTimestamp"]) / 1000 for r in rows[50:]]
    assert len(fake.calls) == 2  # 200 + 200 (the second page reaches startTime)
    await client.aclose()


async def test_okx_history_pages_with_after(fake: Fake) -> None:
    rows = [
        {
            "instType": "SWAP",
            "instId": "BTC-USDT-SWAP",
            "fundingRate": "0.0002",
            "realizedRate": "0.0001",
            "fundingTime": str(T0_MS + k * 8 * HOUR_MS),
            "method": "current_period",
        }
        for k in range(250)
    ]

    async def h(request: web.Request) -> web.Response:
        q = request.query
        limit = min(int(q.get("limit", "100")), 100)
        after = int(q["after"]) if "after" in q else None
        sel = [r for r in rows if after is None or int(r["fundingTime"]) < after]
        page = sorted(sel, key=lambda r: -int(r["fundingTime"]))[:limit]
        return jr({"code": "0", "msg": "", "data": page})

    fake.routes["/api/v5/public/funding-rate-history"] = h
    client, state = client_for(fake, Exchange.OKX)
    api = rest_api_for(Exchange.OKX, client, feed_for(Exchange.OKX), FeedContext(Exchange.OKX))
    got = await api.funding_history("BTC-USDT-SWAP", T0_MS / 1000, (T0_MS + 1000 * 8 * HOUR_MS) / 1000)
    assert sorted(s.funding_time for s in got) == [int(r["fundingTime"]) / 1000 for r in rows]
    assert all(s.rate == 0.0001 for s in got)  # realised, not predicted
    assert len(fake.calls) == 3
    assert "after" not in fake.calls[0][2] and fake.calls[1][2]["after"] == rows[150]["fundingTime"]
    # applied to state: a sorted, duplicate-free window, trimmed to the state's span (31 days default)
    st = state.register(InstrumentInfo(Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT"))
    state.apply_many(got + got)
    window = st.settlement_window()
    newest = int(rows[-1]["fundingTime"]) / 1000
    assert [t for t, _ in window] == [
        int(r["fundingTime"]) / 1000 for r in rows if int(r["fundingTime"]) / 1000 >= newest - 31 * 86400
    ]
    await client.aclose()


async def test_deribit_history_chunks_by_time(fake: Fake) -> None:
    async def h(request: web.Request) -> web.Response:
        q = request.query
        start, end = int(q["start_timestamp"]), int(q["end_timestamp"])
        first = -(-start // HOUR_MS) * HOUR_MS
        result = [
            {"timestamp": t, "index_price": 1.0, "prev_index_price": 1.0, "interest_1h": 1e-6, "interest_8h": 8e-6}
            for t in range(first, end + 1, HOUR_MS)
        ]
        return jr({"jsonrpc": "2.0", "result": result})

    fake.routes["/api/v2/public/get_funding_rate_history"] = h
    client, _ = client_for(fake, Exchange.DERIBIT)
    api = rest_api_for(Exchange.DERIBIT, client, feed_for(Exchange.DERIBIT), FeedContext(Exchange.DERIBIT))
    start = T0_MS / 1000
    got = await api.funding_history("BTC-PERPETUAL", start, start + 12 * 86400)
    times = sorted({s.funding_time for s in got})
    assert times == [start + k * 3600 for k in range(12 * 24 + 1)]
    assert {s.instrument for s in got} == {"BTC-PERPETUAL"}
    assert len(fake.calls) == 3  # 5 d + 5 d + 2 d
    spans = [(int(q["start_timestamp"]), int(q["end_timestamp"])) for _, _, q in fake.calls]
    assert all(b - a <= 5 * 86400 * 1000 for a, b in spans)
    assert spans[0][0] == T0_MS and spans[-1][1] == T0_MS + 12 * 86400 * 1000
    await client.aclose()
