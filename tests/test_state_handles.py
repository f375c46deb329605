"""The state's handles (``MarketState.bind``, ``FeedContext.handles``, ``MarketUpdate.handle``): a
ticker parser (Bybit tickers, Deribit tickers, OKX mark-price) that finds its instrument in the handles
passes the instrument's record on, and the store writes through it without a lookup of its own. The
path changes nothing anyone sees: two stores take the same frames, one through a bound context and one
through a context without handles, with relayouts, late registrations, instruments dropped and
handles made stale between parse and store at random points; after every step they are equal. A
handle never writes into another instrument's record nor into a record a relayout left, and never
makes a symbol followed that the instruments do not list.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from support.state import assert_same_state

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, InstrumentInfo, MarketUpdate
from exporter.state import F_DUE, MarketState

T0 = 1_785_870_000.0
H8 = 28_800.0
IDS = {
    Exchange.BYBIT: ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
    Exchange.DERIBIT: ("BTC-PERPETUAL", "ETH-PERPETUAL"),
    Exchange.OKX: ("BTC-USDT-SWAP", "ETH-USDT-SWAP"),
}
LATE = {Exchange.BYBIT: "NEWUSDT", Exchange.DERIBIT: "NEW-PERPETUAL", Exchange.OKX: "NEW-USDT-SWAP"}


def _info(ex: Exchange, inst: str) -> InstrumentInfo:
    base = inst.split("-")[0].removesuffix("USDT")
    return InstrumentInfo(ex, inst, base, "USD" if ex is Exchange.DERIBIT else "USDT", funding_interval_s=H8)


def _frame(ex: Exchange, inst: str, t: float, mark: float, rate: float | None, oi: float | None) -> bytes:
    ms = int(t * 1000)
    if ex is Exchange.BYBIT:
        data: dict[str, Any] = {"symbol": inst, "markPrice": f"{mark}", "indexPrice": f"{mark * 1.001}"}
        if rate is not None:
            data["fundingRate"] = f"{rate}"
            data["nextFundingTime"] = str(int((t // H8 + 1) * H8 * 1000))
        if oi is not None:
            data["openInterest"] = f"{oi}"
        return orjson.dumps({"topic": f"tickers.{inst}", "type": "delta", "data": data, "cs": 1, "ts": ms})
    if ex is Exchange.DERIBIT:
        d: dict[str, Any] = {"timestamp": ms, "instrument_name": inst, "mark_price": mark, "index_price": mark}
        if rate is not None:
            d["funding_8h"] = rate
        if oi is not None:
            d["open_interest"] = oi
        params = {"channel": f"ticker.{inst}.100ms", "data": d}
        return orjson.dumps({"jsonrpc": "2.0", "method": "subscription", "params": params})
    row = {"instId": inst, "instType": "SWAP", "markPx": f"{mark}", "ts": str(ms)}
    return orjson.dumps({"arg": {"channel": "mark-price", "instId": inst}, "data": [row]})


class Side:
    """One store with its contexts (bound or not), as the exporter wires an exchange's stream."""

    def __init__(self, bound: bool) -> None:
        self.state = MarketState(clock=lambda: T0)
        self.bound = bound
        self.ctx: dict[Exchange, FeedContext] = {}
        for ex, ids in IDS.items():
            for inst in ids:
                self.state.register(_info(ex, inst))
            self.ctx[ex] = FeedContext(ex, {i: _info(ex, i) for i in ids}, clock=lambda: T0)
            if bound:
                self.state.bind(self.ctx[ex])

    def parse(self, ex: Exchange, frame: bytes) -> list[Any]:
        return feed_for(ex).parse_ws(frame, self.ctx[ex])

    def one(self, ex: Exchange, frame: bytes) -> MarketUpdate:
        (u,) = self.parse(ex, frame)
        assert isinstance(u, MarketUpdate)
        return u


update = st.fixed_dictionaries(
    {
        "kind": st.just("update"),
        "exchange": st.sampled_from(list(IDS)),
        "pick": st.integers(0, 3),  # past the list: the late instrument (followed or not by then)
        "dt": st.sampled_from([0.0, 1.0, 61.0, 3600.0]),
        "mark": st.sampled_from([100.0, 101.5, 97.0]),
        "rate": st.none() | st.sampled_from([0.0001, -0.0003, 0.0007]),
        "oi": st.none() | st.sampled_from([1e6, 2.5e7]),
        # parsed, then the records relaid before the store takes them (a handle gone stale)
        "stale": st.booleans(),
    }
)
relayout = st.fixed_dictionaries(
    {"kind": st.just("relayout"), "exchange": st.sampled_from(list(IDS)), "seed": st.integers(0, 2**16)}
)
# the late instrument: registered, then (or before) listed in the context, re-bound or not
late = st.fixed_dictionaries(
    {
        "kind": st.just("late"),
        "exchange": st.sampled_from(list(IDS)),
        "list_first": st.booleans(),
        "rebind": st.booleans(),
    }
)
drop = st.fixed_dictionaries({"kind": st.just("drop"), "exchange": st.sampled_from(list(IDS))})  # the first id


