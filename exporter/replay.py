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
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from exporter.app import market_state
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.feeds import feed_for
from exporter.feeds.base import Feed, FeedContext, WsPlan
from exporter.feeds.connection import FeedConnection
from exporter.feeds.server_time import parse_server_time
from exporter.metrics import ExporterRegistry, build_registry
from exporter.model import Exchange, InstrumentInfo, Record
from exporter.recording import read_lines

log = logging.getLogger(__name__)

YIELD_EVERY = 2000  # lines between turns of the event loop when replaying as fast as possible


@dataclass(slots=True)
class ReplayStats:
    lines: int = 0
    frames: int = 0
    rest_bodies: int = 0
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

    def advance_to(self, t: float) -> None:
        """Move the replay's clock to ``t`` (never back): what a scrape at ``t`` would see."""
        self._advance(t)

    def _exchange(self, ex: Exchange) -> _Exchange:
        x = self.exchanges.get(ex)
        if x is None:
            self.state.register_exchange(ex)
            x = self.exchanges[ex] = _Exchange(feed_for(ex), FeedContext(ex, {}, clock=self.state.clock))
        return x

    def _conn(self, x: _Exchange, stream: str) -> FeedConnection:
        conn = x.conns.get(stream)
        if conn is None:
            plan = x.plans.get(stream) or WsPlan(stream, "replay")
            conn = x.conns[stream] = FeedConnection(x.feed, plan, x.ctx, self.state, clock=self.clock.time)
            conn.health.expect_from(self.stats.first or self.clock.time())
        return conn

    async def apply(self, d: dict[str, Any]) -> None:
        t = float(d["t"])
        self._advance(t)
        self.stats.lines += 1
        self.stats.last = t
        try:
            ex = Exchange(d["ex"])
        except ValueError:
            self.stats.errors += 1
            return
        x = self._exchange(ex)
        kind = d.get("kind")
        data = d.get("data", "")
        if d.get("b64"):
            import base64

            data = base64.b64decode(data)
        if kind == "ws":
            self.stats.frames += 1
            await self._conn(x, str(d.get("src", ""))).handle_frame(data, t)
        elif kind == "rest":
            self.stats.rest_bodies += 1
            self._rest(
                ex, x, str(d.get("src", "")), d.get("q") or {}, data.encode() if isinstance(data, str) else data, t
            )
        elif kind == "meta" and d.get("src") == "followed":
            self._followed(ex, x, orjson.loads(data))

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
        x.plans = {p.stream: p for p in x.feed.ws_plans("ws://replay", perps)} if perps else {}
        for stream, conn in x.conns.items():
            if stream in x.plans:
                conn.health.cadence_s = x.plans[stream].cadence_s

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
    ) -> ReplayStats:
        """Apply every line. ``speed``: pace at N times real time (None: as fast as possible).
        ``on_step(t)`` is called at every multiple of ``step`` seconds from the first line (the clock
        at t, every line received up to t applied); ``on_line(t)`` before each line is applied."""
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
