"""The answer every model (LLM or baseline) must give, and recovery of that JSON from model text.

Nothing a model says reaches a metric, the store or Slack unless :func:`parse_answer` accepted it.

Accepted as users' published prompts produce it: enumerations in any case and in the prompts' own
spellings (``REDUCE_POSITION``, ``CLOSE_ALL``, ``INCREASE_SHORT``), the field-name aliases in
:data:`ALIASES`, and ``estimated_liquidation_volume_usd`` / ``key_factors`` / ``trend`` /
``prediction`` optional. Limits (docs/sidecar.md): over-long text is truncated and reported in
``ParseNotes``, never a reason to drop a valid probability; two JSON objects in one reply are
refused (``multiple_objects``): which of them the model meant is unknowable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


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


class Trend(StrEnum):
    RISING = "rising"
    FALLING = "falling"
    FLAT = "flat"


# Spellings of users' published prompts -> our values (compared case-insensitively).
ACTION_SYNONYMS: dict[str, str] = {
    "reduce_position": "reduce",
    "close_all": "close",
    "increase_short": "hedge",
}
TREND_SYNONYMS: dict[str, str] = {"up": "rising", "down": "falling", "stable": "flat", "sideways": "flat"}
# alias -> canonical field name
ALIASES: dict[str, str] = {
    "recommended_action": "action",
    "time_to_liquidation_hours": "time_horizon_hours",
    "confidence_score": "confidence",
}

MAX_REASONING_CHARS = 4000
MAX_PREDICTION_CHARS = 1000
MAX_KEY_FACTORS = 20
MAX_KEY_FACTOR_CHARS = 300
MAX_HORIZON_HOURS = 24.0 * 30
MAX_VOLUME_USD = 1e13
MAX_REPLY_CHARS = 200_000  # a longer reply is not searched for JSON (invalid_json)


def _enum_value(enum: type[StrEnum], synonyms: dict[str, str]) -> Any:
    def normalise(value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, enum):
            v = value.strip().lower()
            try:
                return enum(synonyms.get(v, v))
            except ValueError:
                return value  # let the strict enum refuse it with its own message
        return value

    return normalise


class RiskAnswer(BaseModel):
    """One model's view of one base asset. Strict: unknown keys, strings-for-numbers, NaN are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    liquidation_probability: float = Field(ge=0.0, le=1.0)
    risk_level: Annotated[RiskLevel, BeforeValidator(_enum_value(RiskLevel, {}))]
    # when the risk would materialise (null: none expected); scoring uses the configured horizon
    time_horizon_hours: float | None = Field(gt=0.0, le=MAX_HORIZON_HOURS)
    confidence: float = Field(ge=0.0, le=1.0)
    action: Annotated[Action, BeforeValidator(_enum_value(Action, ACTION_SYNONYMS))]
    reasoning: str = Field(max_length=MAX_REASONING_CHARS)
    estimated_liquidation_volume_usd: float | None = Field(default=None, ge=0.0, le=MAX_VOLUME_USD)
    key_factors: list[Annotated[str, Field(max_length=MAX_KEY_FACTOR_CHARS)]] = Field(
        default_factory=list, max_length=MAX_KEY_FACTORS
    )
    trend: Annotated[Trend, BeforeValidator(_enum_value(Trend, TREND_SYNONYMS))] | None = None
    prediction: str | None = Field(default=None, max_length=MAX_PREDICTION_CHARS)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class AnswerError(Exception):
    """The model's text is not a valid answer. ``reason``: invalid_json | multiple_objects | schema."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class ParseNotes:
    """What was changed to accept an answer (each is counted by the caller)."""

    truncated: list[str] = field(default_factory=list)  # field names


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _reject_constant(name: str) -> Any:
    # json accepts NaN/Infinity by default; they are not JSON and never a valid probability.
    raise ValueError(f"non-JSON constant {name}")


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return False, None


def _objects_in(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in free text (an object inside another one is not counted)."""
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    found: list[dict[str, Any]] = []
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            return found
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        if isinstance(value, dict):
            found.append(value)
        pos = end


def extract_json(text: str) -> dict[str, Any]:
    """The one JSON object in a model's reply: the whole text, inside ```json fences, or in prose.

    Raises ``invalid_json`` when there is none and ``multiple_objects`` when there is more than one.
    """
    if len(text) > MAX_REPLY_CHARS:
        raise AnswerError("invalid_json", f"reply longer than {MAX_REPLY_CHARS} characters")
    stripped = text.strip()
    ok, whole = _loads(stripped)
    if ok:
        if isinstance(whole, dict):
            return whole
        raise AnswerError("invalid_json", "the reply is JSON but not an object")
    blocks = [b.strip() for b in _FENCE.findall(stripped)]
    candidates: list[dict[str, Any]] = []
    for block in blocks:
        ok, value = _loads(block)
        if ok and isinstance(value, dict):
            candidates.append(value)
        else:
            candidates.extend(_objects_in(block))
    # outside the fences too: an object in the prose beside a fenced one is a second answer
    candidates.extend(_objects_in(_FENCE.sub(" ", stripped)))
    distinct: list[dict[str, Any]] = []
    for c in candidates:
        if c not in distinct:
            distinct.append(c)
    if not distinct:
        raise AnswerError("invalid_json", "no JSON object in the reply")
    if len(distinct) > 1:
        raise AnswerError("multiple_objects", f"{len(distinct)} JSON objects in the reply")
    return distinct[0]


def _apply_aliases(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for alias, canonical in ALIASES.items():
        if alias in out:
            if canonical in out:
                raise AnswerError("schema", f"invalid fields: both {canonical} and its alias {alias}")
            out[canonical] = out.pop(alias)
    return out


def _truncate(data: dict[str, Any], notes: ParseNotes) -> dict[str, Any]:
    """Cut over-long free text to the documented limits (a valid probability is kept)."""
    out = dict(data)
    for name, limit in (("reasoning", MAX_REASONING_CHARS), ("prediction", MAX_PREDICTION_CHARS)):
        value = out.get(name)
        if isinstance(value, str) and len(value) > limit:
            out[name] = value[: limit - 1] + "…"
            notes.truncated.append(name)
    factors = out.get("key_factors")
    if isinstance(factors, list):
        cut = [
            f[: MAX_KEY_FACTOR_CHARS - 1] + "…" if isinstance(f, str) and len(f) > MAX_KEY_FACTOR_CHARS else f
            for f in factors[:MAX_KEY_FACTORS]
        ]
        if cut != factors:
            out["key_factors"] = cut
            notes.truncated.append("key_factors")
    return out


def parse_answer(text: str, notes: ParseNotes | None = None) -> RiskAnswer:
    """Validate a model's text. Raises :class:`AnswerError` (invalid_json | multiple_objects | schema).

    ``notes`` (if given) receives the names of fields that were truncated to their limits.
    """
    data = _apply_aliases(extract_json(text))
    data = _truncate(data, notes if notes is not None else ParseNotes())
    try:
        # JSON mode: strict types as JSON has them (enum values as strings, ints allowed for floats).
        return RiskAnswer.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        fields = ",".join(sorted({".".join(str(p) for p in e["loc"][:1]) or "(root)" for e in exc.errors()}))
        raise AnswerError("schema", f"invalid fields: {fields}") from None


def answer_json_schema() -> dict[str, Any]:
    """The JSON schema shown to LLMs in the prompt."""
    return RiskAnswer.model_json_schema()
