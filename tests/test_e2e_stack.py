"""End to end: simulator -> exporter (+ AI sidecar) -> real Prometheus (shipped rules, fast variant)
-> real Alertmanager (shipped config) -> a fake Slack webhook on loopback.

What is shortened, and only that: scrape/evaluation interval (1 s), the rules' `for:` durations and
the two staleness limits (mixin.config.fast_variant), Alertmanager's group timings, and the
exporter's stream staleness limit (3 s). Everything else is the shipped configuration.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import needs_tool
from support.fakes import FakeSlack

from exporter.metrics import catalog
from mixin import generate
from mixin.config import fast_variant
from mixin.lint import base_metric, exposition_metrics, metric_names, panel_targets, substitute
from mixin.stack import (
    Process,
    alertmanager_config,
    am_alerts,
    binary,
    free_port,
    http_json,
    prometheus_config,
    query,
    run_alertmanager,
    run_prometheus,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        binary("prometheus") is None or binary("prometheus-alertmanager", "alertmanager") is None,
        reason="needs Debian's prometheus and prometheus-alertmanager (apt-get install prometheus "
        "prometheus-alertmanager)",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
DASH_DIR = ROOT / "grafana" / "dashboards"
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval for a 1 s scrape: max(interval + scrape, 4 x scrape), rounded up
SIM_KEY, SIM_SECRET = "sim-read-only-key", "sim-read-only-secret"  # exporter/sim/private.py defaults


@dataclass
class Stack:
    sim: dict[str, dict[str, Any]]
    exporter: str
    sidecar: str
    prometheus: str
    alertmanager: str
    slack: FakeSlack
    workdir: Path

    def sim_post(self, exchange: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return http_json(f"{self.sim[exchange]['rest']}{path}", body or {})


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    return Process([sys.executable, "-m", "exporter.cli", *args], log, cwd=ROOT, env={**os.environ, **(env or {})})


def _read_sim_urls(proc: Process) -> dict[str, dict[str, Any]]:
    def parse() -> dict | None:
        if not proc.alive():
            raise RuntimeError(f"simulator exited:\n{proc.log()}")
        for line in proc.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"simulator"' in line:
                return dict(json.loads(line)["simulator"])
        return None

    return dict(wait_for(parse, 30, what="simulator URLs"))


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def _exporter_config(tmp: Path, sim: dict[str, dict[str, Any]], listen: str, sidecar_listen: str, mark: float) -> Path:
    exchanges: dict[str, Any] = {
        ex: {"ws_url": urls["ws"], "rest_url": urls["rest"], "stale": {"stream_seconds": 3}} for ex, urls in sim.items()
    }
    exchanges["binance"]["credentials"] = {
        "api_key_env": "FR_E2E_BINANCE_KEY",
        "api_secret_env": "FR_E2E_BINANCE_SECRET",
    }
    dead_port = free_port()  # nothing listens here: the second model's calls fail (failure series, AiSidecarFailing)
    cfg = {
        "listen_address": listen,
        "log_level": "WARNING",
        "exchanges": exchanges,
        "positions": [
            {
                "name": "cfg-btc-carry",
                "exchange": "binance",
                "instrument": "BTCUSDT",
                "side": "short",
                "size": 0.5,
                "entry_price": round(mark, 1),
                "margin_mode": "isolated",
                "leverage": 5,
                "locked_capital_usd": round(mark, 0),
            }
        ],
        "position_settings": {
            "from_accounts": True,
            "poll_seconds": 1,
            "vol_sample_seconds": 1,  # 20 mark returns for the hit probability within the test's time
            "stress_period_days": 1,  # historical stress: a day of mark klines to backfill, not 30
            "db_path": str(tmp / "positions.sqlite"),
        },
        "sidecar": {
            "exporter_url": f"http://{listen}",
            "listen_address": sidecar_listen,
            "interval_seconds": 2,
            "event_poll_seconds": 1,
            "horizon_hours": 0.002,  # 7.2 s: predictions are scored during the test
            "event_threshold_usd": 1.0,
            # the flow term on (the fitted default switches it off, docs/sidecar.md): once liquidations
            # flow the baseline says >= 0.7, so precision/recall/F1 at the alert threshold get values
            "flow_scale": 1.0,
            "baseline": True,
            "models": [
                {
                    "name": "unreachable-llm",
                    "base_url": f"http://127.0.0.1:{dead_port}/v1",
                    "model": "none",
                    "timeout_seconds": 1,
                    "retries": 0,
                }
            ],
            "db_path": str(tmp / "predictions.sqlite"),
        },
    }
    path = tmp / "exporter.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    procs: list[Process] = []
    try:
        sim_proc = _spawn(["simulate", "--base-port", "0", "--seed", "7", "--okx-funding-push-seconds", "2"],
                          tmp / "sim.log")  # fmt: skip
        procs.append(sim_proc)
        sim = _read_sim_urls(sim_proc)
        truth = http_json(sim["binance"]["rest"] + "/_sim/truth")
        mark = float(truth["instruments"]["BTCUSDT"]["mark"])
        http_json(
            sim["binance"]["rest"] + "/_sim/positions",
            {"positions": [{"instrument": "BTCUSDT", "side": "long", "size": 0.2, "entry_price": mark,
                            "leverage": 5, "adl": 3}], "replace": True},
        )  # fmt: skip

        # a few failed REST calls, so the REST error series exist (and the panel has data)
        http_json(sim["binance"]["rest"] + "/_sim/fault", {"kind": "rest_5xx", "count": 3})

        exp_port, sc_port = free_port(), free_port()
        listen, sc_listen = f"127.0.0.1:{exp_port}", f"127.0.0.1:{sc_port}"
        cfg = _exporter_config(tmp, sim, listen, sc_listen, mark)
        env = {"FR_E2E_BINANCE_KEY": SIM_KEY, "FR_E2E_BINANCE_SECRET": SIM_SECRET}
        exporter = _spawn(["--config", str(cfg), "--web.listen-address", listen], tmp / "exporter.log", env)
        procs.append(exporter)
        wait_for(lambda: _healthy(f"http://{listen}/healthz"), 30, what="exporter /healthz")
        sidecar = _spawn(["sidecar", "--config", str(cfg)], tmp / "sidecar.log")
        procs.append(sidecar)
        wait_for(lambda: _healthy(f"http://{sc_listen}/metrics"), 30, what="sidecar /metrics")

        rules = [p for p in generate.write(tmp / "mixin", fast_variant(), with_tests=False) if p.suffix == ".yml"]
        with FakeSlack() as slack:
            am_cfg = alertmanager_config(tmp, slack.url)
            with run_alertmanager(tmp, am_cfg) as am:
                prom_cfg = prometheus_config(
                    tmp, rule_files=rules, exporter=listen, sidecar=sc_listen, alertmanager=am.removeprefix("http://")
                )
                with run_prometheus(tmp, prom_cfg) as prom:
                    wait_for(lambda: len(query(prom, "up == 1")) == 2, 30, what="both targets up in Prometheus")
                    yield Stack(sim, f"http://{listen}", f"http://{sc_listen}", prom, am, slack, tmp)
    finally:
        for p in reversed(procs):
            p.stop()


def _firing(stack: Stack, expr: str) -> list[dict[str, Any]]:
    return query(stack.prometheus, f'ALERTS{{alertstate="firing",{expr}}}')


def _slack_with(stack: Stack, *needles: str) -> list[str]:
    return [t for t in stack.slack.texts() if all(n in t for n in needles)]


def test_funding_spike_alerts_slack_and_resolves(stack: Stack) -> None:
    stack.sim_post("binance", "/_sim/scenario", {"name": "funding_spike", "seconds": 600})
    alerts = wait_for(
        lambda: _firing(stack, 'alertname="FundingRateEmergency",exchange="binance",instrument="BTCUSDT"'),
        60,
        what="FundingRateEmergency firing in Prometheus",
    )
    labels = alerts[0]["metric"]
    assert labels["severity"] == "emergency" and labels["base"] == "BTC"

    texts = wait_for(
        lambda: _slack_with(stack, "[FIRING", "*FundingRateEmergency* (emergency)", "binance BTCUSDT"),
        30,
        what="the emergency funding alert in Slack",
    )
    text = texts[0]
    assert "Funding on binance BTCUSDT beyond ±0.12 % per 8 h." in text  # summary
    m = re.search(r"binance BTCUSDT \(BTC\) funding is (-?[0-9.]+)% per 8 h-equivalent \(threshold ±0.12 %", text)
    assert m and float(m.group(1)) > 0.12, text  # the live value, humanized
    assert re.search(r"\*Value:\* [0-9.]+% \| \*Exchange:\* binance \| \*Instrument:\* BTCUSDT", text)
    assert "runbook.md#fundingrateemergency|:notebook: Runbook>" in text
    assert (
        "/d/fr-funding-overview?var-exchange=binance&var-base=BTC&var-instrument=BTCUSDT|:bar_chart: Dashboard>" in text
    )
    # While the emergency fires, the warning and critical levels of the same instrument are inhibited
    # (they fired first on the way up and were sent then; from now on they stay muted).
    inhibited = [
        a for a in am_alerts(stack.alertmanager)
        if a["labels"].get("family") == "FundingRate" and a["labels"].get("instrument") == "BTCUSDT"
        and a["labels"].get("exchange") == "binance" and a["labels"]["severity"] != "emergency"
    ]  # fmt: skip
    assert inhibited and all(a["status"]["inhibitedBy"] for a in inhibited)
    lower = r":rotating_light: \*FundingRate(Warning|Critical)\* \(\w+\) Funding on binance BTCUSDT "
    sent_before = [t for t in stack.slack.texts() if re.search(lower, t)]
    time.sleep(3)  # more than one group_interval
    assert sent_before, "the lower levels fired (and were sent) on the way up"
    assert [t for t in stack.slack.texts() if re.search(lower, t)] == sent_before

    stack.sim_post("binance", "/_sim/scenario", {"name": "calm"})
    wait_for(
        lambda: not _firing(stack, 'alertname=~"FundingRate.*",exchange="binance",instrument="BTCUSDT"'),
        90,
        interval=1.0,
        what="the funding alerts to resolve in Prometheus",
    )
    resolved = wait_for(
        lambda: _slack_with(stack, ":white_check_mark: RESOLVED *FundingRateEmergency*", "binance BTCUSDT"),
        30,
        what="the resolved notification in Slack (send_resolved)",
    )
    assert "*Value (last):*" in resolved[0]


def test_curve_dislocation_fires_futures_basis_extreme(stack: Stack) -> None:
    """The simulator pushes OKX's dated futures off the curve (+25 %/yr of carry); the calm curve
    elsewhere stays within the 10 %/yr threshold."""
    assert stack.sim_post("okx", "/_sim/scenario", {"name": "curve_dislocation", "seconds": 120})["ok"]
    try:
        firing = wait_for(
            lambda: _firing(stack, 'alertname="FuturesBasisExtreme",exchange="okx"'),
            60,
            what="FuturesBasisExtreme for okx's dated futures",
        )
        labels = firing[0]["metric"]
        assert labels["severity"] == "warning" and labels["expiry"] and labels["instrument"].startswith(("BTC", "ETH"))
        assert not _firing(stack, 'alertname="FuturesBasisExtreme",exchange!="okx"')
    finally:
        stack.sim_post("okx", "/_sim/scenario", {"name": "calm"})


def _dashboards() -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in (json.loads(p.read_text()) for p in sorted(DASH_DIR.glob("*.json")))}


def _panel_queries(values: dict[str, str]) -> list[tuple[str, str, str, str]]:
    out = []
    for uid, d in _dashboards().items():
        for panel, target in panel_targets(d):
            out.append((uid, panel["title"], target["refId"], substitute(target["expr"], values, RATE_INTERVAL)))
    return out


# Runs after the funding spike: the sidecar's precision/recall series need a prediction >= 0.7 and an
# event, which the spike and its liquidations bring about sooner than a calm market.
@pytest.mark.parametrize(
    "values",
    [
        {"exchange": ".*", "base": ".*", "instrument": ".*"},  # "All", how the dashboards open
        {"exchange": "binance", "base": "BTC", "instrument": "BTCUSDT"},  # one selection (the position's market)
    ],
    ids=["all", "binance-BTC-BTCUSDT"],
)
def test_every_panel_query_returns_series(stack: Stack, values: dict[str, str]) -> None:
    pending = {(u, t, r): e for u, t, r, e in _panel_queries(values)}

    def all_answered() -> bool:
        for key in list(pending):
            if query(stack.prometheus, pending[key]):
                del pending[key]
        return not pending

    try:
        wait_for(all_answered, 90, interval=1.0, what="every panel query to return a series")
    except TimeoutError:
        empty = "\n".join(f"  {u} / {t} [{r}]: {e}" for (u, t, r), e in sorted(pending.items()))
        pytest.fail(f"panel queries without any series:\n{empty}")


def test_metrics_used_exist_in_the_real_exposition(stack: Stack) -> None:
    used: set[str] = set()
    for _, _, _, expr in _panel_queries({"exchange": ".*", "base": ".*", "instrument": ".*"}):
        used |= metric_names(expr)
    for p in (ROOT / "prometheus" / "rules").glob("*.yml"):
        for g in yaml.safe_load(p.read_text())["groups"]:
            for r in g["rules"]:
                used |= metric_names(r["expr"])
    used = {n for n in used if n.startswith("fr_") and ":" not in n}  # recording rules are checked elsewhere

    def missing() -> set[str]:
        names: set[str] = set()
        hist: set[str] = set()
        for url in (stack.exporter, stack.sidecar):
            with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                n, h = exposition_metrics(resp.read().decode())
            names |= n
            hist |= h
        return {m for m in used if m not in names and base_metric(m, hist) not in names}

    try:
        wait_for(lambda: not missing(), 30, interval=1.0, what="metrics in the exposition")
    except TimeoutError:
        pytest.fail(f"used by rules or dashboards but not exposed by the exporter or sidecar: {sorted(missing())}")


def test_every_exposed_series_is_documented(stack: Stack) -> None:
    """What users see on /metrics is what the docs list (docs/metrics.md, docs/sidecar.md)."""
    docs = (ROOT / "docs" / "metrics.md").read_text() + (ROOT / "docs" / "sidecar.md").read_text()
    exposed: set[str] = set()
    for url in (stack.exporter, stack.sidecar):
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            names, hist = exposition_metrics(resp.read().decode())
        exposed |= {n for n in names if base_metric(n, hist) not in hist}  # a histogram's family, not _bucket
        exposed |= hist
    assert {"fr_up", "fr_funding_zscore", "fr_liq_gap_pct", "fr_ai_risk_probability"} <= exposed
    undocumented = sorted(n for n in exposed if f"`{n}`" not in docs)
    assert not undocumented, f"exposed but not in docs/metrics.md or docs/sidecar.md: {undocumented}"


@needs_tool("promtool", package="prometheus")
def test_promtool_accepts_the_real_scrapes_with_positions_and_ai(stack: Stack) -> None:
    """promtool check metrics on what the exporter (positions included) and the sidecar really serve.
    Only the contract's fixed names with their unit in the name (_bp, _pct) may draw a unit lint."""
    for url in (stack.exporter, stack.sidecar):
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            body = resp.read()
        assert b"fr_" in body
        proc = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
        problems = [ln for ln in (proc.stdout + proc.stderr).decode().splitlines() if ln.strip()]
        # a deprecated alias keeps its old counter-style name one release (the reason it was renamed)
        aliases = {f.name for f in catalog.FAMILIES.values() if f.deprecated_by}
        real = [
            p
            for p in problems
            if not p.split()[0].endswith(("_bp", "_pct", "_days_to_expiry"))
            and not (p.split()[0] in aliases and "_total" in p)
        ]
        assert not real, f"{url}: {problems}"


