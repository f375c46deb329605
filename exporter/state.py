"""In-process state: the latest value of everything, with its receive time, and rolling windows.

:class:`MarketState` is the record sink (:class:`~exporter.sink.RecordSink`) of the connection and
REST layers. It only stores: what a value implies beyond itself (settlements inferred from the
stream, one-a-minute samples, threshold events) is decided by the small trackers of
:mod:`exporter.trackers`, which it calls. What readers are shown is the view layer's
(:mod:`exporter.views`).

Written only by the event-loop thread (feeds and REST pollers call :meth:`MarketState.apply`);
read at scrape time by the view layer in the HTTP server thread. Readers take copies
(``tuple(deque)``, ``list(dict.values())``, ``array[:]`` are single C calls, so they are consistent
under the GIL) and never mutate anything.

Rolling windows are :class:`Window` objects: flat ``array('d')`` storage, 8 bytes a value and no
Python object per sample, so 2,000 instruments with full windows stay small and the garbage
collector has nothing to walk in them.
"""

from __future__ import annotations

import copy
import math
import struct
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from exporter.model import (
    EIGHT_HOURS,
    AnchorBackfill,
    Exchange,
    FundingSettlement,
    FundingUpdate,
    HeartbeatRequest,
    HistoryBackfill,
    InstrumentInfo,
    InsuranceFund,
    Liquidation,
    LongShortRatio,
    MarketUpdate,
    OpenInterestUpdate,
    Record,
    Rejected,
    Side,
    SubscriptionError,
)
from exporter.sink import ExchangeClock, RestHealth, StreamHealth
from exporter.trackers import (
    ANCHOR_SAMPLE_SECONDS,
    CONTINUOUS_OBSERVATION_SECONDS,
    LIQ_EVENT_WINDOW_SECONDS,
    NFT_QUIET_STEP_S,
    NFT_SETTLED_NEAR_S,
    OI_SAMPLE_SECONDS,
    BaseFlow,
    EventLog,
    FundingThreshold,
    LiquidationThreshold,
    Sampler,
    SettlementTracker,
    ThresholdEvent,
)

if TYPE_CHECKING:
    from exporter.feeds.base import FeedContext

__all__ = [
    "ANCHOR_SAMPLE_SECONDS",
    "CONTINUOUS_OBSERVATION_SECONDS",
    "OI_SAMPLE_SECONDS",
    "FutureState",
    "InstrumentState",
    "Key",
    "MarketState",
    "RestHealth",
    "StreamHealth",
    "ThresholdEvent",
    "Window",
    "record_rows",
    "window_ends",
]

Key = tuple[Exchange, str]

# Bounds that keep memory flat whatever the uptime.
MAX_SETTLEMENTS = 2000  # the floor of the settlement buffer: 1 h funding for ~83 days
SHORTEST_SETTLEMENT_S = 3600.0  # the shortest periodic funding interval an exchange uses (1 h)


def settlement_capacity(span_seconds: float) -> int:
    """Settlements a window of ``span_seconds`` can hold at 1 h funding (plus a day): the buffer is
    sized from the z-score window, so a long window is never cut short by a count bound."""
    return max(MAX_SETTLEMENTS, math.ceil(span_seconds / SHORTEST_SETTLEMENT_S) + 24)


OI_SPAN_SECONDS = 4 * 3600.0 + 900.0  # the 4 h change, and a sample up to 15 min before its start
MARK_MINUTES = 4 * 60 + 8  # 1-minute mark closes: the 4 h realised volatility (241) and a few spare
LIQ_FLOW_WINDOW_SECONDS = 3600.0
_LONG = Side.LONG  # bound once: a module global is one dict lookup, Side.LONG two


class Window:
    """Time-ordered records of ``width`` floats (time first), bounded by count and by time span.

    Iteration and indexing work on a copy taken in one C call, so a reader in another thread sees a
    consistent window while the event loop appends.
    """

    __slots__ = ("_a", "maxlen", "span", "width")

    def __init__(self, width: int, maxlen: int, span: float | None = None) -> None:
        self._a = array("d")
        self.width = width
        self.maxlen = maxlen
        self.span = span  # records older than (newest time - span) are dropped

    def append(self, record: Iterable[float]) -> None:
        self._a.extend(record)
        self._trim()

    def extend(self, records: Iterable[Iterable[float]]) -> None:
        a = self._a
        for r in records:
            a.extend(r)
        self._trim()

    def replace(self, records: Iterable[Iterable[float]]) -> None:
        """Swap in a whole new (sorted) content at once: readers see the old or the new, never a mix."""
        fresh = array("d")
        for r in records:
            fresh.extend(r)
        self._a = fresh
        self._trim()

    def clear(self) -> None:
        self._a = array("d")

    def last_time(self) -> float | None:
        a = self._a
        return a[len(a) - self.width] if a else None

    def _trim(self) -> None:
        a, w = self._a, self.width
        n = len(a) // w
        drop = n - self.maxlen if n > self.maxlen else 0
        span = self.span
        if span is not None and n:
            cutoff = a[(n - 1) * w] - span
            # One sample a minute leaves about as one arrives: look at the oldest two before searching
            # (the search is ~10 Python steps a call, on every sample of every full window)
            if a[drop * w] >= cutoff:
                if drop:
                    del a[: drop * w]
                return
            if drop + 1 < n and a[(drop + 1) * w] >= cutoff:
                del a[: (drop + 1) * w]
                return
            lo, hi = drop, n
            while lo < hi:  # first record at or after the cutoff
                mid = (lo + hi) // 2
                if a[mid * w] < cutoff:
                    lo = mid + 1
                else:
                    hi = mid
            drop = lo
        if drop:
            del a[: drop * w]

    def __len__(self) -> int:
        return len(self._a) // self.width

    def __bool__(self) -> bool:
        return len(self._a) > 0

    def __iter__(self) -> Iterator[tuple[float, ...]]:
        data, w = self._a[:], self.width
        # zip over strided slices builds the record tuples in C: ~30x a Python generator
        return zip(*(data[i::w] for i in range(w)), strict=False)

    def raw(self) -> array:
        """A copy of the flat storage (time, v1, ..., time, v1, ...), for numpy.frombuffer."""
        return self._a[:]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return (self.width, self.maxlen, self.span, self._a) == (other.width, other.maxlen, other.span, other._a)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Window(width={self.width}, records={len(self)}, span={self.span})"

    def __getitem__(self, index: int) -> tuple[float, ...]:
        w = self.width
        if index < 0:  # relative to the end: one slice, atomic, no copy of the whole window
            rec = self._a[index * w : (index + 1) * w or None]
            if len(rec) != w:
                raise IndexError("window index out of range")
            return tuple(rec)
        data = self._a[:]
        n = len(data) // w
        if index >= n:
            raise IndexError("window index out of range")
        return tuple(data[index * w : (index + 1) * w])


