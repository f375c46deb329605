"""Slack narrative: exactly the expected messages reach a fake Slack, with cooldown, escaping and
background retries that never hold up the caller."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from support import free_port
from support import wait_until as _until
from support.fakes import VALID_ANSWER, FakeExporter, FakeOpenAI, FakeSlack, instrument, state

from exporter.config import Config, ModelConfig, SidecarConfig, SlackConfig
from exporter.sidecar.main import Sidecar
from exporter.sidecar.schema import RiskAnswer
from exporter.sidecar.slack import SlackNotifier, format_message, sanitize

WEBHOOK_ENV = "FR_TEST_SLACK_WEBHOOK"
TOKEN_ENV = "FR_TEST_SLACK_TOKEN"
TOKEN = "xoxb-test-SECRET-token-42"


def _answer(level: str = "high", **kw: Any) -> RiskAnswer:
    return RiskAnswer.model_validate_json(json.dumps({**VALID_ANSWER, "risk_level": level, **kw}))


def test_sanitize_neutralises_markup_mentions_and_links() -> None:
    raw = (
        "<!channel> <!here|here> <@U123ABC> <#C999> @channel @Here @everyone "
        "<https://evil.example/x|click> http://evil.example www.evil.example mailto:x@y.z a & b\x07\u202e"
    )
    out = sanitize(raw, 1000)
    assert "<" not in out and ">" not in out
    assert "&lt;!channel&gt;" in out and "&lt;@U123ABC&gt;" in out
    assert "a &amp; b" in out
    for mention in ("@channel", "@Here", "@everyone"):
        assert mention not in out
    assert "://" not in out and "www.evil" not in out and "mailto:" not in out
    assert "\x07" not in out and "\u202e" not in out
    capped = sanitize("x" * 500, 100)
    assert len(capped) == 100 and capped.endswith("…")


def test_message_escapes_model_text_and_caps_length() -> None:
    a = _answer("critical", reasoning="<!channel> dump it " + "y" * 3000, key_factors=["<@U1> says sell"])
    text = format_message("gpt", "BTC", 8, a, 500)
    assert len(text) <= 500
    assert "<!channel>" not in text and "<@U1>" not in text
    assert "*CRITICAL*" in text and "*BTC*" in text


async def test_webhook_messages_cooldown_and_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeSlack() as slack:
        monkeypatch.setenv(WEBHOOK_ENV, f"{slack.base_url}/services/T000/B000/SECRETHOOK")
        n = SlackNotifier(SlackConfig(webhook_url_env=WEBHOOK_ENV, cooldown_seconds=0.5))
        n.start()
        try:
            t = 1000.0  # the notifier's monotonic time, given explicitly: no waiting for the cooldown
            assert n.notify("gpt", "BTC", 8, _answer("high"), now=t)
            assert not n.notify("gpt", "BTC", 8, _answer("critical"), now=t + 0.4)  # same base, inside cooldown
            assert not n.notify("other", "BTC", 8, _answer("critical"), now=t + 0.4)  # cooldown is per base asset
            assert n.notify("gpt", "ETH", 8, _answer("critical"), now=t + 0.4)
            assert not n.notify("gpt", "SOL", 8, _answer("medium"), now=t + 0.4)  # below high: no message
            assert not n.notify("gpt", "SOL", 8, _answer("low"), now=t + 0.4)
            await _until(lambda: len(slack.messages) == 2)
            assert n.notify("gpt", "BTC", 8, _answer("critical"), now=t + 0.6)  # cooldown over
            await _until(lambda: len(slack.messages) == 3)
            await asyncio.sleep(0.1)
            texts = [m["text"] for m in slack.messages]
            assert len(texts) == 3
            assert "*BTC*" in texts[0] and "*HIGH*" in texts[0]
            assert "*ETH*" in texts[1] and "*CRITICAL*" in texts[1]
            assert "*BTC*" in texts[2] and "*CRITICAL*" in texts[2]
            assert all(m.get("unfurl_links") is False for m in slack.messages)
            assert "funding z-score 3.2" in texts[0]  # key factors are in the narrative
        finally:
            await n.stop()


async def test_429_and_5xx_are_retried_in_background(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeSlack() as slack:
        monkeypatch.setenv(WEBHOOK_ENV, f"{slack.base_url}/services/T000/B000/SECRETHOOK")
        slack.script.extend([429, 500])
        slack.retry_after = "0.3"
        results: list[str] = []
        n = SlackNotifier(SlackConfig(webhook_url_env=WEBHOOK_ENV), results.append, backoff_seconds=0.05)
        n.start()
        try:
            t0 = time.monotonic()
            assert n.notify("gpt", "BTC", 8, _answer("critical"))
            assert slack.attempts == 0  # the caller never waits for Slack: queued, not yet sent
            await _until(lambda: len(slack.messages) == 1)
            assert time.monotonic() - t0 >= 0.3  # honoured Retry-After
            assert slack.attempts == 3
            # the fake records the message before the notifier has read the answer: wait for the outcome
            await _until(lambda: results == ["sent"])
            assert slack.attempts == 3  # and nothing was sent again meanwhile
        finally:
            await n.stop()


async def test_bot_token_chat_post_message(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeSlack() as slack:
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        cfg = SlackConfig(bot_token_env=TOKEN_ENV, channel="#risk", api_base_url=f"{slack.base_url}/api/")
        slack.script.append(429)
        slack.retry_after = "0.1"
        n = SlackNotifier(cfg)
        n.start()
        try:
            assert n.notify("gpt", "BTC", 8, _answer("critical", reasoning="<!here> & <@U42>"))
            await _until(lambda: len(slack.messages) == 1)
            msg = slack.messages[0]
            assert msg["channel"] == "#risk"
            assert "&lt;!here&gt; &amp; &lt;@U42&gt;" in msg["text"]
            assert slack.auth_headers[-1] == f"Bearer {TOKEN}"
        finally:
            await n.stop()
    assert TOKEN not in caplog.text


async def test_injected_model_text_reaches_slack_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeSlack() as slack, FakeOpenAI(default_mode="inject") as llm, FakeExporter() as exp:
        hook = f"{slack.base_url}/services/T000/B000/SECRETHOOK"
        monkeypatch.setenv(WEBHOOK_ENV, hook)
        exp.state = state([instrument("binance", "BTCUSDT"), instrument("bybit", "BTCUSDT")])
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=tmp_path / "p.sqlite",
                baseline=False,
                models=[ModelConfig(name="gpt", base_url=f"{llm.url}/v1", model="m", retries=0)],
                slack=SlackConfig(webhook_url_env=WEBHOOK_ENV, cooldown_seconds=60),
            )
        )
        sc = Sidecar(cfg)
        sc.slack.start()
        try:
            await sc.read_state()
            for _ in range(3):  # three critical answers within the cooldown: one message
                sc.trigger(["BTC"], "test")
                await sc.wait_idle()
            await _until(lambda: len(slack.messages) >= 1)
            await asyncio.sleep(0.2)
            assert len(slack.messages) == 1
            text = slack.messages[0]["text"]
            for bad in ("<!channel>", "<!here>", "<!everyone>", "<@U123ABC>", "@channel", "@here", "://", "<http"):
                assert bad not in text, bad
            assert "&lt;!channel&gt;" in text and "&amp; sell &gt; everything" in text
        finally:
            await sc.close()
    assert "SECRETHOOK" not in caplog.text
