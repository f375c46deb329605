"""Exporter-health collector: is each exchange's data flowing, and what did it cost to get it.

The counters are published as the connection and REST layers keep them; whether an exchange is up
is a view (:func:`exporter.views.exchange_up`), shared with /api/state.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from exporter import __version__
from exporter.build import build_labels
from exporter.config import Config
from exporter.metrics import catalog as m
from exporter.metrics.exposition import EMPTY_LABELS, Family, LabelSet
from exporter.state import MarketState
from exporter.views import RenderErrors, exchange_up


class HealthCollector:
    """Per exchange / stream / REST endpoint health, and the build.

    # HELP fr_up 1 when at least one websocket stream of the exchange is connected ...
    # TYPE fr_up gauge
    fr_up{exchange="binance"} 1.0
    # HELP fr_stream_connected 1 while the websocket connection of the stream is open, else 0.
    # TYPE fr_stream_connected gauge
    fr_stream_connected{exchange="binance",stream="markPrice"} 1.0
    # TYPE fr_stream_last_message_timestamp_seconds gauge
    fr_stream_last_message_timestamp_seconds{exchange="binance",stream="markPrice"} 1.7000000004e+09
    # TYPE fr_stream_messages_total counter
    fr_stream_messages_total{exchange="binance",stream="markPrice"} 1234.0
    ... fr_stream_reconnects_total, fr_parse_errors_total, fr_stream_subscription_errors_total (same labels)
    fr_rest_requests_total{endpoint="openInterest",exchange="binance"} 12.0
    fr_rest_request_failures_total{endpoint="openInterest",exchange="binance",reason="rate_limited"} 1.0
    fr_rest_last_success_timestamp_seconds{endpoint="openInterest",exchange="binance"} 1.7e+09
    fr_unknown_instrument_updates_total 0.0
    fr_build_info{python_version="3.11.9",revision="22e54d6a1b2c",version="0.1.0"} 1.0
    """

    def __init__(
        self,
        config: Config,
        state: MarketState,
        version: str = __version__,
        render_errors: RenderErrors | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.render_errors = render_errors
        self.s_up = m.UP.spec()
        self.s_conn = m.STREAM_CONNECTED.spec()
        self.s_last = m.STREAM_LAST_MESSAGE.spec()
        self.s_parsed = m.STREAM_LAST_PARSED.spec()
        self.s_msgs = m.STREAM_MESSAGES.spec()
        self.s_rec = m.STREAM_RECONNECTS.spec()
        self.s_perr = m.PARSE_ERRORS.spec()
        self.s_perr_reason = m.PARSE_ERROR_REASONS.spec()
        self.s_suberr = m.SUBSCRIPTION_ERRORS.spec()
        self.s_resync = m.STREAM_RESYNCS.spec()
        self.s_short = m.STREAM_SHORT_SESSIONS.spec()
        self.s_req = m.REST_REQUESTS.spec()
        self.s_fail = m.REST_FAILURES.spec()
        self.s_rest_ok = m.REST_LAST_SUCCESS.spec()
        self.s_unknown = m.UNKNOWN_INSTRUMENT_UPDATES.spec()
        self.s_render = m.RENDER_ERRORS.spec()
        self.s_build = m.BUILD_INFO.spec()
        self._build_labels = LabelSet({**build_labels(), "version": version}.items())
        self._labels: dict[tuple[tuple[str, str], ...], LabelSet] = {}

    def _label(self, *pairs: tuple[str, str]) -> LabelSet:
        # Keyed by names and values: a stream and a REST endpoint of the same name on one exchange
        # must not share a label set ({exchange, stream} vs {exchange, endpoint}).
        key = pairs
        lbl = self._labels.get(key)
        if lbl is None:
            lbl = self._labels[key] = LabelSet(pairs)
        return lbl

    def families(self) -> list[Family]:
        state = self.state
        now = state.clock()
        f_up = self.s_up.family()
        for ex in sorted(set(state.exchanges)):
            f_up.add(self._label(("exchange", ex.value)), 1.0 if exchange_up(self.config, state, ex, now) else 0.0)
        f_conn, f_last, f_msgs = self.s_conn.family(), self.s_last.family(), self.s_msgs.family()
        f_rec, f_perr, f_suberr = self.s_rec.family(), self.s_perr.family(), self.s_suberr.family()
        f_reason = self.s_perr_reason.family()
        f_parsed, f_resync, f_short = self.s_parsed.family(), self.s_resync.family(), self.s_short.family()
        for (ex, stream), h in sorted(list(state.streams.items())):
            lbl = self._label(("exchange", ex.value), ("stream", stream))
            f_conn.add(lbl, 1.0 if h.connected else 0.0)
            if h.last_message_at > 0.0:
                f_last.add(lbl, h.last_message_at)
            if h.last_parsed_at > 0.0:
                f_parsed.add(lbl, h.last_parsed_at)
            f_msgs.add(lbl, h.messages)
            f_rec.add(lbl, h.reconnects)
            f_perr.add(lbl, h.parse_errors)
            for reason, n in sorted(dict(h.parse_error_reasons).items()):
                f_reason.add(self._label(("exchange", ex.value), ("stream", stream), ("reason", reason)), n)
            f_suberr.add(lbl, h.subscription_errors)
            f_resync.add(lbl, h.resyncs)
            f_short.add(lbl, h.short_sessions)
        f_req, f_fail, f_ok = self.s_req.family(), self.s_fail.family(), self.s_rest_ok.family()
        for (ex, endpoint), r in sorted(list(state.rest.items())):
            lbl = self._label(("exchange", ex.value), ("endpoint", endpoint))
            f_req.add(lbl, r.requests)
            for reason, n in sorted(dict(r.failures).items()):
                f_fail.add(self._label(("exchange", ex.value), ("endpoint", endpoint), ("reason", reason)), n)
            if r.last_success_at > 0.0:
                f_ok.add(lbl, r.last_success_at)
        f_unknown = self.s_unknown.family()
        f_unknown.add(EMPTY_LABELS, state.unknown_instrument_updates)
        f_render = self.s_render.family()
        if self.render_errors is not None:
            for collector, n in sorted(self.render_errors.snapshot().items()):
                f_render.add(self._label(("collector", collector)), n)
        f_build = self.s_build.family()
        f_build.add(self._build_labels, 1.0)
        streams = [f_conn, f_last, f_parsed, f_msgs, f_rec, f_perr, f_reason, f_suberr, f_resync, f_short]
        return [f_up, *streams, f_req, f_fail, f_ok, f_unknown, f_render, f_build]

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()