def test_exchange_down_fires_and_inhibits_its_dependents(stack: Stack) -> None:
    stack.sim_post("okx", "/_sim/stop")
    try:
        wait_for(lambda: _firing(stack, 'alertname="ExchangeStreamDown",exchange="okx"'), 45,
                 what="ExchangeStreamDown for okx")  # fmt: skip
        texts = wait_for(lambda: _slack_with(stack, "*ExchangeStreamDown* (critical)", "okx"), 30,
                         what="ExchangeStreamDown in Slack")  # fmt: skip
        assert "No live market data from okx." in texts[0]

        def dependent() -> list[dict[str, Any]]:
            return [
                a for a in am_alerts(stack.alertmanager)
                if a["labels"]["alertname"] == "ExchangeStreamStale" and a["labels"].get("exchange") == "okx"
            ]  # fmt: skip

        stale = wait_for(dependent, 45, what="ExchangeStreamStale for okx reaching Alertmanager")
        assert _firing(stack, 'alertname="ExchangeStreamStale",exchange="okx"')
        assert all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in stale), stale
        time.sleep(3)  # more than one group_interval: an un-inhibited alert would have been sent by now
        assert not [t for t in stack.slack.texts() if "*ExchangeStreamStale*" in t and "okx" in t]
        # the other exchanges are unaffected
        assert not _firing(stack, 'alertname="ExchangeStreamDown",exchange!="okx"')
    finally:
        stack.sim_post("okx", "/_sim/start")
