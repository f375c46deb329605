"""Prometheus rules: generated and committed in sync, valid for promtool, unit-tested for every alert."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import needs_tool

from exporter.metrics import catalog
from mixin import generate
from mixin.config import DEFAULT, MixinConfig, fast_variant
from mixin.lint import base_metric, contract_metrics, metric_names, runbook_anchors
from mixin.rules import DASHBOARDS, alerts_file

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
CONTRACT = ROOT.parent / "shared" / "contract" / "metrics.md"
SEVERITIES = {"info", "warning", "critical", "emergency"}

# The alerts the product promises (issue 4); the rule files must define exactly these.
REQUIRED_ALERTS = {
    "FundingRateWarning", "FundingRateCritical", "FundingRateEmergency", "FundingZScoreExtreme",
    "EdgeTurnedNegative", "NetApyNegative", "LiquidationGapLow", "LiquidationHitProbabilityHigh", "AdlRankHigh",
    "LiquidationSpike", "FundingSpreadWide", "AiRiskHigh", "AiSidecarStale", "AiSidecarFailing", "AiModelNoSkill",
    "ExporterDown", "ExchangeStreamDown", "ExchangeStreamStale",
    "FuturesBasisExtreme", "ImpliedFundingDivergence", "FutureRollWindow",  # issue 11: term structure
    "ShardOverlap", "ShardMissing",  # issue 10: shards
    "MarginBufferLow", "NetApyRealizedNegative", "CarryEdgeAboveEntry",  # issue 14: carry risk checklist
    "FeedCompletenessLow", "FeedLagHigh",  # issue 12
    "HistoricalStressNotSurvived",  # issue 14: historical stress
    "OpenInterestSurge", "PriceVolatilityHigh", "LongShortImbalance", "FundingAccelerating",  # issue 14: factors
}  # fmt: skip

promtool = shutil.which("promtool")
needs_promtool = needs_tool("promtool", package="prometheus")


@functools.cache
def _load(path: Path) -> Any:
    """A generated YAML or JSON file, parsed once per session with libyaml (read-only: copy to change)."""
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def _rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in _load(path)["groups"] for r in g["rules"]]


def _all_alert_rules() -> list[dict[str, Any]]:
    return [r for p in RULE_FILES for r in _rules(p) if "alert" in r]


def test_committed_files_match_the_generator(tmp_path: Path) -> None:
    generate.write(tmp_path)
    produced = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert produced, "generator wrote nothing"
    stale = [str(rel) for rel in produced if (tmp_path / rel).read_text() != (ROOT / rel).read_text()]
    assert not stale, f"committed files differ from `python -m mixin.generate`: {stale}"
    committed = {p.relative_to(ROOT) for d in ("prometheus/rules", "prometheus/tests") for p in (ROOT / d).glob("*")}
    assert committed <= set(produced), f"files not produced by the generator: {committed - set(produced)}"


def test_the_required_alerts_exist() -> None:
    names = {r["alert"] for r in _all_alert_rules()}
    assert names == REQUIRED_ALERTS


@needs_promtool
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_check_config() -> None:
    res = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=PROM, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(RULE_FILES)} rule files found" in res.stdout


@needs_promtool
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    res = subprocess.run([promtool, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_unit_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests really compare rendered annotations (a wrong value must fail)."""
    doc = copy.deepcopy(_load(PROM / "tests" / "fr-exporter.test.yml"))
    # only the test groups that check the value (promtool's time is the number of groups it evaluates)
    doc["tests"] = [g for g in doc["tests"] if "100k USD/s" in yaml.safe_dump(g)]
    assert doc["tests"]
    (tmp_path / "tests").mkdir()
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    text = yaml.safe_dump(doc, sort_keys=False)
    for name, body in (("good.yml", text), ("bad.yml", text.replace("100k USD/s", "99k USD/s"))):
        (tmp_path / "tests" / name).write_text(body)
    good = subprocess.run([promtool, "test", "rules", "good.yml"], cwd=tmp_path / "tests", capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr  # the groups kept pass as they are
    res = subprocess.run([promtool, "test", "rules", "bad.yml"], cwd=tmp_path / "tests", capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode != 0
    assert "LiquidationSpike" in res.stdout + res.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for group in _load(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {r["alert"] for r in _all_alert_rules()}
    assert names - fires == set(), "alerts without a test where they fire"
    assert names - silent == set(), "alerts without a test where they must not fire"
    # every severity level of a multi-level alert is expected somewhere
    levels = {(r["alert"], r["labels"]["severity"]) for r in _all_alert_rules()}
    expected = {
        (case["alertname"], a["exp_labels"]["severity"])
        for path in TEST_FILES
        for group in _load(path)["tests"]
        for case in group.get("alert_rule_test", [])
        for a in case.get("exp_alerts") or []
    }  # fmt: skip
    assert levels - expected == set()


def test_labels_and_annotations_of_every_alert() -> None:
    anchors = runbook_anchors(ROOT / "docs" / "runbook.md")
    uids = {uid for uid, _ in DASHBOARDS.values()}
    for rule in _all_alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["labels"]["component"] in {"exporter", "sidecar", "scrape"}, name
        ann = rule["annotations"]
        assert set(ann) == {"summary", "description", "value", "runbook_url", "dashboard_url"}, name
        assert "$value" in ann["description"] and "$value" in ann["value"], name
        assert (
            "humanize" in ann["description"]
            or name in {"ExporterDown", "ExchangeStreamDown", "AdlRankHigh"}
            or ("printf" in ann["description"])
        ), f"{name}: value not humanized"
        url = ann["runbook_url"]
        assert url.startswith(DEFAULT.runbook_base_url + "#"), name
        assert url.split("#", 1)[1] == name.lower() and name.lower() in anchors, f"{name}: no runbook section"
        dash = ann["dashboard_url"]
        m = re.fullmatch(re.escape(DEFAULT.grafana_url) + r"/d/([a-z0-9-]+)(\?.*)?", dash)
        assert m and m.group(1) in uids, f"{name}: dashboard_url {dash}"
        for var, label in re.findall(r"var-([a-z_]+)=\{\{ \$labels\.([a-z_]+) \}\}", m.group(2) or ""):
            assert var == label, f"{name}: variable {var} filled from label {label}"
        assert rule["for"], name


def test_dashboard_url_variables_exist_on_the_dashboard() -> None:
    dashboards = {}
    for path in (ROOT / "grafana" / "dashboards").glob("*.json"):
        d = _load(path)
        dashboards[d["uid"]] = {v["name"] for v in d["templating"]["list"]}
    for rule in _all_alert_rules():
        m = re.search(r"/d/([a-z0-9-]+)(?:\?(.*))?$", rule["annotations"]["dashboard_url"])
        assert m
        for var in re.findall(r"var-([a-z_]+)=", m.group(2) or ""):
            assert var in dashboards[m.group(1)], f"{rule['alert']}: {var} not a variable of {m.group(1)}"


def test_thresholds_come_from_one_config() -> None:
    changed = replace(DEFAULT, thresholds=replace(DEFAULT.thresholds, funding_warning=0.0007, liq_gap_warning_pct=12))
    rules = {(r["alert"], r["labels"]["severity"]): r for g in alerts_file(changed)["groups"] for r in g["rules"]}
    w = rules[("FundingRateWarning", "warning")]
    assert "> 0.0007" in w["expr"] and "< -0.0007" in w["expr"] and "0.07 %" in w["annotations"]["description"]
    assert rules[("LiquidationGapLow", "warning")]["expr"] == "fr_liq_gap_pct < 12"
    dash = generate.render(changed, with_tests=False)["grafana/dashboards/fr-positions-risk.json"]
    assert '"value": 12' in dash  # the threshold line on the gap panel moves too


def test_shipped_thresholds() -> None:
    t = DEFAULT.thresholds
    assert (t.funding_warning, t.funding_critical, t.funding_emergency) == (0.0005, 0.0008, 0.0012)
    assert (t.zscore, t.liq_gap_warning_pct, t.liq_gap_critical_pct, t.adl_rank) == (2.5, 10, 5, 3)
    assert t.ai_risk_probability == 0.7 and t.edge_min_bp == 0 and t.net_apy_min_pct == 0
    by_name = {r["alert"]: r for r in _all_alert_rules()}
    assert by_name["AdlRankHigh"]["expr"] == "fr_adl_rank >= 3"
    assert by_name["NetApyNegative"]["expr"] == 'fr_net_apy_pct{basis="projected"} < 0'
    assert by_name["ExporterDown"]["expr"] == 'up{job="fr-exporter"} == 0 or absent(up{job="fr-exporter"})'


def _shape(cfg: MixinConfig) -> dict[str, Any]:
    out = {}
    for g in alerts_file(cfg)["groups"]:
        for r in g["rules"]:
            key = (r["alert"], r["labels"]["severity"])
            out[key] = (re.sub(r"[0-9.]+", "N", r["expr"]), r["labels"], sorted(r["annotations"]))
    return out


def test_fast_variant_changes_only_durations_and_limits() -> None:
    fast = fast_variant()
    assert _shape(fast) == _shape(DEFAULT)
    fast_rules = [r for g in alerts_file(fast)["groups"] for r in g["rules"]]
    assert all(r["for"] in {"2s", "4s"} for r in fast_rules)


def test_rule_metrics_are_in_the_contract() -> None:
    if not CONTRACT.is_file():
        pytest.skip(f"metric contract not found at {CONTRACT}")
    names, histograms = contract_metrics(CONTRACT)
    # issue 11 fixes the term-structure names itself (the shared contract predates them)
    names = set(names) | {d.name for d in catalog.in_section("term")}
    recorded = {r["record"] for p in RULE_FILES for r in _rules(p) if "record" in r}
    assert recorded and all(n.startswith("fr") and ":" in n for n in recorded)
    for p in RULE_FILES:
        for r in _rules(p):
            for name in metric_names(r["expr"]):
                if name in recorded or name == "up":
                    continue
                assert base_metric(name, histograms) in names, f"{p.name}: {name} is not in the metric contract"


@needs_promtool
def test_generate_cli_writes_the_fast_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--fast", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    rules = sorted((tmp_path / "prometheus" / "rules").glob("*.yml"))
    assert [str(p) for p in rules] == sorted(p for p in printed if p.endswith(".yml") and "/rules/" in p)
    assert not (tmp_path / "prometheus" / "tests").exists()  # the promtool tests assume the shipped durations
    res = subprocess.run([promtool, "check", "rules", *map(str, rules)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    fors = {r["for"] for p in rules for r in _rules(p) if "alert" in r}
    assert fors == {"2s", "4s"}


def test_runbook_has_one_section_per_alert() -> None:
    sections = runbook_anchors(ROOT / "docs" / "runbook.md")
    assert sections == {name.lower() for name in REQUIRED_ALERTS}