def _relayout(side: Side, ex: Exchange, seed: int) -> None:
    ids = list(side.state._record_of[ex])
    random.Random(seed).shuffle(ids)
    side.state.relayout(ex, ids)


@settings(max_examples=150, deadline=None)
@given(st.lists(update | relayout | late | drop, min_size=1, max_size=40))
def test_the_handle_path_equals_the_lookup_path(steps: list[dict[str, Any]]) -> None:
    bound, plain = Side(True), Side(False)
    now = T0
    for step in steps:
        ex = step["exchange"]
        if step["kind"] == "relayout":
            for side in (bound, plain):
                _relayout(side, ex, step["seed"])
        elif step["kind"] == "late":
            info = _info(ex, LATE[ex])
            for side in (bound, plain):
                ctx = side.ctx[ex]
                if step["list_first"]:
                    ctx.instruments = {**ctx.instruments, info.instrument: info}
                side.state.register(info)
                if not step["list_first"]:
                    ctx.instruments = {**ctx.instruments, info.instrument: info}
                if side.bound and step["rebind"]:
                    side.state.bind(ctx)
        elif step["kind"] == "drop":  # no longer followed: its frames are skipped
            for side in (bound, plain):
                ctx = side.ctx[ex]
                ctx.instruments = {k: v for k, v in ctx.instruments.items() if k != IDS[ex][0]}
        else:
            now += step["dt"]
            ids = (*IDS[ex], LATE[ex])
            inst = ids[step["pick"] % len(ids)]
            frame = _frame(ex, inst, now, step["mark"], step["rate"], step["oi"])
            records = {id(side): side.parse(ex, frame) for side in (bound, plain)}
            assert [msg_fields(r) for r in records[id(bound)]] == [msg_fields(r) for r in records[id(plain)]]
            if step["stale"]:
                for side in (bound, plain):
                    _relayout(side, ex, 7)
            for side in (bound, plain):
                side.state.apply_many(records[id(side)], now)
        assert_same_state(bound.state, plain.state)
        for ex_, ctx in bound.ctx.items():  # the handles: followed ids only, each the record now
            handles = ctx.handles
            assert handles is not None
            assert set(handles) <= set(ctx.instruments), ex_
            for inst, h in handles.items():
                assert h is bound.state.instruments[(ex_, inst)].record


def msg_fields(r: Any) -> Any:
    """A record as the lookup path sees it (the handle aside)."""
    if isinstance(r, MarketUpdate):
        return (type(r), r.exchange, r.instrument, r.event_time, r.mark_price, r.index_price, r.funding_rate)
    return r


def test_a_bound_parser_passes_its_instruments_record_and_follows_the_instruments_alone() -> None:
    side = Side(True)
    for ex, ids in IDS.items():
        ctx = side.ctx[ex]
        for inst in ids:
            u = side.one(ex, _frame(ex, inst, T0, 100.0, 0.0001, 1e6))
            assert u.handle is side.state.instruments[(ex, inst)].record, (ex, inst)
        # a symbol not listed: skipped, even when the state holds it
        side.state.register(_info(ex, LATE[ex]))
        assert side.parse(ex, _frame(ex, LATE[ex], T0, 100.0, None, None)) == []
        # listed, but no handle given yet (not re-bound): parsed as without handles, the store looks it up
        ctx.instruments = {**ctx.instruments, LATE[ex]: _info(ex, LATE[ex])}
        u = side.one(ex, _frame(ex, LATE[ex], T0, 100.0, None, None))
        assert u.handle is None
        side.state.apply_many([u], T0)
        assert side.state.instruments[(ex, LATE[ex])].mark_price == 100.0
        side.state.bind(ctx)
        u = side.one(ex, _frame(ex, LATE[ex], T0, 101.0, None, None))
        assert u.handle is side.state.instruments[(ex, LATE[ex])].record
        # dropped from the list: its handle goes with it, and its frames are skipped
        ctx.instruments = {k: v for k, v in ctx.instruments.items() if k != LATE[ex]}
        assert ctx.handles is not None and LATE[ex] not in ctx.handles
        assert side.parse(ex, _frame(ex, LATE[ex], T0, 100.0, None, None)) == []
    # a context without handles (tests, replay): no handle on any record
    ctx = FeedContext(Exchange.BYBIT, {"BTCUSDT": _info(Exchange.BYBIT, "BTCUSDT")})
    (w,) = feed_for(Exchange.BYBIT).parse_ws(_frame(Exchange.BYBIT, "BTCUSDT", T0, 1.0, None, None), ctx)
    assert isinstance(w, MarketUpdate) and w.handle is None


