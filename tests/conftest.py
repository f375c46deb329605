"""Suite-wide fixtures and hooks: ../shared, free loopback ports, the loopback guard, and in CI (CI=true)
every skip turned into a failure (CI has every tool installed: a skip there hides a test)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, SHARED, free_port

__all__ = ["ROOT", "SHARED", "free_port"]  # older tests import these from conftest

pytest_plugins = ["pytester"]  # test_suite_rules runs the suite's own hooks on a throwaway test file


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _fail_skip(report: Any, what: str) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and _in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{what} skipped in CI (CI=true; every tool is installed there): {reason}"


# Test files known to take many seconds that cannot carry the marker yet (path -> seconds); the slow
# files carry `pytestmark = pytest.mark.slow(seconds=N)` themselves.
SLOW_FILES: dict[str, float] = {}
E2E_SECONDS = 30.0  # a real Prometheus/Alertmanager stack or a fault campaign: the longest files
SLOW_SECONDS = 5.0  # `slow` without a figure


def _weight(item: pytest.Item) -> float:
    module_marks = getattr(getattr(item, "module", None), "pytestmark", [])
    if any(m.name == "e2e" for m in (module_marks if isinstance(module_marks, list) else [module_marks])):
        return E2E_SECONDS  # a whole e2e file (one promtool check in a file is not that)
    mark = item.get_closest_marker("slow")
    return float(mark.kwargs.get("seconds", SLOW_SECONDS)) if mark else 0.0


# Workers for `-n auto` (pyproject's addopts): a run of the suite (no paths, or directories) on WORKERS,
# a run of chosen files or tests in this process (forking workers for one file costs more than it saves).
# Twice the cores of this 2-core machine: many tests wait on sockets, subprocesses and simulated markets,
# and the extra workers fill those waits with other files' CPU (docs/testing.md: 88 s -> 55 s wall for
# the same CPU). `-n N` on the command line or PYTEST_XDIST_AUTO_NUM_WORKERS chooses otherwise.
WORKERS = 4


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    env = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if env:
        return int(env)
    paths = [a.split("::")[0] for a in config.args]
    return 0 if paths and all(Path(p).is_file() for p in paths) else WORKERS


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files run first (`slow` tests and `e2e` files; `slow(seconds=N)` ranks them): the workers
    (pytest-xdist, one file at a time in this order: `--dist loadfile --no-loadscope-reorder` in
    pyproject) start on the longest work and the short files fill in beside it, instead of one long
    file running alone at the end. Longest-first, the classic greedy schedule."""
    weight: dict[str, float] = dict(SLOW_FILES)
    for item in items:
        path = item.nodeid.split("::")[0]
        weight[path] = max(weight.get(path, 0.0), _weight(item))
    items.sort(key=lambda item: -weight.get(item.nodeid.split("::")[0], 0.0))  # stable within a file


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _fail_skip(outcome.get_result(), item.nodeid)  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _fail_skip(outcome.get_result(), collector.nodeid)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "samples").is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): real sample data not available")
    return SHARED


@pytest.fixture
def port() -> int:
    return free_port()


def _is_local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in ("", "localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified  # unspecified: binding a server, never a destination


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach beyond this machine: name lookups and connects to anything but loopback fail
    loudly (a default config points at the live exchanges; a test that forgot to point it at the
    simulator must fail, not send traffic)."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _is_local(host):
            raise OSError(f"test tried to resolve {host!r}: only loopback is allowed in tests")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    def check(address: object) -> None:
        if isinstance(address, tuple) and address and not _is_local(address[0]):
            raise OSError(f"test tried to connect to {address!r}: only loopback is allowed in tests")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
