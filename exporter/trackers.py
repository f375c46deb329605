"""Small trackers the state store calls: what a stored value implies beyond itself.

:class:`~exporter.state.MarketState` stores the latest values; on the way in it hands them to:

* :class:`SettlementTracker`: the settlement window (settled funding rates, sorted, no duplicates)
  and what is inferred into it: the rate in force when the next funding time rolls over is what
  settled; continuous funding (Deribit) is observed once an hour; an unknown interval is taken
  from the gap between settlements.
* :class:`Sampler`: one-a-minute samples of open interest (its 1 h and 4 h change), of (funding per
  8 h, premium) (the anchor regressions) and the mark's 1-minute closes (realised volatility).
* :class:`FundingThreshold` and :class:`LiquidationThreshold`: threshold events for /api/state (the
  AI sidecar), numbered by an :class:`EventLog`. The liquidation tracker keeps rolling per-base sums,
  so a liquidation costs O(1) whatever the number of instruments followed.

They run on the event-loop thread, the only writer, like the store itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.model import EIGHT_HOURS, Exchange, Liquidation

if TYPE_CHECKING:  # the store imports the trackers; they only read its instrument records
    from exporter.state import InstrumentState

ANCHOR_SAMPLE_SECONDS = 60.0  # (funding, premium) pairs for the anchor regression, one a minute
OI_SAMPLE_SECONDS = 60.0
MARK_MINUTE_SECONDS = 60.0  # the mark's closes for the realised volatility: one a minute
CONTINUOUS_OBSERVATION_SECONDS = 3600.0  # Deribit: one funding observation an hour
LIQ_EVENT_WINDOW_SECONDS = 60.0  # liquidation events: USD liquidated per base in the last minute
# A next funding time that moves on when now is this close to the old one (or past it): the old one settled
NFT_SETTLED_NEAR_S = 5.0
NFT_STEP_TOLERANCE_S = 60.0  # a step within this of a whole number of hours announces that interval
# A smaller forward step of the next funding time is no interval change (at least one hour, less the tolerance)
NFT_QUIET_STEP_S = 3600.0 - NFT_STEP_TOLERANCE_S
_EARLY = 1e-3  # sampler hints run this much early: float rounding never delays a due sample


class SettlementTracker:
    """Keeps each instrument's settlement window: merges settled rates and infers new ones."""

    __slots__ = ()

    @staticmethod
    def merge(st: InstrumentState, pairs: Iterable[tuple[float, float]], interval_s: float | None = None) -> None:
        """Merge settled (time, rate) pairs, keeping the window sorted and free of duplicates.

        ``interval_s``: the interval the rates were for; default the instrument's current one."""
        known = {r[0] for r in st.settlements}
        iv = interval_s or st.funding_interval_s or st.info.funding_interval_s or 0.0
        new = sorted((t, r, iv) for t, r in pairs if t not in known and r == r)  # r == r drops NaN
        if not new:
            return
        last = st.settlements.last_time()
        if last is not None and new[0][0] < last:
            st.settlements.replace(sorted([*st.settlements, *new]))
        else:
            st.settlements.extend(new)
        st.settlements_version += 1
        if st.funding_interval_s is None and st.info.funding_interval_s is None and len(st.settlements) >= 2:
            # nobody said the interval: the spacing of the last two settlements says it
            gap = st.settlements[-1][0] - st.settlements[-2][0]
            if gap > 0:
                st.funding_interval_s = round(gap / 3600.0) * 3600.0 or gap

    def next_funding(self, st: InstrumentState, nft: float, prev_interval: float | None, now: float) -> float | None:
        """Called before a new next-funding time is stored: when it moved on, the predicted rate in
        force at the old one is what settled (under the interval known until then).

        Returns the new funding interval when the step says the interval changed: the next funding
        time moved by a whole number of hours other than the known interval, just after a settlement
        (before the next one under the old interval was due, so no settlement can have been missed).
        Binance announces such switches (8 h -> 1 h when a rate hits its cap) only in a REST list."""
        old = st.next_funding_time
        if old is None or nft <= old + 1.0:
            return None
        if st.funding_rate is not None and now >= old - NFT_SETTLED_NEAR_S:
            self.merge(st, [(old, st.funding_rate)], prev_interval)
        step = nft - old
        hours = round(step / 3600.0)
        if (
            prev_interval
            and now < old + prev_interval - NFT_SETTLED_NEAR_S
            and 1 <= hours <= 24
            and abs(step - hours * 3600.0) <= NFT_STEP_TOLERANCE_S
            and abs(hours * 3600.0 - prev_interval) > NFT_STEP_TOLERANCE_S
        ):
            return hours * 3600.0
        return None

    @staticmethod
    def missed(st: InstrumentState, nft: float, prev_interval: float | None) -> int:
        """Settlement times between the stored next-funding time and ``nft`` (a jump of more than one
        interval, the interval unchanged) that passed unseen -- the stream was away -- and that no
        funding history filled in. Called before ``nft`` is stored."""
        old = st.next_funding_time
        iv = prev_interval or st.funding_interval_s or st.info.funding_interval_s
        if old is None or not iv or nft <= old + 1.5 * iv:
            return 0
        known = {r[0] for r in st.settlements}
        missed, t = 0, old + iv
        while t < nft - 0.5 * iv and missed < 1000:  # bounded: a nonsense jump is not a loop
            if not any(abs(t - k) < 60.0 for k in known):
                missed += 1
            t += iv
        return missed

    def continuous(self, st: InstrumentState, rate_8h: float, event_time: float | None, now: float) -> None:
        """Continuous funding (no settlement times): one observation an hour for the z-score window."""
        t = (event_time or now) // CONTINUOUS_OBSERVATION_SECONDS * CONTINUOUS_OBSERVATION_SECONDS
        last = st.settlements.last_time()
        if last is None or t > last:
            self.merge(st, [(t, rate_8h)], EIGHT_HOURS)
            last = t
        # the store's hint: no observation is due before the hour after the last one
        hour = CONTINUOUS_OBSERVATION_SECONDS
        st.continuous_due = max(last, t) // hour * hour + hour


