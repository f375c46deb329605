"""Exchange price and open-interest history: parsers on the documented samples, REST paging against
the simulator (whose minute tape is the truth), the limits that pace the new endpoints."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from exporter.clock import VirtualClock
from exporter.feeds import feed_for
from exporter.feeds import history as H
from exporter.feeds.base import FeedContext
from exporter.limits import LIMITS
from exporter.model import Candle, Exchange, OpenInterestPoint, ParseError
from exporter.rest.client import RequestBudget, RestClient
from exporter.rest.endpoints import ExchangeRest, rest_api_for
from exporter.sim import main as sim_main
from exporter.state import MarketState

pytestmark = pytest.mark.slow(seconds=5)  # the file: the simulator's history endpoints paged through the REST client

# ---- parsers: the documented samples, values read off the sample by hand -----------------------


def test_binance_klines_documented_premium_row() -> None:
    body = (
        b'[[1691603820000,"-0.00042931","-0.00023641","-0.00059406","-0.00043659","0",1691603879999,"0",12,'
        b'"0","0","0"]]'
    )
    assert H.binance_klines(body, "premium") == [
        Candle(1691603820.0, -0.00042931, -0.00023641, -0.00059406, -0.00043659)
    ]


def test_binance_klines_index_row_and_order() -> None:
    body = (
        b'[[1616340900000,"57283.26395200","57294.43035200","57224.03776400","57265.85639717","0",1616341199999,"0",89,"0","0","0"],'
        b'[1616340600000,"57366.98431599","57429.73139441","57284.92735200","57284.92735200","0",1616340899999,"0",300,"0","0","0"]]'
    )
    got = H.binance_klines(body, "index")
    assert [c.open_time for c in got] == [1616340600.0, 1616340900.0]  # oldest first whatever the order
    assert got[0] == Candle(1616340600.0, 57366.98431599, 57429.73139441, 57284.927352, 57284.927352)


def test_binance_open_interest_hist_documented_row() -> None:
    body = (
        b'[{"symbol":"BTCUSDT","sumOpenInterest":"34085.00000000","sumOpenInterestValue":"1927265695.27131325",'
        b'"timestamp":1616438700000}]'
    )
    assert H.binance_open_interest_hist(body) == [OpenInterestPoint(1616438700.0, 1927265695.27131325)]
    # the timestamp was a string before SDK 13.0.0
    body2 = body.replace(b"1616438700000", b'"1616438700000"')
    assert H.binance_open_interest_hist(body2)[0].time == 1616438700.0


def test_bybit_kline_documented_response() -> None:
    body = (
        b'{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT","category":"linear","list":'
        b'[["1670608800000","17164.16","17164.16","17121.5","17131.64"]]},"retExtInfo":{},"time":1672026361839}'
    )
    assert H.bybit_klines(body, "mark") == [Candle(1670608800.0, 17164.16, 17164.16, 17121.5, 17131.64)]


def test_bybit_premium_kline_documented_response_newest_first() -> None:
    body = (
        b'{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT","category":"linear","list":['
        b'["1652486400000","-0.000587","-0.000344","-0.000480","-0.000344"],'
        b'["1652400000000","-0.000989","-0.000561","-0.000587","-0.000587"]]},"retExtInfo":{},"time":1672765216291}'
    )
    # the documentation's rows have the open below the low: kept as published, not "repaired"
    got = H.bybit_klines(body, "premium")
    assert got == [
        Candle(1652400000.0, -0.000989, -0.000561, -0.000587, -0.000587),
        Candle(1652486400.0, -0.000587, -0.000344, -0.00048, -0.000344),
    ]


def test_bybit_open_interest_inverse_documented_and_linear_converted_with_the_mark() -> None:
    inverse = (
        b'{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSD","category":"inverse","list":['
        b'{"openInterest":"461134384.00000000","timestamp":"1669571400000"},'
        b'{"openInterest":"461134292.00000000","timestamp":"1669571100000"}],"nextPageCursor":""},'
        b'"retExtInfo":{},"time":1672053548579}'
    )
    pts, cursor = H.bybit_open_interest(inverse, inverse=True)
    # "the sum of both sides": one side is half of it
    assert pts == [OpenInterestPoint(1669571100.0, 230567146.0), OpenInterestPoint(1669571400.0, 230567192.0)]
    assert cursor == ""
    linear = (
        b'{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT","category":"linear","list":['
        b'{"openInterest":"200","singleOpenInterest":"100","timestamp":"1669571400000"},'
        b'{"openInterest":"220","singleOpenInterest":"110","timestamp":"1669571100000"},'
        b'{"openInterest":"240","singleOpenInterest":"120","timestamp":"1669570800000"}],"nextPageCursor":"abc"}}'
    )
    marks = [
        Candle(1669571100.0, 20000.0, 20100.0, 19900.0, 20050.0),
        Candle(1669571400.0, 20050.0, 20060.0, 20000.0, 20010.0),
    ]
    pts, cursor = H.bybit_open_interest(linear, inverse=False, marks=marks)
    # 100 x 20050 (close of the candle before), 110 x 20000 (open of its own: none before); the oldest
    # has no mark: left out
    assert pts == [OpenInterestPoint(1669571100.0, 2_200_000.0), OpenInterestPoint(1669571400.0, 2_005_000.0)]
    assert cursor == "abc"


def test_okx_candles_premium_and_open_interest_history() -> None:
    body = b'{"code":"0","msg":"","data":[["1597026383085","3.721","3.743","3.677","3.708","1"]]}'
    assert H.okx_candles(body, "mark") == [Candle(1597026383.085, 3.721, 3.743, 3.677, 3.708)]
    prem = (
        b'{"code":"0","data":[{"instId":"BTC-USDT-SWAP","premium":"0.0000578896878167","ts":"1713925924000"}],"msg":""}'
    )
    p = 0.0000578896878167
    assert H.okx_premium_history(prem) == [Candle(1713925924.0, p, p, p, p)]
    oi = b'{"code":"0","msg":"","data":[["1701417600000","731377.57500501","7313.7757500501","310251236.12"]]}'
    assert H.okx_open_interest_history(oi) == [OpenInterestPoint(1701417600.0, 310251236.12)]
    with pytest.raises(ParseError):  # an error answer is not an empty history
        H.okx_candles(b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}', "mark")


def test_deribit_chart_parallel_arrays_and_no_data() -> None:
    body = (
        b'{"jsonrpc":"2.0","id":1,"result":{"status":"ok","ticks":[1554373800000,1554375600000],'
        b'"open":[4963.42,4986.29],"high":[5014.42,4994.99],"low":[4728.94,4957.25],'
        b'"close":[4986.29,4963.42],"volume":[19.0,20.1],"cost":[94330.0,100000.0]}}'
    )
    assert H.deribit_chart(body) == [
        Candle(1554373800.0, 4963.42, 5014.42, 4728.94, 4986.29),
        Candle(1554375600.0, 4986.29, 4994.99, 4957.25, 4963.42),
    ]
    empty = b'{"jsonrpc":"2.0","result":{"status":"no_data","ticks":[],"open":[],"high":[],"low":[],"close":[]}}'
    assert H.deribit_chart(empty) == []
    with pytest.raises(ParseError):
        H.deribit_chart(body.replace(b'"close":[4986.29,4963.42]', b'"close":[4986.29]'))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[[1691603820000,"NaN","1","1","1","0",1,"0",1,"0","0","0"]]', "not_finite"),
        (b'[[1691603820000,"-5","1","1","1","0",1,"0",1,"0","0","0"]]', "price_out_of_range"),
        (b'[[1691603820000,"1","2"]]', "bad_shape"),
        (b'[[99,"1","1","1","1","0",1,"0",1,"0","0","0"]]', "timestamp_out_of_range"),
        (b'{"code":-1121,"msg":"Invalid symbol."}', "bad_shape"),
        (b"[[1691603820000,", "invalid_json"),
    ],
)
def test_binance_klines_bad_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        H.binance_klines(body, "mark")
    assert err.value.reason == reason


def test_bucket_merges_samples_into_candles() -> None:
    samples = [Candle(t, p, p, p, p) for t, p in ((60.0, 1.0), (90.0, 3.0), (119.0, 2.0), (120.0, 5.0))]
    assert H.bucket(samples, 60) == [Candle(60.0, 1.0, 3.0, 1.0, 2.0), Candle(120.0, 5.0, 5.0, 5.0, 5.0)]


# ---- REST against the simulator: paging, windows, values equal to the simulator's own tape -------

SYMBOLS = {
    Exchange.BINANCE: "BTCUSDT",
    Exchange.BYBIT: "BTCUSDT",
    Exchange.OKX: "BTC-USDT-SWAP",
    Exchange.DERIBIT: "BTC-PERPETUAL",
}
START = 1_767_225_600.0 + 1234.5


ON_SIM = pytest.mark.asyncio(loop_scope="module")  # one simulator for these tests


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[sim_main.Simulator]:
    s = sim_main.Simulator(seed=3, base_port=0, clock=VirtualClock(START))
    await s.start()
    await s.advance(600.0)  # ten minutes of live tape after the generated history
    yield s
    await s.stop()


def _api(sim: sim_main.Simulator, ex: Exchange) -> tuple[ExchangeRest, RestClient, MarketState]:
    state = MarketState()
    clock = sim.clock.time
    # paced as the exporter paces (the whole limit here): the simulator refuses what goes beyond
    client = RestClient(ex, sim.urls(ex)[1], state, clock=clock, budget=RequestBudget(LIMITS[ex], 1.0))
    return rest_api_for(ex, client, feed_for(ex), FeedContext(ex, instruments={}, clock=clock)), client, state


@ON_SIM
@pytest.mark.parametrize("ex", list(Exchange))
@pytest.mark.parametrize("kind", ["mark", "index", "premium"])
async def test_candles_over_real_sockets_equal_the_simulators_tape(
    sim: sim_main.Simulator, ex: Exchange, kind: str
) -> None:
    api, client, state = _api(sim, ex)
    now = sim.market.now
    inst = sim.market.get(ex, SYMBOLS[ex])
    assert inst is not None
    try:
        got = await api.price_candles(kind, SYMBOLS[ex], 60, now - 2 * 3600, now)  # type: ignore[arg-type]
    finally:
        await client.aclose()
    if kind not in api.candle_kinds:
        assert got == [] and ex is Exchange.DERIBIT
        return
    truth = sim.market.tape.candles(inst, kind, 60, now - 2 * 3600, now)
    if ex is Exchange.OKX and kind == "premium":
        # OKX publishes samples (one a minute here, stamped at the minute's close): the exporter's
        # candles hold the sample that closed the previous minute
        assert [c.close for c in got[1:]] == pytest.approx(list(truth[:-1, 4])[-(len(got) - 1) :], rel=1e-9, abs=1e-15)
        return
    assert [c.open_time for c in got] == list(truth[:, 0])  # every minute of the two hours, none twice
    assert len(got) == 120  # now is mid-minute: 120 minutes open within the two hours
    tol = 1e-7 if kind == "premium" else 1e-9  # the wire's decimals
    for c, t in zip(got, truth, strict=True):
        assert (c.open, c.high, c.low, c.close) == pytest.approx(tuple(t[1:]), rel=tol, abs=1e-8)
    requests = sum(h.requests for (e, _), h in state.rest.items() if e is ex)
    assert requests >= math.ceil(121 / 1000)  # counted by the one client (fr_rest_requests_total)


@ON_SIM
@pytest.mark.parametrize("ex", [Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX])
async def test_open_interest_history_pages_back_four_hours(sim: sim_main.Simulator, ex: Exchange) -> None:
    api, client, _ = _api(sim, ex)
    now = sim.market.now
    inst = sim.market.get(ex, SYMBOLS[ex])
    assert inst is not None
    try:
        got = await api.open_interest_history(SYMBOLS[ex], 300, now - 4 * 3600, now)
    finally:
        await client.aclose()
    truth = sim.market.tape.open_interest(inst, 300, now - 4 * 3600, now)
    assert [p.time for p in got] == list(truth[:, 0]) and len(got) == 48
    assert [p.open_interest_usd for p in got] == pytest.approx(list(truth[:, 1]), rel=1e-6)


@ON_SIM
async def test_long_mark_history_pages_through_the_limits(sim: sim_main.Simulator) -> None:
    """Eight days of 5-minute marks: Binance pages ascending (499 a page), Bybit backwards (200),
    OKX from the recent endpoint into history-mark-price-candles (100 a page), Deribit in chunks."""
    now = sim.market.now
    expected = sim.market.tape.candles(sim.market.get(Exchange.BINANCE, "BTCUSDT"), "mark", 300, now - 8 * 86400, now)  # type: ignore[arg-type]
    for ex in Exchange:
        api, client, state = _api(sim, ex)
        try:
            got = await api.price_candles("mark", SYMBOLS[ex], 300, now - 8 * 86400, now)
        finally:
            await client.aclose()
        assert len(expected) >= 8 * 288  # eight days of 5-minute candles
        assert [c.open_time for c in got] == list(expected[:, 0]), ex
        paths = {p for (e, p) in state.rest if e is ex}
        assert paths == {"mark_candles"}
        assert state.rest[(ex, "mark_candles")].requests >= (2 if ex is Exchange.DERIBIT else 5)  # paged
    async with httpx.AsyncClient() as http:
        for ex in Exchange:
            truth = (await http.get(sim.urls(ex)[1] + "/_sim/truth")).json()
            assert truth["rate_limits"]["refused"] == 0, ex  # the budget kept every page within the limits


def test_new_endpoints_are_charged_in_the_limits() -> None:
    binance, okx = LIMITS[Exchange.BINANCE], LIMITS[Exchange.OKX]
    for path in ("/fapi/v1/markPriceKlines", "/fapi/v1/indexPriceKlines", "/fapi/v1/premiumIndexKlines"):
        assert binance.cost(path) == (("weight", 2),)  # limit 499: weight 2 in Binance's table
    assert dict(binance.cost("/futures/data/openInterestHist")) == {"weight": 1, "futures_data": 1}
    assert okx.cost("/api/v5/rubik/stat/contracts/open-interest-history") == (("open-interest-history", 1),)
    assert okx.bucket("open-interest-history").limit == 10 and okx.bucket("mark-price-candles").limit == 20
    assert okx.cost("/api/v5/rubik/stat/contracts/long-short-account-ratio-contract") == (("rubik", 1),)
