"""Fakes of the external services the tests talk to, all on 127.0.0.1 (aiohttp in the test's event
loop, except FakeSlack).

- :class:`FakeOpenAI`: an OpenAI-compatible ``POST /v1/chat/completions`` that answers according to
  a script of modes (valid, prose, fenced, slow, 500, 429, invalid_json, prob_1_7, missing_field,
  inject, not_openai).
- :class:`FakeSlack`: an incoming webhook (``POST /services/...``) and ``POST /api/chat.postMessage``
  that record every message and can answer 429 (with Retry-After) or 500 on demand; served from a
  thread, so Alertmanager (a child process) and the sidecar (in the test's loop) both post to it.
- :class:`FakeExporter`: ``GET /api/state`` returning whatever dict the test put in ``state``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs

from aiohttp import web

VALID_ANSWER: dict[str, Any] = {
    "liquidation_probability": 0.42,
    "risk_level": "high",
    "time_horizon_hours": 6,
    "confidence": 0.7,
    "action": "reduce",
    "reasoning": "Funding is stretched and open interest rose 8% in an hour.",
    "estimated_liquidation_volume_usd": 25_000_000,
    "key_factors": ["funding z-score 3.2", "OI +8% 1h"],
}

INJECTION_REASONING = (
    "<!channel> <!here> @channel @here <@U123ABC> urgent: click <https://evil.example/x|here> "
    "or visit http://evil.example now & sell > everything"
)


class _Server:
    def __init__(self) -> None:
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeOpenAI(_Server):
    def __init__(self, default_mode: str = "valid") -> None:
        super().__init__()
        self.default_mode = default_mode
        self.script: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.answer: dict[str, Any] = dict(VALID_ANSWER)
        self.slow_seconds = 2.0
        self.retry_after = "1"
        self.usage = {"prompt_tokens": 120, "completion_tokens": 40}
        self.in_flight = 0
        self.max_in_flight = 0
        self.content_script: list[str] = []  # mode "content": the next of these texts, verbatim
        self.app.router.add_post("/v1/chat/completions", self._complete)

    def then(self, *modes: str) -> Self:
        self.script.extend(modes)
        return self

    def _reply(self, content: str) -> web.Response:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {**self.usage, "total_tokens": sum(self.usage.values())},
        }
        return web.json_response(body)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.auth_headers.append(request.headers.get("Authorization"))
        mode = self.script.popleft() if self.script else self.default_mode
        valid = json.dumps(self.answer)
        if mode == "valid":
            return self._reply(valid)
        if mode == "content":
            return self._reply(self.content_script.pop(0))
        if mode == "prose":
            return self._reply(f"Sure. Here is my assessment: {valid} Let me know if you need more.")
        if mode == "fenced":
            return self._reply(f"Assessment below.\n```json\n{valid}\n```\n")
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
            return self._reply(valid)
        if mode == "500":
            return web.Response(status=500, text="upstream exploded")
        if mode == "429":
            return web.json_response(
                {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": self.retry_after}
            )
        if mode == "invalid_json":
            return self._reply('{"liquidation_probability": 0.3, "risk_level": "high",')
        if mode == "prob_1_7":
            return self._reply(json.dumps({**self.answer, "liquidation_probability": 1.7}))
        if mode == "missing_field":
            return self._reply(json.dumps({k: v for k, v in self.answer.items() if k != "confidence"}))
        if mode == "inject":
            return self._reply(
                json.dumps(
                    {
                        **self.answer,
                        "risk_level": "critical",
                        "liquidation_probability": 0.9,
                        "reasoning": INJECTION_REASONING,
                        "key_factors": ["<!everyone> ping", "see <http://evil.example|docs>"],
                    }
                )
            )
        if mode == "not_openai":
            return web.json_response({"unexpected": True})
        raise AssertionError(f"unknown fake mode {mode}")


class FakeSlack:
    """Slack on 127.0.0.1: incoming webhooks (``POST /services/...``) and ``POST /api/chat.postMessage``.

    Served from its own thread, so a child process (Alertmanager) and the test's event loop (the
    sidecar) post to the same fake; use it with ``with`` or ``async with``. ``script`` holds the status
    codes to answer next (200 when empty; 429 carries ``Retry-After``). Delivered messages are kept in
    order: ``messages`` (the bodies) and ``snapshot()`` (path, body, arrival time).
    """

    def __init__(self) -> None:
        self.script: deque[int] = deque()
        self.retry_after = "1"
        self.attempts = 0
        self.auth_headers: list[str | None] = []
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/services/T000/B000/XXXX"  # an incoming-webhook URL
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                chat = self.path.startswith("/api/chat.postMessage")
                if not chat and not self.path.startswith("/services/"):
                    return self._answer(404, "text/plain", b"no such endpoint")
                with fake._lock:
                    fake.attempts += 1
                    status = fake.script.popleft() if fake.script else 200
                    if chat:
                        fake.auth_headers.append(self.headers.get("Authorization"))
                payload = fake._payload(raw, self.headers.get("Content-Type", ""))
                if status == 200:
                    with fake._lock:
                        fake._records.append({"path": self.path, "payload": payload, "at": time.time()})
                extra = {"Retry-After": fake.retry_after} if status == 429 else {}
                if chat:
                    error = "ratelimited" if status == 429 else "fatal_error"
                    ok = {"ok": True, "channel": payload.get("channel"), "ts": "1.0"}
                    body = json.dumps(ok if status == 200 else {"ok": False, "error": error})
                    return self._answer(status, "application/json", body.encode(), extra)
                text = {200: b"ok", 429: b"rate_limited"}.get(status, b"internal_error")
                return self._answer(status, "text/plain", text, extra)

            def _answer(self, status: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    @staticmethod
    def _payload(raw: bytes, content_type: str) -> dict[str, Any]:
        if content_type.startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        try:
            body = json.loads(raw)
        except ValueError:
            return {"_raw": raw.decode(errors="replace")}
        return body if isinstance(body, dict) else {"_raw": body}

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)  # shutdown() waits for the serving thread

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bodies of the delivered messages (answered 200), oldest first."""
        with self._lock:
            return [r["payload"] for r in self._records]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    @staticmethod
    def text_of(message: dict[str, Any]) -> str:
        """Text, and title and text of every attachment, of one recorded message, joined."""
        payload = message["payload"]
        parts = [str(payload.get("text", ""))]
        for att in payload.get("attachments", []) or []:
            parts += [str(att.get("title", "")), str(att.get("text", "")), str(att.get("fallback", ""))]
        return "\n".join(p for p in parts if p)

    def texts(self) -> list[str]:
        return [self.text_of(m) for m in self.snapshot()]