# The values every market update writes live in flat arrays of floats, one record of RECORD floats per
# instrument (Records), not as float objects on the instrument: at thousands of instruments an update
# then writes two cache lines of its record instead of freeing the float objects it replaces, each
# scattered in memory (a cache miss each) and reads its trackers' hints from the same lines.
# InstrumentState reads and writes them through properties of the same names and meanings; None is
# stored as NaN (no parser lets a NaN through: see exporter.feeds.validate).
NONE = math.nan
# field -> (attribute, default, optional: NaN reads as None); the order is the record's layout: what
# every price/funding update touches first (one 64-byte line), open interest and hints in the second
RECORD_FIELDS: tuple[tuple[str, float, bool], ...] = (
    ("event_time", NONE, True),  # exchange's own timestamp of the last update
    ("mark_price", NONE, True),
    ("index_price", NONE, True),
    ("price_at", 0.0, False),  # receive times (wall clock, Unix seconds); 0.0 = never received
    ("funding_rate", NONE, True),  # per the instrument's own interval
    ("funding_at", 0.0, False),
    ("next_funding_time", NONE, True),
    # the least of mark_minute_end and anchor_sample_due: the one hint every update reads
    ("due", 0.0, False),
    # |rate| per the instrument's interval at which FundingThreshold may see a change: at or above
    # it when not extreme (positive), below minus it when extreme (negative); inf: no interval known
    ("funding_band", math.inf, False),
    ("open_interest_base", NONE, True),
    ("open_interest_usd", NONE, True),
    ("oi_at", 0.0, False),
    # The trackers' hints: nothing is due before these times, so the hot path skips their calls
    # (the sampler's one-a-minute samples, the hourly observation of continuous funding, the close
    # of the mark minute: a mark at or after mark_minute_end closes the minute in progress)
    ("oi_sample_due", 0.0, False),
    ("continuous_due", 0.0, False),
    ("mark_minute_end", 0.0, False),
    ("anchor_sample_due", 0.0, False),
    ("premium", NONE, True),  # exchange-published premium index
    ("funding_interval_s", NONE, True),
    # funding_interval_s or the instrument list's interval (0.0: unknown): what the 8 h figure uses
    ("interval_eff", 0.0, False),
    ("funding_cap", NONE, True),
    ("funding_floor", NONE, True),
    # the rate (per 8 h) is at or beyond the event limit (FundingThreshold): 1.0, else 0.0
    ("funding_extreme", 0.0, False),
    ("spare_1", 0.0, False),
    ("spare_2", 0.0, False),
)
(
    F_EVENT_TIME,
    F_MARK,
    F_INDEX,
    F_PRICE_AT,
    F_RATE,
    F_FUNDING_AT,
    F_NFT,
    F_DUE,
    F_BAND,
    F_OI_BASE,
    F_OI_USD,
    F_OI_AT,
    F_OI_DUE,
    F_CONTINUOUS_DUE,
    F_MARK_MINUTE_END,
    F_ANCHOR_DUE,
    F_PREMIUM,
    F_INTERVAL,
    F_INTERVAL_EFF,
    F_CAP,
    F_FLOOR,
    F_EXTREME,
    _F_SPARE_1,
    _F_SPARE_2,
) = range(len(RECORD_FIELDS))
RECORD = len(RECORD_FIELDS)  # 24 floats: three 64-byte lines
_DEFAULTS_VIEW = memoryview(array("d", [d for _, d, _ in RECORD_FIELDS]))
_BAND_MARGIN = 1e-9  # the band errs towards calling the tracker, which decides exactly
_LINE_FLOATS = 8  # a 64-byte cache line
# the first six fields of a record in one call (event time, mark, index, price time, rate, funding time)
_put_first6 = struct.Struct("=6d").pack_into
assert tuple(range(6)) == (F_EVENT_TIME, F_MARK, F_INDEX, F_PRICE_AT, F_RATE, F_FUNDING_AT)


