"""OKX v5 parser: funding-rate, mark-price, index-tickers, open-interest, liquidations, REST, plans."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from exporter.feeds import feed_for
from exporter.feeds import validate as V
from exporter.feeds.base import FeedContext
from exporter.feeds.okx import OkxFeed
from exporter.feeds.okx import _fast as okx_typed
from exporter.model import (
    Exchange,
    FundingSettlement,
    FundingUpdate,
    InstrumentInfo,
    Liquidation,
    MarketUpdate,
    ParseError,
    Rejected,
    Side,
    SubscriptionError,
)

EX = Exchange.OKX
FEED = OkxFeed()
EMPTY = FeedContext(EX)
TS = "1700000000000"  # ms, a plausible time (timestamps are checked against their domain)
LINEAR = InstrumentInfo(EX, "BTC-USDT-SWAP", "BTC", "USDT", contract_size=0.01)
INVERSE = InstrumentInfo(EX, "BTC-USD-SWAP", "BTC", "USD", contract_size=100.0, inverse=True)
CTX = FeedContext(EX, {i.instrument: i for i in (LINEAR, INVERSE)})

FUNDING: dict[str, Any] = {
    "formulaType": "withRate",
    "fundingRate": "-0.0004270396398519",
    "fundingTime": "1785888000000",
    "instId": "BTC-USDT-SWAP",
    "instType": "SWAP",
    "interestRate": "0.0001000000000000",
    "maxFundingRate": "0.00375",
    "method": "current_period",
    "minFundingRate": "-0.00375",
    "nextFundingRate": "",
    "nextFundingTime": "1785916800000",
    "premium": "-0.0008949500017283",
    "prevFundingTime": "1785859200000",
    "settFundingRate": "-0.0001996513270201",
    "settState": "settled",
    "ts": "1785870855692",
}  # shape of the 2026 capture (exchanges.md §4.2) on a SWAP id


def push(channel: str, rows: list[dict[str, Any]], **arg: str) -> bytes:
    return orjson.dumps({"arg": {"channel": channel, **arg}, "data": rows})


def test_feed_for_gives_the_okx_feed() -> None:
    assert isinstance(feed_for(EX), OkxFeed)


def test_funding_rate_push() -> None:
    u, s = FEED.parse_ws(push("funding-rate", [FUNDING], instId="BTC-USDT-SWAP"), EMPTY)
    assert isinstance(u, MarketUpdate) and isinstance(s, FundingSettlement)
    assert u.funding_rate == float(FUNDING["fundingRate"])
    assert u.next_funding_time == int(FUNDING["fundingTime"]) / 1000  # the settlement this rate is for
    assert u.funding_interval_s == (int(FUNDING["nextFundingTime"]) - int(FUNDING["fundingTime"])) / 1000
    assert (u.funding_cap, u.funding_floor) == (0.00375, -0.00375)
    assert u.premium == float(FUNDING["premium"])
    assert u.event_time == int(FUNDING["ts"]) / 1000
    assert (s.funding_time, s.rate) == (int(FUNDING["prevFundingTime"]) / 1000, float(FUNDING["settFundingRate"]))


def test_interval_from_previous_settlement_when_next_is_absent() -> None:
    row = {k: v for k, v in FUNDING.items() if k != "nextFundingTime"}
    u, _ = FEED.parse_ws(push("funding-rate", [row]), EMPTY)
    assert u.funding_interval_s == (int(FUNDING["fundingTime"]) - int(FUNDING["prevFundingTime"])) / 1000


def test_processing_settlement_is_not_reported_as_settled() -> None:
    got = FEED.parse_ws(push("funding-rate", [{**FUNDING, "settState": "processing"}]), EMPTY)
    assert [type(r) for r in got] == [FundingUpdate]


def test_a_settlement_passed_on_is_not_repeated_on_a_context_that_remembers() -> None:
    # OKX repeats the last settlement in every funding push: a context with ``settled`` (the exporter's,
    # one sink) passes it on once; without it (a parse of one frame alone) every push carries it.
    ctx = FeedContext(EX, settled={})
    frame = push("funding-rate", [FUNDING], instId="BTC-USDT-SWAP")
    first = FEED.parse_ws(frame, ctx)
    assert [type(r) for r in first] == [FundingUpdate, FundingSettlement]
    again = FEED.parse_ws(frame, ctx)
    assert again == first[:1]  # the same update, no settlement
    assert FEED.parse_ws(frame, EMPTY) == first  # a context without the memory: every time
    # the next settlement (the times move on one interval) is passed on once again
    nxt = {
        **FUNDING,
        "prevFundingTime": FUNDING["fundingTime"],
        "fundingTime": FUNDING["nextFundingTime"],
        "nextFundingTime": str(int(FUNDING["nextFundingTime"]) + 28_800_000),
        "settFundingRate": "0.0002",
    }
    moved = FEED.parse_ws(push("funding-rate", [nxt]), ctx)
    assert [type(r) for r in moved] == [FundingUpdate, FundingSettlement]
    assert (moved[1].funding_time, moved[1].rate) == (int(FUNDING["fundingTime"]) / 1000, 0.0002)
    assert FEED.parse_ws(push("funding-rate", [nxt]), ctx) == moved[:1]


def test_a_repeat_of_a_settled_period_does_not_read_the_previous_settlement_again() -> None:
    # Once a stream has passed a settlement on, the pushes of the same funding period (the same
    # fundingTime) are decoded without the previous settlement's fields: what they hold there is not
    # passed on (it was not before either), so it is not checked either. The rate, the times, cap,
    # floor and premium still are; the first push of a period checks its settlement as always.
    ctx = FeedContext(EX, settled={})
    first = FEED.parse_ws(push("funding-rate", [FUNDING]), ctx)
    assert [type(r) for r in first] == [FundingUpdate, FundingSettlement]
    odd = {**FUNDING, "settFundingRate": "1e200", "prevFundingTime": "1", "settState": "?"}
    assert FEED.parse_ws(push("funding-rate", [odd]), ctx) == first[:1]
    for key, value in (("fundingRate", "-7"), ("maxFundingRate", "NaN"), ("premium", "1e200"), ("ts", "1")):
        with pytest.raises(ParseError):
            FEED.parse_ws(push("funding-rate", [{**FUNDING, key: value}]), ctx)
    # a new period: its settlement is read and checked (a refused frame passes nothing on)
    h8 = 28_800_000
    nxt = {
        **FUNDING,
        "prevFundingTime": FUNDING["fundingTime"],
        "fundingTime": FUNDING["nextFundingTime"],
        "nextFundingTime": str(int(FUNDING["nextFundingTime"]) + h8),
    }
    with pytest.raises(ParseError) as info:
        FEED.parse_ws(push("funding-rate", [{**nxt, "settFundingRate": "1e200"}]), ctx)
    assert info.value.reason == V.RATE
    moved = FEED.parse_ws(push("funding-rate", [nxt]), ctx)
    assert [type(r) for r in moved] == [FundingUpdate, FundingSettlement]


def test_a_settlement_still_processing_is_passed_on_once_settled() -> None:
    ctx = FeedContext(EX, settled={})
    processing = FEED.parse_ws(push("funding-rate", [{**FUNDING, "settState": "processing"}]), ctx)
    assert [type(r) for r in processing] == [FundingUpdate]
    assert [type(r) for r in FEED.parse_ws(push("funding-rate", [FUNDING]), ctx)] == [FundingUpdate, FundingSettlement]
    assert [type(r) for r in FEED.parse_ws(push("funding-rate", [FUNDING]), ctx)] == [FundingUpdate]


def test_a_rejected_frame_leaves_its_settlements_to_be_passed_on() -> None:
    # the first row would pass its settlement on, the second is refused after it (an interval of ten
    # seconds): the frame is an error, and the next good push still carries the settlement (it never
    # reached the store)
    ctx = FeedContext(EX, settled={})
    other = {**FUNDING, "instId": "ETH-USDT-SWAP", "nextFundingTime": str(int(FUNDING["fundingTime"]) + 10_000)}
    with pytest.raises(ParseError, match="interval"):
        FEED.parse_ws(push("funding-rate", [FUNDING, other]), ctx)
    got = FEED.parse_ws(push("funding-rate", [FUNDING]), ctx)
    assert [type(r) for r in got] == [FundingUpdate, FundingSettlement]


def test_remembered_settlements_give_the_store_the_same_settlements() -> None:
    # The same pushes (one settlement repeated, then the next one, a skipped one after a gap) into two
    # stores: through a context that remembers, and through one that passes every repeat on.
    from exporter.state import MarketState

    h8 = 28_800_000
    t0 = int(FUNDING["fundingTime"])

    def row(k: int, rate: str) -> dict[str, Any]:  # k intervals after the sample's
        return {
            **FUNDING,
            "prevFundingTime": str(t0 - h8 + k * h8),
            "fundingTime": str(t0 + k * h8),
            "nextFundingTime": str(t0 + (k + 1) * h8),
            "settFundingRate": rate,
            "ts": str(t0 - 3_600_000 + k * h8),
        }

    rows = [row(0, "0.0001")] * 3 + [row(1, "0.0002")] * 3 + [row(3, "0.0004")] * 2  # 2 skipped
    stores = []
    counts = []
    for settled in ({}, None):
        now = [0.0]
        state = MarketState(clock=lambda now=now: now[0])  # type: ignore[misc]
        state.register(LINEAR)
        ctx = FeedContext(EX, {LINEAR.instrument: LINEAR}, clock=lambda now=now: now[0], settled=settled)
        n = 0
        for r in rows:
            now[0] = int(r["ts"]) / 1000 + 1.0
            records = FEED.parse_ws(push("funding-rate", [r]), ctx)
            n += len(records)
            state.apply_many(records, now[0])
        stores.append(state)
        counts.append(n)
    mine, every = (s.instruments[(EX, LINEAR.instrument)] for s in stores)
    assert mine.settlement_window() == every.settlement_window()
    assert len(mine.settlement_window()) >= 3
    assert stores[0].settlements_missed == stores[1].settlements_missed != {}
    assert (mine.funding_interval_s, mine.funding_rate) == (every.funding_interval_s, every.funding_rate)
    assert counts == [len(rows) + 3, 2 * len(rows)]  # three settlements passed on, not eight


def _without(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in keys}


_H8 = 28_800_000
FUNDING_SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("usual", FUNDING),
    ("no next time", _without(FUNDING, "nextFundingTime")),
    ("no previous time", _without(FUNDING, "prevFundingTime")),
    ("no funding time", _without(FUNDING, "fundingTime")),
    ("no event time", _without(FUNDING, "ts")),
    ("no settlement", _without(FUNDING, "settFundingRate", "settState")),
    ("no rates", _without(FUNDING, "fundingRate", "maxFundingRate", "minFundingRate", "premium")),
    ("next before funding", {**FUNDING, "nextFundingTime": str(int(FUNDING["fundingTime"]) - _H8)}),
    ("previous after funding", {**FUNDING, "prevFundingTime": str(int(FUNDING["fundingTime"]) + _H8)}),
    ("times equal", {**FUNDING, "prevFundingTime": FUNDING["fundingTime"], "nextFundingTime": FUNDING["fundingTime"]}),
    ("interval of ten seconds", {**FUNDING, "nextFundingTime": str(int(FUNDING["fundingTime"]) + 10_000)}),
    ("interval of two days", {**FUNDING, "nextFundingTime": str(int(FUNDING["fundingTime"]) + 6 * _H8)}),
    ("event time a week ahead", {**FUNDING, "ts": str(int(FUNDING["ts"]) + 21 * _H8)}),
    ("previous time years back", {**FUNDING, "prevFundingTime": "1000000000000"}),
    ("next time a week ahead", {**FUNDING, "nextFundingTime": str(int(FUNDING["fundingTime"]) + 21 * _H8)}),
]


@pytest.mark.parametrize("row", [r for _, r in FUNDING_SHAPES], ids=[n for n, _ in FUNDING_SHAPES])
@pytest.mark.parametrize("clocked", [False, True], ids=["static bounds", "clock"])
def test_funding_rows_of_every_shape_give_what_the_strict_path_gives(row: dict[str, Any], clocked: bool) -> None:
    # the usual row is checked in one chained comparison, any other shape by the general checks: both
    # must give exactly the strict path's records, or the same refusal
    clock = (lambda: int(FUNDING["ts"]) / 1000 + 1.0) if clocked else None
    ctx = FeedContext(EX, clock=clock)
    frame = push("funding-rate", [row])
    try:
        want: list[Any] | str = OkxFeed(fast=False).parse_ws(frame, ctx)
    except ParseError as exc:
        want = exc.reason
    try:
        got: list[Any] | str = FEED.parse_ws(frame, ctx)
    except ParseError as exc:
        got = exc.reason
    assert got == want


_PUSHES = [
    ("mark-price", {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "markPx": "2.1729", "ts": TS}),
    ("index-tickers", {"instId": "BTC-USDT", "idxPx": "64280", "open24h": "1", "ts": TS}),
    ("open-interest", {"instId": "BTC-USDT-SWAP", "oi": "5000", "oiCcy": "50", "oiUsd": "3e6", "ts": TS}),
    ("funding-rate", FUNDING),
    ("funding-rate", {**FUNDING, "premium": "1e200"}),  # refused alike
    ("mark-price", {"instId": "BTC-USDT-SWAP", "markPx": "0", "ts": TS}),
    ("mark-price-candle1m", {"instId": "BTC-USDT-SWAP", "candle": ["1"]}),  # a channel we do not use
    ("index-candle30m", {"instId": "BTC-USDT"}),
    ("opt-summary", {"instId": "BTC-USD-240329-70000-C"}),
    ("fills", {"instId": "BTC-USDT-SWAP"}),
]


@pytest.mark.parametrize(("channel", "row"), _PUSHES, ids=[f"{c} {i}" for i, (c, _) in enumerate(_PUSHES)])
def test_the_decoder_chosen_by_the_channel_letter_gives_what_every_layout_gives(
    channel: str, row: dict[str, Any]
) -> None:
    # the channel's first letter picks a decoder of its fields alone; a str frame or another key order
    # takes the decoder of every channel, the strict path decides for the rest: the same answer
    now = int(row.get("ts", TS)) / 1000 + 1.0
    ctx = FeedContext(EX, {i.instrument: i for i in (LINEAR, INVERSE)}, clock=lambda: now)
    frame = push(channel, [row])
    assert frame.startswith(b'{"arg":{"channel":"')
    layouts = {
        "bytes": frame,
        "str": frame.decode(),
        "data first": orjson.dumps({"data": [row], "arg": {"channel": channel}}),
        "strict": frame,
    }
    answers: dict[str, Any] = {}
    for name, f in layouts.items():
        feed = OkxFeed(fast=False) if name == "strict" else FEED
        try:
            answers[name] = feed.parse_ws(f, ctx)
        except ParseError as exc:
            answers[name] = exc.reason
    assert answers["bytes"] == answers["str"] == answers["data first"] == answers["strict"], answers


def test_old_shape_without_funding_rate_invents_nothing() -> None:
    row = {"fundingTime": "1640851200000", "instId": "SOS-USDT-SWAP", "instType": "SWAP", "nextFundingRate": "0.0003"}
    (u,) = FEED.parse_ws(push("funding-rate", [row]), EMPTY)
    assert u.funding_rate is None  # nextFundingRate is the following period's, not the current rate
    assert (u.funding_interval_s, u.funding_cap, u.premium) == (None, None, None)
    assert u.next_funding_time == 1640851200.0


def test_mark_price() -> None:
    row = {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "markPx": "2.1729", "ts": "1640131259180"}
    (u,) = FEED.parse_ws(push("mark-price", [row]), CTX)
    assert (u.instrument, u.mark_price, u.event_time) == ("BTC-USDT-SWAP", 2.1729, 1640131259.18)
    assert u.index_price is None and u.funding_rate is None


def test_index_ticker_maps_to_followed_swaps() -> None:
    row = {"instId": "BTC-USDT", "idxPx": "64280", "open24h": "1", "ts": "1785870839964"}
    (u,) = FEED.parse_ws(push("index-tickers", [row]), CTX)
    assert (u.instrument, u.index_price, u.mark_price) == ("BTC-USDT-SWAP", 64280.0, None)
    (u2,) = FEED.parse_ws(push("index-tickers", [{**row, "instId": "ETH-USDT"}]), EMPTY)
    assert u2.instrument == "ETH-USDT-SWAP"  # no instrument list: the swap of the same name
    assert FEED.parse_ws(push("index-tickers", [{**row, "instId": "ETH-USDT"}]), CTX) == []


def test_index_mapping_follows_a_changed_instrument_list() -> None:
    row = {"instId": "ETH-USDT", "idxPx": "3000", "ts": TS}
    instruments = dict(CTX.instruments)
    ctx = FeedContext(EX, instruments)
    assert FEED.parse_ws(push("index-tickers", [row]), ctx) == []
    instruments["ETH-USDT-SWAP"] = InstrumentInfo(EX, "ETH-USDT-SWAP", "ETH", "USDT", contract_size=0.1)
    (u,) = FEED.parse_ws(push("index-tickers", [row]), ctx)
    assert u.instrument == "ETH-USDT-SWAP"


@pytest.mark.parametrize(
    ("row", "base", "usd"),
    [
        (
            {"instId": "BTC-USDT-SWAP", "oi": "5000", "oiCcy": "50", "oiUsd": "3000000", "ts": TS},
            50.0,
            3e6,
        ),
        ({"instId": "BTC-USDT-SWAP", "oi": "5000", "ts": TS}, 50.0, None),  # contracts x ctVal 0.01
        (
            {"instId": "BTC-USD-SWAP", "oi": "4092973", "oiCcy": "13840.0488", "ts": TS},
            13840.0488,
            409297300.0,
        ),
    ],
)
def test_open_interest_units(row: dict[str, Any], base: float, usd: float | None) -> None:
    (u,) = FEED.parse_ws(push("open-interest", [row]), CTX)
    assert u.open_interest_base == pytest.approx(base)
    assert u.open_interest_usd == (pytest.approx(usd) if usd is not None else None)


def test_open_interest_in_contracts_without_contract_size_is_refused() -> None:
    with pytest.raises(ParseError, match="ctVal"):
        FEED.parse_ws(push("open-interest", [{"instId": "X-USDT-SWAP", "oi": "5", "ts": TS}]), EMPTY)


def liq_push(*details: dict[str, Any], inst: str = "BTC-USDT-SWAP") -> bytes:
    return push(
        "liquidation-orders",
        [{"details": list(details), "instFamily": inst[:-5], "instId": inst, "instType": "SWAP", "uly": inst[:-5]}],
        instType="SWAP",
    )


DETAIL = {
    "bkLoss": "0",
    "bkPx": "60000",
    "ccy": "",
    "posSide": "long",
    "side": "sell",
    "sz": "30",
    "ts": "1680173247614",
}


@pytest.mark.parametrize(
    ("pos_side", "side", "position"),
    [("long", "sell", Side.LONG), ("short", "buy", Side.SHORT), ("net", "sell", Side.LONG), ("net", "buy", Side.SHORT)],
)
def test_liquidation_side(pos_side: str, side: str, position: Side) -> None:
    (liq,) = FEED.parse_ws(liq_push({**DETAIL, "posSide": pos_side, "side": side}), CTX)
    assert isinstance(liq, Liquidation) and liq.side is position


def test_liquidation_contracts_to_coin() -> None:
    (lin,) = FEED.parse_ws(liq_push(DETAIL), CTX)
    assert lin.quantity_base == pytest.approx(30 * 0.01)
    assert lin.notional_usd == pytest.approx(30 * 0.01 * 60000)
    assert (lin.price, lin.event_time) == (60000.0, 1680173247.614)
    (inv,) = FEED.parse_ws(liq_push(DETAIL, inst="BTC-USD-SWAP"), CTX)
    assert inv.notional_usd == pytest.approx(30 * 100.0)  # inverse: contracts of 100 USD
    assert inv.quantity_base == pytest.approx(3000 / 60000)


def test_liquidation_of_unknown_instrument_is_dropped() -> None:
    assert FEED.parse_ws(liq_push(DETAIL, inst="DOGE-USDT-SWAP"), CTX) == []


def test_liquidation_pushes_take_the_typed_path_and_give_what_the_strict_path_gives() -> None:
    """The typed path itself handles a liquidation push (no fallback), with a clock as the exporter has
    one, and gives exactly the strict path's records; a detail it does not take (a bad side, a size out
    of its domain, a time out of the clock's bounds) leaves the push to the strict path."""
    clocked = FeedContext(EX, CTX.instruments, clock=lambda: 1_680_200_000.0)
    strict = OkxFeed(fast=False)
    net = {k: v for k, v in DETAIL.items() if k != "posSide"}  # net mode may omit posSide
    pushes = [
        liq_push(DETAIL, {**DETAIL, "posSide": "short", "side": "buy"}, {**DETAIL, "posSide": "net"}, net),
        liq_push({**DETAIL, "sz": "2", "bkPx": "0.55205"}, inst="BTC-USD-SWAP"),
        liq_push(DETAIL, inst="DOGE-USDT-SWAP"),  # not followed: nothing
    ]
    for frame in pushes:
        typed = okx_typed(frame, clocked)
        assert typed is not None and typed == strict.parse_ws(frame, clocked)
    assert [r.side for r in okx_typed(pushes[0], clocked) or []] == [Side.LONG, Side.SHORT, Side.LONG, Side.LONG]
    for bad in ({**DETAIL, "posSide": "net", "side": "hold"}, {**DETAIL, "sz": "1e400"}, {**DETAIL, "ts": "1"}):
        assert okx_typed(liq_push(DETAIL, bad), clocked) is None


