"""The records laid out again (``MarketState.relayout``, the housekeeping that follows a stream's order)
change nothing anyone sees: two stores take the same updates, one relaid in a random order between
them; after every step their instruments (records and windows), events and counters are equal, and at
the end their exposition is byte for byte the same. The Binance parser keeps its array frames' order
only when asked (``FeedContext.array_frames``), and the exporter's housekeeping step lays the records
out in it and puts the parser's instruments in the same order, keyed by the state's own strings
(``FeedContext.follow_order``): a parser on the reordered context gives the same records as before.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from support.state import assert_same_state

from exporter.app import Exporter
from exporter.config import Config
from exporter.feeds import feed_for
from exporter.feeds.base import ARRAY_FRAMES_KEPT, FeedContext
from exporter.metrics import build_registry
from exporter.model import Exchange, InstrumentInfo, Liquidation, MarketUpdate, Side
from exporter.state import MarketState

T0 = 1_785_870_000.0
H8 = 28_800.0
IDS = {
    Exchange.BINANCE: ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"),
    Exchange.BYBIT: ("BTCUSDT", "ETHUSDT"),
    Exchange.DERIBIT: ("BTC-PERPETUAL",),
}


def _state() -> MarketState:
    s = MarketState(clock=lambda: T0)
    for ex, ids in IDS.items():
        for inst in ids:
            base = inst.removesuffix("USDT").removesuffix("-PERPETUAL")
            quote = "USD" if ex is Exchange.DERIBIT else "USDT"
            s.register(InstrumentInfo(ex, inst, base, quote, funding_interval_s=H8))
    return s


update = st.fixed_dictionaries(
    {
        "kind": st.just("update"),
        "key": st.sampled_from([(ex, i) for ex, ids in IDS.items() for i in ids] + [(Exchange.BYBIT, "NOPEUSDT")]),
        "dt": st.sampled_from([0.0, 1.0, 61.0, 3600.0, H8]),
        "mark": st.none() | st.sampled_from([100.0, 101.5, 97.0]),
        "index": st.none() | st.sampled_from([100.2, 99.0]),
        "rate": st.none() | st.sampled_from([0.0001, -0.0003, 0.0007, 0.003]),
        "nft_step": st.none() | st.sampled_from([0.0, 1.0, H8, 2 * H8]),
        "oi": st.none() | st.sampled_from([1e6, 2.5e9]),
        "liquidation": st.booleans(),
    }
)
register = st.fixed_dictionaries({"kind": st.just("register")})  # NOPEUSDT followed from then on
relayout = st.fixed_dictionaries(
    {
        "kind": st.just("relayout"),
        "exchange": st.sampled_from(list(IDS)),
        "seed": st.integers(0, 2**16),
        "keep": st.integers(0, 6),  # how many ids the order names (the rest follow), an unknown one too
    }
)


@settings(max_examples=120, deadline=None)
@given(st.lists(update | relayout | register, min_size=1, max_size=40))
def test_a_relayout_changes_no_value_window_event_or_exposition(steps: list[dict[str, Any]]) -> None:
    relaid, kept = _state(), _state()
    now = T0
    nft: dict[tuple[Exchange, str], float] = {}
    for step in steps:
        if step["kind"] == "relayout":
            ids = [*IDS[step["exchange"]], "UNKNOWN"]
            random.Random(step["seed"]).shuffle(ids)
            relaid.relayout(step["exchange"], ids[: step["keep"]])
            assert_same_state(relaid, kept)
            continue
        if step["kind"] == "register":  # after a relayout: into the fresh chunks
            for state in (relaid, kept):
                state.register(InstrumentInfo(Exchange.BYBIT, "NOPEUSDT", "NOPE", "USDT", funding_interval_s=H8))
            continue
        now += step["dt"]
        ex, inst = step["key"]
        next_time = None
        if step["nft_step"] is not None:
            next_time = nft[(ex, inst)] = nft.get((ex, inst), T0 + H8) + step["nft_step"]
        records: list[Any] = [
            MarketUpdate(
                ex,
                inst,
                now,
                step["mark"],
                step["index"],
                step["rate"],
                next_time,
                open_interest_usd=step["oi"],
            )
        ]
        if step["liquidation"]:
            records.append(Liquidation(ex, inst, now, Side.LONG, 100.0, 2.0, 200.0))
        relaid.apply_many(records, now)
        kept.apply_many(records, now)
        assert_same_state(relaid, kept)
    assert _exposition(relaid) == _exposition(kept)


def _exposition(state: MarketState) -> list[bytes]:
    """The scrape's lines, less the process's own (memory, CPU, file descriptors: not the state's)."""
    return [ln for ln in build_registry(Config(), state).render().splitlines() if not ln.startswith(b"process_")]


def test_a_relayout_follows_the_order_and_moves_each_record_with_its_values() -> None:
    s = _state()
    s.apply(MarketUpdate(Exchange.BINANCE, "SOLUSDT", T0, 150.0, 149.0, 0.0002, T0 + H8), T0)
    before = {k: (st_.record, st_.record.tobytes()) for k, st_ in s.instruments.items()}
    assert s.relayout(Exchange.BINANCE, ["XRPUSDT", "SOLUSDT", "UNKNOWN"])
    binance = s._record_of[Exchange.BINANCE]
    # the named ones first, in the order named; the rest after them, as they were
    assert list(binance) == ["XRPUSDT", "SOLUSDT", "BTCUSDT", "ETHUSDT", "DOGEUSDT"]
    starts = [np.frombuffer(r, dtype=np.float64).ctypes.data for r in binance.values()]
    assert starts == sorted(starts)  # in memory in that order
    for key, st_ in s.instruments.items():
        old, values = before[key]
        assert st_.record is not old  # every record moved (fresh chunks), with its values
        assert st_.record.tobytes() == values
        assert s._record_of[key[0]][key[1]] is st_.record  # the hot path finds the new one
    sol = s.instruments[(Exchange.BINANCE, "SOLUSDT")]
    assert (sol.mark_price, sol.funding_rate, sol.next_funding_time) == (150.0, 0.0002, T0 + H8)
    # the same order again: nothing to do
    assert not s.relayout(Exchange.BINANCE, ["XRPUSDT", "SOLUSDT"])
    assert not s.relayout(Exchange.BYBIT, [])
    # an update after it lands in the new record
    s.apply(MarketUpdate(Exchange.BINANCE, "SOLUSDT", T0 + 1, 151.0), T0 + 1)
    assert sol.mark_price == 151.0 and binance["SOLUSDT"][1] == 151.0


def _array_frame(symbols: list[str]) -> bytes:
    ms, nft = int(T0 * 1000), int((T0 + H8) * 1000)
    row = {"e": "markPriceUpdate", "E": ms, "p": "100.5", "i": "100.4", "r": "0.0001", "T": nft}
    rows = [{**row, "s": s} for s in symbols]
    return orjson.dumps({"stream": "!markPrice@arr@1s", "data": rows})


def test_the_binance_parser_keeps_the_array_order_only_when_asked() -> None:
    infos = {i: InstrumentInfo(Exchange.BINANCE, i, i[:3], "USDT") for i in IDS[Exchange.BINANCE]}
    ctx = FeedContext(Exchange.BINANCE, infos, clock=lambda: T0)
    parse = feed_for(Exchange.BINANCE).parse_ws
    order = ["DOGEUSDT", "NOTFOLLOWED", "BTCUSDT", "SOLUSDT", "ETHUSDT", "XRPUSDT"]
    parse(_array_frame(order), ctx)
    assert ctx.array_frames is None  # not asked: nothing kept
    assert ctx.take_array_order() == []  # asks for the next frames
    for _ in range(ARRAY_FRAMES_KEPT + 3):
        parse(_array_frame(order), ctx)
    assert ctx.array_frames is not None and len(ctx.array_frames) == ARRAY_FRAMES_KEPT  # bounded
    one = b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1785870000000,"s":"BTCUSDT","p":"1.5"}}'
    assert len(parse(one, ctx)) == 1 and len(ctx.array_frames) == ARRAY_FRAMES_KEPT  # a single stream: not kept
    assert ctx.take_array_order() == ["DOGEUSDT", "BTCUSDT", "SOLUSDT", "ETHUSDT", "XRPUSDT"]
    assert ctx.array_frames == []


