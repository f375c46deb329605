"""The answer schema: strict validation and recovery of JSON from model text; config and secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.fakes import VALID_ANSWER

from exporter.config import Config, ConfigError, ModelConfig, SidecarConfig, load_config, read_secret
from exporter.sidecar.llm import parse_retry_after
from exporter.sidecar.schema import AnswerError, RiskLevel, extract_json, parse_answer

VALID = json.dumps(VALID_ANSWER)


@pytest.mark.parametrize(
    "text",
    [
        VALID,
        f"  {VALID}\n",
        f"Here you go:\n```json\n{VALID}\n```\nThanks.",
        f"```\n{VALID}\n```",
        f"My analysis {{not json}} then {VALID} and a trailing {{",
        f"Reasoning first. {json.dumps({'note': 'x'})[:-1]}... then the answer: {VALID}",
    ],
)
def test_recovers_answer_from_text(text: str) -> None:
    a = parse_answer(text)
    assert a.liquidation_probability == 0.42 and a.risk_level is RiskLevel.HIGH


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"liquidation_probability": 1.7}, "schema"),
        ({"liquidation_probability": -0.1}, "schema"),
        ({"liquidation_probability": "0.4"}, "schema"),  # a string is not a number
        ({"confidence": True}, "schema"),
        ({"risk_level": "extreme"}, "schema"),
        ({"risk_level": "HIGH"}, "schema"),
        ({"action": "buy"}, "schema"),
        ({"time_horizon_hours": 0}, "schema"),
        ({"estimated_liquidation_volume_usd": -5}, "schema"),
        ({"key_factors": "one string"}, "schema"),
        ({"key_factors": [1, 2]}, "schema"),
        ({"extra_field": 1}, "schema"),
    ],
)
def test_rejects_out_of_schema(change: dict[str, object], reason: str) -> None:
    with pytest.raises(AnswerError) as err:
        parse_answer(json.dumps({**VALID_ANSWER, **change}))
    assert err.value.reason == reason


@pytest.mark.parametrize("field", sorted(VALID_ANSWER))
def test_every_field_is_required(field: str) -> None:
    with pytest.raises(AnswerError) as err:
        parse_answer(json.dumps({k: v for k, v in VALID_ANSWER.items() if k != field}))
    assert err.value.reason == "schema" and field in err.value.detail


@pytest.mark.parametrize("text", ["", "no json here", '{"a": 1', "[1, 2, 3]", '{"p": NaN}'])
def test_invalid_json(text: str) -> None:
    with pytest.raises(AnswerError) as err:
        parse_answer(text)
    assert err.value.reason == "invalid_json"


def test_extract_prefers_whole_then_fence() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('text ```json\n{"a": 2}\n``` and {"a": 3}') == {"a": 2}


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


def test_config_models_secrets_and_defaults(tmp_path: Path) -> None:
    cfg = Config()
    assert cfg.sidecar.interval_seconds == 300 and cfg.sidecar.listen_address.endswith(":9467")
    assert cfg.sidecar.slack.cooldown_seconds == 60
    with pytest.raises(ValidationError):
        SidecarConfig(models=[ModelConfig(name="a", base_url="u", model="m")] * 2)
    with pytest.raises(ValidationError):
        SidecarConfig(models=[ModelConfig(name="baseline", base_url="u", model="m")])
    with pytest.raises(ValidationError):
        SidecarConfig(listen_address="nope")
    key = tmp_path / "key"
    key.write_text("from-file\n")
    assert read_secret("K", key, {"K": "from-env"}) == "from-file"
    assert read_secret("K", None, {"K": " from-env "}) == "from-env"
    y = tmp_path / "c.yaml"
    y.write_text(
        "sidecar:\n  models:\n    - name: gpt\n      base_url: http://127.0.0.1:1/v1\n      model: m\n"
        "      api_key_env: MY_KEY\n      retries: 3\n      price_prompt_per_million_usd: 2.5\n"
    )
    loaded = load_config(y, environ={"FR_SIDECAR__HORIZON_HOURS": "4"})
    assert loaded.sidecar.models[0].retries == 3 and loaded.sidecar.horizon_hours == 4
    y.write_text("sidecar:\n  models:\n    - name: gpt\n      model: m\n")
    with pytest.raises(ConfigError, match="base_url"):
        load_config(y, environ={})
