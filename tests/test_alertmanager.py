"""Alertmanager: amtool-valid config, routing by severity, and a real Alertmanager 0.25 on loopback
proving inhibition and the Slack message (summary, value, runbook and dashboard links, resolved)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import needs_tool
from support.fakes import FakeSlack

from mixin.stack import alertmanager_config, am_alerts, post_alerts, run_alertmanager, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "prometheus"
AM_FILE = PROM / "alertmanager.yml"
amtool = shutil.which("amtool")
needs_amtool = needs_tool("amtool", package="prometheus-alertmanager")
needs_am = needs_tool("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")


def _config() -> dict[str, Any]:
    return yaml.safe_load(AM_FILE.read_text())


def _rule_labels() -> dict[tuple[str, str], dict[str, str]]:
    out = {}
    for path in (PROM / "rules").glob("*.yml"):
        for g in yaml.safe_load(path.read_text())["groups"]:
            for r in g["rules"]:
                if "alert" in r:
                    out[(r["alert"], r["labels"]["severity"])] = {"alertname": r["alert"], **r["labels"]}
    return out


@needs_amtool
def test_amtool_check_config() -> None:
    res = subprocess.run([amtool, "check-config", str(AM_FILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and "1 templates" in res.stdout


@needs_amtool
@pytest.mark.parametrize(
    ("severity", "receiver"),
    [("emergency", "slack-emergency"), ("critical", "slack-critical"), ("warning", "slack-warning"),
     ("info", "slack-info")],
)  # fmt: skip
def test_routing_by_severity(severity: str, receiver: str) -> None:
    res = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={AM_FILE}", f"--verify.receivers={receiver}",
         f"severity={severity}", "alertname=X", "exchange=binance", "base=BTC"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == receiver


@needs_amtool
def test_carry_entry_goes_to_its_own_receiver_whatever_its_severity() -> None:
    for severity in ("info", "warning"):
        res = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={AM_FILE}", f"severity={severity}",
             "alertname=CarryEdgeAboveEntry", "exchange=binance", "base=BTC"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.stdout.strip() == "slack-carry", res.stdout + res.stderr


def test_every_rule_severity_has_a_route() -> None:
    routed = {m.split("=")[1].strip('"') for r in _config()["route"]["routes"] for m in r["matchers"]}
    assert {sev for _, sev in _rule_labels()} <= routed


def test_slack_receivers_and_grouping() -> None:
    cfg = _config()
    assert cfg["route"]["group_by"] == ["base", "exchange"]
    assert "slack_api_url" not in cfg.get("global", {})
    files = []
    for receiver in cfg["receivers"]:
        assert receiver["slack_configs"], receiver["name"]
        for sc in receiver["slack_configs"]:
            assert sc["send_resolved"] is True
            # each receiver its own webhook (the compose secret's mount point): a Slack app webhook
            # ignores `channel`, so one webhook with four channels lands everything in one channel
            severity = receiver["name"].removeprefix("slack-")
            assert sc["api_url_file"] == f"/run/secrets/slack_webhook_url_{severity}"
            assert "channel" not in sc and "api_url" not in sc
            files.append(sc["api_url_file"])
            assert 'template "fr.slack.text"' in sc["text"] and 'template "fr.slack.title"' in sc["title"]
    assert len(set(files)) == len(files) == 5  # four severities and the carry-entry channel
    for pattern in cfg["templates"]:
        assert list(PROM.glob(pattern)), pattern
    for f in files:  # each has a template the README points to
        assert (ROOT / "secrets" / (Path(f).name + ".example")).is_file(), f


def _alert(key: tuple[str, str], labels: dict[str, str], value: str = "1", ends: dt.datetime | None = None) -> dict:
    base = _rule_labels()[key]
    now = dt.datetime.now(dt.UTC)
    rule_ann = {
        "summary": f"summary of {key[0]}",
        "description": f"{key[0]} is {value}",
        "value": value,
        "runbook_url": f"https://example.invalid/runbook.md#{key[0].lower()}",
        "dashboard_url": "http://grafana.invalid/d/fr-funding-overview?var-exchange=binance",
    }
    out: dict[str, Any] = {
        "labels": {**base, **labels},
        "annotations": rule_ann,
        "startsAt": (now - dt.timedelta(minutes=1)).isoformat(),
        "generatorURL": "http://prometheus.invalid/graph",
    }
    out["endsAt"] = (ends or now + dt.timedelta(minutes=10)).isoformat()
    return out


def _status(am: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("exchange", "")): a["status"]
        for a in am_alerts(am)
    }


BTC = {"exchange": "binance", "base": "BTC", "instrument": "BTCUSDT", "job": "fr-exporter"}
ETH_OKX = {"exchange": "okx", "base": "ETH", "instrument": "ETH-USDT-SWAP", "job": "fr-exporter"}


@needs_am
def test_inhibition_levels_and_exchange_down(tmp_path: Path) -> None:
    with FakeSlack() as slack, run_alertmanager(tmp_path, alertmanager_config(tmp_path, slack.url)) as am:
        sources = [
            _alert(("FundingRateCritical", "critical"), BTC, "0.09%"),
            _alert(("ExchangeStreamDown", "critical"), {"exchange": "okx", "job": "fr-exporter"}, "0"),
        ]
        post_alerts(am, sources)  # the sources fire first, as they do in Prometheus
        wait_for(lambda: len(_status(am)) == 2, 10, what="source alerts processed")
        time.sleep(0.5)
        post_alerts(
            am,
            [
                _alert(("FundingRateWarning", "warning"), BTC, "0.09%"),
                _alert(("FundingRateWarning", "warning"), ETH_OKX, "0.06%"),
                _alert(("ExchangeStreamStale", "warning"), {"exchange": "okx", "stream": "tickers"}, "3m"),
                _alert(("ExchangeStreamStale", "warning"), {"exchange": "bybit", "stream": "tickers"}, "3m"),
            ],
        )

        def settled() -> dict | None:
            st = _status(am)
            return st if len(st) == 6 and st[("FundingRateWarning", "warning", "binance")]["inhibitedBy"] else None

        st = wait_for(settled, 15, what="alerts processed")
        # the critical level silences the warning for the same instrument only
        assert st[("FundingRateWarning", "warning", "binance")]["state"] == "suppressed"
        assert st[("FundingRateCritical", "critical", "binance")]["state"] == "active"
        # the okx stream being down silences okx's funding and staleness alerts, not bybit's
        assert st[("FundingRateWarning", "warning", "okx")]["inhibitedBy"]
        assert st[("ExchangeStreamStale", "warning", "okx")]["inhibitedBy"]
        assert st[("ExchangeStreamStale", "warning", "bybit")]["state"] == "active"
        assert st[("ExchangeStreamDown", "critical", "okx")]["state"] == "active"

        texts = wait_for(lambda: len(slack.texts()) >= 3 and slack.texts(), 20, what="slack notifications")
        joined = "\n".join(texts)
        assert "FundingRateCritical" in joined and "ExchangeStreamDown" in joined and "bybit" in joined
        assert "FundingRateWarning" not in joined
        assert "okx tickers" not in joined and "ExchangeStreamStale* (warning) summary of ExchangeStreamStale" in joined


@needs_am
def test_exporter_down_silences_its_own_alerts_only(tmp_path: Path) -> None:
    """Two exporters: the one that is down has its alerts inhibited; the other's still go out."""
    a = {**BTC, "instance": "exporter-a:9466"}
    b = {**BTC, "instance": "exporter-b:9466"}
    with FakeSlack() as slack, run_alertmanager(tmp_path, alertmanager_config(tmp_path, slack.url)) as am:
        # the source fires first (as it does in Prometheus), then what depends on it arrives
        down = _alert(("ExporterDown", "critical"), {"job": "fr-exporter", "instance": "exporter-a:9466"}, "0")
        post_alerts(am, [down])
        wait_for(lambda: len(am_alerts(am)) == 1, 10, what="source alert processed")
        time.sleep(0.5)
        post_alerts(
            am,
            [
                _alert(("FundingRateEmergency", "emergency"), a, "0.2%"),
                _alert(("FundingRateEmergency", "emergency"), b, "0.3%"),
            ],
        )

        def by_instance() -> dict[tuple[str, str], dict[str, Any]] | None:
            got = {(x["labels"]["alertname"], x["labels"].get("instance", "")): x["status"] for x in am_alerts(am)}
            return got if len(got) == 3 else None

        st = wait_for(by_instance, 15, what="alerts processed")
        assert st[("FundingRateEmergency", "exporter-a:9466")]["inhibitedBy"]
        assert st[("FundingRateEmergency", "exporter-b:9466")]["state"] == "active"
        assert not st[("FundingRateEmergency", "exporter-b:9466")]["inhibitedBy"]
        assert st[("ExporterDown", "exporter-a:9466")]["state"] == "active"
        texts = wait_for(lambda: len(slack.texts()) >= 2 and slack.texts(), 20, what="slack notifications")
        joined = "\n".join(texts)
        assert "ExporterDown" in joined and "0.3%" in joined  # the healthy exporter's alert went out
        assert "0.2%" not in joined  # the down exporter's did not


