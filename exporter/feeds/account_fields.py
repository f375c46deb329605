"""Field readers shared by the per-exchange account parsers (``feeds/*_account.py``).

Account bodies are read leniently field by field (an exchange sends ``""`` for "not applicable"),
but strictly in shape: a body that is not the documented object/list raises :class:`ParseError`,
which the caller counts as ``invalid_response`` and applies nothing from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from exporter.model import ParseError, Side


def load(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError(f"{what}: body is not JSON") from None


def field(v: Any, default: float | None = None) -> float | None:
    """A numeric field: ``None``/``""``/not a number -> ``default``."""
    if v is None or v == "":
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def amount(v: Any) -> float:
    """A numeric field where absent means 0 (sizes, entry prices)."""
    return field(v, 0.0) or 0.0


def liquidation(v: Any, side: Side) -> float | None:
    """The exchange's liquidation price; ``"0"``/``""``/negative mean "no price liquidates it":
    0 for a long (as the computed figure), no value for a short (a 0 would read as already past it)."""
    liq = field(v)
    if liq is not None and liq > 0:
        return liq
    return 0.0 if side is Side.LONG and liq is not None else None


def rows_of(node: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(node, list) or not all(isinstance(r, dict) for r in node):
        raise ParseError(f"{what}: expected a list of objects")
    return node


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What differs between exchanges in how positions are read and valued (static facts)."""

    has_funding_history: bool = True  # False: funding accrues continuously (Deribit), no settlements
    tiers_need_key: bool = False  # Binance's leverage brackets are USER_DATA
    tiers_published: bool = True  # False: no tier table to read (Deribit)
    tiers_per_margin_mode: bool = True  # OKX tiers differ by tdMode (cached per margin mode)
    sizes_in_contracts: bool = False  # OKX: position sizes and tiers count contracts (x ctVal)
    liq_includes_taker_fee: bool = False  # OKX: the liquidation margin ratio adds the taker fee
    needs_passphrase: bool = False  # OKX keys come with a passphrase
