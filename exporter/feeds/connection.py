"""The one reconnecting websocket loop, shared by all four exchanges.

A :class:`FeedConnection` owns one :class:`~exporter.feeds.base.WsPlan`: it connects, sends the
plan's subscribe frames (again after every reconnect), hands every frame to the feed's pure parser
and hands the records to a :class:`~exporter.sink.RecordSink` (the state store implements it, this
module does not know it). Around that it keeps the connection alive:

* application-level ping every ``plan.ping_interval_s`` when the protocol wants one (Bybit, OKX);
* server heartbeats answered (Deribit ``test_request`` -> :class:`HeartbeatRequest` reply);
* a silence watchdog: no frame for ``plan.silence_timeout_s`` -> close and reconnect;
* a planned rotation before ``plan.max_lifetime_s`` (Binance cuts at 24 h): the new connection is
  opened and subscribed before the old one is closed, so no gap;
* jittered, capped exponential backoff between attempts, reset once a session's subscription
  delivered data, unless the session dropped within ``short_session_s`` (a connect-then-drop loop:
  counted, and the backoff keeps growing); HTTP 4xx on the handshake (other than 429) or a bad URL
  is *fatal*: logged as an error and retried only slowly;
* snapshot+delta streams (``plan.resync``, Bybit): a delta confirms the fields it leaves out only
  after this session's snapshot of that instrument; a parse error asks for fresh snapshots;
* ``StreamHealth.last_parsed_at``: the last frame that parsed into data, which ``fr_up`` follows
  (a flood of garbage keeps ``last_message_at`` moving, not this).

Stop it with the ``stop`` event given to :meth:`FeedConnection.run` or by cancelling its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from exporter.feeds.base import Feed, FeedContext, WsPlan
from exporter.feeds.validate import PARSER_BUG
from exporter.model import HeartbeatRequest, Liquidation, MarketUpdate, ParseError, Rejected, SubscriptionError
from exporter.sink import RecordSink, StreamHealth

log = logging.getLogger(__name__)

Verdict = Literal["retry", "fatal"]

# Large all-symbol arrays (Binance !markPrice@arr) exceed websockets' 1 MiB default.
MAX_FRAME_BYTES = 16 * 1024 * 1024
EXCERPT_CHARS = 120


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delays between connection attempts (seconds)."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0  # a connection that lived this long resets the backoff, data or not
    short_session_s: float = 5.0  # a session that ends sooner never resets it (connect-then-drop loop)
    resync_interval_s: float = 5.0  # at most one fresh-snapshot request per this many seconds
    fatal_retry_s: float = 300.0  # after a fatal handshake error: retry this rarely
    rotation_retry_s: float = 30.0  # a failed planned rotation is retried after this (old socket kept)


def backoff_delay(attempt: int, policy: BackoffPolicy, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, initial * factor**attempt)].

    ``attempt`` counts consecutive failures from 0. Full jitter spreads many exporters (or many
    connections of one exporter) that lost the exchange at the same moment.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # min() before the power would overflow for large attempts
    exp = min(attempt, 64)
    ceiling = min(policy.max_s, policy.initial_s * policy.factor**exp)
    return rand() * ceiling


def classify_error(exc: BaseException) -> Verdict:
    """Whether a connection error is worth retrying soon.

    Retryable: refused/reset/closed connections, timeouts, HTTP 429 and 5xx on the handshake.
    Fatal: an invalid URL, any other HTTP status on the handshake (401, 403, 404, ...) -- retrying
    fast would not change the answer and might get the IP banned.
    """
    if isinstance(exc, InvalidURI | ValueError):
        return "fatal"
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return "retry" if status == 429 or status >= 500 else "fatal"
    # OSError (refused, reset, DNS), TimeoutError, ConnectionClosed, other handshake trouble -- and
    # anything unforeseen: keep trying with backoff rather than let the feed die
    return "retry"


def _excerpt(frame: str | bytes) -> str:
    text = frame if isinstance(frame, str) else frame[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")


class FrameTap(Protocol):
    """Where a connection puts its raw frames when recording is on (``exporter.recording.StreamTap``):
    the connection appends ``(received_at, ok or bad, frame)`` with ``extend`` itself, a bound C
    method (a deque's), so recording costs the loop no Python call a frame; ``ok`` is the key of a
    frame that parsed (valid JSON), ``bad`` of any other; ``attach`` is told the connection's
    StreamHealth, whose ``messages`` count what it handed over."""

    @property
    def extend(self) -> Callable[[tuple[float, Any, str | bytes]], None]: ...
    @property
    def ok(self) -> Any: ...
    @property
    def bad(self) -> Any: ...

    def attach(self, health: StreamHealth) -> None: ...


class _Rotate(Exception):
    """Internal: the session ended because the planned lifetime is over."""


class FeedConnection:
    """One websocket connection (one :class:`WsPlan`) kept alive until stopped."""

    def __init__(
        self,
        feed: Feed,
        plan: WsPlan,
        ctx: FeedContext,
        sink: RecordSink,
        *,
        backoff: BackoffPolicy | None = None,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.feed = feed
        self.plan = plan
        self.ctx = ctx
        self.sink = sink
        self.backoff = backoff or BackoffPolicy()
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self.clock = clock
        self.rand = rand
        self.connect_kwargs = connect_kwargs or {}
        self.exchange = feed.exchange
        self.health: StreamHealth = sink.stream(self.exchange, plan.stream)
        self.health.cadence_s = plan.cadence_s
        self.exchange_clock = sink.exchange_clock(self.exchange)  # offset-corrects the event lag
        # raw frames go here too when recording is on (the ``recorder`` property: a FrameTap); never
        # blocks. The recorder embeds a parsed object or array frame unescaped
        self._recorder: FrameTap | None = None
        self._record: Callable[[tuple[float, Any, str | bytes]], None] | None = None  # the tap's extend
        self._record_ok: Any = None
        self._record_bad: Any = None
        self.connections_opened = 0  # sessions established (first one included)
        self.silence_reconnects = 0
        self.rotations = 0
        self.last_error: BaseException | None = None
        self.backoff_delays: deque[float] = deque(maxlen=32)  # recent waits before reconnecting (for tests/debug)
        self._ws: ClientConnection | None = None
        self._last_frame = 0.0  # clock() of the last frame of the current session
        self._silenced = False  # the keeper closed the current socket for silence
        self._data_flowed = False  # the current session's subscription delivered data
        # instruments whose snapshot arrived on this session with no parse error since (plan.resync)
        self._synced: set[str] = set()
        self._last_resync = float("-inf")

    # ---- public ------------------------------------------------------------------------------

    @property
    def recorder(self) -> FrameTap | None:
        return self._recorder

    @recorder.setter
    def recorder(self, tap: FrameTap | None) -> None:
        """Record this connection's frames (``Recorder.stream_hook(exchange, stream)``), or stop."""
        self._recorder = tap
        if tap is None:
            self._record = None
            return
        tap.attach(self.health)  # the recorder counts what was handed over from the health's messages
        self._record_ok, self._record_bad = tap.ok, tap.bad
        self._record = tap.extend

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Keep the connection up until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        self.health.expect_from(self.clock())
        loop_task = asyncio.create_task(self._run_forever(), name=f"ws-{self.exchange}-{self.plan.stream}")
        stop_task = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (loop_task, stop_task):
                t.cancel()
            for t in (loop_task, stop_task):
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self._close_current()
            self.health.connected = False

    # ---- the loop ----------------------------------------------------------------------------

    async def _run_forever(self) -> None:
        attempt = 0
        while True:
            try:
                ws = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = exc
                self.health.connected = False
                if classify_error(exc) == "fatal":
                    log.error(
                        "%s %s: connection to %s refused for good (%s); retrying in %.0f s",
                        self.exchange,
                        self.plan.stream,
                        self.plan.url,
                        _describe(exc),
                        self.backoff.fatal_retry_s,
                    )
                    await asyncio.sleep(self.backoff.fatal_retry_s)
                else:
                    delay = backoff_delay(attempt, self.backoff, self.rand)
                    self.backoff_delays.append(delay)
                    log.warning(
                        "%s %s: cannot connect (%s); retry %d in %.2f s",
                        self.exchange,
                        self.plan.stream,
                        _describe(exc),
                        attempt + 1,
                        delay,
                    )
                    attempt += 1
                    await asyncio.sleep(delay)
                continue

            started = self.clock()
            self._data_flowed = False
            self._synced = set()
            try:
                await self._session(ws)
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                log.warning("%s %s: connection closed (%s)", self.exchange, self.plan.stream, _describe(exc))
            except Exception as exc:  # a bug or odd socket state must not end the feed
                log.warning("%s %s: session failed: %s", self.exchange, self.plan.stream, _describe(exc), exc_info=True)
            finally:
                self.health.connected = False
                await self._close_current()
            lived = self.clock() - started
            if lived < self.backoff.short_session_s:
                # connect-then-drop: the backoff keeps growing even if a frame or two got through
                self.health.short_sessions += 1
            elif self._data_flowed or lived >= self.backoff.healthy_after_s:
                attempt = 0  # subscribed and data flowed: the exchange is reachable again
            delay = backoff_delay(attempt, self.backoff, self.rand)
            self.backoff_delays.append(delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _open(self, replacing: ClientConnection | None = None) -> ClientConnection:
        """Connect and subscribe. The socket becomes current only when fully set up, so during a
        rotation the old one (``replacing``) keeps serving until then."""
        kwargs: dict[str, Any] = {
            "open_timeout": self.open_timeout_s,
            "close_timeout": self.close_timeout_s,
            "max_size": MAX_FRAME_BYTES,
            "max_queue": 256,
        }
        kwargs.update(self.connect_kwargs)
        ws = await connect(self.plan.url, **kwargs)
        try:
            for frame in self.plan.subscribe:
                await ws.send(frame)
            for frame in self.feed.heartbeat_setup():
                await ws.send(frame)
        except BaseException:
            await _close_quietly(ws)
            raise
        if replacing is not None and self._ws is not replacing:
            # the old socket died while this one was being set up: the reader has moved on
            await _close_quietly(ws)
            raise ConnectionError("connection replaced during rotation")
        if self.connections_opened > 0:
            self.health.reconnects += 1  # planned rotations included: fr_stream_reconnects_total says so
        self.connections_opened += 1
        self._ws = ws
        self.health.connected = True
        log.info(
            "%s %s: connected to %s (%d subscribe frames)",
            self.exchange,
            self.plan.stream,
            self.plan.url,
            len(self.plan.subscribe),
        )
        return ws

    async def _session(self, ws: ClientConnection) -> None:
        """Read frames until the socket closes or the keeper closes it (silence).

        Deadlines (ping, silence, rotation) live in a separate keeper task, so the per-frame path
        carries no timer: a fast stream pays only for recv, counting and parsing.
        """
        self._last_frame = self.clock()
        self._silenced = False
        keeper = asyncio.create_task(self._keeper(), name=f"keeper-{self.exchange}-{self.plan.stream}")
        try:
            while True:
                try:
                    # the frame's bytes as they came: no UTF-8 decoding to str here, nor encoding back
                    # in the recorder; the parsers decode bytes directly (msgspec/orjson check the
                    # UTF-8 of what they read)
                    frame = await ws.recv(decode=False)
                except ConnectionClosed:
                    current = self._ws
                    if current is not None and current is not ws:
                        ws = current  # a planned rotation replaced the socket: go on with the new one
                        continue
                    if self._silenced:
                        return  # the keeper closed it; already logged and counted
                    raise
                now = self.clock()
                self._last_frame = now
                latency = ws.latency  # websocket ping round trip (the library's keepalive pings)
                if latency > 0.0:
                    self.health.ping_rtt_s = latency
                await self._handle(ws, frame, now)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper

    async def _keeper(self) -> None:
        """Application pings, the silence watchdog and planned rotation for the current session."""
        plan = self.plan
        now = self.clock()
        next_ping = now + plan.ping_interval_s if plan.ping_frame else None
        rotate_at = now + plan.max_lifetime_s if plan.max_lifetime_s else None
        while True:
            deadline = self._last_frame + plan.silence_timeout_s
            if next_ping is not None:
                deadline = min(deadline, next_ping)
            if rotate_at is not None:
                deadline = min(deadline, rotate_at)
            await asyncio.sleep(max(0.0, deadline - self.clock()))
            now = self.clock()
            ws = self._ws
            if ws is None:
                return
            if rotate_at is not None and now >= rotate_at:
                if await self._rotate(ws) is None:
                    rotate_at = now + self.backoff.rotation_retry_s
                else:
                    now = self.clock()
                    self._last_frame = now
                    rotate_at = now + plan.max_lifetime_s if plan.max_lifetime_s else None
                    next_ping = now + plan.ping_interval_s if plan.ping_frame else None
                continue
            if now - self._last_frame >= plan.silence_timeout_s:
                self.silence_reconnects += 1
                self._silenced = True
                log.warning(
                    "%s %s: no frame for %.1f s; reconnecting", self.exchange, plan.stream, now - self._last_frame
                )
                await _close_quietly(ws)
                return
            if next_ping is not None and now >= next_ping and plan.ping_frame:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(plan.ping_frame)
                next_ping = now + plan.ping_interval_s

    async def _rotate(self, old: ClientConnection) -> ClientConnection | None:
        """Planned reconnect: open and subscribe the new socket first, then close the old one."""
        log.info(
            "%s %s: planned reconnect (lifetime %.0f s)", self.exchange, self.plan.stream, self.plan.max_lifetime_s or 0
        )
        try:
            new = await self._open(replacing=old)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "%s %s: planned reconnect failed (%s); keeping the old connection",
                self.exchange,
                self.plan.stream,
                _describe(exc),
            )
            return None
        self.rotations += 1
        await _close_quietly(old)  # the reader sees it closed, finds the new socket and carries on
        return new

    async def _handle(self, ws: ClientConnection, frame: str | bytes, received_at: float) -> None:
        h = self.health
        h.messages += 1
        h.last_message_at = received_at
        # recording: the item appended by the queue's own C method (three references, no Python call)
        record = self._record
        try:
            records = self.feed.parse_ws(frame, self.ctx)
        except ParseError as exc:
            if record is not None:
                record((received_at, self._record_bad, frame))
            h.parse_errors += 1
            reasons = h.parse_error_reasons
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
            log.debug("%s %s: unparsable frame (%s): %s", self.exchange, self.plan.stream, exc, _excerpt(frame))
            if self.plan.resync:
                await self._resync(ws, received_at)
            return
        except Exception as exc:  # a parser bug on odd input: same treatment, louder log
            if record is not None:
                record((received_at, self._record_bad, frame))
            h.parse_errors += 1
            h.parse_error_reasons[PARSER_BUG] = h.parse_error_reasons.get(PARSER_BUG, 0) + 1
            log.warning(
                "%s %s: parser raised %s on frame: %s",
                self.exchange,
                self.plan.stream,
                type(exc).__name__,
                _excerpt(frame),
                exc_info=True,
            )
            if self.plan.resync:
                await self._resync(ws, received_at)
            return
        if record is not None:
            # it parsed, so an object or array frame is valid JSON (the decoders check all of it);
            # the recorder's writer looks at the first byte, off the loop
            record((received_at, self._record_ok, frame))
        if not records:
            return
        data = False
        synced = self._synced
        newest = 0.0  # the frame's newest exchange stamp: one lag observation per frame
        for r in records:
            if isinstance(r, MarketUpdate):
                data = True
                if r.event_time is not None and r.event_time > newest:
                    newest = r.event_time
                if r.confirms_ticker:
                    # A delta may stand for the fields it leaves out only on top of this session's
                    # snapshot: after a reconnect or a lost frame, it refreshes what it carries.
                    if r.snapshot:
                        synced.add(r.instrument)
                    elif r.instrument not in synced:
                        r.confirms_ticker = False
            elif isinstance(r, HeartbeatRequest):
                await ws.send(r.reply)
            elif isinstance(r, SubscriptionError):
                h.subscription_errors += 1
                log.warning("%s %s: subscription refused: %s", self.exchange, self.plan.stream, r.message)
            elif isinstance(r, Rejected):  # one bad element of a many-element frame; the rest applies
                h.parse_errors += 1
                h.parse_error_reasons[r.reason] = h.parse_error_reasons.get(r.reason, 0) + 1
                log.debug("%s %s: element dropped: %s", self.exchange, self.plan.stream, r.message)
            else:
                data = True
                if isinstance(r, Liquidation) and r.event_time > newest:
                    newest = r.event_time
        if data:
            h.last_parsed_at = received_at
            self._data_flowed = True
            h.spoke(received_at)
            if newest > 0.0:
                # our receive time on the exchange's clock, minus its stamp
                h.observe_lag(received_at + self.exchange_clock.offset_s - newest)
        self.sink.apply_many(records, received_at)

    async def handle_frame(self, frame: str | bytes, received_at: float) -> None:
        """One frame as the socket loop would hand it over, without a socket (replay of a recording:
        same counting, parsing, lag and completeness; heartbeat replies and resyncs go nowhere)."""
        await self._handle(_NO_SOCKET, frame, received_at)  # type: ignore[arg-type]

    async def _resync(self, ws: ClientConnection, now: float) -> None:
        """After a parse error on a snapshot+delta stream: deltas stop confirming what they leave
        out, and fresh snapshots are asked for (at most once per ``resync_interval_s``)."""
        self._synced.clear()
        if now - self._last_resync < self.backoff.resync_interval_s:
            return
        self._last_resync = now
        self.health.resyncs += 1
        log.info(
            "%s %s: parse error on a snapshot+delta stream; asking for fresh snapshots", self.exchange, self.plan.stream
        )
        with contextlib.suppress(ConnectionClosed):
            for frame in self.plan.resync:
                await ws.send(frame)

    async def _close_current(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await _close_quietly(ws)


class _NoSocket:
    """Stands in for the socket when frames come from a recording: what would be sent is dropped."""

    async def send(self, _frame: str | bytes) -> None:
        return None


_NO_SOCKET = _NoSocket()


async def _close_quietly(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code} on handshake"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
