"""The answer schema: strict validation and recovery of JSON from model text; config and secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.fakes import VALID_ANSWER

from exporter.config import Config, ConfigError, ModelConfig, SidecarConfig, load_config, read_secret
from exporter.sidecar.llm import parse_retry_after
from exporter.sidecar.schema import (
    MAX_KEY_FACTORS,
    MAX_REASONING_CHARS,
    AnswerError,
    ParseNotes,
    RiskLevel,
    extract_json,
    parse_answer,
)

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
        ({"risk_level": "HIGHEST"}, "schema"),
        ({"trend": "sideways up"}, "schema"),
        ({"action": "REDUCE POSITION"}, "schema"),
        ({"confidence_score": 0.5}, "schema"),  # alias and canonical name both present
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


OPTIONAL = {"estimated_liquidation_volume_usd", "key_factors"}


@pytest.mark.parametrize("field", sorted(set(VALID_ANSWER) - OPTIONAL))
def test_every_required_field_is_required(field: str) -> None:
    with pytest.raises(AnswerError) as err:
        parse_answer(json.dumps({k: v for k, v in VALID_ANSWER.items() if k != field}))
    assert err.value.reason == "schema" and field in err.value.detail


@pytest.mark.parametrize(
    ("spelling", "field", "expected"),
    [
        ({"risk_level": "LOW"}, "risk_level", "low"),
        ({"risk_level": "Medium"}, "risk_level", "medium"),
        ({"risk_level": "HIGH"}, "risk_level", "high"),
        ({"risk_level": " CRITICAL "}, "risk_level", "critical"),
        ({"action": "HOLD"}, "action", "hold"),
        ({"action": "REDUCE"}, "action", "reduce"),
        ({"action": "CLOSE"}, "action", "close"),
        ({"action": "REDUCE_POSITION"}, "action", "reduce"),
        ({"action": "CLOSE_ALL"}, "action", "close"),
        ({"action": "INCREASE_SHORT"}, "action", "hedge"),
        ({"action": "Hedge"}, "action", "hedge"),
        ({"trend": "RISING"}, "trend", "rising"),
        ({"trend": "falling"}, "trend", "falling"),
        ({"trend": "Flat"}, "trend", "flat"),
    ],
)
def test_users_spellings(spelling: dict[str, str], field: str, expected: str) -> None:
    a = parse_answer(json.dumps({**VALID_ANSWER, **spelling}))
    assert getattr(a, field).value == expected


def test_users_field_names_and_optional_fields() -> None:
    """The real-time monitor prompt: probability, level, time to liquidation, action, confidence, reasoning."""
    answer = {
        "liquidation_probability": 0.35,
        "risk_level": "MEDIUM",
        "time_to_liquidation_hours": 0.25,
        "recommended_action": "REDUCE_POSITION",
        "confidence_score": 0.8,
        "reasoning": "OI is building.",
        "trend": "rising",
        "prediction": "A squeeze of longs is likely within the hour.",
    }
    a = parse_answer(json.dumps(answer))
    assert (a.liquidation_probability, a.time_horizon_hours, a.confidence) == (0.35, 0.25, 0.8)
    assert a.action.value == "reduce" and a.risk_level.value == "medium"
    assert a.estimated_liquidation_volume_usd is None and a.key_factors == []
    assert a.trend is not None and a.trend.value == "rising"
    assert a.prediction == "A squeeze of longs is likely within the hour."
    stored = json.loads(a.to_json())
    assert stored["trend"] == "rising" and "estimated_liquidation_volume_usd" not in stored
    assert parse_answer(json.dumps({**answer, "time_to_liquidation_hours": None})).time_horizon_hours is None


@pytest.mark.parametrize(
    "text",
    [
        VALID + "\n" + VALID.replace("0.42", "0.9"),
        f"First guess {VALID} revised: {json.dumps({**VALID_ANSWER, 'liquidation_probability': 0.1})}",
        f"```json\n{VALID}\n```\nor maybe {json.dumps({'liquidation_probability': 0.1})}",
        f"```json\n{VALID}\n```\n```json\n{json.dumps({**VALID_ANSWER, 'risk_level': 'low'})}\n```",
    ],
)
def test_two_objects_are_rejected(text: str) -> None:
    with pytest.raises(AnswerError) as err:
        parse_answer(text)
    assert err.value.reason == "multiple_objects"


def test_same_object_twice_is_one_answer() -> None:
    # a model that echoes its answer in a fence and in prose still said one thing
    assert parse_answer(f"```json\n{VALID}\n```\nSo: {VALID}").liquidation_probability == 0.42


def test_over_long_texts_are_truncated_not_dropped() -> None:
    long_reasoning = "funding stretched; " * 1000  # 19 000 characters
    notes = ParseNotes()
    a = parse_answer(
        json.dumps({**VALID_ANSWER, "reasoning": long_reasoning, "key_factors": [f"f{i}" for i in range(30)]}),
        notes,
    )
    assert a.liquidation_probability == 0.42
    assert len(a.reasoning) == MAX_REASONING_CHARS and a.reasoning.endswith("…")
    assert a.reasoning[:-1] == long_reasoning[: MAX_REASONING_CHARS - 1]
    assert a.key_factors == [f"f{i}" for i in range(MAX_KEY_FACTORS)]
    assert sorted(notes.truncated) == ["key_factors", "reasoning"]
    untouched = ParseNotes()
    parse_answer(VALID, untouched)
    assert untouched.truncated == []


@pytest.mark.parametrize("text", ["", "no json here", '{"a": 1', "[1, 2, 3]", '{"p": NaN}'])
def test_invalid_json(text: str) -> None:
    with pytest.raises(AnswerError) as err:
        parse_answer(text)
    assert err.value.reason == "invalid_json"


def test_extract_prefers_whole_then_fence() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('text ```json\n{"a": 2}\n``` and no other object') == {"a": 2}
    with pytest.raises(AnswerError, match="multiple_objects"):
        extract_json('text ```json\n{"a": 2}\n``` and {"a": 3}')


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