def test_registration_and_relayout_keep_the_handles_given_current() -> None:
    s = MarketState(clock=lambda: T0)
    ex = Exchange.BYBIT
    ctx = FeedContext(ex, {"AUSDT": _info(ex, "AUSDT"), "BUSDT": _info(ex, "BUSDT")})
    s.register(_info(ex, "AUSDT"))
    s.bind(ctx)
    assert ctx.handles == {"AUSDT": s.instruments[(ex, "AUSDT")].record}
    s.register(_info(ex, "BUSDT"))  # listed: its handle is added at once
    s.register(_info(ex, "CUSDT"))  # not listed: none
    assert ctx.handles is not None and set(ctx.handles) == {"AUSDT", "BUSDT"}
    given_dict = ctx.handles
    assert s.relayout(ex, ["BUSDT", "CUSDT", "AUSDT"])
    assert ctx.handles is given_dict  # the same dict, its handles the new records
    assert all(h is s.instruments[(ex, i)].record for i, h in ctx.handles.items())
    # bound to another state: the first no longer touches it
    other = MarketState(clock=lambda: T0)
    other.register(_info(ex, "AUSDT"))
    other.bind(ctx)
    s.relayout(ex, ["AUSDT", "BUSDT"])
    s.register(_info(ex, "DUSDT"))
    assert ctx.handles == {"AUSDT": other.instruments[(ex, "AUSDT")].record}


def test_a_stale_handle_writes_into_the_instruments_record_now_and_never_into_another() -> None:
    side = Side(True)
    ex = Exchange.DERIBIT
    state = side.state
    btc, eth = (state.instruments[(ex, i)] for i in IDS[ex])
    u = side.one(ex, _frame(ex, "BTC-PERPETUAL", T0, 100.0, 0.0001, 1e6))
    state.apply_many([u], T0)  # the first update: its minute and anchor hints set
    u = side.one(ex, _frame(ex, "BTC-PERPETUAL", T0 + 1, 123.0, 0.0002, 2e6))
    old: Any = btc.record
    assert u.handle is btc.record  # (not "is old": the type checker would take old for an object)
    eth_before = eth.record.tobytes()
    assert state.relayout(ex, ["ETH-PERPETUAL", "BTC-PERPETUAL"])
    assert btc.record is not old and old[F_DUE] == float("-inf")  # a record left reads as due
    left = old.tobytes()
    state.apply_many([u], T0 + 1)
    assert (btc.mark_price, btc.funding_rate, btc.open_interest_base) == (123.0, 0.0002, 2e6)
    assert old.tobytes() == left  # nothing written where the handle pointed
    assert eth.record.tobytes() == eth_before


class _Listing:
    """An exchange's instrument list, the only REST call the app's instrument step makes here."""

    polls_open_interest = False
    has_long_short_ratio = False
    poll_paths: dict[str, str] = {}  # no poll reaches a request budget: nothing to split

    def __init__(self, listed: list[InstrumentInfo]) -> None:
        self.listed = listed

    async def instruments(self) -> list[InstrumentInfo]:
        return list(self.listed)


def test_the_exporter_binds_its_context_to_the_state_when_it_loads_the_instruments() -> None:
    from exporter.app import Exporter
    from exporter.config import Config

    ex = Exchange.BYBIT
    config = Config.model_validate({"exchanges": {"bybit": {"enabled": True, "instruments": ["BTCUSDT", "ETHUSDT"]}}})
    exporter = Exporter(config, state=MarketState(clock=lambda: T0))
    rt = exporter._runtime(ex, config.exchanges[ex])
    rt.rest = _Listing([_info(ex, "BTCUSDT"), _info(ex, "ETHUSDT"), _info(ex, "SOLUSDT")])  # type: ignore[assignment]

    async def load() -> None:
        await exporter._load_instruments(rt)
        await rt.client.aclose()

    asyncio.run(load())
    state = exporter.state
    assert rt.ctx.handles == {i: state.instruments[(ex, i)].record for i in ("BTCUSDT", "ETHUSDT")}
    (v,) = feed_for(ex).parse_ws(_frame(ex, "ETHUSDT", T0, 1.0, None, None), rt.ctx)  # as the stream's parser
    assert isinstance(v, MarketUpdate) and v.handle is state.instruments[(ex, "ETHUSDT")].record
