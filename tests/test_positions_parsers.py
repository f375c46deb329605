"""The per-exchange account parsers (feeds/*_account.py) on the wire samples their docstrings
show, their error answers, and the one funding-history parser positions share with the backfill."""

from __future__ import annotations

import json

import pytest

from exporter.feeds import binance_account, bybit_account, deribit_account, feed_for, okx_account
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, ParseError, Side, Tier

RISK = [
    {
        "entryPrice": "0.00000",
        "marginType": "isolated",
        "isolatedMargin": "0.00000000",
        "leverage": "10",
        "liquidationPrice": "0",
        "markPrice": "6679.50671178",
        "positionAmt": "0.000",
        "isolatedWallet": "0",
        "symbol": "BTCUSDT",
        "positionSide": "BOTH",
    },
    {
        "entryPrice": "60000.0",
        "marginType": "isolated",
        "leverage": "5",
        "liquidationPrice": "71500.5",
        "markPrice": "61000.0",
        "positionAmt": "-0.500",
        "isolatedWallet": "6000",
        "symbol": "ETHUSDT",
        "positionSide": "BOTH",
    },
]
ADL = [{"symbol": "ETHUSDT", "adlQuantile": {"LONG": 1, "SHORT": 2, "BOTH": 3}}]


def test_binance_positions_and_adl() -> None:
    (p,) = binance_account.parse_positions(json.dumps(RISK).encode(), json.dumps(ADL).encode())
    assert (p.instrument, p.side, p.size, p.entry_price) == ("ETHUSDT", Side.SHORT, 0.5, 60000.0)
    assert (p.margin_mode, p.margin_usd, p.leverage) == ("isolated", 6000.0, 5.0)
    assert p.liquidation_price == 71500.5 and p.mark_price == 61000.0
    assert p.adl_raw == 3.0  # one-way mode: the BOTH quantile


def test_binance_brackets_sample_and_single_object_answer() -> None:
    sample = [
        {
            "symbol": "ETHUSDT",
            "notionalCoef": 1.5,
            "brackets": [
                {
                    "bracket": 2,
                    "initialLeverage": 50,
                    "notionalCap": 50000,
                    "notionalFloor": 10000,
                    "maintMarginRatio": 0.01,
                    "cum": 35,
                },
                {
                    "bracket": 1,
                    "initialLeverage": 75,
                    "notionalCap": 10000,
                    "notionalFloor": 0,
                    "maintMarginRatio": 0.0065,
                    "cum": 0,
                },
            ],
        }
    ]
    tiers = binance_account.parse_brackets(json.dumps(sample).encode(), "ETHUSDT")
    assert tiers == [Tier(0.0, 10000.0, 0.0065, 75.0, 0.0), Tier(10000.0, 50000.0, 0.01, 50.0, 35.0)]
    assert binance_account.parse_brackets(json.dumps(sample[0]).encode(), "ETHUSDT") == tiers
    assert binance_account.parse_brackets(json.dumps(sample).encode(), "BTCUSDT") is None


def test_error_answers_give_the_code_and_only_the_code() -> None:
    assert binance_account.error_code(b'{"code":-2015,"msg":"Invalid API-key, IP, or permissions."}') == "-2015"
    assert binance_account.error_code(json.dumps(RISK).encode()) is None
    assert bybit_account.error_code(b'{"retCode":10004,"retMsg":"error sign! origin_string[k...]"}') == "10004"
    assert bybit_account.error_code(b'{"retCode":0,"result":{}}') is None
    assert okx_account.error_code(b'{"code":"50113","msg":"Invalid Sign","data":[]}') == "50113"
    assert deribit_account.error_code(b'{"error":{"code":13009,"message":"unauthorized"}}') == "13009"
    assert "-2015" in binance_account.AUTH_CODES and "10004" in bybit_account.AUTH_CODES
    for parsers in (binance_account, bybit_account, okx_account, deribit_account):
        assert parsers.error_code(b"<html>bad gateway</html>") is None


def test_bybit_positions_sample_and_paging() -> None:
    row = {
        "positionIdx": 0,
        "symbol": "BTCUSDT",
        "side": "Buy",
        "size": "0.5",
        "avgPrice": "50000.00",
        "tradeMode": 0,
        "adlRankIndicator": 2,
        "leverage": "10",
        "positionBalance": "2500.00",
        "markPrice": "50500.00",
        "liqPrice": "45000.00",
        "createdTime": "1676538056258",
    }
    body = {"retCode": 0, "retMsg": "OK", "result": {"list": [row, {**row, "size": "0"}], "nextPageCursor": "p2"}}
    (p,), cursor = bybit_account.parse_positions(json.dumps(body).encode())
    assert cursor == "p2"
    assert (p.side, p.size, p.entry_price, p.margin_mode, p.margin_usd) == (Side.LONG, 0.5, 50000.0, "cross", None)
    assert (p.liquidation_price, p.adl_raw, p.opened_at) == (45000.0, 2.0, None)
    with pytest.raises(ParseError):
        bybit_account.parse_positions(b'{"retCode":0,"result":{"list":{"not":"a list"}}}')