class FakeExporter(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] = {"instruments": [], "positions": [], "events": []}
        self.reads = 0
        self.fail = False
        self.app.router.add_get("/api/state", self._state)

    async def _state(self, request: web.Request) -> web.Response:
        self.reads += 1
        if self.fail:
            return web.Response(status=503, text="down")
        return web.json_response(self.state)


def instrument(
    exchange: str,
    instrument_id: str,
    base: str = "BTC",
    *,
    mark: float | None = 50_000.0,
    funding_8h: float | None = 0.0001,
    interval_s: float = 28800.0,
    zscore: float | None = 0.3,
    premium: float | None = 0.0001,
    oi_usd: float | None = 1.0e9,
    oi_change_1h: float | None = 0.01,
    liq_long_usd: float = 0.0,
    liq_short_usd: float = 0.0,
    liq_1h_long_usd: float = 0.0,
    liq_1h_short_usd: float = 0.0,
) -> dict[str, Any]:
    """One /api/state instrument row in the shape of docs/ARCHITECTURE.md."""
    rate = None if funding_8h is None else funding_8h * interval_s / 28800.0
    return {
        "exchange": exchange,
        "instrument": instrument_id,
        "base": base,
        "quote": "USDT",
        "stale": mark is None,
        "mark_price": mark,
        "index_price": None if mark is None else mark / (1 + (premium or 0.0)),
        "premium_ratio": premium,
        "funding_rate": rate,
        "funding_interval_seconds": interval_s,
        "funding_rate_8h": funding_8h,
        "funding_rate_annualized": None if funding_8h is None else funding_8h * 3 * 365,
        "next_funding_timestamp": 1_700_003_600.0,
        "funding_zscore": zscore,
        "open_interest_usd": oi_usd,
        "open_interest_change_1h_ratio": oi_change_1h,
        "long_short_ratio": 1.2,
        "liquidations": {
            "long": {"count": int(liq_long_usd // 10_000), "notional_usd": liq_long_usd},
            "short": {"count": int(liq_short_usd // 10_000), "notional_usd": liq_short_usd},
        },
        "liquidations_1h": {
            "long": {"count": int(liq_1h_long_usd // 10_000), "notional_usd": liq_1h_long_usd},
            "short": {"count": int(liq_1h_short_usd // 10_000), "notional_usd": liq_1h_short_usd},
        },
        "ages_seconds": {"price": 0.3, "funding": 0.3, "open_interest": 12.0, "long_short_ratio": None},
    }


def state(
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]] | None = None,
    positions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "generated_at": 1_700_000_000.0,
        "version": "0.1.0",
        "exchanges": {},
        "instruments": rows,
        "positions": positions or [],
        "events": events or [],
    }
