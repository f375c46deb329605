"""What every test shares, defined once: where the repo and ../shared are, a free loopback port, and
waiting on a condition (never a fixed sleep that hopes the outcome has happened by then).

Fakes of external services are in :mod:`support.fakes`; the virtual clock is
:class:`exporter.clock.VirtualClock`.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mixin.stack import free_port, port_is_free, wait_for  # the Prometheus/Alertmanager harness defines them; one copy

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["ROOT", "SHARED", "free_port", "needs_tool", "port_is_free", "wait_for", "wait_until"]


def needs_tool(*binaries: str, package: str) -> Callable[[F], F]:
    """An e2e test that runs an external tool (any of ``binaries``, from Debian's ``package``).

    `make test` checks the tools first (.ci/tools) and CI fails on any skip, so the skip only shows
    when pytest is run by hand on a machine without the package; it names what to install.
    """
    missing = all(shutil.which(b) is None for b in binaries)
    skip = pytest.mark.skipif(missing, reason=f"{binaries[0]} not installed (apt-get install {package})")

    def mark(test: F) -> F:
        return pytest.mark.e2e(skip(test))  # type: ignore[no-any-return]

    return mark


async def wait_until(
    condition: Callable[[], T | Awaitable[T]], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll ``condition`` (sync or async) until it returns something truthy, and return that.

    The timeout is a deadlock guard, not a speed claim: a test that needs it has failed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
