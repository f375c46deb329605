"""Binance USD-M futures protocol: /market WebSocket streams and /fapi REST (reference section 2)."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from exporter.model import Exchange, Side
from exporter.sim import futures_wire
from exporter.sim.market import Instrument, SimLiquidation
from exporter.sim.server import Conn, ExchangeServer, Handler, dumps, fmt, ms, query_int

D8 = 8


def mark_price_update(inst: Instrument, now: float) -> dict[str, Any]:
    """markPriceUpdate payload; `ap` and `st` are the 2026 additions (reference 2.2)."""
    s = inst.spec
    return {
        "e": "markPriceUpdate",
        "E": ms(now),
        "s": s.symbol,
        "p": fmt(inst.mark, D8),
        "ap": fmt(inst.mark * (1 - inst.noise * 0.1), D8),
        "P": fmt(inst.index * (1 + inst.index_dev), D8),
        "i": fmt(inst.index, D8),
        "r": fmt(inst.funding_rate, D8),
        "T": ms(inst.next_funding_time),
        "st": 1,
    }


def force_order(
    liq: SimLiquidation, qty_decimals: int, price_decimals: int, event_time: float, shift: float = 0.0
) -> dict[str, Any]:
    """forceOrder payload. `S` is the side of the liquidation ORDER: SELL closes a long."""
    sell = liq.side is Side.LONG
    # the liquidation order is an IOC limit order priced through the book; it fills at `ap`
    order_px = liq.price * (0.995 if sell else 1.005)
    q = fmt(liq.qty_base, qty_decimals)
    return {
        "e": "forceOrder",
        "E": ms(event_time),  # when the 1 s snapshot was pushed; T is the trade time
        "o": {
            "s": liq.symbol,
            "S": "SELL" if sell else "BUY",
            "o": "LIMIT",
            "f": "IOC",
            "q": q,
            "p": fmt(order_px, price_decimals),
            "ap": fmt(liq.price, price_decimals),
            "X": "FILLED",
            "l": q,
            "z": q,
            "T": ms(liq.time + shift),  # shift: the exchange clock's skew
        },
    }


class BinanceServer(ExchangeServer):
    exchange = Exchange.BINANCE
    ws_paths = ("/market/stream", "/market/ws")
    ws_prefixes = ("/market/ws/",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_1s = -1
        self._last_3s = -1
        self._window: dict[str, SimLiquidation] = {}  # latest liquidation per symbol in this second
        self._canon: dict[str, str] = {}
        for sym in self.market.instruments[self.exchange]:
            low = sym.lower()
            for c in (f"{low}@markPrice", f"{low}@markPrice@1s", f"{low}@forceOrder"):
                self._canon[c.lower()] = c
        for c in ("!markPrice@arr", "!markPrice@arr@1s", "!forceOrder@arr"):
            self._canon[c.lower()] = c

    def ws_heartbeat(self) -> float | None:
        return self.options.ping_interval_s

    def max_lifetime(self) -> float | None:
        return self.options.max_lifetime_s

    def canonical(self, stream: str) -> str:
        return self._canon.get(stream.lower(), stream)

    # ------------------------------------------------------------------------------------------
    # websocket

    async def on_open(self, conn: Conn, request: web.Request) -> None:
        path = request.path
        if path.startswith("/market/stream"):
            conn.extra["wrap"] = True
            streams = request.query.get("streams", "")
        else:
            conn.extra["wrap"] = False
            streams = path[len("/market/ws") :].lstrip("/")
        for s in streams.split("/"):
            if s:
                conn.topics.add(self.canonical(s))

    async def on_text(self, conn: Conn, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.send(conn, dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}), data=False)
            return
        if not isinstance(req, dict):
            self.send(conn, dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}), data=False)
            return
        method, rid, params = req.get("method"), req.get("id"), req.get("params") or []
        if method == "SUBSCRIBE" and isinstance(params, list):
            conn.topics.update(self.canonical(str(p)) for p in params)
            self.send(conn, dumps({"result": None, "id": rid}), data=False)
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            conn.topics.difference_update(self.canonical(str(p)) for p in params)
            self.send(conn, dumps({"result": None, "id": rid}), data=False)
        elif method == "LIST_SUBSCRIPTIONS":
            self.send(conn, dumps({"result": sorted(conn.topics), "id": rid}), data=False)
        else:
            self.send(conn, dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": rid}), data=False)

    def _push(self, stream: str, payload: bytes) -> None:
        raw: str | None = None
        wrapped: str | None = None
        for c in self.conns:
            if stream not in c.topics:
                continue
            if c.extra.get("wrap"):
                if wrapped is None:
                    wrapped = '{"stream":"' + stream + '","data":' + payload.decode() + "}"
                self.send(c, wrapped)
            else:
                if raw is None:
                    raw = payload.decode()
                self.send(c, raw)

    def on_tick(self, now: float) -> None:
        for liq in self.market.drain_liquidations(self.exchange):
            self._window[liq.symbol] = liq  # only the latest per symbol per second is pushed
        sec = math.floor(now)
        if sec == self._last_1s:
            return
        self._last_1s = sec
        insts = self.market.instruments[self.exchange]
        if self.publishing():
            every3 = sec // 3 != self._last_3s
            self._last_3s = sec // 3
            arr: list[bytes] = []
            for sym, inst in insts.items():
                p = orjson.dumps(mark_price_update(inst, now), option=orjson.OPT_SERIALIZE_NUMPY)  # E: push time
                arr.append(p)
                low = sym.lower()
                self._push(f"{low}@markPrice@1s", p)
                if every3:
                    self._push(f"{low}@markPrice", p)
            joined = b"[" + b",".join(arr) + b"]"
            self._push("!markPrice@arr@1s", joined)
            if every3:
                self._push("!markPrice@arr", joined)
            liqs = list(self._window.values())
            for liq in liqs:
                inst = insts[liq.symbol]
                p = orjson.dumps(
                    force_order(liq, inst.spec.qty_decimals, inst.spec.price_decimals, sec + 0.003, self.stamp_shift_s),
                    option=orjson.OPT_SERIALIZE_NUMPY,
                )
                self._push(f"{liq.symbol.lower()}@forceOrder", p)
                self._push("!forceOrder@arr", p)
                self.market.record_sent(liq)
        self._window.clear()

    # ------------------------------------------------------------------------------------------
    # REST

    def rest_routes(self) -> list[tuple[str, Handler]]:
        return [
            ("/fapi/v1/exchangeInfo", self.exchange_info),
            ("/fapi/v1/fundingRate", self.funding_rate),
            ("/fapi/v1/fundingInfo", self.funding_info),
            ("/fapi/v1/premiumIndex", self.premium_index),
            ("/fapi/v1/openInterest", self.open_interest),
            ("/futures/data/globalLongShortAccountRatio", self.long_short),
            ("/fapi/v1/insuranceBalance", self.insurance),
            ("/fapi/v1/time", self.server_time),
            ("/fapi/v1/markPriceKlines", partial(self.klines, "mark", "symbol")),
            ("/fapi/v1/indexPriceKlines", partial(self.klines, "index", "pair")),
            ("/fapi/v1/premiumIndexKlines", partial(self.klines, "premium", "symbol")),
            ("/futures/data/openInterestHist", self.open_interest_hist),
        ]

    def _error(self, code: int, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _inst(self, request: web.Request, required: bool = True) -> Instrument | web.Response | None:
        sym = request.query.get("symbol")
        if not sym:
            if required:
                return self._error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        inst = self.market.get(self.exchange, sym.upper())
        if inst is None:
            return self._error(-1121, "Invalid symbol.")
        return inst

    def _headers(self) -> dict[str, str]:
        return {"X-MBX-USED-WEIGHT-1M": "1"}

    async def server_time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": ms(self.server_now())})

    async def exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for sym, inst in self.market.instruments[self.exchange].items():
            s = inst.spec
            tick = 10**-s.price_decimals
            step = 10**-s.qty_decimals
            symbols.append(
                {
                    "symbol": sym,
                    "pair": sym,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": s.base,
                    "quoteAsset": s.quote,
                    "marginAsset": s.quote,
                    "pricePrecision": s.price_decimals,
                    "quantityPrecision": s.qty_decimals,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "settlePlan": 0,
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "filters": [
                        {
                            "minPrice": fmt(tick, s.price_decimals),
                            "maxPrice": "4529764",
                            "filterType": "PRICE_FILTER",
                            "tickSize": fmt(tick, s.price_decimals),
                        },
                        {
                            "stepSize": fmt(step, s.qty_decimals),
                            "filterType": "LOT_SIZE",
                            "maxQty": "1000",
                            "minQty": fmt(step, s.qty_decimals),
                        },
                        {
                            "stepSize": fmt(step, s.qty_decimals),
                            "filterType": "MARKET_LOT_SIZE",
                            "maxQty": "120",
                            "minQty": fmt(step, s.qty_decimals),
                        },
                        {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                        {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                        {"notional": "100", "filterType": "MIN_NOTIONAL"},
                        {
                            "multiplierDown": "0.9500",
                            "multiplierUp": "1.0500",
                            "multiplierDecimal": "4",
                            "filterType": "PERCENT_PRICE",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                }
            )
        body = {
            "timezone": "UTC",
            "serverTime": ms(self.stamp_now()),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols + futures_wire.binance_symbols(self.market),
        }
        return web.json_response(body, dumps=dumps, headers=self._headers())

    async def funding_rate(self, request: web.Request) -> web.Response:
        found = self._inst(request, required=False)
        if isinstance(found, web.Response):
            return found
        limit = query_int(request, "limit") or 100
        limit = max(1, min(1000, limit))
        start, end = query_int(request, "startTime"), query_int(request, "endTime")
        insts = [found] if found is not None else list(self.market.instruments[self.exchange].values())
        rows: list[tuple[int, str, dict[str, Any]]] = []
        for inst in insts:
            for h in inst.history:
                if (start is None or h.time_ms >= start) and (end is None or h.time_ms <= end):
                    rows.append(
                        (
                            h.time_ms,
                            inst.spec.symbol,
                            {
                                "symbol": inst.spec.symbol,
                                "fundingRate": fmt(h.rate, 8),
                                "fundingTime": h.time_ms,
                                "markPrice": fmt(h.mark, 8),
                                "rateType": "Regular",
                            },
                        )
                    )
        rows.sort(key=lambda r: (r[0], r[1]))
        # ascending; with a start the first `limit` from it, otherwise the latest `limit`
        picked = rows[:limit] if start is not None else rows[-limit:]
        return web.json_response([r[2] for r in picked], dumps=dumps, headers=self._headers())

    async def funding_info(self, request: web.Request) -> web.Response:
        # only symbols with adjusted cap/floor/interval are listed, as on the real endpoint
        out = []
        for sym, inst in self.market.instruments[self.exchange].items():
            s = inst.spec
            if s.interval_s != 8 * 3600 or sym not in ("BTCUSDT", "ETHUSDT"):
                out.append(
                    {
                        "symbol": sym,
                        "adjustedFundingRateCap": fmt(s.cap, 8),
                        "adjustedFundingRateFloor": fmt(s.floor, 8),
                        "fundingIntervalHours": int(s.interval_s // 3600),
                        "disclaimer": False,
                    }
                )
        return web.json_response(out, dumps=dumps, headers=self._headers())

    def _premium(self, inst: Instrument) -> dict[str, Any]:
        return {
            "symbol": inst.spec.symbol,
            "markPrice": fmt(inst.mark, 8),
            "indexPrice": fmt(inst.index, 8),
            "estimatedSettlePrice": fmt(inst.index * (1 + inst.index_dev), 8),
            "lastFundingRate": fmt(inst.funding_rate, 8),
            "interestRate": fmt(0.0001 * inst.spec.interval_s / 28800, 8),
            "nextFundingTime": ms(inst.next_funding_time),
            "time": ms(self.stamp_now()),
        }

    async def premium_index(self, request: web.Request) -> web.Response:
        found = self._inst(request, required=False)
        if isinstance(found, web.Response):
            return found
        if found is None:
            body: Any = [self._premium(i) for i in self.market.instruments[self.exchange].values()]
        else:
            body = self._premium(found)
        return web.json_response(body, dumps=dumps, headers=self._headers())

    async def open_interest(self, request: web.Request) -> web.Response:
        found = self._inst(request)
        if isinstance(found, web.Response):
            return found
        assert found is not None
        body = {
            "symbol": found.spec.symbol,
            "openInterest": fmt(found.oi_base, found.spec.qty_decimals),
            "time": ms(self.stamp_now()),
        }
        return web.json_response(body, dumps=dumps, headers=self._headers())

    async def long_short(self, request: web.Request) -> web.Response:
        found = self._inst(request)
        if isinstance(found, web.Response):
            return found
        assert found is not None
        periods = {
            "5m": 300,
            "15m": 900,
            "30m": 1800,
            "1h": 3600,
            "2h": 7200,
            "4h": 14400,
            "6h": 21600,
            "12h": 43200,
            "1d": 86400,
        }
        period = periods.get(request.query.get("period", ""))
        if period is None:
            return self._error(-1130, "Invalid period.")
        limit = max(1, min(500, query_int(request, "limit") or 30))
        last = math.floor(self.market.now / period) * period
        out = []
        for k in range(limit - 1, -1, -1):
            t = last - k * period
            # past points wobble deterministically around today's ratio
            ratio = found.ls_ratio * (1 + 0.03 * math.sin(t / 7919.0 + len(found.spec.symbol)))
            long_acc = ratio / (1 + ratio)
            out.append(
                {
                    "symbol": found.spec.symbol,
                    "longShortRatio": fmt(ratio, 4),
                    "longAccount": fmt(long_acc, 4),
                    "shortAccount": fmt(1 - long_acc, 4),
                    "timestamp": int(t * 1000),
                }
            )
        return web.json_response(out, dumps=dumps, headers=self._headers())

    async def insurance(self, request: web.Request) -> web.Response:
        syms = sorted(self.market.instruments[self.exchange])
        bal = self.market.insurance[self.exchange]
        t = int(math.floor(self.market.now / 60) * 60 * 1000)
        group = {
            "symbols": syms,
            "assets": [
                {"asset": "USDC", "marginBalance": fmt(bal * 0.3, 8), "updateTime": t},
                {"asset": "USDT", "marginBalance": fmt(bal * 0.7, 8), "updateTime": t},
            ],
        }
        if request.query.get("symbol"):
            found = self._inst(request)
            if isinstance(found, web.Response):
                return found
            return web.json_response(group, dumps=dumps, headers=self._headers())
        return web.json_response([group], dumps=dumps, headers=self._headers())

    # ---- history (exporter/sim/tape.py) ------------------------------------------------------

    async def klines(self, kind: str, key: str, request: web.Request) -> web.Response:
        """markPriceKlines / indexPriceKlines (``pair``) / premiumIndexKlines: ascending; with a
        startTime the first ``limit`` from it, otherwise the latest ``limit`` up to endTime."""
        name = request.query.get(key)
        inst = self.market.get(self.exchange, (name or "").upper())
        if inst is None:
            return (
                self._error(-1121, "Invalid symbol.")
                if name
                else self._error(-1102, f"Mandatory parameter '{key}' was not sent.")
            )
        interval = KLINE_INTERVALS.get(request.query.get("interval", ""))
        if interval is None:
            return self._error(-1120, "Invalid interval.")
        limit = max(1, min(1500, query_int(request, "limit") or 500))
        start, end = query_int(request, "startTime"), query_int(request, "endTime")
        now = self.market.now
        t_to = min(now, end / 1000) if end is not None else now
        t_from = start / 1000 if start is not None else t_to - interval * limit
        t_to = min(t_to, t_from + interval * limit)  # no more is served: no more is generated
        rows = self.market.tape.candles(inst, kind, interval, t_from, t_to)
        rows = rows[:limit] if start is not None else rows[-limit:]
        dec = 8
        out = [
            [int(t * 1000), fmt(o, dec), fmt(h, dec), fmt(lo, dec), fmt(c, dec), "0", int((t + interval) * 1000) - 1,
             "0", int(interval // 60), "0", "0", "0"]
            for t, o, h, lo, c in rows
        ]  # fmt: skip
        return web.json_response(out, dumps=dumps, headers=self._headers())

    async def open_interest_hist(self, request: web.Request) -> web.Response:
        """``/futures/data/openInterestHist``: ascending; the latest 30 days only."""
        found = self._inst(request)
        if isinstance(found, web.Response):
            return found
        assert found is not None
        period = OI_PERIODS.get(request.query.get("period", ""))
        if period is None:
            return self._error(-1130, "Invalid period.")
        limit = max(1, min(500, query_int(request, "limit") or 30))
        start, end = query_int(request, "startTime"), query_int(request, "endTime")
        now = self.market.now
        t_to = min(now, end / 1000) if end is not None else now
        t_from = max(start / 1000 if start is not None else t_to - period * limit, now - 30 * 86400)
        pts = self.market.tape.open_interest(found, period, t_from, t_to)
        pts = pts[:limit] if start is not None else pts[-limit:]
        out = [
            {
                "symbol": found.spec.symbol,
                "sumOpenInterest": fmt(usd / mark, 8),
                "sumOpenInterestValue": fmt(usd, 8),
                "CMCCirculatingSupply": "0",
                "timestamp": int(t * 1000),
            }
            for t, usd, mark in pts
        ]
        return web.json_response(out, dumps=dumps, headers=self._headers())


KLINE_INTERVALS = {
    "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
    "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
}  # fmt: skip
OI_PERIODS = {"5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400, "6h": 21600,
              "12h": 43200, "1d": 86400}  # fmt: skip
