"""The import direction docs/ARCHITECTURE.md draws: a layer imports only itself and the layers below.

Every module of ``exporter/`` is parsed (ast, no import) and each ``exporter.*`` import it makes,
function-local and ``TYPE_CHECKING`` ones included, is checked against the layer table below. The
same table is in docs/ARCHITECTURE.md; the test holds the two equal.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

# Bottom to top. A module belongs to the layer of its longest listed prefix ("exporter" itself is
# only the package's __init__, so a new module must be placed here).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "exporter",
            "exporter.model",
            "exporter.clock",
            "exporter.redact",
            "exporter.config",
            "exporter.logs",
            "exporter.build",
            "exporter.sink",
        ),
    ),
    ("exposition", ("exporter.metrics.catalog", "exporter.metrics.exposition", "exporter.web")),
    (
        "parsers and analytics",
        (
            "exporter.feeds",
            "exporter.analytics",
            "exporter.positions.model",
            "exporter.positions.config_source",
            "exporter.shard",
            "exporter.limits",
        ),
    ),
    ("io", ("exporter.feeds.connection", "exporter.rest", "exporter.recording")),
    ("state", ("exporter.state", "exporter.trackers", "exporter.positions.store")),
    ("views", ("exporter.views",)),
    ("services", ("exporter.positions",)),
    ("metrics", ("exporter.metrics",)),
    ("serving", ("exporter.api_state", "exporter.server")),
    ("wiring", ("exporter.app",)),
    (
        "programs",
        (
            *("exporter.cli", "exporter.demo", "exporter.top", "exporter.sim", "exporter.sidecar"),
            *("exporter.simrun", "exporter.replay"),
        ),
    ),
]

# Programs of their own beside the exporter: they share only its foundation and pure parts.
SHARED = {"foundation", "exposition", "parsers and analytics"}
SEPARATE: dict[str, set[str]] = {"exporter.sim": SHARED, "exporter.sidecar": SHARED}

# Imports allowed against the direction for a while, each with the work that removes it (none
# today). An entry that is no longer needed fails the test too: delete it when the import goes.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _longest_prefix(module: str, prefixes: dict[str, str]) -> str | None:
    best = None
    for p in prefixes:
        inside = module == p or (p != "exporter" and module.startswith(p + "."))
        if inside and (best is None or len(p) > len(best)):
            best = p
    return best


PREFIX_LAYER = {prefix: name for name, prefixes in LAYERS for prefix in prefixes}
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    p = _longest_prefix(module, PREFIX_LAYER)
    assert p is not None, f"{module} is in no layer: add it to LAYERS here and in docs/ARCHITECTURE.md"
    return PREFIX_LAYER[p]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """The ``exporter.*`` modules a file imports (``from pkg import submodule`` names the submodule)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "exporter")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            if base.split(".")[0] != "exporter":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if _is_module(sub) else base)
    out.discard(me)
    return out


def violations() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        mine = layer_of(me)
        separate = _longest_prefix(me, {k: k for k in SEPARATE})
        for target in imports_of(path):
            theirs = layer_of(target)
            if separate is not None and not target.startswith(separate):
                ok = theirs in SEPARATE[separate]
            else:
                ok = RANK[theirs] <= RANK[mine]
            if not ok:
                found.add((me, target))
    return found


def test_every_import_points_down_the_layers() -> None:
    bad = violations()
    unexpected = {
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, b in sorted(bad) if (a, b) not in KNOWN_EXCEPTIONS
    }
    assert not unexpected, "imports against the layer order:\n" + "\n".join(sorted(unexpected))
    stale = set(KNOWN_EXCEPTIONS) - bad
    assert not stale, f"known exceptions no longer needed, delete them from KNOWN_EXCEPTIONS: {sorted(stale)}"


def test_every_listed_module_exists() -> None:
    """A table entry that names no module (moved, renamed) would place nothing and hide the move."""
    missing = [p for _, prefixes in LAYERS for p in prefixes if not _is_module(p)]
    assert not missing, f"LAYERS names modules that do not exist: {missing}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser finds absolute, relative, function-local and TYPE_CHECKING imports (a checker that
    saw none would pass everything)."""
    src = PACKAGE / "feeds" / "connection.py"
    found = imports_of(src)
    assert {"exporter.sink", "exporter.feeds.base", "exporter.model"} <= found
    assert "exporter.state" not in found
    assert layer_of("exporter.feeds.connection") == "io"
    assert layer_of("exporter.feeds.binance") == "parsers and analytics"
    app = imports_of(PACKAGE / "app.py")  # the registry and server are imported inside functions
    assert {"exporter.metrics", "exporter.server", "exporter.state"} <= app
    trackers = imports_of(PACKAGE / "trackers.py")  # under TYPE_CHECKING
    assert "exporter.state" in trackers
    assert RANK[layer_of("exporter.state")] > RANK[layer_of("exporter.feeds.connection")]


def _doc_table() -> list[tuple[str, tuple[str, ...]]]:
    """The rows of the layer table in docs/ARCHITECTURE.md (between the layer-table markers)."""
    text = DOC.read_text()
    m = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    assert m is not None, "docs/ARCHITECTURE.md has no <!-- layers --> table"
    rows = []
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0][:1].isdigit():
            continue
        name = cells[0].split(" ", 1)[1]
        modules = tuple(re.findall(r"`([a-z_.]+)`", cells[1]))
        rows.append((name, modules))
    return rows


def test_the_doc_draws_the_same_layers() -> None:
    assert _doc_table() == LAYERS


# ---- the test harness: mixin/ (the Prometheus/Alertmanager stack) under tests/support -----------------

HARNESS_ORDER = ("exporter", "mixin", "tests")  # bottom to top: each may import only those before it


def _top_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_package_and_the_harness_import_downwards_only() -> None:
    """The exporter imports neither the harness nor the tests; mixin/ imports no test module
    (tests/support builds on mixin.stack, not the other way round)."""
    wrong = []
    for rank, top in enumerate(HARNESS_ORDER[:-1]):
        above = set(HARNESS_ORDER[rank + 1 :]) | {"support", "conftest"}
        for path in sorted((ROOT / top).rglob("*.py")):
            wrong += [f"{path.relative_to(ROOT)} imports {m}" for m in _top_imports(path) & above]
    assert wrong == []


SHARED_HELPERS = ("def free_port(", "def port_is_free(", "def wait_for(", "def wait_until(", "class FakeSlack",
                  "class FakeOpenAI", "class FakeExporter", "class VirtualClock", "class ManualClock")  # fmt: skip


def test_each_shared_test_helper_is_defined_once() -> None:
    """One port helper, one wait, one fake of each service, one clock: a second copy drifts."""
    sources = [p for top in ("exporter", "mixin", "tests", "bench") for p in sorted((ROOT / top).rglob("*.py"))]
    where: dict[str, list[str]] = {h: [] for h in SHARED_HELPERS}
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for helper in SHARED_HELPERS:
                if line.lstrip().startswith(helper) or line.lstrip().startswith("async " + helper):
                    where[helper].append(f"{path.relative_to(ROOT)}:{n}")
    assert {h: w for h, w in where.items() if len(w) != 1} == {}
