"""The tests' clock: exporter.clock.VirtualClock, also usable where a component takes a ``() -> float``
callable (MarketState, PositionService), with ``t`` to read or move it (forward only)."""

from __future__ import annotations

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
