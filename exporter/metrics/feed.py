"""Feed-quality collector: event lag, clock offsets, ping round trips, completeness, recording.

Thin: the connection layer keeps the numbers on :class:`~exporter.sink.StreamHealth` and
:class:`~exporter.sink.ExchangeClock`; this names and labels them.

    # TYPE fr_stream_event_lag_seconds histogram
    fr_stream_event_lag_seconds_bucket{exchange="binance",stream="markPrice",le="0.001"} 0.0
    ...
    fr_exchange_clock_offset_seconds{exchange="binance"} -0.0042
    fr_stream_gap_seconds_total{exchange="binance",stream="markPrice"} 3.1
    fr_stream_expected_seconds_total{exchange="binance",stream="markPrice"} 3600.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import Metric

from exporter.metrics import catalog as m
from exporter.metrics.exposition import Family, LabelSet
from exporter.sink import LAG_BUCKETS
from exporter.state import Key, MarketState

_LE = [repr(b) if b < 1 else f"{b:.1f}" for b in LAG_BUCKETS] + ["+Inf"]

# what a recorder reports: {"frames_ws", "frames_rest", "dropped", "bytes"} -> count
RecordingStats = Callable[[], Mapping[str, int]]


class FeedQualityCollector:
    def __init__(self, state: MarketState, recording: RecordingStats | None = None) -> None:
        self.state = state
        self.recording = recording
        self.s_missed = m.FUNDING_SETTLEMENTS_MISSED.spec()
        # One series per instrument: label sets built when an instrument first shows, and the sorted
        # order kept while the instrument set is the same (sorting 8,000 keys each scrape cost more
        # than rendering them).
        self._missed_labels: dict[Key, LabelSet] = {}
        self._keys: list[Key] = []
        self._order: list[tuple[Key, LabelSet]] = []

    def _instrument_order(self) -> list[tuple[Key, LabelSet]]:
        keys = list(self.state.instruments)  # a copy: the event loop may register meanwhile
        if keys != self._keys:
            cache = self._missed_labels
            self._missed_labels = {
                k: cache.get(k) or LabelSet([("exchange", k[0].value), ("instrument", k[1])]) for k in keys
            }
            self._order = sorted(self._missed_labels.items(), key=lambda kv: kv[0])
            self._keys = keys
        return self._order

    def families(self) -> list[Family | Metric]:
        """The histograms through prometheus_client's families, the per-instrument counter on the
        fast path (the exposition's renderer takes both)."""
        state = self.state
        now = state.clock()
        lag = m.STREAM_EVENT_LAG.histogram()
        ping = m.STREAM_PING_RTT.gauge()
        gap = m.STREAM_GAP.counter()
        expected = m.STREAM_EXPECTED.counter()
        for (ex, stream), h in sorted(list(state.streams.items())):
            labels = [ex.value, stream]
            counts = list(h.lag_counts)
            if h.lag_count:
                cum, buckets = 0, []
                for le, n in zip(_LE, counts, strict=True):
                    cum += n
                    buckets.append((le, float(cum)))
                lag.add_metric(labels, buckets, h.lag_sum)
            if h.ping_rtt_s is not None:
                ping.add_metric(labels, h.ping_rtt_s)
            if h.cadence_s is not None and h.quality_from > 0.0:
                exp_s, gap_s = h.completeness(now)
                gap.add_metric(labels, gap_s)
                expected.add_metric(labels, exp_s)
        offset = m.EXCHANGE_CLOCK_OFFSET.gauge()
        rtt = m.EXCHANGE_RTT.gauge()
        for ex, c in sorted(list(state.clocks.items())):
            if c.samples:
                offset.add_metric([ex.value], c.offset_s)
                if c.rtt_s is not None:
                    rtt.add_metric([ex.value], c.rtt_s)
        missed_by = dict(state.settlements_missed)
        order = self._instrument_order()
        # from 0: increase() sees the first miss
        missed = self.s_missed.family([lb for _, lb in order], [float(missed_by.get(k, 0)) for k, _ in order])
        # families with no sample yet are left out (a fresh exporter's scrape stays as it was)
        out: list[Family | Metric] = [f for f in (lag, ping, gap, expected, offset, rtt) if f.samples]
        if order:
            out.append(missed)
        if self.recording is not None:
            stats = self.recording()
            frames = m.RECORDING_FRAMES.counter()
            frames.add_metric(["ws"], stats.get("frames_ws", 0))
            frames.add_metric(["rest"], stats.get("frames_rest", 0))
            dropped = m.RECORDING_DROPPED.counter()
            dropped.add_metric([], stats.get("dropped", 0))
            written = m.RECORDING_BYTES.counter()
            written.add_metric([], stats.get("bytes", 0))
            out += [frames, dropped, written]
        return out

    def collect(self) -> Iterable[Metric]:
        for f in self.families():
            yield f.to_metric_family() if isinstance(f, Family) else f
