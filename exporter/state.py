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

import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.model import (
    EIGHT_HOURS,
    AnchorBackfill,
    Exchange,
    FundingSettlement,
    HeartbeatRequest,
    HistoryBackfill,
    InstrumentInfo,
    InsuranceFund,
    Liquidation,
    LongShortRatio,
    MarketUpdate,
    Record,
    Rejected,
    Side,
    SubscriptionError,
)
from exporter.sink import ExchangeClock, RestHealth, StreamHealth
from exporter.trackers import (
    ANCHOR_SAMPLE_SECONDS,
    CONTINUOUS_OBSERVATION_SECONDS,
    OI_SAMPLE_SECONDS,
    BaseFlow,
    EventLog,
    FundingThreshold,
    LiquidationThreshold,
    Sampler,
    SettlementTracker,
    ThresholdEvent,
)

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
        drop = max(0, n - self.maxlen)
        if self.span is not None and n:
            cutoff = a[(n - 1) * w] - self.span
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


# The values every market update writes live in flat arrays, one slot per instrument (Columns), not as
# float objects on the instrument: at thousands of instruments an update then writes a few dense array
# slots instead of freeing the float objects it replaces, each scattered in memory (a cache miss and a
# pool header each). InstrumentState reads and writes them through properties of the same names and
# meanings; None is stored as NaN (no parser lets a NaN through: see exporter.feeds.validate).
NONE = math.nan
# column -> (attribute, default, optional: NaN reads as None)
COLUMNS: tuple[tuple[str, float, bool], ...] = (
    ("event_time", NONE, True),  # exchange's own timestamp of the last update
    ("mark_price", NONE, True),
    ("index_price", NONE, True),
    ("price_at", 0.0, False),  # receive times (wall clock, Unix seconds); 0.0 = never received
    ("premium", NONE, True),  # exchange-published premium index
    ("funding_rate", NONE, True),  # per the instrument's own interval
    ("next_funding_time", NONE, True),
    ("funding_at", 0.0, False),
    ("funding_interval_s", NONE, True),
    ("funding_cap", NONE, True),
    ("funding_floor", NONE, True),
    ("open_interest_base", NONE, True),
    ("open_interest_usd", NONE, True),
    ("oi_at", 0.0, False),
    # The trackers' hints: nothing is due before these times, so the hot path skips their calls
    # (the mark minute closes at mark_minute_end; the sampler's one-a-minute samples; the hourly
    # observation of continuous funding); "due" is the least of the two every update looks at.
    ("mark_minute_end", 0.0, False),
    ("anchor_sample_due", 0.0, False),
    ("oi_sample_due", 0.0, False),
    ("continuous_due", 0.0, False),
    ("due", 0.0, False),
    # the rate (per 8 h) is at or beyond the event limit (FundingThreshold): 1.0, else 0.0
    ("funding_extreme_flag", 0.0, False),
    # funding_interval_s or the instrument list's interval (0.0: unknown): what the 8 h figure uses
    ("interval_eff", 0.0, False),
    # |rate| per the instrument's interval at which FundingThreshold may see a change: at or above
    # it when not extreme (positive), below minus it when extreme (negative); inf: no interval known
    ("funding_band", math.inf, False),
)
(
    C_EVENT_TIME,
    C_MARK,
    C_INDEX,
    C_PRICE_AT,
    C_PREMIUM,
    C_RATE,
    C_NFT,
    C_FUNDING_AT,
    C_INTERVAL,
    C_CAP,
    C_FLOOR,
    C_OI_BASE,
    C_OI_USD,
    C_OI_AT,
    C_MARK_MINUTE_END,
    C_ANCHOR_DUE,
    C_OI_DUE,
    C_CONTINUOUS_DUE,
    C_DUE,
    C_EXTREME,
    C_INTERVAL_EFF,
    C_BAND,
) = range(len(COLUMNS))
_HINTS = (C_MARK_MINUTE_END, C_ANCHOR_DUE)  # "due" is the least of these (every update looks at both)
_BAND_MARGIN = 1e-9  # the band errs towards calling the tracker, which decides exactly
_DEFAULTS = tuple(d for _, d, _ in COLUMNS)


