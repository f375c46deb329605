"""Fault injection state of one simulated exchange (set through POST /_sim/fault)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

FAULT_KINDS = ("drop", "stall", "malformed", "truncated", "rest_429", "rest_5xx")


@dataclass(slots=True)
class Faults:
    stall_until: float = 0.0  # monotonic time; until then nothing is sent on any connection
    malformed: int = 0  # next N data frames replaced by garbage
    truncated: int = 0  # next N data frames cut in half
    rest_429: int = 0  # next N REST calls answered 429 + Retry-After
    rest_5xx: int = 0  # next N REST calls answered 503
    retry_after_s: float = 1.0
    injected: int = 0

    def set(self, kind: str, seconds: float | None, count: int | None) -> None:
        """Arm a fault (``drop`` is handled by the server, which owns the connections)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        n = 1 if count is None else max(0, int(count))
        if kind == "stall":
            self.stall_until = time.monotonic() + (10.0 if seconds is None else float(seconds))
        elif kind == "malformed":
            self.malformed += n
        elif kind == "truncated":
            self.truncated += n
        elif kind == "rest_429":
            self.rest_429 += n
            if seconds is not None:
                self.retry_after_s = max(0.0, float(seconds))
        elif kind == "rest_5xx":
            self.rest_5xx += n

    def stalled(self) -> bool:
        return time.monotonic() < self.stall_until

    def mangle(self, frame: str) -> str:
        """Apply a pending malformed/truncated fault to one outgoing data frame."""
        if self.malformed > 0:
            self.malformed -= 1
            self.injected += 1
            return '{"garbage": ' + frame[:7] + "\x00<<not json>>"
        if self.truncated > 0:
            self.truncated -= 1
            self.injected += 1
            return frame[: max(1, len(frame) // 2)]
        return frame

    def rest_fault(self) -> tuple[int, dict[str, str]] | None:
        """(status, headers) for the next REST call if a REST fault is armed."""
        if self.rest_429 > 0:
            self.rest_429 -= 1
            self.injected += 1
            return 429, {"Retry-After": str(max(0, round(self.retry_after_s)))}
        if self.rest_5xx > 0:
            self.rest_5xx -= 1
            self.injected += 1
            return 503, {}
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            "stalled_for_s": max(0.0, self.stall_until - time.monotonic()),
            "malformed": self.malformed,
            "truncated": self.truncated,
            "rest_429": self.rest_429,
            "rest_5xx": self.rest_5xx,
            "injected": self.injected,
        }
