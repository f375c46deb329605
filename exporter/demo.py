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
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config, ConfigError, load_config
from exporter.metrics import catalog as m


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", *args], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        time.sleep(0.3)
    return False


def _samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{url}/metrics", timeout=2.0).text
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def _status(exporter: str, sidecar: str) -> str:
    """One line: streams up, BTC funding per exchange (8 h-equivalent), liquidations, positions, AI."""
    parts = []
    try:
        samples = _samples(exporter)
        up = {lab["exchange"]: v for n, lab, v in samples if n == m.UP.name}
        parts.append("up " + " ".join(f"{ex}={'yes' if v == 1 else 'NO'}" for ex, v in sorted(up.items())))
        rate = {(lab["exchange"], lab["instrument"]): v for n, lab, v in samples if n == m.FUNDING_RATE.name}
        interval = {(lab["exchange"], lab["instrument"]): v for n, lab, v in samples if n == m.FUNDING_INTERVAL.name}
        btc = [
            f"{ex[:3]} {rate[k] * 28800 / interval[k] * 1e4:+.1f}"
            for k in sorted(rate)
            if k in interval and k[1].startswith("BTC")
            for ex in [k[0]]
        ]
        parts.append("BTC funding bp/8h " + " ".join(btc))
        liq = sum(v for n, _, v in samples if n == m.LIQUIDATED_NOTIONAL.name)
        parts.append(f"liquidated ${liq / 1e6:,.1f}M")
        gaps = [f"{lab['position']} {v:.1f}%" for n, lab, v in samples if n == m.LIQ_GAP.name]
        if gaps:
            parts.append("liq gap " + " ".join(gaps))
    except (httpx.HTTPError, ValueError) as exc:
        parts.append(f"exporter: {type(exc).__name__}")
    try:
        probs = [
            f"{lab['base']} {lab.get('horizon', '')} {v:.2f}"
            for n, lab, v in _samples(sidecar)
            if n == m.AI_RISK_PROBABILITY.name
            and lab.get("model") == "baseline"
            and lab.get("calibration") != "calibrated"
        ]
        parts.append("AI risk " + (" ".join(sorted(probs)) or "pending"))
    except (httpx.HTTPError, ValueError):
        parts.append("AI: starting")
    return " | ".join(parts)


# then a cascade every 3 minutes: events for the sidecar's short horizon to be scored against
TOUR: tuple[tuple[float, str], ...] = (
    (60.0, "funding_spike"),
    *((180.0 + 180.0 * k, "cascade") for k in range(60)),
)
TOUR_SECONDS = 300  # the whole tour: the cascade at 180 s and two minutes of its aftermath


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/demo.yaml", help="its exchange URLs name the simulator's ports")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help=f"stop after this many seconds (0: until Ctrl-C; {TOUR_SECONDS} shows the whole tour)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scenario", default="calm", choices=["calm", "funding_spike", "cascade"])
    p.add_argument(
        "--tour",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after 60 s a funding spike, after 180 s a liquidation cascade, then one every 3 minutes (default: on)",
    )
    p.add_argument(
        "--keep-predictions",
        action="store_true",
        help="continue the sidecar's prediction store instead of starting a fresh one",
    )


def _prepare_store(path: Path, keep: bool) -> None:
    """A fresh prediction store for the demo, or say that an old one continues."""
    if keep and path.exists():
        print(f"continuing the prediction store {path} (its earlier predictions are scored too)")
        return
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
    print(f"fresh prediction store {path} (--keep-predictions continues an old one)")


def _evaluate_lines(config: Config) -> None:
    """What fr-exporter evaluate says now, one line per model and horizon."""
    from exporter.sidecar.evaluate import report_for, summary_lines

    try:
        doc = report_for(config, config.sidecar.db_path)
    except Exception as exc:  # the store may be mid-write; the next report will do
        print(f"-- evaluate: {type(exc).__name__}", flush=True)
        return
    if doc is None or not doc["groups"]:
        print("-- evaluate: no predictions yet", flush=True)
        return
    for line in summary_lines(doc):
        print(f"-- evaluate: {line}", flush=True)


def simulator_base_port(config: Config) -> int:
    """The simulator serves binance on a base port and bybit, okx, deribit on the next three; the
    config's REST URLs must name those ports (they are where the exporter will connect)."""
    from exporter.sim.main import PORT_OFFSET

    ports = {}
    for ex in config.enabled_exchanges():
        url = urllib.parse.urlsplit(config.urls_for(ex)[1])
        if url.hostname not in ("127.0.0.1", "localhost", "::1") or url.port is None:
            raise ConfigError(
                f"demo: exchanges.{ex.value}.rest_url must be a loopback simulator URL, not {url.geturl()}"
            )
        ports[ex] = url.port
    if not ports:
        raise ConfigError("demo: no exchange is enabled")
    first = next(iter(ports))
    base = ports[first] - PORT_OFFSET[first]
    expected = {ex: base + PORT_OFFSET[ex] for ex in ports}
    if ports != expected:
        want = ", ".join(f"{ex.value} {p}" for ex, p in expected.items())
        have = ", ".join(f"{ex.value} {p}" for ex, p in ports.items())
        raise ConfigError(f"demo: the simulator's ports follow binance's ({want}); the config has {have}")
    return base


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="fr-exporter demo", description="Simulator + exporter + sidecar, offline.")
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        base_port = simulator_base_port(config)
    except ConfigError as exc:
        print(f"fr-exporter demo: {exc}", file=sys.stderr)
        return 2
    logs = Path("var/demo-logs")
    logs.mkdir(parents=True, exist_ok=True)
    exporter_url = "http://" + config.listen_address.replace("0.0.0.0", "127.0.0.1")
    sidecar_url = "http://" + config.sidecar.listen_address.replace("0.0.0.0", "127.0.0.1")
    procs = {
        "simulator": _spawn(
            ["simulate", "--seed", str(args.seed), "--scenario", args.scenario, "--base-port", str(base_port)],
            logs / "simulator.log",
        ),
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
        _prepare_store(config.sidecar.db_path, args.keep_predictions)
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
        # (seconds after start, scenario): something to watch on the dashboards and in the alerts
        tour = list(TOUR) if args.tour else []
        next_evaluate = 150.0  # the short horizon's first predictions are scored by then
        sim_rest = config.urls_for(next(iter(config.enabled_exchanges())))[1]
        while not stopping and (not args.duration or time.monotonic() - started < args.duration):
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {logs}/{name}.log", file=sys.stderr)
                    return 1
            if tour and time.monotonic() - started >= tour[0][0]:
                _, scenario = tour.pop(0)
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{sim_rest}/_sim/scenario", json={"name": scenario}, timeout=5.0)
                    print(f"-- simulator scenario: {scenario}", flush=True)
            if time.monotonic() >= next_status:
                print(f"[{time.monotonic() - started:5.0f} s] {_status(exporter_url, sidecar_url)}", flush=True)
                next_status = time.monotonic() + 5.0
            if time.monotonic() - started >= next_evaluate:
                _evaluate_lines(config)
                next_evaluate += 60.0
            time.sleep(0.2)
        if "sidecar" in procs:
            _evaluate_lines(config)
            print(f"Full report: fr-exporter evaluate --config {args.config} (--plot FILE.png, --format json)")
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
