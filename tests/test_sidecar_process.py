"""``fr-exporter sidecar --config FILE`` runs as its own process and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from support import ROOT, free_port, wait_until
from support.fakes import FakeExporter, instrument, state

from exporter.config import Config, ModelConfig, SidecarConfig
from exporter.sidecar.main import run_sidecar


async def test_sidecar_process_serves_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with FakeExporter() as exp:
        exp.state = state([instrument("binance", "BTCUSDT"), instrument("bybit", "BTCUSDT")])
        port = free_port()
        cfg = tmp_path / "sidecar.yaml"
        cfg.write_text(
            "sidecar:\n"
            f"  exporter_url: {exp.url}\n"
            f"  listen_address: 127.0.0.1:{port}\n"
            f"  db_path: {tmp_path / 'p.sqlite'}\n"
            "  event_poll_seconds: 0.1\n"
        )
        out = (tmp_path / "sidecar.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "sidecar", "--config", str(cfg)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            body = ""
            async with httpx.AsyncClient() as client:

                async def answered() -> bool:
                    nonlocal body
                    try:
                        body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                    except httpx.HTTPError:
                        return False
                    return 'model="baseline"' in body and "fr_ai_risk_probability{" in body

                await wait_until(answered, 15, interval=0.1, what="the sidecar process to publish")
                assert 'fr_ai_risk_probability{base="BTC",calibration="raw",horizon="8h",model="baseline"}' in body
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 10)
            out.close()
        assert code == 0, (tmp_path / "sidecar.log").read_text()
        assert (tmp_path / "p.sqlite").exists()


async def test_missing_secret_file_and_busy_port_are_clean_errors(tmp_path: Path) -> None:
    base = {"db_path": tmp_path / "p.sqlite", "listen_address": f"127.0.0.1:{free_port()}"}
    missing = ModelConfig(name="m", base_url="http://127.0.0.1:1/v1", model="m", api_key_file=tmp_path / "absent")
    assert await run_sidecar(Config(sidecar=SidecarConfig(**base, models=[missing])), asyncio.Event()) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = Config(sidecar=SidecarConfig(db_path=tmp_path / "p.sqlite", listen_address=f"127.0.0.1:{port}"))
        assert await run_sidecar(cfg, asyncio.Event()) == 1
