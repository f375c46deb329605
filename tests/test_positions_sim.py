"""Positions against the simulator over real sockets: signed account reads on all four
exchanges, rejection of bad requests in each exchange's error shape, settlements accrued exactly
once (also across a restart of the service), and no secret anywhere in logs, /metrics or rows."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support import wait_until
from support.clock import ManualClock as Clock

from exporter.config import Config
from exporter.metrics.positions import PositionCollector
from exporter.model import Exchange
from exporter.positions.service import PositionService
from exporter.rest.signing import (
    ApiKey,
    binance_signed_query,
    bybit_headers,
    deribit_authorization,
    okx_headers,
)
from exporter.sim.main import Simulator
from exporter.state import MarketState

pytestmark = pytest.mark.slow(seconds=10)  # scheduled first (tests/conftest.py)

INSTRUMENT = {
    Exchange.BINANCE: "BTCUSDT",
    Exchange.BYBIT: "BTCUSDT",
    Exchange.OKX: "BTC-USDT-SWAP",
    Exchange.DERIBIT: "BTC-PERPETUAL",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(seed=5, base_port=0, tick_seconds=0.25)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
def creds() -> dict[str, str]:
    return {
        "FR_TEST_KEY": "k-" + secrets.token_hex(12),
        "FR_TEST_SECRET": "s-" + secrets.token_hex(16),
        "FR_TEST_PASS": "p-" + secrets.token_hex(6),
    }


async def post(sim: Simulator, ex: Exchange, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient() as c:
        r = await c.post(sim.urls(ex)[1] + path, json=body)
        r.raise_for_status()
        return dict(r.json())


async def install_credentials(sim: Simulator, creds: dict[str, str]) -> None:
    for ex in Exchange:
        await post(
            sim,
            ex,
            "/_sim/credentials",
            {
                "api_key": creds["FR_TEST_KEY"],
                "api_secret": creds["FR_TEST_SECRET"],
                "passphrase": creds["FR_TEST_PASS"],
            },
        )


def config(
    sim: Simulator,
    tmp_path: Path,
    from_accounts: bool = True,
    positions: list[dict[str, Any]] | None = None,
    poll: float = 0.05,
) -> Config:
    exchanges = {
        ex.value: {
            "ws_url": sim.urls(ex)[0],
            "rest_url": sim.urls(ex)[1],
            "credentials": {
                "api_key_env": "FR_TEST_KEY",
                "api_secret_env": "FR_TEST_SECRET",
                "passphrase_env": "FR_TEST_PASS",
            },
        }
        for ex in Exchange
    }
    return Config.model_validate(
        {
            "exchanges": exchanges,
            # the whole published limit (the simulator enforces it): OKX's funding history (5 a 2 s
            # window) paced at half of it made every poll of the service wait half a second
            "rest_budget": {"fraction": 1.0},
            "positions": positions or [],
            "position_settings": {
                "from_accounts": from_accounts,
                "poll_seconds": poll,
                "db_path": str(tmp_path / "positions.sqlite"),
                # a couple of hours of mark klines for the historical stress: one page per exchange, so the
                # first cycle's bounded wait for them stays far below the signatures' receive window
                "stress_period_days": 0.1,
            },
        }
    )


def next_poll(clock: Clock) -> None:
    """One poll interval (0.05 s) on, and never behind wall time: the service signs its account reads
    with this clock and the simulator checks the stamps against its wall clock (5 s windows), so on a
    loaded machine a clock moved only by the polls fell seconds behind and the reads failed (-1021)."""
    clock.t = max(clock.t + 0.06, time.time())


def render(svc: PositionService) -> str:
    reg = CollectorRegistry()
    reg.register(PositionCollector(svc))
    return generate_latest(reg).decode()


async def open_positions(sim: Simulator) -> None:
    for ex, inst in INSTRUMENT.items():
        await post(
            sim,
            ex,
            "/_sim/positions",
            {"positions": [{"instrument": inst, "side": "short", "size": 0.5, "leverage": 5, "adl": 3}]},
        )


async def test_account_positions_are_read_published_and_vanish_when_closed(
    sim: Simulator, creds: dict[str, str], tmp_path: Path
) -> None:
    await install_credentials(sim, creds)
    await open_positions(sim)
    clock = Clock(time.time())  # polls are due when this clock says so (next_poll)
    svc = PositionService(config(sim, tmp_path), MarketState(), environ=creds, clock=clock)
    await svc.step()
    views = {v.exchange: v for v in svc.views()}
    assert set(views) == {ex.value for ex in Exchange}
    assert all(v.source == "account" and v.side == "short" for v in views.values())
    assert all(v.size == pytest.approx(0.5) for v in views.values())
    assert {ex: v.adl_rank for ex, v in views.items()} == {"binance": 3.0, "bybit": 2.0, "okx": 2.4, "deribit": None}
    for v in views.values():
        assert v.liq_exchange is not None and v.liq_exchange > v.mark_price  # type: ignore[operator]
        assert v.liq_gap_pct is not None and 15.0 < v.liq_gap_pct < 30.0
    # the exchange's figure and ours agree where both exist (the simulator applies the same rules)
    assert views["bybit"].liq_computed == pytest.approx(views["bybit"].liq_exchange, rel=1e-6)
    out = render(svc)
    for ex, inst in INSTRUMENT.items():
        assert (
            f'fr_liquidation_price{{exchange="{ex.value}",instrument="{inst}",position="{ex.value}:{inst}:short",'
            f'side="short",source="exchange"}}'
        ) in out
    assert (
        'fr_adl_rank{exchange="okx",instrument="BTC-USDT-SWAP",position="okx:BTC-USDT-SWAP:short",side="short"} 2.4'
        in out
    )
    assert "fr_position_account_read_failures_total{" not in out
    assert 'source="computed"' not in out  # one series per position: the exchange's figure wins

    # a settlement on Bybit: its account position accrues exactly once, at the account's mark
    assert views["bybit"].settlements == 0
    await post(sim, Exchange.BYBIT, "/_sim/settle", {})
    for _ in range(3):
        next_poll(clock)
        await svc.step()
    bybit = next(v for v in svc.views() if v.exchange == "bybit")
    last = sim.market.get(Exchange.BYBIT, "BTCUSDT").history[-1]
    assert bybit.settlements == 1
    assert bybit.funding_pnl_usd == pytest.approx(0.5 * bybit.mark_price * last.rate, rel=5e-3)  # type: ignore[operator]

    await post(sim, Exchange.BINANCE, "/_sim/positions/close", {"instrument": "BTCUSDT"})
    await post(sim, Exchange.OKX, "/_sim/positions/close", {})
    next_poll(clock)
    await svc.step()
    assert {v.exchange for v in svc.views()} == {"bybit", "deribit"}
    out = render(svc)
    assert 'position="binance:' not in out and 'position="okx:' not in out
    assert 'position="bybit:BTCUSDT:short"' in out
    svc.store.close()


def _bad_request(ex: Exchange, base: str, kind: str, key: ApiKey) -> tuple[str, dict[str, str]]:
    """URL and headers of a private read that is wrong in one way."""
    wrong = ApiKey(key.key, key.secret + "x", key.passphrase)
    signer = wrong if kind == "signature" else key
    now = time.time() - (120.0 if kind == "timestamp" else 0.0)
    if ex is Exchange.BINANCE:
        q, h = binance_signed_query([], signer, int(now * 1000))
        url = f"{base}/fapi/v2/positionRisk?{q}"
    elif ex is Exchange.BYBIT:
        q = "category=linear&settleCoin=USDT"
        h = bybit_headers(q, signer, int(now * 1000))
        url = f"{base}/v5/position/list?{q}"
    elif ex is Exchange.OKX:
        path = "/api/v5/account/positions?instType=SWAP"
        h = okx_headers("GET", path, "", signer, now)
        url = base + path
    else:
        uri = "/api/v2/private/get_positions?currency=any&kind=future"
        h = deribit_authorization("GET", uri, "", signer, int(now * 1000))
        url = base + uri
    if kind == "missing_key":
        h = {
            k: v for k, v in h.items() if k not in ("X-MBX-APIKEY", "X-BAPI-API-KEY", "OK-ACCESS-KEY", "Authorization")
        }
    return url, h


EXPECTED = {
    # (status, error code) per exchange and fault, in each exchange's own error shape
    (Exchange.BINANCE, "signature"): (400, -1022),
    (Exchange.BINANCE, "timestamp"): (400, -1021),
    (Exchange.BINANCE, "missing_key"): (401, -2014),
    (Exchange.BYBIT, "signature"): (200, 10004),
    (Exchange.BYBIT, "timestamp"): (200, 10002),
    (Exchange.BYBIT, "missing_key"): (200, 10003),
    (Exchange.OKX, "signature"): (401, "50113"),
    (Exchange.OKX, "timestamp"): (401, "50102"),
    (Exchange.OKX, "missing_key"): (401, "50103"),
    (Exchange.DERIBIT, "signature"): (400, 13004),
    (Exchange.DERIBIT, "timestamp"): (400, 13004),
    (Exchange.DERIBIT, "missing_key"): (400, 13009),
}


async def test_simulator_rejects_bad_signature_stale_timestamp_and_missing_key(
    sim: Simulator, creds: dict[str, str]
) -> None:
    await install_credentials(sim, creds)
    await open_positions(sim)
    key = ApiKey(creds["FR_TEST_KEY"], creds["FR_TEST_SECRET"], creds["FR_TEST_PASS"])
    async with httpx.AsyncClient() as c:
        for (ex, kind), (status, code) in EXPECTED.items():
            url, headers = _bad_request(ex, sim.urls(ex)[1], kind, key)
            r = await c.get(url, headers=headers)
            body = r.json()
            got = {
                Exchange.BINANCE: lambda b: b.get("code"),
                Exchange.BYBIT: lambda b: b.get("retCode"),
                Exchange.OKX: lambda b: b.get("code"),
                Exchange.DERIBIT: lambda b: b.get("error", {}).get("code"),
            }[ex](body)
            assert (r.status_code, got) == (status, code), (ex, kind, body)
            assert "positions" not in json.dumps(body) and "BTC" not in json.dumps(body).replace("BTC-", "")
        # and the same requests signed correctly succeed
        for ex in Exchange:
            url, headers = _bad_request(ex, sim.urls(ex)[1], "none", key)
            r = await c.get(url, headers=headers)
            assert r.status_code == 200, (ex, r.text)
            assert "BTC" in r.text


async def test_wrong_secret_is_counted_and_publishes_nothing(
    sim: Simulator, creds: dict[str, str], tmp_path: Path
) -> None:
    await install_credentials(sim, creds)
    await open_positions(sim)
    bad = {**creds, "FR_TEST_SECRET": creds["FR_TEST_SECRET"] + "-wrong"}
    svc = PositionService(config(sim, tmp_path), MarketState(), environ=bad)
    await svc.step()
    assert svc.views() == ()
    _, reads, failures = svc.health()
    assert reads == {ex.value: 1 for ex in Exchange}
    assert failures == {(ex.value, "auth"): 1 for ex in Exchange}
    out = render(svc)
    assert 'fr_position_account_read_failures_total{exchange="bybit",reason="auth"} 1.0' in out
    svc.store.close()


async def test_settlement_accrues_exactly_once_also_across_a_restart(
    sim: Simulator, creds: dict[str, str], tmp_path: Path
) -> None:
    positions = [
        {
            "name": "cfg-binance",
            "exchange": "binance",
            "instrument": "BTCUSDT",
            "side": "short",
            "size": 2.0,
            "entry_price": 90_000.0,
            "leverage": 5,
        },
        {
            "name": "cfg-okx",
            "exchange": "okx",
            "instrument": "BTC-USDT-SWAP",
            "side": "long",
            "size": 1.0,
            "entry_price": 90_000.0,
            "leverage": 3,
        },
    ]
    cfg = config(sim, tmp_path, from_accounts=False, positions=positions)
    clock = Clock(time.time())
    svc = PositionService(cfg, MarketState(), environ=creds, clock=clock)
    await svc.step()
    assert {v.position: v.settlements for v in svc.views()} == {"cfg-binance": 0, "cfg-okx": 0}

    await post(sim, Exchange.BINANCE, "/_sim/settle", {})
    next_poll(clock)
    await svc.step()
    next_poll(clock)
    await svc.step()  # the settlement seen again: no second accrual
    v = {x.position: x for x in svc.views()}
    assert v["cfg-binance"].settlements == 1 and v["cfg-okx"].settlements == 0
    inst = sim.market.get(Exchange.BINANCE, "BTCUSDT")
    last = inst.history[-1]
    assert v["cfg-binance"].funding_pnl_usd == pytest.approx(2.0 * last.mark * last.rate, rel=1e-6)
    svc.store.close()  # the exporter stops ...

    await post(sim, Exchange.BINANCE, "/_sim/settle", {})  # ... a settlement happens while it is down
    await post(sim, Exchange.OKX, "/_sim/settle", {})

    # ... and it starts again on the same database; its loop cycles every 20 ms
    svc2 = PositionService(cfg, MarketState(), environ=creds, tick_seconds=0.02)
    cycles = 0
    step = svc2.step

    async def counted_step() -> None:
        nonlocal cycles
        await step()
        cycles += 1

    svc2.step = counted_step  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(svc2.run(stop))
    try:
        await wait_until(
            lambda: {x.position: x.settlements for x in svc2.views()} == {"cfg-binance": 2, "cfg-okx": 1},
            timeout=10,
            what="both settlements accrued after the restart",
        )
        seen = cycles
        await wait_until(lambda: cycles >= seen + 3, timeout=10, what="more cycles")  # more polls of it ...
        counts = {x.position: x.settlements for x in svc2.views()}  # ... still exactly one per settlement
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert counts == {"cfg-binance": 2, "cfg-okx": 1}
    okx_last = sim.market.get(Exchange.OKX, "BTC-USDT-SWAP").history[-1]
    okx_view = next(x for x in svc2.views() if x.position == "cfg-okx")
    # no live mark in this test's MarketState: the accrual falls back to the entry price
    assert okx_view.funding_pnl_usd == pytest.approx(-1.0 * 90_000.0 * okx_last.rate)


async def test_secrets_appear_in_no_log_metric_or_row(
    sim: Simulator, creds: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await install_credentials(sim, creds)
    await open_positions(sim)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for env in (creds, {**creds, "FR_TEST_SECRET": creds["FR_TEST_SECRET"] + "-wrong"}):
        # the second run signs wrongly: Bybit's error message then echoes the signed string
        svc = PositionService(config(sim, tmp_path / str(len(texts))), MarketState(), environ=env)
        await svc.step()
        texts += [render(svc), json.dumps(svc.api_rows()), repr(svc.health()), repr(svc.accounts.keys)]
        texts += [str(e) for e in svc.config_errors]
        svc.store.close()
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    assert any("bybit account read failed: auth (code 10004)" in t for t in texts)
    assert any('source="exchange"' in t for t in texts)
    blob = "\n".join(texts)
    for value in creds.values():
        assert value not in blob


async def test_exporter_serves_positions_without_secrets(
    sim: Simulator,
    creds: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole exporter (app wiring, HTTP server) against the simulator: /metrics and /api/state
    show the positions and none of the credentials."""
    from exporter.app import run_exporter

    caplog.set_level(logging.DEBUG)
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    await install_credentials(sim, creds)
    await post(
        sim,
        Exchange.BYBIT,
        "/_sim/positions",
        {"positions": [{"instrument": "BTCUSDT", "side": "long", "size": 0.2, "leverage": 10, "adl": 5}]},
    )
    cfg = config(
        sim,
        tmp_path,
        positions=[
            {
                "name": "cfg1",
                "exchange": "binance",
                "instrument": "BTCUSDT",
                "side": "short",
                "size": 1.0,
                "entry_price": 90_000.0,
                "leverage": 5,
            }
        ],
        poll=0.5,
    )
    cfg.listen_address = "127.0.0.1:0"
    for ex_cfg in cfg.exchanges.values():  # the market's start-up (history, dated futures) is not under test
        ex_cfg.backfill = False
        ex_cfg.futures.enabled = False
    stop = asyncio.Event()
    ports: list[int] = []
    task = asyncio.create_task(run_exporter(cfg, stop, ports.append))
    try:
        metrics = state = ""
        async with httpx.AsyncClient() as c:

            async def served() -> bool:
                nonlocal metrics, state
                if not ports:
                    return False
                metrics = (await c.get(f"http://127.0.0.1:{ports[0]}/metrics")).text
                state = (await c.get(f"http://127.0.0.1:{ports[0]}/api/state")).text
                return 'position="bybit:BTCUSDT:long"' in metrics and "fr_liq_gap_pct{" in metrics

            await wait_until(served, timeout=15, interval=0.1, what="positions in /metrics")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15.0)
    assert 'fr_adl_rank{exchange="bybit",instrument="BTCUSDT",position="bybit:BTCUSDT:long",side="long"} 4.0' in metrics
    assert 'fr_liq_gap_pct{exchange="binance",instrument="BTCUSDT",position="cfg1",side="short"}' in metrics
    rows = json.loads(state)["positions"]
    assert {r["position"] for r in rows} == {"cfg1", "bybit:BTCUSDT:long"}
    blob = "\n".join([metrics, state, caplog.text])
    for value in creds.values():
        assert value not in blob