class Records:
    """The per-update values of a set of instruments: a record of RECORD floats each, in flat arrays
    of ``chunk`` records allocated as needed (never resized: each record is a memoryview of its
    chunk, which pins its size), each record aligned to a cache line. Records are added, never moved
    or removed; a reader in another thread reads one value in one C call."""

    __slots__ = ("_chunks", "_free", "_view", "chunk", "funding_limit_8h")

    def __init__(self, funding_limit_8h: float = math.inf, chunk: int = 256) -> None:
        self.funding_limit_8h = funding_limit_8h  # FundingThreshold's limit, for the funding band
        self.chunk = chunk
        self._chunks: list[array] = []
        self._view: Any = None  # memoryview of doubles of the newest chunk (typeshed types items as int)
        self._free: list[int] = []  # offsets of the newest chunk's unused records, last first

    def add(self) -> Any:
        """A new record (a memoryview of RECORD doubles) holding the defaults."""
        if not self._free:
            a = array("d", bytes(8 * RECORD * (self.chunk + 1)))  # a record's room to spare for the alignment
            address = a.buffer_info()[0]
            skip = (-address // a.itemsize) % _LINE_FLOATS  # floats up to the next line boundary
            self._chunks.append(a)
            self._view = memoryview(a)
            self._free = [skip + k * RECORD for k in range(self.chunk - 1, -1, -1)]
        o = self._free.pop()
        record = self._view[o : o + RECORD]
        record[:] = _DEFAULTS_VIEW
        return record


def _field(k: int, optional: bool) -> property:
    if optional:

        def get(self: InstrumentState) -> float | None:
            v = self._r[k]
            return None if v != v else v

        def put(self: InstrumentState, v: float | None) -> None:
            self._r[k] = NONE if v is None else v

    else:

        def get(self: InstrumentState) -> float | None:
            return self._r[k]

        def put(self: InstrumentState, v: float | None) -> None:
            self._r[k] = v

    return property(get, put)


def _hint(k: int) -> property:
    def get(self: InstrumentState) -> float:
        return self._r[k]

    def put(self: InstrumentState, v: float) -> None:
        r = self._r
        r[k] = v
        a = r[F_MARK_MINUTE_END]
        b = r[F_ANCHOR_DUE]
        r[F_DUE] = a if a < b else b  # not min() over a generator: ~0.5 us a sample

    return property(get, put)


if TYPE_CHECKING:  # what the properties read and take, for the type checker

    class _Optional:
        def __init__(self, k: int) -> None: ...
        def __get__(self, obj: object, owner: object = None) -> float | None: ...
        def __set__(self, obj: object, v: float | None) -> None: ...

    class _Value:
        def __init__(self, k: int) -> None: ...
        def __get__(self, obj: object, owner: object = None) -> float: ...
        def __set__(self, obj: object, v: float) -> None: ...

    _Hint = _Value

else:

    def _Optional(k: int) -> property:
        return _field(k, True)

    def _Value(k: int) -> property:
        return _field(k, False)

    _Hint = _hint


class InstrumentState:
    """One perpetual's latest values, receive times and rolling windows.

    The per-update values (see RECORD_FIELDS) are properties backed by the instrument's record in
    the owning state's Records; an InstrumentState made alone gets a record of its own."""

    __slots__ = (
        "_info",
        "_r",
        "_records",
        "anchor_samples",
        "liq_flow",
        "liq_long_count",
        "liq_long_usd",
        "liq_recent",
        "liq_short_count",
        "liq_short_usd",
        "long_short_ratio",
        "mark_minute",
        "mark_minutes",
        "oi_samples",
        "ratio_at",
        "settlements",
        "settlements_version",
    )

    # the per-update values, in the record (see RECORD_FIELDS for their meanings)
    event_time = _Optional(F_EVENT_TIME)
    mark_price = _Optional(F_MARK)
    index_price = _Optional(F_INDEX)
    price_at = _Value(F_PRICE_AT)
    premium = _Optional(F_PREMIUM)
    funding_rate = _Optional(F_RATE)
    next_funding_time = _Optional(F_NFT)
    funding_at = _Value(F_FUNDING_AT)
    funding_cap = _Optional(F_CAP)
    funding_floor = _Optional(F_FLOOR)
    open_interest_base = _Optional(F_OI_BASE)
    open_interest_usd = _Optional(F_OI_USD)
    oi_at = _Value(F_OI_AT)
    mark_minute_end = _Hint(F_MARK_MINUTE_END)
    anchor_sample_due = _Hint(F_ANCHOR_DUE)
    oi_sample_due = _Value(F_OI_DUE)
    continuous_due = _Value(F_CONTINUOUS_DUE)

    def __init__(
        self,
        info: InstrumentInfo,
        settlements: Window | None = None,
        anchor_samples: Window | None = None,
        records: Records | None = None,
    ) -> None:
        self._records = records if records is not None else Records(chunk=1)
        self._r: Any = self._records.add()
        self._info = info
        self._refresh_interval()
        self.long_short_ratio: float | None = None
        self.ratio_at = 0.0
        # (funding_time, rate, interval_s the rate was for; 0 = unknown): rates are per *their* interval,
        # so a window that spans an interval change (Binance moves capped symbols to 1 h) can be rescaled;
        # span set by MarketState from the z-score window
        self.settlements = settlements if settlements is not None else Window(3, MAX_SETTLEMENTS)
        self.settlements_version = 0  # bumped on every change, so readers can cache window stats
        # (time, funding rate scaled to 8 h, premium), one a minute; span = the anchor regression window
        self.anchor_samples = anchor_samples if anchor_samples is not None else Window(3, 2000)
        # (time, open_interest_usd), one a minute (backfilled: one per 5 min), 4 h 15 min (1 h, 4 h changes)
        self.oi_samples = Window(2, 300, OI_SPAN_SECONDS)
        # (minute start, last mark of that minute) of complete minutes, exchange time (realised volatility);
        # the minute in progress starts at mark_minute (-1: no mark yet) and its close so far is mark_price
        self.mark_minutes = Window(2, MARK_MINUTES)
        self.mark_minute = -1.0
        # liquidations seen on the public stream, per side of the liquidated position
        # (a slot per side, not a dict keyed by Side: a liquidation's two dict updates cost ~6 % of its frame)
        self.liq_long_count = 0
        self.liq_short_count = 0
        self.liq_long_usd = 0.0
        self.liq_short_usd = 0.0
        self.liq_recent: deque[Liquidation] = deque(maxlen=20000)  # the last hour's, oldest first
        # its base's last-minute flow (LiquidationThreshold's), found once; the tracker's, not a value of the instrument
        self.liq_flow: BaseFlow | None = None

    @property
    def record(self) -> Any:
        """This instrument's record of per-update values (a memoryview of RECORD doubles)."""
        return self._r

    @property
    def info(self) -> InstrumentInfo:
        return self._info

    @info.setter
    def info(self, info: InstrumentInfo) -> None:
        self._info = info
        self._refresh_interval()

    def _refresh_interval(self) -> None:
        """The effective interval and the funding band follow the interval and the extreme flag."""
        r = self._r
        iv = self.funding_interval_s or self._info.funding_interval_s or 0.0
        r[F_INTERVAL_EFF] = iv
        if not iv:
            r[F_BAND] = math.inf  # FundingThreshold looks at nothing without an interval
            return
        band = self._records.funding_limit_8h * iv / EIGHT_HOURS
        r[F_BAND] = -band * (1.0 + _BAND_MARGIN) if r[F_EXTREME] else band * (1.0 - _BAND_MARGIN)

    @property
    def funding_interval_s(self) -> float | None:
        v = self._r[F_INTERVAL]
        return None if v != v else v

    @funding_interval_s.setter
    def funding_interval_s(self, v: float | None) -> None:
        self._r[F_INTERVAL] = NONE if v is None else v
        self._refresh_interval()

    @property
    def funding_extreme(self) -> bool:
        """The rate (per 8 h) is at or beyond the event limit (FundingThreshold)."""
        return self._r[F_EXTREME] != 0.0

    @funding_extreme.setter
    def funding_extreme(self, v: bool) -> None:
        self._r[F_EXTREME] = 1.0 if v else 0.0
        self._refresh_interval()

    @property
    def key(self) -> Key:
        return (self._info.exchange, self._info.instrument)

    @property
    def interval_s(self) -> float | None:
        return self.funding_interval_s or self._info.funding_interval_s

    # every slot but the record, the frozen facts and the tracker's shared flow: one list with __slots__
    _COPIED = tuple(n for n in __slots__ if n not in ("_info", "_r", "_records", "liq_flow"))

    def __deepcopy__(self, memo: dict[int, object]) -> InstrumentState:
        """A copy with a record of its own (a memoryview is not copied): the state as it was."""
        twin = InstrumentState.__new__(InstrumentState)
        memo[id(self)] = twin
        twin._records = Records(self._records.funding_limit_8h, chunk=1)
        twin._r = twin._records.add()
        twin._r[:] = self._r
        twin._info = self._info  # frozen
        for name in self._COPIED:
            setattr(twin, name, copy.deepcopy(getattr(self, name), memo))
        twin.liq_flow = self.liq_flow  # the tracker's, shared
        return twin

    def _compared(self) -> tuple[object, ...]:
        return (
            self._info,
            tuple(None if v != v else v for v in self._r.tolist()),  # NaN (None) equals NaN here
            *(getattr(self, name) for name in self._COPIED),
        )  # liq_flow is the tracker's, not a value of the instrument

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InstrumentState):
            return NotImplemented
        return self._compared() == other._compared()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"InstrumentState({self._info.exchange.value} {self._info.instrument}, mark={self.mark_price})"

    def settlement_window(self) -> tuple[tuple[float, float], ...]:
        """(funding_time, rate) pairs as settled, oldest first; a copy safe to use from another thread."""
        data = self.settlements.raw()
        return tuple(zip(data[0::3], data[1::3], strict=True))

    def settlement_window_in(self, interval_s: float | None) -> tuple[tuple[float, float], ...]:
        """(funding_time, rate) with every rate rescaled to ``interval_s`` (the current interval), so
        statistics over a window that spans an interval change compare like with like."""
        data = self.settlements.raw()
        times, rates, intervals = data[0::3], data[1::3], data[2::3]
        if not interval_s or intervals.count(interval_s) + intervals.count(0.0) == len(intervals):
            return tuple(zip(times, rates, strict=True))  # the usual case: nothing to rescale, all in C
        return tuple((t, r * interval_s / iv if iv else r) for t, r, iv in zip(times, rates, intervals, strict=True))


