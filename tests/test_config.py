"""Configuration: validation names the field and line, env overrides, secrets, check-config."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
from pathlib import Path

import pytest

from exporter import cli
from exporter.config import ConfigError, load_config, parse_listen_address, read_secret
from exporter.model import Exchange
from exporter.redact import RedactingFilter

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_defaults_follow_btc_and_eth_on_all_four() -> None:
    cfg = load_config(None, environ={})
    assert set(cfg.enabled_exchanges()) == set(Exchange)
    assert cfg.instruments_for(Exchange.OKX) == ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]
    assert cfg.urls_for(Exchange.BINANCE) == ("wss://fstream.binance.com", "https://fapi.binance.com")
    assert parse_listen_address(cfg.listen_address) == ("0.0.0.0", 9466)


def test_error_names_field_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "listen_address: ':9466'\nexchanges:\n  bybit:\n    max_instruments: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    assert f"{p}:4: exchanges.bybit.max_instruments" in str(err.value)


def test_unknown_field_is_rejected_with_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "exchanges:\n  okx:\n    enabled: true\n    wsurl: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    assert f"{p}:4: exchanges.okx.wsurl" in str(err.value)
    assert "Extra inputs are not permitted" in str(err.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("exchanges: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("exchanges:\n  kraken: {}\n", "exchanges.kraken"),
        ("listen_address: nowhere\n", "listen_address"),
    ],
)
def test_broken_files_give_clear_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert fragment in str(err.value)


POSITIONS = (
    "positions:\n  - name: a\n    exchange: binance\n    instrument: BTCUSDT\n    side: long\n"
    "    size: -2\n    entry_price: 100\n    leverage: 3\n"
    "  - {name: b, exchange: okx, instrument: BTC-USDT-SWAP, side: short, size: 1, entry_price: 100, leverage: 2}\n"
)


def test_a_bad_position_is_skipped_with_its_field_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, POSITIONS)
    cfg = load_config(p, environ={})  # the rest of the configuration still loads
    assert [pc.name for pc in cfg.positions] == ["b"]
    [issue] = cfg.position_issues
    assert (issue.name, issue.field) == ("a", "size")
    assert f"{p}:6: positions.0.size" in issue.message


def test_check_config_fails_on_a_bad_position(tmp_path: Path) -> None:
    bad = run_cli("check-config", str(write(tmp_path, POSITIONS)))
    assert bad.returncode == 1
    assert "positions.0.size" in bad.stderr


def test_environment_overrides_file(tmp_path: Path) -> None:
    p = write(tmp_path, "exchanges:\n  okx:\n    max_instruments: 20\n")
    cfg = load_config(
        p,
        environ={
            "FR_EXCHANGES__OKX__MAX_INSTRUMENTS": "30",
            "FR_EXCHANGES__BINANCE__ENABLED": "false",
            "FR_LISTEN_ADDRESS": "127.0.0.1:9999",
            "FR_UNRELATED": "ignored",
        },
    )
    assert cfg.exchanges[Exchange.OKX].max_instruments == 30
    assert Exchange.BINANCE not in cfg.enabled_exchanges()
    assert Exchange.BYBIT in cfg.enabled_exchanges()  # left out of the file: defaults
    assert cfg.listen_address == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("given", "level"), [("warn", "WARNING"), ("warning", "WARNING"), ("Info", "INFO"), ("DEBUG", "DEBUG")]
)
def test_log_level_in_any_case_as_the_flag(tmp_path: Path, given: str, level: str) -> None:
    """Prometheus' spelling (lowercase, `warn`) works in the file and the environment, as --log.level."""
    assert load_config(write(tmp_path, f"log_level: {given}\n")).log_level == level
    assert load_config(None, environ={"FR_LOG_LEVEL": given}).log_level == level


def test_an_unknown_log_level_is_an_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "log_level: verbose\n"))
    assert "log_level" in str(err.value)


def test_bad_environment_override_is_reported() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={"FR_EXCHANGES__OKX__MAX_INSTRUMENTS": "lots"})
    assert "exchanges.okx.max_instruments" in str(err.value)


def test_secret_from_file_wins_and_is_redacted_from_logs(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("file-secret-1234\n")
    assert read_secret("K", secret_file, environ={"K": "env-secret-5678"}) == "file-secret-1234"
    assert read_secret("K", None, environ={"K": "env-secret-5678"}) == "env-secret-5678"
    assert read_secret("MISSING", None, environ={}) is None
    with pytest.raises(ConfigError) as err:
        read_secret(None, tmp_path / "absent", environ={})
    assert "absent" in str(err.value)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key is %s and %s", ("file-secret-1234", 3), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "key is *** and 3"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``fr-exporter ARGS`` in this process (``cli.main``, what the console script calls; test_cli runs
    ``python -m exporter.cli`` as a process): a fresh interpreter per call cost 0.3 s of CPU in imports."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def test_check_config_command(tmp_path: Path) -> None:
    ok = run_cli("check-config", str(ROOT / "config" / "demo.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "positions: 2" in ok.stdout
    bad = run_cli("check-config", str(write(tmp_path, "analytics:\n  spread_top_n: 0\n")))
    assert bad.returncode == 1
    assert "config.yaml:2: analytics.spread_top_n" in bad.stderr


def test_shipped_configs_are_valid() -> None:
    for name in ("demo.yaml", "live.yaml"):
        load_config(ROOT / "config" / name, environ={})
