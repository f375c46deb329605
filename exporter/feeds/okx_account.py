"""OKX v5 account reads (signed) and published position tiers.

Pure parsers, bytes in, typed records out. Contract sizes come from the public instrument list,
parsed by :meth:`exporter.feeds.okx.OkxFeed.parse_instruments`. Requests and signing:
``exporter/rest/accounts.py``. Reference: exchanges.md §4.3, §4.5, §4.6, §4.8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.feeds.account_fields import AccountFacts, amount, field, liquidation, load, rows_of
from exporter.model import AccountPosition, Exchange, ParseError, Side, Tier

EX = Exchange.OKX

AUTH_CODES = frozenset({"50102", "50103", "50104", "50105", "50106", "50107", "50111", "50112", "50113"})

# OKX contract values (base coin per contract) used when the instrument list cannot be read.
CT_VAL_FALLBACK = {"BTC-USDT-SWAP": 0.01, "ETH-USDT-SWAP": 0.1, "BTC-USDC-SWAP": 0.0001, "ETH-USDC-SWAP": 0.001}


FACTS = AccountFacts(sizes_in_contracts=True, liq_includes_taker_fee=True, needs_passphrase=True)


def adl_rank(raw: float | None) -> float | None:
    """``adl`` 0..5 -> 0..4: ``raw x 4/5``."""
    return None if raw is None else float(min(max(raw, 0.0), 5.0) * 4.0 / 5.0)


def error_code(body: bytes) -> str | None:
    """``code`` of an error answer (``{"code":"50113","msg":"Invalid Sign","data":[]}``), else None."""
    try:
        msg = load(body, "error")
    except ParseError:
        return None
    if isinstance(msg, dict) and str(msg.get("code", "0")) != "0":
        return str(msg.get("code"))
    return None


def _data(body: bytes, what: str) -> list[dict[str, Any]]:
    msg = load(body, what)
    if not isinstance(msg, dict) or str(msg.get("code")) != "0":
        raise ParseError(f"okx {what}: not a successful v5 answer")
    return rows_of(msg.get("data") or [], "data")


def parse_positions(body: bytes, contract_size: Callable[[str], float]) -> list[AccountPosition]:
    """``GET /api/v5/account/positions?instType=SWAP`` -> open positions, sizes in base coin.

    Exchange docs example (one row, abridged)::

        {"code": "0", "msg": "", "data": [{
           "adl": "1", "availPos": "1", "avgPx": "2566.31", "cTime": "1619507758793",
           "ccy": "ETH", "instId": "ETH-USD-210430", "instType": "FUTURES", "lever": "10",
           "liqPx": "2352.8496681818233", "markPx": "2353.849", "margin": "0.0003896645377994",
           "mgnMode": "isolated", "pos": "1", "posSide": "net", "upl": "-0.0000021"}]}

    ``pos`` counts contracts: size = |pos| x ctVal (``contract_size(instId)``). In net mode the
    sign of ``pos`` is the side.
    """
    out = []
    try:
        for r in _data(body, "account/positions"):
            pos = amount(r.get("pos"))
            if pos == 0:
                continue
            pos_side = r.get("posSide") or "net"
            side = (Side.LONG if pos > 0 else Side.SHORT) if pos_side == "net" else Side(pos_side)
            inst = str(r["instId"])
            ct = contract_size(inst)
            isolated = r.get("mgnMode") == "isolated"
            out.append(
                AccountPosition(
                    exchange=EX,
                    instrument=inst,
                    side=side,
                    size=abs(pos) * ct,
                    entry_price=amount(r.get("avgPx")),
                    margin_mode="isolated" if isolated else "cross",
                    margin_usd=field(r.get("margin")) if isolated else None,
                    leverage=field(r.get("lever")),
                    opened_at=amount(r.get("cTime")) / 1000.0 or None,
                    liquidation_price=liquidation(r.get("liqPx"), side),
                    adl_raw=field(r.get("adl")),
                    mark_price=field(r.get("markPx")),
                    contract_size=ct,
                )
            )
    except (KeyError, ValueError) as exc:
        raise ParseError(f"okx account/positions: {type(exc).__name__}: {exc}") from None
    return out


def parse_position_tiers(body: bytes) -> list[Tier] | None:
    """``GET /api/v5/public/position-tiers?instType=SWAP&tdMode=&instFamily=`` -> tiers by contracts.

    Exchange docs example (one tier, abridged)::

        {"code": "0", "msg": "", "data": [{
           "instFamily": "BTC-USDT", "instId": "", "tier": "1", "minSz": "0", "maxSz": "9999999999",
           "mmr": "0.03", "imr": "0.1", "maxLever": "10", "uly": "BTC-USDT"}]}
    """
    tiers = [
        Tier(
            amount(r.get("minSz")),
            field(r.get("maxSz"), float("inf")) or float("inf"),
            amount(r.get("mmr")),
            field(r.get("maxLever")),
            0.0,
        )
        for r in _data(body, "position-tiers")
    ]
    return sorted(tiers, key=lambda t: t.floor) or None