class Sampler:
    """One-a-minute samples of the values whose history the analytics read.

    After each look it leaves on the instrument the earliest time the next sample can be due
    (``oi_sample_due``, ``anchor_sample_due``), so the store calls it about once a minute rather
    than on every update. The hint is a lower bound (a hair early, against rounding): the check
    against the window's last sample here still decides.
    """

    __slots__ = ()

    @staticmethod
    def open_interest(st: InstrumentState, now: float) -> None:
        oi = st.open_interest_usd
        if oi is None:  # no USD figure yet (base units before any mark): look again in a minute
            st.oi_sample_due = now + OI_SAMPLE_SECONDS - _EARLY
            return
        samples = st.oi_samples
        last = samples.last_time()
        if last is None or now - last >= OI_SAMPLE_SECONDS:
            samples.append((now, oi))
            last = now
        st.oi_sample_due = last + OI_SAMPLE_SECONDS - _EARLY

    @staticmethod
    def anchor(st: InstrumentState, now: float) -> None:
        """(time, funding per 8 h, premium) for the anchor regression, when the funding rate is known.

        The rate is scaled to 8 h with the interval in force when sampled, so the slope compares
        across 1 h / 4 h / 8 h instruments and stays right across an interval change. Deribit's rate
        is already its 8 h equivalent. An unknown interval takes no sample (looked at again in a minute)."""
        funding = st.funding_rate
        if funding is None:
            return
        if st.info.exchange is Exchange.DERIBIT:
            iv: float | None = EIGHT_HOURS
        else:
            iv = st.funding_interval_s or st.info.funding_interval_s
        if not iv:
            st.anchor_sample_due = now + ANCHOR_SAMPLE_SECONDS - _EARLY
            return
        funding *= EIGHT_HOURS / iv  # the factor first: an 8 h rate stays bit-for-bit itself
        samples = st.anchor_samples
        last = samples.last_time()
        if last is None or now - last >= ANCHOR_SAMPLE_SECONDS:
            m = st.mark_price
            i = st.index_price
            prem = (m - i) / i if m is not None and i else st.premium  # premium_of, inlined
            if prem is None:
                return  # no premium yet: look again on the next update
            samples.append((now, funding, prem))
            last = now
        st.anchor_sample_due = last + ANCHOR_SAMPLE_SECONDS - _EARLY

    @staticmethod
    def mark_minute(st: InstrumentState, t: float) -> None:
        """A mark at exchange time ``t`` at or after the end of the minute in progress, before the store
        takes it: the minute in progress closes with the mark before this one (``st.mark_price``) and the
        minute of ``t`` starts. Marks within the minute never come here (the store tests the end). Marks
        are taken in arrival order (one stream per instrument brings them, in order)."""
        cur = st.mark_minute
        if cur >= 0.0 and st.mark_price is not None:
            st.mark_minutes.append((cur, st.mark_price))
        m = t // MARK_MINUTE_SECONDS * MARK_MINUTE_SECONDS
        st.mark_minute = m
        st.mark_minute_end = m + MARK_MINUTE_SECONDS

    @staticmethod
    def backfill_history(
        st: InstrumentState, closes: Iterable[tuple[float, float]], oi: Iterable[tuple[float, float]]
    ) -> None:
        """Merge the exchange's history behind the live values: a minute or a time the live stream
        already has keeps the live value; the minute in progress is left to the live stream."""
        cur = st.mark_minute
        past = {t: c for t, c in closes if cur < 0.0 or t < cur}
        if past:
            past.update((r[0], r[1]) for r in st.mark_minutes)
            st.mark_minutes.replace(sorted(past.items()))
        points = dict(oi)
        if points:
            points.update((r[0], r[1]) for r in st.oi_samples)
            st.oi_samples.replace(sorted(points.items()))
        st.oi_sample_due = 0.0  # the next live value is sampled whatever the backfill's last time

    @staticmethod
    def backfill_anchor(st: InstrumentState, rows: Iterable[tuple[float, float, float]]) -> None:
        """Merge rebuilt past samples in front of the live ones: a rebuilt sample is kept only where it
        is older than the first live sample (the backfill may finish after live samples began), and
        no closer than a sample period to it, so the window stays one sample a minute."""
        samples = st.anchor_samples
        live = list(samples)
        first = live[0][0] if live else float("inf")
        past = sorted(r for r in rows if r[0] <= first - ANCHOR_SAMPLE_SECONDS + _EARLY)
        if not past:
            return
        samples.replace([*past, *live])


