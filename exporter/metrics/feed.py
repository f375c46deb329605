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
from itertools import chain, repeat

from prometheus_client.core import Metric

from exporter.metrics import catalog as m
from exporter.metrics.exposition import YIELD_EVERY, Family, LabelSet, yield_gil
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
        self._position: dict[Key, int] = {}  # an instrument's place in _order
        # the last scrape's counter lines: (the order they are in, the values, the lines)
        self._missed_lines: tuple[list[tuple[Key, LabelSet]], list[float], list[bytes]] | None = None

    def _instrument_order(self) -> list[tuple[Key, LabelSet]]:
        keys = list(self.state.instruments)  # a copy: the event loop may register meanwhile
        if keys != self._keys:
            cache = self._missed_labels
            self._missed_labels = {
                k: cache.get(k) or LabelSet([("exchange", k[0].value), ("instrument", k[1])]) for k in keys
            }
            self._order = sorted(self._missed_labels.items(), key=lambda kv: kv[0])
            self._position = {k: i for i, (k, _) in enumerate(self._order)}
            self._keys = keys
        return self._order

    def _missed(self, order: list[tuple[Key, LabelSet]]) -> Family:
        """fr_funding_settlements_missed_total of every instrument, from 0 (increase() sees the first
        miss). Few instruments ever miss one (the state counts only those), so the values are zeros
        with the few counts set, and the lines are those of the last scrape while the values are the
        same (at 8,000 instruments a line per instrument formatted again every scrape: 2 ms)."""
        values = [0.0] * len(order)
        position = self._position
        for k, n in list(self.state.settlements_missed.items()):  # a copy: the event loop may write
            i = position.get(k)
            if i is not None:
                values[i] = float(n)
        last = self._missed_lines
        if last is not None and last[0] is order and last[1] == values:
            lines = last[2]
        elif max(values, default=0.0) < 1e6:  # repr is the renderer's text: value_text
            lines = []
            name = self.s_missed.name
            for i in range(0, len(order), YIELD_EVERY):
                if i:
                    yield_gil()
                labels = (lb.text for _, lb in order[i : i + YIELD_EVERY])
                strs = map(repr, values[i : i + YIELD_EVERY])
                part = zip(repeat(name), labels, repeat(" "), strs, repeat("\n"))
                lines.append("".join(chain.from_iterable(part)).encode())
            self._missed_lines = (order, values, lines)
        else:
            return self.s_missed.family([lb for _, lb in order], values)
        return Family.rendered(
            self.s_missed, lines, lambda: ([lb for _, lb in order], values, [lb.text for _, lb in order])
        )

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
        order = self._instrument_order()
        # families with no sample yet are left out (a fresh exporter's scrape stays as it was)
        out: list[Family | Metric] = [f for f in (lag, ping, gap, expected, offset, rtt) if f.samples]
        if order:
            out.append(self._missed(order))
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
