"""Private (signed, read-only) account endpoints of the simulated exchanges. Filled in by issue 3."""

from __future__ import annotations

from typing import Any


def register(app: Any, exchange: Any, market: Any) -> None:
    """Add the exchange's private account routes to its simulator app (none yet)."""
    return None