@dataclass(frozen=True, slots=True)
class ThresholdEvent:
    """A funding or liquidation threshold crossing, reported in /api/state for the AI sidecar."""

    seq: int
    at: float
    base: str
    kind: str  # "funding" | "liquidation"
    exchange: str
    instrument: str
    value: float


class EventLog:
    """The last ``maxlen`` threshold events, numbered from 1."""

    __slots__ = ("_seq", "events")

    def __init__(self, maxlen: int = 200) -> None:
        self.events: deque[ThresholdEvent] = deque(maxlen=maxlen)
        self._seq = 0

    def emit(self, st: InstrumentState, kind: str, value: float, now: float) -> None:
        self._seq += 1
        info = st.info
        self.events.append(ThresholdEvent(self._seq, now, info.base, kind, info.exchange.value, info.instrument, value))


class FundingThreshold:
    """An event when an instrument's funding rate (per 8 h) reaches the limit, once per crossing."""

    __slots__ = ("_log", "limit_8h")

    def __init__(self, limit_8h: float, log: EventLog) -> None:
        self.limit_8h = limit_8h
        self._log = log

    def observe(self, st: InstrumentState, rate: float, now: float) -> None:
        interval = st.funding_interval_s or st.info.funding_interval_s
        if not interval:
            return
        r8 = rate * EIGHT_HOURS / interval
        # "at or beyond the limit now" is a flag on the instrument's own state: no shared set to
        # hash into on every update (at 8,000 instruments each probe is a cache miss)
        if abs(r8) >= self.limit_8h:
            if not st.funding_extreme:
                st.funding_extreme = True
                self._log.emit(st, "funding", r8, now)
        elif st.funding_extreme:
            st.funding_extreme = False


