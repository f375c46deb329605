"""The mark history behind the historical stress: 1-minute closes of the instruments positions hold.

One :class:`CloseSeries` per held instrument (shared by every position on it): a ring of the last
``period / 60 s`` minute closes and the minute in progress, in one float64 array (30 days: 43,201
closes, 338 KiB), NaN where no price is known; the figures use the completed minutes only. An
instrument no position holds any more is dropped at the next cycle, so memory is bounded by the
instruments held, not by the instruments followed.

Filled at start (and when a position on a new instrument appears) from the exchange's 1-minute
mark-price candles over the whole period (``ExchangeRest.price_candles("mark", ...)``: the shared
REST client, its budget and ``fr_rest_*`` counts), in a task per instrument so the positions cycle
never waits on the paging (the service waits for the start-up ones a bounded time before its first
views), then extended from the live mark each cycle (the last mark seen in a minute is that
minute's close). Figures (``analytics/stress.py``) are published
only once the backfill is in: a number computed on the first minutes after start is not the trailing
period's and is absent rather than shown as if it were. Where the exchange publishes no mark candles
the history grows from live marks, and figures appear once it spans the whole period.

The worst moves are recomputed once a minute (a few ms each); the two fits of the window returns
every ``FIT_SECONDS`` (the Student-t likelihood is a fraction of a second over 43,000 returns and
moves little in a quarter of an hour), both in a worker thread so the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import numpy as np
import numpy.typing as npt

from exporter.analytics.stress import (
    ReturnFit,
    StressFigures,
    WorstMoves,
    fit_normal,
    fit_student_t,
    window_returns,
    worst_moves,
)
from exporter.feeds.history import CandleKind
from exporter.model import Candle, Exchange

log = logging.getLogger("exporter.positions")

STEP_SECONDS = 60  # 1-minute closes: the finest mark-price candle every exchange publishes
FIT_SECONDS = 900.0
RETRY_SECONDS = 60.0  # a failed backfill is asked again after this
CHUNK_SECONDS = 86400  # one request of price_candles per day of history

Key = tuple[Exchange, str]


class CandleSource(Protocol):
    """What the history needs of an exchange's REST endpoints (``exporter.rest.endpoints.ExchangeRest``)."""

    @property
    def candle_kinds(self) -> frozenset[str]: ...

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]: ...


