"""The Term structure dashboard's curve panel: one line per exchange for the selected base, the dated
futures at (days to expiry, annualised basis) and the perpetual at (0, annualised funding).

The panel's two queries run in promtool's PromQL engine on hand-written series; the expected points
are written out here. The panel's Grafana settings are checked against the xychart's current schema
(one series per frame, ``mapping: auto``) and the transformations that make one frame per exchange.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from support import needs_tool

from mixin.lint import substitute

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Curve: annualised basis against days to expiry"


def _panel() -> dict[str, Any]:
    d = json.loads((ROOT / "grafana" / "dashboards" / "fr-term-structure.json").read_text())
    assert d["uid"] == "fr-term-structure"
    (panel,) = [p for p in d["panels"] if p["title"] == TITLE]
    return panel


def test_curve_panel_is_one_line_per_exchange_for_each_base() -> None:
    p = _panel()
    assert p["type"] == "xychart" and p["datasource"]["uid"] == "${datasource}"
    assert p["repeat"] == "base"  # the curve per base: "All" draws one panel per base
    # the current xychart schema (an unversioned panel would be migrated from the old one)
    assert p["pluginVersion"].startswith("11.") and p["options"]["mapping"] == "auto"
    (series,) = p["options"]["series"]
    assert "frame" not in series  # auto: every frame is a series
    assert series["x"]["matcher"]["options"] == "Value #A" and series["y"]["matcher"]["options"] == "Value #B"
    assert p["fieldConfig"]["defaults"]["custom"]["show"] == "points+lines"
    assert p["fieldConfig"]["defaults"]["unit"] == "percentunit"
    x_unit = [o for o in p["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Value #A"]
    assert x_unit[0]["properties"] == [{"id": "unit", "value": "suffix: d"}]
    merge, sort, partition = p["transformations"]
    assert merge["id"] == "merge"
    assert sort == {"id": "sortBy", "options": {"sort": [{"field": "Value #A", "desc": False}]}}
    assert partition["id"] == "partitionByValues" and partition["options"]["fields"] == ["exchange"]
    assert [t["refId"] for t in p["targets"]] == ["A", "B"]
    assert all(t["instant"] and t["format"] == "table" for t in p["targets"])


EVAL_S = 600  # promtool's evaluation time (seconds after the start of the input series)

# dated futures (exchange, instrument, expiry, days to expiry, annualised basis or None): two exchanges'
# BTC futures, a contract under a day (published without an annualised basis), another base's
FUTURES = [
    ("binance", "BTCUSDT_260327", "2026-03-27", 90, 0.07),
    ("binance", "BTCUSDT_260626", "2026-06-26", 181, 0.08),
    ("deribit", "BTC-27DEC25", "2025-12-27", 0.5, None),
    ("deribit", "BTC-27MAR26", "2026-03-27", 90, 0.05),
    ("binance", "ETHUSDT_260327", "2026-03-27", 90, 0.2),
]
PERPETUALS = [("binance", "BTCUSDT", 0.11), ("deribit", "BTC-PERPETUAL", 0.09), ("binance", "ETHUSDT", 0.3)]


def _series(name: str, labels: dict[str, str], value: float) -> dict[str, str]:
    base = "ETH" if labels["instrument"].startswith("ETH") else "BTC"
    lab = {**labels, "base": base, "job": "fr-exporter", "instance": "x:9100"}
    text = ",".join(f'{k}="{v}"' for k, v in sorted(lab.items()))
    return {"series": f"{name}{{{text}}}", "values": f"{value}x{EVAL_S // 60 + 1}"}


def _input() -> list[dict[str, str]]:
    out = []
    for ex, inst, expiry, days, ann in FUTURES:
        labels = {"exchange": ex, "instrument": inst, "expiry": expiry}
        out.append(_series("fr_future_days_to_expiry", labels, days))
        if ann is not None:
            out.append(_series("fr_basis_annualized_ratio", labels, ann))
    for ex, inst, ann in PERPETUALS:
        out.append(_series("fr_funding_rate_annualized_ratio", {"exchange": ex, "instrument": inst}, ann))
    return out


def _point(exchange: str, instrument: str, expiry: str, value: float) -> dict[str, Any]:
    labels = f'{{base="BTC",exchange="{exchange}",expiry="{expiry}",instrument="{instrument}"}}'
    return {"labels": labels, "value": value}


@needs_tool("promtool", package="prometheus")
def test_curve_queries_give_each_point_both_coordinates(tmp_path: Path) -> None:
    """x and y carry the same label sets (the merge joins them into one row per point): the BTC
    futures with an annualised basis, and each perpetual at day 0 with its annualised funding; the
    contract under a day and the other base are not on the BTC curve."""
    x_expr, y_expr = (substitute(t["expr"], {"exchange": ".*", "base": "BTC"}) for t in _panel()["targets"])
    want_x = [
        _point("binance", "BTCUSDT_260327", "2026-03-27", 90),
        _point("binance", "BTCUSDT_260626", "2026-06-26", 181),
        _point("deribit", "BTC-27MAR26", "2026-03-27", 90),
        _point("binance", "BTCUSDT", "perpetual", 0),
        _point("deribit", "BTC-PERPETUAL", "perpetual", 0),
    ]
    want_y = [
        _point("binance", "BTCUSDT_260327", "2026-03-27", 0.07),
        _point("binance", "BTCUSDT_260626", "2026-06-26", 0.08),
        _point("deribit", "BTC-27MAR26", "2026-03-27", 0.05),
        _point("binance", "BTCUSDT", "perpetual", 0.11),
        _point("deribit", "BTC-PERPETUAL", "perpetual", 0.09),
    ]
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _input(),
                "promql_expr_test": [
                    {"expr": x_expr, "eval_time": f"{EVAL_S}s", "exp_samples": want_x},
                    {"expr": y_expr, "eval_time": f"{EVAL_S}s", "exp_samples": want_y},
                ],
            }
        ],
    }
    _promtool(tmp_path, doc)


def _promtool(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "panel_test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@needs_tool("promtool", package="prometheus")
def test_contracts_table_columns_carry_the_same_labels(tmp_path: Path) -> None:
    """The table's five columns come back with one label set per contract (exchange, base, quote,
    instrument, expiry: no __name__, job or instance), so the merge makes one row per contract; a
    contract under a day has days and basis only."""
    d = json.loads((ROOT / "grafana" / "dashboards" / "fr-term-structure.json").read_text())
    (panel,) = [p for p in d["panels"] if p["title"] == "Contracts followed"]
    exprs = [substitute(t["expr"], {"exchange": ".*", "base": ".*"}) for t in panel["targets"]]
    q = {"exchange": "binance", "instrument": "BTCUSDT_260327", "expiry": "2026-03-27", "quote": "USDT"}
    s = {"exchange": "deribit", "instrument": "BTC-27DEC25", "expiry": "2025-12-27", "quote": "USD"}
    names = [
        "fr_future_days_to_expiry",
        "fr_basis_ratio",
        "fr_basis_annualized_ratio",
        "fr_implied_funding_rate_8h",
        "fr_implied_minus_actual_funding_bp",
    ]
    q_values = [90, 0.02, 0.0811, 0.000074, -0.26]
    inputs = [_series(n, q, v) for n, v in zip(names, q_values, strict=True)]
    inputs += [_series("fr_future_days_to_expiry", s, 0.5), _series("fr_basis_ratio", s, 0.001)]

    def labels(x: dict[str, str]) -> str:
        return "{" + ",".join(f'{k}="{v}"' for k, v in sorted({**x, "base": "BTC"}.items())) + "}"

    tests = []
    for i, expr in enumerate(exprs):
        want = [{"labels": labels(q), "value": q_values[i]}]
        if i < 2:
            want.append({"labels": labels(s), "value": [0.5, 0.001][i]})
        tests.append({"expr": expr, "eval_time": f"{EVAL_S}s", "exp_samples": want})
    doc = {"rule_files": [], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": inputs, "promql_expr_test": tests}]}  # fmt: skip
    _promtool(tmp_path, doc)
    renamed = panel["transformations"][1]["options"]["renameByName"]
    assert renamed["Value #A"] == "days to expiry" and panel["options"]["sortBy"][0]["displayName"] == "days to expiry"


def test_term_structure_is_linked_from_the_funding_overview_and_back() -> None:
    dash = {p.stem: json.loads(p.read_text()) for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    urls = {link["url"] for link in dash["fr-funding-overview"]["links"]}
    assert "/d/fr-term-structure" in urls
    assert "/d/fr-funding-overview" in {link["url"] for link in dash["fr-term-structure"]["links"]}
    term = dash["fr-term-structure"]
    assert [v["name"] for v in term["templating"]["list"]][:3] == ["datasource", "exchange", "base"]
    for panel in term["panels"]:  # units on every panel; every query on the datasource variable
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
