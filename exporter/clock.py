"""The one clock the whole system reads: the exporter's state and pollers, the simulator's market
model, the sidecar's scheduler and scoring, replay.

Production uses `SYSTEM_CLOCK` (wall time for timestamps, `asyncio.sleep` for waiting). Tests and
replay use `VirtualClock`: time stands still until the test (or the replay driver) calls
`advance(dt)`, which wakes every sleeper whose deadline has come, in deadline order. `ScaledClock`
runs N times faster than wall time (the simulator's time-scale option).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What every component needs of time."""

    def time(self) -> float:
        """Unix seconds (what timestamps, ages and windows are measured in)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back (timeouts, intervals)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """Wall time; waiting is `asyncio.sleep`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK: Clock = SystemClock()


class VirtualClock:
    """Time moves only when `advance` is called. Sleepers wake in deadline order.

    `advance(dt)` is synchronous: it moves time and resolves the futures of due sleepers; they run
    when the event loop next gets control (`await clock.advance_async(dt)` yields for them, one
    deadline at a time, so a sleeper that sleeps again within the step is woken too).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._start = float(start)
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    def pending(self) -> int:
        """Sleepers still waiting (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def deadlines(self) -> list[float]:
        """When the sleepers wake, earliest first (tests wait until a task is asleep on the clock)."""
        return sorted(d for d, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) if live else None

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake the sleepers due by then."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        self._wake()

    def set_time(self, t: float) -> None:
        """Jump to Unix time `t` (not earlier than now): replay follows a recording's timestamps."""
        if t < self._now:
            raise ValueError("a clock does not go back")
        self._now = t
        self._wake()

    async def advance_async(self, seconds: float, step: float | None = None) -> None:
        """Advance in steps (default: deadline by deadline), letting woken tasks run after each."""
        target = self._now + seconds
        while True:
            nxt = self.next_deadline()
            if step is not None:
                nxt = min(nxt if nxt is not None else target, self._now + step)
            if nxt is None or nxt > target:
                break
            self._now = max(self._now, nxt)
            self._wake()
            for _ in range(3):  # let woken tasks run (and re-sleep) before the next deadline
                await asyncio.sleep(0)
        self._now = target
        self._wake()
        await asyncio.sleep(0)

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


class ScaledClock:
    """Runs `speed` times faster than wall time from `start` (the simulator's time-scale option)."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self._start = self._wall0 if start is None else float(start)

    def time(self) -> float:
        return self._start + (time.monotonic() - self._mono0) * self.speed

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)