class Columns:
    """The per-update values of a set of instruments: one flat array of floats per value, one slot per
    instrument (its index). Slots are added, never moved or removed. Written and read through
    memoryviews (half the cost of an array's item access); the arrays are allocated with room to
    spare and replaced by larger copies when full (a view pins its array's size), so keep the Columns,
    not its arrays. A reader in another thread reads one slot in one C call."""

    __slots__ = ("arrays", "count", "funding_limit_8h", "views")

    def __init__(self, funding_limit_8h: float = math.inf, capacity: int = 64) -> None:
        self.funding_limit_8h = funding_limit_8h  # FundingThreshold's limit, for the funding band
        self.count = 0
        self.arrays: tuple[array, ...] = ()
        self.views: tuple[Any, ...] = ()  # memoryviews of doubles (typeshed types their items as int)
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        fresh = tuple(array("d", [d]) * capacity for d in _DEFAULTS)
        n = self.count
        for new, old in zip(fresh, self.arrays, strict=False):
            new[:n] = old[:n]
        self.arrays = fresh
        self.views = tuple(memoryview(a) for a in fresh)

    def add(self) -> int:
        if self.count == len(self.arrays[0]):
            self._allocate(2 * self.count)
        self.count += 1
        return self.count - 1

    def __len__(self) -> int:
        return self.count

    def __deepcopy__(self, memo: dict[int, object]) -> Columns:
        twin = Columns(self.funding_limit_8h, max(1, len(self.arrays[0])))
        twin.count = self.count
        for new, old in zip(twin.arrays, self.arrays, strict=True):
            new[:] = old
        return twin


def _column(k: int, optional: bool) -> property:
    if optional:

        def get(self: InstrumentState) -> float | None:
            v = self._columns.views[k][self._i]
            return None if v != v else v

        def put(self: InstrumentState, v: float | None) -> None:
            self._columns.views[k][self._i] = NONE if v is None else v

    else:

        def get(self: InstrumentState) -> float | None:
            return self._columns.views[k][self._i]

        def put(self: InstrumentState, v: float | None) -> None:
            self._columns.views[k][self._i] = v  # type: ignore[assignment]

    return property(get, put)


def _hint(k: int) -> property:
    def get(self: InstrumentState) -> float:
        return self._columns.views[k][self._i]

    def put(self: InstrumentState, v: float) -> None:
        c, i = self._columns.views, self._i
        c[k][i] = v
        c[C_DUE][i] = min(c[h][i] for h in _HINTS)

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
        return _column(k, True)

    def _Value(k: int) -> property:
        return _column(k, False)

    _Hint = _hint


