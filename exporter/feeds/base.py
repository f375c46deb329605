"""What every exchange feed module provides.

A feed module (``binance.py``, ``bybit.py``, ``okx.py``, ``deribit.py``) is pure protocol: it says
which websocket connections to open and what to send on them, and turns received frames and REST
bodies into typed records. It performs no I/O; ``connection.py`` and ``exporter.rest`` do that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exporter.feeds.validate import FUTURE_S, PAST_S, STATIC_BOUNDS
from exporter.model import (
    Exchange,
    FundingSettlement,
    InstrumentInfo,
    InsuranceFund,
    LongShortRatio,
    MarketUpdate,
    Record,
)


@dataclass(frozen=True, slots=True)
class WsPlan:
    """One websocket connection: where to connect and what to say once connected."""

    stream: str  # label value of fr_stream_* series, e.g. "markPrice", "tickers", "public"
    url: str
    subscribe: tuple[str, ...] = ()  # text frames sent after connect (and after every reconnect)
    ping_frame: str | None = None  # application-level ping text (Bybit/OKX), None if not needed
    ping_interval_s: float = 20.0
    max_lifetime_s: float | None = None  # planned reconnect before the exchange cuts us (Binance 24 h)
    silence_timeout_s: float = 30.0  # no frame for this long -> the watchdog reconnects
    # Snapshot+delta streams (Bybit tickers): frames that make the exchange send fresh snapshots
    # (unsubscribe, then subscribe again), sent after a parse error since a lost delta would leave
    # a stale field looking current. Empty: the stream sends whole values, nothing to resync.
    resync: tuple[str, ...] = ()
    # The longest silence of a healthy stream (its documented push interval, the allowance for a
    # channel that is silent when nothing changed): silence beyond it counts in fr_stream_gap_seconds_total.
    # None: an event stream (liquidations) with no cadence; no completeness is judged.
    cadence_s: float | None = None


ARRAY_FRAMES_KEPT = 8  # a whole all-market array is one frame; more frames are the same order again


@dataclass(slots=True)
class FeedContext:
    """What a parser may need to know besides the frame: instrument facts (contract sizes...) and,
    when given, the clock that bounds plausible timestamps (a parser still does no I/O)."""

    exchange: Exchange
    # The ids of the inverse contracts among ``instruments`` (value fixed in USD), set with them (see
    # __setattr__): a ticker parser tells the units of an inverse contract's open interest from this
    # small set instead of reading the instrument's facts (a cache miss an update at thousands of
    # instruments). Assign ``instruments`` anew to change them, never mutate the mapping in place.
    inverse: frozenset[str] = field(init=False, default=frozenset())
    instruments: Mapping[str, InstrumentInfo] = field(default_factory=dict)
    clock: Callable[[], float] | None = None  # None: static bounds only (tests of recorded samples)
    # Per instrument, the settlement this context's stream (its one sink) has passed on: OKX repeats the
    # last settlement in every funding push, and an unchanged one is not passed on again (the store
    # would find its time known and change nothing). OKX keeps the funding time (ms, as sent) that the
    # settlement precedes: a push of that period is parsed without the settlement's fields. None: every
    # push passes it (a parse that depends on the frame alone, as the tests of single frames want). It
    # holds followed instruments only (see __setattr__), so a hit in it tells a followed instrument.
    settled: dict[str, float] | None = None
    # The order a stream sends its instruments in, kept for a housekeeping step that lays the state's
    # records out in it (MarketState.relayout): while a list, a parser of array frames (Binance's
    # all-market array) appends each array's records to it, up to ARRAY_FRAMES_KEPT frames; None: not
    # asked. A test an array frame (hundreds of updates), nothing on any other frame.
    array_frames: list[list[Record]] | None = None
    # Per instrument id, an opaque handle from this context's one sink (MarketState.bind, which keeps
    # them current): a parser that finds the frame's instrument here passes the handle on in the
    # update (MarketUpdate.handle) and the sink skips its own lookup of the id (at thousands of
    # instruments a dict entry is a cache miss an update; the parser's lookup here is the followed
    # check). It holds ids of ``instruments`` only (see __setattr__), so a hit tells a followed
    # instrument; an id not in it is looked up in ``instruments`` as without it. None: no sink gave any.
    handles: dict[str, object] | None = None

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name == "instruments":  # the inverse ids follow (__init__ assigns through here too)
            ids = frozenset(k for k, info in value.items() if info.inverse)  # type: ignore[attr-defined]
            object.__setattr__(self, "inverse", ids)
        if name in ("instruments", "settled", "handles"):
            # the settlement memory and the handles forget instruments no longer followed (none when
            # all are: empty; changed in place: the sink that gave the handles knows them by identity)
            instruments = getattr(self, "instruments", None)
            for kept in (getattr(self, "settled", None), getattr(self, "handles", None)):
                if instruments and kept:
                    for k in [k for k in kept if k not in instruments]:
                        del kept[k]

    def take_array_order(self) -> list[str]:
        """The instrument ids of the array frames kept since the last call, in the order sent (each
        once), and a fresh list for the next frames."""
        frames, self.array_frames = self.array_frames, []
        ids = (r.instrument for f in frames or () for r in f if isinstance(r, MarketUpdate))
        return list(dict.fromkeys(ids))

    def follow_order(self, ids: Iterable[str]) -> bool:
        """``instruments`` assigned anew in the order of ``ids`` and keyed by those very string objects
        (ids not in it are ignored; the instruments not named follow in their present order), the same
        facts under each: what the parser looks up for each entry of an all-market array (its followed
        check) then lies in the array's order, and its key string is the one the store's lookup compares
        with next (MarketState.record_ids), one line instead of two a different order puts anywhere.
        Off the hot path (housekeeping); False, and nothing assigned, when already so. A reader sees the
        old mapping or the new one, whole (one assignment)."""
        present = self.instruments
        ranked = {k: present[k] for k in ids if k in present}
        if len(ranked) < len(present):
            ranked.update((k, v) for k, v in present.items() if k not in ranked)  # the rest, as they were
        if all(a is b for a, b in zip(ranked, present, strict=True)):  # same keys, same order, the same objects
            return False
        self.instruments = ranked
        return True

    def time_bounds(self) -> tuple[float, float]:
        """Timestamps outside these (Unix seconds) are parse errors: a window around now, if known."""
        clock = self.clock
        if clock is None:
            return STATIC_BOUNDS
        now = clock()
        return now - PAST_S, now + FUTURE_S


class Feed(Protocol):
    """The protocol of one exchange. Implemented by a class in each feed module."""

    exchange: Exchange

    def ws_plans(self, ws_base_url: str, instruments: Sequence[InstrumentInfo]) -> list[WsPlan]:
        """Connections to open for these instruments (split when the exchange caps streams)."""
        ...

    def parse_ws(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        """Records in one frame. Acks, pongs and other control frames give []. Raise ParseError."""
        ...

    def heartbeat_setup(self) -> tuple[str, ...]:
        """Frames sent once after subscribing to start a server-driven heartbeat (Deribit)."""
        ...

    # REST bodies (bytes as received) -> records. Raise ParseError on a body that is not as expected.
    def parse_instruments(self, body: bytes) -> list[InstrumentInfo]: ...

    def parse_funding_history(self, body: bytes, ctx: FeedContext) -> list[FundingSettlement]: ...

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[MarketUpdate]: ...

    def parse_long_short_ratio(self, body: bytes, ctx: FeedContext) -> list[LongShortRatio]: ...

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[InsuranceFund]: ...
