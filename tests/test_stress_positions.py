"""Historical stress of positions: the close ring, the backfill through a candle source, and the
published series against computations made here from the candles themselves."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import threading
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support import wait_until
from support.clock import ManualClock as Clock

from exporter.analytics.stress import fit_student_t
from exporter.config import Config
from exporter.metrics.positions import PositionCollector
from exporter.model import Candle, Exchange, InstrumentInfo, MarketUpdate, Side
from exporter.positions.history import RETRY_SECONDS, CloseSeries, StressHistory
from exporter.positions.service import PositionService
from exporter.state import MarketState

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
BTC = (Exchange.BINANCE, "BTCUSDT")


class FakeSource:
    """An exchange's mark candles: one per minute from ``closes`` (minute index -> close)."""

    def __init__(self, closes: dict[int, float], kinds: frozenset[str] = frozenset({"mark", "index"})) -> None:
        self.closes = closes
        self.candle_kinds = kinds
        self.calls: list[tuple[str, str, int, float, float]] = []
        self.fail = 0
        self.fail_calls: set[int] = set()  # these calls (0-based) fail
        self.gate: asyncio.Event | None = None  # set: the klines arrive (a slow exchange until then)

    async def price_candles(
        self, kind: str, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]:
        self.calls.append((kind, instrument, interval_seconds, start, end))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail or len(self.calls) - 1 in self.fail_calls:
            self.fail = max(0, self.fail - 1)
            raise RuntimeError("HTTP 503")
        return [Candle(m * 60.0, c, c, c, c) for m, c in sorted(self.closes.items()) if start <= m * 60.0 <= end]


