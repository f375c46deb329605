"""httpx wrapper for the exchanges' public REST APIs: counting, backoff, Retry-After.

Every HTTP attempt is counted in ``sink.rest_endpoint(exchange, endpoint).requests``; every
failed attempt in ``.failures[reason]`` with reason one of :data:`FAILURE_REASONS`. A rate-limit
answer (429, or 418 = Binance IP ban) closes a gate for the whole exchange -- limits are per IP --
until its ``Retry-After`` (seconds or HTTP date, capped) has passed: every later request on this
client waits at the gate. 5xx, timeouts and connection errors are retried a few times with
jittered backoff. When all attempts fail, :class:`RestError` is raised and the caller keeps the
values it had: a failed poll changes nothing.

Before any of that, every request waits for its share of the exchange's published per-IP limits
(:class:`RequestBudget`, limits in exporter/limits.py): the client paces itself so that the 429 gate
is the exception, not the pacing.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import orjson

from exporter.limits import LIMITS, ExchangeLimits
from exporter.model import Exchange
from exporter.sink import RecordSink

log = logging.getLogger(__name__)

FAILURE_REASONS = ("rate_limited", "http_4xx", "http_5xx", "timeout", "connection", "parse")

Params = Mapping[str, str | int | float]


class RestError(Exception):
    """A request that failed after its retries. ``reason`` is one of FAILURE_REASONS.

    For ``http_4xx`` the status and body are kept: a signed account read finds the exchange's
    error code there (auth or not). The body is for parsing, never for logging.
    """

    def __init__(self, reason: str, message: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.body = body


# A signed request: (path, encoded query) -> (query to send, headers). Called for every attempt,
# after any wait at the rate-limit gate, so the timestamp in the signature is fresh.
Signer = Callable[[str, str], tuple[str, dict[str, str]]]


@dataclass(frozen=True, slots=True)
class RestPolicy:
    timeout_s: float = 10.0
    attempts: int = 3  # per call, first try included
    retry_initial_s: float = 0.5  # backoff for 5xx / timeout / connection errors
    retry_max_s: float = 10.0
    rate_limit_default_s: float = 5.0  # 429 without Retry-After
    ban_default_s: float = 120.0  # 418 without Retry-After (Binance bans start at 2 min)
    retry_after_cap_s: float = 600.0  # never trust a 429 Retry-After longer than this
    # A 418 is a Binance IP ban "from 2 minutes up to 3 days" whose Retry-After says when it ends
    # (exchanges.md 2.9): asking again before then only prolongs it, so it is honoured up to 3 days.
    ban_cap_s: float = 3 * 86400.0
    # Bybit answers HTTP 403 "access too frequent" to an IP over its limit: "stop and wait >= 10
    # minutes" (exchanges.md 3.9); its retCode 10006 ("too many visits") is a plain rate limit.
    bybit_403_wait_s: float = 600.0
    max_wait_in_call_s: float = 60.0  # a gate further away than this fails the call instead of waiting


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date. None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if dt is None:
            return None
        seconds = dt.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


DEFAULT_SHARE = 0.5  # of each published limit: room for other users of the IP and for limits that shrank

# The guaranteed share a request is served from: a poller's task sets its lane (the requests of its
# round inherit it); None is the common share (backfills, refreshes, account reads).
REQUEST_LANE: ContextVar[str | None] = ContextVar("fr_request_lane", default=None)
LANE_BURST_S = 2.0  # a lane's unused guarantee is kept this long at most (its priority burst)


@dataclass(slots=True)
class _Credit:
    """A lane's guarantee in one bucket: weight per second, and what it has not used yet."""

    rate: float
    cap: float
    left: float


@dataclass(slots=True)
class _Waiter:
    turn: asyncio.Future[None]
    credit: _Credit | None
    weight: float


@dataclass(slots=True)
class _Queue:
    """Whose turn it is to take one bucket's tokens: one request at a time, the others waiting."""

    held: bool = False
    waiting: list[_Waiter] = field(default_factory=list)


