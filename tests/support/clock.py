"""The tests' clock: exporter.clock.VirtualClock, also usable where a component takes a ``() -> float``
callable (MarketState, PositionService), with ``t`` to read or move it (forward only)."""

from __future__ import annotations

import asyncio

from exporter.clock import VirtualClock


class ManualClock(VirtualClock):
    def __call__(self) -> float:
        return self.time()

    @property
    def t(self) -> float:
        return self.time()

    @t.setter
    def t(self, value: float) -> None:
        self.set_time(value)  # a clock does not go back: a test that tries has a bug


class InstantClock(VirtualClock):
    """A clock whose sleeps return at once, moving its own time by what was slept: what paces on it (the
    exporter's REST budgets: ``Exporter(budget_clock=InstantClock())``) keeps its schedule in this time
    and nothing waits on the wall clock. Pair it with a simulator that enforces no per-IP limits
    (``SimOptions(rate_limits=False)``): its windows are in wall time. test_rate_limits and
    test_backfill_schedule test the pacing itself."""

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)
        await asyncio.sleep(0)
