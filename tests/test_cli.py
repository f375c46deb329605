"""The command line a new user meets: help, typos, log flags, one-line user errors, the start-up
banner, the offline line, check-config's counts and FR_* naming, demo --config's ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

from exporter.cli import COMMANDS, build_parser, main
from exporter.config import Config, ConfigError, load_config
from exporter.demo import simulator_base_port

pytestmark = pytest.mark.slow(seconds=20)  # the file: a dozen subprocesses, the demo's three for seconds

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 60, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},
        check=False,
    )


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_help_lists_every_subcommand_on_one_line() -> None:
    r = cli("--help")
    assert r.returncode == 0
    for name, text in COMMANDS.items():
        assert any(ln.split() and ln.split()[0] == name and text in ln for ln in r.stdout.splitlines()), name
    assert set(COMMANDS) == {
        *("run", "simulate", "sidecar", "evaluate", "fit-baseline", "check-config", "demo", "top"),
        *("record", "replay"),
    }


def test_a_mistyped_subcommand_suggests_the_right_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chek-config", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert len(lines(err)) == 1 and "did you mean 'check-config'?" in err
    assert main(["sidecra"]) == 2
    assert "did you mean 'sidecar'?" in capsys.readouterr().err


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("INFO", "INFO"), ("Warn", "WARNING"),
                                             ("warning", "WARNING"), ("ERROR", "ERROR")])  # fmt: skip
def test_log_level_in_any_case(given: str, level: str) -> None:
    args = build_parser().parse_args(["run", "--log.level", given, "--log.format", "json"])
    assert args.log_level == level and args.log_format == "json"


def test_a_bad_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "--log.level", "loud"])
    assert exc.value.code == 2 and "debug, info, warn, error" in capsys.readouterr().err


def _busy() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_busy_port_is_one_line_and_a_non_zero_exit() -> None:
    with _busy() as s:
        port = s.getsockname()[1]
        for cmd in (["--config", "config/demo.yaml"], ["sidecar", "--config", "config/demo.yaml"]):
            r = cli(*cmd, "--web.listen-address", f"127.0.0.1:{port}")
            assert r.returncode == 1
            assert lines(r.stderr) == [f"fr-exporter: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_non_utf8_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"log_level: INFO\nlisten_address: '\xe9:9466'\n")
    r = cli("--config", str(bad))
    assert r.returncode == 2 and lines(r.stderr) == [f"fr-exporter: {bad}:2: not UTF-8 text (byte 0xe9)"]
    assert cli("check-config", str(bad)).returncode == 1


def test_missing_tls_files_are_named_not_reported_as_cannot_listen(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"listen_address: '127.0.0.1:{free_port()}'\ntls: {{cert_file: {tmp_path}/no.crt, key_file: k}}\n")
    r = cli("--config", str(cfg))
    assert r.returncode == 2
    (line,) = lines(r.stderr)
    assert "no.crt: no such file" in line and "cannot listen" not in line
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {cert_file: a.crt, key_file: a.key}\n")
    r = cli("sidecar", "--config", "config/demo.yaml", "--web.config.file", str(web))
    assert r.returncode == 2 and len(lines(r.stderr)) == 1 and "a.crt" in r.stderr


def test_check_config_loads_the_web_configs(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {prometheus: not-a-hash}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"web_config_file: {web}\n")
    r = cli("check-config", str(cfg))
    assert r.returncode == 1 and "not a bcrypt hash" in r.stderr
    cfg.write_text(f"sidecar: {{web_config_file: {tmp_path}/missing.yml}}\n")
    r = cli("check-config", str(cfg))
    assert r.returncode == 1 and "cannot read web config file" in r.stderr and "missing.yml" in r.stderr


def test_check_config_counts_invalid_positions_not_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "positions:\n"
        "  - {name: two-errors, exchange: binance, instrument: BTCUSDT, side: up, size: -1,\n"
        "     entry_price: 1, leverage: 2}\n"
        "  - {name: ok, exchange: binance, instrument: BTCUSDT, side: long, size: 1, entry_price: 1, leverage: 2}\n"
    )
    r = cli("check-config", str(cfg))
    assert r.returncode == 1
    assert f"{cfg}: 1 invalid position(s)" in r.stderr
    assert r.stderr.count("position skipped") == 2  # both errors are still listed


def test_env_override_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("config/demo.yaml", environ={"FR_SIDECAR__INTERVAL_SECONDS": "-5"})
    msg = str(exc.value)
    assert "environment variable FR_SIDECAR__INTERVAL_SECONDS: sidecar.interval_seconds" in msg
    assert "demo.yaml:" not in msg  # not a YAML line: the file has none for it


def test_banner_and_offline_line(tmp_path: Path) -> None:
    """Exchanges that refuse connections (or do not resolve): one line says none can be reached."""
    closed = free_port()
    cfg = tmp_path / "offline.yaml"
    exchanges = "".join(
        f"  {ex}: {{ws_url: 'ws://127.0.0.1:{closed}', rest_url: 'http://127.0.0.1:{closed}',\n"
        "    instruments: [X, Y, Z]}\n"
        for ex in ("binance", "bybit", "okx", "deribit")
    )
    cfg.write_text(f"listen_address: '0.0.0.0:{free_port()}'\nexchanges:\n{exchanges}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "--config", str(cfg), "--log.format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    got: list[dict[str, str]] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("cannot reach" in g["msg"] for g in got):
            line = proc.stderr.readline()
            if not line:
                break
            got.append(json.loads(line))  # --log.format json: every line is a JSON object
    finally:
        proc.terminate()
        proc.wait(15)
    banner = got[0]["msg"]
    assert banner.startswith("fr-exporter 0.1.0 (revision ") and str(cfg) in banner
    assert "(all interfaces)" in banner and "binance (3), bybit (3), okx (3), deribit (3)" in banner
    (offline,) = [g for g in got if "cannot reach" in g["msg"]]
    assert offline["level"] == "error" and "cannot reach any exchange" in offline["msg"]
    assert all(ex in offline["msg"] for ex in ("binance", "bybit", "okx", "deribit"))


def test_demo_takes_the_simulator_ports_from_its_config() -> None:
    cfg = Config.model_validate(
        {"exchanges": {ex: {"rest_url": f"http://127.0.0.1:{28001 + i}", "ws_url": f"ws://127.0.0.1:{28001 + i}"}
                       for i, ex in enumerate(("binance", "bybit", "okx", "deribit"))}}
    )  # fmt: skip
    assert simulator_base_port(cfg) == 28001
    assert simulator_base_port(load_config("config/demo.yaml")) == 18001
    cfg.exchanges["okx"].rest_url = "http://127.0.0.1:29999"  # type: ignore[index]
    with pytest.raises(ConfigError, match="okx 28003"):
        simulator_base_port(cfg)


@pytest.mark.slow(seconds=8)  # three processes and three seconds of running
def test_demo_runs_on_the_ports_of_its_config(tmp_path: Path) -> None:
    base = free_port(4)  # four consecutive free ports for the simulator
    text = (ROOT / "config" / "demo.yaml").read_text()
    for i in range(4):
        text = text.replace(f"127.0.0.1:{18001 + i}", f"127.0.0.1:{base + i}")
    text = text.replace("127.0.0.1:9466", f"127.0.0.1:{free_port()}").replace(
        "127.0.0.1:9467", f"127.0.0.1:{free_port()}"
    )
    text = text.replace("var/demo-", f"{tmp_path}/demo-")
    # a short backfill on the whole published limit: the exporter's start-up is that load
    text += "analytics:\n  zscore_window_seconds: 345600\n  anchor_window_seconds: 3600\n"
    text += "rest_budget:\n  fraction: 1.0\n"
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(text)
    r = cli("demo", "--config", str(cfg), "--duration", "3", "--no-tour", timeout=150, cwd=tmp_path)  # logs in var/
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fr-exporter demo is running" in r.stdout and f"127.0.0.1:{base}/_sim/truth" in r.stdout