@needs_am
def test_each_severity_posts_to_its_own_webhook(tmp_path: Path) -> None:
    with FakeSlack() as slack, run_alertmanager(tmp_path, alertmanager_config(tmp_path, slack.url)) as am:
        post_alerts(
            am,
            [
                _alert(("FundingRateEmergency", "emergency"), BTC, "0.2%"),
                _alert(("FundingRateCritical", "critical"), ETH_OKX, "0.09%"),
                _alert(("FundingRateWarning", "warning"), {**BTC, "base": "SOL", "instrument": "SOLUSDT"}, "0.06%"),
            ],
        )
        msgs = wait_for(lambda: len(slack.snapshot()) >= 3 and slack.snapshot(), 20, what="three notifications")
        by_path = {m["path"].rsplit("/", 1)[-1]: FakeSlack.text_of(m) for m in msgs}
        assert "FundingRateEmergency" in by_path["slack_webhook_url_emergency"]
        assert "FundingRateCritical" in by_path["slack_webhook_url_critical"]
        assert "FundingRateWarning" in by_path["slack_webhook_url_warning"]
        assert "slack_webhook_url_info" not in by_path


@needs_am
def test_slack_message_text_and_resolution(tmp_path: Path) -> None:
    with FakeSlack() as slack, run_alertmanager(tmp_path, alertmanager_config(tmp_path, slack.url)) as am:
        alert = _alert(("FundingRateEmergency", "emergency"), BTC, "0.13%")
        post_alerts(am, [alert])
        first = wait_for(lambda: slack.snapshot(), 20, what="firing notification")[0]
        payload = first["payload"]
        assert first["path"].endswith("/slack_webhook_url_emergency")  # the emergency channel's webhook
        assert "channel" not in payload
        att = payload["attachments"][0]
        assert att["title"] == "[FIRING:1] FundingRateEmergency BTC on binance"
        assert att["color"] == "danger"
        text = att["text"]
        assert text.startswith("<!channel> :rotating_light: *FundingRateEmergency* (emergency) summary of")
        assert "FundingRateEmergency is 0.13%" in text  # description
        assert "*Value:* 0.13% | *Exchange:* binance | *Instrument:* BTCUSDT" in text
        assert "<https://example.invalid/runbook.md#fundingrateemergency|:notebook: Runbook>" in text
        assert "<http://grafana.invalid/d/fr-funding-overview?var-exchange=binance|:bar_chart: Dashboard>" in text

        alert["endsAt"] = dt.datetime.now(dt.UTC).isoformat()
        post_alerts(am, [alert])
        msgs = wait_for(lambda: len(slack.snapshot()) >= 2 and slack.snapshot(), 20, what="resolved notification")
        resolved = msgs[-1]["payload"]["attachments"][0]
        assert resolved["title"] == "[RESOLVED] FundingRateEmergency BTC on binance"
        assert resolved["color"] == "good"
        assert ":white_check_mark: RESOLVED *FundingRateEmergency*" in resolved["text"]
        assert "*Value (last):* 0.13%" in resolved["text"]
