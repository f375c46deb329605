"""The virtual clock: time moves only when advanced, sleepers wake in deadline order."""

from __future__ import annotations

import asyncio

import pytest

from exporter.clock import SYSTEM_CLOCK, ScaledClock, VirtualClock


async def test_sleepers_wake_in_deadline_order_only_when_advanced() -> None:
    clock = VirtualClock(start=1000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, dt: float) -> None:
        await clock.sleep(dt)
        woke.append((name, clock.time()))

    tasks = [asyncio.create_task(sleeper("late", 5.0)), asyncio.create_task(sleeper("early", 2.0))]
    await asyncio.sleep(0)
    assert clock.pending() == 2
    clock.advance(1.0)
    await asyncio.sleep(0)
    assert woke == []
    await clock.advance_async(10.0)
    await asyncio.gather(*tasks)
    assert [n for n, _ in woke] == ["early", "late"]
    assert woke[0][1] == pytest.approx(1002.0)
    assert woke[1][1] == pytest.approx(1005.0)
    assert clock.time() == pytest.approx(1011.0)
    assert clock.monotonic() == pytest.approx(11.0)


async def test_a_periodic_task_ticks_once_per_period() -> None:
    clock = VirtualClock(start=0.0)
    ticks: list[float] = []

    async def poller() -> None:
        while True:
            ticks.append(clock.time())
            await clock.sleep(60.0)

    task = asyncio.create_task(poller())
    await asyncio.sleep(0)
    await clock.advance_async(600.0)
    task.cancel()
    assert ticks == [60.0 * i for i in range(11)]


def test_clock_never_goes_back() -> None:
    clock = VirtualClock(start=10.0)
    with pytest.raises(ValueError):
        clock.advance(-1.0)
    with pytest.raises(ValueError):
        clock.set_time(5.0)
    clock.set_time(20.0)
    assert clock.time() == 20.0


async def test_scaled_clock_runs_faster_than_wall_time() -> None:
    clock = ScaledClock(speed=1000.0, start=0.0)
    t0 = clock.time()
    await clock.sleep(20.0)  # 20 ms of wall time
    assert clock.time() - t0 >= 20.0
    assert SYSTEM_CLOCK.time() > 1.6e9


async def test_deadlines_list_the_live_sleepers() -> None:
    clock = VirtualClock(100.0)
    tasks = [asyncio.create_task(clock.sleep(dt)) for dt in (5.0, 2.0)]
    await asyncio.sleep(0)
    assert clock.deadlines() == [102.0, 105.0]
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert clock.deadlines() == [105.0]
    clock.advance(5.0)
    await tasks[0]
    assert clock.deadlines() == []
