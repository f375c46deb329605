"""Every recorded message in ../shared/samples goes through the right parser.

Expected values are read from the sample itself (the stdlib ``json`` module, independently of the
parsers' orjson path): the parsed number must equal the float of the exchange's string.
``test_every_sample_file_is_checked`` fails when a sample file is added without a check here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.feeds.binance import BinanceFeed
from exporter.feeds.binance import _fast as _binance_fast
from exporter.feeds.bybit import BybitFeed, _decode_ticker_message
from exporter.feeds.bybit import _fast as _bybit_fast
from exporter.feeds.deribit import DeribitFeed
from exporter.feeds.deribit import _fast as _deribit_fast
from exporter.feeds.okx import OkxFeed
from exporter.feeds.okx import _fast as _okx_fast
from exporter.model import (
    Exchange,
    FundingSettlement,
    FundingUpdate,
    InstrumentInfo,
    Liquidation,
    MarketUpdate,
    OpenInterestUpdate,
    ParseError,
    Record,
    Side,
)
from exporter.state import MarketState

B, Y, OK, D = Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX, Exchange.DERIBIT
CHECKS: dict[str, Callable[[Path], None]] = {}


def check(name: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        CHECKS[name] = fn
        return fn

    return register


def messages(path: Path) -> list[str]:
    """One message per non-empty line (.jsonl) or the whole file (.json)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [line for line in text.splitlines() if line.strip()]
    return [text]


def ws(ex: Exchange, raw: str, ctx: FeedContext | None = None) -> list[Record]:
    return feed_for(ex).parse_ws(raw.encode(), ctx or FeedContext(ex))


def ms(v: Any) -> float:
    return int(v) / 1000


def ctx_of(ex: Exchange, *infos: InstrumentInfo) -> FeedContext:
    return FeedContext(ex, {i.instrument: i for i in infos})


def okx_instruments(shared: Path) -> list[InstrumentInfo]:
    body = (shared / "samples/okx/rest_instruments_swap_2022-05_excerpt.json").read_bytes()
    return feed_for(OK).parse_instruments(body)


# ---- Binance ------------------------------------------------------------------------------------


def _check_mark(u: Record, d: dict[str, Any]) -> None:
    assert isinstance(u, MarketUpdate)
    assert u.instrument == d["s"]
    assert u.mark_price == float(d["p"])
    assert u.index_price == (float(d["i"]) if "i" in d else None)
    assert u.funding_rate == float(d["r"])
    assert u.next_funding_time == ms(d["T"])
    assert u.event_time == ms(d["E"])


@check("binance/ws_markprice_tardis.jsonl")
def _binance_mark_tardis(path: Path) -> None:
    raws = messages(path)
    for raw in raws:
        (u,) = ws(B, raw)
        _check_mark(u, json.loads(raw)["data"])
    (old,) = ws(B, raws[0])
    assert old.index_price is None  # the 2019 capture has no index price: unknown, not 0


@check("binance/ws_markprice_cmp.jsonl")
def _binance_mark_cmp(path: Path) -> None:
    single, array = messages(path)
    (u,) = ws(B, single)
    _check_mark(u, json.loads(single)["data"])
    rows = json.loads(array)["data"]
    got = ws(B, array)
    assert len(got) == len(rows) == 2
    for u, d in zip(got, rows, strict=True):
        _check_mark(u, d)
    eth = ctx_of(B, InstrumentInfo(B, "ETHUSDT", "ETH", "USDT"))
    assert [u.instrument for u in ws(B, array, eth)] == ["ETHUSDT"]


@check("binance/ws_forceorder_tardis.jsonl")
def _binance_force_order(path: Path) -> None:
    (raw,) = messages(path)
    o = json.loads(raw)["data"]["o"]
    (liq,) = ws(B, raw)
    assert isinstance(liq, Liquidation)
    assert o["S"] == "BUY" and liq.side is Side.SHORT  # a BUY order closes a short position
    assert liq.quantity_base == float(o["z"])  # filled, not l (which exceeds q in this capture)
    assert liq.price == float(o["ap"])
    assert liq.notional_usd == pytest.approx(float(o["z"]) * float(o["ap"]))
    assert liq.event_time == ms(o["T"])


