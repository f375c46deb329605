"""Signed, read-only account reads (positions, ADL, tiers) and the public reads positions need.

One source class per exchange. Each returns :class:`Position` objects with the exchange's own
liquidation price and raw ADL indicator; nothing here places or changes orders.

Errors become :class:`AccountError` carrying only the exchange's error *code* and a reason label,
never the request (its query or headers hold the key and signature) nor the exchange's message
text (Bybit's ``error sign!`` message echoes the signed string, which includes the API key).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

from exporter.analytics.risk import Tier
from exporter.model import Exchange, Side
from exporter.positions.model import OKX_CT_VAL_FALLBACK, Position
from exporter.positions.signing import (
    ApiKey,
    binance_signed_query,
    bybit_headers,
    deribit_authorization,
    okx_headers,
)

AUTH_CODES: dict[Exchange, set[str]] = {
    # signature / timestamp / key errors in each exchange's own numbering
    Exchange.BINANCE: {"-1021", "-1022", "-2014", "-2015", "-1002", "-1102"},
    Exchange.BYBIT: {"10002", "10003", "10004", "10005", "10007"},
    Exchange.OKX: {"50102", "50103", "50104", "50105", "50106", "50107", "50111", "50112", "50113"},
    Exchange.DERIBIT: {"13004", "13009", "13010", "13011", "10000", "10001"},
}


class AccountError(Exception):
    def __init__(self, exchange: Exchange, reason: str, code: str | None = None) -> None:
        self.exchange = exchange
        self.reason = reason
        self.code = code
        super().__init__(f"{exchange.value} account read failed: {reason}" + (f" (code {code})" if code else ""))


def _f(v: Any, default: float | None = None) -> float | None:
    if v is None or v == "":
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _liq(v: Any, side: Side) -> float | None:
    """The exchange's liquidation price; ``"0"``/``""``/negative mean "no price liquidates it":
    0 for a long (as the computed figure), no value for a short (a 0 would read as already past it)."""
    liq = _f(v)
    if liq is not None and liq > 0:
        return liq
    return 0.0 if side is Side.LONG and liq is not None else None


async def _get_json(
    client: httpx.AsyncClient, exchange: Exchange, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    try:
        resp = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        raise AccountError(exchange, "timeout") from None
    except httpx.HTTPError:
        raise AccountError(exchange, "connect") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code == 429:
        raise AccountError(exchange, "rate_limited")
    if resp.status_code >= 500:
        raise AccountError(exchange, "http_5xx")
    return resp.status_code, body


def _fail(exchange: Exchange, code: Any) -> AccountError:
    c = None if code is None else str(code)
    reason = "auth" if c in AUTH_CODES[exchange] else "exchange_error"
    return AccountError(exchange, reason, c)


class AccountSource:
    """Base: the exchange's REST base URL, a read-only key, a shared httpx client, a clock."""

    exchange: Exchange

    def __init__(
        self,
        base_url: str,
        key: ApiKey,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
        recv_window_ms: int = 5000,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.client = client
        self.clock = clock
        self.recv_window_ms = recv_window_ms

    async def positions(self) -> list[Position]:
        raise NotImplementedError

    async def tiers(self, instrument: str) -> list[Tier] | None:
        """Maintenance tiers readable with this key (Binance brackets); None: use public tiers."""
        return None


# ---- Binance ---------------------------------------------------------------------------------


class BinanceAccount(AccountSource):
    exchange = Exchange.BINANCE

    async def _signed(self, path: str, params: list[tuple[str, str]]) -> Any:
        query, headers = binance_signed_query(params, self.key, int(self.clock() * 1000), self.recv_window_ms)
        status, body = await _get_json(self.client, self.exchange, f"{self.base_url}{path}?{query}", headers)
        if status != 200 or (isinstance(body, dict) and "code" in body and body.get("code") not in (0, 200)):
            raise _fail(self.exchange, body.get("code") if isinstance(body, dict) else status)
        return body

    async def positions(self) -> list[Position]:
        risk = await self._signed("/fapi/v2/positionRisk", [])
        adl = await self._signed("/fapi/v1/adlQuantile", [])
        if not isinstance(risk, list) or not isinstance(adl, list):
            raise AccountError(self.exchange, "invalid_response")
        quantiles = {a.get("symbol"): a.get("adlQuantile") or {} for a in adl if isinstance(a, dict)}
        out = []
        for r in risk:
            amt = _f(r.get("positionAmt"), 0.0) or 0.0
            if amt == 0:
                continue
            side = Side.LONG if amt > 0 else Side.SHORT
            pos_side = str(r.get("positionSide") or "BOTH")
            q = quantiles.get(r.get("symbol"), {})
            raw = q.get(pos_side) if pos_side in q else q.get("LONG" if side is Side.LONG else "SHORT")
            isolated = str(r.get("marginType", "")).lower() == "isolated"
            liq = _f(r.get("liquidationPrice"))
            out.append(
                Position(
                    name=f"binance:{r['symbol']}:{side.value}",
                    exchange=self.exchange,
                    instrument=str(r["symbol"]),
                    side=side,
                    size=abs(amt),
                    entry_price=_f(r.get("entryPrice"), 0.0) or 0.0,
                    margin_mode="isolated" if isolated else "cross",
                    margin_usd=_f(r.get("isolatedWallet")) if isolated else None,
                    leverage=_f(r.get("leverage")),
                    source="account",
                    # Binance reports "0" when no price liquidates the position
                    exchange_liq_price=liq if liq else (0.0 if side is Side.LONG else None),
                    adl_raw=_f(raw),
                    mark_price=_f(r.get("markPrice")),
                )
            )
        return out

    async def tiers(self, instrument: str) -> list[Tier] | None:
        body = await self._signed("/fapi/v1/leverageBracket", [("symbol", instrument)])
        items = body if isinstance(body, list) else [body]
        for item in items:
            if isinstance(item, dict) and item.get("symbol") == instrument:
                return sorted(
                    (
                        Tier(
                            floor=_f(b.get("notionalFloor"), 0.0) or 0.0,
                            cap=_f(b.get("notionalCap"), float("inf")) or float("inf"),
                            mmr=_f(b.get("maintMarginRatio"), 0.0) or 0.0,
                            max_leverage=_f(b.get("initialLeverage")),
                            deduction=_f(b.get("cum"), 0.0) or 0.0,
                        )
                        for b in item.get("brackets", [])
                    ),
                    key=lambda t: t.floor,
                )
        return None


# ---- Bybit -----------------------------------------------------------------------------------


class BybitAccount(AccountSource):
    exchange = Exchange.BYBIT

    async def positions(self) -> list[Position]:
        out: list[Position] = []
        cursor = ""
        for _ in range(20):  # pages
            params = [("category", "linear"), ("settleCoin", "USDT"), ("limit", "200")]
            if cursor:
                params.append(("cursor", cursor))
            query = urlencode(params)
            headers = bybit_headers(query, self.key, int(self.clock() * 1000), self.recv_window_ms)
            _, body = await _get_json(self.client, self.exchange, f"{self.base_url}/v5/position/list?{query}", headers)
            if not isinstance(body, dict):
                raise AccountError(self.exchange, "invalid_response")
            if body.get("retCode") != 0:
                raise _fail(self.exchange, body.get("retCode"))
            result = body.get("result") or {}
            for r in result.get("list") or []:
                size = _f(r.get("size"), 0.0) or 0.0
                if size == 0 or r.get("side") not in ("Buy", "Sell"):
                    continue
                side = Side.LONG if r["side"] == "Buy" else Side.SHORT
                isolated = str(r.get("tradeMode")) == "1"
                out.append(
                    Position(
                        name=f"bybit:{r['symbol']}:{side.value}",
                        exchange=self.exchange,
                        instrument=str(r["symbol"]),
                        side=side,
                        size=size,
                        entry_price=_f(r.get("avgPrice"), 0.0) or 0.0,
                        margin_mode="isolated" if isolated else "cross",
                        margin_usd=_f(r.get("positionBalance")) if isolated else None,
                        leverage=_f(r.get("leverage")),
                        # not createdTime: "the first time a position was created on this symbol", which
                        # would count funding from before a reopened position existed; openTime is 0 or
                        # absent when unknown -> first seen by the exporter
                        opened_at=(_f(r.get("openTime"), 0.0) or 0.0) / 1000.0 or None,
                        source="account",
                        exchange_liq_price=_liq(r.get("liqPrice"), side),
                        adl_raw=_f(r.get("adlRankIndicator")),
                        mark_price=_f(r.get("markPrice")),
                    )
                )
            cursor = str(result.get("nextPageCursor") or "")
            if not cursor:
                break
        return out


# ---- OKX -------------------------------------------------------------------------------------


class OkxAccount(AccountSource):
    exchange = Exchange.OKX

    def __init__(self, *args: Any, contract_size: Callable[[str], float] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.contract_size = contract_size or (lambda inst: OKX_CT_VAL_FALLBACK.get(inst, 1.0))

    async def positions(self) -> list[Position]:
        path = "/api/v5/account/positions?instType=SWAP"
        headers = okx_headers("GET", path, "", self.key, self.clock())
        status, body = await _get_json(self.client, self.exchange, f"{self.base_url}{path}", headers)
        if not isinstance(body, dict):
            # "http_error" is no documented reason label: a non-JSON error page counts as the others do
            raise AccountError(self.exchange, "invalid_response") if status == 200 else _fail(self.exchange, status)
        if str(body.get("code")) != "0":
            raise _fail(self.exchange, body.get("code"))
        out = []
        for r in body.get("data") or []:
            pos = _f(r.get("pos"), 0.0) or 0.0
            if pos == 0:
                continue
            pos_side = r.get("posSide") or "net"
            side = (Side.LONG if pos > 0 else Side.SHORT) if pos_side == "net" else Side(pos_side)
            inst = str(r["instId"])
            ct = self.contract_size(inst)
            isolated = r.get("mgnMode") == "isolated"
            out.append(
                Position(
                    name=f"okx:{inst}:{side.value}",
                    exchange=self.exchange,
                    instrument=inst,
                    side=side,
                    size=abs(pos) * ct,
                    entry_price=_f(r.get("avgPx"), 0.0) or 0.0,
                    margin_mode="isolated" if isolated else "cross",
                    margin_usd=_f(r.get("margin")) if isolated else None,
                    leverage=_f(r.get("lever")),
                    opened_at=(_f(r.get("cTime"), 0.0) or 0.0) / 1000.0 or None,
                    source="account",
                    contract_size=ct,
                    exchange_liq_price=_liq(r.get("liqPx"), side),
                    adl_raw=_f(r.get("adl")),
                    mark_price=_f(r.get("markPx")),
                )
            )
        return out


# ---- Deribit ---------------------------------------------------------------------------------


class DeribitAccount(AccountSource):
    exchange = Exchange.DERIBIT

    async def positions(self) -> list[Position]:
        uri = "/api/v2/private/get_positions?currency=any&kind=future"
        headers = deribit_authorization("GET", uri, "", self.key, int(self.clock() * 1000))
        _, body = await _get_json(self.client, self.exchange, f"{self.base_url}{uri}", headers)
        if not isinstance(body, dict):
            raise AccountError(self.exchange, "invalid_response")
        if "error" in body:
            err = body["error"]
            raise _fail(self.exchange, err.get("code") if isinstance(err, dict) else err)
        out = []
        for r in body.get("result") or []:
            inst = str(r.get("instrument_name", ""))
            if not inst.endswith("PERPETUAL"):
                continue
            direction = r.get("direction")
            size_usd = abs(_f(r.get("size"), 0.0) or 0.0)
            if direction not in ("buy", "sell") or size_usd == 0:
                continue
            side = Side.LONG if direction == "buy" else Side.SHORT
            inverse = "_" not in inst.split("-")[0]
            entry = _f(r.get("average_price"), 0.0) or 0.0
            # inverse: size is USD and size_currency the coin; linear: size is already coin
            size = abs(_f(r.get("size_currency"), 0.0) or 0.0) if inverse else size_usd
            if inverse and size == 0 and entry:
                size = size_usd / entry
            out.append(
                Position(
                    name=f"deribit:{inst}:{side.value}",
                    exchange=self.exchange,
                    instrument=inst,
                    side=side,
                    size=size,
                    entry_price=entry,
                    margin_mode="cross",
                    leverage=_f(r.get("leverage")),
                    source="account",
                    inverse=inverse,
                    exchange_liq_price=_liq(r.get("estimated_liquidation_price"), side),
                    mark_price=_f(r.get("mark_price")),
                )
            )
        return out


SOURCES: dict[Exchange, type[AccountSource]] = {
    Exchange.BINANCE: BinanceAccount,
    Exchange.BYBIT: BybitAccount,
    Exchange.OKX: OkxAccount,
    Exchange.DERIBIT: DeribitAccount,
}


# ---- public reads ----------------------------------------------------------------------------


async def public_tiers(
    client: httpx.AsyncClient, exchange: Exchange, base_url: str, instrument: str, margin_mode: str = "isolated"
) -> list[Tier] | None:
    """Published maintenance tiers: Bybit ``/v5/market/risk-limit``, OKX ``/api/v5/public/position-tiers``."""
    base = base_url.rstrip("/")
    if exchange is Exchange.BYBIT:
        rows: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(20):
            q = urlencode([("category", "linear"), ("symbol", instrument)] + ([("cursor", cursor)] if cursor else []))
            _, body = await _get_json(client, exchange, f"{base}/v5/market/risk-limit?{q}")
            if not isinstance(body, dict) or body.get("retCode") != 0:
                return None
            result = body.get("result") or {}
            rows += [r for r in result.get("list") or [] if r.get("symbol") == instrument]
            cursor = str(result.get("nextPageCursor") or "")
            if not cursor:
                break
        rows.sort(key=lambda r: _f(r.get("riskLimitValue"), 0.0) or 0.0)
        tiers, floor = [], 0.0
        for r in rows:
            cap = _f(r.get("riskLimitValue"), 0.0) or 0.0
            tiers.append(
                Tier(
                    floor,
                    cap,
                    _f(r.get("maintenanceMargin"), 0.0) or 0.0,
                    _f(r.get("maxLeverage")),
                    _f(r.get("mmDeduction"), 0.0) or 0.0,
                )
            )
            floor = cap
        return tiers or None
    if exchange is Exchange.OKX:
        family = "-".join(instrument.split("-")[:2])
        td = "cross" if margin_mode == "cross" else "isolated"
        q = urlencode([("instType", "SWAP"), ("tdMode", td), ("instFamily", family)])
        _, body = await _get_json(client, exchange, f"{base}/api/v5/public/position-tiers?{q}")
        if not isinstance(body, dict) or str(body.get("code")) != "0":
            return None
        tiers = [
            Tier(
                _f(r.get("minSz"), 0.0) or 0.0,
                _f(r.get("maxSz"), float("inf")) or float("inf"),
                _f(r.get("mmr"), 0.0) or 0.0,
                _f(r.get("maxLever")),
                0.0,
            )
            for r in body.get("data") or []
        ]
        return sorted(tiers, key=lambda t: t.floor) or None
    return None


async def okx_contract_size(client: httpx.AsyncClient, base_url: str, instrument: str) -> float | None:
    q = urlencode([("instType", "SWAP"), ("instId", instrument)])
    _, body = await _get_json(client, Exchange.OKX, f"{base_url.rstrip('/')}/api/v5/public/instruments?{q}")
    if isinstance(body, dict) and str(body.get("code")) == "0":
        for r in body.get("data") or []:
            if r.get("instId") == instrument:
                return _f(r.get("ctVal"))
    return None


async def funding_history(
    client: httpx.AsyncClient, exchange: Exchange, base_url: str, instrument: str
) -> list[tuple[float, float, float | None]]:
    """Recent settled funding: (funding_time_s, rate, mark price at settlement or None)."""
    base = base_url.rstrip("/")
    out: list[tuple[float, float, float | None]] = []
    if exchange is Exchange.BINANCE:
        q = urlencode([("symbol", instrument), ("limit", "100")])
        _, body = await _get_json(client, exchange, f"{base}/fapi/v1/fundingRate?{q}")
        for r in body if isinstance(body, list) else []:
            if r.get("rateType", "Regular") == "Special":
                continue  # dividend-style extra charge, not a funding settlement
            t, rate = _f(r.get("fundingTime")), _f(r.get("fundingRate"))
            if t is not None and rate is not None:
                out.append((t / 1000.0, rate, _f(r.get("markPrice"))))
    elif exchange is Exchange.BYBIT:
        q = urlencode([("category", "linear"), ("symbol", instrument), ("limit", "50")])
        _, body = await _get_json(client, exchange, f"{base}/v5/market/funding/history?{q}")
        rows = ((body or {}).get("result") or {}).get("list") or [] if isinstance(body, dict) else []
        for r in rows:
            t, rate = _f(r.get("fundingRateTimestamp")), _f(r.get("fundingRate"))
            if t is not None and rate is not None:
                out.append((t / 1000.0, rate, None))
    elif exchange is Exchange.OKX:
        q = urlencode([("instId", instrument), ("limit", "50")])
        _, body = await _get_json(client, exchange, f"{base}/api/v5/public/funding-rate-history?{q}")
        for r in (body or {}).get("data") or [] if isinstance(body, dict) else []:
            t = _f(r.get("fundingTime"))
            rate = _f(r.get("realizedRate"), _f(r.get("fundingRate")))
            if t is not None and rate is not None:
                out.append((t / 1000.0, rate, None))
    return sorted(out)
