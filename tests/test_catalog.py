"""The metric catalog: declarations are well-formed, docs/metrics.md is generated from it, and every
metric name the rules, promtool tests, dashboards and runbook use is declared there."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from exporter.metrics import catalog
from exporter.metrics.catalog import FAMILIES, MetricDef
from mixin import docs

ROOT = Path(__file__).resolve().parent.parent
# a family name as a word of its own; recording rules (fr:..., fr_exchange_base:...) contain a colon
NAME = re.compile(r"(?<![:\w])fr_[a-z0-9_]+(?![:\w])")
USERS = [
    *sorted((ROOT / "prometheus" / "rules").glob("*.yml")),
    *sorted((ROOT / "prometheus" / "tests").glob("*.yml")),
    *sorted((ROOT / "grafana" / "dashboards").glob("*.json")),
    ROOT / "docs" / "runbook.md",
]


def test_docs_metrics_md_is_what_the_generator_writes() -> None:
    committed = (ROOT / docs.PATH).read_text(encoding="utf-8")
    assert committed == docs.metrics_markdown(), "docs/metrics.md is stale: run `make generate`"


def test_every_catalog_family_is_documented_with_its_unit() -> None:
    text = (ROOT / docs.PATH).read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `fr_")}
    for m in FAMILIES.values():
        row = rows.get(
            f"`{m.name}`" + (" (**fixed**)" if m.fixed else "") + (" (**deprecated**)" if m.deprecated_by else "")
        )
        assert row is not None, f"{m.name} has no row in docs/metrics.md"
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert cells[0] == m.kind and cells[2] == m.unit, row


def test_every_family_has_a_documented_meaning_unit_and_help() -> None:
    for m in FAMILIES.values():
        assert m.name.startswith("fr_") and re.fullmatch(r"[a-z][a-z0-9_]*", m.name), m.name
        assert m.help.strip() and m.doc.strip() and m.unit.strip(), m.name
        assert len(set(m.labels)) == len(m.labels), f"{m.name}: a label twice"
        assert m.section in {s.key for s in catalog.SECTIONS}
    assert len({m.name for m in FAMILIES.values()}) == len(FAMILIES)


@pytest.mark.parametrize("path", USERS, ids=lambda p: p.name)
def test_every_metric_name_used_is_declared(path: Path) -> None:
    used = set(NAME.findall(path.read_text(encoding="utf-8")))
    assert used or path.suffix == ".md", f"{path.name}: no fr_ name found (pattern broken?)"
    unknown = sorted(n for n in used if catalog.by_sample_name(n) is None)
    assert not unknown, f"{path.name} uses series the catalog does not declare: {unknown}"


def test_sample_names_of_a_histogram_resolve_to_its_family() -> None:
    h = catalog.AI_REQUEST_DURATION
    assert h.kind == "histogram"
    assert catalog.by_sample_name("fr_ai_request_duration_seconds_bucket") is h
    assert catalog.by_sample_name("fr_funding_rate_bucket") is None  # a gauge has no buckets
    assert catalog.by_sample_name("fr_no_such_series") is None


def test_help_placeholders_must_all_be_given() -> None:
    z = catalog.FUNDING_ZSCORE
    assert z.help_params == ("window", "min_observations")
    with pytest.raises(ValueError, match="missing"):
        z.help_text(window="30 d")
    with pytest.raises(ValueError, match="unknown"):
        z.help_text(window="30 d", min_observations=10, extra=1)
    text = z.help_text(window="30 d", min_observations=10)
    assert "trailing 30 d window" in text and "Needs 10 observations" in text
    assert catalog.MARK_PRICE.help_text() == "Mark price in quote currency."


def test_families_carry_the_declared_type_and_labels() -> None:
    spec = catalog.LIQUIDATIONS.spec()
    assert (spec.name, spec.kind, spec.om_name) == ("fr_liquidations_total", "counter", "fr_liquidations")
    fam = catalog.FUNDING_RECEIVED.counter()
    assert isinstance(fam, CounterMetricFamily) and fam.name == "fr_funding_received_usd"
    fam.add_metric(["p", "binance", "BTCUSDT", "short"], 1.0)
    assert fam.samples[0].labels == {"position": "p", "exchange": "binance", "instrument": "BTCUSDT", "side": "short"}
    assert isinstance(catalog.AI_REQUEST_DURATION.histogram(), HistogramMetricFamily)
    with pytest.raises(TypeError, match="declared a counter"):
        catalog.FUNDING_RECEIVED.gauge()
    with pytest.raises(ValueError):
        catalog.AI_REQUEST_DURATION.spec()
    assert f"{catalog.FUNDING_ZSCORE} > 2" == "fr_funding_zscore > 2"  # str() is the name, for PromQL


def test_a_family_cannot_be_declared_twice_or_misnamed() -> None:
    with pytest.raises(ValueError, match="twice"):
        catalog._def("fr_funding_rate", "gauge", "market", (), "x", "h", "d")
    with pytest.raises(ValueError, match="_total"):
        catalog._def("fr_new_events", "counter", "market", (), "x", "h", "d")
    with pytest.raises(ValueError, match="_total"):
        catalog._def("fr_new_level_total", "gauge", "market", (), "x", "h", "d")
    with pytest.raises(ValueError, match="section"):
        catalog._def("fr_new_thing", "gauge", "nowhere", (), "x", "h", "d")
    assert "fr_new_thing" not in FAMILIES and "fr_new_events" not in FAMILIES


def test_the_label_column_names_the_label_groups() -> None:
    assert docs._labels(catalog.EDGE) == "market + `side`"
    assert docs._labels(catalog.LIQ_HIT_PROBABILITY) == "position + `horizon` (`1h`, `8h`)"
    assert docs._labels(catalog.FUNDING_SPREAD) == "`base`, `long_exchange`, `short_exchange`"
    assert docs._labels(catalog.UNKNOWN_INSTRUMENT_UPDATES) == "—"
    m = MetricDef("fr_x", "gauge", ("a|b",), "u", "h", "x | y", "market")
    row = docs._row(m)
    assert len(re.findall(r"(?<!\\)\|", row)) == 6, row  # a pipe inside a cell is escaped, not a column
    assert "x \\| y" in row


MIXIN_MODULES = sorted((ROOT / "mixin").glob("*.py"))


@pytest.mark.parametrize("path", MIXIN_MODULES, ids=lambda p: p.name)
def test_the_mixin_spells_no_metric_name_itself(path: Path) -> None:
    """Rules, dashboards and promtool tests take family names from the catalog (``{m.FUNDING_RATE}``),
    so a rename there reaches every expression; a string literal naming a family would not follow."""
    literals = [
        (t.start[0], t.string)
        for t in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
        if t.type == tokenize.STRING
    ]
    spelled = [(line, name) for line, text in literals for name in NAME.findall(text)]
    assert not spelled, f"{path.name} spells family names instead of using the catalog: {spelled}"


COLLECTOR_MODULES = [
    *(p for p in sorted((ROOT / "exporter" / "metrics").glob("*.py")) if p.name != "catalog.py"),
    ROOT / "exporter" / "sidecar" / "metrics.py",
]


def _string_constants_outside_docstrings(tree: ast.AST) -> list[tuple[int, str]]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("path", COLLECTOR_MODULES, ids=lambda p: p.name)
def test_collectors_declare_no_family_themselves(path: Path) -> None:
    """Each family is declared once, in the catalog: a collector names none in its code (its
    docstring may show an example exposition)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    spelled = [(line, name) for line, text in _string_constants_outside_docstrings(tree) for name in NAME.findall(text)]
    assert not spelled, f"{path.name} names families itself instead of using exporter/metrics/catalog.py: {spelled}"


