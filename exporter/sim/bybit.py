"""Bybit v5 linear protocol: /v5/public/linear WebSocket and /v5/market REST (reference section 3)."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from exporter.model import Exchange, Side
from exporter.sim import futures_wire
from exporter.sim.market import Instrument, SimLiquidation
from exporter.sim.server import Conn, ExchangeServer, Handler, dumps, fmt, fmt_g, ms, query_int

KLINE_INTERVALS = {"1": 60, "3": 180, "5": 300, "15": 900, "30": 1800, "60": 3600, "120": 7200, "240": 14400,
                   "360": 21600, "720": 43200, "D": 86400}  # fmt: skip
PERIODS = {"5min": 300, "15min": 900, "30min": 1800, "1h": 3600, "4h": 14400, "1d": 86400}


class _Stats:
    """24 h statistics the ticker carries (open, high, low, volume), kept loosely."""

    def __init__(self, price: float) -> None:
        self.open = price * 0.99
        self.high = max(price, self.open) * 1.004
        self.low = min(price, self.open) * 0.996
        self.prev1h = price * 0.998
        self.volume = 0.0
        self.turnover = 0.0
        self.last = price

    def update(self, price: float, qty: float) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.volume += qty
        self.turnover += qty * price
        self.last = price


class BybitServer(ExchangeServer):
    exchange = Exchange.BYBIT
    ws_paths = ("/v5/public/linear", "/v5/public/inverse")  # inverse: the inverse dated futures only

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: dict[str, dict[str, str]] = {}  # last published ticker state per symbol
        self._cs = 10_000_000_000
        self._last_liq_slot = -1
        self._liqs: dict[str, list[SimLiquidation]] = {}
        self._stats = {sym: _Stats(i.mark) for sym, i in self.market.instruments[self.exchange].items()}
        for sym, inst in self.market.instruments[self.exchange].items():
            self._last[sym] = self.ticker(inst)

    # ------------------------------------------------------------------------------------------
    # messages

    def ticker(self, inst: Instrument) -> dict[str, str]:
        s = inst.spec
        st = self._stats.get(s.symbol)
        pd = s.price_decimals
        last = st.last if st else inst.mark
        op = st.open if st else inst.mark
        oi2 = inst.oi_base * 2  # Bybit linear openInterest is the sum of both sides (reference 3.2)
        spread = 10**-pd
        return {
            "symbol": s.symbol,
            "tickDirection": "PlusTick" if last >= inst.mark else "MinusTick",
            "price24hPcnt": fmt((last - op) / op, 6),
            "lastPrice": fmt(last, pd),
            "prevPrice24h": fmt(op, pd),
            "highPrice24h": fmt(st.high if st else last, pd),
            "lowPrice24h": fmt(st.low if st else last, pd),
            "prevPrice1h": fmt(st.prev1h if st else last, pd),
            "markPrice": fmt(inst.mark, pd),
            "indexPrice": fmt(inst.index, pd),
            "openInterest": fmt(oi2, s.qty_decimals),
            "openInterestValue": fmt(oi2 * inst.mark, 2),
            "singleOpenInterest": fmt(inst.oi_base, s.qty_decimals),
            "singleOpenInterestValue": fmt(inst.oi_base * inst.mark, 2),
            "turnover24h": fmt(st.turnover if st else 0.0, 4),
            "volume24h": fmt(st.volume if st else 0.0, 4),
            "fundingIntervalHour": str(int(s.interval_s // 3600)),
            "fundingCap": fmt_g(s.cap),
            "nextFundingTime": str(ms(inst.next_funding_time)),
            "fundingRate": fmt_g(round(inst.funding_rate, 6)),
            "bid1Price": fmt(last - spread, pd),
            "bid1Size": fmt(1.0 + (inst.noise * 1e5) % 20, s.qty_decimals),
            "ask1Price": fmt(last, pd),
            "ask1Size": fmt(2.0 + (inst.noise * 3e5) % 15, s.qty_decimals),
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
        }

    def _frame(self, sym: str, kind: str, data: dict[str, str], now: float) -> str:
        self._cs += 1
        return dumps({"topic": f"tickers.{sym}", "type": kind, "data": data, "cs": self._cs, "ts": ms(now)})

    # ------------------------------------------------------------------------------------------
    # websocket

    def _ack(self, conn: Conn, op: str, req_id: Any, ok: bool = True, msg: str = "") -> None:
        body = {
            "success": ok,
            "ret_msg": msg,
            "conn_id": conn.conn_id,
            "req_id": "" if req_id is None else req_id,
            "op": op,
        }
        self.send(conn, dumps(body), data=False)

    def _valid(self, topic: str, conn: Conn) -> bool:
        """A topic of this connection's category: ``/v5/public/inverse`` serves inverse contracts only
        (here the inverse dated futures), ``/v5/public/linear`` the USDT perpetuals and futures."""
        head, _, sym = topic.partition(".")
        inverse = conn.path.startswith("/v5/public/inverse")
        future = futures_wire.futures_of(self.market, self.exchange).get(sym)
        if future is not None:
            return head == "tickers" and future.inverse is inverse  # a dated future: tickers only
        return not inverse and head in ("tickers", "allLiquidation") and sym in self.market.instruments[self.exchange]

    async def on_text(self, conn: Conn, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._ack(conn, "", None, ok=False, msg=f"error:request not json, request:{text[:100]}")
            return
        if not isinstance(req, dict):
            self._ack(conn, "", None, ok=False, msg="error:invalid request")
            return
        op, req_id, args = req.get("op"), req.get("req_id"), req.get("args") or []
        if op == "ping":
            self._ack(conn, "ping", req_id, msg="pong")
        elif op == "subscribe" and isinstance(args, list):
            bad = [a for a in args if not isinstance(a, str) or not self._valid(a, conn)]
            if bad:
                self._ack(conn, "subscribe", req_id, ok=False, msg=f"Invalid symbol :[{','.join(map(str, bad))}]")
            good = [a for a in args if isinstance(a, str) and self._valid(a, conn)]
            perps = self.market.instruments[self.exchange]
            for a in good:
                if a.startswith("tickers.") and a[8:] in perps and not self.subscribers(a):
                    # nobody follows this symbol: its delta baseline restarts from a fresh snapshot
                    sym = a.split(".", 1)[1]
                    self._last[sym] = self.ticker(self.market.instruments[self.exchange][sym])
            conn.topics.update(good)
            if not bad:
                self._ack(conn, "subscribe", req_id)
            for a in good:
                if a.startswith("tickers.") and a[8:] in perps:
                    sym = a.split(".", 1)[1]
                    self.send(conn, self._frame(sym, "snapshot", self._last[sym], self.stamp_now()))
        elif op == "unsubscribe" and isinstance(args, list):
            conn.topics.difference_update(str(a) for a in args)
            self._ack(conn, "unsubscribe", req_id)
        else:
            self._ack(conn, str(op or ""), req_id, ok=False, msg=f"error:handler not found,op:{op}")

    def on_tick(self, now: float) -> None:
        for liq in self.market.drain_liquidations(self.exchange):
            self._liqs.setdefault(liq.symbol, []).append(liq)
        if not self.publishing():
            # nothing is pushed; the next delta carries every change since the last push
            self._liqs.clear()
            return
        for sym, inst in self.market.instruments[self.exchange].items():
            st = self._stats[sym]
            st.update(inst.mark * (1 + 0.00005 * math.tanh(inst.noise * 1e4)), abs(inst.noise) * 1e3 + 0.01)
            topic = f"tickers.{sym}"
            if not self.subscribers(topic):
                continue  # deltas are only computed for followed symbols (see the subscribe handler)
            new = self.ticker(inst)
            old = self._last[sym]
            delta = {k: v for k, v in new.items() if old.get(k) != v}
            if not delta:
                continue
            self._last[sym] = new
            self.broadcast(topic, self._frame(sym, "delta", {"symbol": sym, **delta}, now))
        slot = math.floor(now * 2)  # allLiquidation batches every 500 ms
        if slot != self._last_liq_slot:
            self._last_liq_slot = slot
            for sym, liqs in self._liqs.items():
                data = [
                    {
                        "T": ms(x.time + self.stamp_shift_s),
                        "s": sym,
                        "S": "Buy" if x.side is Side.LONG else "Sell",
                        "v": fmt(x.qty_base, self.market.instruments[self.exchange][sym].spec.qty_decimals),
                        "p": fmt(x.bankruptcy_price, self.market.instruments[self.exchange][sym].spec.price_decimals),
                    }
                    for x in liqs
                ]
                self.broadcast(
                    f"allLiquidation.{sym}",
                    dumps({"topic": f"allLiquidation.{sym}", "type": "snapshot", "ts": ms(now), "data": data}),
                )
                for x in liqs:
                    self.market.record_sent(x)
            self._liqs.clear()

    # ------------------------------------------------------------------------------------------
    # REST

    def rest_routes(self) -> list[tuple[str, Handler]]:
        return [
            ("/v5/market/instruments-info", self.instruments_info),
            ("/v5/market/tickers", self.tickers),
            ("/v5/market/funding/history", self.funding_history),
            ("/v5/market/open-interest", self.open_interest),
            ("/v5/market/account-ratio", self.account_ratio),
            ("/v5/market/insurance", self.insurance),
            ("/v5/market/time", self.server_time),
            ("/v5/market/mark-price-kline", partial(self.kline, "mark")),
            ("/v5/market/index-price-kline", partial(self.kline, "index")),
            ("/v5/market/premium-index-price-kline", partial(self.kline, "premium")),
        ]

    def _ok(self, result: dict[str, Any]) -> web.Response:
        return web.json_response(
            {"retCode": 0, "retMsg": "OK", "result": result, "time": ms(self.stamp_now())}, dumps=dumps
        )

    def _err(self, code: int, msg: str) -> web.Response:
        return web.json_response(
            {"retCode": code, "retMsg": msg, "result": {}, "time": ms(self.stamp_now())}, dumps=dumps
        )

    def _category(self, request: web.Request) -> web.Response | None:
        if request.query.get("category") != "linear":
            return self._err(10001, "Illegal category")
        return None

    def _symbol(self, request: web.Request, required: bool) -> Instrument | web.Response | None:
        sym = request.query.get("symbol")
        if not sym:
            return self._err(10001, "params error: symbol is required") if required else None
        inst = self.market.get(self.exchange, sym.upper())
        return inst if inst is not None else self._err(10001, "params error: symbol invalid")

    async def server_time(self, request: web.Request) -> web.Response:
        t = self.server_now()
        return self._ok({"timeSecond": str(int(t)), "timeNano": str(int(t * 1e9))})

    async def instruments_info(self, request: web.Request) -> web.Response:
        if request.query.get("category") == "inverse":  # the inverse dated futures (no inverse perpetual)
            rows = futures_wire.bybit_rows(self.market, inverse=True)
            if sym := request.query.get("symbol"):
                rows = [r for r in rows if r["symbol"] == sym.upper()]
            return self._ok({"category": "inverse", "list": rows, "nextPageCursor": ""})
        if (e := self._category(request)) is not None:
            return e
        found = self._symbol(request, required=False)
        if isinstance(found, web.Response):
            return found
        insts = [found] if found else list(self.market.instruments[self.exchange].values())
        out = []
        for inst in insts:
            s = inst.spec
            tick = fmt(10**-s.price_decimals, s.price_decimals)
            step = fmt(10**-s.qty_decimals, s.qty_decimals)
            out.append(
                {
                    "symbol": s.symbol,
                    "contractType": "LinearPerpetual",
                    "status": "Trading",
                    "baseCoin": s.base,
                    "quoteCoin": s.quote,
                    "launchTime": "1585526400000",
                    "deliveryTime": "0",
                    "deliveryFeeRate": "",
                    "priceScale": str(s.price_decimals),
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": tick, "maxPrice": "1999999.80", "tickSize": tick},
                    "lotSizeFilter": {
                        "maxOrderQty": "1190.000",
                        "minOrderQty": step,
                        "qtyStep": step,
                        "postOnlyMaxOrderQty": "1190.000",
                        "maxMktOrderQty": "500.000",
                        "minNotionalValue": "5",
                    },
                    "unifiedMarginTrade": True,
                    "fundingInterval": int(s.interval_s // 60),
                    "settleCoin": s.quote,
                    "copyTrading": "both",
                    "upperFundingRate": fmt_g(s.cap),
                    "lowerFundingRate": fmt_g(s.floor),
                    "isPreListing": False,
                    "preListingInfo": None,
                }
            )
        if not found:
            out.extend(futures_wire.bybit_rows(self.market))
        return self._ok({"category": "linear", "list": out, "nextPageCursor": ""})

    async def tickers(self, request: web.Request) -> web.Response:
        if request.query.get("category") == "inverse":
            now = self.stamp_now()
            sym = (request.query.get("symbol") or "").upper()
            futs = [f for f in futures_wire.futures_of(self.market, self.exchange).values() if f.inverse]
            rows = [futures_wire.bybit_rest_ticker(f, now) for f in futs if not sym or f.symbol == sym]
            return self._ok({"category": "inverse", "list": rows})
        if (e := self._category(request)) is not None:
            return e
        found = self._symbol(request, required=False)
        if isinstance(found, web.Response):
            return found
        insts = [found] if found else list(self.market.instruments[self.exchange].values())
        out = []
        for inst in insts:
            t = self.ticker(inst)
            for k in ("tickDirection", "preOpenPrice", "preQty", "curPreListingPhase"):
                t.pop(k, None)
            t.update(
                {"predictedDeliveryPrice": "", "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0", "basis": ""}
            )
            out.append(t)
        return self._ok({"category": "linear", "list": out})

    async def funding_history(self, request: web.Request) -> web.Response:
        if (e := self._category(request)) is not None:
            return e
        found = self._symbol(request, required=True)
        if isinstance(found, web.Response):
            return found
        assert found is not None
        start, end = query_int(request, "startTime"), query_int(request, "endTime")
        if start is not None and end is None:
            return self._err(10001, "params error: endTime is required when startTime is passed")
        limit = max(1, min(200, query_int(request, "limit") or 200))
        rows = [h for h in found.history if (start is None or h.time_ms >= start) and (end is None or h.time_ms <= end)]
        rows = rows[-limit:][::-1]  # newest first, up to endTime (or now)
        out = [
            {"symbol": found.spec.symbol, "fundingRate": fmt_g(h.rate), "fundingRateTimestamp": str(h.time_ms)}
            for h in rows
        ]
        return self._ok({"category": "linear", "list": out})

    def _period_query(
        self, request: web.Request, param: str, max_limit: int
    ) -> web.Response | tuple[Instrument, int, int]:
        """Shared checks of the period-series endpoints: (instrument, period seconds, limit) or an error."""
        if (e := self._category(request)) is not None:
            return e
        found = self._symbol(request, required=True)
        if isinstance(found, web.Response):
            return found
        assert found is not None
        period = PERIODS.get(request.query.get(param, ""))
        if period is None:
            return self._err(10001, f"params error: {param} invalid")
        return found, period, max(1, min(max_limit, query_int(request, "limit") or 50))

    async def open_interest(self, request: web.Request) -> web.Response:
        """Open interest at period steps (exporter/sim/tape.py), newest first, paged by cursor.

        ``openInterest`` is the sum of both sides (since 2023-11), ``singleOpenInterest`` one side.
        """
        q = self._period_query(request, "intervalTime", 200)
        if isinstance(q, web.Response):
            return q
        found, period, limit = q
        now = self.market.now
        start, end = query_int(request, "startTime"), query_int(request, "endTime")
        cursor = request.query.get("cursor") or ""
        t_to = min(now, end / 1000) if end is not None else now
        if cursor:
            try:
                t_to = min(t_to, int(cursor) / 1000 - 0.001)  # this simulator's cursor: below that time
            except ValueError:
                return self._err(10001, "params error: cursor invalid")
        t_from = start / 1000 if start is not None else t_to - period * (limit + 1)
        pts = self.market.tape.open_interest(found, period, t_from, t_to)[::-1]
        more = len(pts) > limit
        pts = pts[:limit]
        out = [
            {
                "openInterest": fmt(2 * usd / mark, found.spec.qty_decimals + 3),
                "singleOpenInterest": fmt(usd / mark, found.spec.qty_decimals + 3),
                "timestamp": str(int(t * 1000)),
            }
            for t, usd, mark in pts
        ]
        nxt = str(int(pts[-1][0] * 1000)) if more and len(pts) else ""
        return self._ok({"symbol": found.spec.symbol, "category": "linear", "list": out, "nextPageCursor": nxt})

    async def kline(self, kind: str, request: web.Request) -> web.Response:
        """mark-/index-/premium-index-price-kline: the newest ``limit`` in [start, end], newest first."""
        if (e := self._category(request)) is not None:
            return e
        found = self._symbol(request, required=True)
        if isinstance(found, web.Response):
            return found
        assert found is not None
        interval = KLINE_INTERVALS.get(request.query.get("interval", ""))
        if interval is None:
            return self._err(10001, "params error: interval invalid")
        limit = max(1, min(1000 if kind == "premium" else 200, query_int(request, "limit") or 200))
        start, end = query_int(request, "start"), query_int(request, "end")
        now = self.market.now
        t_to = min(now, end / 1000) if end is not None else now
        # the newest `limit` of [start, end]: only that much is generated
        t_from = max(start / 1000 if start is not None else 0.0, t_to - interval * limit)
        rows = self.market.tape.candles(found, kind, interval, t_from, t_to)[-limit:][::-1]
        dec = 8 if kind == "premium" else found.spec.price_decimals + 2
        out = [[str(int(t * 1000)), fmt(o, dec), fmt(h, dec), fmt(lo, dec), fmt(c, dec)] for t, o, h, lo, c in rows]
        return self._ok({"symbol": found.spec.symbol, "category": "linear", "list": out})

    async def account_ratio(self, request: web.Request) -> web.Response:
        q = self._period_query(request, "period", 500)
        if isinstance(q, web.Response):
            return q
        found, period, limit = q
        last = math.floor(self.market.now / period) * period
        out = []
        for k in range(limit):
            t = last - k * period
            ratio = found.ls_ratio * (1.0 if k == 0 else 1 + 0.03 * math.sin(t / 7919.0))
            buy = ratio / (1 + ratio)
            out.append(
                {
                    "symbol": found.spec.symbol,
                    "buyRatio": fmt(buy, 4),
                    "sellRatio": fmt(1 - buy, 4),
                    "timestamp": str(int(t * 1000)),
                }
            )
        return self._ok({"list": out, "nextPageCursor": ""})

    async def insurance(self, request: web.Request) -> web.Response:
        coin = request.query.get("coin", "USDT").upper()
        bal = self.market.insurance[self.exchange]
        syms = ",".join(sorted(self.market.instruments[self.exchange]))
        out = [{"coin": "USDT", "symbols": syms, "balance": fmt(bal, 8), "value": fmt(bal * 1.0002, 4)}]
        if coin != "USDT":
            out = []
        return self._ok({"updatedTime": str(int(math.floor(self.market.now / 60) * 60000)), "list": out})
