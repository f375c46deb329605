"""Grafana dashboards and provisioning: generated in sync, linted (a re-implementation of the
dashboard-linter rules that matter), every query valid PromQL and built on contract metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import needs_tool

from exporter.metrics import catalog
from mixin import generate
from mixin.config import DEFAULT
from mixin.lint import base_metric, contract_metrics, metric_names, panel_targets, substitute
from mixin.rules import DASHBOARDS

ROOT = Path(__file__).resolve().parent.parent
DASH_DIR = ROOT / "grafana" / "dashboards"
CONTRACT = ROOT.parent / "shared" / "contract" / "metrics.md"
DASH_FILES = sorted(DASH_DIR.glob("*.json"))
UNITS = {
    "percentunit", "percent", "s", "none", "short", "currencyUSD", "suffix: bp", "cps", "mps", "reqps", "bytes",
    "dateTimeFromNow",
}  # fmt: skip


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _all() -> dict[str, dict[str, Any]]:
    return {p.name: _load(p) for p in DASH_FILES}


def test_committed_dashboards_match_the_generator(tmp_path: Path) -> None:
    generate.write(tmp_path)
    produced = {p.name for p in (tmp_path / "grafana" / "dashboards").glob("*.json")}
    assert produced == {p.name for p in DASH_FILES}
    for name in produced:
        assert (tmp_path / "grafana" / "dashboards" / name).read_text() == (DASH_DIR / name).read_text(), (
            f"{name} is stale: run python -m mixin.generate"
        )


def test_five_dashboards_with_stable_unique_uids() -> None:
    dashes = _all()
    uids = [d["uid"] for d in dashes.values()]
    assert sorted(uids) == sorted(uid for uid, _ in DASHBOARDS.values())
    assert len(set(uids)) == len(uids) and all(8 <= len(u) <= 40 for u in uids)
    titles = [d["title"] for d in dashes.values()]
    assert len(set(titles)) == len(titles)
    for name, d in dashes.items():
        assert name == f"{d['uid']}.json"
        assert d["id"] is None and d["schemaVersion"] == DEFAULT.grafana_schema_version
        assert DEFAULT.dashboard_tag in d["tags"]


def test_variables() -> None:
    for name, d in _all().items():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        ds = variables["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus" and ds["label"] == "Data Source", name
        assert [v for v in d["templating"]["list"] if v["type"] == "datasource"] == [ds]
        for var in ("exchange", "base", "instrument"):
            v = variables[var]
            assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}", (name, var)
            assert v["multi"] and v["includeAll"] and v["query"].startswith("label_values("), (name, var)
            assert f", {var})" in v["query"]


def test_panels_lint() -> None:
    """dashboard-linter's panel-datasource, panel-units, panel-title-description, target-rate-interval,
    template-label-promql (multi-value variables used with =~) rules."""
    for name, d in _all().items():
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), name
        for panel in d["panels"]:
            where = f"{name}: {panel['title']!r}"
            assert panel["title"] and panel["description"], where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit in UNITS, f"{where}: unit {unit!r}"
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, where
            assert panel["targets"], where
        for panel, target in panel_targets(d):
            where = f"{name}: {panel['title']!r}"
            assert target["datasource"]["uid"] == "${datasource}", where
            expr = target["expr"]
            for fn in re.finditer(r"\b(rate|irate|increase)\(", expr):
                window = re.match(r"[^\[]*\[([^\]]+)\]", expr[fn.end() :])
                assert window and window.group(1) == "$__rate_interval", (
                    f"{where}: {fn.group(1)} without $__rate_interval"
                )
            for var in ("exchange", "base", "instrument"):
                assert f'="${var}"' not in expr and f'!="${var}"' not in expr, f"{where}: use =~ for ${var}"
            assert target.get("legendFormat"), where


def test_required_panels() -> None:
    titles = {d["uid"]: " | ".join(p["title"].lower() for p in d["panels"]) for d in _all().values()}
    want = {
        "fr-funding-overview": ["heat map", "z-score", "edge", "open-interest-weighted", "spread", "next settlement"],
        "fr-positions-risk": ["liquidation", "hit probability", "adl rank", "realised vs projected", "funding pnl"],
        "fr-liquidations": ["by exchange and side"],
        "fr-ai-risk": ["probability", "confidence", "level", "latency", "cost", "scores"],
        "fr-exporter-health": ["up", "messages", "age", "reconnects", "parse errors", "rest errors"],
    }
    for uid, words in want.items():
        for w in words:
            assert w in titles[uid], f"{uid}: no panel about {w!r}"


def test_gap_panel_draws_the_alert_thresholds() -> None:
    d = _load(DASH_DIR / "fr-positions-risk.json")
    panel = next(p for p in d["panels"] if "fr_liq_gap_pct" in p["targets"][0]["expr"])
    steps = [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, DEFAULT.thresholds.liq_gap_critical_pct, DEFAULT.thresholds.liq_gap_warning_pct]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    assert panel["fieldConfig"]["defaults"]["unit"] == "percent"


def test_funding_panels_colour_by_the_alert_levels() -> None:
    t = DEFAULT.thresholds
    d = _load(DASH_DIR / "fr-funding-overview.json")
    heat = next(p for p in d["panels"] if p["type"] == "state-timeline")
    steps = heat["fieldConfig"]["defaults"]["thresholds"]["steps"]

    def colour(v: float) -> str:
        out = steps[0]["color"]
        for s in steps[1:]:
            if v >= s["value"]:
                out = s["color"]
        return out

    assert [colour(v) for v in (0.0, 0.0004, -0.0004)] == ["green"] * 3
    for sign in (1, -1):
        assert colour(sign * (t.funding_warning + 1e-6)) == "yellow"
        assert colour(sign * (t.funding_critical + 1e-6)) == "orange"
        assert colour(sign * (t.funding_emergency + 1e-6)) == "red"


def _all_exprs() -> list[tuple[str, str]]:
    return [(f"{n}: {p['title']}", t["expr"]) for n, d in _all().items() for p, t in panel_targets(d)]


@needs_tool("promtool", package="prometheus")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    values = {"exchange": ".*", "base": ".*", "instrument": ".*", "datasource": "prometheus"}
    rules = [{"record": f"dash:expr_{i}", "expr": substitute(e, values)} for i, (_, e) in enumerate(_all_exprs())]
    path = tmp_path / "dash.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_metric_is_in_the_contract_or_recorded() -> None:
    if not CONTRACT.is_file():
        pytest.skip(f"metric contract not found at {CONTRACT}")
    names, histograms = contract_metrics(CONTRACT)
    # issue 11 fixes the term-structure names itself (the shared contract predates them)
    names = set(names) | {d.name for d in catalog.in_section("term")}
    # issue 14 draws every position family; the contract predates these (instant stress, capital,
    # notional): they are declared in the catalog, which the exposition tests hold the exporter to
    names |= {d.name for d in catalog.in_section("positions")}
    recorded = {
        r["record"]
        for p in (ROOT / "prometheus" / "rules").glob("*.yml")
        for g in yaml.safe_load(p.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }
    used = set()
    for where, expr in _all_exprs():
        for name in metric_names(expr):
            used.add(name)
            if name in recorded or name == "up" or name.startswith("process_"):  # the contract's `process_*`
                continue
            assert base_metric(name, histograms) in names, f"{where}: {name} is not in the metric contract"
    for d in _all().values():
        for v in d["templating"]["list"]:
            for name in metric_names(v.get("query", "").removeprefix("label_values(")):
                assert name in names or name in {"prometheus", "exchange", "base", "instrument"}, name
    assert len(used) > 30  # the parser saw the queries


def test_provisioning() -> None:
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    (prom,) = ds["datasources"]
    assert prom["type"] == "prometheus" and prom["uid"] == DEFAULT.datasource_uid and prom["isDefault"]
    assert prom["url"] == "http://prometheus:9090"
    scrape = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())["global"]["scrape_interval"]
    assert prom["jsonData"]["timeInterval"] == scrape == DEFAULT.scrape_interval
    prov = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/fr-exporter.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["folder"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# Families no panel draws, each with the reason (issue 14: every series on a dashboard where a user
# would look for it). A family drawn later, or a new one drawn nowhere and not listed, fails.
UNDRAWN = {
    "fr_rest_poll_budget_ratio": "the split of the request budget (docs/rate-limits.md) is not in the shared metric "
    "contract, which dashboards draw from; it changes only with the instrument count and is logged at start",
    "fr_rest_poll_period_seconds": "as fr_rest_poll_budget_ratio: not in the shared contract; a per-poller constant "
    "between instrument-list changes, logged at start with the split",
    "fr_funding_cap_ratio": "Binance publishes caps only for symbols with adjusted ones (fundingInfo), so a "
    "panel is empty for most selections; the cap is in the funding alerts' context and /api/state",
    "fr_funding_floor_ratio": "as fr_funding_cap_ratio: published for a few symbols only, so mostly empty",
    # issue 10's shard families (landed after this list was made)
    "fr_shard_info": "an info series (which shard this exporter is) for joins and the shard alerts",
    "fr_instruments_listed": "the shard split's bookkeeping, checked by ShardMissing/ShardOverlap alerts",
    "fr_instruments_followed": "the shard split's bookkeeping, checked by ShardMissing/ShardOverlap alerts",
    "fr_index_price": "the premium panel draws (mark - index) / index; the bare index is for ad-hoc queries",
    "fr_future_mark_price": "the term-structure panels draw it as basis against the index (fr_basis_*)",
    "fr_future_expiry_timestamp_seconds": "drawn as days to expiry (fr_future_days_to_expiry)",
    "fr_future_estimated_settle_price": "present only in the last hour before a Binance delivery, so a panel "
    "would be empty nearly always (the end-to-end panel test refuses empty panels)",
    "fr_stream_connected": "fr_up (drawn) is the data-flowing signal; connected-but-silent shows in message age",
    "fr_stream_last_parsed_timestamp_seconds": "the message-age panel draws the same freshness per stream",
    "fr_parse_errors_by_reason_total": "the parse-errors panel draws the total; the reason split is for diagnosis",
    "fr_stream_resyncs_total": "diagnostic counter: reconnects (drawn) show the same trouble",
    "fr_stream_short_sessions_total": "diagnostic counter: reconnects (drawn) show the same trouble",
    "fr_stream_subscription_errors_total": "diagnostic counter: a rejected subscription shows as fr_up 0 (drawn)",
    "fr_rest_last_success_timestamp_seconds": "the REST-errors panel draws the failures; this is for ad-hoc age",
    "fr_unknown_instrument_updates_total": "diagnostic counter (instrument list out of date), logged too",
    "fr_render_errors_total": "diagnostic counter: one bad row dropped at render, logged with the row",
    "fr_funding_pnl_usd_total": "deprecated alias of fr_funding_pnl_usd (drawn), removed next release",
    "fr_funding_received_usd_total": "the halves of fr_funding_pnl_usd (drawn), for rate() in ad-hoc queries",
    "fr_funding_paid_usd_total": "the halves of fr_funding_pnl_usd (drawn), for rate() in ad-hoc queries",
    "fr_position_funding_accruals_total": "a count of settlements accrued: its effect is the funding PnL panel",
    "fr_position_size": "size in base coin: the notional panel draws it at the mark",
    "fr_position_config_errors_total": "a configuration error is logged and shown by check-config at start",
    "fr_position_account_reads_total": "diagnostic counter of the signed reads (failures logged)",
    "fr_position_account_read_failures_total": "diagnostic counter of the signed reads (failures logged)",
    "fr_ai_estimated_liquidation_volume_usd": "the sidecar's secondary estimate; the AI panels draw probability",
    # issue 15's new sidecar families (landed after this list was made): counts and diagram inputs
    "fr_ai_answer_truncations_total": "diagnostic counter of the sidecar's over-long answers (logged too)",
    "fr_ai_base_rate_ratio": "the climatology behind the skill score; the AI dashboard draws the skill itself",
    "fr_ai_calibration_fitted_predictions": "how many predictions the recalibration was fitted on: a diagnostic",
    "fr_ai_reliability_mean_probability_ratio": "a reliability-diagram input per probability bin: a table, not a panel",
    "fr_ai_reliability_observed_ratio": "a reliability-diagram input per probability bin: a table, not a panel",
    "fr_ai_reliability_predictions": "a reliability-diagram count per probability bin: a table, not a panel",
    "fr_ai_skill_predictions": "the sample size behind the skill series (drawn); a diagnostic",
    "fr_ai_state_reads_total": "diagnostic counter of the sidecar's /api/state reads",
    "fr_ai_slack_messages_total": "diagnostic counter; Slack delivery is tested in the stack tests",
    # issue 12's recording counters: recording is off by default, so a panel would be empty for most users
    "fr_recording_frames_total": "recording is off by default (a panel would be empty); bench/ and tests check it",
    "fr_recording_bytes_total": "recording is off by default (a panel would be empty); bench/ and tests check it",
    "fr_recording_dropped_total": "recording is off by default (a panel would be empty); drops are logged too",
}


def _drawn_names() -> set[str]:
    used = {name for _, expr in _all_exprs() for name in metric_names(expr)}
    for p in (ROOT / "prometheus" / "rules").glob("*.yml"):
        for g in yaml.safe_load(p.read_text())["groups"]:
            for r in g["rules"]:
                if "record" in r and r["record"] in used:  # a drawn recording rule draws its inputs
                    used |= set(metric_names(r["expr"]))
    return used


def test_every_exported_family_is_drawn_or_listed_with_a_reason() -> None:
    used = _drawn_names()
    undrawn = {f.name for f in catalog.FAMILIES.values() if not set(f.sample_names()) & used}
    missing = sorted(undrawn - set(UNDRAWN))
    assert not missing, f"exported but in no panel query and not listed in UNDRAWN with a reason: {missing}"
    drawn_now = sorted(set(UNDRAWN) - undrawn)
    assert not drawn_now, f"listed as undrawn but drawn (or gone): take them off UNDRAWN: {drawn_now}"
    assert all(len(reason) > 20 for reason in UNDRAWN.values())


def test_the_coverage_check_sees_an_undrawn_family() -> None:
    fam = catalog._def("fr_issue14_probe_ratio", "gauge", "positions", (), "ratio", "h", "d")
    try:
        assert not set(fam.sample_names()) & _drawn_names()
    finally:
        catalog.FAMILIES.pop("fr_issue14_probe_ratio", None)


def test_positions_dashboard_shows_negative_liquidation_gaps() -> None:
    d = _load(DASH_DIR / "fr-positions-risk.json")
    panel = next(p for p in d["panels"] if "fr_liq_gap_pct" in p["targets"][0]["expr"])
    assert "min" not in panel["fieldConfig"]["defaults"]  # min: 0 hid a position past its liquidation price
