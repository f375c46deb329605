"""``fr-exporter top``: rows and sorting from an /api/state document, and ``--once`` against the
real exporter fed by the simulator, every exchange present."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import wait_until

from exporter.app import run_exporter
from exporter.config import Config
from exporter.model import Exchange
from exporter.sim.main import Simulator
from exporter.top import rows_from_state, sort_rows

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0


def row(ex: str, inst: str, base: str, f8: float | None, **extra: Any) -> dict[str, Any]:
    return {
        "exchange": ex,
        "instrument": inst,
        "base": base,
        "stale": False,
        "funding_rate": None if f8 is None else f8 / 2,
        "funding_interval_seconds": 14400.0,
        "funding_rate_8h": f8,
        "funding_rate_annualized": None if f8 is None else f8 * 1095,
        "next_funding_timestamp": T0 + 600,
        "funding_zscore": extra.get("z"),
        "open_interest_usd": extra.get("oi"),
        "liquidations_1h": {"long": {"count": 1, "notional_usd": 1000.0}, "short": {"count": 0, "notional_usd": 0.0}},
    }


DOC = {
    "generated_at": T0,
    "exchanges": {"binance": {"up": True}, "okx": {"up": False}, "bybit": {"up": True}},
    "instruments": [
        row("binance", "BTCUSDT", "BTC", 1e-4, z=3.0, oi=5e9),
        row("okx", "BTC-USDT-SWAP", "BTC", -2e-4, z=-1.0, oi=1e9),
        row("bybit", "BTCUSDT", "BTC", None),
        row("binance", "ETHUSDT", "ETH", 3e-4, oi=2e9),
    ],
}


def test_rows_spread_and_health() -> None:
    rows = {(r.exchange, r.base): r for r in rows_from_state(DOC)}
    btc = rows[("binance", "BTC")]
    assert btc.spread_bp is not None and abs(btc.spread_bp - 3.0) < 1e-9  # (1e-4 - -2e-4) per 8 h, in bp
    assert btc.spread_pair == "binance/okx" and btc.next_s == 600 and btc.liq_1h_usd == 1000.0
    assert rows[("binance", "ETH")].spread_bp is None  # one exchange only: no spread
    assert rows[("okx", "BTC")].up is False and rows[("binance", "BTC")].up is True


def test_sorting_puts_missing_values_last_either_way() -> None:
    rows = rows_from_state(DOC)
    by_funding = [r.exchange + "/" + r.base for r in sort_rows(rows, "funding")]
    assert by_funding == ["binance/ETH", "binance/BTC", "okx/BTC", "bybit/BTC"]
    reversed_ = [r.exchange + "/" + r.base for r in sort_rows(rows, "funding", reverse=True)]
    assert reversed_ == ["okx/BTC", "binance/BTC", "binance/ETH", "bybit/BTC"]
    assert [r.exchange for r in sort_rows(rows, "zscore")][:2] == ["binance", "okx"]  # |z| largest first
    assert [r.base for r in sort_rows(rows, "base")] == ["BTC", "BTC", "BTC", "ETH"]


@contextlib.asynccontextmanager
async def exporter_on_simulator() -> AsyncIterator[str]:
    sim = Simulator(seed=7, base_port=0, tick_seconds=0.1)
    await sim.start()
    exchanges = {ex.value: {"ws_url": sim.urls(ex)[0], "rest_url": sim.urls(ex)[1]} for ex in Exchange}
    # a short backfill on the whole published limit (the simulator enforces it): start-up is that load
    config = Config.model_validate(
        {
            "listen_address": "127.0.0.1:0",
            "exchanges": exchanges,
            "analytics": {"zscore_window_seconds": 4 * 86400.0, "anchor_window_seconds": 3600.0},
            "rest_budget": {"fraction": 1.0},
        }
    )
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_exporter(config, stop, ready.set_result))
    try:
        port = await asyncio.wait_for(asyncio.shield(ready), 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await sim.stop()


@pytest.mark.slow
async def test_top_once_prints_every_exchange_against_the_simulator() -> None:
    async with exporter_on_simulator() as url, httpx.AsyncClient() as http:

        async def funding_everywhere() -> bool:  # every exchange delivering funding for both bases
            doc = (await http.get(url + "/api/state")).json()
            return len({(r["exchange"], r["base"]) for r in doc["instruments"] if r["funding_rate"] is not None}) == 8

        await wait_until(funding_everywhere, 30, interval=0.1, what="funding of both bases on every exchange")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter.cli",
            "top",
            "--once",
            "--url",
            url,
            "--sort",
            "funding",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "sorted by funding" in text and "best spread 8h" in text
    data_lines = [ln for ln in text.splitlines() if "%" in ln]
    for ex in Exchange:
        mine = [ln for ln in data_lines if f" {ex.value} " in ln]
        assert len(mine) == 2, (ex, text)  # BTC and ETH, each with a funding figure
        assert all(" up " in ln or "up │" in ln or "up |" in ln for ln in mine), mine
    assert "\x1b[" not in text  # not a terminal: no colour codes in scripts' output
    for ex in Exchange:
        assert f"{ex.value} up" in text  # the stream health line


async def test_top_once_fails_in_one_line_when_the_exporter_is_absent() -> None:
    from conftest import free_port

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter.cli",
        "top",
        "--once",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert len(err.decode().strip().splitlines()) == 1 and "cannot read" in err.decode()