def path(now: float, minutes: int, seed: int = 1) -> dict[int, float]:
    """A minute path ending at ``now``'s minute: t(3) returns, a 6 % crash over 3 minutes, a gap."""
    rng = np.random.default_rng(seed)
    last = int(now // 60)
    p = 50_000.0
    out: dict[int, float] = {}
    for m in range(last - minutes + 1, last + 1):
        p *= math.exp(0.0008 * rng.standard_t(3))
        if m == last - 300:
            p *= 0.97
        if m in (last - 299, last - 298):
            p *= 0.99
        out[m] = p
    for m in range(last - 500, last - 490):  # the exchange has no candle for these minutes
        out.pop(m)
    return out


def brute_worst(closes: dict[int, float], lo: int, hi: int, lag: int) -> tuple[float, float]:
    fall, rise = 0.0, 0.0
    for j in range(lo, hi + 1):
        for i in range(max(lo, j - lag), j):
            if i in closes and j in closes:
                fall = min(fall, closes[j] / closes[i] - 1)
                rise = max(rise, closes[j] / closes[i] - 1)
    return fall, rise


# ---- the ring ---------------------------------------------------------------------------------


def test_close_ring_equals_a_dictionary_of_minutes() -> None:
    rng = np.random.default_rng(4)
    cap = 50
    ring = CloseSeries(cap)
    model: dict[int, float] = {}
    last = None
    t = T0
    for _ in range(2000):
        step = rng.choice([0.0, 20.0, 60.0, 600.0, 4000.0, -900.0])  # same minute, next, gaps, older
        t = max(T0, t + step)
        price = float(rng.uniform(90, 110))
        m = int(t // 60)
        last = m if last is None else max(last, m)
        if m > last - cap:
            model[m] = price
        ring.put(t, price)
        if rng.random() < 0.05:
            expected = [model.get(k, math.nan) for k in range(last - cap + 1, last + 1)]
            np.testing.assert_array_equal(ring.closes(last * 60.0 + 1.0), np.array(expected))
    ring.put(t, -5.0)  # a bad price is no price
    ring.put(t, math.nan)
    assert ring.closes(last * 60.0)[-1] == model[last]


# ---- the service ------------------------------------------------------------------------------


def make_service(
    tmp_path: Path, clock: Clock, positions: list[dict[str, object]], **settings: object
) -> PositionService:
    cfg = Config.model_validate(
        {
            "positions": positions,
            "position_settings": {"db_path": str(tmp_path / "acc.sqlite"), **settings},
        }
    )
    st = MarketState(clock=clock)
    st.register(InstrumentInfo(*BTC, "BTC", "USDT", funding_interval_s=8 * 3600.0))
    return PositionService(cfg, st, clock=clock)


LONG = {"name": "long-50x", "exchange": "binance", "instrument": "BTCUSDT", "side": "long", "size": 1.0,
        "entry_price": 50_000.0, "leverage": 50}  # fmt: skip
SHORT = {**LONG, "name": "short-5x", "side": "short", "leverage": 5}


def render(svc: PositionService) -> str:
    reg = CollectorRegistry()
    reg.register(PositionCollector(svc, svc.settings.stress_period_days))
    return generate_latest(reg).decode()


def series(text: str, name: str) -> dict[tuple[str, ...], float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', line)))
            out[tuple(f"{k}={v}" for k, v in labels)] = float(line.rsplit(" ", 1)[1])
    return out


async def test_series_on_the_first_cycle_equal_a_brute_force_on_the_candles(tmp_path: Path) -> None:
    clock = Clock(T0 + 30.5)
    svc = make_service(tmp_path, clock, [LONG, SHORT], stress_period_days=1)
    now_min = int(clock() // 60)
    closes = path(clock(), 3000)
    source = FakeSource(closes)
    svc.candle_source = lambda ex: source  # type: ignore[method-assign]
    mark_now = closes[now_min]
    svc.state.apply(MarketUpdate(*BTC, mark_price=mark_now))

    await svc.update_history(clock())
    svc.tick()

    # one history per instrument (both positions share it), asked a day per request, the whole trailing day
    assert {c[:3] for c in source.calls} == {("mark", "BTCUSDT", 60)}
    assert source.calls[0][3] == (now_min - 1440) * 60.0 and source.calls[-1][4] == clock()
    assert all(b[3] == a[4] + 60 and b[3] - a[3] <= 86400 for a, b in itertools.pairwise(source.calls))
    lo, hi = now_min - 1440, now_min - 1  # the completed minutes of the trailing day
    fall, rise = brute_worst(closes, lo, hi, 5)
    assert fall < -0.05  # the planted crash is in the period
    text = render(svc)
    worst = series(text, "fr_position_historical_worst_move_ratio")
    key = ("exchange=binance", "instrument=BTCUSDT", "position={}", "side={}", "window=5m")
    assert worst[tuple(s.format("long-50x") if "position" in s else s.format("long") for s in key)] == pytest.approx(
        fall, rel=1e-12
    )
    short_key = ("exchange=binance", "instrument=BTCUSDT", "position=short-5x", "side=short", "window=5m")
    assert worst[short_key] == pytest.approx(rise, rel=1e-12)
    assert "trailing 1 day of" in text  # the period is in HELP

    # survival: the moved mark against the liquidation price (equity above maintenance margin)
    views = {v.position: v for v in svc.views()}
    ok = series(text, "fr_position_historical_stress_survives")
    liq_long = views["long-50x"].liquidation_price
    liq_short = views["short-5x"].liquidation_price
    assert liq_long is not None and liq_short is not None
    assert ok[tuple(k.replace("short-5x", "long-50x").replace("side=short", "side=long") for k in short_key)] == float(
        mark_now * (1 + fall) > liq_long
    )
    assert ok[short_key] == float(mark_now * (1 + rise) < liq_short)
    assert 0.0 in ok.values() and 1.0 in ok.values()

    # parametric: the 5-minute log returns of the same closes, fitted here
    r = np.array([math.log(closes[m + 5] / closes[m]) for m in range(lo, hi - 4) if m in closes and m + 5 in closes])
    mean, sd = float(r.mean()), float(r.std(ddof=1))
    para = series(text, "fr_position_parametric_move_ratio")
    pkey = ("confidence={}", "distribution={}", "exchange=binance", "instrument=BTCUSDT", "position=long-50x",
            "side=long", "window=5m")  # fmt: skip

    def k(dist: str, q: str, long: bool = True) -> tuple[str, ...]:
        out = tuple(s.format(dist) if s.startswith("distribution") else s.format(q) for s in pkey)
        return out if long else tuple(s.replace("long-50x", "short-5x").replace("side=long", "side=short") for s in out)

    for q in (0.99, 0.999):
        z = NormalDist().inv_cdf(q)
        assert para[k("normal", f"{q:g}")] == pytest.approx(math.expm1(mean - z * sd), rel=1e-9)
        assert para[k("normal", f"{q:g}", long=False)] == pytest.approx(math.expm1(mean + z * sd), rel=1e-9)
        t = fit_student_t(r)
        assert t is not None
        assert para[k("student_t", f"{q:g}")] == pytest.approx(t.move(Side.LONG, q), rel=1e-9)
    # fat tails: the t law's 99.9 % fall is beyond the normal law's
    assert para[k("student_t", "0.999")] < para[k("normal", "0.999")]
    assert len(series(text, "fr_position_parametric_stress_survives")) == 8
    svc.store.close()


async def test_absent_until_backfilled_and_a_failure_is_retried(tmp_path: Path) -> None:
    clock = Clock(T0)
    svc = make_service(tmp_path, clock, [SHORT], stress_period_days=1)
    source = FakeSource(path(clock(), 1441))
    source.fail = 1
    svc.candle_source = lambda ex: source  # type: ignore[method-assign]
    svc.state.apply(MarketUpdate(*BTC, mark_price=50_000.0))
    await svc.update_history(clock())
    svc.tick()
    text = render(svc)
    assert "fr_position_size{" in text  # the position is served...
    assert "fr_position_historical_worst_move_ratio{" not in text  # ...without a figure of one minute
    clock.t += RETRY_SECONDS / 2
    await svc.update_history(clock())
    assert len(source.calls) == 1  # not asked again before the retry time
    clock.t += RETRY_SECONDS
    svc.state.apply(MarketUpdate(*BTC, mark_price=50_000.0))
    await svc.update_history(clock())  # the retry runs in the background now
    await wait_until(lambda: svc.history.ready(BTC, clock()), 10, what="the retried backfill")
    await svc.update_history(clock())
    svc.tick()
    assert source.calls[1][3] == (int(clock() // 60) - 1440) * 60.0  # the retry asks the whole (later) period
    assert "fr_position_historical_worst_move_ratio{" in render(svc)
    await svc.aclose()


async def test_a_slow_backfill_holds_the_first_views_a_bounded_time_only(tmp_path: Path) -> None:
    clock = Clock(T0)
    svc = make_service(tmp_path, clock, [SHORT], stress_period_days=1, stress_backfill_wait_seconds=0.05)
    source = FakeSource(path(clock(), 1441))
    source.gate = asyncio.Event()
    svc.candle_source = lambda ex: source  # type: ignore[method-assign]
    svc.state.apply(MarketUpdate(*BTC, mark_price=50_000.0))
    await svc.update_history(clock())  # returns after the bounded wait: the klines are still paging
    svc.tick()
    assert [v.position for v in svc.views()] == ["short-5x"] and not svc.views()[0].historical_stress
    source.gate.set()
    await wait_until(lambda: svc.history.ready(BTC, clock()), 10, what="the backfill")
    await svc.update_history(clock())
    svc.tick()
    assert [h.window for h in svc.views()[0].historical_stress] == ["5m"]
    await svc.aclose()


async def test_a_failed_day_is_asked_again_from_that_day() -> None:
    h = StressHistory([300], 3 * 86400.0)
    h.hold([BTC])
    closes = path(T0, 3 * 1440 + 1)
    source = FakeSource(closes)
    source.fail_calls = {1}
    await h.backfill(BTC, source, T0)
    assert not h.ready(BTC, T0) and len(source.calls) == 2
    later = T0 + RETRY_SECONDS
    assert h.due_backfills(later - 1) == [] and h.due_backfills(later) == [BTC]
    await h.backfill(BTC, source, later)
    assert source.calls[2][3] == source.calls[1][3]  # from the day that failed, not from the start
    assert [c[3] for c in source.calls[2:]] == [source.calls[1][3] + 86400 * k for k in range(len(source.calls) - 2)]
    await h.refresh(later)
    fig = h.figures(BTC, later)[300]
    m = int(later // 60)
    fall, rise = brute_worst(closes, m - 3 * 1440, m - 1, 5)
    assert fig.worst_move(Side.LONG) == pytest.approx(fall) and fig.worst_move(Side.SHORT) == pytest.approx(rise)


async def test_a_slow_recomputation_does_not_hold_the_cycle(tmp_path: Path) -> None:
    clock = Clock(T0)
    svc = make_service(tmp_path, clock, [SHORT], stress_period_days=1)
    svc.tick_seconds = 0.05
    source = FakeSource(path(clock(), 1441))
    svc.candle_source = lambda ex: source  # type: ignore[method-assign]
    svc.state.apply(MarketUpdate(*BTC, mark_price=50_000.0))
    await svc.update_history(clock())
    svc.tick()
    first = svc.views()[0].historical_stress[0].move_ratio
    # the next minute's computation is stuck (many instruments' fits, a slow machine): the cycle goes on
    release = threading.Event()
    compute = svc.history._compute

    def slow(jobs: Any) -> Any:
        release.wait(10)
        return compute(jobs)

    svc.history._compute = slow  # type: ignore[method-assign]
    svc.history.put_mark(BTC, clock(), 70_000.0)  # a spike in the minute that completes next
    clock.t += 60.0
    svc.state.apply(MarketUpdate(*BTC, mark_price=50_000.0))
    await svc.update_history(clock())  # returns while the computation waits
    svc.tick()
    assert svc.views()[0].historical_stress[0].move_ratio == first  # the last figures, until the new ones
    release.set()

    async def updated() -> bool:
        await svc.update_history(clock())
        svc.tick()
        return svc.views()[0].historical_stress[0].move_ratio != first

    await wait_until(updated, 10, what="the new figures")
    m = int(clock() // 60) - 1
    closes = {**source.closes, m: 70_000.0}
    _, rise = brute_worst(closes, m - 1439, m, 5)
    assert svc.views()[0].historical_stress[0].move_ratio == pytest.approx(rise) and rise > 0.3
    await svc.aclose()


async def test_a_later_instrument_backfills_in_the_background() -> None:
    h = StressHistory([300], 86400.0)
    eth = (Exchange.BYBIT, "ETHUSDT")
    fast, slow = FakeSource(path(T0, 1441)), FakeSource(path(T0, 1441, seed=2))
    slow.gate = asyncio.Event()
    h.hold([BTC])
    await asyncio.gather(*h.start_backfills(lambda ex: fast, T0))
    h.hold([BTC, eth])
    (task,) = h.start_backfills(lambda ex: slow, T0 + 60)
    assert h.start_backfills(lambda ex: slow, T0 + 60) == []  # not asked twice while under way
    await h.refresh(T0 + 60)
    assert 300 in h.figures(BTC, T0 + 60) and h.figures(eth, T0 + 60) == {}
    h.hold([BTC])  # the ETH position closed while its klines were paging: the request is dropped
    await asyncio.sleep(0)
    assert task.cancelled() and h.held() == [BTC]


async def test_history_is_held_only_for_instruments_positions_hold() -> None:
    h = StressHistory([300], 86400.0)
    source = FakeSource(path(T0, 1441))
    h.hold([BTC, (Exchange.BYBIT, "ETHUSDT")])
    for key in h.due_backfills(T0):
        await h.backfill(key, source, T0)
    h.hold([BTC])  # the ETH position closed: its history is freed
    assert h.held() == [BTC]
    assert h.bytes_per_instrument == 1441 * 8
    h.hold([BTC, (Exchange.BYBIT, "ETHUSDT")])  # opened again: a new backfill
    assert h.due_backfills(T0) == [(Exchange.BYBIT, "ETHUSDT")]


async def test_an_exchange_without_mark_candles_publishes_once_live_marks_span_the_period() -> None:
    h = StressHistory([300], 3600.0)
    key = (Exchange.DERIBIT, "BTC-PERPETUAL")
    h.hold([key])
    await h.backfill(key, FakeSource({}, kinds=frozenset({"index"})), T0)
    assert h.due_backfills(T0) == []
    rng = np.random.default_rng(2)
    live: dict[int, float] = {}
    t = T0
    for i in range(61):
        t = T0 + 60.0 * i
        live[int(t // 60)] = float(rng.uniform(99, 101))
        h.put_mark(key, t, live[int(t // 60)])
        await h.refresh(t)
        if i < 60:
            assert h.figures(key, t) == {}  # the history does not span the hour yet
    fig = h.figures(key, t)[300]
    now_min = int(t // 60)
    fall, rise = brute_worst(live, now_min - 60, now_min - 1, 5)
    assert fig.worst_move(Side.LONG) == pytest.approx(fall) and fig.worst_move(Side.SHORT) == pytest.approx(rise)


def test_stress_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="whole minutes"):
        Config.model_validate({"position_settings": {"stress_windows_seconds": [90]}})
    with pytest.raises(ValueError, match=r"\(0.5, 1\)"):
        Config.model_validate({"position_settings": {"stress_confidences": [99]}})
    with pytest.raises(ValueError, match="shorter than"):
        Config.model_validate({"position_settings": {"stress_windows_seconds": [7200], "stress_period_days": 0.05}})
