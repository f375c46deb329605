"""The exchanges' per-IP REST limits, enforced by the simulator (the table is exporter/limits.py).

Sliding windows (stricter than the fixed windows some exchanges count in): a request that would
take a bucket over its limit within the last ``window_s`` is refused, and not counted:
- Binance: 429 with ``Retry-After``; a client that sends ``ban_after_429s`` more requests while
  limited is banned: 418 with ``Retry-After`` for ``ban_s`` (exchanges.md 2.9: "repeated => 418").
- Bybit: HTTP 403 "access too frequent" (exchanges.md 3.9).
- OKX, Deribit: 429 with ``Retry-After``.
All clients count as one IP (everything is on loopback), as shards on one host do.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.limits import LIMITS, ExchangeLimits
from exporter.model import Exchange


@dataclass(slots=True)
class Refusal:
    status: int
    retry_after_s: float


@dataclass(slots=True)
class RateLimiter:
    limits: ExchangeLimits
    clock: Callable[[], float] = time.monotonic
    _log: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    _used: dict[str, float] = field(default_factory=dict)
    _strikes: int = 0
    _banned_until: float = 0.0
    accepted: int = 0
    refused: int = 0
    banned: int = 0

    @classmethod
    def for_exchange(cls, exchange: Exchange, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        return cls(LIMITS[exchange], clock)

    def _expire(self, name: str, now: float, window: float) -> None:
        log = self._log.setdefault(name, deque())
        while log and log[0][0] <= now - window:
            _, w = log.popleft()
            self._used[name] = self._used.get(name, 0.0) - w

    def check(self, path: str) -> Refusal | None:
        """Count the request, or say why it is refused."""
        now = self.clock()
        lim = self.limits
        if now < self._banned_until:
            self.banned += 1
            return Refusal(418, self._banned_until - now)
        weights = lim.cost(path)
        retry = 0.0
        for name, w in weights:
            b = lim.bucket(name)
            self._expire(name, now, b.window_s)
            if self._used.get(name, 0.0) + w > b.limit:
                log = self._log[name]
                # room again once enough of the oldest requests have left the window
                need, freed, at = self._used[name] + w - b.limit, 0.0, now
                for t, wt in log:
                    freed += wt
                    at = t
                    if freed >= need:
                        break
                retry = max(retry, at + b.window_s - now)
        if retry > 0.0:
            self.refused += 1
            if lim.exchange is Exchange.BYBIT:
                return Refusal(403, max(retry, 600.0))
            if lim.ban_after_429s is not None:
                self._strikes += 1
                if self._strikes > lim.ban_after_429s:
                    self._strikes = 0
                    self._banned_until = now + lim.ban_s
                    self.banned += 1
                    return Refusal(418, lim.ban_s)
            return Refusal(429, retry)
        self._strikes = 0
        for name, w in weights:
            self._log[name].append((now, w))
            self._used[name] = self._used.get(name, 0.0) + w
        self.accepted += 1
        return None

    def snapshot(self) -> dict[str, float]:
        return {"accepted": self.accepted, "refused": self.refused, "banned": self.banned}


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