def test_bybit_risk_limits_make_contiguous_tiers() -> None:
    rows = [
        {"symbol": "BTCUSDT", "riskLimitValue": "4000000", "maintenanceMargin": "0.01", "maxLeverage": "50"},
        {"symbol": "BTCUSDT", "riskLimitValue": "2000000", "maintenanceMargin": "0.005", "maxLeverage": "100"},
        {"symbol": "ETHUSDT", "riskLimitValue": "1000000", "maintenanceMargin": "0.005", "maxLeverage": "100"},
    ]
    body = {"retCode": 0, "result": {"category": "linear", "list": rows, "nextPageCursor": ""}}
    got, cursor = bybit_account.parse_risk_limits(json.dumps(body).encode(), "BTCUSDT")
    assert cursor == "" and len(got) == 2
    assert bybit_account.tiers_from_risk_limits(got) == [
        Tier(0.0, 2_000_000.0, 0.005, 100.0, 0.0),
        Tier(2_000_000.0, 4_000_000.0, 0.01, 50.0, 0.0),
    ]


def test_okx_positions_in_contracts_and_tiers() -> None:
    row = {
        "adl": "1",
        "avgPx": "2566.31",
        "cTime": "1619507758793",
        "instId": "ETH-USDT-SWAP",
        "lever": "10",
        "liqPx": "2352.8496681818233",
        "markPx": "2353.849",
        "margin": "25.6",
        "mgnMode": "isolated",
        "pos": "3",
        "posSide": "net",
    }
    (p,) = okx_account.parse_positions(json.dumps({"code": "0", "data": [row]}).encode(), lambda inst: 0.1)
    assert (p.side, p.contract_size, p.margin_usd, p.opened_at) == (Side.LONG, 0.1, 25.6, 1619507758.793)
    assert p.size == pytest.approx(0.3)
    with pytest.raises(ParseError):  # an unknown posSide is no position we can read
        okx_account.parse_positions(
            json.dumps({"code": "0", "data": [{**row, "posSide": "both"}]}).encode(), lambda inst: 0.1
        )
    tiers = {"code": "0", "data": [{"minSz": "0", "maxSz": "9999999999", "mmr": "0.03", "maxLever": "10"}]}
    assert okx_account.parse_position_tiers(json.dumps(tiers).encode()) == [Tier(0.0, 9999999999.0, 0.03, 10.0)]


def test_deribit_positions_inverse_and_linear() -> None:
    rows = [
        {
            "average_price": 7440.18,
            "direction": "buy",
            "estimated_liquidation_price": 1.74,
            "instrument_name": "BTC-PERPETUAL",
            "kind": "future",
            "leverage": 34,
            "mark_price": 7476.65,
            "size": 50,
            "size_currency": 0.006687487,
        },
        {
            "average_price": 3000.0,
            "direction": "sell",
            "instrument_name": "ETH_USDC-PERPETUAL",
            "mark_price": 3010.0,
            "size": -2.0,
            "estimated_liquidation_price": 0,
        },
        {"instrument_name": "BTC-27DEC24", "direction": "buy", "size": 10},
    ]
    inverse, linear = deribit_account.parse_positions(json.dumps({"jsonrpc": "2.0", "result": rows}).encode())
    assert (inverse.inverse, inverse.size, inverse.side, inverse.adl_raw) == (True, 0.006687487, Side.LONG, None)
    assert (linear.inverse, linear.size, linear.side, linear.liquidation_price) == (False, 2.0, Side.SHORT, None)


def test_funding_history_is_one_strict_parser_with_binance_marks() -> None:
    """Positions read settled funding through the feeds' parser: Binance's mark at the settlement is
    kept, and a malformed row rejects the body (the positions' old lenient reader skipped it)."""
    feed = feed_for(Exchange.BINANCE)
    ctx = FeedContext(Exchange.BINANCE, {})
    rows = [
        {"symbol": "BTCUSDT", "fundingTime": 1700000000000, "fundingRate": "0.00010000", "markPrice": "36000.5"},
        {"symbol": "BTCUSDT", "fundingTime": 1700028800000, "fundingRate": "-0.00002000", "markPrice": ""},
        {"symbol": "BTCUSDT", "fundingTime": 1700030000000, "fundingRate": "0.5", "rateType": "Special"},
    ]
    got = feed.parse_funding_history(json.dumps(rows).encode(), ctx)
    assert [(s.funding_time, s.rate, s.mark_price) for s in got] == [
        (1700000000.0, 0.0001, 36000.5),
        (1700028800.0, -0.00002, None),
    ]
    bad = [*rows[:2], {"symbol": "BTCUSDT", "fundingTime": 1700057600000, "fundingRate": "n/a"}]
    with pytest.raises(ParseError):
        feed.parse_funding_history(json.dumps(bad).encode(), ctx)