class CloseSeries:
    """The last ``capacity`` minute closes of one instrument, in a ring (minute index = t // 60)."""

    __slots__ = ("capacity", "first", "last", "values")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.values = np.full(capacity, np.nan)
        self.last: int | None = None  # the newest minute written
        self.first: int | None = None  # the oldest minute ever written (how far the history reaches)

    def put(self, t: float, price: float) -> None:
        if not (price > 0.0 and math.isfinite(price)):
            return
        minute = int(t // STEP_SECONDS)
        self._advance(minute)
        assert self.last is not None
        if minute <= self.last - self.capacity:
            return  # older than the period
        self.values[minute % self.capacity] = price
        self.first = minute if self.first is None else min(self.first, minute)

    def _advance(self, minute: int) -> None:
        """Make ``minute`` the newest slot, clearing the minutes skipped (no price known there)."""
        if self.last is None:
            self.last = minute
            return
        gap = minute - self.last
        if gap <= 0:
            return
        if gap >= self.capacity:
            self.values.fill(np.nan)
        else:
            self.values[np.arange(self.last + 1, minute + 1) % self.capacity] = np.nan
        self.last = minute

    def known(self, t: float) -> bool:
        """Whether the minute ``t`` falls in holds a close."""
        minute = int(t // STEP_SECONDS)
        if self.last is None or minute > self.last or minute <= self.last - self.capacity:
            return False
        return not math.isnan(self.values[minute % self.capacity])

    def closes(self, now: float) -> npt.NDArray[np.float64]:
        """The closes of the ``capacity`` minutes up to the one ``now`` falls in, oldest first (a copy)."""
        minute = int(now // STEP_SECONDS)
        self._advance(minute)
        return np.roll(self.values, -((minute + 1) % self.capacity))

    def spans(self, now: float) -> bool:
        """Whether the closes reach back over the whole ring."""
        return self.first is not None and self.first <= int(now // STEP_SECONDS) - self.capacity + 1


@dataclass
class _Held:
    series: CloseSeries
    backfilled: bool = False
    live_only: bool = False  # the exchange publishes no mark candles: figures once live spans the period
    retry_at: float = -math.inf
    resume_from: float = -math.inf  # a failed backfill goes on from this day
    worst: dict[int, WorstMoves | None] = field(default_factory=dict)  # window seconds ->
    worst_minute: int | None = None
    fits: dict[int, tuple[ReturnFit, ...]] = field(default_factory=dict)
    fitted_at: float = -math.inf


class StressHistory:
    """Closes of the held instruments, their backfill and the figures per window (see module doc)."""

    def __init__(
        self, windows_seconds: Sequence[int], period_seconds: float, clock: Callable[[], float] | None = None
    ) -> None:
        self._clock = clock  # when a failed backfill is retried from (default: the time it was asked)
        self.windows = tuple(windows_seconds)
        self.period_seconds = period_seconds
        self.capacity = int(period_seconds // STEP_SECONDS) + 1
        self._held: dict[Key, _Held] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    @property
    def bytes_per_instrument(self) -> int:
        return self.capacity * 8

    def held(self) -> list[Key]:
        return list(self._held)

    def hold(self, keys: Iterable[Key]) -> None:
        """Keep exactly these instruments (a new one waits for its backfill; a dropped one is freed)."""
        keys = set(keys)
        for gone in self._held.keys() - keys:
            del self._held[gone]
            task = self._tasks.pop(gone, None)
            if task is not None:
                task.cancel()
        for key in keys - self._held.keys():
            self._held[key] = _Held(CloseSeries(self.capacity))

    def put_mark(self, key: Key, t: float, price: float) -> None:
        h = self._held.get(key)
        if h is not None:
            h.series.put(t, price)

    def due_backfills(self, now: float) -> list[Key]:
        return [
            k
            for k, h in self._held.items()
            if not h.backfilled and not h.live_only and now >= h.retry_at and k not in self._tasks
        ]

    def start_backfills(
        self, source: Callable[[Exchange], CandleSource | None], now: float
    ) -> list[asyncio.Task[None]]:
        """Start the due backfills as tasks (the positions cycle goes on while klines page in)."""
        started = []
        for key in self.due_backfills(now):
            task = asyncio.create_task(self.backfill(key, source(key[0]), now), name=f"stress-backfill {key[1]}")
            self._tasks[key] = task
            task.add_done_callback(partial(self._done, key))
            started.append(task)
        return started

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    def cancel(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self._tasks.clear()

    async def backfill(self, key: Key, source: CandleSource | None, now: float) -> None:
        """Fill the instrument's period from the exchange's 1-minute mark candles, a day per request
        (within every exchange's paging, and other requests of the budget get their turn between
        days); a failure is retried later from the day that failed."""
        h = self._held.get(key)
        if h is None:
            return
        if source is None or "mark" not in source.candle_kinds:
            h.live_only = True
            log.info("positions: %s %s publishes no mark candles; stress history from live marks", *key)
            return
        live_from = int(now // STEP_SECONDS)
        t = max(h.resume_from, float((live_from - self.capacity + 1) * STEP_SECONDS))
        n = 0
        while t <= now:
            end = min(t + CHUNK_SECONDS - STEP_SECONDS, now)
            try:
                candles = await source.price_candles("mark", key[1], STEP_SECONDS, t, end)
            except Exception as exc:  # counted by the REST client; asked again later
                h.resume_from = t
                h.retry_at = max(now, self._clock() if self._clock is not None else now) + RETRY_SECONDS
                log.warning("positions: mark history of %s %s failed (%s); retrying", key[0].value, key[1], exc)
                return
            if self._held.get(key) is not h:
                return  # dropped while we waited
            for c in candles:
                # the minute in progress when asked: its kline closed early, the live marks since are later
                if c.open_time // STEP_SECONDS >= live_from and h.series.known(c.open_time):
                    continue
                h.series.put(c.open_time, c.close)
            n += len(candles)
            t = end + STEP_SECONDS
        h.backfilled = True
        h.worst_minute = None
        h.fitted_at = -math.inf
        log.info("positions: %s %s stress history backfilled (%d minute candles)", key[0].value, key[1], n)

    def ready(self, key: Key, now: float) -> bool:
        h = self._held.get(key)
        return h is not None and (h.backfilled or (h.live_only and h.series.spans(now)))

    async def refresh(self, now: float) -> None:
        """Recompute what is due (worst moves each new minute, fits every FIT_SECONDS) off the loop."""
        minute = int(now // STEP_SECONDS)
        work: list[tuple[_Held, npt.NDArray[np.float64], bool]] = []
        for key, h in self._held.items():
            if not self.ready(key, now) or h.worst_minute == minute:
                continue
            refit = now - h.fitted_at >= FIT_SECONDS
            # completed minutes only: a close is final once its minute is over, so the figures change
            # once a minute and the backfilled minutes are the exchange's klines exactly
            work.append((h, h.series.closes(now)[:-1], refit))
        if not work:
            return
        try:
            results = await asyncio.to_thread(self._compute, [(c, refit) for _, c, refit in work])
        except Exception:  # a bad history must not end the service; the figures stay as they were
            log.exception("positions: historical stress computation failed")
            return
        for (h, _, refit), (worst, fits) in zip(work, results, strict=True):
            h.worst = worst
            h.worst_minute = minute
            if refit:
                h.fits = fits
                h.fitted_at = now

    def _compute(
        self, jobs: Sequence[tuple[npt.NDArray[np.float64], bool]]
    ) -> list[tuple[dict[int, WorstMoves | None], dict[int, tuple[ReturnFit, ...]]]]:
        out = []
        for closes, refit in jobs:
            worst: dict[int, WorstMoves | None] = {}
            fits: dict[int, tuple[ReturnFit, ...]] = {}
            for w in self.windows:
                lag = w // STEP_SECONDS
                worst[w] = worst_moves(closes, lag)
                if refit:
                    r = window_returns(closes, lag)
                    fits[w] = tuple(f for f in (fit_normal(r), fit_student_t(r)) if f is not None)
            out.append((worst, fits))
        return out

    def figures(self, key: Key, now: float) -> Mapping[int, StressFigures]:
        """Window seconds -> figures of a ready instrument (empty: not ready, or nothing to say)."""
        h = self._held.get(key)
        if h is None or not self.ready(key, now):
            return {}
        out = {}
        for w, worst in h.worst.items():
            if worst is not None:
                out[w] = StressFigures(worst, h.fits.get(w, ()))
        return out


__all__ = ["STEP_SECONDS", "CandleSource", "CloseSeries", "StressHistory"]
