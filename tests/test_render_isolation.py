"""One bad instrument or base never takes the collector, the scrape or /api/state down with it.

Before: an exception while building one instrument's figures dropped the whole MarketCollector (and
CrossCollector) from /metrics, 42 samples to 4 across all four exchanges, and /api/state answered 500.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from exporter.analytics import funding as fa
from exporter.api_state import build_state_document
from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import Exchange, InstrumentInfo, MarketUpdate
from exporter.state import MarketState

T0 = 1_700_000_000.0
INSTRUMENTS = [
    (Exchange.BINANCE, "BTCUSDT", "BTC"),
    (Exchange.BINANCE, "ETHUSDT", "ETH"),
    (Exchange.BYBIT, "BTCUSDT", "BTC"),
    (Exchange.OKX, "ETH-USDT-SWAP", "ETH"),
    (Exchange.DERIBIT, "BTC-PERPETUAL", "BTC"),
]


def _state() -> MarketState:
    state = MarketState(clock=lambda: T0)
    for k, (ex, inst, base) in enumerate(INSTRUMENTS):
        state.register(InstrumentInfo(ex, inst, base, "USDT", funding_interval_s=28800.0))
        state.apply(
            MarketUpdate(
                ex,
                inst,
                mark_price=100.0 + k,
                index_price=99.0 + k,
                funding_rate=1e-4 * (k + 1),
                next_funding_time=T0 + 600,
                open_interest_usd=1e9,
            ),
            T0 - 1,
        )
    return state


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


def _raise_for(real: Any) -> Any:
    def f(rate: float, interval: float, *a: Any) -> Any:
        if rate == 1e-4 * 2:  # ETHUSDT on binance (k = 1)
            raise ZeroDivisionError("boom")
        return real(rate, interval, *a)

    return f


def test_one_failing_instrument_drops_only_its_series(monkeypatch: pytest.MonkeyPatch) -> None:
    state = _state()
    reg = build_registry(Config(), state)
    before = reg.render().decode()
    marks = _samples(before, "fr_mark_price")
    assert len(marks) == len(INSTRUMENTS)
    monkeypatch.setattr(fa, "annualize", _raise_for(fa.annualize))
    text = reg.render().decode()
    after = _samples(text, "fr_mark_price")
    gone = {k for k in marks if 'instrument="ETHUSDT"' in k}
    assert len(gone) == 1
    assert after == {k: v for k, v in marks.items() if k not in gone}  # the others, unchanged
    for name in ("fr_funding_rate", "fr_open_interest_usd", "fr_oi_weighted_funding_rate", "fr_up"):
        assert _samples(text, name), name
    assert _samples(text, "fr_render_errors_total") == {'fr_render_errors_total{collector="market"}': 1.0}


def test_api_state_leaves_out_a_failing_row_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    import exporter.api_state as api

    state = _state()
    reg = build_registry(Config(), state)
    real = api.oi_change_1h

    def bad(st: Any, oi: Any, now: float) -> Any:
        if st.info.instrument == "BTC-PERPETUAL":
            raise ValueError("boom")
        return real(st, oi, now)

    monkeypatch.setattr(api, "oi_change_1h", bad)
    doc = build_state_document(Config(), state, reg.views)
    rows = {(r["exchange"], r["instrument"]) for r in doc["instruments"]}
    assert rows == {(ex.value, inst) for ex, inst, _ in INSTRUMENTS} - {("deribit", "BTC-PERPETUAL")}
    assert reg.views.errors.snapshot() == {"api_state": 1}


def test_non_finite_derived_value_leaves_only_that_series_out() -> None:
    """An interval so small that the 8 h rate overflows: that series is absent, never +Inf."""
    state = _state()
    st = state.instruments[(Exchange.BYBIT, "BTCUSDT")]
    st.funding_interval_s = 5e-324  # around the parsers' checks, as a property test might
    reg = build_registry(Config(), state)
    text = reg.render().decode()
    assert "Inf" not in text.replace("# ", "") and "NaN" not in text
    ann = _samples(text, "fr_funding_rate_annualized_ratio")
    assert len(ann) == len(INSTRUMENTS) - 1 and all(math.isfinite(v) for v in ann.values())
    assert len(_samples(text, "fr_mark_price")) == len(INSTRUMENTS)
    doc = build_state_document(Config(), state, reg.views)
    row = next(r for r in doc["instruments"] if r["exchange"] == "bybit")
    assert row["funding_rate_annualized"] is None and row["mark_price"] == 102.0
