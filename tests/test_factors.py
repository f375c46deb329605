"""Factor signals: realised volatility and open-interest change against independent computations
(the statistics module, hand-worked numbers), the store's minute closes, the backfill merge, and the
series and /api/state fields they become."""

from __future__ import annotations

import itertools
import math
import statistics
from types import SimpleNamespace
from typing import Any

import pytest

from exporter.analytics.factors import oi_change, realized_volatility
from exporter.api_state import instrument_row
from exporter.app import Exporter
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.metrics.market import MarketCollector
from exporter.model import Candle, Exchange, HistoryBackfill, InstrumentInfo, MarketUpdate
from exporter.rest.client import RestError
from exporter.state import MarketState
from exporter.views import MarketViews

T0 = 1_767_225_600.0  # a whole hour


def _closes(n: int, seed: int = 1) -> list[float]:
    """A deterministic wiggly price path (no randomness needed for an independent check)."""
    return [100.0 * math.exp(0.001 * math.sin(k * 1.7 + seed) + 0.0004 * k) for k in range(n)]


def test_realized_volatility_equals_the_stdev_of_log_returns_scaled() -> None:
    closes = _closes(61)
    times = [T0 + 60.0 * k for k in range(61)]
    now = T0 + 61 * 60.0 + 12.0  # in the minute after the last close: the 61 closes are the window
    rets = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    expected = statistics.stdev(rets) * math.sqrt(60)
    assert realized_volatility(times, closes, now, 3600.0) == pytest.approx(expected, rel=1e-12)


def test_realized_volatility_hand_worked_case() -> None:
    # three closes, two returns: ln(2) and ln(1/2); sample stdev = sqrt(2) ln 2; x sqrt(2) -> 2 ln 2
    times = [T0, T0 + 60.0, T0 + 120.0]
    assert realized_volatility(times, [1.0, 2.0, 1.0], T0 + 180.0, 120.0, min_coverage=1.0) == pytest.approx(
        2 * math.log(2)
    )


def test_realized_volatility_gaps_coverage_and_the_minute_in_progress() -> None:
    closes = _closes(62)
    times = [T0 + 60.0 * k for k in range(62)]
    now = T0 + 61 * 60.0 + 5.0  # minute 61 is in progress: it is not in the window
    full = realized_volatility(times, closes, now, 3600.0)
    assert full == realized_volatility(times[:61], closes[:61], now, 3600.0)
    # a missing minute repeats the close before it: a zero return, then the two-minute move
    gap_t, gap_c = times[:30] + times[31:61], closes[:30] + closes[31:61]
    filled = [*closes[:30], closes[29], *closes[31:61]]
    rets = [math.log(b / a) for a, b in itertools.pairwise(filled)]
    assert realized_volatility(gap_t, gap_c, now, 3600.0) == pytest.approx(statistics.stdev(rets) * math.sqrt(60))
    # fewer than 80 % of the minutes with their own close: no value
    sparse = list(range(0, 61, 2))
    assert realized_volatility([times[k] for k in sparse], [closes[k] for k in sparse], now, 3600.0) is None
    # nothing at or shortly before the window's start: no value
    assert realized_volatility(times[10:61], closes[10:61], now, 3600.0) is None


def test_oi_change_takes_the_sample_at_or_before_the_start() -> None:
    times = [T0 + 300.0 * k for k in range(13)]  # 5-minute points over an hour
    values = [1000.0 + 10.0 * k for k in range(13)]
    now = T0 + 3600.0 + 170.0
    # one hour before now is T0 + 170: the latest sample at or before it is T0 (1000)
    assert oi_change(times, values, 1210.0, now, 3600.0) == pytest.approx(0.21)
    assert oi_change(times, values, 1210.0, T0 + 3600.0 + 300.0, 3600.0) == pytest.approx(1210.0 / 1010.0 - 1)
    assert oi_change(times, values, 1210.0, T0 + 3000.0, 3600.0) is None  # nothing that old
    assert oi_change(times[5:], values[5:], 1.0, now + 1200.0, 3600.0) is None  # none within 10 min of it


# ---- the store, the view, the series --------------------------------------------------------------

BTC = InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0)


def _state(now: list[float]) -> MarketState:
    s = MarketState(clock=lambda: now[0])
    s.register(BTC)
    return s