# ---- control frames and refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "pong",
        b"pong",
        b'{"event":"subscribe","arg":{"channel":"mark-price","instId":"BTC-USDT-SWAP"},"connId":"a4d3ae55"}',
        b'{"event":"notice","code":"64008","msg":"The connection will soon be closed","connId":"a"}',
        b'{"arg":{"channel":"tickers","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP","last":"1"}]}',
    ],
)
def test_control_frames_give_nothing(frame: str | bytes) -> None:
    assert FEED.parse_ws(frame, EMPTY) == []


def test_error_event_is_a_subscription_error() -> None:
    (err,) = FEED.parse_ws(b'{"event":"error","code":"60012","msg":"Invalid request","connId":"a"}', EMPTY)
    assert isinstance(err, SubscriptionError)
    assert "60012" in err.message and "Invalid request" in err.message


MARK = {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "markPx": "2.1729", "ts": "1640131259180"}
OI = {"instId": "BTC-USDT-SWAP", "oi": "5000", "oiCcy": "50", "ts": TS}
BAD_FRAMES: list[tuple[str, bytes, str]] = [
    ("invalid json", b"{'arg': 1}", "invalid JSON"),
    ("truncated", push("mark-price", [MARK])[:-20], "invalid JSON"),
    ("ping text", b"ping", "invalid JSON"),
    ("missing markPx", push("mark-price", [{k: v for k, v in MARK.items() if k != "markPx"}]), "'markPx'"),
    ("missing ts", push("mark-price", [{k: v for k, v in MARK.items() if k != "ts"}]), "'ts'"),
    ("missing channel", orjson.dumps({"arg": {}, "data": [MARK]}), "'channel'"),
    ("NaN mark", push("mark-price", [{**MARK, "markPx": "NaN"}]), "markPx"),
    ("inf index", push("index-tickers", [{"instId": "BTC-USDT", "idxPx": "inf", "ts": TS}]), "idxPx"),
    ("inf ts", push("mark-price", [{**MARK, "ts": "inf"}]), "'ts'"),
    ("text rate", push("funding-rate", [{**FUNDING, "fundingRate": "high"}]), "fundingRate"),
    ("-inf cap", push("funding-rate", [{**FUNDING, "maxFundingRate": "-Infinity"}]), "maxFundingRate"),
    ("bool mark", push("mark-price", [{**MARK, "markPx": False}]), "markPx"),
    ("NaN oi", push("open-interest", [{**OI, "oi": "nan"}]), "'oi'"),
    ("data not a list", orjson.dumps({"arg": {"channel": "mark-price"}, "data": MARK}), "array"),
    ("instId not a string", push("mark-price", [{**MARK, "instId": 3}]), "instId"),
    ("no data, no event", b'{"arg":{"channel":"mark-price"}}', "event"),
]


