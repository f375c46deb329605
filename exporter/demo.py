"""``fr-exporter demo``: the simulator, the exporter and the AI sidecar as three processes, offline.

Prints the URLs, then a short status line every few seconds; stops after ``--duration`` seconds or
on Ctrl-C, and stops its children either way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from exporter.config import ConfigError, load_config


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", "exporter.cli", *args], stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        time.sleep(0.3)
    return False


def _status(exporter: str, sidecar: str) -> str:
    parts = []
    try:
        text = httpx.get(f"{exporter}/metrics", timeout=2.0).text
        ups = [ln for ln in text.splitlines() if ln.startswith("fr_up{")]
        parts.append(" ".join(ln.split('"')[1] + "=" + ln.rsplit(" ", 1)[1] for ln in ups))
        parts.append(f"{sum(1 for ln in text.splitlines() if ln and not ln.startswith('#'))} samples")
    except httpx.HTTPError as exc:
        parts.append(f"exporter: {type(exc).__name__}")
    try:
        text = httpx.get(f"{sidecar}/metrics", timeout=2.0).text
        probs = [ln for ln in text.splitlines() if ln.startswith("fr_ai_risk_probability{")]
        parts.append(f"ai: {len(probs)} predictions")
    except httpx.HTTPError:
        parts.append("ai: not up")
    return " | ".join(parts)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="fr-exporter demo", description="Simulator + exporter + sidecar, offline.")
    p.add_argument("--config", default="config/demo.yaml")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scenario", default="calm", choices=["calm", "funding_spike", "cascade"])
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fr-exporter demo: {exc}", file=sys.stderr)
        return 2
    logs = Path("var/demo-logs")
    logs.mkdir(parents=True, exist_ok=True)
    exporter_url = "http://" + config.listen_address.replace("0.0.0.0", "127.0.0.1")
    sidecar_url = "http://" + config.sidecar.listen_address.replace("0.0.0.0", "127.0.0.1")
    procs = {
        "simulator": _spawn(["simulate", "--seed", str(args.seed), "--scenario", args.scenario],
                            logs / "simulator.log"),
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        if not _wait_http(config.urls_for(next(iter(config.enabled_exchanges())))[1] + "/_sim/truth", 30):
            print("simulator did not start; see var/demo-logs/simulator.log", file=sys.stderr)
            return 1
        procs["exporter"] = _spawn(["--config", args.config], logs / "exporter.log")
        if not _wait_http(f"{exporter_url}/healthz", 60):
            print("exporter did not start; see var/demo-logs/exporter.log", file=sys.stderr)
            return 1
        procs["sidecar"] = _spawn(["sidecar", "--config", args.config], logs / "sidecar.log")
        print("fr-exporter demo is running (offline, simulated exchanges)")
        print(f"  exporter metrics : {exporter_url}/metrics")
        print(f"  exporter state   : {exporter_url}/api/state")
        print(f"  AI sidecar       : {sidecar_url}/metrics")
        for ex in config.enabled_exchanges():
            print(f"  simulator {ex.value:<7}: {config.urls_for(ex)[1]}/_sim/truth")
        print(f"  logs             : {logs}/")
        print("Ctrl-C stops." if not args.duration else f"Stopping by itself after {args.duration:.0f} s.")
        started = time.monotonic()
        next_status = 0.0
        while not stopping and (not args.duration or time.monotonic() - started < args.duration):
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {logs}/{name}.log", file=sys.stderr)
                    return 1
            if time.monotonic() >= next_status:
                print(f"[{time.monotonic() - started:5.0f} s] {_status(exporter_url, sidecar_url)}", flush=True)
                next_status = time.monotonic() + 5.0
            time.sleep(0.2)
        return 0
    finally:
        for proc in reversed(list(procs.values())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