async def test_leverage_above_the_published_tier_maximum_is_a_config_error(
    sim: Simulator, creds: dict[str, str], tmp_path: Path
) -> None:
    # 40 000 USD on Bybit at 110x: the built-in fallback tiers allow 125x, the simulator's published
    # risk limits (GET /v5/market/risk-limit, first tier 100x) do not.
    positions = [
        {
            "name": "too-high",
            "exchange": "bybit",
            "instrument": "BTCUSDT",
            "side": "long",
            "size": 0.5,
            "entry_price": 80_000.0,
            "leverage": 110,
        },
        {
            "name": "fine",
            "exchange": "okx",
            "instrument": "BTC-USDT-SWAP",
            "side": "long",
            "size": 120.0,  # 12 000 contracts: published tier 2 (0.5 %); the fallback would say 2.5 %
            "entry_price": 80_000.0,
            "leverage": 20,
        },
    ]
    svc = PositionService(config(sim, tmp_path, from_accounts=False, positions=positions), MarketState(), environ=creds)
    assert [p.name for p in svc.positions] == ["too-high", "fine"]
    await svc.step()
    assert [v.position for v in svc.views()] == ["fine"]
    [err] = svc.config_errors
    assert (err.name, err.field) == ("too-high", "leverage") and "maximum leverage 100x" in err.message
    assert 'fr_position_config_errors_total{field="leverage"} 1.0' in render(svc)
    # the OKX position's computed price used the published tiers (by contracts): 0.5 % + 0.05 % fee
    fine = svc.views()[0]
    assert fine.liq_computed == pytest.approx((80_000 - 4_000) / (1 - 0.0055))  # M/q = 80 000 / 20
    svc.store.close()


