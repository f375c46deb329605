"""Replay a recording (``exporter/recording.py``) through the same parsers and state, on a virtual clock.

Every recorded line is applied at its receive time: the :class:`~exporter.clock.VirtualClock` is
moved to it first, so staleness, rolling windows, settlement inference and threshold events behave
as they did live. Websocket frames go through :meth:`FeedConnection.handle_frame` (the live
counting, parsing, lag and completeness path); REST bodies through the same parsers the REST
endpoints use; ``meta`` lines say which instruments were followed.

``fr-exporter replay DIR`` serves ``/metrics`` and ``/api/state`` like the exporter while it
replays (``--speed N``: N times real time; ``--as-fast-as-possible``), and keeps serving the end
state until stopped. ``--openmetrics OUT --step 15s`` writes the whole period as OpenMetrics with a
timestamp per step instead, for ``promtool tsdb create-blocks-from openmetrics OUT DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from exporter.api_state import build_state_document
from exporter.app import market_state
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.feeds import dated, feed_for
from exporter.feeds.base import Feed, FeedContext, WsPlan
from exporter.feeds.connection import FeedConnection
from exporter.feeds.server_time import parse_server_time
from exporter.metrics import ExporterRegistry, build_registry
from exporter.model import Exchange, InstrumentInfo, Record
from exporter.recording import REST_ERROR, read_lines
from exporter.redact import redact
from exporter.rest.client import FAILURE_REASONS
from exporter.views import MarketViews

log = logging.getLogger(__name__)

_EXCHANGES: dict[str, Exchange] = {e.value: e for e in Exchange}  # a line's "ex" without Enum's call
YIELD_EVERY = 2000  # lines between turns of the event loop when replaying as fast as possible


@dataclass(slots=True)
class ReplayStats:
    lines: int = 0
    frames: int = 0
    rest_bodies: int = 0
    rest_failures: int = 0
    records: int = 0
    errors: int = 0
    first: float | None = None
    last: float | None = None
    wall_seconds: float = 0.0


@dataclass(slots=True)
class _Exchange:
    feed: Feed
    ctx: FeedContext
    plans: dict[str, WsPlan] = field(default_factory=dict)
    conns: dict[str, FeedConnection] = field(default_factory=dict)


def _info(d: dict[str, Any]) -> InstrumentInfo:
    return InstrumentInfo(**{**d, "exchange": Exchange(d["exchange"])})


def parse_step(text: str) -> float:
    """``15s``, ``1m``, ``500ms``, ``2h`` or plain seconds -> seconds (ValueError otherwise)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip()
    for suffix in ("ms", "s", "m", "h"):
        if t.endswith(suffix):
            value = float(t[: -len(suffix)]) * units[suffix]
            break
    else:
        value = float(t)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"step {text!r}: a positive duration such as 15s")
    return value


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (``2026-11-30T07:00:00Z``; no zone: UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import UTC, datetime

    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class Replay:
    """A state rebuilt from recorded lines; :meth:`run` applies them in order."""

    def __init__(
        self, config: Config, directory: Path, *, start: float | None = None, end: float | None = None
    ) -> None:
        self.config = config
        self.directory = Path(directory)
        self.start = start
        self.end = end
        lines = self._lines()
        first = next(lines, None)
        self._pending: Iterator[dict[str, Any]] = itertools.chain([first] if first else [], lines)
        t0 = float(first["t"]) if first else (start or time.time())
        self.clock = VirtualClock(start=t0)
        self.state = market_state(config, self.clock)
        self.exchanges: dict[Exchange, _Exchange] = {}
        self.stats = ReplayStats(first=t0 if first else None)
        self.registry: ExporterRegistry = build_registry(config, self.state, process=False)

    def _lines(self) -> Iterator[dict[str, Any]]:
        for d in read_lines(self.directory):
            t = d.get("t")
            if not isinstance(t, int | float):
                continue
            if self.start is not None and t < self.start:
                continue
            if self.end is not None and t > self.end:
                return
            yield d

    # ---- applying ----------------------------------------------------------------------------

    def _advance(self, t: float) -> None:
        dt = t - self.clock.time()
        if dt > 0:
            self.clock.advance(dt)

    async def _wake_until(self, t: float, settle: Callable[[], Awaitable[None]]) -> None:
        """Deadline by deadline up to ``t``: the sleepers wake at their own times, as they would live."""
        while (due := self.clock.next_deadline()) is not None and due <= t:
            self.clock.set_time(max(due, self.clock.time()))
            await settle()

    def advance_to(self, t: float) -> None:
        """Move the replay's clock to ``t`` (never back): what a scrape at ``t`` would see."""
        self._advance(t)

    def _exchange(self, ex: Exchange) -> _Exchange:
        x = self.exchanges.get(ex)
        if x is None:
            self.state.register_exchange(ex)
            ctx = FeedContext(ex, {}, clock=self.state.clock, settled={})  # one sink: see FeedContext.settled
            x = self.exchanges[ex] = _Exchange(feed_for(ex), ctx)
        return x

    def _conn(self, x: _Exchange, stream: str, expected_from: float | None = None) -> FeedConnection:
        """The stream's connection, made (its counters registered) at the recording's ``streams`` line
        as live made it, or at its first frame in a recording without one."""
        conn = x.conns.get(stream)
        if conn is None:
            plan = x.plans.get(stream) or WsPlan(stream, "replay")
            conn = x.conns[stream] = FeedConnection(x.feed, plan, x.ctx, self.state, clock=self.clock.time)
            conn.health.expect_from(expected_from or self.stats.first or self.clock.time())
        return conn

    async def apply(self, d: dict[str, Any]) -> None:
        t = float(d["t"])
        if t > self.clock.time():
            self.clock.set_time(t)
        stats = self.stats
        stats.lines += 1
        stats.last = t
        name = d.get("ex")
        ex = _EXCHANGES.get(name) if isinstance(name, str) else None  # a damaged line: counted, skipped
        if ex is None:
            stats.errors += 1
            return
        x = self.exchanges.get(ex) or self._exchange(ex)
        kind = d.get("kind")
        data = d.get("data", "")
        if d.get("b64"):
            import base64

            data = base64.b64decode(data)
        if kind == "ws":  # the common line first: a frame through the live connection path
            stats.frames += 1
            src = d.get("src", "")
            if not isinstance(src, str):
                src = str(src)
            conn = x.conns.get(src) or self._conn(x, src)
            await conn.handle_frame(data, t)
        elif kind == "rest":
            self.stats.rest_bodies += 1
            self._rest(
                ex, x, str(d.get("src", "")), d.get("q") or {}, data.encode() if isinstance(data, str) else data, t
            )
        elif kind == REST_ERROR:
            self.stats.rest_failures += 1
            self._rest_failure(ex, str(d.get("src", "")), str(data))
        elif kind == "meta":
            src = d.get("src")
            if src == "followed":
                self._followed(ex, x, orjson.loads(data))
            elif src == "streams":  # live registered these streams' counters here, frames or not
                for stream in orjson.loads(data):
                    if isinstance(stream, str):
                        self._conn(x, stream, t)

    def _followed(self, ex: Exchange, x: _Exchange, rows: list[dict[str, Any]]) -> None:
        infos = [_info(r) for r in rows]
        x.ctx.instruments = {i.instrument: i for i in infos}
        perps = [i for i in infos if i.expiry is None]
        for info in perps:
            self.state.register(info)
        futures = [i for i in infos if i.expiry is not None]
        if futures and hasattr(self.state, "set_futures"):
            self.state.set_futures(ex, futures)
        # the live connections' plans, for each stream's cadence
        plans = x.feed.ws_plans("ws://replay", perps) if perps else []
        plans += dated.ws_plans(ex, "ws://replay", futures)
        x.plans = {p.stream: p for p in plans}
        for stream, conn in x.conns.items():
            if stream in x.plans:
                conn.health.cadence_s = x.plans[stream].cadence_s

    def _rest_failure(self, ex: Exchange, endpoint: str, reason: str) -> None:
        """A failed attempt as live counted it; a reason we do not know is a bad line, not a new label."""
        if reason not in FAILURE_REASONS:
            self.stats.errors += 1
            return
        h = self.state.rest_endpoint(ex, endpoint)
        h.requests += 1
        h.failures[reason] = h.failures.get(reason, 0) + 1

    def _rest(self, ex: Exchange, x: _Exchange, endpoint: str, q: dict[str, Any], body: bytes, t: float) -> None:
        h = self.state.rest_endpoint(ex, endpoint)
        h.requests += 1
        h.last_success_at = t
        feed, ctx = x.feed, x.ctx
        parse: Any
        try:
            records: Iterable[Record]
            if endpoint == "server_time":
                sent = q.get("_sent")
                self.state.exchange_clock(ex).sample(float(sent) if sent else t, parse_server_time(ex, body), t)
                return
            if endpoint == "funding_history":
                parse = feed.parse_funding_history
                if "instrument_name" in q:  # Deribit: the body does not name the instrument
                    records = parse(body, ctx, instrument=q["instrument_name"])
                else:
                    records = parse(body, ctx)
            elif endpoint == "open_interest":
                records = feed.parse_open_interest(body, ctx)
            elif endpoint == "long_short_ratio":
                parse = feed.parse_long_short_ratio
                okx = ex is Exchange.OKX  # the OKX body does not name the instrument
                records = parse(body, ctx, instrument=q.get("instId", "")) if okx else parse(body, ctx)
            elif endpoint == "insurance_fund":
                records = feed.parse_insurance_fund(body, ctx)
            elif endpoint == "funding_info":
                parse = getattr(feed, "parse_funding_info", None)
                records = list(parse(body)) if parse is not None else []
            else:
                return  # instrument lists: the meta line says what was followed
        except Exception:  # what failed live failed the same way: counted, nothing applied
            h.failures["parse"] = h.failures.get("parse", 0) + 1
            return
        recs = list(records)
        self.stats.records += len(recs)
        self.state.apply_many(recs, t)

    # ---- running -----------------------------------------------------------------------------

    async def run(
        self,
        *,
        speed: float | None = None,
        step: float | None = None,
        on_step: Callable[[float], None] | None = None,
        on_line: Callable[[float], None] | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> ReplayStats:
        """Apply every line. ``speed``: pace at N times real time (None: as fast as possible).
        ``on_step(t)`` is called at every multiple of ``step`` seconds from the first line (the clock
        at t, every line received up to t applied); ``on_line(t)`` before each line is applied.
        ``settle``: tasks sleep on the replay's clock (the sidecar): before a line, the clock stops at
        every deadline due by the line's time and ``await settle()`` lets the woken tasks finish."""
        wall0 = time.monotonic()
        t0 = self.stats.first
        next_step = t0 if (step and t0 is not None) else None
        for n, d in enumerate(self._pending, start=1):
            t = float(d["t"])
            if next_step is not None and step is not None and on_step is not None:
                while next_step < t:
                    self._advance(next_step)
                    on_step(next_step)
                    next_step += step
            if speed is not None and t0 is not None:
                ahead = (t - t0) / speed - (time.monotonic() - wall0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if settle is not None:
                await self._wake_until(t, settle)
            if on_line is not None:
                on_line(t)
            await self.apply(d)
            if speed is None and n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the server thread and signal handlers get a turn
        if next_step is not None and on_step is not None and self.stats.last is not None:
            while next_step <= self.stats.last:
                self._advance(next_step)
                on_step(next_step)
                next_step += step or 0.0
        self.stats.wall_seconds = time.monotonic() - wall0
        return self.stats


class OpenMetricsSeries:
    """Scrapes taken at several instants merged into one OpenMetrics text with timestamps: each
    family's header once, then its samples in time order (what ``promtool tsdb
    create-blocks-from openmetrics`` reads)."""

    def __init__(self) -> None:
        self.headers: dict[str, list[str]] = {}
        self.samples: dict[str, list[str]] = {}

    def add(self, text: str, at: float) -> None:
        ts = f" {at:.3f}"
        family: str | None = None
        seen: set[str] = set()
        for line in text.splitlines():
            if line.startswith("# EOF"):
                break
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) < 3:
                    continue
                family = parts[2]
                if family not in self.headers:
                    self.headers[family] = []
                    self.samples[family] = []
                    seen.add(family)
                if family in seen:
                    self.headers[family].append(line)
            elif line and family is not None:
                self.samples[family].append(line + ts)

    def write(self, out: IO[str]) -> int:
        n = 0
        for family, head in self.headers.items():
            rows = self.samples[family]
            if not rows:
                continue
            out.write("\n".join(head) + "\n")
            out.write("\n".join(rows) + "\n")
            n += len(rows)
        out.write("# EOF\n")
        return n


async def replay_to_openmetrics(
    config: Config,
    directory: Path,
    out: Path,
    step: float,
    *,
    start: float | None = None,
    end: float | None = None,
) -> tuple[ReplayStats, int]:
    """Replay as fast as possible and write a scrape every ``step`` seconds to ``out``."""
    replay = Replay(config, directory, start=start, end=end)
    series = OpenMetricsSeries()

    def scrape(t: float) -> None:
        series.add(replay.registry.render(openmetrics=True).decode(), t)

    stats = await replay.run(step=step, on_step=scrape)
    with open(out, "w", encoding="utf-8") as f:
        n = series.write(f)
    return stats, n


# ---- the AI sidecar on a replay ------------------------------------------------------------------


class _StateTransport(httpx.AsyncBaseTransport):
    """The replay's /api/state, answered in the event loop (no socket): a read sees the state at the
    replay clock's current instant, between two recorded lines."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        views = getattr(replay.registry, "views", None)  # the views /metrics reads (one cache)
        self.views = views if isinstance(views, MarketViews) else MarketViews(replay.config, replay.state)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/api/state":
            return httpx.Response(404, text="not found\n")
        doc = build_state_document(self.replay.config, self.replay.state, self.views)
        body = redact(orjson.dumps(doc).decode()).encode()
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})


@dataclass(slots=True)
class SidecarReplayStats:
    replay: ReplayStats
    predictions: int
    scored: int
    db: Path
    wakes: int


SETTLE_TIMEOUT_S = 60.0  # wall seconds for the sidecar's woken loops to go back to sleep (a model call)


class SidecarOnReplay:
    """The AI sidecar reading a replay's /api/state on the replay's clock.

    Its loops (the /api/state poll, the schedule) sleep on the replay's VirtualClock; the replay stops
    the clock at each of their deadlines and waits until the woken loops sleep again and their
    prediction tasks are done, so predictions are made, stored and scored at the recorded instants
    (a model call takes the wall time it takes; the replay waits for it). A model's retry waits run on
    wall time (a real API's rate limits do). Afterwards ``fr-exporter evaluate`` scores the database.
    """

    LOOPS = 2  # the sidecar's poll and schedule loops: asleep on the clock between turns

    def __init__(self, replay: Replay, sidecar_config: Config) -> None:
        from exporter.sidecar.main import Sidecar  # the sidecar is a program of its own: loaded only here

        self.replay = replay
        self.config = sidecar_config
        self.sidecar = Sidecar(sidecar_config, clock=replay.clock, model_sleep=asyncio.sleep)
        self.wakes = 0
        self._task: asyncio.Task[None] | None = None

    def _asleep(self) -> bool:
        return self.replay.clock.pending() >= self.LOOPS

    async def settle(self) -> None:
        self.wakes += 1
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        turns = 0
        while not self._asleep():
            if self._task is not None and self._task.done():
                self._task.result()  # the sidecar stopped (cannot listen...): its error, not a hang
                raise RuntimeError("the sidecar stopped during the replay")
            if time.monotonic() > deadline:
                raise RuntimeError("the sidecar's loops did not go back to sleep on the replay's clock")
            turns += 1
            await asyncio.sleep(0 if turns < 100 else 0.001)  # a model call takes wall time
        await self.sidecar.wait_idle()

    async def run(self, *, speed: float | None = None) -> SidecarReplayStats:
        sc = self.sidecar
        await sc.http.aclose()  # reads go to the replay, in the loop
        sc.http = httpx.AsyncClient(transport=_StateTransport(self.replay), base_url="http://replay")
        stop = asyncio.Event()
        task = self._task = asyncio.create_task(sc.run(stop), name="sidecar-on-replay")
        try:
            await self.settle()  # its first read and first schedule, at the recording's first instant
            stats = await self.replay.run(speed=speed, settle=self.settle)
            sc.store.score_due(self.replay.clock.time(), sc.sc.event_threshold_usd)
            sc.refresh_scores()
            predictions = sc.store.prediction_count()
            scored = len(sc.store.scored())
        finally:
            stop.set()
            with contextlib.suppress(Exception):  # an error of its own was raised by settle()
                await task  # closes the store and the sidecar's server
        return SidecarReplayStats(stats, predictions, scored, sc.sc.db_path, self.wakes)