@check("binance/ws_ticker_cmp.jsonl")
@check("binance/ws_trade_tardis.jsonl")
def _binance_unused_streams(path: Path) -> None:
    for raw in messages(path):
        data = json.loads(raw)["data"]
        assert {d["e"] for d in (data if isinstance(data, list) else [data])} <= {"24hrTicker", "trade"}
        assert ws(B, raw) == []  # streams the exporter does not subscribe to: valid, nothing to record


@check("binance/rest_exchangeinfo_2021-07.json")
def _binance_exchange_info(path: Path) -> None:
    body = json.loads(path.read_text())
    got = feed_for(B).parse_instruments(path.read_bytes())
    want = [s for s in body["symbols"] if s["contractType"] == "PERPETUAL" and s["status"] == "TRADING"]
    assert [i.instrument for i in got] == [s["symbol"] for s in want]
    assert len(got) < len(body["symbols"])  # the quarterly and pending symbols are left out
    by_id = {i.instrument: i for i in got}
    for s in want:
        i = by_id[s["symbol"]]
        assert (i.base, i.quote) == (s["baseAsset"], s["quoteAsset"])
        assert i.funding_interval_s == 28800.0 and not i.inverse


@check("binance/rest_openinterest_cmp.jsonl")
def _binance_open_interest(path: Path) -> None:
    coin_m, usdt_m = messages(path)
    d = json.loads(usdt_m)
    (u,) = feed_for(B).parse_open_interest(usdt_m.encode(), FeedContext(B))
    assert (u.instrument, u.open_interest_base, u.event_time) == (d["symbol"], float(d["openInterest"]), ms(d["time"]))
    # COIN-M: the count is contracts of a fixed USD value; only usable with the contract size known
    c = json.loads(coin_m)
    ctx = ctx_of(B, InstrumentInfo(B, c["symbol"], "BTC", "USD", contract_size=100.0, inverse=True))
    (cm,) = feed_for(B).parse_open_interest(coin_m.encode(), ctx)
    assert cm.open_interest_usd == float(c["openInterest"]) * 100.0 and cm.open_interest_base is None
    with pytest.raises(ValueError, match="contract size"):
        feed_for(B).parse_open_interest(coin_m.encode(), FeedContext(B))


@check("binance/rest_openinterest_polled_tardis.jsonl")
def _binance_open_interest_polled(path: Path) -> None:
    (raw,) = messages(path)
    data = json.loads(raw)["data"]  # tardis wraps the REST body in a pseudo-stream envelope
    (u,) = feed_for(B).parse_open_interest(orjson.dumps(data), FeedContext(B))
    assert (u.instrument, u.open_interest_base, u.event_time) == (data["symbol"], float(data["openInterest"]), None)


# ---- Bybit --------------------------------------------------------------------------------------


