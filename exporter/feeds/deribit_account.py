"""Deribit account reads (signed): perpetual positions.

Pure parser, bytes in, typed records out. Requests and signing: ``exporter/rest/accounts.py``.
Deribit has no ADL ranking and publishes no tier table; funding accrues continuously (the
positions' ledger accrues it at the 8 h-equivalent rate). Reference: exchanges.md §5.
"""

from __future__ import annotations

from exporter.feeds.account_fields import AccountFacts, amount, field, liquidation, load, rows_of
from exporter.model import AccountPosition, Exchange, ParseError, Side

EX = Exchange.DERIBIT

AUTH_CODES = frozenset({"13004", "13009", "13010", "13011", "10000", "10001"})


FACTS = AccountFacts(has_funding_history=False, tiers_published=False)


def adl_rank(raw: float | None) -> float | None:
    """Deribit has no ADL ranking (socialised losses): no value."""
    return None


def error_code(body: bytes) -> str | None:
    """``error.code`` of a JSON-RPC error (``{"error":{"code":13009,"message":"unauthorized"}}``)."""
    try:
        msg = load(body, "error")
    except ParseError:
        return None
    if isinstance(msg, dict) and "error" in msg:
        err = msg["error"]
        return str(err.get("code") if isinstance(err, dict) else err)
    return None


def parse_positions(body: bytes) -> list[AccountPosition]:
    """``private/get_positions?currency=any&kind=future`` -> open perpetual positions.

    Exchange docs example (one row)::

        {"jsonrpc": "2.0", "id": 2236, "result": [{
           "average_price": 7440.18, "delta": 0.006687487, "direction": "buy",
           "estimated_liquidation_price": 1.74, "floating_profit_loss": 0, "index_price": 7466.79,
           "initial_margin": 0.000197283, "instrument_name": "BTC-PERPETUAL", "kind": "future",
           "leverage": 34, "maintenance_margin": 0.000143783, "mark_price": 7476.65,
           "settlement_price": 7476.65, "size": 50, "size_currency": 0.006687487,
           "total_profit_loss": 0.000032781}]}

    Inverse (``BTC-PERPETUAL``): ``size`` is USD and ``size_currency`` the coin; linear
    (``*_USDC-PERPETUAL``): ``size`` is already coin.
    """
    msg = load(body, "get_positions")
    if not isinstance(msg, dict) or "error" in msg:
        raise ParseError("deribit get_positions: not a JSON-RPC result")
    out = []
    for r in rows_of(msg.get("result") or [], "result"):
        inst = str(r.get("instrument_name", ""))
        if not inst.endswith("PERPETUAL"):
            continue
        direction = r.get("direction")
        size_usd = abs(amount(r.get("size")))
        if direction not in ("buy", "sell") or size_usd == 0:
            continue
        side = Side.LONG if direction == "buy" else Side.SHORT
        inverse = "_" not in inst.split("-")[0]
        entry = amount(r.get("average_price"))
        size = abs(amount(r.get("size_currency"))) if inverse else size_usd
        if inverse and size == 0 and entry:
            size = size_usd / entry
        out.append(
            AccountPosition(
                exchange=EX,
                instrument=inst,
                side=side,
                size=size,
                entry_price=entry,
                margin_mode="cross",
                margin_usd=None,
                leverage=field(r.get("leverage")),
                liquidation_price=liquidation(r.get("estimated_liquidation_price"), side),
                adl_raw=None,
                mark_price=field(r.get("mark_price")),
                inverse=inverse,
            )
        )
    return out
