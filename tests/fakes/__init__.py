"""Moved to tests/support/fakes.py (import ``support.fakes``); kept so older imports still work."""

from support.fakes import (
    INJECTION_REASONING,
    VALID_ANSWER,
    FakeExporter,
    FakeOpenAI,
    FakeSlack,
    instrument,
    state,
)

__all__ = ["INJECTION_REASONING", "VALID_ANSWER", "FakeExporter", "FakeOpenAI", "FakeSlack", "instrument", "state"]
