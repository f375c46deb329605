"""PositionService without the network: configuration errors, accrual exactly once (also across a
restart), Deribit continuous accrual, hedged carry, and the published series."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support.clock import ManualClock as Clock

from exporter.config import Config, PositionConfig
from exporter.metrics.positions import PositionCollector
from exporter.model import Exchange, FundingSettlement, InstrumentInfo, MarketUpdate
from exporter.positions.service import PositionService
from exporter.state import MarketState

T0 = 1_767_225_600.0  # 2026-01-01


def make_config(tmp_path: Path, positions: list[dict[str, Any]], **settings: Any) -> Config:
    return Config.model_validate(
        {
            "positions": positions,
            "position_settings": {"db_path": str(tmp_path / "acc.sqlite"), **settings},
        }
    )


def make_state(clock: Clock) -> MarketState:
    st = MarketState(clock=clock)
    for ex, inst, base, quote, interval in [
        (Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", 8 * 3600.0),
        (Exchange.BYBIT, "BTCUSDT", "BTC", "USDT", 3600.0),
        (Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", 8 * 3600.0),
        (Exchange.DERIBIT, "BTC-PERPETUAL", "BTC", "USD", 8 * 3600.0),
    ]:
        st.register(
            InstrumentInfo(
                ex,
                inst,
                base,
                quote,
                contract_size=0.01 if ex is Exchange.OKX else 1.0,
                inverse=ex is Exchange.DERIBIT,
                funding_interval_s=interval,
            )
        )
    return st


def mark(state: MarketState, ex: Exchange, inst: str, price: float, rate: float | None = None) -> None:
    if ex is Exchange.DERIBIT:
        state.apply(MarketUpdate(ex, inst, mark_price=price, funding_rate_8h=rate))
    else:
        state.apply(MarketUpdate(ex, inst, mark_price=price, funding_rate=rate))


SHORT_BTC = {
    "name": "carry-btc",
    "exchange": "binance",
    "instrument": "BTCUSDT",
    "side": "short",
    "size": 1.0,
    "entry_price": 50_000.0,
    "leverage": 5,
    "fees_paid_usd": 25.0,
}


def render(svc: PositionService) -> str:
    reg = CollectorRegistry()
    reg.register(PositionCollector(svc))
    return generate_latest(reg).decode()


def test_config_errors_skip_only_the_bad_position(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    cfg = make_config(
        tmp_path,
        [
            SHORT_BTC,
            {**SHORT_BTC, "name": "bad-inst", "instrument": "NOPEUSDT"},
            {
                **SHORT_BTC,
                "name": "too-much",
                "leverage": 200,
            },  # 50 000 USD notional: the second Binance bracket allows 100x
        ],
    )
    # pydantic rejects a negative size at load (tests/test_config.py); a position built without
    # validation (e.g. by a caller) is still refused here with the field's name
    cfg.positions.append(
        PositionConfig.model_construct(
            **{
                **SHORT_BTC,
                "name": "neg",
                "size": -1.0,
                "margin_mode": "isolated",
                "hedge": None,
                "opened_at": None,
                "isolated_margin_usd": None,
                "wallet_balance_usd": None,
                "borrow_apr": 0.0,
                "gas_usd": 0.0,
                "locked_capital_usd": None,
            }
        )
    )
    with caplog.at_level(logging.ERROR, logger="exporter.positions"):
        svc = PositionService(cfg, make_state(clock), clock=clock)
    assert [p.name for p in svc.positions] == ["carry-btc"]
    fields = {e.name: e.field for e in svc.config_errors}
    assert fields == {"bad-inst": "instrument", "too-much": "leverage", "neg": "size"}
    text = caplog.text
    assert "positions[1] 'bad-inst': instrument:" in text
    assert "positions[2] 'too-much': leverage: 200x is above the maximum leverage 100x" in text
    assert "positions[3] 'neg': size:" in text
    svc.tick()
    out = render(svc)
    assert 'fr_position_config_errors_total{field="leverage"} 1.0' in out
    assert 'fr_position_config_errors_total{field="instrument"} 1.0' in out
    assert 'position="carry-btc"' in out and 'position="bad-inst"' not in out
    svc.store.close()


def test_settlement_accrues_exactly_once_across_restart(tmp_path: Path) -> None:
    clock = Clock(T0)
    state = make_state(clock)
    cfg = make_config(tmp_path, [SHORT_BTC])
    mark(state, Exchange.BINANCE, "BTCUSDT", 50_000.0, 0.0001)
    st = state.instruments[(Exchange.BINANCE, "BTCUSDT")]
    state.add_settlements(st, [(T0 - 8 * 3600.0, 0.0005)])  # before the position was first seen: not ours

    svc = PositionService(cfg, state, clock=clock)
    svc.tick()
    assert svc.views()[0].settlements == 0

    clock.t += 8 * 3600.0
    mark(state, Exchange.BINANCE, "BTCUSDT", 50_000.0, 0.0001)
    state.add_settlements(st, [(clock.t, 0.0001)])
    # the same settlement from REST history, its time a few ms off: still one settlement
    svc.ledger.add_history(
        [FundingSettlement(Exchange.BINANCE, "BTCUSDT", clock.t + 0.003, 0.0001, mark_price=50_000.0)]
    )
    for _ in range(3):
        svc.tick()
    v = svc.views()[0]
    assert v.settlements == 1
    assert v.funding_pnl_usd == pytest.approx(5.0)  # short receives 0.01 % of 50 000
    svc.store.close()

    # restart: a new service on the same database sees the accrual and does not repeat it
    svc2 = PositionService(cfg, state, clock=clock)
    svc2.tick()
    assert svc2.views()[0].settlements == 1
    # a settlement while the exporter was down is accrued once on the next start
    clock.t += 8 * 3600.0
    mark(state, Exchange.BINANCE, "BTCUSDT", 40_000.0, -0.0002)
    state.add_settlements(st, [(clock.t, -0.0002)])
    svc2.store.close()
    svc3 = PositionService(cfg, state, clock=clock)
    svc3.tick()
    svc3.tick()
    v3 = svc3.views()[0]
    assert v3.settlements == 2
    assert v3.funding_pnl_usd == pytest.approx(5.0 - 8.0)
    assert v3.funding_received_usd == pytest.approx(5.0) and v3.funding_paid_usd == pytest.approx(8.0)
    out = render(svc3)
    for name in ("fr_funding_pnl_usd", "fr_funding_pnl_usd_total"):  # the gauge and its deprecated alias
        assert f'{name}{{exchange="binance",instrument="BTCUSDT",position="carry-btc",side="short"}} -3.0' in out
    svc3.store.close()


def test_deribit_accrues_continuously_once(tmp_path: Path) -> None:
    clock = Clock(T0)
    state = make_state(clock)
    pos = {**SHORT_BTC, "name": "drb", "exchange": "deribit", "instrument": "BTC-PERPETUAL"}
    cfg = make_config(tmp_path, [pos])
    svc = PositionService(cfg, state, clock=clock)
    mark(state, Exchange.DERIBIT, "BTC-PERPETUAL", 50_000.0, 0.0002)
    svc.tick()
    for _ in range(4):  # two hours in 30-minute steps, the rate refreshed each time
        clock.t += 1800.0
        mark(state, Exchange.DERIBIT, "BTC-PERPETUAL", 50_000.0, 0.0002)
        svc.tick()
    v = svc.views()[0]
    assert v.funding_pnl_usd == pytest.approx(0.0002 * 50_000 * 2 / 8)
    svc.store.close()
    svc2 = PositionService(cfg, state, clock=clock)
    svc2.tick()  # same instant: nothing more
    assert svc2.views()[0].funding_pnl_usd == pytest.approx(0.0002 * 50_000 * 2 / 8)
    svc2.store.close()


def test_hedged_carry_counts_both_legs_and_publishes_risk(tmp_path: Path) -> None:
    clock = Clock(T0)
    state = make_state(clock)
    pos = {
        **SHORT_BTC,
        "opened_at": "2025-12-31T00:00:00Z",
        "borrow_apr": 0.05,
        "gas_usd": 5.0,
        "hedge": {
            "kind": "perp",
            "exchange": "bybit",
            "instrument": "BTCUSDT",
            "size": 1.0,
            "entry_price": 50_000.0,
            "fees_paid_usd": 25.0,
        },
    }
    cfg = make_config(tmp_path, [pos])
    svc = PositionService(cfg, state, clock=clock)
    mark(state, Exchange.BINANCE, "BTCUSDT", 50_000.0, 0.0003)
    mark(state, Exchange.BYBIT, "BTCUSDT", 50_000.0, 0.00001)
    state.add_settlements(state.instruments[(Exchange.BINANCE, "BTCUSDT")], [(T0 - 3600.0, 0.0003)])
    state.add_settlements(state.instruments[(Exchange.BYBIT, "BTCUSDT")], [(T0 - 3600.0, 0.00001)])
    samples = [(T0 - 3600.0 + 10 * i, 50_000.0 * (1 + 0.001 * ((-1) ** i))) for i in range(200)]
    svc.add_mark_samples(Exchange.BINANCE, "BTCUSDT", samples)
    svc.tick()
    v = svc.views()[0]
    # short binance receives 15, long bybit hedge pays 0.5
    assert v.funding_pnl_usd == pytest.approx(15.0 - 0.5)
    assert v.settlements == 2
    capital = 10_000.0 + 50_000.0 / 5  # perp margin + hedge margin at the main leverage
    assert v.locked_capital_usd == pytest.approx(capital)
    # projected: binance 8 h at 0.03 % received, bybit 1 h at 0.001 % paid
    year = 365 * 24.0
    funding = 15.0 * year / 8 - 0.5 * year
    one_off = 55.0 * 365 / 7
    assert v.apy_projected_pct == pytest.approx((funding - one_off - capital * 0.05) / capital * 100)
    assert v.apy_realized_pct is not None
    assert v.liq_computed is not None and v.liq_computed > 50_000
    assert v.liq_gap_pct == pytest.approx((v.liq_computed - 50_000) / 50_000 * 100)
    assert set(v.hit_probability) == {"1h", "8h"}
    assert v.hit_probability["8h"] >= v.hit_probability["1h"]
    out = render(svc)
    for needle in (
        'fr_liquidation_price{exchange="binance",instrument="BTCUSDT",position="carry-btc",side="short",source="computed"}',
        'fr_net_apy_pct{basis="projected"',
        'fr_position_stress_survives{exchange="binance",instrument="BTCUSDT",position="carry-btc",'
        'shock_pct="15",side="short"} 1.0',
        'fr_liq_hit_probability{exchange="binance",horizon="8h"',
        "# TYPE fr_funding_pnl_usd gauge",
        "# TYPE fr_funding_pnl_usd_total gauge",
    ):
        assert needle in out
    assert 'source="exchange"' not in out  # a configured position has no exchange figure
    assert "fr_adl_rank{" not in out  # nor an ADL rank
    row = svc.api_rows()[0]
    assert row["position"] == "carry-btc" and row["liquidation_price_source"] == "computed"
    assert row["liq_gap_pct"] == pytest.approx(v.liq_gap_pct)
    svc.store.close()


def test_stale_mark_hides_mark_based_series(tmp_path: Path) -> None:
    clock = Clock(T0)
    state = make_state(clock)
    svc = PositionService(make_config(tmp_path, [SHORT_BTC]), state, clock=clock)
    mark(state, Exchange.BINANCE, "BTCUSDT", 50_000.0, 0.0001)
    svc.tick()
    assert svc.views()[0].liq_gap_pct is not None
    clock.t += 600.0  # no price for 10 minutes
    svc.tick()
    v = svc.views()[0]
    assert v.mark_price is None and v.liq_gap_pct is None and not v.stress
    assert v.liq_computed is not None  # the liquidation price itself does not depend on the mark
    svc.store.close()


def test_a_position_invalid_in_the_file_is_counted_and_the_rest_runs(tmp_path: Path) -> None:
    from exporter.config import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"position_settings: {{db_path: {tmp_path / 'acc.sqlite'}}}\n"
        "positions:\n"
        "  - {name: neg, exchange: binance, instrument: BTCUSDT, side: long, size: -1, entry_price: 100, leverage: 2}\n"
        "  - {name: ok, exchange: binance, instrument: BTCUSDT, side: long, size: 1, entry_price: 100, leverage: 2}\n"
    )
    clock = Clock(T0)
    svc = PositionService(load_config(cfg_file, environ={}), make_state(clock), clock=clock)
    assert [p.name for p in svc.positions] == ["ok"]
    assert [(e.name, e.field) for e in svc.config_errors] == [("neg", "size")]
    assert 'fr_position_config_errors_total{field="size"} 1.0' in render(svc)


def test_account_zero_liquidation_price_means_none_for_a_short() -> None:
    # "0"/"" from Bybit/OKX/Deribit: a long gets 0 (no price liquidates it), a short no value
    from exporter.feeds import bybit_account, okx_account

    rows = [
        {
            "symbol": "BTCUSDT",
            "side": side,
            "size": "1",
            "avgPrice": "50000",
            "tradeMode": 1,
            "positionBalance": "60000",
            "leverage": "1",
            "liqPrice": liq,
            "markPrice": "50000",
        }
        for side, liq in (("Sell", "0"), ("Buy", "0"))
    ]
    body = json.dumps({"retCode": 0, "result": {"list": rows, "nextPageCursor": ""}}).encode()
    page, cursor = bybit_account.parse_positions(body)
    bybit = {p.side.value: p for p in page}
    okx_rows = [
        {
            "instId": "BTC-USDT-SWAP",
            "pos": "-100",
            "posSide": "net",
            "avgPx": "50000",
            "mgnMode": "isolated",
            "margin": "60000",
            "lever": "1",
            "liqPx": "0",
            "markPx": "50000",
            "adl": "1",
        }
    ]
    okx = okx_account.parse_positions(json.dumps({"code": "0", "data": okx_rows}).encode(), lambda inst: 0.01)
    assert cursor == ""
    assert bybit["short"].liquidation_price is None
    assert bybit["long"].liquidation_price == 0.0
    assert okx[0].side.value == "short" and okx[0].liquidation_price is None
    assert okx[0].size == pytest.approx(100 * 0.01) and okx[0].contract_size == 0.01


async def test_okx_non_json_error_page_uses_a_documented_reason() -> None:
    import httpx

    from exporter.feeds import feed_for
    from exporter.feeds.base import FeedContext
    from exporter.rest.accounts import AccountError, OkxAccount
    from exporter.rest.client import RestClient
    from exporter.rest.endpoints import rest_api_for
    from exporter.rest.signing import ApiKey

    state = MarketState()
    transport = httpx.MockTransport(lambda request: httpx.Response(403, text="<html>forbidden</html>"))
    client = RestClient(Exchange.OKX, "http://x", state, transport=transport)
    api = rest_api_for(Exchange.OKX, client, feed_for(Exchange.OKX), FeedContext(Exchange.OKX, {}))
    try:
        with pytest.raises(AccountError) as err:
            await OkxAccount(api, ApiKey("k", "s", "p")).positions(lambda inst: 1.0)
    finally:
        await client.aclose()
    documented = {"auth", "rate_limited", "http_5xx", "timeout", "connect", "exchange_error", "invalid_response"}
    assert err.value.reason in documented
    # the read went through the shared client: counted in fr_rest_* as a failed request
    health = state.rest[(Exchange.OKX, "account_positions")]
    assert health.requests == 1 and health.failures == {"http_4xx": 1}


def test_bybit_opened_at_is_not_the_symbols_first_ever_position() -> None:
    # Bybit v5 position list: createdTime is "the first time a position was created on this symbol";
    # the current position's opening is openTime (0/absent when unknown -> first seen).
    from exporter.feeds import bybit_account

    row = {
        "symbol": "BTCUSDT",
        "side": "Sell",
        "size": "1",
        "avgPrice": "50000",
        "tradeMode": 0,
        "leverage": "5",
        "liqPrice": "60000",
        "markPrice": "50000",
        "createdTime": "1652063737916",
    }

    def body() -> bytes:
        return json.dumps({"retCode": 0, "result": {"list": [dict(row)], "nextPageCursor": ""}}).encode()

    ((p,), _) = bybit_account.parse_positions(body())
    assert p.opened_at is None
    row["openTime"] = "1767225600000"
    ((p,), _) = bybit_account.parse_positions(body())
    assert p.opened_at == 1_767_225_600.0


def test_realized_apy_counts_only_funding_since_the_current_opening(tmp_path: Path) -> None:
    # an account position that closed and reopened under the same name "starts again": its
    # realised APY must not divide the old position's funding by the new one's short lifetime
    from exporter.analytics.carry import net_apy_realized_pct

    clock = Clock(T0)
    state = make_state(clock)
    pos = {**SHORT_BTC, "name": "drb", "exchange": "deribit", "instrument": "BTC-PERPETUAL"}
    svc = PositionService(make_config(tmp_path, [pos]), state, clock=clock)

    def run(hours: int) -> None:
        for _ in range(2 * hours):
            clock.t += 1800.0
            mark(state, Exchange.DERIBIT, "BTC-PERPETUAL", 50_000.0, 0.0002)
            svc.tick()

    mark(state, Exchange.DERIBIT, "BTC-PERPETUAL", 50_000.0, 0.0002)
    svc.tick()
    run(24)
    svc.store.forget_first_seen("drb")  # what poll_accounts does when the account no longer reports it
    clock.t += 3600.0
    mark(state, Exchange.DERIBIT, "BTC-PERPETUAL", 50_000.0, 0.0002)
    svc.tick()  # reopened
    run(2)
    v = svc.views()[0]
    assert v.funding_pnl_usd == pytest.approx(0.0002 * 50_000 * 26 / 8)  # the counter keeps counting
    expected = net_apy_realized_pct(0.0002 * 50_000 * 2 / 8, 25.0, 0.0, 0.0, 10_000.0, 2 * 3600.0)
    assert v.apy_realized_pct == pytest.approx(expected)
    svc.store.close()


def test_opened_at_without_a_zone_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    from exporter.positions.config_source import to_position

    monkeypatch.setenv("TZ", "America/New_York")
    _time.tzset()
    try:
        pc = PositionConfig.model_validate({**SHORT_BTC, "opened_at": "2026-01-01T00:00:00"})
        assert to_position(pc).opened_at == T0
    finally:
        monkeypatch.delenv("TZ")
        _time.tzset()


async def test_a_malformed_public_body_does_not_freeze_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter.rest.accounts import ExchangeAccount

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(ExchangeAccount, "funding_history", broken)
    clock = Clock(T0)
    state = make_state(clock)
    svc = PositionService(make_config(tmp_path, [SHORT_BTC]), state, clock=clock)
    mark(state, Exchange.BINANCE, "BTCUSDT", 50_000.0, 0.0001)
    await svc.step()
    assert [v.mark_price for v in svc.views()] == [50_000.0]
    clock.t += 60.0
    mark(state, Exchange.BINANCE, "BTCUSDT", 40_000.0, 0.0001)
    await svc.step()
    assert [v.mark_price for v in svc.views()] == [40_000.0]
    await svc.aclose()


def test_hit_probability_is_absent_when_the_liquidation_price_is_unknown(tmp_path: Path) -> None:
    """An account position in cross margin whose exchange gave no liquidation price (and whose wallet
    we don't know) has an unknown risk: no fr_liq_hit_probability, rather than a reassuring 0."""
    from exporter.model import Side
    from exporter.positions.model import Position

    clock = Clock(T0)
    state = make_state(clock)
    svc = PositionService(make_config(tmp_path, []), state, clock=clock)
    mark(state, Exchange.BYBIT, "BTCUSDT", 50_000.0, 0.0001)
    svc.add_mark_samples(
        Exchange.BYBIT, "BTCUSDT", [(T0 - 3600.0 + 10 * i, 50_000.0 * (1 + 0.001 * ((-1) ** i))) for i in range(200)]
    )
    unknown = Position(
        "acct-cross",
        Exchange.BYBIT,
        "BTCUSDT",
        Side.LONG,
        1.0,
        50_000.0,
        margin_mode="cross",
        source="account",
        mark_price=50_000.0,
    )
    known = Position(
        "acct-iso",
        Exchange.BYBIT,
        "BTCUSDT",
        Side.LONG,
        1.0,
        50_000.0,
        source="account",
        exchange_liq_price=40_000.0,
        mark_price=50_000.0,
    )
    svc.accounts.put(Exchange.BYBIT, clock.t, [unknown, known])
    svc.tick()
    views = {v.position: v for v in svc.views()}
    assert views["acct-cross"].hit_probability == {} and views["acct-cross"].liq_gap_pct is None
    assert set(views["acct-iso"].hit_probability) == {"1h", "8h"}
    out = render(svc)
    assert 'fr_liq_hit_probability{exchange="bybit",horizon="1h",instrument="BTCUSDT",position="acct-iso"' in out
    assert 'position="acct-cross"' in out and 'horizon="1h",instrument="BTCUSDT",position="acct-cross"' not in out
    svc.store.close()


def test_a_dated_future_position_has_a_liquidation_price_and_no_funding(tmp_path: Path) -> None:
    """The long quarterly leg of a perp-vs-quarterly spread: liquidation price and gap computed as for
    the perpetual of the same margin type (same entry, leverage, mark: same figures), no funding."""
    clock = Clock(T0)
    state = make_state(clock)
    quarterly = "BTCUSDT_260327"
    info = InstrumentInfo(Exchange.BINANCE, quarterly, "BTC", "USDT", expiry=T0 + 85 * 86400)
    state.set_futures(Exchange.BINANCE, [info])
    leg = {"side": "long", "size": 1.0, "entry_price": 50_000.0, "leverage": 5, "margin_mode": "isolated"}
    cfg = make_config(
        tmp_path,
        [
            {"name": "q-long", "exchange": "binance", "instrument": quarterly, **leg},
            {"name": "perp-long", "exchange": "binance", "instrument": "BTCUSDT", **leg},
        ],
    )
    svc = PositionService(cfg, state, clock=clock)
    assert not svc.config_errors

    def marks() -> None:
        mark(state, Exchange.BINANCE, "BTCUSDT", 48_000.0, 0.0003)
        state.apply(MarketUpdate(Exchange.BINANCE, quarterly, mark_price=48_000.0))

    marks()
    svc.tick()  # both positions first seen now
    clock.t += 8 * 3600.0
    marks()
    state.add_settlements(state.instruments[(Exchange.BINANCE, "BTCUSDT")], [(clock.t, 0.0003)])
    svc.tick()
    views = {v.position: v for v in svc.views()}
    q, p = views["q-long"], views["perp-long"]
    assert q.liq_computed is not None and q.liq_computed < 48_000.0
    assert q.liq_computed == pytest.approx(p.liq_computed)
    assert q.liq_gap_pct == pytest.approx((48_000.0 - q.liq_computed) / 48_000.0 * 100)
    assert q.funding_pnl_usd == 0.0 and q.settlements == 0
    assert p.settlements == 1  # the perpetual's settlement is accrued; the quarterly has none
    out = render(svc)
    assert f'fr_liquidation_price{{exchange="binance",instrument="{quarterly}",position="q-long"' in out
    svc.store.close()
