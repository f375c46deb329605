"""Binance USDⓈ-M account reads (signed USER_DATA): positions, ADL quantiles, leverage brackets.

Pure parsers, bytes in, typed records out. Requests and signing: ``exporter/rest/accounts.py``.
Reference: exchanges.md §2.6, §2.8.
"""

from __future__ import annotations

from typing import Any

from exporter.feeds.account_fields import AccountFacts, amount, field, load, rows_of
from exporter.model import AccountPosition, Exchange, ParseError, Side, Tier

EX = Exchange.BINANCE

# signature / timestamp / key errors (Binance error codes)
AUTH_CODES = frozenset({"-1021", "-1022", "-2014", "-2015", "-1002", "-1102"})


FACTS = AccountFacts(tiers_need_key=True, tiers_per_margin_mode=False)


def adl_rank(raw: float | None) -> float | None:
    """``adlQuantile`` 0 (safest) .. 4 (first in line): as is."""
    return None if raw is None else float(min(max(raw, 0.0), 4.0))


def error_code(body: bytes) -> str | None:
    """The error code of an error answer (``{"code":-2015,"msg":"Invalid API-key, ..."}``), else None."""
    try:
        msg = load(body, "error")
    except ParseError:
        return None
    if isinstance(msg, dict) and "code" in msg and msg.get("code") not in (0, 200):
        return str(msg["code"])
    return None


def parse_positions(risk_body: bytes, adl_body: bytes) -> list[AccountPosition]:
    """``GET /fapi/v2/positionRisk`` + ``GET /fapi/v1/adlQuantile`` -> open positions.

    positionRisk (exchange docs example, one row)::

        [{"entryPrice": "0.00000", "breakEvenPrice": "0.0", "marginType": "isolated",
          "isAutoAddMargin": "false", "isolatedMargin": "0.00000000", "leverage": "10",
          "liquidationPrice": "0", "markPrice": "6679.50671178", "maxNotionalValue": "20000000",
          "positionAmt": "0.000", "notional": "0", "isolatedWallet": "0", "symbol": "BTCUSDT",
          "unRealizedProfit": "0.00000000", "positionSide": "BOTH", "updateTime": 0}]

    adlQuantile (exchanges.md §2.6)::

        [{"symbol":"BTCUSDT","adlQuantile":{"LONG":1,"SHORT":2,"BOTH":0}}]

    Rows with ``positionAmt`` 0 are not positions. ``liquidationPrice`` "0" means no price
    liquidates it: 0 for a long, none for a short.
    """
    try:
        risk = rows_of(load(risk_body, "positionRisk"), "positionRisk")
        adl = rows_of(load(adl_body, "adlQuantile"), "adlQuantile")
        quantiles: dict[Any, dict[str, Any]] = {a.get("symbol"): a.get("adlQuantile") or {} for a in adl}
        out = []
        for r in risk:
            amt = amount(r.get("positionAmt"))
            if amt == 0:
                continue
            side = Side.LONG if amt > 0 else Side.SHORT
            pos_side = str(r.get("positionSide") or "BOTH")
            q = quantiles.get(r.get("symbol"), {})
            raw = q.get(pos_side) if pos_side in q else q.get("LONG" if side is Side.LONG else "SHORT")
            isolated = str(r.get("marginType", "")).lower() == "isolated"
            liq = field(r.get("liquidationPrice"))
            out.append(
                AccountPosition(
                    exchange=EX,
                    instrument=str(r["symbol"]),
                    side=side,
                    size=abs(amt),
                    entry_price=amount(r.get("entryPrice")),
                    margin_mode="isolated" if isolated else "cross",
                    margin_usd=field(r.get("isolatedWallet")) if isolated else None,
                    leverage=field(r.get("leverage")),
                    # Binance reports "0" when no price liquidates the position
                    liquidation_price=liq if liq else (0.0 if side is Side.LONG else None),
                    adl_raw=field(raw),
                    mark_price=field(r.get("markPrice")),
                )
            )
        return out
    except (KeyError, TypeError, AttributeError) as exc:
        raise ParseError(f"binance positionRisk: {type(exc).__name__}: {exc}") from None


def parse_brackets(body: bytes, symbol: str) -> list[Tier] | None:
    """``GET /fapi/v1/leverageBracket?symbol=`` -> the symbol's tiers by notional, ascending.

    Exchange docs example (one bracket shown)::

        [{"symbol": "ETHUSDT", "notionalCoef": 1.50,
          "brackets": [{"bracket": 1, "initialLeverage": 75, "notionalCap": 10000,
                        "notionalFloor": 0, "maintMarginRatio": 0.0065, "cum": 0}]}]

    With ``symbol=`` Binance may answer the single object instead of a list. None: symbol absent.
    """
    msg = load(body, "leverageBracket")
    items = msg if isinstance(msg, list) else [msg]
    try:
        for item in items:
            if isinstance(item, dict) and item.get("symbol") == symbol:
                return sorted(
                    (
                        Tier(
                            floor=amount(b.get("notionalFloor")),
                            cap=field(b.get("notionalCap"), float("inf")) or float("inf"),
                            mmr=amount(b.get("maintMarginRatio")),
                            max_leverage=field(b.get("initialLeverage")),
                            deduction=amount(b.get("cum")),
                        )
                        for b in rows_of(item.get("brackets", []), "brackets")
                    ),
                    key=lambda t: t.floor,
                )
    except (TypeError, AttributeError) as exc:
        raise ParseError(f"binance leverageBracket: {type(exc).__name__}") from None
    return None