@check("bybit/ws_tickers_v5_tardis.jsonl")
def _bybit_tickers(path: Path) -> None:
    raws = messages(path)
    state = MarketState(clock=lambda: 1680673823.0)
    for sym, quote in (("BTCUSD", "USD"), ("BTCUSDU23", "USD"), ("BTCUSDT", "USDT")):
        state.register(InstrumentInfo(Y, sym, "BTC", quote, inverse=quote == "USD"))
    ctx = ctx_of(Y, *(st.info for st in state.instruments.values()))
    for raw in raws:
        msg = json.loads(raw)
        d = msg["data"]
        (u,) = ws(Y, raw, ctx)
        assert isinstance(u, MarketUpdate) and u.instrument == d["symbol"]
        assert u.event_time == ms(msg["ts"])
        for key, attr in (("markPrice", "mark_price"), ("indexPrice", "index_price"), ("fundingRate", "funding_rate")):
            want = float(d[key]) if d.get(key) else None  # absent (delta) or "" (dated future): None
            assert getattr(u, attr) == want, (key, raw[:60])
        want_next = ms(d["nextFundingTime"]) if d.get("nextFundingTime") else None
        assert u.next_funding_time == want_next
        inverse = d["symbol"] != "BTCUSDT"
        oi, value = d.get("openInterest"), d.get("openInterestValue")  # both sides (§3.2): halved
        want_usd = float(oi) / 2 if inverse and oi else float(value) / 2 if value and not inverse else None
        assert u.open_interest_usd == want_usd
        if msg["type"] == "delta":
            assert u.mark_price is None and u.index_price is None  # absent in the delta: unchanged
        state.apply(u)
    btc = state.instruments[(Y, "BTCUSD")]
    snapshot, delta = (json.loads(r)["data"] for r in raws[:2])
    assert btc.mark_price == float(snapshot["markPrice"])  # kept through the delta
    assert btc.open_interest_usd == float(delta["openInterest"]) / 2  # updated by the delta
    assert state.instruments[(Y, "BTCUSDU23")].funding_rate is None
    lin = state.instruments[(Y, "BTCUSDT")]
    assert lin.open_interest_base == float(json.loads(raws[4])["data"]["openInterest"]) / 2


@check("bybit/ws_ticker_linear_nautilus.json")
def _bybit_ticker_linear(path: Path) -> None:
    (raw,) = messages(path)
    d = json.loads(raw)["data"]
    (u,) = ws(Y, raw)
    assert isinstance(u, MarketUpdate)
    assert (u.mark_price, u.index_price, u.funding_rate) == (
        float(d["markPrice"]),
        float(d["indexPrice"]),
        float(d["fundingRate"]),
    )
    assert u.funding_interval_s == int(d["fundingIntervalHour"]) * 3600
    # no singleOpenInterest in this capture: openInterest counts both sides (exchanges.md §3.2, §6.4)
    want = (float(d["openInterest"]) / 2, float(d["openInterestValue"]) / 2)
    assert (u.open_interest_base, u.open_interest_usd) == want


@check("bybit/ws_liquidation_v5_tardis.jsonl")
def _bybit_liquidations(path: Path) -> None:
    for raw in messages(path):
        msg = json.loads(raw)
        rows = msg["data"] if isinstance(msg["data"], list) else [msg["data"]]
        got = ws(Y, raw)
        assert len(got) == len(rows)
        for liq, d in zip(got, rows, strict=True):
            assert isinstance(liq, Liquidation)
            side = d.get("S", d.get("side"))
            size, price = float(d.get("v", d.get("size"))), float(d.get("p", d.get("price")))
            assert liq.side is (Side.LONG if side == "Buy" else Side.SHORT)  # position side
            assert liq.price == price
            assert liq.event_time == ms(d.get("T", d.get("updatedTime")))
            if liq.instrument.endswith("USD"):  # inverse: size counts USD
                assert liq.notional_usd == size
                assert liq.quantity_base == pytest.approx(size / price)
            else:
                assert liq.quantity_base == size
                assert liq.notional_usd == pytest.approx(size * price)


@check("bybit/rest_funding_history_nautilus.json")
def _bybit_funding_history(path: Path) -> None:
    rows = json.loads(path.read_text())["result"]["list"]
    got = feed_for(Y).parse_funding_history(path.read_bytes(), FeedContext(Y))
    assert all(isinstance(s, FundingSettlement) for s in got)
    want = sorted((ms(r["fundingRateTimestamp"]), float(r["fundingRate"])) for r in rows)
    assert [(s.funding_time, s.rate) for s in got] == want  # oldest first
    gap = want[1][0] - want[0][0]
    assert all(s.interval_s == gap for s in got)


# ---- OKX ----------------------------------------------------------------------------------------