def test_the_collector_guard_sees_a_spelled_family() -> None:
    tree = ast.parse('"""Doc: fr_up."""\nx = Spec("fr_up", "gauge", "h")\n')
    found = [name for _, text in _string_constants_outside_docstrings(tree) for name in NAME.findall(text)]
    assert found == ["fr_up"]


CONTRACT = ROOT.parent / "shared" / "contract" / "metrics.md"
# Known differences from the contract, each with the issue that resolves it. An entry that no longer
# differs fails the test, so the list shrinks as the work lands.
CONTRACT_TYPE_EXCEPTIONS: dict[str, str] = {}


def contract_types(path: Path) -> dict[str, str]:
    """series name -> the type cell of its row in the contract's tables."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 2:
            out.update(dict.fromkeys(re.findall(r"`(fr_[a-z0-9_]+)`", cells[0]), cells[1]))
    return out


def test_catalog_types_agree_with_the_contract() -> None:
    if not CONTRACT.is_file():
        pytest.skip(f"metric contract not found at {CONTRACT}")
    types = contract_types(CONTRACT)
    assert types.get("fr_funding_zscore") == "gauge" and "histogram" in types["fr_ai_request_duration_seconds"]
    differ = {n for n, m in FAMILIES.items() if n in types and m.kind not in types[n]}
    assert differ == set(CONTRACT_TYPE_EXCEPTIONS), (
        f"types differing from the contract: {sorted(differ)}; known: {sorted(CONTRACT_TYPE_EXCEPTIONS)}"
    )


def test_a_deprecated_alias_keeps_its_old_name_and_says_so() -> None:
    """The contract's renames (a counter-style name on what is now a gauge) keep the old name for a
    release: the catalog accepts it only as a deprecated alias, and the docs row names the successor."""
    try:
        alias = catalog._def(
            "fr_old_level_total", "gauge", "positions", (), "USD", "h", "Net value.", deprecated_by="fr_old_level"
        )
        row = docs._row(alias)
        assert row.startswith("| `fr_old_level_total` (**deprecated**) | gauge |")
        assert "Deprecated alias of `fr_old_level`" in row and row.endswith("Net value. |")
    finally:
        FAMILIES.pop("fr_old_level_total", None)
