"""The answer every model (LLM or baseline) must give, and recovery of that JSON from model text.

Nothing a model says reaches a metric, the store or Slack unless :func:`parse_answer` accepted it.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


RISK_LEVELS: tuple[str, ...] = tuple(level.value for level in RiskLevel)


class Action(StrEnum):
    HOLD = "hold"
    REDUCE = "reduce"
    CLOSE = "close"
    HEDGE = "hedge"


class RiskAnswer(BaseModel):
    """One model's view of one base asset. Strict: unknown keys, strings-for-numbers, NaN are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    liquidation_probability: float = Field(ge=0.0, le=1.0)
    risk_level: RiskLevel
    time_horizon_hours: float = Field(gt=0.0, le=24.0 * 30)
    confidence: float = Field(ge=0.0, le=1.0)
    action: Action
    reasoning: str = Field(max_length=8000)
    estimated_liquidation_volume_usd: float = Field(ge=0.0, le=1e13)
    key_factors: list[str] = Field(max_length=20)

    def to_json(self) -> str:
        return self.model_dump_json()


class AnswerError(Exception):
    """The model's text is not a valid answer. ``reason`` is the failure label (invalid_json | schema)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _reject_constant(name: str) -> Any:
    # json accepts NaN/Infinity by default; they are not JSON and never a valid probability.
    raise ValueError(f"non-JSON constant {name}")


def _loads_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in a model's reply: the whole text, a fenced ```json block, or one object in prose."""
    stripped = text.strip()
    found = _loads_object(stripped)
    if found is not None:
        return found
    for block in _FENCE.findall(stripped):
        found = _loads_object(block.strip())
        if found is not None:
            return found
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    for match in re.finditer(r"\{", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise AnswerError("invalid_json", "no JSON object in the reply")


def parse_answer(text: str) -> RiskAnswer:
    """Validate a model's text. Raises :class:`AnswerError` with reason ``invalid_json`` or ``schema``."""
    data = extract_json(text)
    try:
        # JSON mode: strict types as JSON has them (enum values as strings, ints allowed for floats).
        return RiskAnswer.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        fields = ",".join(sorted({".".join(str(p) for p in e["loc"]) or "(root)" for e in exc.errors()}))
        raise AnswerError("schema", f"invalid fields: {fields}") from None


def answer_json_schema() -> dict[str, Any]:
    """The JSON schema shown to LLMs in the prompt."""
    return RiskAnswer.model_json_schema()
