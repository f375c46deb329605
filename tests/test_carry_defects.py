"""Issue 14's defects, each with a test that failed before its fix.

1. A Binance funding-interval change is seen on the stream (the next-funding-time step), not only
   at the hourly fundingInfo poll; settlements keep the interval they were settled under.
3. A z-score window longer than the default settlement buffer is held whole (the buffer is sized
   from the window) or refused by the configuration with a clear error.
(2 and 4: tests/test_positions_accrual_paging.py and tests/test_risk_formulas.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.config import AnalyticsConfig
from exporter.model import Exchange, FundingSettlement, InstrumentInfo, MarketUpdate
from exporter.state import MarketState

H = 3600.0
T0 = 1_790_000_000.0 // (8 * H) * (8 * H)  # a settlement time on the 8 h grid


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def binance_state(interval_s: float, span_s: float = 31 * 86400.0) -> tuple[MarketState, Clock]:
    clock = Clock(T0 - 60.0)
    st = MarketState(clock=clock, settlement_span_seconds=span_s)
    st.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=interval_s))
    return st, clock


def push(st: MarketState, clock: Clock, at: float, rate: float, nft: float) -> None:
    clock.t = at
    st.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", event_time=at, funding_rate=rate, next_funding_time=nft))


def test_8h_to_1h_switch_is_seen_on_the_stream_and_settlements_keep_their_interval() -> None:
    st, clock = binance_state(8 * H)
    seen: list[tuple[Exchange, str]] = []
    st.on_interval_change = lambda ex, inst: seen.append((ex, inst))
    s = st.instruments[(Exchange.BINANCE, "BTCUSDT")]
    push(st, clock, T0 - 60.0, 0.003, T0)
    # the settlement at T0 closes an 8 h period; the next funding time is now one hour later
    push(st, clock, T0 + 1.0, 0.003, T0 + H)
    assert s.interval_s == H
    assert MarketState.funding_rate_8h(s) == pytest.approx(0.003 * 8)  # not 8x too small
    assert seen == [(Exchange.BINANCE, "BTCUSDT")] and st.interval_changes == 1
    push(st, clock, T0 + H + 1.0, 0.003, T0 + 2 * H)
    push(st, clock, T0 + 2 * H + 1.0, 0.003, T0 + 3 * H)
    data = s.settlements.raw()
    assert list(data[0::3]) == [T0, T0 + H, T0 + 2 * H]
    assert list(data[2::3]) == [8 * H, H, H]  # each as settled
    # in the current (1 h) unit the 8 h settlement is an eighth, the 1 h ones are whole
    assert [r for _, r in s.settlement_window_in(H)] == pytest.approx([0.003 / 8, 0.003, 0.003])


def test_1h_to_4h_switch_is_seen_on_the_stream() -> None:
    st, clock = binance_state(H)
    s = st.instruments[(Exchange.BINANCE, "BTCUSDT")]
    push(st, clock, T0 - 60.0, 0.001, T0)
    push(st, clock, T0 + 2.0, 0.001, T0 + 4 * H)
    assert s.interval_s == 4 * H
    assert MarketState.funding_rate_8h(s) == pytest.approx(0.001 * 2)  # not 4x overstated


def test_a_missed_settlement_is_no_interval_change() -> None:
    # 1 h funding, the stream was away for three hours: the step of 4 h is three missed settlements
    st, clock = binance_state(H)
    s = st.instruments[(Exchange.BINANCE, "BTCUSDT")]
    push(st, clock, T0 - 60.0, 0.001, T0)
    push(st, clock, T0 + 3 * H + 5.0, 0.001, T0 + 4 * H)
    assert s.interval_s == H and st.interval_changes == 0


def test_a_steady_interval_changes_nothing() -> None:
    st, clock = binance_state(8 * H)
    s = st.instruments[(Exchange.BINANCE, "BTCUSDT")]
    for k in range(4):
        push(st, clock, T0 + k * 8 * H - 30.0, 0.0001, T0 + k * 8 * H)
    assert s.interval_s == 8 * H and st.interval_changes == 0
    assert len(s.settlement_window()) == 3


def test_a_long_zscore_window_is_held_whole() -> None:
    # 200 days of 1 h settlements (4 800) used to be cut to the last 2 000
    days = 200
    st, clock = binance_state(H, span_s=days * 86400.0 + 86400.0)
    n = days * 24
    clock.t = T0 + n * H
    st.apply_many(FundingSettlement(Exchange.BINANCE, "BTCUSDT", T0 + k * H, 0.0001, H) for k in range(1, n + 1))
    window = st.instruments[(Exchange.BINANCE, "BTCUSDT")].settlement_window()
    assert len(window) == n
    assert window[0][0] == T0 + H


def test_a_window_beyond_a_year_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValidationError) as err:
        AnalyticsConfig(zscore_window_seconds=700 * 86400.0)
    msg = str(err.value)
    assert "zscore_window_seconds" in msg and "700 days" in msg and "366 days" in msg
    assert AnalyticsConfig(zscore_window_seconds=366 * 86400.0).zscore_window_seconds == 366 * 86400.0


# ---- 2: the accrual pages through the whole holding period, each settlement at its own mark


class FakeHistoryAccount:
    """The exchange adapter's funding history: 8 h settlements, each with its own mark price."""

    exchange = Exchange.BINANCE

    def __init__(self, first: float, n: int) -> None:
        self.rows = [
            FundingSettlement(Exchange.BINANCE, "BTCUSDT", first + k * 8 * H, 0.0001 * (1 + k % 3), 8 * H, 50_000.0 + k)
            for k in range(n)
        ]
        self.asked: list[tuple[float, float]] = []

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        self.asked.append((start, end))
        return [r for r in self.rows if start <= r.funding_time <= end]


async def test_accrual_covers_the_whole_holding_period_at_each_settlements_mark(tmp_path: Path) -> None:
    from exporter.model import Side
    from exporter.positions.facts import RiskFacts
    from exporter.positions.ledger import FundingLedger
    from exporter.positions.store import AccrualStore

    n = 366  # 122 days of 8 h settlements (the issue saw 180 of them accrued)
    opened = T0 - 60.0
    now = T0 + n * 8 * H
    acct = FakeHistoryAccount(T0, n)
    ledger = FundingLedger(AccrualStore(tmp_path / "accruals.sqlite"))
    facts = RiskFacts(accounts=None, tiers=None, ledger=ledger)  # type: ignore[arg-type]
    await facts._history(acct, "BTCUSDT", opened, now)  # type: ignore[arg-type]
    assert acct.asked[0][0] <= opened
    size = 2.0
    ledger.accrue_settled(
        "short-btc",
        "main",
        Exchange.BINANCE,
        "BTCUSDT",
        Side.SHORT,
        size,
        opened,
        now,
        ledger.settlements(Exchange.BINANCE, "BTCUSDT", []),
        price_now=99_999.0,
    )
    net, received, paid, accruals = ledger.totals("short-btc")
    assert accruals == n
    # a short receives a positive rate: size x the settlement's own mark x rate, summed by hand
    want = sum(size * (50_000.0 + k) * 0.0001 * (1 + k % 3) for k in range(n))
    assert net == pytest.approx(want, rel=1e-12) and received == pytest.approx(want, rel=1e-12) and paid == 0.0
