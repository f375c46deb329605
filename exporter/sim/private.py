"""Private (signed, read-only) account endpoints of the simulated exchanges.

Each exchange checks the request the way its documentation describes and answers errors in its
own shape (codes from the exchanges' error tables; the exact HTTP status of some is UNVERIFIED):

* Binance: ``X-MBX-APIKEY`` + ``timestamp``/``recvWindow``/``signature`` (hex HMAC-SHA256 of the
  query before ``signature``). Missing key -2014 (401), unknown key -2015 (401), missing
  parameter -1102, stale or future timestamp -1021, bad signature -1022 (400).
* Bybit: ``X-BAPI-*`` headers, hex HMAC-SHA256 of timestamp + key + recv_window + query.
  Missing/unknown key 10003, stale timestamp 10002, bad signature 10004 (HTTP 200, ``retCode``).
* OKX: ``OK-ACCESS-*`` headers, base64 HMAC-SHA256 of timestamp + method + path?query + body;
  50103/50104/50106/50107 missing headers, 50111 unknown key, 50105 wrong passphrase, 50112 bad
  timestamp format, 50102 expired (> 30 s), 50113 bad signature (HTTP 401).
* Deribit: ``Authorization: deri-hmac-sha256 id=..,ts=..,sig=..,nonce=..``; missing -> 13009
  ``unauthorized``; unknown id, stale timestamp or bad signature -> 13004 ``invalid_credentials``
  (HTTP 400, JSON-RPC error). The timestamp tolerance Deribit applies is UNVERIFIED (60 s here).

Positions live in simulator state, set and closed through the control API on every port:

* ``POST /_sim/positions`` ``{"positions": [{"instrument", "side", "size" (base coin),
  "entry_price"?, "leverage"?, "margin_mode"? ("isolated"|"cross"), "margin_usd"?, "adl"?}],
  "replace"?: bool}``
* ``POST /_sim/positions/close`` ``{"instrument"?, "side"?}`` (all when empty)
* ``GET /_sim/positions``; ``POST /_sim/credentials`` ``{"api_key", "api_secret", "passphrase"?}``
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from exporter.analytics.risk import (
    DEFAULT_TIER_ROWS,
    LiqInput,
    Tier,
    liquidation_price,
    tiers_from_caps,
)
from exporter.model import Exchange, Side

DEFAULT_CREDENTIALS: dict[str, str] = {
    "api_key": "sim-read-only-key",
    "api_secret": "sim-read-only-secret",
    "passphrase": "sim-passphrase",
}
TIMESTAMP_TOLERANCE_S = {Exchange.OKX: 30.0, Exchange.DERIBIT: 60.0}

# Simulated maintenance tiers. Binance brackets (USD notional) reuse the risk module's defaults;
# Bybit risk limits (USD position value); OKX tiers in contracts.
BYBIT_TIER_ROWS: tuple[tuple[float, float, float], ...] = (
    (2_000_000, 0.005, 100),
    (4_000_000, 0.0055, 75),
    (8_000_000, 0.0065, 50),
    (16_000_000, 0.01, 25),
    (1e12, 0.05, 5),
)
OKX_TIER_ROWS: tuple[tuple[float, float, float, float], ...] = (
    (0, 10_000, 0.004, 125),
    (10_000, 30_000, 0.005, 100),
    (30_000, 100_000, 0.01, 50),
    (100_000, 1_000_000_000, 0.02, 20),
)


def sim_tiers(exchange: Exchange) -> list[Tier]:
    if exchange is Exchange.BYBIT:
        return tiers_from_caps(BYBIT_TIER_ROWS)
    if exchange is Exchange.OKX:
        return [Tier(lo, hi, mmr, lev, 0.0) for lo, hi, mmr, lev in OKX_TIER_ROWS]
    return tiers_from_caps(DEFAULT_TIER_ROWS)


@dataclass(slots=True)
class SimPosition:
    instrument: str
    side: str  # long | short
    size: float  # base coin
    entry_price: float
    leverage: float
    margin_mode: str
    margin_usd: float  # isolated margin, or the cross wallet balance
    adl: int
    created_at: float


class PrivateApi:
    def __init__(self, exchange: Exchange, market: Any) -> None:
        self.exchange = exchange
        self.market = market
        self.creds = dict(DEFAULT_CREDENTIALS)
        self.positions: dict[tuple[str, str], SimPosition] = {}
        self.requests = 0
        self.rejected = 0

    # ---- helpers --------------------------------------------------------------------------

    def _inst(self, symbol: str) -> Any:
        get = getattr(self.market, "get", None)
        return get(self.exchange, symbol) if get is not None else None

    def _mark(self, symbol: str, fallback: float) -> float:
        inst = self._inst(symbol)
        mark = getattr(inst, "mark", None)
        return float(mark) if mark else fallback

    def _ct(self, symbol: str) -> float:
        inst = self._inst(symbol)
        return float(getattr(getattr(inst, "spec", None), "contract_size", 1.0) or 1.0)

    def _inverse(self, symbol: str) -> bool:
        inst = self._inst(symbol)
        return bool(getattr(getattr(inst, "spec", None), "inverse", False))

    def _liq(self, p: SimPosition) -> float | None:
        ct = self._ct(p.instrument) if self.exchange is Exchange.OKX else 1.0
        return liquidation_price(
            LiqInput(
                self.exchange,
                Side(p.side),
                p.size,
                p.entry_price,
                p.margin_usd,
                sim_tiers(self.exchange),
                ct,
                0.0005 if self.exchange is Exchange.OKX else 0.0,
                self._inverse(p.instrument),
            )
        )

    @staticmethod
    def _num(v: float, nd: int = 8) -> str:
        return f"{v:.{nd}f}".rstrip("0").rstrip(".") or "0"

    # ---- control API ----------------------------------------------------------------------

    async def set_positions(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        if data.get("replace"):
            self.positions.clear()
        added = []
        for raw in data.get("positions") or []:
            sym = str(raw.get("instrument", ""))
            if self._inst(sym) is None:
                return web.json_response({"ok": False, "error": f"unknown instrument {sym}"}, status=400)
            side = str(raw.get("side", "long"))
            if side not in ("long", "short") or float(raw.get("size", 0)) <= 0:
                return web.json_response({"ok": False, "error": "side must be long|short and size > 0"}, status=400)
            size = float(raw["size"])
            entry = float(raw.get("entry_price") or self._mark(sym, 0.0))
            lev = float(raw.get("leverage") or 10.0)
            mode = str(raw.get("margin_mode", "isolated"))
            margin = float(raw.get("margin_usd") or size * entry / lev)
            p = SimPosition(sym, side, size, entry, lev, mode, margin, int(raw.get("adl", 2)), time.time())
            self.positions[(sym, side)] = p
            added.append(asdict(p))
        return web.json_response({"ok": True, "positions": added})

    async def close_positions(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        sym, side = data.get("instrument"), data.get("side")
        gone = [k for k in self.positions if (sym is None or k[0] == sym) and (side is None or k[1] == side)]
        for k in gone:
            del self.positions[k]
        return web.json_response({"ok": True, "closed": len(gone)})

    async def list_positions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "positions": [asdict(p) for p in self.positions.values()],
                "requests": self.requests,
                "rejected": self.rejected,
            }
        )

    async def set_credentials(self, request: web.Request) -> web.Response:
        data = await request.json()
        for k in ("api_key", "api_secret", "passphrase"):
            if data.get(k):
                self.creds[k] = str(data[k])
        return web.json_response({"ok": True})

    def _sig_ok(self, message: str, given: str, b64: bool = False) -> bool:
        mac = hmac.new(self.creds["api_secret"].encode(), message.encode(), hashlib.sha256).digest()
        expected = base64.b64encode(mac).decode() if b64 else mac.hex()
        return hmac.compare_digest(expected, given)

    def _reject(self) -> None:
        self.rejected += 1

    # ---- Binance --------------------------------------------------------------------------

    def _binance_auth(self, request: web.Request) -> web.Response | None:
        self.requests += 1

        def err(code: int, msg: str, status: int = 400) -> web.Response:
            self._reject()
            return web.json_response({"code": code, "msg": msg}, status=status)

        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            return err(-2014, "API-key format invalid.", 401)
        if key != self.creds["api_key"]:
            return err(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        raw = request.raw_path.partition("?")[2]  # as sent: the signature covers the encoded bytes
        parts = raw.split("&") if raw else []
        sig = next((p.split("=", 1)[1] for p in parts if p.startswith("signature=")), "")
        signed = "&".join(p for p in parts if not p.startswith("signature="))
        ts = request.query.get("timestamp")
        if not ts or not ts.isdigit():
            return err(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        if not sig:
            return err(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        recv = int(request.query.get("recvWindow", "5000") or 5000)
        now_ms = int(time.time() * 1000)
        if int(ts) > now_ms + 1000 or now_ms - int(ts) > recv:
            return err(-1021, "Timestamp for this request is outside of the recvWindow.")
        if not self._sig_ok(signed, sig):
            return err(-1022, "Signature for this request is not valid.")
        return None

    async def binance_position_risk(self, request: web.Request) -> web.Response:
        if (e := self._binance_auth(request)) is not None:
            return e
        sym = request.query.get("symbol")
        out = []
        for p in self.positions.values():
            if sym and p.instrument != sym:
                continue
            mark = self._mark(p.instrument, p.entry_price)
            s = 1.0 if p.side == "long" else -1.0
            liq = self._liq(p)
            isolated = p.margin_mode == "isolated"
            out.append(
                {
                    "symbol": p.instrument,
                    "positionAmt": self._num(s * p.size, 3),
                    "entryPrice": self._num(p.entry_price),
                    "breakEvenPrice": self._num(p.entry_price),
                    "markPrice": self._num(mark),
                    "unRealizedProfit": self._num(s * p.size * (mark - p.entry_price)),
                    "liquidationPrice": self._num(liq or 0.0),
                    "leverage": str(int(p.leverage)),
                    "maxNotionalValue": "50000",
                    "marginType": "isolated" if isolated else "cross",
                    "isolatedMargin": self._num(p.margin_usd + s * p.size * (mark - p.entry_price))
                    if isolated
                    else "0",
                    "isAutoAddMargin": "false",
                    "positionSide": "BOTH",
                    "notional": self._num(s * p.size * mark),
                    "isolatedWallet": self._num(p.margin_usd) if isolated else "0",
                    "updateTime": int(p.created_at * 1000),
                }
            )
        return web.json_response(out)

    async def binance_adl(self, request: web.Request) -> web.Response:
        if (e := self._binance_auth(request)) is not None:
            return e
        out = [
            {
                "symbol": p.instrument,
                "adlQuantile": {
                    "LONG": p.adl if p.side == "long" else 0,
                    "SHORT": p.adl if p.side == "short" else 0,
                    "BOTH": p.adl,
                },
            }
            for p in self.positions.values()
        ]
        return web.json_response(out)

    async def binance_brackets(self, request: web.Request) -> web.Response:
        if (e := self._binance_auth(request)) is not None:
            return e
        syms = (
            [request.query["symbol"]]
            if request.query.get("symbol")
            else sorted(getattr(self.market, "instruments", {}).get(self.exchange, {}))
        )
        brackets = [
            {
                "bracket": i + 1,
                "initialLeverage": int(t.max_leverage or 1),
                "notionalCap": t.cap,
                "notionalFloor": t.floor,
                "maintMarginRatio": t.mmr,
                "cum": round(t.deduction, 8),
            }
            for i, t in enumerate(sim_tiers(Exchange.BINANCE))
        ]
        return web.json_response([{"symbol": s, "notionalCoef": 1.0, "brackets": brackets} for s in syms])

    # ---- Bybit ----------------------------------------------------------------------------

    def _bybit_body(self, code: int, msg: str, result: dict[str, Any] | None = None) -> web.Response:
        return web.json_response(
            {"retCode": code, "retMsg": msg, "result": result or {}, "retExtInfo": {}, "time": int(time.time() * 1000)}
        )

    def _bybit_auth(self, request: web.Request) -> web.Response | None:
        self.requests += 1
        key = request.headers.get("X-BAPI-API-KEY")
        ts = request.headers.get("X-BAPI-TIMESTAMP", "")
        recv = request.headers.get("X-BAPI-RECV-WINDOW", "5000")
        sig = request.headers.get("X-BAPI-SIGN", "")
        if not key or key != self.creds["api_key"]:
            self._reject()
            return self._bybit_body(10003, "API key is invalid.")
        now_ms = int(time.time() * 1000)
        if not ts.isdigit() or not recv.isdigit() or not (now_ms - int(recv) <= int(ts) < now_ms + 1000):
            self._reject()
            return self._bybit_body(
                10002,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{now_ms}],recv_window[{recv}]",
            )
        origin = f"{ts}{key}{recv}{request.raw_path.partition('?')[2]}"
        if not self._sig_ok(origin, sig):
            self._reject()
            # the real message echoes the signed string (which contains the key): clients must not log it
            return self._bybit_body(10004, f"error sign! origin_string[{origin}]")
        return None

    async def bybit_positions(self, request: web.Request) -> web.Response:
        if (e := self._bybit_auth(request)) is not None:
            return e
        if request.query.get("category") != "linear":
            return self._bybit_body(10001, "Illegal category")
        sym = request.query.get("symbol")
        if not sym and not request.query.get("settleCoin"):
            return self._bybit_body(10001, "params error: symbol or settleCoin is required")
        rows = []
        for p in self.positions.values():
            if sym and p.instrument != sym:
                continue
            mark = self._mark(p.instrument, p.entry_price)
            s = 1.0 if p.side == "long" else -1.0
            value = p.size * p.entry_price
            tier = next((t for t in sim_tiers(Exchange.BYBIT) if value < t.cap), sim_tiers(Exchange.BYBIT)[-1])
            liq = self._liq(p)
            rows.append(
                {
                    "positionIdx": 0,
                    "riskId": 1,
                    "riskLimitValue": self._num(tier.cap),
                    "symbol": p.instrument,
                    "side": "Buy" if p.side == "long" else "Sell",
                    "size": self._num(p.size, 3),
                    "avgPrice": self._num(p.entry_price),
                    "positionValue": self._num(value),
                    "tradeMode": 1 if p.margin_mode == "isolated" else 0,
                    "autoAddMargin": 0,
                    "positionStatus": "Normal",
                    "leverage": self._num(p.leverage),
                    "markPrice": self._num(mark),
                    "liqPrice": self._num(liq or 0.0),
                    "bustPrice": "",
                    "positionIM": self._num(value / p.leverage),
                    "positionMM": self._num(value * tier.mmr - tier.deduction),
                    "positionBalance": self._num(p.margin_usd),
                    "takeProfit": "0",
                    "stopLoss": "0",
                    "trailingStop": "0",
                    "unrealisedPnl": self._num(s * p.size * (mark - p.entry_price)),
                    "curRealisedPnl": "0",
                    "cumRealisedPnl": "0",
                    "adlRankIndicator": p.adl,
                    "createdTime": str(int(p.created_at * 1000)),
                    "updatedTime": str(int(time.time() * 1000)),
                    "seq": 1,
                    "isReduceOnly": False,
                }
            )
        return self._bybit_body(0, "OK", {"category": "linear", "list": rows, "nextPageCursor": ""})

    async def bybit_risk_limit(self, request: web.Request) -> web.Response:
        if request.query.get("category") != "linear":
            return self._bybit_body(10001, "Illegal category")
        syms = (
            [request.query["symbol"]]
            if request.query.get("symbol")
            else sorted(getattr(self.market, "instruments", {}).get(self.exchange, {}))
        )
        rows = []
        for s in syms:
            for i, t in enumerate(sim_tiers(Exchange.BYBIT)):
                rows.append(
                    {
                        "id": i + 1,
                        "symbol": s,
                        "riskLimitValue": self._num(t.cap),
                        "maintenanceMargin": self._num(t.mmr),
                        "initialMargin": self._num(1 / (t.max_leverage or 1)),
                        "isLowestRisk": 1 if i == 0 else 0,
                        "maxLeverage": self._num(t.max_leverage or 1),
                        "mmDeduction": self._num(t.deduction) if i else "",
                    }
                )
        return self._bybit_body(0, "OK", {"category": "linear", "list": rows, "nextPageCursor": ""})

    # ---- OKX ------------------------------------------------------------------------------

    def _okx_auth(self, request: web.Request) -> web.Response | None:
        self.requests += 1

        def err(code: str, msg: str) -> web.Response:
            self._reject()
            return web.json_response({"msg": msg, "code": code}, status=401)

        h = request.headers
        key, sig, ts, pp = (
            h.get("OK-ACCESS-KEY"),
            h.get("OK-ACCESS-SIGN"),
            h.get("OK-ACCESS-TIMESTAMP"),
            h.get("OK-ACCESS-PASSPHRASE"),
        )
        if not key:
            return err("50103", "Request header OK-ACCESS-KEY can not be empty.")
        if not pp:
            return err("50104", "Request header OK-ACCESS-PASSPHRASE can not be empty.")
        if not sig:
            return err("50106", "Request header OK-ACCESS-SIGN can not be empty.")
        if not ts:
            return err("50107", "Request header OK-ACCESS-TIMESTAMP can not be empty.")
        if key != self.creds["api_key"]:
            return err("50111", "Invalid OK-ACCESS-KEY.")
        if pp != self.creds["passphrase"]:
            return err("50105", "Request header OK-ACCESS-PASSPHRASE incorrect.")
        try:
            t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        except ValueError:
            return err("50112", "Invalid OK-ACCESS-TIMESTAMP.")
        if abs(time.time() - t) > TIMESTAMP_TOLERANCE_S[Exchange.OKX]:
            return err("50102", "Timestamp request expired.")
        if not self._sig_ok(f"{ts}{request.method.upper()}{request.raw_path}", sig, b64=True):
            return err("50113", "Invalid Sign")
        return None

    async def okx_positions(self, request: web.Request) -> web.Response:
        if (e := self._okx_auth(request)) is not None:
            return e
        inst_id = request.query.get("instId")
        rows = []
        for p in self.positions.values():
            if inst_id and p.instrument != inst_id:
                continue
            ct = self._ct(p.instrument)
            mark = self._mark(p.instrument, p.entry_price)
            s = 1.0 if p.side == "long" else -1.0
            liq = self._liq(p)
            contracts = p.size / ct
            tier = next((t for t in sim_tiers(Exchange.OKX) if contracts < t.cap), sim_tiers(Exchange.OKX)[-1])
            rows.append(
                {
                    "instType": "SWAP",
                    "instId": p.instrument,
                    "mgnMode": p.margin_mode,
                    "posSide": "net",
                    "pos": self._num(s * contracts, 4),
                    "avgPx": self._num(p.entry_price),
                    "markPx": self._num(mark),
                    "liqPx": self._num(liq) if liq else "",
                    "lever": self._num(p.leverage),
                    "margin": self._num(p.margin_usd) if p.margin_mode == "isolated" else "",
                    "mmr": self._num(p.size * mark * tier.mmr),
                    "adl": str(p.adl),
                    "upl": self._num(s * p.size * (mark - p.entry_price)),
                    "notionalUsd": self._num(p.size * mark),
                    "ccy": "USDT",
                    "posId": f"{abs(hash((p.instrument, p.side))) % 10**12}",
                    "cTime": str(int(p.created_at * 1000)),
                    "uTime": str(int(time.time() * 1000)),
                }
            )
        return web.json_response({"code": "0", "msg": "", "data": rows})

    async def okx_position_tiers(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("instType") != "SWAP" or q.get("tdMode") not in ("isolated", "cross"):
            return web.json_response(
                {"code": "51000", "msg": "Parameter instType or tdMode error", "data": []}, status=400
            )
        fam = q.get("instFamily") or q.get("uly")
        if not fam:
            return web.json_response(
                {"code": "50014", "msg": "Parameter instFamily can not be empty.", "data": []}, status=400
            )
        rows = [
            {
                "instFamily": fam,
                "uly": fam,
                "tier": str(i + 1),
                "minSz": self._num(t.floor),
                "maxSz": self._num(t.cap),
                "mmr": self._num(t.mmr),
                "imr": self._num(1 / (t.max_leverage or 1)),
                "maxLever": self._num(t.max_leverage or 1),
                "optMgnFactor": "0",
                "quoteMaxLoan": "",
                "baseMaxLoan": "",
                "instId": "",
            }
            for i, t in enumerate(sim_tiers(Exchange.OKX))
        ]
        return web.json_response({"code": "0", "msg": "", "data": rows})

    # ---- Deribit --------------------------------------------------------------------------

    def _deribit_error(self, code: int, message: str, reason: str | None = None) -> web.Response:
        self._reject()
        us = int(time.time() * 1e6)
        err: dict[str, Any] = {"code": code, "message": message}
        if reason:
            err["data"] = {"reason": reason}
        return web.json_response(
            {"jsonrpc": "2.0", "error": err, "usIn": us, "usOut": us + 90, "usDiff": 90, "testnet": False}, status=400
        )

    def _deribit_auth(self, request: web.Request) -> web.Response | None:
        self.requests += 1
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("deri-hmac-sha256 "):
            return self._deribit_error(13009, "unauthorized")
        fields = dict(kv.split("=", 1) for kv in auth[len("deri-hmac-sha256 ") :].split(",") if "=" in kv)
        cid, ts, sig, nonce = fields.get("id"), fields.get("ts", ""), fields.get("sig", ""), fields.get("nonce", "")
        if cid != self.creds["api_key"]:
            return self._deribit_error(13004, "invalid_credentials")
        if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > TIMESTAMP_TOLERANCE_S[Exchange.DERIBIT] * 1000:
            return self._deribit_error(13004, "invalid_credentials", "invalid timestamp")
        body = ""
        data = f"{ts}\n{nonce}\n{request.method.upper()}\n{request.raw_path}\n{body}\n"
        if not self._sig_ok(data, sig):
            return self._deribit_error(13004, "invalid_credentials", "invalid signature")
        return None

    async def deribit_positions(self, request: web.Request) -> web.Response:
        if (e := self._deribit_auth(request)) is not None:
            return e
        currency = (request.query.get("currency") or "any").upper()
        rows = []
        for p in self.positions.values():
            inst = self._inst(p.instrument)
            base = getattr(getattr(inst, "spec", None), "base", p.instrument.split("-")[0])
            inverse = self._inverse(p.instrument)
            if currency != "ANY" and currency != (base if inverse else "USDC"):
                continue
            mark = self._mark(p.instrument, p.entry_price)
            s = 1.0 if p.side == "long" else -1.0
            size = p.size * p.entry_price if inverse else p.size  # inverse: USD face value
            liq = self._liq(p)
            rows.append(
                {
                    "instrument_name": p.instrument,
                    "kind": "future",
                    "direction": "buy" if s > 0 else "sell",
                    "size": s * round(size, 4),
                    "size_currency": s * p.size,
                    "average_price": p.entry_price,
                    "mark_price": mark,
                    "index_price": mark,
                    "estimated_liquidation_price": liq,
                    "maintenance_margin": 0.0,
                    "initial_margin": 0.0,
                    "leverage": int(p.leverage),
                    "floating_profit_loss": 0.0,
                    "realized_funding": 0.0,
                    "total_profit_loss": 0.0,
                    "delta": s * p.size,
                    "settlement_price": mark,
                }
            )
        us = int(time.time() * 1e6)
        return web.json_response(
            {"jsonrpc": "2.0", "result": rows, "usIn": us, "usOut": us + 90, "usDiff": 90, "testnet": False}
        )


PRIVATE_API: web.AppKey[PrivateApi] = web.AppKey("private_api", PrivateApi)


def register(app: web.Application, exchange: Exchange, market: Any) -> None:
    """Add the exchange's private account routes and the position control API to its simulator app."""
    api = PrivateApi(exchange, market)
    app[PRIVATE_API] = api
    app.router.add_post("/_sim/positions", api.set_positions)
    app.router.add_post("/_sim/positions/close", api.close_positions)
    app.router.add_get("/_sim/positions", api.list_positions)
    app.router.add_post("/_sim/credentials", api.set_credentials)
    if exchange is Exchange.BINANCE:
        app.router.add_get("/fapi/v2/positionRisk", api.binance_position_risk)
        app.router.add_get("/fapi/v3/positionRisk", api.binance_position_risk)
        app.router.add_get("/fapi/v1/adlQuantile", api.binance_adl)
        app.router.add_get("/fapi/v1/leverageBracket", api.binance_brackets)
    elif exchange is Exchange.BYBIT:
        app.router.add_get("/v5/position/list", api.bybit_positions)
        app.router.add_get("/v5/market/risk-limit", api.bybit_risk_limit)
    elif exchange is Exchange.OKX:
        app.router.add_get("/api/v5/account/positions", api.okx_positions)
        app.router.add_get("/api/v5/public/position-tiers", api.okx_position_tiers)
    elif exchange is Exchange.DERIBIT:
        app.router.add_get("/api/v2/private/get_positions", api.deribit_positions)
