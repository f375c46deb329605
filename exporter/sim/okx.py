"""OKX v5 protocol: /ws/v5/public WebSocket and /api/v5 public REST (reference section 4)."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from exporter.model import Exchange, Side
from exporter.sim import futures_wire
from exporter.sim.market import INTEREST_8H, Instrument, SimLiquidation
from exporter.sim.server import Conn, ExchangeServer, Handler, dumps, fmt, fmt_g, ms, query_int

CHANNELS_BY_INST = ("funding-rate", "mark-price", "open-interest")


BARS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1H": 3600, "2H": 7200, "4H": 14400,
        "6Hutc": 21600, "12Hutc": 43200, "1Dutc": 86400}  # fmt: skip
OI_PERIODS = {"5m": 300, "15m": 900, "30m": 1800, "1H": 3600, "2H": 7200, "4H": 14400, "1Dutc": 86400}
RECENT_ROWS = 1440  # mark-price-candles / index-candles: "the latest 1,440 data entries"
PREMIUM_STEP_S = 60.0  # premium-history: one sample a minute here (the real cadence is undocumented)


def index_id(inst: Instrument) -> str:
    return f"{inst.spec.base}-{inst.spec.quote}"


class OkxServer(ExchangeServer):
    exchange = Exchange.OKX
    ws_paths = ("/ws/v5/public",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        insts = self.market.instruments[self.exchange]
        self._by_index = {index_id(i): i for i in insts.values()}
        self._last_oi = -1
        self._last_funding = self.market.now
        self._last_sec = -1
        self._window: dict[str, SimLiquidation] = {}
        self._open = {sym: i.index * 0.99 for sym, i in insts.items()}
        self._hi = {sym: i.index * 1.01 for sym, i in insts.items()}
        self._lo = {sym: i.index * 0.985 for sym, i in insts.items()}

    # ------------------------------------------------------------------------------------------
    # messages

    def funding_item(self, inst: Instrument) -> dict[str, str]:
        s = inst.spec
        prev = inst.last_record
        interest = INTEREST_8H * s.interval_s / 28800
        return {
            "formulaType": "withRate",
            "fundingRate": f"{inst.funding_rate:.16f}",
            "fundingTime": str(ms(inst.next_funding_time)),
            "impactValue": "20000.0000000000000000",
            "instId": s.symbol,
            "instType": "SWAP",
            "interestRate": f"{interest:.16f}",
            "maxFundingRate": fmt_g(s.cap),
            "method": "current_period",
            "minFundingRate": fmt_g(s.floor),
            "nextFundingRate": "",
            "nextFundingTime": str(ms(inst.next_funding_time + s.interval_s)),
            "premium": f"{inst.premium:.16f}",
            "prevFundingTime": str(prev.time_ms if prev else ms(inst.next_funding_time - s.interval_s)),
            "settFundingRate": f"{(prev.rate if prev else inst.funding_rate):.16f}",
            "settState": "settled",
            "ts": str(ms(self.stamp_now())),
        }

    def mark_item(self, inst: Instrument) -> dict[str, str]:
        return {
            "instId": inst.spec.symbol,
            "instType": "SWAP",
            "markPx": fmt(inst.mark, inst.spec.price_decimals),
            "ts": str(ms(self.stamp_now())),
        }

    def index_item(self, inst: Instrument) -> dict[str, str]:
        sym, pd = inst.spec.symbol, inst.spec.price_decimals
        return {
            "instId": index_id(inst),
            "idxPx": fmt(inst.index, pd),
            "open24h": fmt(self._open[sym], pd),
            "high24h": fmt(self._hi[sym], pd),
            "low24h": fmt(self._lo[sym], pd),
            "sodUtc0": fmt(self._open[sym] * 1.001, pd),
            "sodUtc8": fmt(self._open[sym] * 0.999, pd),
            "ts": str(ms(self.stamp_now())),
        }

    def oi_item(self, inst: Instrument) -> dict[str, str]:
        ct = inst.spec.contract_size
        return {
            "instId": inst.spec.symbol,
            "instType": "SWAP",
            "oi": fmt_g(round(inst.oi_base / ct, 2)),
            "oiCcy": fmt_g(round(inst.oi_base, 6)),
            "oiUsd": fmt(inst.oi_usd, 4),
            "ts": str(ms(self.stamp_now())),
        }

    def liq_item(self, inst: Instrument, liq: SimLiquidation) -> dict[str, Any]:
        long = liq.side is Side.LONG
        fam = index_id(inst)
        contracts = liq.qty_base / inst.spec.contract_size
        return {
            "details": [
                {
                    "bkLoss": "0",
                    "bkPx": fmt(liq.bankruptcy_price, inst.spec.price_decimals),
                    "ccy": "",
                    "posSide": "long" if long else "short",
                    "side": "sell" if long else "buy",
                    "sz": fmt_g(round(contracts, 2)),
                    "ts": str(ms(liq.time + self.stamp_shift_s)),
                }
            ],
            "instFamily": fam,
            "instId": inst.spec.symbol,
            "instType": "SWAP",
            "uly": fam,
        }

    @staticmethod
    def _push(arg: dict[str, str], items: list[dict[str, Any]]) -> str:
        return dumps({"arg": arg, "data": items})

    # ------------------------------------------------------------------------------------------
    # websocket

    def _topic(self, arg: dict[str, Any]) -> str | None:
        ch = arg.get("channel")
        insts = self.market.instruments[self.exchange]
        if ch in CHANNELS_BY_INST and arg.get("instId") in insts:
            return f"{ch}:{arg['instId']}"
        if ch == "mark-price" and arg.get("instId") in futures_wire.futures_of(self.market, self.exchange):
            return f"{ch}:{arg['instId']}"  # a dated future
        if ch == "index-tickers" and arg.get("instId") in self._by_index:
            return f"{ch}:{arg['instId']}"
        if ch == "liquidation-orders" and arg.get("instType") == "SWAP":
            return f"{ch}:SWAP"
        return None

    async def on_text(self, conn: Conn, text: str) -> None:
        if text == "ping":
            self.send(conn, "pong", data=False)
            return
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.send(
                conn,
                dumps(
                    {"event": "error", "code": "60012", "msg": f"Invalid request: {text[:100]}", "connId": conn.conn_id}
                ),
                data=False,
            )
            return
        if not isinstance(req, dict) or req.get("op") not in ("subscribe", "unsubscribe"):
            self.send(
                conn,
                dumps(
                    {"event": "error", "code": "60012", "msg": f"Invalid request: {text[:100]}", "connId": conn.conn_id}
                ),
                data=False,
            )
            return
        op = req["op"]
        rid = req.get("id")
        for arg in req.get("args") or []:
            topic = self._topic(arg) if isinstance(arg, dict) else None
            if topic is None:
                desc = ",".join(f"{k}:{v}" for k, v in (arg.items() if isinstance(arg, dict) else []))
                err: dict[str, Any] = {
                    "event": "error",
                    "code": "60018",
                    "msg": f"Wrong URL or channel:{desc} doesn't exist. Please use the correct URL,"
                    " channel and parameters referring to API document.",
                    "connId": conn.conn_id,
                }
                if rid is not None:
                    err["id"] = rid
                self.send(conn, dumps(err), data=False)
                continue
            ack: dict[str, Any] = {"event": op, "arg": arg, "connId": conn.conn_id}
            if rid is not None:
                ack = {"id": rid, **ack}
            self.send(conn, dumps(ack), data=False)
            if op == "unsubscribe":
                conn.topics.discard(topic)
                continue
            conn.topics.add(topic)
            # an initial push right after subscribing, as OKX does
            ch, _, key = topic.partition(":")
            inst = self._by_index.get(key) if ch == "index-tickers" else self.market.get(self.exchange, key)
            if inst is None:
                continue
            item = {
                "funding-rate": self.funding_item,
                "mark-price": self.mark_item,
                "index-tickers": self.index_item,
                "open-interest": self.oi_item,
            }[ch](inst)
            self.send(conn, self._push({"channel": ch, "instId": key}, [item]))

    def on_settle(self) -> None:
        self._push_funding()

    def _push_funding(self) -> None:
        if not self.publishing():
            return
        for sym, inst in self.market.instruments[self.exchange].items():
            topic = f"funding-rate:{sym}"
            if self.subscribers(topic):
                self.broadcast(topic, self._push({"channel": "funding-rate", "instId": sym}, [self.funding_item(inst)]))

    def on_tick(self, now: float) -> None:
        for liq in self.market.drain_liquidations(self.exchange):
            self._window[liq.symbol] = liq  # at most one per contract per second is pushed
        insts = self.market.instruments[self.exchange]
        for sym, inst in insts.items():
            self._hi[sym] = max(self._hi[sym], inst.index)
            self._lo[sym] = min(self._lo[sym], inst.index)
        sec = math.floor(now)
        new_sec = sec != self._last_sec
        self._last_sec = sec
        if not self.publishing():
            if new_sec:
                self._window.clear()
            return
        for sym, inst in insts.items():
            t = f"mark-price:{sym}"
            if self.subscribers(t):
                self.broadcast(t, self._push({"channel": "mark-price", "instId": sym}, [self.mark_item(inst)]))
            idx = index_id(inst)
            t = f"index-tickers:{idx}"
            if self.subscribers(t):
                self.broadcast(t, self._push({"channel": "index-tickers", "instId": idx}, [self.index_item(inst)]))
        if sec // 3 != self._last_oi:
            self._last_oi = sec // 3
            for sym, inst in insts.items():
                t = f"open-interest:{sym}"
                if self.subscribers(t):
                    self.broadcast(t, self._push({"channel": "open-interest", "instId": sym}, [self.oi_item(inst)]))
        if now - self._last_funding >= self.options.okx_funding_push_s:
            self._last_funding = now
            self._push_funding()
        if new_sec:
            for sym, liq in self._window.items():
                self.broadcast(
                    "liquidation-orders:SWAP",
                    self._push({"channel": "liquidation-orders", "instType": "SWAP"}, [self.liq_item(insts[sym], liq)]),
                )
                self.market.record_sent(liq)
            self._window.clear()

    # ------------------------------------------------------------------------------------------
    # REST

    def rest_routes(self) -> list[tuple[str, Handler]]:
        return [
            ("/api/v5/public/instruments", self.instruments),
            ("/api/v5/public/funding-rate", self.funding_rate),
            ("/api/v5/public/funding-rate-history", self.funding_history),
            ("/api/v5/public/open-interest", self.open_interest),
            ("/api/v5/public/mark-price", self.mark_price),
            ("/api/v5/rubik/stat/contracts/long-short-account-ratio-contract", self.long_short),
            ("/api/v5/public/insurance-fund", self.insurance),
            ("/api/v5/public/time", self.server_time),
            ("/api/v5/market/mark-price-candles", partial(self.candles, "mark", RECENT_ROWS)),
            ("/api/v5/market/index-candles", partial(self.candles, "index", RECENT_ROWS)),
            ("/api/v5/market/history-mark-price-candles", partial(self.candles, "mark", None)),
            ("/api/v5/market/history-index-candles", partial(self.candles, "index", None)),
            ("/api/v5/public/premium-history", self.premium_history),
            ("/api/v5/rubik/stat/contracts/open-interest-history", self.open_interest_history),
        ]

    def _ok(self, data: list[Any]) -> web.Response:
        return web.json_response({"code": "0", "msg": "", "data": data}, dumps=dumps)

    def _err(self, code: str, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg, "data": []}, status=status, dumps=dumps)

    def _select(self, request: web.Request, allow_any: bool = False) -> list[Instrument] | web.Response:
        inst_id = request.query.get("instId")
        insts = self.market.instruments[self.exchange]
        if inst_id:
            if allow_any and inst_id == "ANY":
                return list(insts.values())
            inst = insts.get(inst_id)
            if inst is None:
                return self._err("51001", "Instrument ID, Instrument ID code, or Spread ID doesn't exist.")
            return [inst]
        if request.query.get("instType") == "SWAP":
            fam = request.query.get("instFamily") or request.query.get("uly")
            return [i for i in insts.values() if fam is None or index_id(i) == fam]
        return self._err("50014", "Parameter instId can not be empty.")

    async def server_time(self, request: web.Request) -> web.Response:
        return self._ok([{"ts": str(ms(self.server_now()))}])

    async def instruments(self, request: web.Request) -> web.Response:
        if request.query.get("instType") == "FUTURES":
            fam = request.query.get("instFamily") or request.query.get("uly")
            return self._ok([r for r in futures_wire.okx_rows(self.market) if fam is None or r["instFamily"] == fam])
        if request.query.get("instType") != "SWAP":
            return self._err("50014", "Parameter instType can not be empty.")
        sel = self._select(request)
        if isinstance(sel, web.Response):
            return sel
        out = []
        for inst in sel:
            s = inst.spec
            fam = index_id(inst)
            out.append(
                {
                    "alias": "",
                    "baseCcy": "",
                    "category": "1",
                    "ctMult": "1",
                    "ctType": "linear",
                    "ctVal": fmt_g(s.contract_size),
                    "ctValCcy": s.base,
                    "expTime": "",
                    "instFamily": fam,
                    "instId": s.symbol,
                    "instType": "SWAP",
                    "lever": "100",
                    "listTime": "1611916828000",
                    "lotSz": "1",
                    "maxIcebergSz": "100000000",
                    "maxLmtSz": "100000000",
                    "maxMktSz": "5000",
                    "maxStopSz": "5000",
                    "maxTriggerSz": "100000000",
                    "maxTwapSz": "100000000",
                    "minSz": "1",
                    "optType": "",
                    "quoteCcy": "",
                    "settleCcy": s.quote,
                    "state": "live",
                    "stk": "",
                    "tickSz": fmt_g(10**-s.price_decimals),
                    "uly": fam,
                }
            )
        return self._ok(out)

    async def funding_rate(self, request: web.Request) -> web.Response:
        if not request.query.get("instId"):
            return self._err("50014", "Parameter instId can not be empty.")
        sel = self._select(request, allow_any=True)
        if isinstance(sel, web.Response):
            return sel
        return self._ok([self.funding_item(i) for i in sel])

    async def funding_history(self, request: web.Request) -> web.Response:
        if not request.query.get("instId"):
            return self._err("50014", "Parameter instId can not be empty.")
        sel = self._select(request)
        if isinstance(sel, web.Response):
            return sel
        inst = sel[0]
        before, after = query_int(request, "before"), query_int(request, "after")
        limit = max(1, min(400, query_int(request, "limit") or 400))
        # `after`: records older than that fundingTime; `before`: newer. Newest first.
        rows = [
            h
            for h in reversed(inst.history)
            if (after is None or h.time_ms < after) and (before is None or h.time_ms > before)
        ]
        if before is not None and after is None:
            rows = rows[-limit:]  # the records just newer than `before`
        rows = rows[:limit]
        out = [
            {
                "formulaType": "withRate",
                "fundingRate": f"{h.rate:.10f}",
                "fundingTime": str(h.time_ms),
                "instId": inst.spec.symbol,
                "instType": "SWAP",
                "method": "current_period",
                "realizedRate": fmt_g(h.rate),
            }
            for h in rows
        ]
        return self._ok(out)

    async def open_interest(self, request: web.Request) -> web.Response:
        if request.query.get("instType") != "SWAP":
            return self._err("50014", "Parameter instType can not be empty.")
        sel = self._select(request)
        if isinstance(sel, web.Response):
            return sel
        return self._ok([self.oi_item(i) for i in sel])

    async def mark_price(self, request: web.Request) -> web.Response:
        sel = self._select(request)
        if isinstance(sel, web.Response):
            return sel
        return self._ok([self.mark_item(i) for i in sel])

    async def long_short(self, request: web.Request) -> web.Response:
        sel = self._select(request)
        if isinstance(sel, web.Response):
            return sel
        inst = sel[0]
        periods = {
            "5m": 300,
            "15m": 900,
            "30m": 1800,
            "1H": 3600,
            "2H": 7200,
            "4H": 14400,
            "6H": 21600,
            "12H": 43200,
            "1D": 86400,
        }
        period = periods.get(request.query.get("period", "5m"))
        if period is None:
            return self._err("51000", "Parameter period error")
        limit = max(1, min(100, query_int(request, "limit") or 100))
        last = math.floor(self.market.now / period) * period
        out = []
        for k in range(limit):
            t = last - k * period
            ratio = inst.ls_ratio * (1.0 if k == 0 else 1 + 0.03 * math.sin(t / 7919.0))
            out.append([str(int(t * 1000)), fmt_g(round(ratio, 4))])
        return self._ok(out)

    async def insurance(self, request: web.Request) -> web.Response:
        if request.query.get("instType") != "SWAP":
            return self._err("50014", "Parameter instType can not be empty.")
        fam = request.query.get("instFamily") or request.query.get("uly")
        if not fam:
            return self._err("50014", "Parameter instFamily can not be empty.")
        insts = [i for i in self.market.instruments[self.exchange].values() if index_id(i) == fam]
        if not insts:
            return self._err("51000", "Parameter instFamily error")
        n = len(self.market.instruments[self.exchange])
        bal = self.market.insurance[self.exchange] / n
        t = int(math.floor(self.market.now / 60) * 60000)
        details = [
            {
                "adlType": "",
                "amt": "",
                "balance": fmt(bal, 8),
                "ccy": "USDT",
                "decRate": "",
                "maxBal": fmt(bal * 1.02, 8),
                "maxBalTs": str(t - 86_400_000),
                "ts": str(t),
                "type": "regular_update",
            }
        ]
        return self._ok([{"details": details, "instFamily": fam, "instType": "SWAP", "total": fmt(bal, 8)}])

    # ---- history (exporter/sim/tape.py) ------------------------------------------------------

    def _page(self, request: web.Request, rows: list[Any], time_of: Any, limit: int) -> list[Any]:
        """Newest first; ``after``: rows older than it, ``before``: newer; at most ``limit``."""
        after, before = query_int(request, "after"), query_int(request, "before")
        rows = [r for r in rows if (after is None or time_of(r) < after) and (before is None or time_of(r) > before)]
        rows.sort(key=time_of, reverse=True)
        return rows[:limit]

    async def candles(self, kind: str, recent: int | None, request: web.Request) -> web.Response:
        inst_id = request.query.get("instId", "")
        insts = self.market.instruments[self.exchange]
        inst = (
            insts.get(inst_id) if kind == "mark" else next((i for i in insts.values() if index_id(i) == inst_id), None)
        )
        if inst is None:
            return self._err("51001", "Instrument ID, Instrument ID code, or Spread ID doesn't exist.")
        bar = BARS.get(request.query.get("bar", "1m"))
        if bar is None:
            return self._err("51000", "Parameter bar error")
        limit = max(1, min(100, query_int(request, "limit") or 100))
        now = self.market.now
        span = bar * (recent if recent is not None else 30 * 1440)
        after, before = query_int(request, "after"), query_int(request, "before")
        t_to = min(now, after / 1000 - 0.001) if after is not None else now
        t_from = max(now - span, t_to - bar * limit) if before is None else max(now - span, before / 1000)
        rows = self.market.tape.candles(inst, kind, bar, t_from, t_to)
        if recent is not None:
            first_recent = (math.floor(now / bar) - recent + 1) * bar  # the latest `recent` rows only
            rows = rows[rows[:, 0] >= first_recent]
        closed_before = math.floor(now / bar) * bar
        data = [
            [str(int(t * 1000)), fmt_g(o), fmt_g(h), fmt_g(lo), fmt_g(c), "1" if t < closed_before else "0"]
            for t, o, h, lo, c in rows
        ]
        return self._ok(self._page(request, data, lambda r: int(r[0]), limit))

    async def premium_history(self, request: web.Request) -> web.Response:
        inst = self.market.instruments[self.exchange].get(request.query.get("instId", ""))
        if inst is None:
            return self._err("51001", "Instrument ID, Instrument ID code, or Spread ID doesn't exist.")
        limit = max(1, min(100, query_int(request, "limit") or 100))
        now = self.market.now
        after = query_int(request, "after")
        t_to = min(now, after / 1000) if after is not None else now
        rows = self.market.tape.candles(inst, "premium", PREMIUM_STEP_S, t_to - PREMIUM_STEP_S * (limit + 1), t_to)
        # a sample at each minute's close: stamped at the end of the minute it closes
        data = [
            {"instId": inst.spec.symbol, "premium": fmt_g(c), "ts": str(int((t + PREMIUM_STEP_S) * 1000))}
            for t, _o, _h, _lo, c in rows
            if t + PREMIUM_STEP_S <= now
        ]
        return self._ok(self._page(request, data, lambda r: int(r["ts"]), limit))

    async def open_interest_history(self, request: web.Request) -> web.Response:
        inst = self.market.instruments[self.exchange].get(request.query.get("instId", ""))
        if inst is None:
            return self._err("51001", "Instrument ID, Instrument ID code, or Spread ID doesn't exist.")
        period = OI_PERIODS.get(request.query.get("period", "5m"))
        if period is None:
            return self._err("51000", "Parameter period error")
        limit = max(1, min(100, query_int(request, "limit") or 100))
        now = self.market.now
        begin, end = query_int(request, "begin"), query_int(request, "end")
        t_to = min(now, end / 1000 - 0.001) if end is not None else now
        t_from = max(begin / 1000 + 0.001 if begin is not None else 0.0, t_to - period * limit, now - period * 1440)
        pts = self.market.tape.open_interest(inst, period, t_from, t_to)[::-1][:limit]
        ct = inst.spec.contract_size
        data = [[str(int(t * 1000)), fmt_g(usd / mark / ct), fmt_g(usd / mark), fmt_g(usd)] for t, usd, mark in pts]
        return self._ok(data)
