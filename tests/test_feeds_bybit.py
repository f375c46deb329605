"""Bybit v5 linear parser: tickers snapshot/delta, liquidations, REST bodies, plans, refusals."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.feeds.bybit import BybitFeed
from exporter.model import (
    Exchange,
    InstrumentInfo,
    Liquidation,
    MarketUpdate,
    ParseError,
    Rejected,
    Side,
    SubscriptionError,
)
from exporter.state import MarketState

EX = Exchange.BYBIT
FEED = BybitFeed()
EMPTY = FeedContext(EX)

# doc example (linear perpetual, 2025-10), exchanges.md §3.2
SNAPSHOT: dict[str, Any] = {
    "topic": "tickers.BTCUSDT",
    "type": "snapshot",
    "data": {
        "symbol": "BTCUSDT",
        "tickDirection": "MinusTick",
        "lastPrice": "66666.60",
        "markPrice": "66666.60",
        "indexPrice": "115418.19",
        "openInterest": "492373.72",
        "openInterestValue": "32824881841.75",
        "fundingIntervalHour": "8",
        "fundingCap": "0.005",
        "nextFundingTime": "1760342400000",
        "fundingRate": "-0.005",
        "bid1Price": "66666.60",
        "preOpenPrice": "",
    },
    "cs": 9532239429,
    "ts": 1760325052630,
}


def frame(data: dict[str, Any], **top: Any) -> bytes:
    return orjson.dumps({**SNAPSHOT, **top, "data": data})


def ticker(**fields: Any) -> bytes:
    return frame({**SNAPSHOT["data"], **fields})


def test_feed_for_gives_the_bybit_feed() -> None:
    assert isinstance(feed_for(EX), BybitFeed)


def test_snapshot_fields() -> None:
    (u,) = FEED.parse_ws(orjson.dumps(SNAPSHOT), EMPTY)
    d = SNAPSHOT["data"]
    assert isinstance(u, MarketUpdate)
    assert u.instrument == "BTCUSDT"
    assert u.mark_price == float(d["markPrice"])
    assert u.index_price == float(d["indexPrice"])
    assert u.funding_rate == float(d["fundingRate"])
    assert u.next_funding_time == int(d["nextFundingTime"]) / 1000
    assert u.funding_interval_s == 8 * 3600
    assert (u.funding_cap, u.funding_floor) == (0.005, -0.005)
    # openInterest / openInterestValue count both sides (exchanges.md §3.2): halved
    assert u.open_interest_base == float(d["openInterest"]) / 2
    assert u.open_interest_usd == float(d["openInterestValue"]) / 2
    assert u.event_time == SNAPSHOT["ts"] / 1000


def test_delta_sets_only_the_fields_present() -> None:
    (u,) = FEED.parse_ws(frame({"symbol": "BTCUSDT", "fundingRate": "0.0002", "bid1Price": "1"}, type="delta"), EMPTY)
    assert u.funding_rate == 0.0002
    absent = ("mark_price", "index_price", "next_funding_time", "funding_interval_s", "funding_cap",
              "open_interest_base", "open_interest_usd")  # fmt: skip
    assert all(getattr(u, a) is None for a in absent)


def test_delta_leaves_state_unchanged_for_absent_fields() -> None:
    state = MarketState(clock=lambda: 1_760_325_053.0)
    state.register(InstrumentInfo(EX, "BTCUSDT", "BTC", "USDT"))
    ctx = FeedContext(EX, {"BTCUSDT": state.instruments[(EX, "BTCUSDT")].info})
    state.apply_many(FEED.parse_ws(orjson.dumps(SNAPSHOT), ctx))
    state.apply_many(FEED.parse_ws(frame({"symbol": "BTCUSDT", "indexPrice": "100.5"}, type="delta"), ctx))
    st = state.instruments[(EX, "BTCUSDT")]
    assert st.mark_price == float(SNAPSHOT["data"]["markPrice"])
    assert st.index_price == 100.5
    assert st.funding_rate == float(SNAPSHOT["data"]["fundingRate"])
    assert st.open_interest_base == float(SNAPSHOT["data"]["openInterest"]) / 2  # both sides, halved


@pytest.mark.parametrize("field", ["fundingRate", "nextFundingTime", "fundingIntervalHour", "fundingCap"])
def test_empty_strings_mean_not_given(field: str) -> None:
    (u,) = FEED.parse_ws(ticker(**{field: ""}), EMPTY)
    attr = {"fundingRate": "funding_rate", "nextFundingTime": "next_funding_time",
            "fundingIntervalHour": "funding_interval_s", "fundingCap": "funding_cap"}[field]  # fmt: skip
    assert getattr(u, attr) is None


def test_single_side_open_interest_preferred() -> None:
    (u,) = FEED.parse_ws(ticker(singleOpenInterest="246186.86", singleOpenInterestValue="16412440920.87"), EMPTY)
    assert (u.open_interest_base, u.open_interest_usd) == (246186.86, 16412440920.87)


def test_delta_without_single_side_twin_does_not_double_open_interest() -> None:
    # A delta may carry openInterestValue (it moves with the mark price) without singleOpenInterestValue:
    # the both-sides value must not replace the single-side one (it would double the USD open interest).
    state = MarketState(clock=lambda: 1_760_325_053.0)
    state.register(InstrumentInfo(EX, "BTCUSDT", "BTC", "USDT"))
    ctx = FeedContext(EX, {"BTCUSDT": state.instruments[(EX, "BTCUSDT")].info})
    snap = dict(SNAPSHOT, data=dict(SNAPSHOT["data"], singleOpenInterest="246186.86",
                                    singleOpenInterestValue="16412440920.87"))  # fmt: skip
    state.apply_many(FEED.parse_ws(orjson.dumps(snap), ctx))
    delta = frame({"symbol": "BTCUSDT", "openInterestValue": "32824881900.00"}, type="delta")
    state.apply_many(FEED.parse_ws(delta, ctx))
    st = state.instruments[(EX, "BTCUSDT")]
    assert st.open_interest_base == 246186.86
    assert st.open_interest_usd == pytest.approx(16412440950.0)


def test_inverse_ticker_open_interest_counts_usd() -> None:
    (u,) = FEED.parse_ws(
        frame(
            {"symbol": "BTCUSD", "openInterest": "449736676", "openInterestValue": "15747.08"}, topic="tickers.BTCUSD"
        ),
        EMPTY,
    )
    assert (u.open_interest_usd, u.open_interest_base) == (449736676.0 / 2, 15747.08 / 2)  # both sides, halved


def test_unfollowed_symbol_gives_nothing() -> None:
    ctx = FeedContext(EX, {"ETHUSDT": InstrumentInfo(EX, "ETHUSDT", "ETH", "USDT")})
    assert FEED.parse_ws(orjson.dumps(SNAPSHOT), ctx) == []


# ---- liquidations -------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "position"), [("Buy", Side.LONG), ("Sell", Side.SHORT)])
def test_all_liquidation_side_is_the_position_side(side: str, position: Side) -> None:
    msg = {
        "topic": "allLiquidation.BTCUSDT",
        "type": "snapshot",
        "ts": 1740480207578,
        "data": [
            {"T": 1740480207110, "s": "BTCUSDT", "S": side, "v": "0.5", "p": "90000"},
            {"T": 1740480207111, "s": "BTCUSDT", "S": side, "v": "0.25", "p": "89000"},
        ],
    }
    got = FEED.parse_ws(orjson.dumps(msg), EMPTY)
    assert all(isinstance(x, Liquidation) and x.side is position for x in got)
    assert [(x.quantity_base, x.price, x.notional_usd, x.event_time) for x in got] == [
        (0.5, 90000.0, 45000.0, 1740480207.11),
        (0.25, 89000.0, 22250.0, 1740480207.111),
    ]


def test_liquidation_of_unfollowed_symbol_is_dropped() -> None:
    msg = {"topic": "allLiquidation.X", "data": [{"T": 1, "s": "XUSDT", "S": "Buy", "v": "1", "p": "1"}]}
    ctx = FeedContext(EX, {"BTCUSDT": InstrumentInfo(EX, "BTCUSDT", "BTC", "USDT")})
    assert FEED.parse_ws(orjson.dumps(msg), ctx) == []


# ---- control frames and refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    "frame_",
    [
        b'{"success":true,"ret_msg":"","conn_id":"3cd84cb1","req_id":"","op":"subscribe"}',
        b'{"success":true,"ret_msg":"pong","conn_id":"3cd84cb1","req_id":"","op":"ping"}',
        b'{"op":"pong","args":["1700000000000"],"conn_id":"x"}',
    ],
)
def test_acks_and_pongs_give_nothing(frame_: bytes) -> None:
    assert FEED.parse_ws(frame_, EMPTY) == []


def test_refused_subscription() -> None:
    (err,) = FEED.parse_ws(
        b'{"success":false,"ret_msg":"error:handler not found,topic:tickers.NOPE","conn_id":"x","op":"subscribe"}',
        EMPTY,
    )
    assert isinstance(err, SubscriptionError)
    assert "tickers.NOPE" in err.message


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


LIQ = {"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "1"}
BAD_FRAMES: list[tuple[str, bytes, str]] = [
    ("invalid json", b'{"topic": tickers', "invalid JSON"),
    ("truncated", orjson.dumps(SNAPSHOT)[:100], "invalid JSON"),
    ("missing data", orjson.dumps(_without(SNAPSHOT, "data")), "'data'"),
    ("missing symbol", frame(_without(SNAPSHOT["data"], "symbol")), "symbol"),
    ("NaN mark", ticker(markPrice="NaN"), "markPrice"),
    ("inf index", ticker(indexPrice="inf"), "indexPrice"),
    ("-inf rate", ticker(fundingRate="-inf"), "fundingRate"),
    ("overflowing open interest", ticker(openInterest="1e400"), "openInterest"),
    ("text mark", ticker(markPrice="abc"), "markPrice"),
    ("bool rate", ticker(fundingRate=True), "fundingRate"),
    ("object next time", ticker(nextFundingTime={}), "nextFundingTime"),
    ("bad ts", frame(SNAPSHOT["data"], ts="soon"), "'ts'"),
    ("symbol not a string", ticker(symbol=7), "symbol"),
    ("liquidation data not a list", orjson.dumps({"topic": "allLiquidation.B", "data": LIQ}), "array"),
    ("no topic, no op", b'{"hello":"world"}', "topic"),
    ("not an object", b"[1,2,3]", "bybit"),
]


@pytest.mark.parametrize(("frame_", "needle"), [(f, n) for _, f, n in BAD_FRAMES], ids=[c for c, _, _ in BAD_FRAMES])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_malformed_frames_raise_parse_error(frame_: bytes, needle: str, fast: bool) -> None:
    with pytest.raises(ParseError) as exc:
        BybitFeed(fast=fast).parse_ws(frame_, EMPTY)
    assert needle in str(exc.value)
    assert str(exc.value).startswith("bybit")


GOOD_LIQ = {**LIQ, "T": 1740480207110}
BAD_LIQS: list[tuple[str, dict[str, Any], str]] = [
    ("liquidation NaN size", {**GOOD_LIQ, "v": "nan"}, "'v'"),
    ("liquidation bad side", {**GOOD_LIQ, "S": "Up"}, "'S'"),
    ("liquidation missing price", _without(GOOD_LIQ, "p"), "'p'"),
    ("liquidation at time 1 ms", LIQ, "'T'"),
]


@pytest.mark.parametrize(("bad", "needle"), [(b, n) for _, b, n in BAD_LIQS], ids=[c for c, _, _ in BAD_LIQS])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_a_bad_liquidation_is_rejected_alone(bad: dict[str, Any], needle: str, fast: bool) -> None:
    """One bad element of an allLiquidation batch is dropped alone; the others count."""
    msg = {"topic": "allLiquidation.BTCUSDT", "data": [GOOD_LIQ, bad, GOOD_LIQ]}
    out = BybitFeed(fast=fast).parse_ws(orjson.dumps(msg), EMPTY)
    assert [type(r) for r in out] == [Liquidation, Rejected, Liquidation]
    rejected = out[1]
    assert isinstance(rejected, Rejected) and needle in rejected.message and rejected.message.startswith("bybit")


# ---- plans --------------------------------------------------------------------------------------


def _infos(n: int) -> list[InstrumentInfo]:
    return [InstrumentInfo(EX, f"C{k:04d}USDT", f"C{k:04d}", "USDT") for k in range(n)]


def test_plan_subscribes_tickers_and_liquidations_in_chunks() -> None:
    (plan,) = FEED.ws_plans("ws://127.0.0.1:18002/", _infos(12))
    assert plan.url == "ws://127.0.0.1:18002/v5/public/linear"
    msgs = [orjson.loads(s) for s in plan.subscribe]
    assert all(m["op"] == "subscribe" and len(m["args"]) <= 10 for m in msgs)
    args = [a for m in msgs for a in m["args"]]
    assert args[:2] == ["tickers.C0000USDT", "allLiquidation.C0000USDT"]
    assert len(args) == 24 and len(set(args)) == 24
    assert orjson.loads(plan.ping_frame or "") == {"op": "ping"}
    assert plan.ping_interval_s == 20.0


def test_plan_splits_connections_by_args_length() -> None:
    plans = FEED.ws_plans("wss://stream.bybit.com", _infos(1200))
    assert len(plans) > 1
    for p in plans:
        args = [a for s in p.subscribe for a in orjson.loads(s)["args"]]
        assert len(orjson.dumps(args)) <= 21_000
    every = [a for p in plans for s in p.subscribe for a in orjson.loads(s)["args"]]
    assert len(every) == 2400
    assert len({p.stream for p in plans}) == len(plans)


# ---- REST (documented examples, exchanges.md §3.4-3.5) --------------------------------------------


def ok(result: Any) -> bytes:
    return orjson.dumps({"retCode": 0, "retMsg": "OK", "result": result, "time": 1})


def test_instruments_info_interval_is_minutes() -> None:
    body = ok(
        {
            "category": "linear",
            "list": [
                {"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
                 "quoteCoin": "USDT", "fundingInterval": 480, "upperFundingRate": "0.00375",
                 "lowerFundingRate": "-0.00375"},
                {"symbol": "BTC-26DEC25", "contractType": "LinearFutures", "status": "Trading", "baseCoin": "BTC",
                 "quoteCoin": "USDT", "fundingInterval": 0},
                {"symbol": "OLDUSDT", "contractType": "LinearPerpetual", "status": "Closed", "baseCoin": "OLD",
                 "quoteCoin": "USDT", "fundingInterval": 60},
            ],
        }
    )  # fmt: skip
    (i,) = FEED.parse_instruments(body)
    assert (i.instrument, i.base, i.quote, i.inverse) == ("BTCUSDT", "BTC", "USDT", False)
    assert (i.funding_interval_s, i.funding_cap, i.funding_floor) == (28800.0, 0.00375, -0.00375)


def test_open_interest_newest_row() -> None:
    body = ok(
        {
            "symbol": "BTCUSDT",
            "category": "linear",
            "list": [
                {"openInterest": "461134384.00", "timestamp": "1669571400000"},
                {"openInterest": "461134292.00", "timestamp": "1669571100000"},
            ],
            "nextPageCursor": "",
        }
    )
    (u,) = FEED.parse_open_interest(body, EMPTY)
    assert (u.open_interest_base, u.event_time) == (461134384.0 / 2, 1669571400.0)  # "sum of both sides"


def test_account_ratio_is_buy_over_sell() -> None:
    body = ok({"list": [{"symbol": "BTCUSDT", "buyRatio": "0.49", "sellRatio": "0.51", "timestamp": "1696262400000"}]})
    (r,) = FEED.parse_long_short_ratio(body, EMPTY)
    assert (r.instrument, r.event_time) == ("BTCUSDT", 1696262400.0)
    assert r.ratio == pytest.approx(0.49 / 0.51)


def test_insurance_pools() -> None:
    body = ok(
        {
            "updatedTime": "1714003200000",
            "list": [
                {"coin": "USDT", "symbols": "BTCUSDT,ETHUSDT,SOLUSDT", "balance": "1000", "value": "1000.5"},
                {"coin": "USDT", "symbols": "PEPEUSDT", "balance": "5", "value": "5.01"},
                {"coin": "BTC", "symbols": "BTCUSD", "balance": "2", "value": "190000"},
            ],
        }
    )
    got = FEED.parse_insurance_fund(body, EMPTY)
    assert {(f.pool, f.balance_usd) for f in got} == {
        ("USDT", 1000.5),
        ("USDT:PEPEUSDT", 5.01),
        ("BTC:BTCUSD", 190000.0),
    }
    assert all(f.event_time == 1714003200.0 for f in got)


@pytest.mark.parametrize(
    "method", ["parse_funding_history", "parse_open_interest", "parse_long_short_ratio", "parse_insurance_fund"]
)
def test_ret_code_error_names_the_exchange_message(method: str) -> None:
    body = b'{"retCode":10001,"retMsg":"params error: symbol invalid","result":{},"time":1}'
    with pytest.raises(ParseError, match="symbol invalid"):
        getattr(FEED, method)(body, EMPTY)


def test_ret_code_error_on_instruments() -> None:
    with pytest.raises(ParseError, match="Too many visits"):
        FEED.parse_instruments(b'{"retCode":10006,"retMsg":"Too many visits!","result":{}}')


def test_funding_history_bad_rate_raises() -> None:
    body = ok({"list": [{"symbol": "BTCUSDT", "fundingRate": "inf", "fundingRateTimestamp": "1"}]})
    with pytest.raises(ParseError, match="fundingRate"):
        FEED.parse_funding_history(body, EMPTY)


# The deprecated liquidation.{symbol} topic as recorded (ws_liquidation_v5_tardis.jsonl): a linear symbol
# with its data first, an inverse one with its topic first (the general decoding)
OLD_LIQ_LINEAR = (
    b'{"data":{"price":"0.03803","side":"Buy","size":"1637","symbol":"GALAUSDT","updatedTime":1673251091822},'
    b'"topic":"liquidation.GALAUSDT","ts":1673251091822,"type":"snapshot"}'
)
OLD_LIQ_INVERSE = (
    b'{"topic":"liquidation.XRPUSD","type":"snapshot","ts":1680673944093,"data":{"updatedTime":1680673944093,'
    b'"symbol":"XRPUSD","side":"Sell","size":"6949","price":"0.5149"}}'
)
OLD_LIQ_INFOS = {
    "GALAUSDT": InstrumentInfo(EX, "GALAUSDT", "GALA", "USDT"),
    "XRPUSD": InstrumentInfo(EX, "XRPUSD", "XRP", "USD", inverse=True),
}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_deprecated_liquidation_topic_of_followed_symbols_with_a_clock(fast: bool) -> None:
    """The exporter's case (followed symbols, a clock): a linear size counts coins, an inverse one USD;
    a time outside the clock's bounds is refused on both paths."""
    feed = BybitFeed(fast=fast)
    ctx = FeedContext(EX, OLD_LIQ_INFOS, clock=lambda: 1_680_700_000.0)
    (a,) = feed.parse_ws(OLD_LIQ_LINEAR, ctx)
    assert isinstance(a, Liquidation)
    assert (a.instrument, a.side, a.price, a.quantity_base) == ("GALAUSDT", Side.LONG, 0.03803, 1637.0)
    assert a.event_time == 1673251091822 / 1000 and a.notional_usd == pytest.approx(62.25511)
    (b,) = feed.parse_ws(OLD_LIQ_INVERSE, ctx)
    assert isinstance(b, Liquidation)
    assert (b.instrument, b.side, b.price, b.notional_usd) == ("XRPUSD", Side.SHORT, 0.5149, 6949.0)
    assert b.event_time == 1680673944093 / 1000 and b.quantity_base == pytest.approx(6949 / 0.5149)
    years_on = FeedContext(EX, OLD_LIQ_INFOS, clock=lambda: 1_680_700_000.0 + 6 * 366 * 86400.0)
    for frame_ in (OLD_LIQ_LINEAR, OLD_LIQ_INVERSE):
        with pytest.raises(ParseError):
            feed.parse_ws(frame_, years_on)