class InstrumentState:
    """One perpetual's latest values, receive times and rolling windows.

    The per-update values (see COLUMNS) are properties backed by the owning state's Columns; an
    InstrumentState made alone gets Columns of its own."""

    __slots__ = (
        "_columns",
        "_i",
        "_info",
        "anchor_samples",
        "liq_count",
        "liq_flow",
        "liq_notional_usd",
        "liq_recent",
        "long_short_ratio",
        "mark_minute",
        "mark_minutes",
        "oi_samples",
        "ratio_at",
        "settlements",
        "settlements_version",
    )

    # the per-update values, in the Columns (see COLUMNS for their meanings)
    event_time = _Optional(C_EVENT_TIME)
    mark_price = _Optional(C_MARK)
    index_price = _Optional(C_INDEX)
    price_at = _Value(C_PRICE_AT)
    premium = _Optional(C_PREMIUM)
    funding_rate = _Optional(C_RATE)
    next_funding_time = _Optional(C_NFT)
    funding_at = _Value(C_FUNDING_AT)
    funding_cap = _Optional(C_CAP)
    funding_floor = _Optional(C_FLOOR)
    open_interest_base = _Optional(C_OI_BASE)
    open_interest_usd = _Optional(C_OI_USD)
    oi_at = _Value(C_OI_AT)
    mark_minute_end = _Hint(C_MARK_MINUTE_END)
    anchor_sample_due = _Hint(C_ANCHOR_DUE)
    oi_sample_due = _Value(C_OI_DUE)
    continuous_due = _Value(C_CONTINUOUS_DUE)

    def __init__(
        self,
        info: InstrumentInfo,
        settlements: Window | None = None,
        anchor_samples: Window | None = None,
        columns: Columns | None = None,
    ) -> None:
        cols = columns if columns is not None else Columns()
        self._columns = cols
        self._i = cols.add()
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
        self.liq_count: dict[Side, int] = {Side.LONG: 0, Side.SHORT: 0}
        self.liq_notional_usd: dict[Side, float] = {Side.LONG: 0.0, Side.SHORT: 0.0}
        self.liq_recent: deque[tuple[float, Side, float]] = deque(maxlen=20000)
        # its base's last-minute flow (LiquidationThreshold's), found once; the tracker's, not a value of the instrument
        self.liq_flow: BaseFlow | None = None

    @property
    def slot(self) -> int:
        """This instrument's index in its Columns."""
        return self._i

    @property
    def info(self) -> InstrumentInfo:
        return self._info

    @info.setter
    def info(self, info: InstrumentInfo) -> None:
        self._info = info
        self._refresh_interval()

    def _refresh_interval(self) -> None:
        """The effective interval and the funding band follow the interval and the extreme flag."""
        c, i = self._columns.views, self._i
        iv = self.funding_interval_s or self._info.funding_interval_s or 0.0
        c[C_INTERVAL_EFF][i] = iv
        if not iv:
            c[C_BAND][i] = math.inf  # FundingThreshold looks at nothing without an interval
            return
        band = self._columns.funding_limit_8h * iv / EIGHT_HOURS
        c[C_BAND][i] = -band * (1.0 + _BAND_MARGIN) if c[C_EXTREME][i] else band * (1.0 - _BAND_MARGIN)

    @property
    def funding_interval_s(self) -> float | None:
        v = self._columns.views[C_INTERVAL][self._i]
        return None if v != v else v

    @funding_interval_s.setter
    def funding_interval_s(self, v: float | None) -> None:
        self._columns.views[C_INTERVAL][self._i] = NONE if v is None else v
        self._refresh_interval()

    @property
    def funding_extreme(self) -> bool:
        """The rate (per 8 h) is at or beyond the event limit (FundingThreshold)."""
        return self._columns.views[C_EXTREME][self._i] != 0.0

    @funding_extreme.setter
    def funding_extreme(self, v: bool) -> None:
        self._columns.views[C_EXTREME][self._i] = 1.0 if v else 0.0
        self._refresh_interval()

    @property
    def key(self) -> Key:
        return (self._info.exchange, self._info.instrument)

    @property
    def interval_s(self) -> float | None:
        return self.funding_interval_s or self._info.funding_interval_s

    def _compared(self) -> tuple[object, ...]:
        i = self._i
        return (
            self._info,
            tuple(None if v != v else v for v in (a[i] for a in self._columns.views)),  # NaN (None) equals NaN here
            self.long_short_ratio,
            self.ratio_at,
            self.settlements,
            self.settlements_version,
            self.anchor_samples,
            self.oi_samples,
            self.mark_minutes,
            self.mark_minute,
            self.liq_count,
            self.liq_notional_usd,
            self.liq_recent,
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
        # The market-update path finds the instrument's slot in the flat per-update arrays (Columns)
        # and touches the InstrumentState object only when a tracker is called.
        self._columns = Columns(funding_event_rate_8h)
        self._slots: dict[Exchange, dict[str, int]] = {}
        self._states: list[InstrumentState] = []  # by slot
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
        self._liq_window = self._liquidation_events.window_s

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
                columns=self._columns,
            )
            self.instruments[key] = st
            self._by_exchange.setdefault(info.exchange, {})[info.instrument] = st
            self._slots.setdefault(info.exchange, {})[info.instrument] = st.slot
            self._states.append(st)
        else:
            st.info = info
        if info.funding_cap is not None:
            st.funding_cap = info.funding_cap
        if info.funding_floor is not None:
            st.funding_floor = info.funding_floor
        return st

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
            self._apply_market(record, now)
        elif isinstance(record, Liquidation):
            self._apply_liquidation(record, now)
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
        for r in records:  # most frames hold one record: no method bound ahead of the loop
            t = type(r)
            if t is MarketUpdate:  # the hot paths: skip the isinstance chain of apply()
                self._apply_market(r, now)  # type: ignore[arg-type]
            elif t is Liquidation:
                self._apply_liquidation(r, now)  # type: ignore[arg-type]
            elif t is FundingSettlement:  # OKX repeats the last settlement in every funding push
                self._apply_settlement(r)  # type: ignore[arg-type]
            else:
                self.apply(r, now)

    def _apply_settlement(self, record: FundingSettlement) -> None:
        by_id = self._by_exchange.get(record.exchange)
        st = by_id.get(record.instrument) if by_id is not None else None
        if st is None:
            self.unknown_instrument_updates += 1
            return
        iv = record.interval_s
        if iv and st.funding_interval_s is None:
            st.funding_interval_s = iv
        if record.funding_time == st.settlements.last_time():
            return  # the newest settlement again (OKX repeats it in every push): known times stay
        self.add_settlements(st, [(record.funding_time, record.rate)], iv)

    def add_settlements(
        self, st: InstrumentState, pairs: Iterable[tuple[float, float]], interval_s: float | None = None
    ) -> None:
        """Merge settled (time, rate) pairs into the instrument's settlement window (sorted, no duplicates).

        ``interval_s``: the interval the rates were for; default the instrument's current one."""
        self._settlements.merge(st, pairs, interval_s)

    def _apply_market(self, u: MarketUpdate, now: float) -> None:
        # The hot path (every update of every stream): store the fields present in the instrument's
        # slots of the flat arrays (Columns), then let the trackers see the values they follow. The
        # state object is fetched only for a tracker call. Fields and columns are read once into locals.
        by_id = self._slots.get(u.exchange)
        i = by_id.get(u.instrument) if by_id is not None else None
        if i is None:
            self._apply_future(u, now)  # a miss only: the perpetuals' path is unchanged
            return
        (
            et_a,
            mark_a,
            index_a,
            price_at_a,
            premium_a,
            rate_a,
            nft_a,
            funding_at_a,
            interval_a,
            cap_a,
            floor_a,
            oi_base_a,
            oi_usd_a,
            oi_at_a,
            mark_minute_end_a,
            anchor_due_a,
            oi_due_a,
            continuous_due_a,
            due_a,
            _,
            interval_eff_a,
            band_a,
        ) = self._columns.views
        et = u.event_time
        if et is not None:
            et_a[i] = et
            t = et
        else:
            t = now
        # one read tells whether the mark minute or the anchor sample may be due
        due = (t if t > now else now) >= due_a[i]
        mark = u.mark_price
        index = u.index_price
        if mark is not None or index is not None:
            if mark is not None:
                # the first mark of a later minute closes the one in progress with the mark before it
                if due and t >= mark_minute_end_a[i]:
                    self._sampler.mark_minute(self._states[i], t)
                mark_a[i] = mark
            if index is not None:
                index_a[i] = index
            price_at_a[i] = now
        v = u.premium
        if v is not None:
            premium_a[i] = v
        v = u.funding_interval_s
        prev_interval: float | None = None
        if v is not None:
            prev_interval = interval_eff_a[i] or None  # the interval before this update
            if v and v == interval_eff_a[i]:
                interval_a[i] = v  # as known: the band stays
            else:
                self._states[i].funding_interval_s = v
        v = u.funding_cap
        if v is not None:
            cap_a[i] = v
        v = u.funding_floor
        if v is not None:
            floor_a[i] = v
        rate_8h = u.funding_rate_8h
        rate = u.funding_rate
        if rate is None:
            rate = rate_8h
        nft = u.next_funding_time
        if rate is not None or nft is not None:
            if nft is not None and nft != nft_a[i]:  # NaN (none yet) is never equal
                self._next_funding(self._states[i], u, nft, prev_interval, now)
                nft_a[i] = nft
            if rate is not None:
                rate_a[i] = rate
                if rate_8h is not None and t >= continuous_due_a[i] and nft_a[i] != nft_a[i]:
                    # continuous funding (no next time): an observation an hour
                    self._settlements.continuous(self._states[i], rate_8h, et, now)
                # FundingThreshold looks only where the rate may have crossed its limit
                band = band_a[i]
                if (abs(rate) >= band) if band >= 0.0 else (abs(rate) < -band):
                    self._funding_events.observe(self._states[i], rate, now)
            funding_at_a[i] = now
        elif u.confirms_ticker and rate_a[i] == rate_a[i]:  # a delta omits the unchanged: still current
            funding_at_a[i] = now
        oi_base = u.open_interest_base
        oi_usd = u.open_interest_usd
        if oi_base is not None or oi_usd is not None:
            if oi_base is not None:
                oi_base_a[i] = oi_base
            if oi_usd is not None:
                oi_usd_a[i] = oi_usd
            elif oi_base is not None:
                m = mark if mark is not None else mark_a[i]
                if m == m:  # a mark known (not NaN)
                    oi_usd_a[i] = oi_base * m
            oi_at_a[i] = now
            if now >= oi_due_a[i]:
                self._sampler.open_interest(self._states[i], now)
        elif u.confirms_ticker and (oi_usd_a[i] == oi_usd_a[i] or oi_base_a[i] == oi_base_a[i]):
            oi_at_a[i] = now
        if (
            u.confirms_ticker
            and mark is None
            and index is None
            and (mark_a[i] == mark_a[i] or index_a[i] == index_a[i])
        ):
            price_at_a[i] = now
        if due and now >= anchor_due_a[i] and rate_a[i] == rate_a[i]:  # no rate yet: no sample to take
            self._sampler.anchor(self._states[i], now)

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

    def _apply_liquidation(self, liq: Liquidation, now: float) -> None:
        by_id = self._by_exchange.get(liq.exchange)
        st = by_id.get(liq.instrument) if by_id is not None else None
        if st is None:
            self.unknown_instrument_updates += 1
            return
        usd = liq.notional_usd
        if not 0.0 <= usd < 1e15:  # a counter never takes a NaN, infinite or negative increment
            self.rejected_records += 1
            return
        at = liq.event_time or now
        side = liq.side
        st.liq_count[side] += 1
        st.liq_notional_usd[side] += usd
        rec = (at, side, usd)
        recent = st.liq_recent
        recent.append(rec)
        if recent[0][0] < now - LIQ_FLOW_WINDOW_SECONDS:  # not empty: one was just appended
            horizon = now - LIQ_FLOW_WINDOW_SECONDS
            while recent and recent[0][0] < horizon:
                recent.popleft()
        # LiquidationThreshold.observe inline (a call a liquidation saved): the base's running minute
        # sum; the tracker looks only when the sum reaches its gate or its due time has come
        flow = st.liq_flow
        if flow is None:
            flow = st.liq_flow = self._liquidation_events.flow(st.info.base)
        if at >= now - self._liq_window:  # one already older than the minute (a late arrival) never counts
            flow.entries.append(rec)  # shared with the instrument's hour: no tuple of its own
            flow.total += usd
        if flow.total >= flow.gate or now >= flow.due:
            self._liquidation_events.look(st, flow, now)

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