LISTED = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "BTCUSDT_260327", "ETHUSDT_260327")


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from(LISTED), max_size=5, unique=True),  # the followed ones (none: every symbol)
    st.lists(st.sampled_from([*LISTED, "NOTLISTED", "ETHUSDT"]), max_size=9),  # the order given, repeats too
    st.lists(st.sampled_from([*LISTED, "UNFOLLOWED"]), min_size=1, max_size=8),  # an array frame's symbols
)
def test_a_context_in_another_order_parses_every_frame_alike(
    followed: list[str], order: list[str], symbols: list[str]
) -> None:
    infos = {i: InstrumentInfo(Exchange.BINANCE, i, i[:3], "USDT", inverse=i == "ETHUSDT") for i in followed}
    before = FeedContext(Exchange.BINANCE, dict(infos), clock=lambda: T0)
    ctx = FeedContext(Exchange.BINANCE, dict(infos), clock=lambda: T0)
    keys = ["".join(list(i)) for i in order]  # equal strings, other objects (as the state's lookup keys are)
    ctx.follow_order(keys)
    assert ctx.instruments == before.instruments and ctx.inverse == before.inverse  # the same facts, each
    named = list(dict.fromkeys(k for k in keys if k in infos))
    assert list(ctx.instruments)[: len(named)] == named  # in the order given, the rest after
    assert [k for k in ctx.instruments if k not in named] == [k for k in infos if k not in named]
    for k in named:  # keyed by the objects given
        assert next(x for x in ctx.instruments if x == k) is next(x for x in keys if x == k)
    parse = feed_for(Exchange.BINANCE).parse_ws
    frame = _array_frame(symbols)
    assert parse(frame, ctx) == parse(frame, before)  # followed, unfollowed and delivery symbols alike
    assert not ctx.follow_order(list(ctx.instruments))  # already so: nothing assigned