class RequestBudget:
    """One exchange's request budget: a token bucket per published limit, refilled at ``share`` of it.

    Every request of the exchange waits here first, so the startup backfill, the pollers and the
    instrument refresh share the budget instead of racing into a 429. Each bucket serves one request
    at a time in arrival order, whatever its weight: a weight-2 candle page is not overtaken forever by
    a stream of weight-1 polls, which is how the factor backfill starved behind Binance's open-interest
    poller at 500 instruments. A request costing several buckets takes their turns slowest bucket
    first and waits in each for its tokens, debiting all of them only when it leaves: a funding-history
    call waits its turn in the 500 per 5 min bucket without holding up the open-interest polls of the
    weight bucket, and enters that queue only once its slow tokens are there.

    Guarantees (:meth:`guarantee`, the split of exporter/rest/split.py): a lane (a poller, named by
    :data:`REQUEST_LANE`) is promised a rate in a bucket. Its credit grows at that rate (kept for
    ``LANE_BURST_S`` at most) and every request of the lane spends it; a waiting request whose lane
    has credit goes before the others. So a lane gets at least its rate whatever else waits, and the
    turns by arrival share what is left: nothing reserved is idle (the tokens are one pool), and the
    window bound below holds as before.

    A bucket's burst is a tenth of ``share x limit`` (at least one request: a handful of calls,
    a test, a small exporter never wait) and its refill rate ``(share x limit - burst) / window``: in any window of the
    exchange this budget's requests stay within ``share x limit``, so S budgets of ``share / S``
    (shards on one IP, docs/rate-limits.md) stay within the limit together. Where ``share x limit``
    is below one request, the refill keeps half of it.

    ``now``/``sleep`` are the client's. A sleep after which ``now`` has not moved at all (a test's
    instant sleep with a frozen clock) counts as the wait it stood for.
    """

    def __init__(
        self,
        limits: ExchangeLimits,
        share: float = DEFAULT_SHARE,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        self.limits = limits
        self.share = share
        self._now = now
        self._sleep = sleep
        self._cap: dict[str, float] = {}
        self._rate: dict[str, float] = {}
        for b in limits.buckets:
            mine = share * b.limit
            cap = max(1.0, 0.1 * mine)
            self._cap[b.name] = cap
            # 1 % below the share: a window holding exactly the limit is one rounding away from a 429
            self._rate[b.name] = 0.99 * max(mine - cap, 0.5 * mine) / b.window_s
        self._tokens = dict(self._cap)
        self._base = now()  # times below are relative to this: small floats keep their precision
        self._t = 0.0  # time of the last refill
        self._skew = 0.0  # waits slept while the clock stood still (frozen test clocks only)
        # one queue per bucket; a request holding several takes them slowest first (a global order:
        # no two requests wait for each other's turns)
        self._queues = {b.name: _Queue() for b in limits.buckets}
        rank = {name: i for i, name in enumerate(sorted(self._rate, key=lambda n: (self._rate[n], n)))}
        self._rank = rank
        self._lanes: dict[str, dict[str, _Credit]] = {}
        self._heaviest = {b.name: 1.0 for b in limits.buckets}
        for weights in (*(c.weights for c in limits.costs), limits.default):
            for name, w in weights:
                self._heaviest[name] = max(self._heaviest[name], w)
        self.requests = 0
        self.waits = 0  # requests that had to wait
        self.waited_s = 0.0

    def rate(self, bucket: str) -> float:
        """Sustained weight per second this budget allows in ``bucket``."""
        return self._rate[bucket]

    def guarantee(self, lane: str, rates: Mapping[str, float]) -> None:
        """Promise ``lane`` at least ``rates[bucket]`` weight per second in each bucket (replacing what it
        was promised before; an empty mapping withdraws it). The promises of a bucket together may not
        exceed its rate."""
        self._refill()
        for name, r in rates.items():
            others = sum(c[name].rate for ln, c in self._lanes.items() if ln != lane and name in c)
            if r < 0 or others + r > self._rate[name] * (1 + 1e-9):
                raise ValueError(f"{lane}: {r:.3f}/s of {name} is more than its {self._rate[name] - others:.3f}/s left")
        old = self._lanes.pop(lane, {})
        credits: dict[str, _Credit] = {}
        for name, r in rates.items():
            if r > 0:
                cap = max(self._heaviest[name], r * LANE_BURST_S)  # room for any one request
                left = min(cap, old[name].left) if name in old else cap
                credits[name] = _Credit(r, cap, left)
        if credits:
            self._lanes[lane] = credits

    def guaranteed(self, lane: str, bucket: str) -> float:
        """Weight per second promised to ``lane`` in ``bucket`` (0 if none)."""
        c = self._lanes.get(lane, {}).get(bucket)
        return c.rate if c is not None else 0.0

    def _refill(self) -> None:
        t = max(self._now() - self._base + self._skew, self._t)
        dt = t - self._t
        self._t = t
        if dt > 0:
            for name, rate in self._rate.items():
                self._tokens[name] = min(self._cap[name], self._tokens[name] + rate * dt)
            for credits in self._lanes.values():
                for c in credits.values():
                    c.left = min(c.cap, c.left + c.rate * dt)

    async def acquire(self, path: str) -> None:
        weights = sorted(self.limits.cost(path), key=lambda bw: self._rank[bw[0]])
        lane = REQUEST_LANE.get()
        credits = self._lanes.get(lane, {}) if lane is not None else {}
        held: list[str] = []
        waited = False
        try:
            for name, w in weights:
                await self._take_turn(name, credits.get(name), w)
                held.append(name)
                # nobody else debits this bucket while we hold its turn: its tokens only grow now
                waited = await self._wait_tokens(name, w) or waited
            self._refill()
            for name, w in weights:
                self._tokens[name] -= w
                c = credits.get(name)
                if c is not None:  # the lane's own use counts against its guarantee, however it was served
                    c.left = max(0.0, c.left - w)
            self.requests += 1
            self.waits += waited
        finally:
            for name in reversed(held):
                self._pass_turn(name)

    async def _take_turn(self, name: str, credit: _Credit | None, w: float) -> None:
        q = self._queues[name]
        if not q.held:
            q.held = True
            return
        waiter = _Waiter(asyncio.get_running_loop().create_future(), credit, w)
        q.waiting.append(waiter)
        try:
            await waiter.turn
        except asyncio.CancelledError:
            if waiter.turn.done() and not waiter.turn.cancelled():
                self._pass_turn(name)  # the turn was ours already: hand it on
            elif waiter in q.waiting:
                q.waiting.remove(waiter)
            raise

    def _pass_turn(self, name: str) -> None:
        """The next turn: the longest-waiting request whose lane has credit for it, else the longest-waiting."""
        q = self._queues[name]
        q.waiting = [wt for wt in q.waiting if not wt.turn.done()]  # cancelled while waiting
        if not q.waiting:
            q.held = False
            return
        self._refill()
        pick = 0
        for i, wt in enumerate(q.waiting):
            if wt.credit is not None and wt.credit.left >= wt.weight - 1e-6:
                pick = i
                break
        q.waiting.pop(pick).turn.set_result(None)

    async def _wait_tokens(self, name: str, w: float) -> bool:
        """Sleep until ``name`` holds ``w`` tokens; whether any wait was needed."""
        waited = False
        while True:
            self._refill()
            # a hair below w counts as w: float rounding must not make a loop of ever tinier waits
            if self._tokens[name] >= w - 1e-6:
                return waited
            wait = (w - self._tokens[name]) / self._rate[name]
            waited = True
            self.waited_s += wait
            before = self._now()
            await self._sleep(wait)
            if self._now() == before:
                self._skew += wait


def budget_share(fraction: float, shard_count: int, split_between_shards: bool) -> float:
    """Each exporter's share of a limit: ``fraction``, divided among the shards when they share an IP."""
    return fraction / (shard_count if split_between_shards else 1)


class RestClient:
    """One exchange's REST base URL with shared rate-limit state."""

    def __init__(
        self,
        exchange: Exchange,
        base_url: str,
        sink: RecordSink,
        *,
        policy: RestPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        budget: RequestBudget | None = None,
    ) -> None:
        self.exchange = exchange
        self.base_url = base_url.rstrip("/")
        self.sink = sink
        self.policy = policy or RestPolicy()
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self._gate_until = 0.0  # no request before this time (rate limit / ban)
        self.budget = budget or RequestBudget(LIMITS[exchange], now=clock, sleep=sleep)
        # (sent_at, received_at, endpoint, path, params, body) of every unsigned success, when recording
        self.recorder: Callable[[float, float, str, str, Params | None, bytes], None] | None = None
        # (sent_at, received_at, endpoint, path, params, reason, HTTP status) of every unsigned failed
        # attempt, when recording: a replay counts the failures as live did (no body: it may echo the query)
        self.failure_recorder: Callable[[float, float, str, str, Params | None, str, int | None], None] | None = None
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.policy.timeout_s),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "fr-exporter/0.1"},
            follow_redirects=False,
        )

    @property
    def gate_until(self) -> float:
        return self._gate_until

    async def aclose(self) -> None:
        await self._http.aclose()

    def count_failure(self, endpoint: str, reason: str) -> None:
        """Count a failure found after the HTTP call (e.g. ``parse``) against the endpoint."""
        failures = self.sink.rest_endpoint(self.exchange, endpoint).failures
        failures[reason] = failures.get(reason, 0) + 1

    def _failed(
        self,
        endpoint: str,
        reason: str,
        sent_at: float,
        path: str,
        params: Params | None,
        status: int | None,
        signed: bool,
    ) -> None:
        """A failed attempt: counted, and recorded when recording (signed account calls never are)."""
        self.count_failure(endpoint, reason)
        if self.failure_recorder is not None and not signed:
            self.failure_recorder(sent_at, self.clock(), endpoint, path, params, reason, status)

    def _count_success(self, endpoint: str) -> None:
        self.sink.rest_endpoint(self.exchange, endpoint).last_success_at = self.clock()

    def _close_gate(self, seconds: float, cap: float | None = None) -> None:
        seconds = min(seconds, self.policy.retry_after_cap_s if cap is None else cap)
        self._gate_until = max(self._gate_until, self.clock() + seconds)

    async def get(self, endpoint: str, path: str, params: Params | None = None, *, sign: Signer | None = None) -> bytes:
        """GET ``path`` and return the body. Raises :class:`RestError` when every attempt failed.

        ``endpoint`` is the label the call is counted under (``funding_history``...). ``sign``
        makes it a signed (account) request: the query is sent exactly as the signer returns it.
        """
        body, _sent, _received = await self.get_timed(endpoint, path, params, sign=sign)
        return body

    async def get_timed(
        self, endpoint: str, path: str, params: Params | None = None, *, sign: Signer | None = None
    ) -> tuple[bytes, float, float]:
        """As :meth:`get`, with the clock times the successful attempt was sent and answered: taken
        after the pacing gate, so time spent queueing behind other calls is not in the round trip
        (a server-time sample's offset error is half its round trip)."""
        health = self.sink.rest_endpoint(self.exchange, endpoint)
        p = self.policy
        last: RestError | None = None
        for attempt in range(p.attempts):
            wait = self._gate_until - self.clock()
            if wait > 0:
                if wait > p.max_wait_in_call_s:
                    raise RestError("rate_limited", f"{self.exchange} {endpoint}: rate-limited for {wait:.0f} s more")
                await self.sleep(wait)
            await self.budget.acquire(path)
            health.requests += 1
            sent_at = self.clock()
            retry_in: float | None = None
            status: int | None = None  # none when no answer came (timeout, connection)
            try:
                if sign is None:
                    resp = await self._http.get(path, params=dict(params) if params else None)
                else:
                    query, headers = sign(path, urlencode(list(params.items())) if params else "")
                    resp = await self._http.get(f"{path}?{query}" if query else path, headers=headers)
            except httpx.TimeoutException as exc:
                last = RestError("timeout", f"{self.exchange} {endpoint}: timeout ({type(exc).__name__})")
            except httpx.TransportError as exc:
                last = RestError("connection", f"{self.exchange} {endpoint}: {type(exc).__name__}: {exc}")
            else:
                status = resp.status_code
                bybit = self.exchange == Exchange.BYBIT
                if 200 <= status < 300:
                    if not (bybit and _bybit_too_many_visits(resp.content)):
                        self._count_success(endpoint)
                        received_at = self.clock()
                        if self.recorder is not None and sign is None:  # signed account calls: never recorded
                            self.recorder(sent_at, received_at, endpoint, path, params, resp.content)
                        return resp.content, sent_at, received_at
                    # HTTP 200 with retCode 10006: rate-limited until the reset time Bybit gives
                    reset = _bybit_reset_in(resp.headers.get("X-Bapi-Limit-Reset-Timestamp"), self.clock())
                    self._close_gate(reset if reset is not None else p.rate_limit_default_s)
                    last = RestError("rate_limited", f"{self.exchange} {endpoint}: retCode 10006 (too many visits)")
                    self._failed(endpoint, last.reason, sent_at, path, params, status, sign is not None)
                    continue
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock())
                if status in (429, 418):
                    if status == 418:
                        self._close_gate(retry_after if retry_after is not None else p.ban_default_s, p.ban_cap_s)
                    else:
                        self._close_gate(retry_after if retry_after is not None else p.rate_limit_default_s)
                    last = RestError("rate_limited", f"{self.exchange} {endpoint}: HTTP {status}")
                elif status == 403 and bybit:
                    wait = max(p.bybit_403_wait_s, retry_after or 0.0)
                    self._close_gate(wait, max(p.bybit_403_wait_s, p.retry_after_cap_s))
                    last = RestError("rate_limited", f"{self.exchange} {endpoint}: HTTP 403 (access too frequent)")
                elif status >= 500:
                    last = RestError("http_5xx", f"{self.exchange} {endpoint}: HTTP {status}")
                    if retry_after is not None:
                        self._close_gate(retry_after)
                else:
                    # 4xx other than rate limits: the request itself is wrong; retrying won't help
                    self._failed(endpoint, "http_4xx", sent_at, path, params, status, sign is not None)
                    # a signed request's error text may echo what was signed: not in the message
                    detail = "" if sign is not None else f": {_snippet(resp)}"
                    msg = f"{self.exchange} {endpoint}: HTTP {status}{detail}"
                    raise RestError("http_4xx", msg, status, resp.content)
            assert last is not None
            self._failed(endpoint, last.reason, sent_at, path, params, status, sign is not None)
            if last.reason != "rate_limited":
                # the gate (if any) already covers rate limits; other errors back off per call
                ceiling = min(p.retry_max_s, p.retry_initial_s * 2**attempt)
                retry_in = self.rand() * ceiling
            if attempt + 1 < p.attempts and retry_in:
                await self.sleep(retry_in)
        assert last is not None
        log.warning("%s", last)
        raise last


def _bybit_too_many_visits(body: bytes) -> bool:
    """Whether a Bybit body is the rate-limit answer ``{"retCode":10006,...}`` (sent with HTTP 200)."""
    head = body[:64]
    if b"10006" not in head:
        return False
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(msg, dict) and msg.get("retCode") == 10006


def _bybit_reset_in(value: str | None, now: float) -> float | None:
    """Seconds until ``X-Bapi-Limit-Reset-Timestamp`` (epoch ms); None if absent or bad."""
    if not value:
        return None
    try:
        at = float(value) / 1000.0
    except ValueError:
        return None
    if at != at:
        return None
    return max(0.0, at - now)


def _snippet(resp: httpx.Response) -> str:
    text = resp.text[:200]
    return text.replace("\n", " ")