@check("okx/ws_public_v5_swap_tardis.jsonl")
def _okx_public(path: Path) -> None:
    for raw in messages(path):
        msg = json.loads(raw)
        channel, (d,) = msg["arg"]["channel"], msg["data"]
        got = ws(OK, raw)
        if channel == "tickers":
            assert got == []
            continue
        (u,) = got
        assert isinstance(u, MarketUpdate)
        if channel == "funding-rate":
            assert u.funding_rate == (float(d["fundingRate"]) if "fundingRate" in d else None)
            assert u.next_funding_time == ms(d["fundingTime"])
            assert u.funding_interval_s is None  # no second settlement time in the 2021 shape
        elif channel == "index-tickers":
            assert (u.instrument, u.index_price) == (d["instId"] + "-SWAP", float(d["idxPx"]))
        elif channel == "mark-price":
            assert (u.mark_price, u.event_time) == (float(d["markPx"]), ms(d["ts"]))
        elif channel == "open-interest":
            assert u.open_interest_base == float(d["oiCcy"]) and u.open_interest_usd is None
        else:
            pytest.fail(f"unexpected channel {channel}")


@check("okx/ws_funding_rate_index_2026_tardis.jsonl")
def _okx_2026(path: Path) -> None:
    index_raw, funding_raw = messages(path)
    idx = json.loads(index_raw)["data"][0]
    ctx = ctx_of(OK, *okx_instruments(path.parents[2]))
    (u,) = ws(OK, index_raw, ctx)  # BTC-USD prices the inverse swap BTC-USD-SWAP
    assert (u.instrument, u.index_price, u.event_time) == ("BTC-USD-SWAP", float(idx["idxPx"]), ms(idx["ts"]))
    d = json.loads(funding_raw)["data"][0]
    f, s = ws(OK, funding_raw)
    assert isinstance(f, MarketUpdate) and isinstance(s, FundingSettlement)
    assert f.funding_rate == float(d["fundingRate"])
    assert f.next_funding_time == ms(d["fundingTime"])
    assert f.funding_interval_s == ms(d["nextFundingTime"]) - ms(d["fundingTime"])
    assert (f.funding_cap, f.funding_floor) == (float(d["maxFundingRate"]), float(d["minFundingRate"]))
    assert f.premium == float(d["premium"])
    assert d["settState"] == "settled"
    assert (s.funding_time, s.rate) == (ms(d["prevFundingTime"]), float(d["settFundingRate"]))


@check("okx/ws_funding_ticker_cmp.jsonl")
def _okx_funding_cmp(path: Path) -> None:
    for raw in messages(path):
        msg = json.loads(raw)
        got = ws(OK, raw)
        if msg["arg"]["channel"] == "tickers":
            assert got == []
            continue
        d = msg["data"][0]
        (u,) = got
        assert isinstance(u, MarketUpdate)
        assert u.funding_rate == float(d["fundingRate"])  # not nextFundingRate
        assert u.funding_rate != float(d["nextFundingRate"])
        assert u.next_funding_time == ms(d["fundingTime"])


@check("okx/ws_liquidation_orders_tardis.jsonl")
def _okx_liquidations(path: Path) -> None:
    raw = messages(path)[0]
    row = json.loads(raw)["data"][0]
    (det,) = row["details"]
    # Without the contract size the contracts cannot become coin: nothing rather than a wrong number.
    assert ws(OK, raw) == []
    # XRP-USD futures are inverse, 10 USD a contract (not in the swap excerpt: given here)
    xrp = InstrumentInfo(OK, row["instId"], "XRP", "USD", contract_size=10.0, inverse=True)
    (liq,) = ws(OK, raw, ctx_of(OK, xrp))
    assert isinstance(liq, Liquidation)
    assert det["posSide"] == "short" and liq.side is Side.SHORT
    assert liq.price == float(det["bkPx"])
    assert liq.notional_usd == float(det["sz"]) * 10.0
    assert liq.quantity_base == pytest.approx(float(det["sz"]) * 10.0 / float(det["bkPx"]))
    assert liq.event_time == ms(det["ts"])
    # The same schema on a SWAP, converted with ctVal from the recorded instrument list.
    swaps = {i.instrument: i for i in okx_instruments(path.parents[2])}
    msg = json.loads(raw)
    msg["arg"]["instType"] = "SWAP"
    msg["data"][0].update(instId="ETH-USDT-SWAP", instType="SWAP", instFamily="ETH-USDT", uly="ETH-USDT")
    (swap,) = feed_for(OK).parse_ws(orjson.dumps(msg), FeedContext(OK, swaps))
    ct_val = swaps["ETH-USDT-SWAP"].contract_size
    assert isinstance(swap, Liquidation)
    assert swap.quantity_base == pytest.approx(float(det["sz"]) * ct_val)
    assert swap.notional_usd == pytest.approx(float(det["sz"]) * ct_val * float(det["bkPx"]))


