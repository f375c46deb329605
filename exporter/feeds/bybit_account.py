"""Bybit v5 account reads (signed) and published risk limits: positions, maintenance tiers.

Pure parsers, bytes in, typed records out. Requests and signing: ``exporter/rest/accounts.py``.
Reference: exchanges.md §3.5, §3.6, §3.8.
"""

from __future__ import annotations

from typing import Any

from exporter.feeds.account_fields import AccountFacts, amount, field, liquidation, load, rows_of
from exporter.model import AccountPosition, Exchange, ParseError, Side, Tier

EX = Exchange.BYBIT

AUTH_CODES = frozenset({"10002", "10003", "10004", "10005", "10007"})


FACTS = AccountFacts()


def adl_rank(raw: float | None) -> float | None:
    """``adlRankIndicator`` 0 (no position) / 1..5 -> 0..4: ``max(raw - 1, 0)``."""
    return None if raw is None else float(min(max(raw - 1.0, 0.0), 4.0))


def error_code(body: bytes) -> str | None:
    """``retCode`` of an error answer (``{"retCode":10004,"retMsg":"error sign! ..."}``), else None.

    The message text is never kept: Bybit's ``error sign!`` echoes the signed string (with the key).
    """
    try:
        msg = load(body, "error")
    except ParseError:
        return None
    if isinstance(msg, dict) and msg.get("retCode", 0) != 0:
        return str(msg.get("retCode"))
    return None


def _result(body: bytes, what: str) -> dict[str, Any]:
    msg = load(body, what)
    if not isinstance(msg, dict) or msg.get("retCode") != 0:
        raise ParseError(f"bybit {what}: not a successful v5 answer")
    result = msg.get("result") or {}
    if not isinstance(result, dict):
        raise ParseError(f"bybit {what}: result is not an object")
    return result


def _cursor(result: dict[str, Any]) -> str:
    return str(result.get("nextPageCursor") or "")


def parse_positions(body: bytes) -> tuple[list[AccountPosition], str]:
    """``GET /v5/position/list?category=linear&settleCoin=USDT`` -> (open positions, next cursor).

    Wire sample (NautilusTrader test fixture ``http_get_positions.json``, one row, abridged)::

        {"retCode": 0, "retMsg": "OK", "result": {"list": [{
           "positionIdx": 0, "symbol": "BTCUSDT", "side": "Buy", "size": "0.5",
           "avgPrice": "50000.00", "positionValue": "25000", "tradeMode": 0,
           "adlRankIndicator": 2, "leverage": "10", "positionBalance": "2500.00",
           "markPrice": "50500.00", "liqPrice": "45000.00", "bustPrice": "44500.00",
           "createdTime": "1676538056258", "updatedTime": "1697673600012"}],
         "nextPageCursor": "", "category": "linear"}}

    ``tradeMode`` 1 is isolated margin. ``createdTime`` is "the first time a position was created
    on this symbol", so the opening is ``openTime`` (0/absent when unknown -> first seen).
    """
    result = _result(body, "position/list")
    out = []
    try:
        for r in rows_of(result.get("list") or [], "list"):
            size = amount(r.get("size"))
            if size == 0 or r.get("side") not in ("Buy", "Sell"):
                continue
            side = Side.LONG if r["side"] == "Buy" else Side.SHORT
            isolated = str(r.get("tradeMode")) == "1"
            out.append(
                AccountPosition(
                    exchange=EX,
                    instrument=str(r["symbol"]),
                    side=side,
                    size=size,
                    entry_price=amount(r.get("avgPrice")),
                    margin_mode="isolated" if isolated else "cross",
                    margin_usd=field(r.get("positionBalance")) if isolated else None,
                    leverage=field(r.get("leverage")),
                    opened_at=amount(r.get("openTime")) / 1000.0 or None,
                    liquidation_price=liquidation(r.get("liqPrice"), side),
                    adl_raw=field(r.get("adlRankIndicator")),
                    mark_price=field(r.get("markPrice")),
                )
            )
    except KeyError as exc:
        raise ParseError(f"bybit position/list: missing {exc}") from None
    return out, _cursor(result)


def parse_risk_limits(body: bytes, symbol: str) -> tuple[list[dict[str, Any]], str]:
    """``GET /v5/market/risk-limit?category=linear&symbol=`` -> (the symbol's rows, next cursor).

    Exchange docs example (v5 market/risk-limit page)::

        {"retCode": 0, "retMsg": "OK", "result": {"category": "inverse", "list": [
           {"id": 1, "symbol": "BTCUSD", "riskLimitValue": "150", "maintenanceMargin": "0.5",
            "initialMargin": "1", "isLowestRisk": 1, "maxLeverage": "100.00"}]},
         "retExtInfo": {}, "time": 1672054488010}

    ``maintenanceMargin`` is read as a fraction, as the simulator and the SDKs do ("0.005" =
    0.5 %); the docs' inverse example ("0.5" next to 100x) reads like a percent (UNVERIFIED).
    ``mmDeduction`` (USD, may be ``""``) came later; ``nextPageCursor`` pages.
    The rows of all pages together make the tiers: :func:`tiers_from_risk_limits`.
    """
    result = _result(body, "risk-limit")
    rows = [r for r in rows_of(result.get("list") or [], "list") if r.get("symbol") == symbol]
    return rows, _cursor(result)


def tiers_from_risk_limits(rows: list[dict[str, Any]]) -> list[Tier] | None:
    """Risk-limit rows -> tiers: each ``riskLimitValue`` is a cap, the previous cap the floor."""
    tiers, floor = [], 0.0
    for r in sorted(rows, key=lambda r: amount(r.get("riskLimitValue"))):
        cap = amount(r.get("riskLimitValue"))
        tiers.append(
            Tier(
                floor,
                cap,
                amount(r.get("maintenanceMargin")),
                field(r.get("maxLeverage")),
                amount(r.get("mmDeduction")),
            )
        )
        floor = cap
    return tiers or None