def test_the_store_closes_a_minute_with_its_last_mark() -> None:
    now = [T0 + 10.0]
    s = _state(now)
    st = s.instruments[(Exchange.BINANCE, "BTCUSDT")]
    for t, px in ((T0 + 1, 100.0), (T0 + 30, 101.0), (T0 + 59.9, 102.0), (T0 + 61, 103.0), (T0 + 119.5, 103.5)):
        s.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", event_time=t, mark_price=px))
    s.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", event_time=T0 + 245, mark_price=104.0))  # minutes 2, 3 silent
    assert list(st.mark_minutes) == [(T0, 102.0), (T0 + 60, 103.5)]
    assert (st.mark_minute, st.mark_price) == (T0 + 240, 104.0)  # the minute in progress and its close so far
    # without an exchange time, the receive time places the mark
    now[0] = T0 + 305.0
    s.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", mark_price=105.0))
    assert list(st.mark_minutes)[-1] == (T0 + 240, 104.0) and st.mark_minute == T0 + 300


def test_backfill_merges_behind_live_values_and_the_views_publish_both_windows() -> None:
    now = [T0 + 4 * 3600.0 + 30.0]
    s = _state(now)
    st = s.instruments[(Exchange.BINANCE, "BTCUSDT")]
    m_now = T0 + 4 * 3600.0
    # live: a mark in the minute in progress and an open interest now
    s.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", event_time=m_now + 20, mark_price=500.0, index_price=500.0))
    s.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", event_time=m_now + 25, funding_rate=0.0001))
    s.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", open_interest_usd=2_400.0))
    closes = _closes(242, seed=3)
    minutes = [m_now - 60.0 * (242 - k) for k in range(242)]  # the 242 minutes before the one in progress
    oi_times = [T0 - 600.0 + 300.0 * k for k in range(51)]
    oi_vals = [2000.0 + 5.0 * k for k in range(51)]
    s.apply(
        HistoryBackfill(
            Exchange.BINANCE,
            "BTCUSDT",
            (*tuple(zip(minutes, closes, strict=True)), (m_now, 1.0)),  # the minute in progress: the live one wins
            tuple(zip(oi_times, oi_vals, strict=True)),
        )
    )
    assert len(st.mark_minutes) == 242 and st.mark_price == 500.0
    cfg = Config.model_validate({"exchanges": {"binance": {"instruments": ["BTCUSDT"]}}})
    views = MarketViews(cfg, s)
    (v,) = views.views()
    # independent expectations: statistics.stdev over the last 61 / 241 closes
    r = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    assert v.volatility_1h == pytest.approx(statistics.stdev(r[-60:]) * math.sqrt(60), rel=1e-12)
    assert v.volatility_4h == pytest.approx(statistics.stdev(r[-240:]) * math.sqrt(240), rel=1e-12)
    # OI 1 h ago (now - 3600 = T0 + 3 h + 30 s): the 5-minute point at T0 + 3 h = index 38
    assert v.oi_change_1h == pytest.approx(2400.0 / oi_vals[38] - 1)
    assert v.oi_change_4h == pytest.approx(2400.0 / oi_vals[2] - 1)  # T0 + 30 s -> the point at T0
    fams = {mf.name: mf for mf in (f.to_metric_family() for f in MarketCollector(views).families([v]))}
    vol = {x.labels["window"]: x.value for x in fams["fr_price_volatility_ratio"].samples}
    oi = {x.labels["window"]: x.value for x in fams["fr_open_interest_change_ratio"].samples}
    assert vol == {"1h": v.volatility_1h, "4h": v.volatility_4h}
    assert oi == {"1h": v.oi_change_1h, "4h": v.oi_change_4h}
    row = instrument_row(v, now[0])
    assert row["price_volatility_ratio"] == {"1h": v.volatility_1h, "4h": v.volatility_4h}
    assert row["open_interest_change_ratio"] == {"1h": v.oi_change_1h, "4h": v.oi_change_4h}
    assert row["open_interest_change_1h_ratio"] == v.oi_change_1h  # /api/state and /metrics agree