def test_follow_order_changes_the_order_and_keys_only() -> None:
    infos = {i: InstrumentInfo(Exchange.BINANCE, i, i[:3], "USDT") for i in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    ctx = FeedContext(Exchange.BINANCE, infos, clock=lambda: T0)
    sol = "".join(["SOL", "USDT"])
    assert ctx.follow_order([sol, "NOPEUSDT"])
    assert list(ctx.instruments) == ["SOLUSDT", "BTCUSDT", "ETHUSDT"]
    assert next(iter(ctx.instruments)) is sol and ctx.instruments["SOLUSDT"] is infos["SOLUSDT"]
    assert ctx.instruments is not infos and list(infos) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # a new mapping
    assert not ctx.follow_order([sol])  # the same order, the same key objects
    assert ctx.follow_order(["".join(["SOL", "USDT"])])  # equal keys, other objects: keyed by those
    empty = FeedContext(Exchange.BINANCE, {}, clock=lambda: T0)
    assert not empty.follow_order(["BTCUSDT"]) and empty.instruments == {}  # nothing followed yet: every symbol


async def test_the_housekeeping_step_lays_the_records_out_in_the_streams_order() -> None:
    exporter = Exporter(Config(), state=_state())
    state = exporter.state
    rt = exporter._runtime(Exchange.BINANCE, Config().exchanges[Exchange.BINANCE])  # what start() builds
    rt.ctx.instruments = {i: st_.info for (ex, i), st_ in state.instruments.items() if ex is Exchange.BINANCE}
    order = ["DOGEUSDT", "BTCUSDT", "SOLUSDT", "ETHUSDT", "XRPUSDT"]
    await exporter._relayout(rt)  # the first round asks for the frames' order
    parse = feed_for(Exchange.BINANCE).parse_ws
    state.apply_many(parse(_array_frame(order), rt.ctx), T0)
    await exporter._relayout(rt)
    assert list(state._record_of[Exchange.BINANCE]) == order
    assert state.instruments[(Exchange.BINANCE, "SOLUSDT")].mark_price == 100.5
    # the parser's instruments in that order too, keyed by the very strings of the state's lookup
    assert list(rt.ctx.instruments) == order
    assert all(a is b for a, b in zip(rt.ctx.instruments, state.record_ids(Exchange.BINANCE), strict=True))
    # a listing refresh assigns them in the listing's order: the next round puts them back, though the
    # records need no new layout
    rt.ctx.instruments = {i: st_.info for (ex, i), st_ in state.instruments.items() if ex is Exchange.BINANCE}
    assert list(rt.ctx.instruments) != order
    state.apply_many(parse(_array_frame(order), rt.ctx), T0 + 1)
    await exporter._relayout(rt)
    assert list(rt.ctx.instruments) == order
    assert all(a is b for a, b in zip(rt.ctx.instruments, state.record_ids(Exchange.BINANCE), strict=True))
    await rt.client.aclose()