@check("okx/ws_tickers_swap_with_acks_cryptofeed.jsonl")
def _okx_acks(path: Path) -> None:
    raws = messages(path)
    assert sum(json.loads(r).get("event") == "subscribe" for r in raws) == 3
    for raw in raws:
        assert ws(OK, raw) == []  # acks, and a tickers push the exporter does not use


@check("okx/rest_funding_rate_history_nautilus.json")
def _okx_funding_history(path: Path) -> None:
    rows = json.loads(path.read_text())["data"]
    got = feed_for(OK).parse_funding_history(path.read_bytes(), FeedContext(OK))
    want = sorted((ms(r["fundingTime"]), float(r["realizedRate"])) for r in rows)  # the rate actually charged
    assert [(s.funding_time, s.rate) for s in got] == want
    assert all(s.interval_s == want[1][0] - want[0][0] for s in got)


@check("okx/rest_instruments_swap_2022-05_excerpt.json")
def _okx_instruments(path: Path) -> None:
    rows = json.loads(path.read_text())["data"]
    got = {i.instrument: i for i in feed_for(OK).parse_instruments(path.read_bytes())}
    assert set(got) == {r["instId"] for r in rows}
    for r in rows:
        i = got[r["instId"]]
        assert i.contract_size == float(r["ctVal"])
        assert i.inverse is (r["ctType"] == "inverse")
        assert f"{i.base}-{i.quote}" == r["uly"]


@check("okx/rest_open_interest_cmp.jsonl")
def _okx_open_interest(path: Path) -> None:
    instruments = {i.instrument: i for i in okx_instruments(path.parents[2])}
    for raw in messages(path):
        rows = json.loads(raw)["data"]
        got = feed_for(OK).parse_open_interest(raw.encode(), FeedContext(OK, instruments))
        assert [u.instrument for u in got] == [r["instId"] for r in rows]
        for u, r in zip(got, rows, strict=True):
            assert u.open_interest_base == float(r["oiCcy"])
            # inverse swaps: contracts of ctVal USD each
            assert u.open_interest_usd == pytest.approx(float(r["oi"]) * instruments[r["instId"]].contract_size)
            assert u.event_time == ms(r["ts"])


# ---- Deribit ------------------------------------------------------------------------------------


def _deribit_notifications(path: Path) -> None:
    for raw in messages(path):
        params = json.loads(raw)["params"]
        got = ws(D, raw)
        if params["channel"].startswith("ticker."):
            d = params["data"]
            (u,) = got
            assert isinstance(u, MarketUpdate)
            assert (u.mark_price, u.index_price) == (d["mark_price"], d["index_price"])
            assert u.funding_rate == u.funding_rate_8h == d["funding_8h"]
            assert u.funding_interval_s == 28800
            assert u.open_interest_usd == d["open_interest"]  # inverse perpetual: USD
            assert u.event_time == ms(d["timestamp"])
            continue
        trades = params["data"]
        liquidated = [t for t in trades if "liquidation" in t]
        assert len(got) == len(liquidated)
        for liq, t in zip(got, liquidated, strict=True):
            assert isinstance(liq, Liquidation)
            assert liq.notional_usd == t["amount"]  # inverse perpetual: amount counts USD
            assert liq.quantity_base == pytest.approx(t["amount"] / t["price"])
            # T: the taker (direction) was liquidated; M: the maker, on the other side
            taker_long = t["direction"] == "sell"
            long_liquidated = taker_long if t["liquidation"] == "T" else not taker_long
            assert liq.side is (Side.LONG if long_liquidated else Side.SHORT)


