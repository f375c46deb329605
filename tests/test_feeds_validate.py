"""Every parsed quantity is checked against its domain after conversion (exporter.feeds.validate).

Each case takes a real recorded message, puts one absurd but finite (or non-finite) value into one
field, and expects a ParseError whose reason names the domain, on the fast and the strict path alike.
Before the checks, ``"fundingIntervalHour":"1e308"`` became an infinite interval and blanked every
market series at the next scrape.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from exporter.clock import VirtualClock
from exporter.feeds import validate as V
from exporter.feeds.base import FeedContext
from exporter.feeds.binance import BinanceFeed
from exporter.feeds.bybit import BybitFeed
from exporter.feeds.deribit import DeribitFeed
from exporter.feeds.okx import OkxFeed
from exporter.model import Exchange, InstrumentInfo, MarketUpdate, ParseError, Rejected

B, Y, OK, D = Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX, Exchange.DERIBIT

# real messages (/work/shared/samples): binance ws_markprice_cmp, bybit ws_tickers_v5_tardis (linear
# BTCUSDT snapshot), okx ws_public_v5_swap_tardis and ws_funding_rate_index_2026_tardis, deribit
# ws_ticker_trades_2025_nautilus
BINANCE_MARK = {
    "stream": "btcusdt@markPrice",
    "data": {
        "e": "markPriceUpdate",
        "E": 1617308820003,
        "s": "BTCUSDT",
        "p": "58940.14924532",
        "P": "58905.14663658",
        "i": "58857.26693664",
        "r": "0.00058455",
        "T": 1617321600000,
    },
}
BINANCE_FORCE = {  # ws_forceorder_tardis
    "stream": "btcusdt@forceOrder",
    "data": {
        "e": "forceOrder",
        "E": 1584059031426,
        "o": {
            "s": "BTCUSDT",
            "S": "BUY",
            "o": "LIMIT",
            "f": "IOC",
            "q": "0.014",
            "p": "4793.91",
            "ap": "4706.04",
            "X": "FILLED",
            "l": "0.015",
            "z": "0.014",
            "T": 1584059031421,
        },
    },
}
BYBIT_OLD_LIQ = {  # ws_liquidation_v5_tardis, the deprecated topic
    "data": {"price": "0.03803", "side": "Buy", "size": "1637", "symbol": "GALAUSDT", "updatedTime": 1673251091822},
    "topic": "liquidation.GALAUSDT",
    "ts": 1673251091822,
    "type": "snapshot",
}
BYBIT_TICKER = {
    "topic": "tickers.BTCUSD",
    "type": "snapshot",
    "data": {
        "symbol": "BTCUSD",
        "markPrice": "28560.00",
        "indexPrice": "28566.94",
        "openInterest": "449736676",
        "openInterestValue": "15747.08",
        "nextFundingTime": "1680681600000",
        "fundingRate": "0.0001",
    },
    "cs": 20856433578,
    "ts": 1680673822577,
}
OKX_MARK = {
    "arg": {"channel": "mark-price", "instId": "WNCG-USDT-SWAP"},
    "data": [{"instId": "WNCG-USDT-SWAP", "instType": "SWAP", "markPx": "2.1729", "ts": "1640131259180"}],
}
OKX_INDEX = {
    "arg": {"channel": "index-tickers", "instId": "WNCG-USDT"},
    "data": [{"instId": "WNCG-USDT", "idxPx": "2.1675", "ts": "1640131290649"}],
}
OKX_OI = {
    "arg": {"channel": "open-interest", "instId": "WNCG-USDT-SWAP"},
    "data": [
        {"instId": "WNCG-USDT-SWAP", "instType": "SWAP", "oi": "644195", "oiCcy": "644195", "ts": "1640131258756"}
    ],
}
OKX_FUNDING = {
    "arg": {"channel": "funding-rate", "instId": "BTC-USD_UM_XPERP-310404"},
    "data": [
        {
            "fundingRate": "-0.0004270396398519",
            "fundingTime": "1785888000000",
            "instId": "BTC-USD_UM_XPERP-310404",
            "maxFundingRate": "0.00375",
            "minFundingRate": "-0.00375",
            "nextFundingTime": "1785916800000",
            "premium": "-0.0008949500017283",
            "prevFundingTime": "1785859200000",
            "settFundingRate": "-0.0001996513270201",
            "settState": "settled",
            "ts": "1785870855692",
        }
    ],
}
DERIBIT_TICKER = {
    "jsonrpc": "2.0",
    "method": "subscription",
    "params": {
        "channel": "ticker.BTC-PERPETUAL.100ms",
        "data": {
            "timestamp": 1765541474086,
            "index_price": 92263.55,
            "instrument_name": "BTC-PERPETUAL",
            "open_interest": 1132329370.0,
            "mark_price": 92281.78,
            "funding_8h": 1.742e-05,
        },
    },
}


def _set(msg: dict[str, Any], path: tuple[Any, ...], value: Any) -> bytes:
    m = orjson.loads(orjson.dumps(msg))
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return orjson.dumps(m)


FEEDS = {
    B: (BinanceFeed(), BinanceFeed(fast=False)),
    Y: (BybitFeed(), BybitFeed(fast=False)),
    OK: (OkxFeed(), OkxFeed(fast=False)),
    D: (DeribitFeed(), DeribitFeed(fast=False)),
}

CASES: list[tuple[str, Exchange, dict[str, Any], tuple[Any, ...], Any, str]] = [
    ("binance zero mark", B, BINANCE_MARK, ("data", "p"), "0", V.PRICE),
    ("binance negative mark", B, BINANCE_MARK, ("data", "p"), "-5", V.PRICE),
    ("binance denormal index", B, BINANCE_MARK, ("data", "i"), "1e-320", V.PRICE),
    ("binance huge mark", B, BINANCE_MARK, ("data", "p"), "1e308", V.PRICE),
    ("binance absurd rate", B, BINANCE_MARK, ("data", "r"), "1e308", V.RATE),
    ("binance nan rate", B, BINANCE_MARK, ("data", "r"), "NaN", V.NOT_FINITE),
    ("binance next funding in year 5e7", B, BINANCE_MARK, ("data", "T"), 10**18, V.TIMESTAMP),
    ("binance liquidation size nan", B, BINANCE_FORCE, ("data", "o", "z"), "NaN", V.NOT_FINITE),
    ("binance liquidation price 1e308", B, BINANCE_FORCE, ("data", "o", "ap"), "1e308", V.PRICE),
    ("binance liquidation in year 3e7", B, BINANCE_FORCE, ("data", "o", "T"), 10**18, V.TIMESTAMP),
    ("bybit liquidation price 0", Y, BYBIT_OLD_LIQ, ("data", "price"), "0", V.PRICE),
    ("bybit liquidation size -1", Y, BYBIT_OLD_LIQ, ("data", "size"), "-1", V.QTY),
    ("bybit liquidation size 1e308", Y, BYBIT_OLD_LIQ, ("data", "size"), "1e308", V.QTY),
    ("bybit liquidation price NaN", Y, BYBIT_OLD_LIQ, ("data", "price"), "NaN", V.NOT_FINITE),
    ("bybit liquidation in year 3e7", Y, BYBIT_OLD_LIQ, ("data", "updatedTime"), 10**18, V.TIMESTAMP),
    ("binance liquidation average 1e-13", B, BINANCE_FORCE, ("data", "o", "ap"), "1e-13", V.PRICE),
    ("binance liquidation notional 5e13 USD", B, BINANCE_FORCE, ("data", "o", "z"), "1e10", V.USD),
    ("okx negative oi", OK, OKX_OI, ("data", 0, "oi"), "-1", V.QTY),
    ("okx nan premium", OK, OKX_FUNDING, ("data", 0, "premium"), "nan", V.NOT_FINITE),
    ("okx NaN mark", OK, OKX_MARK, ("data", 0, "markPx"), "NaN", V.NOT_FINITE),
    ("okx 'null' premium", OK, OKX_FUNDING, ("data", 0, "premium"), "null", V.NOT_A_NUMBER),
    ("okx 'null' open interest", OK, OKX_OI, ("data", 0, "oiCcy"), "null", V.NOT_A_NUMBER),
    ("binance 'null' index", B, BINANCE_MARK, ("data", "i"), "null", V.NOT_A_NUMBER),
    ("binance NaN mark", B, BINANCE_MARK, ("data", "p"), "NaN", V.NOT_FINITE),
    ("binance 'null' event time", B, BINANCE_MARK, ("data", "E"), "null", V.BAD_SHAPE),
    ("bybit NaN mark", Y, BYBIT_TICKER, ("data", "markPrice"), "NaN", V.NOT_FINITE),
    ("bybit 'null' open interest", Y, BYBIT_TICKER, ("data", "openInterest"), "null", V.NOT_A_NUMBER),
    ("bybit interval 1e308 h", Y, BYBIT_TICKER, ("data", "fundingIntervalHour"), "1e308", V.INTERVAL),
    ("bybit interval 0.001 h", Y, BYBIT_TICKER, ("data", "fundingIntervalHour"), "0.001", V.INTERVAL),
    ("bybit zero mark", Y, BYBIT_TICKER, ("data", "markPrice"), "0", V.PRICE),
    ("bybit denormal index", Y, BYBIT_TICKER, ("data", "indexPrice"), "1e-320", V.PRICE),
    ("bybit huge open interest", Y, BYBIT_TICKER, ("data", "openInterest"), "1e308", V.USD),
    ("bybit negative oi value", Y, BYBIT_TICKER, ("data", "openInterestValue"), "-3", V.QTY),
    ("bybit huge cap", Y, BYBIT_TICKER, ("data", "fundingCap"), "1e300", V.RATE),
    ("bybit rate 5", Y, BYBIT_TICKER, ("data", "fundingRate"), "5", V.RATE),
    ("bybit next funding 1e308", Y, BYBIT_TICKER, ("data", "nextFundingTime"), "1e308", V.TIMESTAMP),
    ("okx zero mark", OK, OKX_MARK, ("data", 0, "markPx"), "0", V.PRICE),
    ("okx denormal index", OK, OKX_INDEX, ("data", 0, "idxPx"), "1e-320", V.PRICE),
    ("okx huge oi", OK, OKX_OI, ("data", 0, "oiCcy"), "1e308", V.QTY),
    ("okx absurd premium", OK, OKX_FUNDING, ("data", 0, "premium"), "1e200", V.RATE),
    ("okx absurd rate", OK, OKX_FUNDING, ("data", 0, "fundingRate"), "-7", V.RATE),
    ("okx settled rate 1e200", OK, OKX_FUNDING, ("data", 0, "settFundingRate"), "1e200", V.RATE),
    ("okx NaN cap", OK, OKX_FUNDING, ("data", 0, "maxFundingRate"), "NaN", V.NOT_FINITE),
    ("okx floor -2", OK, OKX_FUNDING, ("data", 0, "minFundingRate"), "-2", V.RATE),
    ("okx negative oi usd", OK, OKX_OI, ("data", 0, "oiUsd"), "-1", V.USD),
    ("okx index -1", OK, OKX_INDEX, ("data", 0, "idxPx"), "-1", V.PRICE),
    ("okx next funding 1e308 ms", OK, OKX_FUNDING, ("data", 0, "nextFundingTime"), "1e308", V.TIMESTAMP),
    ("okx settlement 1 ms", OK, OKX_FUNDING, ("data", 0, "fundingTime"), "1", V.TIMESTAMP),
    ("deribit zero mark", D, DERIBIT_TICKER, ("params", "data", "mark_price"), 0.0, V.PRICE),
    ("deribit huge mark", D, DERIBIT_TICKER, ("params", "data", "mark_price"), 1e308, V.PRICE),
    ("deribit denormal index", D, DERIBIT_TICKER, ("params", "data", "index_price"), 1e-320, V.PRICE),
    ("deribit absurd funding", D, DERIBIT_TICKER, ("params", "data", "funding_8h"), 1e10, V.RATE),
    ("deribit huge oi", D, DERIBIT_TICKER, ("params", "data", "open_interest"), 1e300, V.USD),
    ("deribit negative oi", D, DERIBIT_TICKER, ("params", "data", "open_interest"), -1.0, V.USD),
    ("deribit timestamp 0", D, DERIBIT_TICKER, ("params", "data", "timestamp"), 0, V.TIMESTAMP),
]


# The instruments of the samples, followed: the fast paths take their inline branches for a followed
# symbol (an empty map: any symbol, the branch recorded-sample tests take).
FOLLOWED = {
    B: [InstrumentInfo(B, "BTCUSDT", "BTC", "USDT")],
    Y: [InstrumentInfo(Y, "GALAUSDT", "GALA", "USDT"), InstrumentInfo(Y, "BTCUSD", "BTC", "USD", inverse=True)],
    OK: [
        InstrumentInfo(OK, "WNCG-USDT-SWAP", "WNCG", "USDT", contract_size=1.0),
        InstrumentInfo(OK, "BTC-USD_UM_XPERP-310404", "BTC", "USD", contract_size=100.0, inverse=True),
    ],
    D: [InstrumentInfo(D, "BTC-PERPETUAL", "BTC", "USD", contract_size=10.0, inverse=True)],
}


@pytest.mark.parametrize(("name", "ex", "msg", "path", "value", "reason"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
@pytest.mark.parametrize("followed", [False, True], ids=["any", "followed"])
def test_value_outside_its_domain_is_a_parse_error_with_its_reason(
    name: str,
    ex: Exchange,
    msg: dict[str, Any],
    path: tuple[Any, ...],
    value: Any,
    reason: str,
    fast: bool,
    followed: bool,
) -> None:
    feed = FEEDS[ex][0 if fast else 1]
    ctx = FeedContext(ex, {i.instrument: i for i in FOLLOWED[ex]} if followed else {})
    assert feed.parse_ws(orjson.dumps(msg), ctx), "the unmodified sample parses"
    with pytest.raises(ParseError) as info:
        feed.parse_ws(_set(msg, path, value), ctx)
    assert info.value.reason == reason, str(info.value)


def test_binance_funding_info_interval_is_checked_after_the_multiplication() -> None:
    body = b'[{"symbol":"BLZUSDT","adjustedFundingRateCap":"0.02500000","adjustedFundingRateFloor":"-0.02500000",'
    ok = body + b'"fundingIntervalHours":8,"disclaimer":false}]'
    (u,) = BinanceFeed().parse_funding_info(ok)
    assert isinstance(u, MarketUpdate) and u.funding_interval_s == 28800.0
    with pytest.raises(ParseError) as info:
        BinanceFeed().parse_funding_info(body + b'"fundingIntervalHours":1e308,"disclaimer":false}]')
    assert info.value.reason == V.INTERVAL


def test_with_a_clock_timestamps_must_be_near_now() -> None:
    """A context with the exporter's clock bounds event and settlement times to a window around now."""
    frame = orjson.dumps(BINANCE_MARK)
    recorded_at = BINANCE_MARK["data"]["E"] / 1000  # type: ignore[index]
    feed = BinanceFeed()
    info = {"BTCUSDT": InstrumentInfo(B, "BTCUSDT", "BTC", "USDT")}
    (u,) = feed.parse_ws(frame, FeedContext(B, info, clock=VirtualClock(recorded_at + 5.0).time))
    assert isinstance(u, MarketUpdate) and u.event_time == recorded_at
    with pytest.raises(ParseError) as err:  # a frame six years in the past of the clock
        feed.parse_ws(frame, FeedContext(B, info, clock=VirtualClock(recorded_at + 6 * 366 * 86400.0).time))
    assert err.value.reason == V.TIMESTAMP
    with pytest.raises(ParseError) as err:  # ... or a week in its future
        feed.parse_ws(frame, FeedContext(B, info, clock=VirtualClock(recorded_at - 7 * 86400.0).time))
    assert err.value.reason == V.TIMESTAMP


