"""check-config catches what used to fail only at runtime, each with a clear error naming field and
line; an invalid position that is the only one is reported and counted like any other."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from exporter import cli
from exporter.app import Exporter
from exporter.config import ConfigError, load_config, runtime_problems


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``fr-exporter check-config PATH`` with only ``env`` in the environment, in this process (``cli.main``,
    what the console script calls; a fresh interpreter per call cost 0.3 s of CPU in imports)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {"PATH": "/usr/bin:/bin", **(env or {})}, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = cli.main(["check-config", str(path)])
    return subprocess.CompletedProcess(["check-config", str(path)], code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("exchanges:\n  okx:\n    ws_url: not a url\n", ":3: exchanges.okx.ws_url"),
        ("exchanges:\n  okx:\n    ws_url: http://127.0.0.1:18003\n", ":3: exchanges.okx.ws_url"),
        ("exchanges:\n  binance:\n    ws_url: ftp://example.com\n", ":3: exchanges.binance.ws_url"),
        ("exchanges:\n  binance:\n    rest_url: ws://example.com\n", ":3: exchanges.binance.rest_url"),
        ("exchanges:\n  bybit:\n    ws_url: 'wss://:99999'\n", ":3: exchanges.bybit.ws_url"),
        (
            "exchanges:\n  binance:\n    maintenance_tiers:\n      - [50000, -0.004]\n",
            ":4: exchanges.binance.maintenance_tiers",
        ),
        (
            "exchanges:\n  binance:\n    maintenance_tiers:\n      - [50000, 0.004]\n      - [10000, 0.005]\n",
            ":4: exchanges.binance.maintenance_tiers",
        ),
        ("analytics:\n  holding_period_hours: 1e309\n", ":2: analytics.holding_period_hours"),
        ("exchanges:\n  okx:\n    fees:\n      taker_bp: .inf\n", ":4: exchanges.okx.fees.taker_bp"),
        ("sidecar:\n  exporter_url: localhost:9466\n", ":2: sidecar.exporter_url"),
        ("sidecar:\n  exporter_url: 'http//x'\n", ":2: sidecar.exporter_url"),
        ("exchanges:\n  okx:\n    enabled: true\n    enabled: false\n", ":4: not valid YAML: duplicate key 'enabled'"),
        (
            "analytics:\n  spread_top_n: 3\nanalytics:\n  fee_kind: maker\n",
            ":3: not valid YAML: duplicate key 'analytics'",
        ),
    ],
)
def test_broken_value_is_an_error_naming_field_and_line(tmp_path: Path, text: str, where: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    assert f"{p}{where}" in str(err.value)


def test_duplicate_key_names_the_first_line(tmp_path: Path) -> None:
    p = write(tmp_path, "exchanges:\n  okx:\n    enabled: true\n    enabled: false\n")
    with pytest.raises(ConfigError, match=r"first given on line 3"):
        load_config(p, environ={})


def test_valid_urls_and_tiers_still_load(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "exchanges:\n  okx:\n    ws_url: ws://127.0.0.1:18003\n    rest_url: http://127.0.0.1:18003\n"
        "  binance:\n    maintenance_tiers:\n      - [50000, 0.004, 125]\n      - [250000, 0.005, 100]\n"
        "sidecar:\n  exporter_url: http://exporter:9466\n",
    )
    cfg = load_config(p, environ={})
    assert cfg.urls_for(cfg.enabled_exchanges().__iter__().__next__())  # loads
    assert runtime_problems(cfg, environ={}) == []


SECRETS = """\
tls:
  cert_file: {d}/missing-cert.pem
  key_file: {d}/key.pem
exchanges:
  okx:
    credentials:
      api_key_env: FR_TEST_OKX_KEY
      api_secret_file: {d}/missing-secret
      passphrase_env: FR_TEST_OKX_PASS
sidecar:
  models:
    - name: gpt
      base_url: http://127.0.0.1:8000/v1
      model: m
      api_key_env: FR_TEST_LLM_KEY
  slack:
    webhook_url_file: {d}/missing-hook
"""


def test_missing_secrets_and_tls_files_are_named_with_their_lines(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("k")
    p = write(tmp_path, SECRETS.format(d=tmp_path))
    cfg = load_config(p, environ={})  # loading alone cannot know: each process has its own secrets
    problems = runtime_problems(cfg, environ={"FR_TEST_OKX_PASS": "x"})
    assert len(problems) == 5, problems
    expect = [
        (f"{p}:2: tls.cert_file", "missing-cert.pem"),
        (f"{p}:7: exchanges.okx.credentials.api_key_env", "FR_TEST_OKX_KEY is not set"),
        (f"{p}:8: exchanges.okx.credentials.api_secret_file", "missing-secret"),
        (f"{p}:15: sidecar.models.0.api_key_env", "FR_TEST_LLM_KEY is not set"),
        (f"{p}:17: sidecar.slack.webhook_url_file", "missing-hook"),
    ]
    for (head, detail), problem in zip(expect, problems, strict=True):
        assert problem.startswith(head) and detail in problem, problem
    bad = check_config(p, {"FR_TEST_OKX_PASS": "x"})
    assert bad.returncode == 1
    assert f"{p}:2: tls.cert_file" in bad.stderr and "FR_TEST_LLM_KEY is not set" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_check_config_passes_when_secrets_and_files_exist(tmp_path: Path) -> None:
    for name in ("missing-secret", "missing-hook"):
        (tmp_path / name).write_text("x")
    # without the tls section: whether a certificate is a valid PEM is the web config's check
    text = SECRETS.format(d=tmp_path)
    p = write(tmp_path, text[text.index("exchanges:") :])
    env = {"FR_TEST_OKX_KEY": "a", "FR_TEST_OKX_PASS": "b", "FR_TEST_LLM_KEY": "c"}
    ok = check_config(p, env)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout


def test_an_invalid_position_alone_is_reported_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: with no valid position beside it, the position service never started, so the exporter
    ran without a log line or fr_position_config_errors_total."""
    p = write(
        tmp_path,
        f"position_settings:\n  db_path: {tmp_path}/p.sqlite\n"
        "positions:\n  - name: a\n    exchange: binance\n    instrument: BTCUSDT\n    side: long\n"
        "    size: -2\n    entry_price: 100\n    leverage: 3\n",
    )
    cfg = load_config(p, environ={})
    assert cfg.positions == [] and len(cfg.position_issues) == 1
    caplog.set_level(logging.ERROR)
    exporter = Exporter(cfg)
    registry = exporter._build_registry()
    text = registry.render().decode()
    assert 'fr_position_config_errors_total{field="size"} 1.0' in text
    assert any("position skipped" in r.getMessage() and "positions.0.size" in r.getMessage() for r in caplog.records)
