"""Where the I/O layers put what they receive: the record sink and its health counters.

The websocket loop (``feeds/connection.py``), the REST client (``rest/``) and the pollers of
``app.py`` hand parsed records and their own health to a :class:`RecordSink`. They know only this
protocol, not the store behind it; :class:`~exporter.state.MarketState` implements it.

Health is handed over as counter objects the sink owns (:class:`StreamHealth`, :class:`RestHealth`):
the connection bumps ``messages`` on every frame, so a plain attribute increment on the hot path
rather than a call per event. Only the event-loop thread writes them; readers copy.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from exporter.model import Exchange, Record

# fr_stream_event_lag_seconds buckets (upper bounds, seconds): 1 ms to 10 s, about 1-2.5-5 per decade
LAG_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(slots=True)
class StreamHealth:
    """One websocket stream's health, kept by the connection that owns the stream."""

    exchange: Exchange
    stream: str
    connected: bool = False
    last_message_at: float = 0.0
    last_parsed_at: float = 0.0  # last frame that parsed into data (fr_up follows this one)
    messages: int = 0
    reconnects: int = 0
    parse_errors: int = 0
    parse_error_reasons: dict[str, int] = field(default_factory=dict)  # ParseError.reason -> count
    subscription_errors: int = 0
    resyncs: int = 0  # fresh snapshots asked for after a parse error (snapshot+delta streams)
    short_sessions: int = 0  # connections that dropped soon after opening (no backoff reset)
    # feed quality: event lag (exchange stamp -> receipt, offset-corrected), one observation a frame
    lag_counts: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))  # last: > 10 s
    lag_sum: float = 0.0
    lag_count: int = 0
    # completeness: a stream with a documented cadence should speak at least that often
    cadence_s: float | None = None
    quality_from: float = 0.0  # last data frame, or when the stream was first expected to speak
    expected_s: float = 0.0  # expected time accounted up to quality_from
    gap_s: float = 0.0  # of which silent beyond the cadence
    ping_rtt_s: float | None = None  # last websocket ping round trip

    def observe_lag(self, lag: float) -> None:
        """One frame's event lag (seconds; a negative one -- clock noise -- lands in the first bucket)."""
        self.lag_counts[bisect_left(LAG_BUCKETS, lag)] += 1
        self.lag_sum += lag
        self.lag_count += 1

    def expect_from(self, now: float) -> None:
        """The stream is expected to speak from ``now`` on (first connection attempt)."""
        if self.quality_from == 0.0:
            self.quality_from = now

    def spoke(self, now: float) -> None:
        """A data frame at ``now``: the silence since the last one is accounted."""
        last = self.quality_from
        if last == 0.0 or self.cadence_s is None:
            self.quality_from = now
            return
        silent = now - last
        if silent > 0.0:
            self.expected_s += silent
            if silent > self.cadence_s:
                self.gap_s += silent - self.cadence_s
            self.quality_from = now

    def completeness(self, now: float) -> tuple[float, float]:
        """(expected seconds, gap seconds) up to ``now``, the silence still going on included:
        both only grow, whatever ``now`` a reader asks at."""
        if self.cadence_s is None or self.quality_from == 0.0:
            return self.expected_s, self.gap_s
        silent = max(0.0, now - self.quality_from)
        return self.expected_s + silent, self.gap_s + max(0.0, silent - self.cadence_s)


@dataclass(slots=True)
class ExchangeClock:
    """The exchange's clock against ours, from its server-time endpoint, NTP-style:
    ``offset = server - (sent + received) / 2`` and ``rtt = received - sent``. The sample with the
    shortest round trip of the last few is the most accurate (least queueing on the way)."""

    exchange: Exchange
    offset_s: float = 0.0  # exchange clock minus ours
    rtt_s: float | None = None
    samples: int = 0
    measured_at: float = 0.0
    recent: list[tuple[float, float]] = field(default_factory=list)  # (rtt, offset), newest last

    KEEP = 8

    def sample(self, sent: float, server: float, received: float) -> None:
        rtt = max(0.0, received - sent)
        self.recent.append((rtt, server - (sent + received) / 2.0))
        del self.recent[: -self.KEEP]
        best = min(self.recent)
        self.offset_s = best[1]
        self.rtt_s = rtt
        self.samples += 1
        self.measured_at = received


@dataclass(slots=True)
class RestHealth:
    """One REST endpoint's request and failure counts, kept by the REST client."""

    exchange: Exchange
    endpoint: str
    requests: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count (rate_limited, http_5xx...)
    last_success_at: float = 0.0


class RecordSink(Protocol):
    """What the connection and REST layers need of the store."""

    def apply(self, record: Record, received_at: float | None = None) -> None:
        """Take one record (``received_at``: receive time; default now)."""
        ...

    def apply_many(self, records: Iterable[Record], received_at: float | None = None) -> None:
        """Take the records of one frame or response, all received at ``received_at``."""
        ...

    def stream(self, exchange: Exchange, stream: str) -> StreamHealth:
        """The health counters of a websocket stream (created on first use)."""
        ...

    def rest_endpoint(self, exchange: Exchange, endpoint: str) -> RestHealth:
        """The counters of a REST endpoint (created on first use)."""
        ...

    def exchange_clock(self, exchange: Exchange) -> ExchangeClock:
        """The measured clock offset of an exchange (created on first use)."""
        ...