@pytest.mark.parametrize(("frame", "needle"), [(f, n) for _, f, n in BAD_FRAMES], ids=[c for c, _, _ in BAD_FRAMES])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_malformed_frames_raise_parse_error(frame: bytes, needle: str, fast: bool) -> None:
    with pytest.raises(ParseError) as exc:
        OkxFeed(fast=fast).parse_ws(frame, CTX if b"liquidation" in frame else EMPTY)
    assert needle in str(exc.value)
    assert str(exc.value).startswith("okx")


BAD_DETAILS: list[tuple[str, dict[str, Any], str]] = [
    ("liquidation bad side", {**DETAIL, "posSide": "net", "side": "hold"}, "side"),
    ("liquidation NaN size", {**DETAIL, "sz": "NaN"}, "'sz'"),
    ("liquidation at price 0", {**DETAIL, "bkPx": "0"}, "'bkPx'"),
]


@pytest.mark.parametrize(("bad", "needle"), [(b, n) for _, b, n in BAD_DETAILS], ids=[c for c, _, _ in BAD_DETAILS])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "strict"])
def test_a_bad_liquidation_detail_is_rejected_alone(bad: dict[str, Any], needle: str, fast: bool) -> None:
    out = OkxFeed(fast=fast).parse_ws(liq_push(DETAIL, bad, DETAIL), CTX)
    assert [type(r) for r in out] == [Liquidation, Rejected, Liquidation]
    rejected = out[1]
    assert isinstance(rejected, Rejected) and needle in rejected.message and rejected.message.startswith("okx")