def test_one_bad_symbol_of_the_all_market_array_is_rejected_alone() -> None:
    """!markPrice@arr carries every symbol: one symbol's absurd value must not cost the others their
    update (before, the whole frame was refused, every second, for as long as the value stayed)."""
    good = dict(BINANCE_MARK["data"])  # type: ignore[arg-type]
    other = {**good, "s": "ETHUSDT", "p": "1981.15704420", "i": "1978.08197502"}
    bad = {**good, "s": "XRPUSDT", "p": "0"}
    frame = orjson.dumps({"stream": "!markPrice@arr", "data": [good, bad, other]})
    for feed in FEEDS[B]:
        out = feed.parse_ws(frame, FeedContext(B))
        assert [type(r) for r in out] == [MarketUpdate, Rejected, MarketUpdate]
        assert [getattr(r, "instrument", None) for r in out] == ["BTCUSDT", None, "ETHUSDT"]
        rejected = out[1]
        assert isinstance(rejected, Rejected) and rejected.reason == V.PRICE and "XRPUSDT" in rejected.message


DERIBIT_LIQ_TRADE = {  # ws_perpetual_ticker_trades_tardis, a trade with a liquidation
    "jsonrpc": "2.0",
    "method": "subscription",
    "params": {
        "channel": "trades.BTC-PERPETUAL.raw",
        "data": [
            {
                "trade_seq": 40781986,
                "trade_id": "66460463",
                "timestamp": 1584058044032,
                "tick_direction": 3,
                "price": 4469.5,
                "liquidation": "T",
                "instrument_name": "BTC-PERPETUAL",
                "index_price": 4805.41,
                "direction": "sell",
                "amount": 1120,
            }
        ],
    },
}


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("price", 0.0, V.PRICE),
        ("price", 1e300, V.PRICE),
        ("amount", -5, V.QTY),
        ("amount", 1e15, V.USD),  # an inverse amount counts USD
        ("timestamp", 10**18, V.TIMESTAMP),
        ("liquidation", "X", V.BAD_SHAPE),
    ],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
@pytest.mark.parametrize("followed", [False, True], ids=["any", "followed"])
def test_a_bad_liquidation_trade_is_rejected_alone_with_its_reason(
    field: str, value: Any, reason: str, fast: bool, followed: bool
) -> None:
    """A trade batch: the bad liquidation is a Rejected record naming the domain (the batch's other
    trades keep theirs), on the fast and the strict path, for a followed symbol and for any."""
    feed = FEEDS[D][0 if fast else 1]
    ctx = FeedContext(D, {i.instrument: i for i in FOLLOWED[D]} if followed else {})
    (liq,) = feed.parse_ws(orjson.dumps(DERIBIT_LIQ_TRADE), ctx)
    assert liq.side.value == "long" and liq.notional_usd == 1120.0  # type: ignore[union-attr]
    (out,) = feed.parse_ws(_set(DERIBIT_LIQ_TRADE, ("params", "data", 0, field), value), ctx)
    assert isinstance(out, Rejected) and out.reason == reason, out
