"""``FeedContext.inverse``: the inverse contracts among the context's instruments, set whenever the
instruments are (at construction and on every assignment). The Bybit and Deribit ticker paths tell an
inverse contract's open-interest units from it, not from the instrument's facts (a cache miss an
update at thousands of instruments): the units follow the instrument list, never the symbol's name.
"""

from __future__ import annotations

import orjson

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, InstrumentInfo, MarketUpdate

T_MS = 1_765_541_474_086


def _info(ex: Exchange, inst: str, inverse: bool) -> InstrumentInfo:
    return InstrumentInfo(ex, inst, "ODD", "USD" if inverse else "USDT", inverse=inverse)


def test_the_inverse_ids_follow_the_instruments_at_construction_and_on_assignment() -> None:
    ex = Exchange.OKX
    infos = {"A-USD-SWAP": _info(ex, "A-USD-SWAP", True), "B-USDT-SWAP": _info(ex, "B-USDT-SWAP", False)}
    assert FeedContext(ex).inverse == frozenset()
    assert FeedContext(ex, infos).inverse == {"A-USD-SWAP"}
    assert FeedContext(exchange=ex, instruments=infos, clock=None).inverse == {"A-USD-SWAP"}
    ctx = FeedContext(ex, infos)
    ctx.instruments = {"B-USDT-SWAP": infos["B-USDT-SWAP"]}
    assert ctx.inverse == frozenset()
    ctx.instruments = {k: _info(ex, k, True) for k in infos}
    assert ctx.inverse == set(infos)


def _bybit_delta(sym: str) -> bytes:
    data = {"symbol": sym, "markPrice": "2.5", "openInterest": "1000", "openInterestValue": "2500"}
    return orjson.dumps({"topic": f"tickers.{sym}", "type": "delta", "data": data, "cs": 1, "ts": T_MS})


def _deribit_ticker(inst: str) -> bytes:
    data = {"timestamp": T_MS, "instrument_name": inst, "mark_price": 2.5, "index_price": 2.5, "open_interest": 1000.0}
    params = {"channel": f"ticker.{inst}.100ms", "data": data}
    return orjson.dumps({"jsonrpc": "2.0", "method": "subscription", "params": params})


def test_the_ticker_paths_take_the_units_from_the_instrument_list() -> None:
    # names that would say the opposite of the list: the list decides, and a new list is followed
    for ex, sym, frame in (
        (Exchange.BYBIT, "ODDUSDT", _bybit_delta("ODDUSDT")),
        (Exchange.DERIBIT, "ODD_USDC-PERPETUAL", _deribit_ticker("ODD_USDC-PERPETUAL")),
    ):
        parse = feed_for(ex).parse_ws
        ctx = FeedContext(ex, {sym: _info(ex, sym, True)})
        (u,) = parse(frame, ctx)
        assert isinstance(u, MarketUpdate)
        assert u.open_interest_usd is not None and u.open_interest_usd >= 500.0, ex  # counted in USD
        ctx.instruments = {sym: _info(ex, sym, False)}
        (v,) = parse(frame, ctx)
        assert isinstance(v, MarketUpdate)
        assert v.open_interest_base is not None and v.open_interest_base >= 500.0, ex  # counted in coin
        assert (u.open_interest_usd, u.open_interest_base) != (v.open_interest_usd, v.open_interest_base)


def _okx_push(channel: str, row: dict[str, str]) -> bytes:
    return orjson.dumps({"arg": {"channel": channel, "instId": row["instId"]}, "data": [row]})


def test_okx_open_interest_takes_the_units_from_the_instrument_list() -> None:
    ex = Exchange.OKX
    inst = "ODD-USDT-SWAP"  # a linear name: the list says inverse first
    frame = _okx_push("open-interest", {"instId": inst, "oi": "1000", "oiCcy": "7", "ts": str(T_MS)})
    parse = feed_for(ex).parse_ws
    ctx = FeedContext(ex, {inst: _info(ex, inst, True)})
    (u,) = parse(frame, ctx)
    assert (u.open_interest_base, u.open_interest_usd) == (7.0, 1000.0 * ctx.instruments[inst].contract_size)
    ctx.instruments = {inst: _info(ex, inst, False)}
    (v,) = parse(frame, ctx)
    assert (v.open_interest_base, v.open_interest_usd) == (7.0, None)  # no USD given for a linear swap


def test_the_settlement_memory_keeps_followed_instruments_only() -> None:
    # OKX's funding path finds a repeated period by the memory alone (a hit is a followed instrument):
    # an instrument dropped from the list is forgotten, and its pushes give nothing again
    ex = Exchange.OKX
    a, b = "A-USDT-SWAP", "B-USDT-SWAP"
    h8 = 28_800_000
    t_set = (T_MS // h8 + 1) * h8

    def funding(inst: str) -> bytes:
        row = {
            "instId": inst,
            "fundingRate": "0.0001",
            "fundingTime": str(t_set),
            "nextFundingTime": str(t_set + h8),
            "prevFundingTime": str(t_set - h8),
            "settFundingRate": "0.0002",
            "settState": "settled",
            "ts": str(T_MS),
        }
        return _okx_push("funding-rate", row)

    parse = feed_for(ex).parse_ws
    ctx = FeedContext(ex, {a: _info(ex, a, False), b: _info(ex, b, False)}, settled={})
    for inst in (a, b):
        assert [type(r).__name__ for r in parse(funding(inst), ctx)] == ["FundingUpdate", "FundingSettlement"]
        assert [r.instrument for r in parse(funding(inst), ctx)] == [inst]  # the repeat: no settlement
    assert ctx.settled == {a: float(t_set), b: float(t_set)}
    # its keys are the instruments' own id strings (not the decoded ones), its times one object per time
    assert all(k is ctx.instruments[k].instrument for k in ctx.settled)
    assert ctx.settled[a] is ctx.settled[b]
    ctx.instruments = {a: ctx.instruments[a]}
    assert ctx.settled == {a: float(t_set)}
    assert parse(funding(b), ctx) == []  # not followed any more
    assert [r.instrument for r in parse(funding(a), ctx)] == [a]
    # a memory given to a context is held to its instruments too; with no list every instrument is followed
    assert FeedContext(ex, {a: _info(ex, a, False)}, settled={a: 1.0, b: 2.0}).settled == {a: 1.0}
    assert FeedContext(ex, settled={a: 1.0, b: 2.0}).settled == {a: 1.0, b: 2.0}