# ---- plans --------------------------------------------------------------------------------------


def test_plan_channels() -> None:
    eth = InstrumentInfo(EX, "ETH-USDT-SWAP", "ETH", "USDT", contract_size=0.1)
    (plan,) = FEED.ws_plans("wss://ws.okx.com:8443", [LINEAR, INVERSE, eth])
    assert plan.url == "wss://ws.okx.com:8443/ws/v5/public"
    assert (plan.ping_frame, plan.ping_interval_s) == ("ping", 20.0)
    args = [a for s in plan.subscribe for a in orjson.loads(s)["args"]]
    assert all(orjson.loads(s)["op"] == "subscribe" for s in plan.subscribe)
    per_inst = {(a["channel"], a["instId"]) for a in args if "instId" in a}
    for inst in ("BTC-USDT-SWAP", "BTC-USD-SWAP", "ETH-USDT-SWAP"):
        assert {("funding-rate", inst), ("mark-price", inst), ("open-interest", inst)} <= per_inst
    assert {("index-tickers", i) for i in ("BTC-USDT", "BTC-USD", "ETH-USDT")} <= per_inst
    assert [a for a in args if a["channel"] == "liquidation-orders"] == [
        {"channel": "liquidation-orders", "instType": "SWAP"}
    ]


def test_plan_splits_large_instrument_lists() -> None:
    infos = [InstrumentInfo(EX, f"C{k}-USDT-SWAP", f"C{k}", "USDT") for k in range(250)]
    plans = FEED.ws_plans("ws://127.0.0.1:18003", infos)
    assert len(plans) == 3
    marks = [a for p in plans for s in p.subscribe for a in orjson.loads(s)["args"] if a["channel"] == "mark-price"]
    assert len(marks) == 250
    assert all(len(s) < 64 * 1024 for p in plans for s in p.subscribe)
    liq = [p.stream for p in plans for s in p.subscribe if "liquidation-orders" in s]
    assert liq == [plans[0].stream]


