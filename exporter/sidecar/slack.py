"""Slack narrative for high/critical risk, sent in the background.

The model's text is untrusted: it is escaped (&, <, >), mentions (@channel, @here, @everyone,
<@U..>, <!..>) and links are neutralised, control characters removed and the length capped, before
it goes into a message; the message also disables link unfurling and mention parsing.
Messages go through a queue drained by one task, so a Slack 429/5xx (retried with backoff,
honouring Retry-After) never delays a prediction. The webhook URL and bot token are secrets: they
are only handed to slack_sdk, whose own logging is silenced because it logs request URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from exporter.config import SlackConfig, read_secret
from exporter.sidecar.llm import parse_retry_after
from exporter.sidecar.schema import RiskAnswer, RiskLevel

log = logging.getLogger(__name__)

ALERT_LEVELS = frozenset({RiskLevel.HIGH, RiskLevel.CRITICAL})
MAX_ATTEMPTS = 5
MAX_QUEUE = 100

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
_URL_SCHEME = re.compile(r"\b([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_MAILTO = re.compile(r"\bmailto:", re.IGNORECASE)
_WWW = re.compile(r"\bwww\.", re.IGNORECASE)


def _quiet_logger() -> logging.Logger:
    # slack_sdk logs request URLs at DEBUG (the webhook URL is the secret): give it a logger that never emits.
    quiet = logging.Logger("exporter.sidecar.slack.sdk", level=logging.CRITICAL + 1)
    quiet.disabled = True
    quiet.propagate = False
    return quiet


def sanitize(text: str, max_chars: int) -> str:
    """Untrusted text made inert for Slack mrkdwn: no markup, mentions, links or control characters."""
    text = _CONTROL.sub("", text)
    # Escape first: <!channel>, <@U123>, <http://x|y> become literal text.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # Plain-text broadcasts are only parsed with link_names, which we disable; break them anyway.
    text = _BROADCAST.sub(lambda m: "@\u2060" + m.group(1), text)
    # Defang URLs so Slack does not auto-link them.
    text = _URL_SCHEME.sub(lambda m: m.group(1) + "[:]//", text)
    text = _MAILTO.sub("mailto[:]", text)
    text = _WWW.sub("www[.]", text)
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def format_message(model: str, base: str, horizon_hours: float, answer: RiskAnswer, max_chars: int) -> str:
    """The message text. Only our own, validated fields are unescaped (model and base come from config/state)."""
    volume = answer.estimated_liquidation_volume_usd
    header = (
        f":rotating_light: *{sanitize(base, 40)}* liquidation risk *{answer.risk_level.value.upper()}* "
        f"(p={answer.liquidation_probability:.2f}, confidence {answer.confidence:.2f}, horizon {horizon_hours:g} h"
        + ("" if volume is None else f", est. ${volume:,.0f}")
        + f") - model `{sanitize(model, 80)}`, action: {answer.action.value}"
    )
    budget = max(100, max_chars - len(header) - 40)
    reasoning = sanitize(answer.reasoning, budget // 2)
    factors = "\n".join(f"• {sanitize(f, 200)}" for f in answer.key_factors[:8])
    body = f"{header}\n>{reasoning}\nKey factors:\n{factors}" if factors else f"{header}\n>{reasoning}"
    if len(body) > max_chars:
        body = body[: max_chars - 1] + "…"
    return body


class SendError(Exception):
    def __init__(self, retryable: bool, retry_after: float | None, detail: str) -> None:
        super().__init__(detail)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Message:
    text: str
    base: str


Sender = Callable[[str], Awaitable[None]]


class SlackNotifier:
    """Posts risk narratives; cooldown per base asset; a background task does the network work."""

    def __init__(
        self,
        cfg: SlackConfig,
        on_result: Callable[[str], None] | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self._on_result = on_result or (lambda _result: None)
        self._sleep = sleep
        self._backoff = backoff_seconds
        self._queue: asyncio.Queue[_Message] = asyncio.Queue(maxsize=MAX_QUEUE)
        self._last_sent: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._send: Sender | None = self._make_sender()

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def _make_sender(self) -> Sender | None:
        webhook = read_secret(self.cfg.webhook_url_env, self.cfg.webhook_url_file)
        token = read_secret(self.cfg.bot_token_env, self.cfg.bot_token_file)
        if webhook:
            client = AsyncWebhookClient(webhook, timeout=10, logger=_quiet_logger())

            async def send_webhook(text: str) -> None:
                resp = await client.send(text=text, unfurl_links=False, unfurl_media=False)
                if resp.status_code == 429 or resp.status_code >= 500:
                    wait = parse_retry_after(resp.headers.get("Retry-After"))
                    raise SendError(True, wait, f"HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    raise SendError(False, None, f"HTTP {resp.status_code}")

            return send_webhook
        if token:
            if not self.cfg.channel:
                log.warning("slack: a bot token is configured without a channel; Slack messages are off")
                return None
            base_url = (self.cfg.api_base_url or AsyncWebClient.BASE_URL).rstrip("/") + "/"
            web_client = AsyncWebClient(token=token, base_url=base_url, timeout=10, logger=_quiet_logger())
            channel = self.cfg.channel

            async def send_chat(text: str) -> None:
                try:
                    await web_client.chat_postMessage(
                        channel=channel,
                        text=text,
                        unfurl_links=False,
                        unfurl_media=False,
                        link_names=False,
                        parse="none",
                    )
                except SlackApiError as exc:
                    status = exc.response.status_code
                    headers = exc.response.headers or {}
                    retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
                    retryable = status == 429 or status >= 500
                    error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
                    raise SendError(retryable, retry_after, f"HTTP {status} {error or ''}".strip()) from None

            return send_chat
        return None

    def start(self) -> None:
        if self._send is not None and self._task is None:
            self._task = asyncio.create_task(self._drain(), name="slack")

    async def stop(self, flush_seconds: float = 2.0) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), flush_seconds)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def notify(self, model: str, base: str, horizon_hours: float, answer: RiskAnswer, now: float | None = None) -> bool:
        """Queue a message if the level is high/critical and the base is out of cooldown. Never blocks."""
        if self._send is None or answer.risk_level not in ALERT_LEVELS:
            return False
        now = time.monotonic() if now is None else now
        last = self._last_sent.get(base)
        if last is not None and now - last < self.cfg.cooldown_seconds:
            return False
        text = format_message(model, base, horizon_hours, answer, self.cfg.max_text_chars)
        try:
            self._queue.put_nowait(_Message(text=text, base=base))
        except asyncio.QueueFull:
            self._on_result("dropped")
            return False
        self._last_sent[base] = now
        return True

    async def _drain(self) -> None:
        assert self._send is not None
        while True:
            msg = await self._queue.get()
            try:
                await self._deliver(msg)
            finally:
                self._queue.task_done()

    async def _deliver(self, msg: _Message) -> None:
        assert self._send is not None
        for attempt in range(MAX_ATTEMPTS):
            try:
                await self._send(msg.text)
            except SendError as exc:
                if not exc.retryable or attempt == MAX_ATTEMPTS - 1:
                    log.warning("slack: message for %s not delivered: %s", msg.base, exc)
                    self._on_result("failed")
                    return
                delay = exc.retry_after if exc.retry_after is not None else self._backoff * 2**attempt
                await self._sleep(min(delay, 300.0))
            except Exception as exc:  # network errors: aiohttp raises several types
                if attempt == MAX_ATTEMPTS - 1:
                    log.warning("slack: message for %s not delivered: %s", msg.base, type(exc).__name__)
                    self._on_result("failed")
                    return
                await self._sleep(self._backoff * 2**attempt)
            else:
                self._on_result("sent")
                return
