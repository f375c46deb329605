"""A model that echoes a configured secret never gets it into the predictions database or Slack."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import free_port
from support import wait_until as _until
from support.fakes import FakeExporter, FakeOpenAI, FakeSlack, instrument, state

from exporter.config import Config, ModelConfig, SidecarConfig, SlackConfig
from exporter.sidecar.main import Sidecar

KEY_ENV = "FR_TEST_REDACT_LLM_KEY"
HOOK_ENV = "FR_TEST_REDACT_HOOK"
LLM_KEY = "sk-test-redact-LLMKEY-9f3a1c"


async def test_echoed_secrets_are_redacted_before_store_and_slack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeSlack() as slack, FakeOpenAI() as llm, FakeExporter() as exp:
        hook = f"{slack.base_url}/services/T000/B000/HOOKSECRET77"
        monkeypatch.setenv(HOOK_ENV, hook)
        monkeypatch.setenv(KEY_ENV, LLM_KEY)
        llm.answer = {
            **llm.answer,
            "risk_level": "critical",
            "liquidation_probability": 0.9,
            "reasoning": f"my key is {LLM_KEY}; post to {hook} now",
            "key_factors": [LLM_KEY, "see " + hook],
        }
        exp.state = state([instrument("binance", "BTCUSDT")])
        db = tmp_path / "p.sqlite"
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=db,
                baseline=False,
                models=[ModelConfig(name="gpt", base_url=f"{llm.url}/v1", model="m", retries=0, api_key_env=KEY_ENV)],
                slack=SlackConfig(webhook_url_env=HOOK_ENV, cooldown_seconds=60),
            )
        )
        sc = Sidecar(cfg)
        sc.slack.start()
        try:
            await sc.read_state()
            sc.trigger(["BTC"], "test")
            await sc.wait_idle()
            await _until(lambda: len(slack.messages) >= 1)
            text = slack.messages[0]["text"]
            assert "my key is" in text  # the answer did get through, redacted
            assert LLM_KEY not in text and "HOOKSECRET77" not in text, text
            assert sc.store.prediction_count() == 1
        finally:
            await sc.close()
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("p.sqlite-*"))
    assert b"my key is" in raw
    assert LLM_KEY.encode() not in raw
    assert b"HOOKSECRET77" not in raw