# ---- REST (documented shapes, exchanges.md §4.4-4.5) ----------------------------------------------


def ok(data: Any) -> bytes:
    return orjson.dumps({"code": "0", "msg": "", "data": data})


def test_long_short_ratio_rows_need_the_instrument() -> None:
    body = ok([["1701417600000", "1.25"], ["1701417300000", "1.5"]])
    got = FEED.parse_long_short_ratio(body, CTX, instrument="BTC-USDT-SWAP")
    assert [(r.instrument, r.event_time, r.ratio) for r in got] == [
        ("BTC-USDT-SWAP", 1701417300.0, 1.5),
        ("BTC-USDT-SWAP", 1701417600.0, 1.25),
    ]
    one = FeedContext(EX, {"BTC-USDT-SWAP": LINEAR})
    assert FEED.parse_long_short_ratio(body, one) == got
    with pytest.raises(ParseError, match="instrument"):
        FEED.parse_long_short_ratio(body, CTX)


def test_insurance_fund_total_per_family() -> None:
    body = ok(
        [
            {
                "details": [
                    {"amt": "", "balance": "1343.1308", "ccy": "BTC", "ts": "1704883083000", "type": "regular_update"},
                    {"amt": "", "balance": "1342", "ccy": "BTC", "ts": "1704880000000", "type": "regular_update"},
                ],
                "instFamily": "BTC-USDT",
                "instType": "SWAP",
                "total": "1369179138.7489",
            }
        ]
    )
    (f,) = FEED.parse_insurance_fund(body, CTX)
    assert (f.pool, f.balance_usd, f.event_time) == ("BTC-USDT", 1369179138.7489, 1704883083.0)


@pytest.mark.parametrize(
    "method", ["parse_funding_history", "parse_open_interest", "parse_long_short_ratio", "parse_insurance_fund"]
)
def test_error_code_names_the_exchange_message(method: str) -> None:
    body = b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}'
    with pytest.raises(ParseError, match="Instrument ID does not exist"):
        getattr(FEED, method)(body, CTX)


def test_error_code_on_instruments() -> None:
    with pytest.raises(ParseError, match="50011"):
        FEED.parse_instruments(b'{"code":"50011","msg":"Rate limit reached","data":[]}')