async def sim_private_requests(sim: Simulator, ex: Exchange) -> int:
    """Signed requests the simulated exchange has received (its private API's own count)."""
    async with httpx.AsyncClient() as c:
        r = await c.get(sim.urls(ex)[1] + "/_sim/positions")
        return int(r.json()["requests"])


async def test_account_reads_go_through_the_exchanges_rate_limit_gate_and_are_counted(
    sim: Simulator, creds: dict[str, str], tmp_path: Path
) -> None:
    """An account read shares the market data's REST client: it is counted in fr_rest_*, it waits
    while a 429 on market data has closed the exchange's gate, and fails without a request while
    the gate is further away than a call may wait (a Binance ban)."""
    from exporter.clock import VirtualClock
    from exporter.feeds import feed_for
    from exporter.feeds.base import FeedContext
    from exporter.metrics.health import HealthCollector
    from exporter.rest.client import RestClient, RestError, RestPolicy
    from exporter.rest.endpoints import rest_api_for

    await install_credentials(sim, creds)
    await open_positions(sim)
    ex = Exchange.BINANCE
    state = MarketState()
    gate_clock = VirtualClock(start=time.time())
    client = RestClient(
        ex, sim.urls(ex)[1], state, policy=RestPolicy(attempts=1), clock=gate_clock.time, sleep=gate_clock.sleep
    )
    api = rest_api_for(ex, client, feed_for(ex), FeedContext(ex, {}))
    svc = PositionService(config(sim, tmp_path), state, environ=creds, rest={ex: api})
    try:
        await svc.accounts.poll(svc.store.forget_first_seen)
        assert state.rest[(ex, "account_positions")].requests == 1
        assert state.rest[(ex, "account_adl")].requests == 1
        assert {p.exchange for p in svc.accounts.positions()} == set(Exchange)
        sent = await sim_private_requests(sim, ex)

        # a 429 on market data closes Binance's gate for 2 s: the account read waits at it
        await post(sim, ex, "/_sim/fault", {"kind": "rest_429", "seconds": 2, "count": 1})
        with pytest.raises(RestError):
            await api.open_interest("BTCUSDT")
        assert state.rest[(ex, "open_interest")].failures == {"rate_limited": 1}
        task = asyncio.create_task(svc.accounts.poll(svc.store.forget_first_seen))
        await wait_until(gate_clock.pending, what="the account read at the gate")
        assert gate_clock.pending() == 1  # the read is waiting at the gate ...
        assert await sim_private_requests(sim, ex) == sent  # ... and has not gone out
        assert state.rest[(ex, "account_positions")].requests == 1
        gate_clock.advance(2.0)
        await asyncio.wait_for(task, 10.0)
        assert await sim_private_requests(sim, ex) == sent + 2  # positionRisk + adlQuantile, after the wait
        assert state.rest[(ex, "account_positions")].requests == 2
        assert svc.accounts.failures == {}

        # a ban further away than a call may wait: the read fails at once, nothing is sent
        await post(sim, ex, "/_sim/fault", {"kind": "rest_429", "seconds": 300, "count": 1})
        with pytest.raises(RestError):
            await api.open_interest("BTCUSDT")
        await svc.accounts.poll(svc.store.forget_first_seen)
        assert svc.accounts.failures == {(ex.value, "rate_limited"): 1}
        assert await sim_private_requests(sim, ex) == sent + 2
        assert state.rest[(ex, "account_positions")].requests == 2
        svc.tick()
        assert 'fr_position_account_read_failures_total{exchange="binance",reason="rate_limited"} 1.0' in render(svc)
        reg = CollectorRegistry()
        reg.register(HealthCollector(svc.config, state))
        exposed = generate_latest(reg).decode()
        assert 'fr_rest_requests_total{endpoint="account_positions",exchange="binance"} 2.0' in exposed
    finally:
        await svc.aclose()
        await client.aclose()
