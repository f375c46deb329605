"""Deribit parser: JSON-RPC notifications, heartbeat, liquidation flags, REST bodies, plans."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.feeds.deribit import DeribitFeed
from exporter.model import (
    Exchange,
    HeartbeatRequest,
    InstrumentInfo,
    Liquidation,
    MarketUpdate,
    ParseError,
    Rejected,
    Side,
    SubscriptionError,
)
from exporter.state import MarketState

EX = Exchange.DERIBIT
FEED = DeribitFeed()
EMPTY = FeedContext(EX)
T_MS = 1654340303741  # a plausible time (timestamps are checked against their domain)
INVERSE = InstrumentInfo(EX, "BTC-PERPETUAL", "BTC", "USD", contract_size=10.0, inverse=True, funding_interval_s=28800)
LINEAR = InstrumentInfo(EX, "ETH_USDC-PERPETUAL", "ETH", "USDC", contract_size=1.0, funding_interval_s=28800)
CTX = FeedContext(EX, {i.instrument: i for i in (INVERSE, LINEAR)})

TICKER: dict[str, Any] = {
    "timestamp": 1765541474086,
    "state": "open",
    "stats": {"high": 93612.0, "low": 89277.5},
    "index_price": 92263.55,
    "instrument_name": "BTC-PERPETUAL",
    "last_price": 92283.5,
    "open_interest": 1132329370.0,
    "mark_price": 92281.78,
    "current_funding": 0.0,
    "funding_8h": 1.742e-05,
}


def note(channel: str, data: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


def ticker(**fields: Any) -> bytes:
    d = {**TICKER, **fields}
    return note(f"ticker.{d['instrument_name']}.100ms", d)


def trade(**fields: Any) -> dict[str, Any]:
    base = {"trade_seq": 1, "trade_id": "66460463", "timestamp": 1584058044032, "tick_direction": 3,
            "price": 4469.5, "instrument_name": "BTC-PERPETUAL", "index_price": 4805.41, "direction": "sell",
            "amount": 1120}  # fmt: skip
    return {**base, **fields}


def test_feed_for_gives_the_deribit_feed() -> None:
    assert isinstance(feed_for(EX), DeribitFeed)


def test_market_update_field_order_used_positionally() -> None:
    # The hot-path parsers build MarketUpdate with positional arguments: pin the order they rely on.
    names = list(MarketUpdate.__struct_fields__)
    assert names[:18] == [
        "exchange", "instrument", "event_time", "mark_price", "index_price", "funding_rate", "next_funding_time",
        "funding_interval_s", "funding_cap", "funding_floor", "funding_rate_8h", "premium", "open_interest_base",
        "open_interest_usd", "confirms_ticker", "settle_price_estimate", "snapshot", "handle",
    ]  # fmt: skip


def test_ticker_inverse_perpetual() -> None:
    (u,) = FEED.parse_ws(ticker(), EMPTY)
    assert isinstance(u, MarketUpdate)
    assert (u.mark_price, u.index_price) == (TICKER["mark_price"], TICKER["index_price"])
    assert u.funding_rate == u.funding_rate_8h == TICKER["funding_8h"]
    assert u.funding_interval_s == 28800
    assert u.next_funding_time is None
    assert (u.open_interest_usd, u.open_interest_base) == (TICKER["open_interest"], None)
    assert u.event_time == TICKER["timestamp"] / 1000


def test_ticker_linear_perpetual_open_interest_is_coin() -> None:
    (u,) = FEED.parse_ws(ticker(instrument_name="ETH_USDC-PERPETUAL", open_interest=1500), CTX)
    assert (u.open_interest_base, u.open_interest_usd) == (1500.0, None)


def test_integer_numbers_are_accepted_as_floats() -> None:
    (u,) = FEED.parse_ws(ticker(mark_price=92281, current_funding=0, funding_8h=0), EMPTY)
    assert (u.mark_price, u.funding_rate) == (92281.0, 0.0)
    assert type(u.mark_price) is float


def test_ticker_in_state_gives_hourly_observations() -> None:
    state = MarketState(clock=lambda: 1765541475.0)
    state.register(INVERSE)
    state.apply_many(FEED.parse_ws(ticker(), CTX))
    st = state.instruments[(EX, "BTC-PERPETUAL")]
    assert st.funding_rate == TICKER["funding_8h"] and st.interval_s == 28800
    assert [r for _, r in st.settlement_window()] == [TICKER["funding_8h"]]


@pytest.mark.parametrize(
    ("flag", "direction", "sides"),
    [
        ("T", "sell", [Side.LONG]),  # the taker sold: its long was liquidated
        ("T", "buy", [Side.SHORT]),
        ("M", "buy", [Side.LONG]),  # the maker sold to a buyer: the maker's long was liquidated
        ("M", "sell", [Side.SHORT]),
        ("MT", "sell", [Side.LONG, Side.SHORT]),
        ("MT", "buy", [Side.SHORT, Side.LONG]),
    ],
)
def test_liquidation_flags(flag: str, direction: str, sides: list[Side]) -> None:
    got = FEED.parse_ws(note("trades.BTC-PERPETUAL.100ms", [trade(liquidation=flag, direction=direction)]), EMPTY)
    assert all(isinstance(x, Liquidation) for x in got)
    assert [x.side for x in got] == sides


def test_liquidation_amounts() -> None:
    (inv,) = FEED.parse_ws(note("trades.BTC-PERPETUAL.100ms", [trade(liquidation="T")]), CTX)
    assert inv.notional_usd == 1120.0  # inverse: amount counts USD
    assert inv.quantity_base == pytest.approx(1120 / 4469.5)
    assert (inv.price, inv.event_time) == (4469.5, 1584058044.032)
    lin_trade = trade(liquidation="M", instrument_name="ETH_USDC-PERPETUAL", amount=2.5, price=3000.0)
    (lin,) = FEED.parse_ws(note("trades.ETH_USDC-PERPETUAL.100ms", [lin_trade]), CTX)
    assert (lin.quantity_base, lin.notional_usd) == (2.5, 7500.0)


def test_trades_without_liquidation_give_nothing() -> None:
    assert FEED.parse_ws(note("trades.BTC-PERPETUAL.100ms", [trade(), trade(amount=10)]), EMPTY) == []


def test_unfollowed_instrument_gives_nothing() -> None:
    ctx = FeedContext(EX, {"ETH_USDC-PERPETUAL": LINEAR})
    assert FEED.parse_ws(ticker(), ctx) == []
    assert FEED.parse_ws(note("trades.BTC-PERPETUAL.100ms", [trade(liquidation="T")]), ctx) == []


# ---- heartbeat, responses, errors ---------------------------------------------------------------


def test_heartbeat_setup_requests_an_interval_between_10_and_30_s() -> None:
    (frame,) = FEED.heartbeat_setup()
    req = orjson.loads(frame)
    assert req["jsonrpc"] == "2.0" and req["method"] == "public/set_heartbeat"
    assert 10 <= req["params"]["interval"] <= 30


def test_test_request_is_answered_with_public_test() -> None:
    (hb,) = FEED.parse_ws(b'{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}', EMPTY)
    assert isinstance(hb, HeartbeatRequest)
    reply = orjson.loads(hb.reply)
    assert (reply["jsonrpc"], reply["method"]) == ("2.0", "public/test")
    assert "id" in reply


@pytest.mark.parametrize(
    "frame",
    [
        b'{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}',
        b'{"jsonrpc":"2.0","id":100,"result":["ticker.BTC-PERPETUAL.100ms"],"usIn":1,"usOut":2,"usDiff":1}',
        b'{"jsonrpc":"2.0","id":1,"result":"ok"}',
        b'{"jsonrpc":"2.0","id":2,"result":{"version":"1.2.26"}}',
        note("book.BTC-PERPETUAL.100ms", {"bids": []}),
    ],
)
def test_control_frames_give_nothing(frame: bytes) -> None:
    assert FEED.parse_ws(frame, EMPTY) == []


def test_error_response_is_a_subscription_error() -> None:
    frame = b'{"jsonrpc":"2.0","id":100,"error":{"code":11050,"message":"bad_request","data":{"param":"channels"}}}'
    (err,) = FEED.parse_ws(frame, EMPTY)
    assert isinstance(err, SubscriptionError)
    assert "11050" in err.message and "bad_request" in err.message


BAD_FRAMES: list[tuple[str, bytes, str]] = [
    ("invalid json", b'{"jsonrpc":"2.0",', "invalid JSON"),
    ("truncated", ticker()[:150], "invalid JSON"),
    ("NaN literal", ticker().replace(b"92281.78", b"NaN"), "invalid JSON"),
    ("overflowing number", ticker().replace(b"92281.78", b"1e400"), "invalid JSON"),
    ("missing mark", note("ticker.BTC-PERPETUAL.100ms", {k: v for k, v in TICKER.items() if k != "mark_price"}),
     "mark_price"),
    ("missing timestamp", note("ticker.X.100ms", {k: v for k, v in TICKER.items() if k != "timestamp"}),
     "timestamp"),
    ("string mark", ticker(mark_price="92281.78"), "mark_price"),
    ("NaN string rate", ticker(funding_8h="NaN"), "funding_8h"),
    ("bool rate", ticker(funding_8h=True), "funding_8h"),
    ("list open interest", ticker(open_interest=[1]), "open_interest"),
    ("instrument not a string", ticker(instrument_name=None), "instrument_name"),
    ("trades not a list", note("trades.BTC-PERPETUAL.100ms", trade(liquidation="T")), "array"),
    ("missing channel", b'{"jsonrpc":"2.0","method":"subscription","params":{"data":{}}}', "'channel'"),
    ("unknown method", b'{"jsonrpc":"2.0","method":"surprise","params":{}}', "surprise"),
    ("nothing known", b'{"jsonrpc":"2.0"}', "method"),
]  # fmt: skip


@pytest.mark.parametrize(("frame", "needle"), [(f, n) for _, f, n in BAD_FRAMES], ids=[c for c, _, _ in BAD_FRAMES])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_malformed_frames_raise_parse_error(frame: bytes, needle: str, fast: bool) -> None:
    with pytest.raises(ParseError) as exc:
        DeribitFeed(fast=fast).parse_ws(frame, EMPTY)
    assert needle in str(exc.value)
    assert str(exc.value).startswith("deribit")


# One bad trade of a batch is dropped alone: the other liquidations of the batch still count.
BAD_TRADES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown liquidation flag", trade(liquidation="Q"), "liquidation"),
    ("liquidation amount inf string", trade(liquidation="T", amount="inf"), "amount"),
    ("liquidation missing price", {k: v for k, v in trade(liquidation="T").items() if k != "price"}, "'price'"),
    ("liquidation at price 0", trade(liquidation="T", price=0.0), "price"),
]


@pytest.mark.parametrize(("bad", "needle"), [(b, n) for _, b, n in BAD_TRADES], ids=[c for c, _, _ in BAD_TRADES])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_a_bad_trade_is_rejected_alone(bad: dict[str, Any], needle: str, fast: bool) -> None:
    good = trade(liquidation="T")
    out = DeribitFeed(fast=fast).parse_ws(note("trades.BTC-PERPETUAL.100ms", [good, bad, good]), EMPTY)
    assert [type(r) for r in out] == [Liquidation, Rejected, Liquidation]
    rejected = out[1]
    assert isinstance(rejected, Rejected) and needle in rejected.message and rejected.message.startswith("deribit")


# ---- plans --------------------------------------------------------------------------------------


def test_plan_subscribes_ticker_and_trades() -> None:
    (plan,) = FEED.ws_plans("wss://www.deribit.com", [INVERSE, LINEAR])
    assert plan.url == "wss://www.deribit.com/ws/api/v2"
    assert plan.ping_frame is None
    (req,) = [orjson.loads(s) for s in plan.subscribe]
    assert (req["jsonrpc"], req["method"]) == ("2.0", "public/subscribe")
    assert req["params"]["channels"] == [
        "ticker.BTC-PERPETUAL.100ms",
        "trades.BTC-PERPETUAL.100ms",
        "ticker.ETH_USDC-PERPETUAL.100ms",
        "trades.ETH_USDC-PERPETUAL.100ms",
    ]
    assert plan.silence_timeout_s > 15  # longer than the heartbeat interval


def test_plan_chunks_and_splits() -> None:
    infos = [InstrumentInfo(EX, f"C{k}_USDC-PERPETUAL", f"C{k}", "USDC") for k in range(600)]
    plans = FEED.ws_plans("ws://127.0.0.1:18004", infos)
    assert len(plans) == 3
    reqs = [orjson.loads(s) for p in plans for s in p.subscribe]
    assert all(len(r["params"]["channels"]) <= 200 for r in reqs)
    assert sum(len(r["params"]["channels"]) for r in reqs) == 1200
    ids = [r["id"] for p in plans for r in (orjson.loads(s) for s in p.subscribe)]
    assert all(isinstance(i, int) for i in ids)


# ---- REST ---------------------------------------------------------------------------------------


def rpc(result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "result": result, "usIn": 1, "usOut": 2, "usDiff": 1, "testnet": False})


def test_funding_rate_history_hourly_8h_equivalent() -> None:
    body = rpc(
        [
            {"timestamp": 1569891600000, "index_price": 8222.87, "prev_index_price": 8305.72,
             "interest_8h": -0.00009234260068476106, "interest_1h": -4.739622041017375e-7},
            {"timestamp": 1569888000000, "index_price": 8305.72, "prev_index_price": 8271.31,
             "interest_8h": -0.00008912, "interest_1h": -3.1e-7},
        ]
    )  # fmt: skip
    got = FEED.parse_funding_history(body, CTX, instrument="BTC-PERPETUAL")
    assert [(s.instrument, s.funding_time, s.rate, s.interval_s) for s in got] == [
        ("BTC-PERPETUAL", 1569888000.0, -0.00008912, 28800.0),
        ("BTC-PERPETUAL", 1569891600.0, -0.00009234260068476106, 28800.0),
    ]
    one = FeedContext(EX, {"BTC-PERPETUAL": INVERSE})
    assert FEED.parse_funding_history(body, one) == got
    with pytest.raises(ParseError, match="instrument"):
        FEED.parse_funding_history(body, CTX)


def test_book_summary_linear_gets_usd_from_mark() -> None:
    body = rpc(
        [
            {"instrument_name": "ETH_USDC-PERPETUAL", "open_interest": 100.0, "mark_price": 3000.0,
             "creation_timestamp": T_MS},
            {"instrument_name": "BTC-27JUN25", "open_interest": 5.0, "mark_price": 1.0, "creation_timestamp": T_MS},
        ]
    )  # fmt: skip
    (u,) = FEED.parse_open_interest(body, EMPTY)
    assert (u.instrument, u.open_interest_base, u.open_interest_usd) == ("ETH_USDC-PERPETUAL", 100.0, 300000.0)


def test_no_long_short_ratio_and_no_insurance_api() -> None:
    assert FEED.parse_long_short_ratio(rpc([]), EMPTY) == []
    assert FEED.parse_insurance_fund(rpc([]), EMPTY) == []


@pytest.mark.parametrize("method", ["parse_instruments", "parse_open_interest", "parse_funding_history"])
def test_error_body_names_the_exchange_message(method: str) -> None:
    body = b'{"jsonrpc":"2.0","error":{"message":"Invalid params","code":-32602},"testnet":false}'
    fn = getattr(FEED, method)
    with pytest.raises(ParseError, match="Invalid params"):
        fn(body) if method == "parse_instruments" else fn(body, EMPTY)
