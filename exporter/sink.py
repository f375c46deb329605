"""Where the I/O layers put what they receive: the record sink and its health counters.

The websocket loop (``feeds/connection.py``), the REST client (``rest/``) and the pollers of
``app.py`` hand parsed records and their own health to a :class:`RecordSink`. They know only this
protocol, not the store behind it; :class:`~exporter.state.MarketState` implements it.

Health is handed over as counter objects the sink owns (:class:`StreamHealth`, :class:`RestHealth`):
the connection bumps ``messages`` on every frame, so a plain attribute increment on the hot path
rather than a call per event. Only the event-loop thread writes them; readers copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from exporter.model import Exchange, Record


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
