"""A minimal OpenAI-compatible chat client (POST {base_url}/chat/completions) over httpx.

Every HTTP attempt is reported to ``on_attempt(duration_seconds, failure_reason | None)`` so the
metrics count attempts and failures by reason. 429 and 5xx are retried with exponential backoff,
honouring Retry-After. A Retry-After blocks the whole model (one client per model, every base asset
and horizon): every call of this client waits until then before its next attempt, and one longer
than ``max_backoff_seconds`` is not waited for at all: the call ends and the scheduler skips the
model until then, so nothing queues up behind it. Time comes from the injected Clock.
The API key is only ever put in the Authorization header; it is never logged or put in errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import ModelConfig

log = logging.getLogger(__name__)

AttemptHook = Callable[[float, str | None], None]


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ModelError(Exception):
    """A call that produced no answer text. ``reason`` is the failure label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _tokens(usage: Any, key: str) -> int:
    if not isinstance(usage, dict):
        return 0
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class ChatClient:
    def __init__(
        self,
        cfg: ModelConfig,
        api_key: str | None,
        on_attempt: AttemptHook,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_attempt = on_attempt
        self.clock = clock
        self._sleep = sleep or clock.sleep
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/"), headers=headers, timeout=httpx.Timeout(cfg.timeout_seconds)
        )
        self.blocked_until = 0.0

    async def aclose(self) -> None:
        await self._http.aclose()

    def body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            "response_format": {"type": "json_object"},
        }

    async def _attempt(self, body: dict[str, Any]) -> httpx.Response:
        # wait_for bounds the whole exchange; httpx's own timeout is per phase (a trickling body escapes it).
        return await asyncio.wait_for(self._http.post("/chat/completions", json=body), self.cfg.timeout_seconds)

    def blocked_for(self) -> float:
        """Seconds until the model may be called again (0: now)."""
        return max(0.0, self.blocked_until - self.clock.time())

    def _block(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock.time() + seconds)

    async def _wait_unblocked(self) -> None:
        """Wait out a model-wide Retry-After another call received; too long a wait ends the call."""
        while (wait := self.blocked_for()) > 0:
            if wait > self.cfg.max_backoff_seconds:
                raise ModelError("rate_limited", f"model blocked by Retry-After for {wait:.0f}s more")
            await self._sleep(wait)

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        body = self.body(messages)
        attempts = self.cfg.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            await self._wait_unblocked()
            started = time.monotonic()
            try:
                resp = await self._attempt(body)
            except (TimeoutError, httpx.TimeoutException):
                self._on_attempt(time.monotonic() - started, "timeout")
                raise ModelError("timeout", f"no answer within {self.cfg.timeout_seconds:g}s") from None
            except httpx.HTTPError as exc:
                self._on_attempt(time.monotonic() - started, "connection_error")
                if last:
                    raise ModelError("connection_error", type(exc).__name__) from None
                await self._sleep(self._backoff(attempt))
                continue
            elapsed = time.monotonic() - started
            status = resp.status_code
            if status == 429 or status >= 500:
                reason = "rate_limited" if status == 429 else "http_error"
                self._on_attempt(elapsed, reason)
                wait = parse_retry_after(resp.headers.get("Retry-After"), self.clock.time())
                if wait is not None:
                    self._block(wait)  # every call to this model waits, not only this one
                if wait is not None and wait > self.cfg.max_backoff_seconds:
                    raise ModelError(reason, f"HTTP {status}, Retry-After {wait:.0f}s")
                if last:
                    raise ModelError(reason, f"HTTP {status}")
                if wait is None:
                    await self._sleep(self._backoff(attempt))
                continue  # the Retry-After wait happens in _wait_unblocked
            if status >= 400:
                self._on_attempt(elapsed, "http_error")
                raise ModelError("http_error", f"HTTP {status}")
            try:
                payload = resp.json()
                message = payload["choices"][0]["message"]
                text = message.get("content")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                self._on_attempt(elapsed, "bad_response")
                raise ModelError("bad_response", "not an OpenAI chat completion") from None
            self._on_attempt(elapsed, None)
            usage = payload.get("usage")
            return Completion(
                text=text if isinstance(text, str) else "",
                prompt_tokens=_tokens(usage, "prompt_tokens"),
                completion_tokens=_tokens(usage, "completion_tokens"),
            )
        raise ModelError("http_error", "retries exhausted")  # unreachable: the loop returns or raises

    def _backoff(self, attempt: int) -> float:
        return float(min(self.cfg.max_backoff_seconds, self.cfg.backoff_seconds * 2.0**attempt))