def record_rows(instruments: Iterable[InstrumentState]) -> bytes:
    """The per-update values of ``instruments``, in order, as one run of RECORD doubles each (value
    ``F_x`` of the i-th instrument at double ``i * RECORD + F_x``; stored None is NaN, as in the
    record): what a reader of every instrument at once (the scrape's views) takes in one C-level
    copy instead of a property call per value. Each record is copied whole, so a value is never
    torn; the event loop may write between two records."""
    return b"".join([st._r for st in instruments])


def window_ends(windows: Iterable[Window], first: bool = True) -> list[tuple[float, ...]]:
    """Each window's (records, first time, last time), -inf times when empty; without the first time
    when ``first`` is false (a cache line less a window): what tells a reader of every instrument
    (the scrape's caches) whether a window changed since it last looked, without a copy of it or a
    method call per value."""
    if first:
        empty: tuple[float, ...] = (0, -math.inf, -math.inf)
        return [(len(a) // w.width, a[0], a[-w.width]) if (a := w._a) else empty for w in windows]
    empty = (0, -math.inf)
    return [(len(a) // w.width, a[-w.width]) if (a := w._a) else empty for w in windows]


def window_storage(windows: Iterable[Window]) -> list[array]:
    """Each window's flat storage object itself, not a copy: a reader that keeps sums over a window
    reads its ends from it (a slice of it is one C call). While a window keeps the same object, records
    are only appended to it and cut from its front; ``replace`` and ``clear`` swap in another one."""
    return [w._a for w in windows]


@dataclass(slots=True)
class FutureState:
    """A dated future: its latest prices and when they arrived (0.0 = never)."""

    info: InstrumentInfo
    mark_price: float | None = None
    index_price: float | None = None  # the index the exchange sends with the future, if any
    settle_estimate: float | None = None  # estimated delivery price (Binance P), with price_at
    price_at: float = 0.0
    event_time: float | None = None

    @property
    def key(self) -> Key:
        return (self.info.exchange, self.info.instrument)


class MarketState:
    """Everything the exporter knows now. See the module docstring for the threading rule."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        funding_event_rate_8h: float = 0.0005,
        liquidation_event_usd_per_minute: float = 5_000_000.0,
        settlement_span_seconds: float = 31 * 86400.0,
        anchor_span_seconds: float = 6 * 3600.0,
    ) -> None:
        self.clock = clock
        # Windows keep a little more than the analytics windows (z-score, anchor regression) use.
        self._settlement_span = settlement_span_seconds
        self._settlement_capacity = settlement_capacity(settlement_span_seconds)
        self._anchor_span = anchor_span_seconds + ANCHOR_SAMPLE_SECONDS
        self.started_at = clock()
        self.instruments: dict[Key, InstrumentState] = {}
        # The same states by exchange, then instrument id: the hot path looks up the frame's id
        # without building a key tuple, and never reads a stored tuple to compare it (a cache miss
        # per update at thousands of instruments).
        self._by_exchange: dict[Exchange, dict[str, InstrumentState]] = {}
        # The market-update path finds the instrument's record of per-update values (Records) and
        # touches the InstrumentState object only when a tracker is called.
        self._records = Records(funding_event_rate_8h)
        self._record_of: dict[Exchange, dict[str, Any]] = {ex: {} for ex in Exchange}
        # The feed contexts given handles (bind): each with the handles dict it was given, which this
        # state keeps current while the context still holds that very dict.
        self._bound: list[tuple[FeedContext, dict[str, object]]] = []
        self.futures: dict[Key, FutureState] = {}  # dated futures (term structure), kept apart from perpetuals
        self.streams: dict[tuple[Exchange, str], StreamHealth] = {}
        self.rest: dict[tuple[Exchange, str], RestHealth] = {}
        self.clocks: dict[Exchange, ExchangeClock] = {}  # measured exchange clock offsets
        # settlement times that passed unseen (fr_funding_settlements_missed_total)
        self.settlements_missed: dict[Key, int] = {}
        self.insurance: dict[tuple[Exchange, str], tuple[float, float]] = {}  # -> (balance_usd, at)
        self.exchanges: set[Exchange] = set()  # configured exchanges: fr_up is always present for them
        self.unknown_instrument_updates = 0
        self.interval_changes = 0  # funding-interval changes seen on a stream (next-funding-time step)
        # Called (event-loop thread) when a stream shows an interval change; the app refetches facts.
        self.on_interval_change: Callable[[Exchange, str], None] | None = None
        self.rejected_records = 0  # records with a value no parser should have let through (see apply)
        # What a stored value implies beyond itself is decided by small trackers (exporter.trackers).
        log = EventLog()
        self.events: deque[ThresholdEvent] = log.events
        self._settlements = SettlementTracker()
        self._sampler = Sampler()
        self._funding_events = FundingThreshold(funding_event_rate_8h, log)
        self._liquidation_events = LiquidationThreshold(liquidation_event_usd_per_minute, log)
        # per base, the hour windows of its instruments that have seen a liquidation (trimmed together)
        self._liq_hours: dict[str, list[deque[Liquidation]]] = {}

    # ---- registration -------------------------------------------------------------------------

    def register_exchange(self, exchange: Exchange) -> None:
        self.exchanges.add(exchange)

    def register(self, info: InstrumentInfo) -> InstrumentState:
        """Add an instrument (or refresh its static facts, keeping its live values)."""
        self.exchanges.add(info.exchange)
        key = (info.exchange, info.instrument)
        st = self.instruments.get(key)
        if st is None:
            st = InstrumentState(
                info=info,
                settlements=Window(3, self._settlement_capacity, self._settlement_span),
                anchor_samples=Window(3, 2000, self._anchor_span),
                records=self._records,
            )
            self.instruments[key] = st
            self._by_exchange.setdefault(info.exchange, {})[info.instrument] = st
            self._record_of[info.exchange][info.instrument] = st.record
            for ctx, handles in self._bound:  # a bound context following it finds it at once
                if ctx.exchange is info.exchange and ctx.handles is handles and info.instrument in ctx.instruments:
                    handles[info.instrument] = st.record
        else:
            st.info = info
        if info.funding_cap is not None:
            st.funding_cap = info.funding_cap
        if info.funding_floor is not None:
            st.funding_floor = info.funding_floor
        return st

    def bind(self, ctx: FeedContext) -> None:
        """Give ``ctx`` (a feed context whose records come to this state alone) the handles of its
        followed instruments (FeedContext.handles: each the instrument's record), and keep them current:
        registration adds, a relayout gives the new records, while the context holds the dict given.
        Call it again after assigning the context's instruments (the ids it already follows keep theirs).
        A parser passes a handle on in the update, and ``apply_many`` then writes through it without
        looking the id up (a record a relayout left reads as due, and a due update finds its record
        by the id)."""
        handles: dict[str, object] = {}
        self._bound = [(c, h) for c, h in self._bound if c is not ctx and c.handles is h]
        self._bound.append((ctx, handles))
        self._fill(ctx, handles)
        ctx.handles = handles

    def _fill(self, ctx: FeedContext, handles: dict[str, object]) -> None:
        records = self._record_of[ctx.exchange]
        handles.clear()
        handles.update((i, records[i]) for i in ctx.instruments if i in records)

    def relayout(self, exchange: Exchange, order: Iterable[str]) -> bool:
        """Lay the records out again, ``exchange``'s in ``order`` (the order its stream sends them; ids
        not followed are ignored, followed ones not named follow in their present order), every other
        exchange's as they are: a stream that sends its instruments in a fixed order (Binance's
        all-market array) then reads and writes its records, their views and its lookup's entries in
        memory order instead of at addresses its order makes random. Off the hot path (a housekeeping
        step); False, and nothing done, when the order is the present one.

        Every record is copied whole into fresh chunks and each InstrumentState swapped onto its new
        view: a reader in another thread reads an instrument's old record or its new one, each whole;
        the event loop (the only writer) is in this call, so nothing is written in between."""
        present = self._record_of[exchange]
        ranked = dict.fromkeys(i for i in order if i in present)
        ranked.update(dict.fromkeys(present))  # the rest, in their present order (known ones stay put)
        if list(ranked) == list(present):
            return False
        records = Records(self._records.funding_limit_8h, self._records.chunk)
        for ex in Exchange:
            ids = list(ranked) if ex is exchange else list(self._record_of[ex])
            by_id = self._by_exchange.get(ex, {})
            fresh: dict[str, Any] = {}
            for inst in ids:
                st = by_id[inst]
                r = records.add()
                r[:] = st._r
                st._r[F_DUE] = -math.inf  # a handle to the old record: its first read finds the new one
                st._r = r
                st._records = records
                fresh[inst] = r
            self._record_of[ex] = fresh  # one swap: the hot path finds the old records or the new ones
        self._records = records
        for ctx, handles in self._bound:  # the handles given follow (in place: the parser's dict)
            if ctx.handles is handles:
                self._fill(ctx, handles)
        return True

    def record_ids(self, exchange: Exchange) -> list[str]:
        """``exchange``'s followed perpetuals in the order their records lie in memory, as the very
        string objects its lookup is keyed by: a parser's own lookup keyed by them in this order
        (FeedContext.follow_order) touches the key string the store's lookup compares with next."""
        return list(self._record_of[exchange])

    def record_order(self) -> list[Key]:
        """Every followed perpetual, exchange by exchange, in the order their records lie in memory
        (registration order until a relayout)."""
        return [(ex, inst) for ex, records in self._record_of.items() for inst in records]

    def set_futures(self, exchange: Exchange, infos: Iterable[InstrumentInfo]) -> None:
        """The dated futures followed on ``exchange`` now: new ones are added, delisted (expired) ones
        dropped, kept ones keep their live values. One dict swap: readers see the old or the new set."""
        fresh = {k: v for k, v in self.futures.items() if k[0] != exchange}
        for info in infos:
            key = (info.exchange, info.instrument)
            st = self.futures.get(key)
            if st is None:
                st = FutureState(info)
            else:
                st.info = info
            fresh[key] = st
        self.futures = fresh

    def stream(self, exchange: Exchange, stream: str) -> StreamHealth:
        h = self.streams.get((exchange, stream))
        if h is None:
            h = self.streams[(exchange, stream)] = StreamHealth(exchange, stream)
        return h

    def rest_endpoint(self, exchange: Exchange, endpoint: str) -> RestHealth:
        h = self.rest.get((exchange, endpoint))
        if h is None:
            h = self.rest[(exchange, endpoint)] = RestHealth(exchange, endpoint)
        return h

    def exchange_clock(self, exchange: Exchange) -> ExchangeClock:
        c = self.clocks.get(exchange)
        if c is None:
            c = self.clocks[exchange] = ExchangeClock(exchange)
        return c

    # ---- writing ------------------------------------------------------------------------------

    def apply(self, record: Record, received_at: float | None = None) -> None:
        now = self.clock() if received_at is None else received_at
        if isinstance(record, MarketUpdate):
            self.apply_many((record,), now)
        elif isinstance(record, Liquidation):
            self.apply_many((record,), now)  # the liquidation path is written there (one copy)
        elif isinstance(record, FundingSettlement):
            self._apply_settlement(record)
        elif isinstance(record, LongShortRatio):
            st = self.instruments.get((record.exchange, record.instrument))
            if st is None:
                self.unknown_instrument_updates += 1
                return
            st.long_short_ratio = record.ratio
            st.ratio_at = now
        elif isinstance(record, InsuranceFund):
            self.insurance[(record.exchange, record.pool)] = (record.balance_usd, now)
        elif isinstance(record, HistoryBackfill):
            st = self.instruments.get((record.exchange, record.instrument))
            if st is None:
                self.unknown_instrument_updates += 1
                return
            self._sampler.backfill_history(st, record.mark_closes, record.open_interest)
        elif isinstance(record, AnchorBackfill):
            st = self.instruments.get((record.exchange, record.instrument))
            if st is None:
                self.unknown_instrument_updates += 1
                return
            self._sampler.backfill_anchor(st, record.samples)
        elif isinstance(record, HeartbeatRequest | SubscriptionError | Rejected):
            pass  # the connection layer acts on these; nothing to store

    def apply_many(self, records: Iterable[Record], received_at: float | None = None) -> None:
        now = self.clock() if received_at is None else received_at
        # The market-update path is written inside the loop (no method call an update, ~20 ns of a
        # few hundred); the other records are dispatched on their exact type, the hot ones first.
        u: MarketUpdate  # what the loop's body reads: the other records leave it before any market field
        for u in records:  # type: ignore[assignment]  # most frames hold one record: nothing bound ahead
            kind = type(u)
            if kind is not MarketUpdate:
                if kind is Liquidation:
                    # A liquidation, written here (no call a liquidation): counted per side, kept in its
                    # instrument's hour and added to its base's running minute sum (O(1) in instruments).
                    liq: Liquidation = u  # type: ignore[assignment]
                    try:  # subscripts, not .get(): no method call; an unknown one is the rare case
                        st = self._by_exchange[liq.exchange][liq.instrument]
                    except KeyError:
                        self.unknown_instrument_updates += 1
                        continue
                    usd = liq.notional_usd
                    if not 0.0 <= usd < 1e15:  # a counter never takes a NaN, infinite or negative increment
                        self.rejected_records += 1
                        continue
                    at = liq.event_time
                    if not at:  # no exchange time (no parser gives none): the windows order by the receive time
                        at = now
                        liq = msgspec.structs.replace(liq, event_time=now)
                    if liq.side is _LONG:
                        st.liq_long_count += 1
                        st.liq_long_usd += usd
                    else:
                        st.liq_short_count += 1
                        st.liq_short_usd += usd
                    # The windows keep the record itself: no tuple a liquidation, and a gc=False Struct is
                    # nothing the garbage collector walks (a tuple holding the Side member stayed tracked
                    # for its hour). The instrument's hour is trimmed when its base's flow is looked at
                    # (_look_liquidations: at least once a minute while the base's liquidations arrive).
                    st.liq_recent.append(liq)
                    # LiquidationThreshold.observe inline: the base's running minute sum; the tracker
                    # looks only when the sum reaches its gate or its due time has come
                    flow = st.liq_flow
                    if flow is None:
                        flow = self._first_liquidation(st)
                    if at >= now - LIQ_EVENT_WINDOW_SECONDS:  # one older than the minute (a late arrival) never counts
                        flow.entries.append(liq)  # the same record as the instrument's hour
                        flow.total += usd
                    if flow.total >= flow.gate or now >= flow.due:
                        self._look_liquidations(st, flow, now)
                    continue
                if kind is not FundingUpdate:
                    if kind is OpenInterestUpdate:
                        # An open-interest update (OKX open-interest): the market-update path below with
                        # only its fields read (event time, open interest), each value where it puts it.
                        try:  # a subscript, not .get(): no method call; a miss is rare
                            r = self._record_of[u.exchange][u.instrument]
                        except KeyError:
                            self._apply_future(u, now)
                            continue
                        et = u.event_time
                        if et is not None:
                            r[F_EVENT_TIME] = et
                        oi_base = u.open_interest_base
                        oi_usd = u.open_interest_usd
                        if oi_base is not None or oi_usd is not None:
                            if oi_base is not None:
                                r[F_OI_BASE] = oi_base
                            if oi_usd is not None:
                                r[F_OI_USD] = oi_usd
                            else:
                                m = r[F_MARK]
                                if m == m:  # a mark known (not NaN)
                                    r[F_OI_USD] = oi_base * m  # type: ignore[operator]  # not None here
                            r[F_OI_AT] = now
                            if now >= r[F_OI_DUE]:
                                self._sampler.open_interest(self._state_of(u), now)
                        if now >= r[F_ANCHOR_DUE] and r[F_RATE] == r[F_RATE]:  # see the funding path's
                            self._anchor_due(r, u, now)
                    elif kind is FundingSettlement:  # OKX repeats the last settlement in every funding push
                        self._apply_settlement(u)  # type: ignore[arg-type]
                    else:
                        self.apply(u, now)
                    continue
                # A funding update (OKX funding-rate): the market-update path below with only the
                # funding fields read (no price, open interest, 8 h rate or ticker flag: none is set),
                # so each value goes where the general path puts it, in the same order.
                try:  # a subscript, not .get(): no method call; a miss is rare
                    r = self._record_of[u.exchange][u.instrument]
                except KeyError:
                    self._apply_future(u, now)
                    continue
                et = u.event_time
                if et is not None:
                    r[F_EVENT_TIME] = et
                v = u.premium
                if v is not None:
                    r[F_PREMIUM] = v
                v = u.funding_interval_s
                prev_iv: float | None = None  # the interval before this update
                if v is not None:
                    if v == r[F_INTERVAL] and v:  # as stored: the effective interval is this one, the band stays
                        prev_iv = v
                    else:
                        prev_iv = r[F_INTERVAL_EFF] or None
                        if v and v == r[F_INTERVAL_EFF]:
                            r[F_INTERVAL] = v
                        else:
                            self._state_of(u).funding_interval_s = v
                v = u.funding_cap
                if v is not None:
                    r[F_CAP] = v
                v = u.funding_floor
                if v is not None:
                    r[F_FLOOR] = v
                nft = u.next_funding_time
                if nft is not None and nft != r[F_NFT]:  # NaN (none yet) is never equal
                    self._next_funding_time(r, u, nft, prev_iv, now)
                rate = u.funding_rate
                if rate is not None:
                    r[F_RATE] = rate
                    r[F_FUNDING_AT] = now
                    band = r[F_BAND]
                    if (rate >= band or rate <= -band) if band >= 0.0 else (band < rate < -band):
                        self._funding_events.observe(self._state_of(u), rate, now)
                elif nft is not None:
                    r[F_FUNDING_AT] = now
                # The anchor sample, the one hint this path serves (no mark minute to close): its due time
                # read alone, not the record's ``due`` (the least of it and the mark minute's end; a
                # record without marks has that at 0, always passed, and paid three reads a push). The
                # same decision: nothing here moves the anchor's due time, and once it is passed so is
                # ``due``.
                if now >= r[F_ANCHOR_DUE] and r[F_RATE] == r[F_RATE]:
                    self._anchor_due(r, u, now)
                continue
            # The hot path (every update of every stream): store the fields present in the instrument's
            # record (two cache lines of flat floats), then let the trackers see the values they follow.
            # The state object is looked up only for a tracker call. Fields are read once into locals.
            r = u.handle  # the record itself, when the parser had it from this state (bind): no lookup
            if r is None:
                r = self._record_of[u.exchange].get(u.instrument)  # a dict for every exchange: no .get() on it
                if r is None:
                    self._apply_future(u, now)  # a miss only: the perpetuals' path is unchanged
                    continue
            et = u.event_time
            t = et if et is not None else now
            # one read tells whether the mark minute or the anchor sample may be due
            due = (t if t > now else now) >= r[F_DUE]
            if due and u.handle is not None:
                # Rare (a minute's close, an anchor sample): the record found by the id, as without a
                # handle. A record a relayout left reads as due (-inf), so a handle to it, should an
                # update still carry one, never writes there: the instrument's record now is found.
                r = self._record_of[u.exchange].get(u.instrument)
                if r is None:
                    self._apply_future(u, now)
                    continue
                due = (t if t > now else now) >= r[F_DUE]
            mark = u.mark_price
            index = u.index_price
            rate_8h = u.funding_rate_8h
            rate = u.funding_rate
            if rate is None:
                rate = rate_8h
            # A full update (Binance's arrays, Deribit's tickers) writes its first six values (event time,
            # mark, index, price time, rate, funding time) in one C call, after the trackers that read the
            # values they replace (the mark minute, the next funding time): a memoryview item each costs ~4x.
            full = et is not None and mark is not None and index is not None and rate is not None
            if full:
                if due and t >= r[F_MARK_MINUTE_END]:
                    self._sampler.mark_minute(self._state_of(u), t)
            elif mark is not None or index is not None:
                if et is not None:
                    r[F_EVENT_TIME] = et
                if mark is not None:
                    # the first mark of a later minute closes the one in progress with the mark before it
                    if due and t >= r[F_MARK_MINUTE_END]:
                        self._sampler.mark_minute(self._state_of(u), t)
                    r[F_MARK] = mark
                if index is not None:
                    r[F_INDEX] = index
                r[F_PRICE_AT] = now
            else:
                if et is not None:
                    r[F_EVENT_TIME] = et
                if u.confirms_ticker and (r[F_MARK] == r[F_MARK] or r[F_INDEX] == r[F_INDEX]):
                    r[F_PRICE_AT] = now  # a delta without prices: the known ones are still current
            v = u.premium
            if v is not None:
                r[F_PREMIUM] = v
            v = u.funding_interval_s
            prev_interval: float | None = None
            if v is not None:
                prev_interval = r[F_INTERVAL_EFF] or None  # the interval before this update
                if v and v == r[F_INTERVAL_EFF]:
                    r[F_INTERVAL] = v  # as known: the band stays
                else:
                    self._state_of(u).funding_interval_s = v
            v = u.funding_cap
            if v is not None:
                r[F_CAP] = v
            v = u.funding_floor
            if v is not None:
                r[F_FLOOR] = v
            nft = u.next_funding_time
            if rate is not None or nft is not None:
                if nft is not None and nft != r[F_NFT]:  # NaN (none yet) is never equal
                    self._next_funding_time(r, u, nft, prev_interval, now)
                if full:
                    _put_first6(r, 0, et, mark, index, now, rate, now)
                elif rate is not None:
                    r[F_RATE] = rate
                    r[F_FUNDING_AT] = now
                else:
                    r[F_FUNDING_AT] = now
                if rate is not None:
                    if rate_8h is not None and t >= r[F_CONTINUOUS_DUE] and r[F_NFT] != r[F_NFT]:
                        # continuous funding (no next time): an observation an hour
                        self._settlements.continuous(self._state_of(u), rate_8h, et, now)
                    # FundingThreshold looks only where the rate may have crossed its limit
                    band = r[F_BAND]  # |rate| >= band when positive, |rate| < -band when negative (no abs() call)
                    if (rate >= band or rate <= -band) if band >= 0.0 else (band < rate < -band):
                        self._funding_events.observe(self._state_of(u), rate, now)
            elif u.confirms_ticker and r[F_RATE] == r[F_RATE]:  # a delta omits the unchanged: still current
                r[F_FUNDING_AT] = now
            oi_base = u.open_interest_base
            oi_usd = u.open_interest_usd
            if oi_base is not None or oi_usd is not None:
                if oi_base is not None:
                    r[F_OI_BASE] = oi_base
                if oi_usd is not None:
                    r[F_OI_USD] = oi_usd
                elif oi_base is not None:
                    m = mark if mark is not None else r[F_MARK]
                    if m == m:  # a mark known (not NaN)
                        r[F_OI_USD] = oi_base * m
                r[F_OI_AT] = now
                if now >= r[F_OI_DUE]:  # without a USD figure yet the sampler sets the hint a minute on
                    self._sampler.open_interest(self._state_of(u), now)
            elif u.confirms_ticker and (r[F_OI_USD] == r[F_OI_USD] or r[F_OI_BASE] == r[F_OI_BASE]):
                r[F_OI_AT] = now
            if due and r[F_RATE] == r[F_RATE] and now >= r[F_ANCHOR_DUE]:  # no rate yet: no sample to take
                self._anchor_due(r, u, now)

    def _apply_settlement(self, record: FundingSettlement) -> None:
        try:  # subscripts, not .get(): no method call; an unknown one is the rare case
            st = self._by_exchange[record.exchange][record.instrument]
        except KeyError:
            self.unknown_instrument_updates += 1
            return
        iv = record.interval_s
        if iv and st.funding_interval_s is None:
            st.funding_interval_s = iv
        win = st.settlements
        a = win._a  # Window.last_time() inline (this module's class): no call a push
        if a and record.funding_time == a[len(a) - win.width]:
            return  # the newest settlement again (OKX repeats it in every push): known times stay
        self.add_settlements(st, [(record.funding_time, record.rate)], iv)

    def add_settlements(
        self, st: InstrumentState, pairs: Iterable[tuple[float, float]], interval_s: float | None = None
    ) -> None:
        """Merge settled (time, rate) pairs into the instrument's settlement window (sorted, no duplicates).

        ``interval_s``: the interval the rates were for; default the instrument's current one."""
        self._settlements.merge(st, pairs, interval_s)

    def _state_of(self, u: MarketUpdate) -> InstrumentState:
        """The state of a followed perpetual (its record was found), for a tracker call."""
        return self._by_exchange[u.exchange][u.instrument]

    def _anchor_due(self, r: Any, u: MarketUpdate, now: float) -> None:
        """The anchor sample is due (a rate known): taken, but not without a premium (the sampler would
        return having changed nothing, and a stream without prices, e.g. Bybit deltas before any
        snapshot, would call it on every update) unless the interval is unknown (the sampler then sets
        the hint a minute on)."""
        i = r[F_INDEX]
        if (r[F_MARK] == r[F_MARK] and i == i and i != 0.0) or r[F_PREMIUM] == r[F_PREMIUM] or not r[F_INTERVAL_EFF]:
            self._sampler.anchor(self._state_of(u), now)

    def _next_funding_time(self, r: Any, u: MarketUpdate, nft: float, prev_interval: float | None, now: float) -> None:
        """A next funding time that differs from the stored one (called only then: rare), stored.

        A step the settlement tracker would find nothing in is only stored (a next time that creeps
        or is corrected): the tracker is called when the old time may have settled (near it or past
        it), for a step that may be a new interval (about an hour or more) and for one that may skip
        a settlement (over 1.5 intervals): SettlementTracker.next_funding/missed."""
        old = r[F_NFT]
        iv = prev_interval or r[F_INTERVAL_EFF]
        if not (
            (nft <= old + 1.0 or (nft - old < NFT_QUIET_STEP_S and now < old - NFT_SETTLED_NEAR_S))
            and (not iv or nft <= old + 1.5 * iv)
        ):  # NaN (no time yet) fails every comparison: the tracker's
            self._next_funding(self._state_of(u), u, nft, prev_interval, now)
        r[F_NFT] = nft

    def _next_funding(
        self, st: InstrumentState, u: MarketUpdate, nft: float, prev_interval: float | None, now: float
    ) -> None:
        """A new next funding time (the stored one is still the old one): settlement inference."""
        prev_interval = prev_interval or st.interval_s
        changed = self._settlements.next_funding(st, nft, prev_interval, now)
        if changed is not None and u.funding_interval_s is None:
            self._interval_changed(st, changed)
        elif changed is None:
            missed = self._settlements.missed(st, nft, prev_interval)
            if missed:
                key = (st.info.exchange, st.info.instrument)
                self.settlements_missed[key] = self.settlements_missed.get(key, 0) + missed

    def _apply_future(self, u: MarketUpdate, now: float) -> None:
        fs = self.futures.get((u.exchange, u.instrument))
        if fs is None:
            self.unknown_instrument_updates += 1
            return
        if u.event_time is not None:
            fs.event_time = u.event_time
        if u.mark_price is not None:
            fs.mark_price = u.mark_price
            fs.price_at = now
        if u.index_price is not None:
            fs.index_price = u.index_price
            fs.price_at = now
        if u.settle_price_estimate is not None:
            fs.settle_estimate = u.settle_price_estimate
        if u.confirms_ticker and fs.mark_price is not None:
            fs.price_at = now

    def _interval_changed(self, st: InstrumentState, interval_s: float) -> None:
        """The stream showed a new funding interval: use it at once (the 8 h figure, settlements
        from now on) and ask for the instrument's facts (cap, floor) again."""
        st.funding_interval_s = interval_s
        self.interval_changes += 1
        if self.on_interval_change is not None:
            self.on_interval_change(st.info.exchange, st.info.instrument)

    def _first_liquidation(self, st: InstrumentState) -> BaseFlow:
        """The instrument's first liquidation: its base's flow, found once, and its hour window
        listed with the base's (trimmed when the flow is looked at)."""
        base = st.info.base
        flow = st.liq_flow = self._liquidation_events.flow(base)
        self._liq_hours.setdefault(base, []).append(st.liq_recent)
        return flow

    def _look_liquidations(self, st: InstrumentState, flow: BaseFlow, now: float) -> None:
        """The base's flow at its gate or due time (rare: about once a minute per base while its
        liquidations arrive): the tracker looks, and the hour windows of the base's instruments drop
        what left the hour (a few instruments per base, never all of them)."""
        self._liquidation_events.look(st, flow, now)
        horizon = now - LIQ_FLOW_WINDOW_SECONDS
        for recent in self._liq_hours[st.info.base]:
            while recent and recent[0].event_time < horizon:
                recent.popleft()

    # ---- reading helpers (pure, used by collectors and /api/state) ----------------------------

    @staticmethod
    def premium_of(st: InstrumentState) -> float | None:
        if st.mark_price is not None and st.index_price:
            return (st.mark_price - st.index_price) / st.index_price
        return st.premium

    @staticmethod
    def funding_rate_8h(st: InstrumentState) -> float | None:
        """The current rate scaled to an 8 h interval with the instrument's own interval."""
        interval = st.interval_s
        if st.funding_rate is None or not interval:
            return None
        return st.funding_rate * EIGHT_HOURS / interval

    def snapshot(self) -> list[InstrumentState]:
        return list(self.instruments.values())
