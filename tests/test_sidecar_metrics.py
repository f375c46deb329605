"""The sidecar's own /metrics: the contract's AI series, HELP everywhere, no _created, both formats,
and no secret anywhere (exposition, logs, database)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from support import free_port, wait_until
from support.fakes import VALID_ANSWER, FakeExporter, FakeOpenAI, FakeSlack, instrument, state

from exporter.config import Config, ModelConfig, SidecarConfig, SlackConfig
from exporter.sidecar.main import Sidecar
from exporter.sidecar.schema import RiskAnswer

LLM_KEY = "sk-file-SECRET-0a1b2c3d"
SLACK_TOKEN = "xoxb-SECRET-slack-99"

CONTRACT = {
    "fr_ai_risk_probability": {"base", "calibration", "horizon", "model"},
    "fr_ai_confidence": {"base", "horizon", "model"},
    "fr_ai_risk_level": {"base", "horizon", "model", "level"},
    "fr_ai_answer_truncations": {"field", "model"},
    "fr_ai_requests": {"model"},
    "fr_ai_request_failures": {"model", "reason"},
    "fr_ai_request_duration_seconds": {"model"},
    "fr_ai_tokens": {"model", "kind"},
    "fr_ai_cost_usd": {"model"},
    "fr_ai_last_success_timestamp_seconds": {"base", "model"},
    "fr_ai_brier_score": {"calibration", "horizon", "model", "window"},
    "fr_ai_brier_skill_score": set(),  # absent: one scored prediction has no climatology to beat
    "fr_ai_log_loss": {"calibration", "horizon", "model", "window"},
    "fr_ai_base_rate_ratio": {"calibration", "horizon", "model", "window"},
    "fr_ai_precision_ratio": {"calibration", "horizon", "model", "window"},
    "fr_ai_recall_ratio": {"calibration", "horizon", "model", "window"},
    "fr_ai_f1_ratio": {"calibration", "horizon", "model", "window"},
    "fr_ai_skill_predictions": {"calibration", "horizon", "model", "window"},
    "fr_ai_scored_predictions": {"horizon", "model"},
    "fr_ai_reliability_predictions": {"bin", "calibration", "horizon", "model"},
    "fr_ai_reliability_observed_ratio": {"bin", "calibration", "horizon", "model"},
    "fr_ai_reliability_mean_probability_ratio": {"bin", "calibration", "horizon", "model"},
    "fr_ai_calibration_fitted_predictions": {"base", "horizon", "model"},
}


async def test_metrics_endpoint_contract_and_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "llm.key"
    key_file.write_text(LLM_KEY + "\n")
    monkeypatch.setenv("FR_TEST_SLACK_TOKEN", SLACK_TOKEN)
    async with FakeOpenAI() as llm, FakeExporter() as exp, FakeSlack() as slack:
        exp.state = state([instrument("binance", "BTCUSDT"), instrument("okx", "ETH-USDT-SWAP", "ETH", mark=3000.0)])
        listen = f"127.0.0.1:{free_port()}"
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=listen,
                db_path=tmp_path / "m.sqlite",
                interval_seconds=3600,
                event_poll_seconds=0.05,
                skill_min_scored=1,
                models=[
                    ModelConfig(name="gpt-a", base_url=f"{llm.url}/v1", model="a", api_key_file=key_file, retries=0),
                ],
                slack=SlackConfig(
                    bot_token_env="FR_TEST_SLACK_TOKEN", channel="#r", api_base_url=f"{slack.base_url}/api/"
                ),
            )
        )
        llm.then("valid", "500")  # one base answers, the other fails (order of tasks does not matter)
        # a scored prediction so that the score series have values
        sc = Sidecar(cfg)
        past = time.time() - 3 * 3600
        sc.store.add_prediction(
            "gpt-a",
            "BTC",
            past,
            1.0,
            RiskAnswer.model_validate_json(json.dumps(VALID_ANSWER | {"liquidation_probability": 0.8})),
        )
        sc.store._db.execute("INSERT INTO flows VALUES ('BTC', ?, 2e7)", (past + 60,))
        sc.store._db.commit()
        stop = asyncio.Event()
        task = asyncio.create_task(sc.run(stop))
        try:
            async with httpx.AsyncClient() as client:
                await wait_until(
                    lambda: len(llm.requests) >= 2 and len(sc.metrics.latest) >= 3 and slack.messages,
                    10,
                    what="two model calls, three answers and a Slack message",
                )
                text = (await client.get(f"http://{listen}/metrics")).text
                om = await client.get(f"http://{listen}/metrics", headers={"Accept": "application/openmetrics-text"})
                health = await client.get(f"http://{listen}/healthz")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert llm.auth_headers[0] == f"Bearer {LLM_KEY}"  # the file's key was used (stripped)
        assert slack.auth_headers and slack.auth_headers[0] == f"Bearer {SLACK_TOKEN}"

    assert health.status_code == 200
    assert "_created" not in text and "_created" not in om.text
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    list(parse_openmetrics(om.text))  # type: ignore[no-untyped-call]  # must parse as OpenMetrics
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, labels in CONTRACT.items():
        fam = families.get(name)
        assert fam is not None, name
        assert fam.documentation, name
        assert bool(fam.samples) == bool(labels), name
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                assert set(s.labels) == labels | {"le"}, name
            else:
                assert set(s.labels) == labels, (name, s.labels)
    for fam in families.values():
        assert fam.name.startswith(("fr_ai_", "process_")) and fam.documentation
    prob = {s.labels["model"] + "/" + s.labels["base"]: s.value for s in families["fr_ai_risk_probability"].samples}
    assert set(prob) >= {"baseline/BTC", "baseline/ETH"} and len(prob) == 3  # one gpt-a call failed
    levels = [s for s in families["fr_ai_risk_level"].samples if s.labels["model"] == "baseline"]
    assert sum(s.value for s in levels) == 2  # exactly one current level per base
    assert families["fr_ai_scored_predictions"].samples[0].value >= 0
    scored = {(s.labels["model"], s.labels["horizon"]): s.value for s in families["fr_ai_scored_predictions"].samples}
    assert scored[("gpt-a", "1h")] == 1 and scored[("gpt-a", "8h")] == 0  # the seeded one had a 1 h horizon
    brier = {
        s.labels["model"]: s.value
        for s in families["fr_ai_brier_score"].samples
        if s.labels["window"] == "all" and s.labels["calibration"] == "raw"
    }
    assert brier["gpt-a"] == pytest.approx((0.8 - 1.0) ** 2)
    f1 = {s.labels["window"]: s.value for s in families["fr_ai_f1_ratio"].samples if s.labels["model"] == "gpt-a"}
    assert f1 == {"all": 1.0, "rolling": 1.0}  # 0.8 >= the alert threshold 0.7, and the event happened

    for secret in (LLM_KEY, SLACK_TOKEN):
        assert secret not in text and secret not in om.text
        assert secret not in caplog.text
        for f in tmp_path.glob("m.sqlite*"):
            assert secret.encode() not in f.read_bytes()
