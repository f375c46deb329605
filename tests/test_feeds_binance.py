"""Binance USDⓈ-M parser: stream frames, REST bodies, connection plans, and what must be refused."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.feeds.binance import BinanceFeed
from exporter.feeds.binance import _fast as binance_fast
from exporter.model import (
    Exchange,
    InstrumentInfo,
    Liquidation,
    MarketUpdate,
    ParseError,
    Side,
    SubscriptionError,
)
from exporter.state import MarketState

EX = Exchange.BINANCE
FEED = BinanceFeed()
EMPTY = FeedContext(EX)


def info(sym: str, quote: str = "USDT") -> InstrumentInfo:
    return InstrumentInfo(EX, sym, sym[: -len(quote)], quote, funding_interval_s=28800.0)


def ctx(*syms: str) -> FeedContext:
    return FeedContext(EX, {s: info(s) for s in syms})


MARK: dict[str, Any] = {
    "e": "markPriceUpdate",
    "E": 1562305380000,
    "s": "BTCUSDT",
    "p": "11794.15000000",
    "i": "11784.62659091",
    "P": "11784.25641265",
    "r": "0.00038167",
    "T": 1562306400000,
}  # doc example, exchanges.md §2.2
FORCE: dict[str, Any] = {
    "e": "forceOrder",
    "E": 1568014460893,
    "o": {
        "s": "BTCUSDT",
        "S": "SELL",
        "o": "LIMIT",
        "f": "IOC",
        "q": "0.014",
        "p": "9910",
        "ap": "9910",
        "X": "FILLED",
        "l": "0.014",
        "z": "0.014",
        "T": 1568014460893,
    },
}  # doc example, exchanges.md §2.3


def wrap(data: Any, stream: str = "btcusdt@markPrice@1s") -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def test_feed_for_gives_the_binance_feed() -> None:
    assert isinstance(feed_for(EX), BinanceFeed)
    assert feed_for(EX).exchange is EX


# ---- mark price ---------------------------------------------------------------------------------


def test_mark_price_update_fields() -> None:
    (u,) = FEED.parse_ws(wrap(MARK), EMPTY)
    assert isinstance(u, MarketUpdate)
    assert (u.exchange, u.instrument) == (EX, "BTCUSDT")
    assert u.mark_price == float(MARK["p"])
    assert u.index_price == float(MARK["i"])
    assert u.funding_rate == float(MARK["r"])
    assert u.next_funding_time == MARK["T"] / 1000
    assert u.event_time == MARK["E"] / 1000
    assert u.open_interest_base is None and u.funding_interval_s is None


def test_raw_payload_without_wrapper_is_accepted() -> None:
    (u,) = FEED.parse_ws(orjson.dumps(MARK), EMPTY)
    assert u.mark_price == float(MARK["p"])


@pytest.mark.parametrize("missing", ["i", "r", "T", "E"])
def test_optional_mark_fields_absent_are_none(missing: str) -> None:
    d = {k: v for k, v in MARK.items() if k != missing}
    (u,) = FEED.parse_ws(wrap(d), EMPTY)
    attr = {"i": "index_price", "r": "funding_rate", "T": "next_funding_time", "E": "event_time"}[missing]
    assert getattr(u, attr) is None
    assert u.mark_price == float(MARK["p"])


def test_empty_funding_rate_is_none_not_zero() -> None:
    (u,) = FEED.parse_ws(wrap({**MARK, "r": ""}), EMPTY)
    assert u.funding_rate is None


@pytest.mark.parametrize("stream", ["btcusdt@markPrice@1s", "!markPrice@arr@1s"])
def test_a_zero_funding_rate_is_zero_not_none(stream: str) -> None:
    # the single stream decodes the rate as a checked float ("" kept apart), the array as a string
    d = {**MARK, "r": "0.00000000"}
    frame = wrap([d] if "@arr" in stream else d, stream)
    (u,) = FEED.parse_ws(frame, EMPTY)
    assert u.funding_rate == 0.0
    assert [u] == BinanceFeed(fast=False).parse_ws(frame, EMPTY)


def test_an_odd_value_of_an_unfollowed_symbol_keeps_the_array_on_the_typed_path() -> None:
    # the array's values are checked for followed symbols only: a zero price of another symbol
    # (a delisted one) must not fail the typed decoding of the whole array
    rows = [{**MARK, "s": "JUNKUSDT", "p": "0", "r": "7"}, {**MARK, "s": "BTCUSDT"}]
    got = binance_fast(wrap(rows, "!markPrice@arr@1s"), ctx("BTCUSDT"))
    assert [(u.instrument, u.mark_price) for u in got] == [("BTCUSDT", float(MARK["p"]))]  # type: ignore[union-attr]


def test_array_keeps_only_followed_symbols() -> None:
    rows = [{**MARK, "s": s, "p": p} for s, p in (("BTCUSDT", "1.5"), ("ETHUSDT", "2.5"), ("XRPUSDT", "3.5"))]
    frame = wrap(rows, "!markPrice@arr@1s")
    assert [u.instrument for u in FEED.parse_ws(frame, EMPTY)] == ["BTCUSDT", "ETHUSDT", "XRPUSDT"]
    got = FEED.parse_ws(frame, ctx("ETHUSDT"))
    assert [(u.instrument, u.mark_price) for u in got] == [("ETHUSDT", 2.5)]


def test_unfollowed_symbol_with_bad_number_is_skipped_before_conversion() -> None:
    rows = [{**MARK, "s": "JUNKUSDT", "p": "not a number"}, {**MARK, "s": "BTCUSDT"}]
    got = FEED.parse_ws(wrap(rows, "!markPrice@arr@1s"), ctx("BTCUSDT"))
    assert [u.instrument for u in got] == ["BTCUSDT"]


def test_unused_event_types_give_nothing() -> None:
    trade = {"e": "trade", "E": 1, "T": 1, "s": "BTCUSDT", "t": 1, "p": "1", "q": "1", "m": False}
    assert FEED.parse_ws(wrap(trade, "btcusdt@trade"), EMPTY) == []


# ---- liquidations -------------------------------------------------------------------------------


@pytest.mark.parametrize(("order_side", "position"), [("SELL", Side.LONG), ("BUY", Side.SHORT)])
def test_force_order_side_is_the_liquidated_position(order_side: str, position: Side) -> None:
    d = {**FORCE, "o": {**FORCE["o"], "S": order_side}}
    (liq,) = FEED.parse_ws(wrap(d, "!forceOrder@arr"), EMPTY)
    assert isinstance(liq, Liquidation)
    assert liq.side is position


def test_force_order_uses_filled_quantity_and_average_price() -> None:
    o = {**FORCE["o"], "q": "2.0", "z": "1.5", "p": "100", "ap": "98.5", "T": 1568014460000}
    (liq,) = FEED.parse_ws(wrap({**FORCE, "o": o}, "!forceOrder@arr"), EMPTY)
    assert liq.quantity_base == 1.5
    assert liq.price == 98.5
    assert liq.notional_usd == pytest.approx(1.5 * 98.5)
    assert liq.event_time == 1568014460.0


def test_force_order_falls_back_to_order_quantity_and_price() -> None:
    o = {k: v for k, v in FORCE["o"].items() if k not in ("z", "ap")}
    o.update(q="0.5", p="200")
    (liq,) = FEED.parse_ws(wrap({**FORCE, "o": o}, "!forceOrder@arr"), EMPTY)
    assert (liq.quantity_base, liq.price, liq.notional_usd) == (0.5, 200.0, 100.0)


def test_force_order_of_unfollowed_or_coin_quoted_symbol_is_dropped() -> None:
    frame = wrap(FORCE, "!forceOrder@arr")
    assert FEED.parse_ws(frame, ctx("ETHUSDT")) == []
    coin = {**FORCE, "o": {**FORCE["o"], "s": "ETHBTC"}}
    assert FEED.parse_ws(wrap(coin), FeedContext(EX, {"ETHBTC": info("ETHBTC", "BTC")})) == []


def test_force_order_unknown_side_is_refused() -> None:
    with pytest.raises(ParseError, match=r"o\.S"):
        FEED.parse_ws(wrap({**FORCE, "o": {**FORCE["o"], "S": "HOLD"}}), EMPTY)


# ---- control frames and refusals ----------------------------------------------------------------


def test_subscribe_ack_gives_nothing() -> None:
    assert FEED.parse_ws(b'{"result":null,"id":1}', EMPTY) == []


@pytest.mark.parametrize(
    "frame",
    [b'{"error":{"code":2,"msg":"Invalid request: unknown stream"},"id":1}', b'{"code":2,"msg":"Invalid request"}'],
)
def test_error_frame_is_a_subscription_error(frame: bytes) -> None:
    (err,) = FEED.parse_ws(frame, EMPTY)
    assert isinstance(err, SubscriptionError)
    assert "Invalid request" in err.message


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


BAD_FRAMES: list[tuple[str, bytes, str]] = [
    ("invalid json", b"{not json", "invalid JSON"),
    ("truncated", wrap(MARK)[:60], "invalid JSON"),
    ("empty", b"", "invalid JSON"),
    ("missing mark price", wrap(_without(MARK, "p")), "`p`"),
    ("missing symbol", wrap(_without(MARK, "s")), "'s'"),
    ("missing event type", wrap(_without(MARK, "e")), "'e'"),
    ("NaN mark", wrap({**MARK, "p": "NaN"}), "'p'"),
    ("inf index", wrap({**MARK, "i": "inf"}), "'i'"),
    ("-Infinity rate", wrap({**MARK, "r": "-Infinity"}), "'r'"),
    ("overflowing rate", wrap({**MARK, "r": "1e999"}), "'r'"),
    ("text mark", wrap({**MARK, "p": "12,5"}), "'p'"),
    ("bool mark", wrap({**MARK, "p": True}), "$.p"),
    ("list index", wrap({**MARK, "i": [1]}), "$.i"),
    ("symbol not a string", wrap({**MARK, "s": 5}), "$.s"),
    ("data not an object", wrap("hello"), "binance"),
    ("NaN liquidation qty", wrap({**FORCE, "o": {**FORCE["o"], "z": "nan", "q": "nan"}}), "'o."),
    ("liquidation without order", wrap(_without(FORCE, "o")), "'o'"),
    ("unknown control frame", b'{"hello":1}', "unknown frame"),
]


@pytest.mark.parametrize(("frame", "needle"), [(f, n) for _, f, n in BAD_FRAMES], ids=[c for c, _, _ in BAD_FRAMES])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_malformed_frames_raise_parse_error(frame: bytes, needle: str, fast: bool) -> None:
    with pytest.raises(ParseError) as info_:
        BinanceFeed(fast=fast).parse_ws(frame, EMPTY)
    assert needle in str(info_.value)
    assert str(info_.value).startswith("binance")


def test_str_frames_are_accepted_like_bytes() -> None:
    assert FEED.parse_ws(wrap(MARK).decode(), EMPTY) == FEED.parse_ws(wrap(MARK), EMPTY)


# ---- connection plans ---------------------------------------------------------------------------


def _streams(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query)["streams"][0].split("/")


def test_plan_per_symbol_streams_with_liquidations_on_the_same_connection() -> None:
    (plan,) = FEED.ws_plans("wss://fstream.binance.com", [info("BTCUSDT"), info("ETHUSDT")])
    assert plan.url.startswith("wss://fstream.binance.com/market/stream?streams=")
    assert _streams(plan.url) == ["btcusdt@markPrice@1s", "ethusdt@markPrice@1s", "!forceOrder@arr"]
    assert plan.ping_frame is None and plan.subscribe == ()
    assert plan.max_lifetime_s is not None and 23 * 3600 <= plan.max_lifetime_s < 24 * 3600
    assert plan.silence_timeout_s >= 10


def test_plan_many_symbols_uses_the_all_market_array() -> None:
    plans = FEED.ws_plans("ws://127.0.0.1:18001/", [info(f"C{n}USDT") for n in range(60)])
    assert len(plans) == 1
    assert plans[0].url == "ws://127.0.0.1:18001/market/stream?streams=!markPrice@arr@1s/!forceOrder@arr"


def test_plan_splits_connections_at_200_streams() -> None:
    feed = BinanceFeed(all_symbols_threshold=10_000)
    plans = feed.ws_plans("ws://h", [info(f"C{n}USDT") for n in range(450)])
    counts = [len(_streams(p.url)) for p in plans]
    assert all(c <= 200 for c in counts)
    assert sum(counts) == 451  # every symbol once, plus one liquidation stream
    assert [s for p in plans for s in _streams(p.url)].count("!forceOrder@arr") == 1
    assert len({p.stream for p in plans}) == len(plans)  # distinct labels for fr_stream_*


def test_no_heartbeat_setup() -> None:
    assert FEED.heartbeat_setup() == ()


# ---- REST bodies (documented examples, exchanges.md §2.4-2.5) -------------------------------------


def test_funding_history_oldest_first_with_interval_and_special_rates_left_out() -> None:
    body = orjson.dumps(
        [
            {"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": 1570636800000, "markPrice": "1"},
            {"symbol": "BTCUSDT", "fundingRate": "-0.03750000", "fundingTime": 1570608000000, "markPrice": "1"},
            {"symbol": "BTCUSDT", "fundingRate": "0.5", "fundingTime": 1570610000000, "rateType": "Special"},
        ]
    )
    got = FEED.parse_funding_history(body, EMPTY)
    assert [(s.funding_time, s.rate) for s in got] == [(1570608000.0, -0.0375), (1570636800.0, 0.0001)]
    assert all(s.interval_s == 28800.0 for s in got)


def test_funding_info_caps_floors_and_interval() -> None:
    body = b'[{"symbol":"BLZUSDT","adjustedFundingRateCap":"0.02500000","adjustedFundingRateFloor":"-0.02500000","fundingIntervalHours":4,"disclaimer":false}]'  # noqa: E501
    (u,) = FEED.parse_funding_info(body)
    assert (u.instrument, u.funding_cap, u.funding_floor, u.funding_interval_s) == ("BLZUSDT", 0.025, -0.025, 14400.0)
    state = MarketState(clock=lambda: 1000.0)
    state.register(info("BLZUSDT"))
    state.apply(u)
    st = state.instruments[(EX, "BLZUSDT")]
    assert (st.funding_cap, st.funding_floor, st.interval_s) == (0.025, -0.025, 14400.0)


def test_open_interest_is_base_coin() -> None:
    (u,) = FEED.parse_open_interest(b'{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}', EMPTY)
    assert (u.instrument, u.open_interest_base, u.open_interest_usd, u.event_time) == (
        "BTCUSDT",
        10659.509,
        None,
        1589437530.011,
    )


def test_long_short_ratio_accepts_string_and_integer_timestamps() -> None:
    body = orjson.dumps(
        [
            {"symbol": "BTCUSDT", "longShortRatio": "1.8105", "longAccount": "0.6442", "shortAccount": "0.3558",
             "timestamp": 1583139900000},
            {"symbol": "BTCUSDT", "longShortRatio": "1.5", "longAccount": "0.6", "shortAccount": "0.4",
             "timestamp": "1583139600000"},
        ]
    )  # fmt: skip
    got = FEED.parse_long_short_ratio(body, EMPTY)
    assert [(r.event_time, r.ratio) for r in got] == [(1583139600.0, 1.5), (1583139900.0, 1.8105)]


def test_insurance_balance_one_pool_and_all_pools() -> None:
    group = {
        "symbols": ["BTCUSDT", "ETHUSDT", "BNBUSDT"],
        "assets": [
            {"asset": "USDC", "marginBalance": "299999998.6497832", "updateTime": 1745366402000},
            {"asset": "USDT", "marginBalance": "793930579.315848", "updateTime": 1745366402000},
            {"asset": "BNB", "marginBalance": "100", "updateTime": 1745366402000},
        ],
    }
    one = FEED.parse_insurance_fund(orjson.dumps(group), EMPTY)
    assert {(f.pool, f.balance_usd) for f in one} == {
        ("USDC:BNBUSDT", 299999998.6497832),
        ("USDT:BNBUSDT", 793930579.315848),
    }
    other = {"symbols": ["XRPUSDT"], "assets": [{"asset": "USDT", "marginBalance": "5", "updateTime": 1745366402000}]}
    every = FEED.parse_insurance_fund(orjson.dumps([group, other]), EMPTY)
    assert {f.pool for f in every} == {"USDC:BNBUSDT", "USDT:BNBUSDT", "USDT:XRPUSDT"}


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("parse_funding_history", b'[{"symbol":"BTCUSDT","fundingRate":"x","fundingTime":1}]'),
        ("parse_open_interest", b'{"symbol":"BTCUSDT"}'),
        ("parse_open_interest", b'{"symbol":"BTCUSDT","openInterest":"NaN"}'),
        ("parse_long_short_ratio", b'{"code":-1121,"msg":"Invalid symbol."}'),
        ("parse_insurance_fund", b"[1, 2"),
    ],
)
def test_bad_rest_bodies_raise(method: str, body: bytes) -> None:
    with pytest.raises(ParseError, match=r"^binance"):
        getattr(FEED, method)(body, EMPTY)


def test_bad_exchange_info_raises() -> None:
    with pytest.raises(ParseError, match="symbols"):
        FEED.parse_instruments(b'{"timezone":"UTC"}')