class BaseFlow:
    """One base asset's liquidations of the last minute and their running USD sum.

    The store adds each liquidation here itself (append, add) and calls the tracker only when the
    running sum reaches ``gate`` or the clock reaches ``due``: two comparisons a liquidation, no call.
    """

    __slots__ = ("due", "entries", "gate", "last_event", "total")

    def __init__(self, gate: float) -> None:
        # in arrival order: the very records the instruments' hour of liquidations holds
        self.entries: deque[Liquidation] = deque()
        self.total = 0.0
        self.last_event = -math.inf
        self.gate = gate  # the running sum that can mean an event (inf while an event's minute runs)
        self.due = -math.inf  # when the tracker must look anyway: expire entries, end an event's minute


class LiquidationThreshold:
    """An event when the USD liquidated on one base asset, across exchanges and instruments, within
    the last minute reaches the limit; at most one event a minute per base.

    A running sum per base (added on arrival, subtracted when a liquidation leaves the minute) makes a
    liquidation cost O(1) however many instruments are followed. The store adds to the sum itself
    (``MarketState._apply_liquidation``: no call a liquidation) and calls :meth:`look` only when the
    sum reaches the flow's gate or its due time has come (at least once a minute while liquidations
    arrive, so entries leave within two minutes). The running sum only decides when to look: the
    event's value is the exact sum of the minute, so float drift never fires or shows one.
    """

    __slots__ = ("_bases", "_gate", "_log", "limit_usd", "window_s")

    def __init__(self, limit_usd: float, log: EventLog, window_s: float = LIQ_EVENT_WINDOW_SECONDS) -> None:
        self.limit_usd = limit_usd
        self.window_s = window_s
        self._gate = limit_usd * (1.0 - 1e-9)  # a hair under the limit: drift never hides a crossing
        self._log = log
        self._bases: dict[str, BaseFlow] = {}

    def flow(self, base: str) -> BaseFlow:
        """The base's flow (made on its first liquidation); the store keeps it on the instrument."""
        flow = self._bases.get(base)
        if flow is None:
            flow = self._bases[base] = BaseFlow(self._gate)
        return flow

    def look(self, st: InstrumentState, flow: BaseFlow, now: float) -> None:
        """Expire what left the minute; an event when the minute's exact sum reaches the limit and the
        base's last event is a minute old. Sets the flow's next gate and due time."""
        window = self.window_s
        cutoff = now - window
        entries = flow.entries
        while entries and entries[0].event_time < cutoff:
            flow.total -= entries.popleft().notional_usd
        if not entries:
            flow.total = 0.0  # drift stops here
        flow.due = now + window  # look again within a minute: entries never stay much longer
        if now - flow.last_event < window:
            # an event's minute: none possible before it ends (a hair early: the test here decides)
            flow.gate = math.inf
            flow.due = flow.last_event + window - _EARLY
            return
        limit = self.limit_usd
        flow.gate = self._gate
        if flow.total < flow.gate:
            return
        # Rare (at most about once a minute per base): the exact sum decides, and resets the running
        # one; liquidations that arrived out of order and left the minute go now.
        fresh = deque(e for e in entries if e.event_time >= cutoff)
        total = sum(e.notional_usd for e in fresh)
        flow.entries, flow.total = fresh, total
        if total >= limit:
            flow.last_event = now
            flow.gate = math.inf
            flow.due = now + window - _EARLY
            self._log.emit(st, "liquidation", total, now)