def test_stale_price_or_open_interest_hides_the_signals() -> None:
    now = [T0 + 3600.0 + 30.0]
    s = _state(now)
    closes = _closes(70)
    s.apply(
        HistoryBackfill(
            Exchange.BINANCE,
            "BTCUSDT",
            tuple((T0 + 60.0 * k - 600.0, c) for k, c in enumerate(closes)),
            ((T0, 1000.0),),
        )
    )
    cfg = Config.model_validate({"exchanges": {"binance": {"instruments": ["BTCUSDT"]}}})
    (v,) = MarketViews(cfg, s).views()
    # no live price and no live open interest yet: nothing is shown, whatever the history says
    assert (v.volatility_1h, v.volatility_4h, v.oi_change_1h, v.oi_change_4h) == (None, None, None, None)


# ---- the start-up backfill: a failing history endpoint loses only its own part -------------------


class _Rest:
    """An ExchangeRest stand-in: mark candles answer, open-interest history fails."""

    candle_kinds = frozenset({"mark"})
    has_open_interest_history = True
    polls_open_interest = False

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, float, float]] = []

    async def price_candles(self, kind: str, instrument: str, interval: int, start: float, end: float) -> list[Any]:
        self.asked.append((kind, interval, start, end))
        return [Candle(start + 60.0 * k, 1.0, 1.0, 1.0, 100.0 + k) for k in range(int((end - start) // 60))]

    async def open_interest_history(self, instrument: str, interval: int, start: float, end: float) -> list[Any]:
        self.asked.append(("oi", interval, start, end))
        raise RestError("http_5xx", "okx open_interest_history: HTTP 503")


async def test_backfill_keeps_the_candles_when_the_open_interest_history_fails() -> None:
    cfg = Config.model_validate({"exchanges": {"okx": {"instruments": ["BTC-USDT-SWAP"]}}})
    clock = VirtualClock(T0 + 4 * 3600.0 + 30.0)
    exporter = Exporter(cfg, clock=clock, serve=False)
    info = InstrumentInfo(Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", funding_interval_s=28800.0)
    exporter.state.register(info)
    rest = _Rest()
    rt = SimpleNamespace(exchange=Exchange.OKX, rest=rest, instruments=[info], candles=None)
    await exporter._backfill_history(rt)  # type: ignore[arg-type]
    st = exporter.state.instruments[(Exchange.OKX, "BTC-USDT-SWAP")]
    # 1-minute marks from 4 h 2 min before the minute in progress; 5-minute OI from 4 h 15 min back
    assert sorted(rest.asked) == [
        ("mark", 60, T0 - 120.0, clock.time()),
        ("oi", 300, clock.time() - 4 * 3600.0 - 300.0 - 600.0, clock.time()),
    ]
    assert len(st.mark_minutes) == 242 and len(st.oi_samples) == 0  # what arrived is kept


def test_the_views_open_interest_change_follows_the_window_scrape_after_scrape() -> None:
    """The views keep the samples around each window's start between scrapes (no copy of the window
    per scrape): scrape after scrape, as samples arrive, leave, pause and a backfill merges history
    in behind them, the published changes equal oi_change over the whole window."""
    now = [T0]
    s = _state(now)
    st = s.instruments[(Exchange.BINANCE, "BTCUSDT")]
    cfg = Config.model_validate({"exchanges": {"binance": {"instruments": ["BTCUSDT"]}}})
    views = MarketViews(cfg, s)
    checked = {"1h": 0, "4h": 0}
    for step in range(6 * 240):  # six hours of 15 s scrapes
        now[0] = T0 + 15.0 * step
        if not (150 <= step < 230 or 300 <= step < 600):  # silences of 20 and 75 minutes: no sample
            s.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", open_interest_usd=1_000.0 + 3.0 * step + step % 7))
        if step == 620:  # history merged in behind the live samples: before them, and the 75 minutes' gap
            gap = tuple((T0 + 4500.0 + 300.0 * k, 1_700.0 + k) for k in range(15))
            history = tuple((T0 - 3600.0 + 300.0 * k, 900.0 + k) for k in range(12)) + gap
            s.apply(HistoryBackfill(Exchange.BINANCE, "BTCUSDT", (), history))
        (v,) = views.views()
        raw = st.oi_samples.raw()
        oi = v.open_interest_usd
        if oi is None:
            continue
        for window, got in (("1h", v.oi_change_1h), ("4h", v.oi_change_4h)):
            want = oi_change(raw[0::2], raw[1::2], oi, now[0], 3600.0 if window == "1h" else 4 * 3600.0)
            assert got == want, (step, window)
            checked[window] += want is not None
    assert checked["1h"] > 500 and checked["4h"] > 100  # both windows had figures, not only None