@check("deribit/ws_perpetual_ticker_trades_tardis.jsonl")
def _deribit_tardis(path: Path) -> None:
    _deribit_notifications(path)
    flags = [(r, json.loads(r)["params"]["data"]) for r in messages(path) if '"liquidation"' in r]
    assert {d[0]["liquidation"] for _, d in flags} == {"T", "M"}
    for raw, (t,) in flags:
        (liq,) = ws(D, raw)
        assert isinstance(liq, Liquidation)
        # T + sell: a long taker liquidated; M + buy: the maker sold, so a long maker liquidated
        assert (t["liquidation"], t["direction"], liq.side) in {("T", "sell", Side.LONG), ("M", "buy", Side.LONG)}


@check("deribit/ws_perpetual_ticker_trades_cmp.jsonl")
@check("deribit/ws_ticker_trades_2025_nautilus.jsonl")
def _deribit_other(path: Path) -> None:
    _deribit_notifications(path)


@check("deribit/rest_book_summary_by_currency_cmp.jsonl")
def _deribit_book_summary(path: Path) -> None:
    (raw,) = messages(path)
    (row,) = json.loads(raw)["result"]
    (u,) = feed_for(D).parse_open_interest(raw.encode(), FeedContext(D))
    assert (u.instrument, u.open_interest_usd, u.open_interest_base) == (
        row["instrument_name"],
        float(row["open_interest"]),
        None,
    )


@check("deribit/rest_get_instruments_btc_perpetual_2021-07_excerpt.json")
def _deribit_instruments(path: Path) -> None:
    (row,) = json.loads(path.read_text())["result"]
    (i,) = feed_for(D).parse_instruments(path.read_bytes())
    assert (i.instrument, i.base, i.quote) == (row["instrument_name"], row["base_currency"], row["quote_currency"])
    assert i.contract_size == row["contract_size"] and i.inverse
    assert i.funding_interval_s == 28800.0


# ---- the tests ----------------------------------------------------------------------------------


def test_every_sample_file_is_checked(shared_dir: Path) -> None:
    files = {
        str(p.relative_to(shared_dir / "samples"))
        for p in (shared_dir / "samples").rglob("*")
        if p.is_file() and p.suffix in (".json", ".jsonl")
    }
    assert files, "no sample files found"
    assert files == set(CHECKS), f"unchecked: {sorted(files - set(CHECKS))}, missing: {sorted(set(CHECKS) - files)}"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_sample(shared_dir: Path, name: str) -> None:
    CHECKS[name](shared_dir / "samples" / name)


def binance_fast(raw: bytes) -> object:
    return _binance_fast(raw, FeedContext(B))


def bybit_fast(raw: bytes) -> object:
    try:
        m = _decode_ticker_message(raw)
    except ValueError:  # a dated future's "" funding fields: the strict path takes those
        return None
    return m if m.topic.startswith("tickers.") else None


def okx_fast(raw: bytes) -> object:
    try:
        return _okx_fast(raw, FeedContext(OK)) or None
    except ValueError:  # msgspec refuses shapes other than price pushes
        return None


def deribit_fast(raw: bytes) -> object:
    return _deribit_fast(raw, FeedContext(D))


STRICT = {
    B: BinanceFeed(fast=False),
    Y: BybitFeed(fast=False),
    OK: OkxFeed(fast=False),
    D: DeribitFeed(fast=False),
}
WS_SAMPLES = sorted(n for n in CHECKS if "/ws_" in n)


