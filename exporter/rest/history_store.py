"""One read of an instrument's price history serving every start-up consumer of it.

The factor backfill (1-minute mark closes over 4 h) and the anchor backfill (1-minute mark, index and
premium candles over 6 h) both read the 1-minute mark candles of every instrument at start: read
twice, they halve what the exchange's per-IP budget leaves for the rest of the start. The start-up
plans one window per (kind, instrument, interval) covering every consumer's
(:meth:`CandleStore.plan`); the first consumer that asks reads it once through the exchange's
endpoints (paced and counted by the one REST client), and each consumer gets the candles of its own
window, exactly what its own read would have returned (open times in ``[start, end]``, oldest first).

Between the reads the candles are held as flat float arrays (40 bytes a candle, not a list of
objects: at 2,000 instruments the 6 h of minutes take 29 MB) and dropped once every planned reader
has read, or when the start-up ends (:meth:`CandleStore.clear`). A window nobody planned, or one the
plan does not cover, is read directly as before.
"""

from __future__ import annotations

import asyncio
from array import array
from dataclasses import dataclass

from exporter.model import Candle
from exporter.rest.endpoints import CandleKind, ExchangeRest

Key = tuple[str, str, int]  # (kind, instrument, interval seconds)


@dataclass(slots=True)
class _Planned:
    start: float
    end: float
    readers: int  # planned reads left; the entry goes when none is
    read: asyncio.Task[array[float]] | None = None  # the one read, shared by whoever asks first


def _pack(candles: list[Candle]) -> array[float]:
    flat = array("d")
    for c in candles:
        flat.extend((c.open_time, c.open, c.high, c.low, c.close))
    return flat


def _unpack(flat: array[float], start: float, end: float) -> list[Candle]:
    return [
        Candle(flat[i], flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4])
        for i in range(0, len(flat), 5)
        if start <= flat[i] <= end
    ]


class CandleStore:
    """The start-up's shared price-history reads of one exchange (see the module's text)."""

    def __init__(self, rest: ExchangeRest) -> None:
        self.rest = rest
        self._planned: dict[Key, _Planned] = {}
        self.shared = 0  # reads served from a planned window another reader started
        self.direct = 0  # reads no plan covered

    def plan(self, kind: CandleKind, instrument: str, interval_s: int, start: float, end: float, readers: int) -> None:
        """Declare that ``readers`` consumers will read within ``[start, end]``: read it once for them."""
        if readers < 2 or kind not in self.rest.candle_kinds:
            return  # one reader gains nothing from holding its candles
        self._planned[(kind, instrument, int(interval_s))] = _Planned(start, end, readers)

    def holding(self) -> int:
        """Candles held right now (waiting for a planned reader)."""
        return sum(
            len(p.read.result()) // 5
            for p in self._planned.values()
            if p.read is not None and p.read.done() and not p.read.cancelled() and p.read.exception() is None
        )

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]:
        """As :meth:`ExchangeRest.price_candles`; from the planned read where the plan covers the window."""
        key = (kind, instrument, int(interval_seconds))
        p = self._planned.get(key)
        if p is None or start < p.start or end > p.end:
            self.direct += 1
            return await self.rest.price_candles(kind, instrument, interval_seconds, start, end)
        if p.read is None:
            p.read = asyncio.ensure_future(self._read(kind, instrument, interval_seconds, p.start, p.end))
        else:
            self.shared += 1
        p.readers -= 1
        if p.readers <= 0 and self._planned.get(key) is p:
            del self._planned[key]  # the last planned reader: nothing holds the candles after it
        try:
            flat = await asyncio.shield(p.read)
        except Exception:
            # a failed read fails its current readers (each counts it as before); a later one reads anew
            if self._planned.get(key) is p:
                del self._planned[key]
            raise
        return _unpack(flat, start, end)

    async def _read(self, kind: CandleKind, instrument: str, interval_s: int, start: float, end: float) -> array[float]:
        return _pack(await self.rest.price_candles(kind, instrument, interval_s, start, end))

    def clear(self) -> None:
        """The start-up is over: what no planned reader came for is dropped."""
        for p in self._planned.values():
            if p.read is not None and not p.read.done():
                p.read.cancel()
        self._planned.clear()
