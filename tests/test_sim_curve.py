"""The simulator's dated futures as a model: carry from the funding regime, convergence at delivery,
the roll of the nearest contract, curve_dislocation, and the perpetuals untouched by the curve."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import websockets

from exporter.clock import VirtualClock
from exporter.feeds import dated, feed_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, MarketUpdate
from exporter.sim import futures_wire
from exporter.sim.curve import CARRY_LIMIT, DISLOCATED, DISLOCATION, quarterlies
from exporter.sim.main import Simulator
from exporter.sim.market import MarketModel, Scenario

START = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def test_quarterlies_are_the_last_fridays_of_the_quarter_months() -> None:
    days = [datetime.fromtimestamp(t, tz=UTC) for t in quarterlies(START, 3)]
    assert [(d.year, d.month, d.day, d.hour) for d in days] == [(2026, 3, 27, 8), (2026, 6, 26, 8), (2026, 9, 25, 8)]
    assert all(d.weekday() == 4 for d in days)


def test_the_perpetuals_are_the_same_with_or_without_the_curve() -> None:
    a, b = MarketModel(seed=3, start_time=START), MarketModel(seed=3, start_time=START, futures=False)
    for _ in range(50):
        a.step(1.0)
        b.step(1.0)
    for ex in Exchange:
        assert a.truth(ex)["instruments"] == b.truth(ex)["instruments"]


def test_basis_follows_the_carry_and_converges_at_delivery() -> None:
    m = MarketModel(seed=3, start_time=START, futures_short_seconds=600.0)
    assert m.curve is not None
    m.step(1.0)
    for ex in Exchange:
        for f in m.curve.futures[ex].values():
            days = (f.expiry - m.now) / 86400.0
            # mark = index x (1 + carry x days / 365), carry within the calm band (+ noise)
            assert f.mark == pytest.approx(f.index * (1 + f.carry * days / 365.0), rel=1e-12)
            assert abs(f.carry) <= CARRY_LIMIT + 0.05
    quarterly = max(m.curve.futures[Exchange.DERIBIT].values(), key=lambda f: f.expiry)
    short = min(m.curve.futures[Exchange.DERIBIT].values(), key=lambda f: f.expiry)
    while m.now < short.expiry - 5.0:
        m.step(5.0)
    # 5 s before delivery the basis is at most |carry| x 5 s of a year: gone, whatever the carry
    assert abs(short.mark / short.index - 1) <= (CARRY_LIMIT + 0.05) * 5.0 / 86400.0 / 365.0
    assert abs(quarterly.mark / quarterly.index - 1) > 1e-4  # months out it is not


def test_the_nearest_expires_and_the_next_is_listed() -> None:
    m = MarketModel(seed=3, start_time=START, futures_short_seconds=30.0)
    assert m.curve is not None
    before = dict(m.curve.futures[Exchange.BYBIT])
    nearest = min(before.values(), key=lambda f: f.expiry)
    for _ in range(31):
        m.step(1.0)
    t = m.truth(Exchange.BYBIT)
    assert t["expired"] == [nearest.symbol]
    new = set(t["futures"]) - set(before)
    assert len(new) == 1
    (sym,) = new
    assert t["futures"][sym]["expiry"] == pytest.approx(max(f.expiry for f in before.values() if f.k) + 30.0)
    assert len(t["futures"]) == len(before)  # one delivered, one listed


def test_curve_dislocation_moves_one_exchange_off_the_curve() -> None:
    m = MarketModel(seed=3, start_time=START)
    assert m.curve is not None
    m.step(1.0)
    calm = {ex: {s: f.carry for s, f in m.curve.futures[ex].items()} for ex in Exchange}
    m.set_scenario(Scenario.CURVE_DISLOCATION, 60.0)
    m.step(1.0)
    for ex in Exchange:
        for s, f in m.curve.futures[ex].items():
            jump = f.carry - calm[ex][s]
            if ex is DISLOCATED:
                assert jump == pytest.approx(DISLOCATION, abs=0.01)
            else:
                assert abs(jump) < 0.01
    for _ in range(61):
        m.step(1.0)
    assert m.scenario == Scenario.CALM
    assert all(abs(f.carry) <= CARRY_LIMIT + 0.05 for f in m.curve.futures[DISLOCATED].values())


def test_bybit_serves_inverse_quarterlies_and_rolls_them_as_inverse() -> None:
    """Bybit lists USDT and inverse quarterlies (BTCUSDH26: month letter H, 1 USD a contract): the
    inverse instruments-info rows and stream frames parse into the values of the model, and a
    delivered inverse contract is followed by the next inverse quarterly."""
    march = datetime(2026, 3, 27, 8, tzinfo=UTC).timestamp()
    m = MarketModel(seed=3, start_time=march - 10.0)
    assert m.curve is not None
    m.step(1.0)
    body = orjson.dumps({"retCode": 0, "retMsg": "OK", "result": {"category": "inverse", "list":
                         futures_wire.bybit_rows(m, inverse=True), "nextPageCursor": ""}})  # fmt: skip
    listed = dated.parse_bybit(body)
    assert [(i.instrument, i.quote, i.inverse, i.expiry) for i in listed] == [
        ("BTCUSDH26", "USD", True, march),
        ("BTCUSDM26", "USD", True, datetime(2026, 6, 26, 8, tzinfo=UTC).timestamp()),
        ("ETHUSDH26", "USD", True, march),
        ("ETHUSDM26", "USD", True, datetime(2026, 6, 26, 8, tzinfo=UTC).timestamp()),
    ]
    linear = dated.parse_bybit(orjson.dumps({"retCode": 0, "result": {"list": futures_wire.bybit_rows(m)}}))
    assert {i.instrument for i in linear} == {
        "BTCUSDT-27MAR26",
        "BTCUSDT-26JUN26",
        "ETHUSDT-27MAR26",
        "ETHUSDT-26JUN26",
    }
    assert not any(i.inverse for i in linear)
    f = m.curve.futures[Exchange.BYBIT]["BTCUSDH26"]
    ctx = FeedContext(Exchange.BYBIT, {i.instrument: i for i in listed}, clock=lambda: m.now)
    [u] = feed_for(Exchange.BYBIT).parse_ws(orjson.dumps(futures_wire.bybit_ticker(f, m.now)), ctx)
    assert isinstance(u, MarketUpdate)
    assert u.mark_price == pytest.approx(f.mark, abs=0.005) and u.index_price == pytest.approx(f.index, abs=0.005)
    for _ in range(10):
        m.step(1.0)
    t = m.truth(Exchange.BYBIT)
    assert {"BTCUSDH26", "ETHUSDH26", "BTCUSDT-27MAR26", "ETHUSDT-27MAR26"} <= set(t["expired"])
    assert t["futures"]["BTCUSDU26"]["inverse"] and t["futures"]["BTCUSDU26"]["quote"] == "USD"
    assert t["futures"]["BTCUSDT-25SEP26"]["quote"] == "USDT"
    sept = datetime(2026, 9, 25, 8, tzinfo=UTC).timestamp()
    assert t["futures"]["BTCUSDU26"]["expiry"] == t["futures"]["BTCUSDT-25SEP26"]["expiry"] == sept


async def test_bybit_inverse_category_over_the_wire() -> None:
    """Bybit separates the categories: the inverse quarterlies are in instruments-info and tickers of
    category=inverse (deliveryTime in ms there) and on /v5/public/inverse (ISO deliveryTime); the
    linear path refuses them, and the linear list does not carry them."""
    sim = Simulator(seed=3, base_port=0, tick_seconds=0.5, clock=VirtualClock(START))
    await sim.start()
    try:
        ws_base, rest = sim.urls(Exchange.BYBIT)
        async with httpx.AsyncClient(base_url=rest) as http:
            info = (await http.get("/v5/market/instruments-info", params={"category": "inverse"})).json()
            rows = info["result"]["list"]
            assert info["retCode"] == 0 and info["result"]["category"] == "inverse"
            assert {r["symbol"] for r in rows} == {"BTCUSDH26", "BTCUSDM26", "ETHUSDH26", "ETHUSDM26"}
            row = next(r for r in rows if r["symbol"] == "BTCUSDH26")
            march_ms = int(datetime(2026, 3, 27, 8, tzinfo=UTC).timestamp() * 1000)
            assert row["contractType"] == "InverseFutures" and row["deliveryTime"] == str(march_ms)
            assert (row["baseCoin"], row["quoteCoin"], row["settleCoin"]) == ("BTC", "USD", "BTC")
            linear = (await http.get("/v5/market/instruments-info", params={"category": "linear"})).json()
            assert not {r["symbol"] for r in linear["result"]["list"]} & {r["symbol"] for r in rows}
            tick = (await http.get("/v5/market/tickers", params={"category": "inverse", "symbol": "btcusdh26"})).json()
            [t] = tick["result"]["list"]
            truth = (await http.get("/_sim/truth")).json()["futures"]["BTCUSDH26"]
            assert t["deliveryTime"] == str(march_ms)
            assert float(t["markPrice"]) == pytest.approx(truth["mark"], abs=0.005)
            assert float(t["indexPrice"]) == pytest.approx(truth["index"], abs=0.005)
        async with websockets.connect(ws_base + "/v5/public/linear") as ws:
            await ws.send(orjson.dumps({"req_id": "l", "op": "subscribe", "args": ["tickers.BTCUSDH26"]}).decode())
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert ack["success"] is False and "BTCUSDH26" in ack["ret_msg"]
        async with websockets.connect(ws_base + "/v5/public/inverse") as ws:
            await ws.send(orjson.dumps({"req_id": "i", "op": "subscribe", "args": ["tickers.BTCUSDH26"]}).decode())
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert ack["success"] is True and ack["req_id"] == "i"
            await sim.advance(1.0)  # the next market second's frame
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            truth = sim.market.truth(Exchange.BYBIT)["futures"]["BTCUSDH26"]
            assert frame["topic"] == "tickers.BTCUSDH26" and frame["data"]["deliveryTime"] == "2026-03-27T08:00:00Z"
            assert float(frame["data"]["markPrice"]) == pytest.approx(truth["mark"], abs=0.005)
    finally:
        await sim.stop()
