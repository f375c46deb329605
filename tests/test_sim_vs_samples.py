"""Every message kind the simulator produces has the shape of the real recorded message of that kind.

Shape = the same field names and JSON types (numbers sent as strings stay strings), recursively.
Messages are captured from a running simulator over loopback sockets (WS frames during a cascade, so
liquidation messages exist, and REST bodies). Allowed differences are listed per case with the reason:
``extra`` = fields the simulator sends that the (older) capture predates, as documented in
../shared/reference/exchanges.md; ``absent`` = sample fields the simulator legitimately leaves out.
Values may differ (prices, times, instrument ids).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from support import wait_until

from exporter.clock import VirtualClock
from exporter.model import Exchange
from exporter.sim.main import Simulator
from exporter.sim.server import SimOptions

# ----------------------------------------------------------------------------------------------
# shape comparison


def jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def shape_diff(
    sim: Any,
    sample: Any,
    path: str = "",
    extra: frozenset[str] = frozenset(),
    absent: frozenset[str] = frozenset(),
    subset: frozenset[str] = frozenset(),
) -> list[str]:
    """Differences between the simulator's message and the sample, as readable strings.

    Paths: ``data.p``, ``data[].details[].sz``. ``subset``: objects at these paths are compared only on
    their common keys (a Bybit delta carries only the fields that changed).
    """
    out: list[str] = []
    ts, tm = jtype(sim), jtype(sample)
    if ts != tm:
        return [f"{path or '<root>'}: simulator {ts} ({sim!r:.40}) vs sample {tm} ({sample!r:.40})"]
    if tm == "string" and _numeric(sample) and not _numeric(sim) and sample != "":
        out.append(f"{path}: sample is a numeric string {sample!r}, simulator sent {sim!r}")
    if tm == "object":
        for k, v in sample.items():
            p = f"{path}.{k}" if path else k
            if k not in sim:
                if p not in absent and path not in subset:
                    out.append(f"{p}: missing in the simulator's message")
                continue
            out += shape_diff(sim[k], v, p, extra, absent, subset)
        for k in sim:
            p = f"{path}.{k}" if path else k
            if k not in sample and p not in extra and path not in subset:
                out.append(f"{p}: not in the sample")
    elif tm == "array" and sim and sample:
        out += shape_diff(sim[0], sample[0], f"{path}[]", extra, absent, subset)
    return out


def test_shape_diff_catches_names_and_types() -> None:
    assert shape_diff({"a": "1", "b": 2}, {"a": "1", "b": 2}) == []
    assert shape_diff({"a": 1}, {"a": "1"})  # number where the exchange sends a string
    assert shape_diff({"a": "1"}, {"a": "1", "c": 1})  # missing field
    assert shape_diff({"a": "1", "z": 1}, {"a": "1"})  # unknown field
    assert shape_diff({"a": "x"}, {"a": "1.5"})  # a numeric string must stay numeric
    assert shape_diff({"d": [{"x": 1}]}, {"d": [{"x": "1"}]}) == ["d[].x: simulator number (1) vs sample string ('1')"]


# ----------------------------------------------------------------------------------------------
# capture from a running simulator


async def _collect(ws: Any, frames: list[Any]) -> None:
    """Read until the connection is quiet: the market stands still, so what was published has arrived."""
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), 0.3)
        except TimeoutError:
            return
        frames.append(json.loads(raw))


async def _capture() -> dict[str, Any]:
    sim = Simulator(
        seed=9,
        base_port=0,
        tick_seconds=0.1,
        options=SimOptions(okx_funding_push_s=1.0),
        clock=VirtualClock(1_767_225_600.0 + 300.0),  # the market moves when advanced below
    )
    await sim.start()
    got: dict[str, Any] = {}
    try:
        urls = {ex: sim.urls(ex) for ex in Exchange}
        b = await websockets.connect(
            urls[Exchange.BINANCE][0] + "/market/stream?streams="
            "btcusdt@markPrice@1s/!markPrice@arr@1s/btcusdt@forceOrder"
        )
        y = await websockets.connect(urls[Exchange.BYBIT][0] + "/v5/public/linear")
        await y.send(json.dumps({"op": "subscribe", "args": ["tickers.BTCUSDT", "allLiquidation.BTCUSDT"]}))
        o = await websockets.connect(urls[Exchange.OKX][0] + "/ws/v5/public")
        await o.send(
            json.dumps(
                {
                    "op": "subscribe",
                    "args": [
                        {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
                        {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
                        {"channel": "index-tickers", "instId": "BTC-USDT"},
                        {"channel": "open-interest", "instId": "BTC-USDT-SWAP"},
                        {"channel": "liquidation-orders", "instType": "SWAP"},
                    ],
                }
            )
        )
        d = await websockets.connect(urls[Exchange.DERIBIT][0] + "/ws/api/v2")
        await d.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "public/subscribe",
                    "params": {"channels": ["ticker.BTC-PERPETUAL.100ms", "trades.BTC-PERPETUAL.100ms"]},
                }
            )
        )
        # every subscription is in place before the market moves (OKX: five channels, Deribit: two)
        subscribed = {Exchange.BINANCE: 3, Exchange.BYBIT: 2, Exchange.OKX: 5, Exchange.DERIBIT: 2}
        await wait_until(
            lambda: all(sum(len(c.topics) for c in sim.servers[ex].conns) >= n for ex, n in subscribed.items()),
            what="the subscriptions",
        )
        sim.market.set_scenario("cascade", 0.5)
        await sim.advance(5.0)  # 5 s of market time: the build-up and the crash, published at once
        frames: dict[str, list[Any]] = {"b": [], "y": [], "o": [], "d": []}
        await asyncio.gather(*(_collect(ws, frames[k]) for k, ws in (("b", b), ("y", y), ("o", o), ("d", d))))
        for ws in (b, y, o, d):
            await ws.close()
        for m in frames["b"]:
            got.setdefault("binance:" + m["stream"], m)
        for m in frames["y"]:
            key = "bybit:ack" if "op" in m else f"bybit:{m['topic'].split('.')[0]}:{m['type']}"
            got.setdefault(key, m)
        for m in frames["o"]:
            key = f"okx:{m['event']}" if "event" in m else f"okx:{m['arg']['channel']}"
            got.setdefault(key, m)
        for m in frames["d"]:
            if m.get("method") != "subscription":
                continue
            ch = m["params"]["channel"].split(".")[0]
            if ch == "ticker":
                got.setdefault("deribit:ticker", m)
            else:
                for item in m["params"]["data"]:
                    kind = "deribit:liq_trade" if "liquidation" in item else "deribit:trade"
                    got.setdefault(kind, {**m, "params": {**m["params"], "data": [item]}})
        async with httpx.AsyncClient() as h:

            async def rest(ex: Exchange, path: str, **params: Any) -> Any:
                r = await h.get(urls[ex][1] + path, params=params)
                r.raise_for_status()
                return r.json()

            got["rest:binance:openInterest"] = await rest(Exchange.BINANCE, "/fapi/v1/openInterest", symbol="BTCUSDT")
            got["rest:binance:exchangeInfo"] = await rest(Exchange.BINANCE, "/fapi/v1/exchangeInfo")
            got["rest:binance:fundingRate"] = await rest(Exchange.BINANCE, "/fapi/v1/fundingRate", symbol="BTCUSDT")
            got["rest:binance:premiumIndex"] = await rest(Exchange.BINANCE, "/fapi/v1/premiumIndex", symbol="BTCUSDT")
            got["rest:binance:insuranceBalance"] = await rest(
                Exchange.BINANCE, "/fapi/v1/insuranceBalance", symbol="BTCUSDT"
            )
            got["rest:bybit:funding"] = await rest(
                Exchange.BYBIT, "/v5/market/funding/history", category="linear", symbol="BTCUSDT", limit=2
            )
            got["rest:okx:fundingHistory"] = await rest(
                Exchange.OKX, "/api/v5/public/funding-rate-history", instId="BTC-USDT-SWAP", limit=2
            )
            got["rest:okx:instruments"] = await rest(
                Exchange.OKX, "/api/v5/public/instruments", instType="SWAP", instId="BTC-USDT-SWAP"
            )
            got["rest:okx:openInterest"] = await rest(Exchange.OKX, "/api/v5/public/open-interest", instType="SWAP")
            got["rest:deribit:bookSummary"] = await rest(
                Exchange.DERIBIT, "/api/v2/public/get_book_summary_by_currency", currency="BTC", kind="future"
            )
            got["rest:deribit:instruments"] = await rest(
                Exchange.DERIBIT, "/api/v2/public/get_instruments", currency="BTC", kind="future"
            )
    finally:
        await sim.stop()
    return got


@pytest.fixture(scope="module")
def captured() -> dict[str, Any]:
    return asyncio.run(_capture())


def sample(shared: Path, rel: str, line: int | None = None) -> Any:
    path = shared / "samples" / rel
    if line is None:
        return json.loads(path.read_text())
    return json.loads(path.read_text().splitlines()[line])


# (capture key, sample file, line or None, extra, absent, subset) with the reasons in comments
CASES: list[tuple[str, str, int | None, set[str], set[str], set[str]]] = [
    # Binance ---------------------------------------------------------------------------------
    # 2021 capture; `ap` (mark price moving average, 2026-03) and `st` (symbol type, 2026-07) are newer
    ("binance:btcusdt@markPrice@1s", "binance/ws_markprice_cmp.jsonl", 0, {"data.ap", "data.st"}, set(), set()),
    ("binance:!markPrice@arr@1s", "binance/ws_markprice_cmp.jsonl", 1, {"data[].ap", "data[].st"}, set(), set()),
    ("binance:btcusdt@forceOrder", "binance/ws_forceorder_tardis.jsonl", 0, set(), set(), set()),
    ("rest:binance:openInterest", "binance/rest_openinterest_cmp.jsonl", 1, set(), set(), set()),
    # 2021 body; the simulator lists one asset only and one of each filter kind -> compared on first elements
    ("rest:binance:exchangeInfo", "binance/rest_exchangeinfo_2021-07.json", None, set(), set(), set()),
    # Bybit -----------------------------------------------------------------------------------
    # 2023 fixture; fundingCap (2025-10), singleOpenInterest[Value] (2026-06-11) and the pre-listing
    # fields preOpenPrice/preQty/curPreListingPhase (doc example 2025-10) are newer
    (
        "bybit:tickers:snapshot",
        "bybit/ws_ticker_linear_nautilus.json",
        None,
        {
            "data.fundingCap",
            "data.singleOpenInterest",
            "data.singleOpenInterestValue",
            "data.preOpenPrice",
            "data.preQty",
            "data.curPreListingPhase",
        },
        set(),
        set(),
    ),
    # a delta carries only the changed fields: `data` is compared on the fields both messages have
    ("bybit:tickers:delta", "bybit/ws_tickers_v5_tardis.jsonl", 1, set(), set(), {"data"}),
    ("bybit:allLiquidation:snapshot", "bybit/ws_liquidation_v5_tardis.jsonl", 2, set(), set(), set()),
    ("rest:bybit:funding", "bybit/rest_funding_history_nautilus.json", None, set(), set(), set()),
    # OKX -------------------------------------------------------------------------------------
    ("okx:funding-rate", "okx/ws_funding_rate_index_2026_tardis.jsonl", 1, set(), set(), set()),
    ("okx:mark-price", "okx/ws_public_v5_swap_tardis.jsonl", 3, set(), set(), set()),
    ("okx:index-tickers", "okx/ws_funding_rate_index_2026_tardis.jsonl", 0, set(), set(), set()),
    # 2021 capture predates oiUsd (documented field, reference 4.2)
    ("okx:open-interest", "okx/ws_public_v5_swap_tardis.jsonl", 4, {"data[].oiUsd"}, set(), set()),
    ("okx:liquidation-orders", "okx/ws_liquidation_orders_tardis.jsonl", 0, set(), set(), set()),
    # the subscribe response carries connId (reference 4.1); the 2022 recording has none
    ("okx:subscribe", "okx/ws_tickers_swap_with_acks_cryptofeed.jsonl", 0, {"connId"}, set(), set()),
    # formulaType and method are documented fields of funding-rate-history (reference 4.5)
    (
        "rest:okx:fundingHistory",
        "okx/rest_funding_rate_history_nautilus.json",
        None,
        {"data[].formulaType", "data[].method"},
        set(),
        set(),
    ),
    # instFamily (reference 4.9) postdates the 2022 recording
    (
        "rest:okx:instruments",
        "okx/rest_instruments_swap_2022-05_excerpt.json",
        None,
        {"data[].instFamily"},
        set(),
        set(),
    ),
    ("rest:okx:openInterest", "okx/rest_open_interest_cmp.jsonl", 0, {"data[].oiUsd"}, set(), set()),
    # Deribit ---------------------------------------------------------------------------------
    ("deribit:ticker", "deribit/ws_ticker_trades_2025_nautilus.jsonl", 0, set(), set(), set()),
    # 2022 ticker: interest_value and stats.volume_notional appear in the 2025 capture above
    (
        "deribit:ticker",
        "deribit/ws_perpetual_ticker_trades_cmp.jsonl",
        1,
        {"params.data.interest_value", "params.data.stats.volume_notional"},
        set(),
        set(),
    ),
    # first item of the 2025 trades sample is a combo-trade leg; combo_trade_id exists only on those
    (
        "deribit:trade",
        "deribit/ws_ticker_trades_2025_nautilus.jsonl",
        1,
        set(),
        {"params.data[].combo_trade_id"},
        set(),
    ),
    # 2020 liquidation trade: mark_price and contracts are in every later capture (2021, 2025)
    (
        "deribit:liq_trade",
        "deribit/ws_perpetual_ticker_trades_tardis.jsonl",
        3,
        {"params.data[].mark_price", "params.data[].contracts"},
        set(),
        set(),
    ),
    ("rest:deribit:bookSummary", "deribit/rest_book_summary_by_currency_cmp.jsonl", 0, set(), set(), set()),
    (
        "rest:deribit:instruments",
        "deribit/rest_get_instruments_btc_perpetual_2021-07_excerpt.json",
        None,
        set(),
        set(),
        set(),
    ),
]


@pytest.mark.parametrize(
    ("key", "rel", "line", "extra", "absent", "subset"),
    CASES,
    ids=[f"{c[0]}<-{c[1].split('/')[-1]}:{c[2]}" for c in CASES],
)
def test_same_shape_as_real_sample(
    captured: dict[str, Any],
    shared_dir: Path,
    key: str,
    rel: str,
    line: int | None,
    extra: set[str],
    absent: set[str],
    subset: set[str],
) -> None:
    assert key in captured, f"the simulator produced no {key} message (got {sorted(captured)})"
    real = sample(shared_dir, rel, line)
    sim = captured[key]
    if key == "deribit:trade":
        real = {**real, "params": {**real["params"], "data": real["params"]["data"][1:]}}
    diff = shape_diff(sim, real, extra=frozenset(extra), absent=frozenset(absent), subset=frozenset(subset))
    assert diff == [], "\n".join(diff)


def test_message_kinds_without_a_capture_match_the_documented_fields(captured: dict[str, Any]) -> None:
    """No attributable capture exists for these (samples/README.md "Known gaps"): use the doc examples
    quoted in the reference."""
    doc_funding = [
        {"symbol": "BTCUSDT", "fundingRate": "-0.03750000", "fundingTime": 1570608000000, "markPrice": "34287.54619963"}
    ]
    # rateType (Regular | Special) was added 2026-07-28 (reference 2.5)
    assert shape_diff(captured["rest:binance:fundingRate"], doc_funding, extra=frozenset({"[].rateType"})) == []
    doc_premium = {
        "symbol": "BTCUSDT",
        "markPrice": "1",
        "indexPrice": "1",
        "estimatedSettlePrice": "1",
        "lastFundingRate": "0.0001",
        "interestRate": "0.0001",
        "nextFundingTime": 1,
        "time": 1,
    }
    assert shape_diff(captured["rest:binance:premiumIndex"], doc_premium) == []
    doc_ins = {
        "symbols": ["BNBUSDT"],
        "assets": [{"asset": "USDC", "marginBalance": "299999998.6497832", "updateTime": 1745366402000}],
    }
    assert shape_diff(captured["rest:binance:insuranceBalance"], doc_ins) == []
    ack = captured["bybit:ack"]
    doc_ack = {"success": True, "ret_msg": "", "conn_id": "3cd84cb1", "req_id": "", "op": "subscribe"}
    assert shape_diff(ack, doc_ack) == []
