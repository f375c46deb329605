"""Our own modules are imported plainly: a module that cannot be imported fails the suite and stops the
exporter at start; nothing turns a broken import into a skip or a silently missing feature."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

pytestmark = pytest.mark.slow(seconds=6)  # the file: child pytest runs

TESTS = ROOT / "tests"

# Loaded with -p in a child pytest: makes `exporter.sim.main` unimportable (ModuleNotFoundError), as a
# syntax error or a missing dependency in that file would.
BREAKER = """
import sys
sys.modules[{module!r}] = None
"""


def _run(args: list[str], tmp_path: Path, module: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "breaker_plugin.py").write_text(BREAKER.format(module=module))
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_no_test_skips_on_our_own_import() -> None:
    pattern = re.compile(r"importorskip\(\s*[\"']exporter|except ImportError")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sorted(TESTS.rglob("*.py"))
        if p.name != "test_suite_rules.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.slow
def test_broken_simulator_import_fails_the_suite(tmp_path: Path) -> None:
    targets = ["tests/test_app_sim.py", "tests/test_sidecar_sim.py", "tests/test_sim_protocol.py"]
    r = _run(
        ["-m", "pytest", "-p", "breaker_plugin", "-p", "no:cacheprovider", "--collect-only", "-q", *targets],
        tmp_path,
        "exporter.sim.main",
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    for t in targets[:2]:
        assert f"ERROR collecting {t}" in out, out
    assert "skipped" not in out, out


def test_exporter_does_not_start_without_its_position_service(tmp_path: Path) -> None:
    exchanges = "".join(f"  {ex}:\n    enabled: false\n" for ex in ("binance", "bybit", "okx", "deribit"))
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(f"listen_address: 127.0.0.1:0\nexchanges:\n{exchanges}")
    r = _run(
        ["-c", f"import breaker_plugin, exporter.cli; exporter.cli.main(['--config', {str(cfg)!r}])"],
        tmp_path,
        "exporter.positions.service",
    )
    # no positions configured, still an error at start: a broken module is never a quietly missing feature
    assert r.returncode != 0
    assert "ModuleNotFoundError" in r.stderr and "exporter.positions.service" in r.stderr, r.stderr


SKIPPING = """
import pytest

def test_needs_a_tool():
    pytest.skip("sometool not installed (apt-get install sometool)")

def test_plain():
    assert 1 + 1 == 2
"""


def test_a_skip_fails_the_run_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_one=SKIPPING)
    pytester.makeconftest((TESTS / "conftest.py").read_text())  # the suite's own hooks
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    monkeypatch.delenv("CI", raising=False)
    local = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "-q")
    assert local.ret == 0, local.outlines
    local.assert_outcomes(passed=1, skipped=1)
    assert any("SKIPPED [1]" in line and "sometool not installed" in line for line in local.outlines)  # -rs
    monkeypatch.setenv("CI", "true")
    ci = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "-q")
    assert ci.ret == 1
    ci.assert_outcomes(passed=1, failed=1)
    assert any("skipped in CI" in line for line in ci.outlines), ci.outlines