@pytest.mark.parametrize("name", WS_SAMPLES)
def test_fast_and_strict_paths_agree(shared_dir: Path, name: str) -> None:
    ex = Exchange(name.split("/")[0])
    instruments = okx_instruments(shared_dir) if ex is OK else []
    for ctx in (FeedContext(ex), ctx_of(ex, *instruments)):
        for raw in messages(shared_dir / "samples" / name):
            fast = feed_for(ex).parse_ws(raw.encode(), ctx)
            assert fast == STRICT[ex].parse_ws(raw.encode(), ctx)
            assert fast == feed_for(ex).parse_ws(raw, ctx)  # str frames too


@pytest.mark.parametrize(
    ("name", "fast"),
    [
        ("binance/ws_markprice_cmp.jsonl", binance_fast),
        ("bybit/ws_tickers_v5_tardis.jsonl", bybit_fast),
        ("okx/ws_public_v5_swap_tardis.jsonl", okx_fast),
        ("deribit/ws_ticker_trades_2025_nautilus.jsonl", deribit_fast),
    ],
)
def test_hot_frames_take_the_fast_path(shared_dir: Path, name: str, fast: Callable[[bytes], object]) -> None:
    # The typed path must really handle the frequent frames (not silently fall back every time).
    handled = [fast(raw.encode()) is not None for raw in messages(shared_dir / "samples" / name)]
    assert sum(handled) >= 2


# Liquidations and the slower pushes have typed paths too (issue 10: the cost per frame against
# cryptofeed). Each recorded frame must be handled by the typed path itself (no exception, no
# fallback) and give exactly what the strict path gives.
TYPED_LIQUIDATION_FRAMES = [
    ("binance/ws_forceorder_tardis.jsonl", 1, _binance_fast, Liquidation),
    ("bybit/ws_liquidation_v5_tardis.jsonl", 1, _bybit_fast, Liquidation),
    ("bybit/ws_liquidation_v5_tardis.jsonl", 2, _bybit_fast, Liquidation),
    ("bybit/ws_liquidation_v5_tardis.jsonl", 3, _bybit_fast, Liquidation),
    ("deribit/ws_perpetual_ticker_trades_tardis.jsonl", 4, _deribit_fast, Liquidation),
    ("deribit/ws_perpetual_ticker_trades_tardis.jsonl", 5, _deribit_fast, Liquidation),
    ("okx/ws_funding_rate_index_2026_tardis.jsonl", 2, _okx_fast, FundingUpdate),
    ("okx/ws_public_v5_swap_tardis.jsonl", 5, _okx_fast, OpenInterestUpdate),
]


@pytest.mark.parametrize(
    ("name", "line", "fast", "kind"),
    TYPED_LIQUIDATION_FRAMES,
    ids=[f"{n}:{ln}" for n, ln, _, _ in TYPED_LIQUIDATION_FRAMES],
)
def test_liquidations_and_funding_pushes_take_the_typed_path(
    shared_dir: Path, name: str, line: int, fast: Callable[[bytes, FeedContext], object], kind: type
) -> None:
    ex = Exchange(name.split("/")[0])
    raw = messages(shared_dir / "samples" / name)[line - 1].encode()
    ctx = FeedContext(ex)
    typed = fast(raw, ctx)
    assert isinstance(typed, list) and typed and type(typed[0]) is kind
    assert typed == STRICT[ex].parse_ws(raw, ctx)


def test_deribit_trades_without_a_liquidation_give_nothing_and_a_non_array_batch_is_refused() -> None:
    batch = b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.100ms","data":'
    trade = b'{"timestamp":1765531356452,"price":92294.5,"amount":10.0,"direction":"sell",'
    trade += b'"instrument_name":"BTC-PERPETUAL"}'
    assert DeribitFeed().parse_ws(batch + b"[" + trade + b"]}}", FeedContext(D)) == []
    with pytest.raises(ParseError):
        DeribitFeed().parse_ws(batch + trade + b"}}", FeedContext(D))
