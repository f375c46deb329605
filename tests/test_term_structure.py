"""Term structure: dated-futures parsers on the exchanges' documented messages, the curve formulas
against hand computations, expiry and the collector (docs/term-structure.md)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from exporter.api_state import build_state_document
from exporter.config import Config
from exporter.feeds import dated, feed_for
from exporter.feeds.base import FeedContext
from exporter.metrics import build_registry
from exporter.model import Exchange, InstrumentInfo, MarketUpdate, ParseError
from exporter.state import MarketState
from exporter.views import MarketViews

B, Y, OK, D = Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX, Exchange.DERIBIT


def _j(x: Any) -> bytes:
    return orjson.dumps(x)


# ---- instrument lists (shapes from the exchanges' documentation, see docs/term-structure.md) ----

BINANCE_INFO = {
    "timezone": "UTC",
    "symbols": [
        {"symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
         "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT"},
        {"symbol": "BTCUSDT_260327", "pair": "BTCUSDT", "contractType": "CURRENT_QUARTER",
         "deliveryDate": 1774598400000, "onboardDate": 1758873600000, "status": "TRADING",
         "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT"},
        {"symbol": "BTCUSDT_260626", "pair": "BTCUSDT", "contractType": "NEXT_QUARTER",
         "deliveryDate": 1782460800000, "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
        {"symbol": "ETHUSDT_251226", "pair": "ETHUSDT", "contractType": "CURRENT_QUARTER",
         "deliveryDate": 1766736000000, "status": "SETTLING", "baseAsset": "ETH", "quoteAsset": "USDT"},
    ],
}  # fmt: skip


def test_binance_delivery_contracts() -> None:
    out = dated.parse_binance(_j(BINANCE_INFO))
    assert [(i.instrument, i.base, i.quote, i.expiry) for i in out] == [
        ("BTCUSDT_260327", "BTC", "USDT", 1774598400.0),
        ("BTCUSDT_260626", "BTC", "USDT", 1782460800.0),
    ]  # the perpetual and the settling contract are not dated futures to follow
    assert dated.expiry_date(out[0].expiry or 0) == "2026-03-27"


def test_bybit_linear_and_inverse_futures() -> None:
    body = {
        "retCode": 0,
        "retMsg": "OK",
        "result": {
            "category": "linear",
            "list": [
                {"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
                 "quoteCoin": "USDT", "launchTime": "1585526400000", "deliveryTime": "0"},
                {"symbol": "BTCUSDT-27MAR26", "contractType": "LinearFutures", "status": "Trading",
                 "baseCoin": "BTC", "quoteCoin": "USDT", "launchTime": "1760000000000",
                 "deliveryTime": "1774598400000", "deliveryFeeRate": "0.0005"},
                {"symbol": "BTCUSDH26", "contractType": "InverseFutures", "status": "Trading", "baseCoin": "BTC",
                 "quoteCoin": "USD", "deliveryTime": "1774598400000"},
            ],
            "nextPageCursor": "",
        },
    }  # fmt: skip
    out = dated.parse_bybit(_j(body))
    assert [(i.instrument, i.quote, i.inverse, i.expiry) for i in out] == [
        ("BTCUSDT-27MAR26", "USDT", False, 1774598400.0),
        ("BTCUSDH26", "USD", True, 1774598400.0),
    ]


def test_okx_futures_from_documented_body() -> None:
    body = {
        "code": "0",
        "msg": "",
        "data": [
            {"alias": "this_week", "ctType": "inverse", "ctVal": "100", "ctValCcy": "USD",
             "expTime": "1734681600000", "instFamily": "BTC-USD", "instId": "BTC-USD-241220",
             "instType": "FUTURES", "settleCcy": "BTC", "state": "live", "uly": "BTC-USD"},
            {"alias": "quarter", "ctType": "linear", "ctVal": "0.01", "ctValCcy": "BTC",
             "expTime": "1743148800000", "instFamily": "BTC-USDT", "instId": "BTC-USDT-250328",
             "instType": "FUTURES", "settleCcy": "USDT", "state": "live", "uly": "BTC-USDT"},
            {"ctType": "inverse", "ctVal": "10", "expTime": "1734681600000", "instFamily": "ETH-USD",
             "instId": "ETH-USD-241220", "instType": "FUTURES", "state": "suspend"},
        ],
    }  # fmt: skip
    out = dated.parse_okx(_j(body))
    assert [(i.instrument, i.base, i.quote, i.inverse, i.contract_size, i.expiry) for i in out] == [
        ("BTC-USD-241220", "BTC", "USD", True, 100.0, 1734681600.0),
        ("BTC-USDT-250328", "BTC", "USDT", False, 0.01, 1743148800.0),
    ]


def test_deribit_dated_futures_leave_out_the_perpetual() -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": [
            {"settlement_period": "month", "quote_currency": "USD", "counter_currency": "USD", "kind": "future",
             "is_active": True, "instrument_name": "BTC-29SEP23", "instrument_type": "reversed",
             "expiration_timestamp": 1695974400000, "contract_size": 10, "base_currency": "BTC", "state": "open"},
            {"settlement_period": "perpetual", "quote_currency": "USD", "counter_currency": "USD", "kind": "future",
             "is_active": True, "instrument_name": "BTC-PERPETUAL", "instrument_type": "reversed",
             "expiration_timestamp": 32503708800000, "contract_size": 10, "base_currency": "BTC"},
        ],
    }  # fmt: skip
    out = dated.parse_deribit(_j(body))
    assert [(i.instrument, i.base, i.quote, i.inverse, i.contract_size, i.expiry) for i in out] == [
        ("BTC-29SEP23", "BTC", "USD", True, 10.0, 1695974400.0)
    ]


@pytest.mark.parametrize(
    ("parse", "body", "field"),
    [
        (dated.parse_binance, {"symbols": [{"symbol": "X_1", "contractType": "NEXT_QUARTER", "deliveryDate": "soon",
                                            "baseAsset": "X", "quoteAsset": "USDT"}]}, "deliveryDate"),
        (dated.parse_bybit, {"retCode": 0, "result": {"list": [{"symbol": "X-1", "contractType": "LinearFutures",
                                                               "baseCoin": "X", "quoteCoin": "USDT",
                                                               "deliveryTime": "0"}]}}, "deliveryTime"),
        (dated.parse_okx, {"code": "0", "data": [{"instType": "FUTURES", "instId": "X-USD-1", "instFamily": "X-USD",
                                                  "ctType": "inverse", "ctVal": "nan", "expTime": "1"}]}, "ctVal"),
        (dated.parse_deribit, {"result": [{"kind": "future", "settlement_period": "week", "instrument_name": "X-1",
                                           "base_currency": "X", "quote_currency": "USD", "contract_size": 1}]},
         "expiration_timestamp"),
    ],
)  # fmt: skip
def test_bad_instrument_rows_are_named_errors(parse: Any, body: Any, field: str) -> None:
    with pytest.raises(ParseError, match=field):
        parse(_j(body))


# ---- streams: the dated futures' frames through each exchange's own parser -------------------------

BTC_Q = InstrumentInfo(B, "BTCUSDT_260327", "BTC", "USDT", expiry=1774598400.0)


def test_binance_delivery_mark_price_frame() -> None:
    # USDⓈ-M markPriceUpdate of a delivery symbol: no funding ("r" "", "T" 0); P = estimated settle price
    frame = {
        "stream": "btcusdt_260327@markPrice@1s",
        "data": {"e": "markPriceUpdate", "E": 1764489600000, "s": "BTCUSDT_260327", "p": "92450.10",
                 "P": "91800.00", "i": "91500.50", "r": "", "T": 0},
    }  # fmt: skip
    [u] = feed_for(B).parse_ws(_j(frame), FeedContext(B, {BTC_Q.instrument: BTC_Q}))
    assert isinstance(u, MarketUpdate)
    assert (u.instrument, u.mark_price, u.index_price, u.funding_rate, u.next_funding_time) == (
        "BTCUSDT_260327",
        92450.10,
        91500.50,
        None,
        None,
    )


def test_binance_estimated_settle_price_of_delivery_symbols_only() -> None:
    perp = InstrumentInfo(B, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0)
    ctx = FeedContext(B, {BTC_Q.instrument: BTC_Q, perp.instrument: perp})
    rows = [
        {"e": "markPriceUpdate", "E": 1774594800000, "s": "BTCUSDT_260327", "p": "92010.5", "P": "91998.75",
         "i": "91990.0", "r": "", "T": 0},
        {"e": "markPriceUpdate", "E": 1774594800000, "s": "BTCUSDT", "p": "92000.0", "P": "91999.0",
         "i": "91990.0", "r": "0.0001", "T": 1774598400000},
    ]  # fmt: skip
    out = feed_for(B).parse_ws(_j({"stream": "!markPrice@arr@1s", "data": rows}), ctx)
    by = {u.instrument: u for u in out if isinstance(u, MarketUpdate)}
    assert by["BTCUSDT_260327"].settle_price_estimate == 91998.75
    assert by["BTCUSDT"].settle_price_estimate is None  # a perpetual's P is not read
    with pytest.raises(ParseError, match="'P'"):
        bad = {**rows[0], "P": "soon"}
        feed_for(B).parse_ws(_j({"stream": "btcusdt_260327@markPrice@1s", "data": bad}), ctx)


def test_estimated_settle_price_only_in_the_last_hour() -> None:
    st = _state([("BTCUSDT_A", 2.0 / 24, 90_050.0), ("BTCUSDT_B", 0.5 / 24, 90_010.0)], 90_000.0, 90_000.0, 1e-4)
    for name in ("BTCUSDT_A", "BTCUSDT_B"):
        st.apply(MarketUpdate(B, name, NOW, 90_020.0, settle_price_estimate=90_004.0), NOW)
    views = {v.st.info.instrument: v for v in MarketViews(Config(), st).futures(NOW)}
    assert views["BTCUSDT_A"].estimated_settle_price is None  # two hours out: not meaningful yet
    assert views["BTCUSDT_B"].estimated_settle_price == 90_004.0


def test_bybit_futures_ticker() -> None:
    info = InstrumentInfo(Y, "BTCUSDT-27MAR26", "BTC", "USDT", expiry=1774598400.0)
    frame = {
        "topic": "tickers.BTCUSDT-27MAR26", "type": "snapshot", "ts": 1764489600000, "cs": 1,
        "data": {"symbol": "BTCUSDT-27MAR26", "markPrice": "93010.5", "indexPrice": "91500.5", "fundingRate": "",
                 "nextFundingTime": "0", "deliveryTime": "2026-03-27T08:00:00Z", "basis": "1510", "basisRate": "0.0165",
                 "predictedDeliveryPrice": "", "openInterest": "120.5"},
    }  # fmt: skip
    [u] = feed_for(Y).parse_ws(_j(frame), FeedContext(Y, {info.instrument: info}))
    assert isinstance(u, MarketUpdate)
    assert (u.mark_price, u.index_price, u.funding_rate) == (93010.5, 91500.5, None)


def test_bybit_inverse_futures_ticker() -> None:
    """An inverse dated future on ``/v5/public/inverse`` (BTCUSDH26: BTC-settled, 1 USD a contract)."""
    info = InstrumentInfo(Y, "BTCUSDH26", "BTC", "USD", inverse=True, expiry=1774598400.0)
    frame = {
        "topic": "tickers.BTCUSDH26", "type": "snapshot", "ts": 1764489600000, "cs": 7,
        "data": {"symbol": "BTCUSDH26", "tickDirection": "PlusTick", "lastPrice": "93240.50",
                 "markPrice": "93251.25", "indexPrice": "91502.75", "openInterest": "35861012",
                 "openInterestValue": "384.57", "fundingRate": "", "nextFundingTime": "0",
                 "deliveryTime": "2026-03-27T08:00:00Z", "basisRate": "0.01910866", "basis": "1748.50",
                 "predictedDeliveryPrice": "", "deliveryFeeRate": "0.0005"},
    }  # fmt: skip
    [u] = feed_for(Y).parse_ws(_j(frame), FeedContext(Y, {info.instrument: info}))
    assert isinstance(u, MarketUpdate)
    assert (u.instrument, u.mark_price, u.index_price, u.funding_rate) == ("BTCUSDH26", 93251.25, 91502.75, None)
    assert u.event_time == 1764489600.0


def test_okx_futures_mark_price_push() -> None:
    info = InstrumentInfo(OK, "BTC-USD-250328", "BTC", "USD", contract_size=100.0, inverse=True, expiry=1743148800.0)
    frame = {
        "arg": {"channel": "mark-price", "instId": "BTC-USD-250328"},
        "data": [{"instType": "FUTURES", "instId": "BTC-USD-250328", "markPx": "97250.3", "ts": "1735000000000"}],
    }
    [u] = feed_for(OK).parse_ws(_j(frame), FeedContext(OK, {info.instrument: info}))
    assert isinstance(u, MarketUpdate)
    assert (u.instrument, u.mark_price, u.event_time) == ("BTC-USD-250328", 97250.3, 1735000000.0)


def test_deribit_future_ticker() -> None:
    info = InstrumentInfo(D, "BTC-27MAR26", "BTC", "USD", contract_size=10.0, inverse=True, expiry=1774598400.0)
    frame = {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {
            "channel": "ticker.BTC-27MAR26.100ms",
            "data": {"timestamp": 1764489600000, "state": "open", "instrument_name": "BTC-27MAR26",
                     "mark_price": 93120.0, "index_price": 91480.25, "estimated_delivery_price": 91480.25,
                     "open_interest": 41250000.0, "last_price": 93115.0},
        },
    }  # fmt: skip
    [u] = feed_for(D).parse_ws(_j(frame), FeedContext(D, {info.instrument: info}))
    assert isinstance(u, MarketUpdate)
    assert (u.mark_price, u.index_price, u.funding_rate) == (93120.0, 91480.25, None)


def test_plans_use_each_exchanges_channel_for_the_futures() -> None:
    futs = [BTC_Q]
    [p] = dated.ws_plans(B, "ws://h:1", futs)
    assert p.url == "ws://h:1/market/stream?streams=btcusdt_260327@markPrice@1s"
    inv = InstrumentInfo(Y, "BTCUSDH26", "BTC", "USD", inverse=True, expiry=1.0)
    lin = InstrumentInfo(Y, "BTCUSDT-27MAR26", "BTC", "USDT", expiry=1.0)
    plans = dated.ws_plans(Y, "ws://h:1", [lin, inv])
    assert [(p.url, orjson.loads(p.subscribe[0])["args"]) for p in plans] == [
        ("ws://h:1/v5/public/linear", ["tickers.BTCUSDT-27MAR26"]),
        ("ws://h:1/v5/public/inverse", ["tickers.BTCUSDH26"]),
    ]
    [p] = dated.ws_plans(OK, "ws://h:1", [InstrumentInfo(OK, "BTC-USD-250328", "BTC", "USD", expiry=1.0)])
    assert orjson.loads(p.subscribe[0])["args"] == [{"channel": "mark-price", "instId": "BTC-USD-250328"}]
    [p] = dated.ws_plans(D, "ws://h:1", [InstrumentInfo(D, "BTC-27MAR26", "BTC", "USD", expiry=1.0)])
    assert orjson.loads(p.subscribe[0])["params"]["channels"] == ["ticker.BTC-27MAR26.100ms"]
    assert dated.ws_plans(D, "ws://h:1", []) == []


def test_select_nearest_expiries_per_base_and_margin() -> None:
    now = 1000.0
    mk = lambda n, base, exp, inv=False: InstrumentInfo(D, n, base, "USD", inverse=inv, expiry=exp)  # noqa: E731
    listed = [mk("B3", "BTC", 3000.0), mk("B1", "BTC", 1500.0), mk("B0", "BTC", 900.0), mk("B2", "BTC", 2000.0),
              mk("E1", "ETH", 1500.0), mk("S1", "SOL", 1500.0), mk("BI", "BTC", 5000.0, True)]  # fmt: skip
    assert [i.instrument for i in dated.select(listed, ["btc", "ETH"], 2, now)] == ["B1", "B2", "BI", "E1"]
    assert [i.instrument for i in dated.select(listed, ["BTC"], None, now)] == ["B1", "B2", "B3", "BI"]
    # a contract a configured position holds is followed beyond the nearest and outside the bases;
    # a delivered one is not
    assert [i.instrument for i in dated.select(listed, ["BTC"], 1, now, held={"B3", "B0"})] == ["B1", "B3", "BI"]
    assert [i.instrument for i in dated.select(listed, ["ETH"], 4, now, held={"S1"})] == ["E1", "S1"]


def test_futures_configuration_defaults_and_every_expiry() -> None:
    fc = Config().exchanges[B].futures
    assert (fc.enabled, fc.bases, fc.nearest, fc.all_expiries) == (True, ["BTC", "ETH"], 4, False)
    cfg = Config.model_validate({"exchanges": {"okx": {"futures": {"bases": ["SOL"], "all_expiries": True}}}})
    fc = cfg.exchanges[OK].futures
    assert fc.bases == ["SOL"] and fc.all_expiries
    with pytest.raises(ValueError, match="nearest"):
        Config.model_validate({"exchanges": {"okx": {"futures": {"nearest": 0}}}})


# ---- the curve: views against an independent computation ------------------------------------------

NOW = 1_764_489_600.0  # 2025-11-30 08:00 UTC
DAY = 86400.0


def _state(futures: list[tuple[str, float, float]], perp_mark: float, perp_index: float, rate: float) -> MarketState:
    """Binance: the BTCUSDT perpetual (8 h funding ``rate``) and futures (id, days to expiry, mark)."""
    st = MarketState(clock=lambda: NOW)
    st.register(InstrumentInfo(B, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0))
    st.apply(MarketUpdate(B, "BTCUSDT", NOW, perp_mark, perp_index, rate, NOW + 3600), NOW)
    infos = [InstrumentInfo(B, n, "BTC", "USDT", expiry=NOW + d * DAY) for n, d, _ in futures]
    st.set_futures(B, infos)
    for n, _, mark in futures:
        st.apply(MarketUpdate(B, n, NOW, mark, None), NOW)  # no index with the future: the perpetual's
    return st


def test_basis_annualised_and_implied_funding_equal_a_hand_computation() -> None:
    index = 90_000.0
    rate = 0.0001  # per 8 h
    futs = [("BTCUSDT_A", 7.0, 90_450.0), ("BTCUSDT_B", 90.0, 91_800.0), ("BTCUSDT_C", 181.5, 89_100.0)]
    st = _state(futs, 90_010.0, index, rate)
    views = {v.st.info.instrument: v for v in MarketViews(Config(), st).futures(NOW)}
    # by hand: 450 / 90000 = 0.005; 1800 / 90000 = 0.02; -900 / 90000 = -0.01
    expected = {
        "BTCUSDT_A": (0.005, 0.005 * 365 / 7, 0.005 / 21),
        "BTCUSDT_B": (0.02, 0.02 * 365 / 90, 0.02 / 270),
        "BTCUSDT_C": (-0.01, -0.01 * 365 / 181.5, -0.01 / 544.5),
    }
    for name, (basis, ann, implied) in expected.items():
        v = views[name]
        assert v.index_price == index
        assert v.basis_ratio == pytest.approx(basis, rel=1e-12)
        assert v.basis_annualized == pytest.approx(ann, rel=1e-12)
        assert v.implied_funding_8h == pytest.approx(implied, rel=1e-12)
        assert v.implied_minus_actual_bp == pytest.approx((implied - rate) * 10_000, rel=1e-9)
        assert v.days_to_expiry == pytest.approx(dict((n, d) for n, d, _ in futs)[name])
    # the 7-day contract at 0.5 % basis is 26 %/yr: the carry desks' figure
    assert views["BTCUSDT_A"].basis_annualized == pytest.approx(0.2607142857142857)


def test_under_one_day_publishes_basis_but_no_annualised_figures() -> None:
    st = _state([("BTCUSDT_X", 0.25, 90_090.0)], 90_000.0, 90_000.0, 0.0001)
    [v] = MarketViews(Config(), st).futures(NOW)
    assert v.basis_ratio == pytest.approx(0.001)
    assert v.days_to_expiry == pytest.approx(0.25)
    assert v.basis_annualized is None and v.implied_funding_8h is None and v.implied_minus_actual_bp is None
    assert all(math.isfinite(x) for x in (v.mark_price or 0.0, v.expiry, v.days_to_expiry))


def test_an_expired_contract_leaves_the_views_and_the_scrape() -> None:
    t = [NOW]
    st = _state([("BTCUSDT_OLD", 0.5, 90_100.0), ("BTCUSDT_NEW", 91.0, 91_000.0)], 90_000.0, 90_000.0, 0.0001)
    st.clock = lambda: t[0]
    cfg = Config()
    text = build_registry(cfg, st, process=False).render().decode()
    assert 'instrument="BTCUSDT_OLD"' in text and 'expiry="' in text
    t[0] = NOW + 0.5 * DAY + 1  # past the delivery; the prices are stale too: only the expiry facts stay
    names = [v.st.info.instrument for v in MarketViews(cfg, st).futures()]
    assert names == ["BTCUSDT_NEW"]
    text = build_registry(cfg, st, process=False).render().decode()
    assert "BTCUSDT_OLD" not in text
    assert 'fr_future_expiry_timestamp_seconds{base="BTC",exchange="binance",expiry="' in text


def test_collector_labels_and_values() -> None:
    st = _state([("BTCUSDT_260327", 117.0, 91_800.0)], 90_000.0, 90_000.0, 0.0001)
    text = build_registry(Config(), st, process=False).render().decode()
    lab = 'base="BTC",exchange="binance",expiry="2026-03-27",instrument="BTCUSDT_260327",quote="USDT"'
    assert f"fr_future_mark_price{{{lab}}} 91800.0" in text
    assert f"fr_future_days_to_expiry{{{lab}}} 117.0" in text
    assert f"fr_basis_ratio{{{lab}}} 0.02" in text
    for name in ("fr_basis_annualized_ratio", "fr_implied_funding_rate_8h", "fr_implied_minus_actual_funding_bp"):
        assert f"{name}{{{lab}}}" in text


def test_no_futures_no_families() -> None:
    st = MarketState(clock=lambda: NOW)
    text = build_registry(Config(), st, process=False).render().decode()
    assert "fr_basis" not in text and "fr_future_" not in text


def test_stale_future_price_drops_the_derived_series() -> None:
    t = [NOW]
    st = _state([("BTCUSDT_A", 30.0, 90_900.0)], 90_000.0, 90_000.0, 0.0001)
    st.clock = lambda: t[0]
    t[0] = NOW + 120.0  # older than the 30 s price limit
    [v] = MarketViews(Config(), st).futures()
    assert v.mark_price is None and v.basis_ratio is None and v.basis_annualized is None


def test_api_state_lists_the_dated_contracts_per_exchange() -> None:
    t = [NOW]
    st = _state([("BTCUSDT_A", 90.0, 91_800.0), ("BTCUSDT_X", 0.25, 90_090.0)], 90_010.0, 90_000.0, 0.0001)
    st.clock = lambda: t[0]
    cfg = Config()
    doc = orjson.loads(orjson.dumps(build_state_document(cfg, st, MarketViews(cfg, st))))  # as served
    assert list(doc["futures"]) == ["binance"]
    x, a = doc["futures"]["binance"]  # by expiry
    # by hand: 1800 / 90000 = 0.02 over 90 days; 90 / 90000 = 0.001 over a quarter of a day
    assert a == {
        "instrument": "BTCUSDT_A",
        "base": "BTC",
        "quote": "USDT",
        "inverse": False,
        "stale": False,
        "expiry": "2026-02-28T08:00:00Z",
        "expiry_timestamp": NOW + 90 * DAY,
        "days_to_expiry": 90.0,
        "mark_price": 91_800.0,
        "index_price": 90_000.0,
        "estimated_settle_price": None,
        "basis_ratio": pytest.approx(0.02, rel=1e-12),
        "basis_annualized": pytest.approx(0.02 * 365 / 90, rel=1e-12),
        "implied_funding_rate_8h": pytest.approx(0.02 / 270, rel=1e-12),
        "actual_funding_rate_8h": pytest.approx(0.0001, rel=1e-12),
        "implied_minus_actual_bp": pytest.approx((0.02 / 270 - 0.0001) * 1e4, rel=1e-9),
        "price_age_seconds": 0.0,
    }
    assert x["instrument"] == "BTCUSDT_X" and x["expiry"] == "2025-11-30T14:00:00Z"
    assert x["basis_ratio"] == pytest.approx(0.001) and x["days_to_expiry"] == pytest.approx(0.25)
    assert x["basis_annualized"] is None and x["implied_funding_rate_8h"] is None
    assert x["implied_minus_actual_bp"] is None
    # stale prices: null, never the old number; past its delivery a contract is gone
    t[0] = NOW + 0.25 * DAY + 1.0
    doc = build_state_document(cfg, st, MarketViews(cfg, st))
    [a] = doc["futures"]["binance"]
    assert a["instrument"] == "BTCUSDT_A" and a["stale"] is True and a["price_age_seconds"] == 0.25 * DAY + 1.0
    assert a["mark_price"] is None and a["basis_ratio"] is None and a["implied_minus_actual_bp"] is None
    assert a["days_to_expiry"] == pytest.approx(90.0 - 0.25 - 1.0 / DAY)


def test_api_state_without_futures_has_an_empty_block() -> None:
    st = MarketState(clock=lambda: NOW)
    assert build_state_document(Config(), st, MarketViews(Config(), st))["futures"] == {}
